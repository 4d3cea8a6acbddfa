//! Removal of images and garbage collection: what is in use is marked, the rest (blobs,
//! snapshots, stale temp dirs and ingests) swept.

use super::*;

impl LayerStore {
    /// Remove an image reference (and the image, when it was the last one).
    pub fn remove(&self, req: &RemoveRequest) -> Result<RemoveReply> {
        let _g = self.lock.lock().expect("lock");
        let digest = self.resolve(&req.image)?;
        let refs = self.content.refs()?;
        let of_image: Vec<String> = refs
            .iter()
            .filter(|(_, d)| **d == digest)
            .map(|(r, _)| r.clone())
            .collect();
        // By reference: that reference; by ID or digest: every reference of the image.
        let named: Option<String> = Reference::parse(&req.image)
            .ok()
            .map(|r| r.to_string())
            .filter(|r| of_image.contains(r) && !req.image.starts_with("sha256:"));
        let to_remove: Vec<String> = match &named {
            Some(r) => {
                let mut v = vec![r.clone()];
                // The last tag takes the image's digest references with it.
                let tags_left = of_image
                    .iter()
                    .filter(|x| *x != r)
                    .filter(|x| {
                        Reference::parse(x)
                            .ok()
                            .and_then(|p| p.tag().map(|_| ()))
                            .is_some()
                    })
                    .count();
                if tags_left == 0 {
                    v = of_image.clone();
                }
                v
            }
            None => {
                let repos: BTreeSet<String> = of_image
                    .iter()
                    .filter_map(|x| Reference::parse(x).ok().map(|p| p.name()))
                    .collect();
                if repos.len() > 1 && !req.force {
                    return Err(LayerStoreError::Conflict(format!(
                        "image {} is referenced in {} repositories ({}): remove them by name, or force",
                        req.image,
                        repos.len(),
                        repos.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                of_image.clone()
            }
        };
        let deletes_image = to_remove.len() == of_image.len();
        let st = self.read_state()?;
        let users: Vec<&String> = st
            .containers
            .iter()
            .filter(|(_, c)| c.manifest == digest.to_string())
            .map(|(id, _)| id)
            .collect();
        if deletes_image && !users.is_empty() && !req.force {
            return Err(LayerStoreError::Conflict(format!(
                "image {} is used by container{} {}: remove {} first, or force",
                req.image,
                if users.len() > 1 { "s" } else { "" },
                users
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if users.len() > 1 { "them" } else { "it" }
            )));
        }
        let mut reply = RemoveReply::default();
        for r in &to_remove {
            self.content.remove_ref(r)?;
            reply.untagged.push(r.clone());
        }
        if deletes_image {
            let img = self.read_image(&digest)?;
            let candidates: HashSet<String> = img.blobs().iter().map(|d| d.to_string()).collect();
            let chains: HashSet<String> = img.layers.iter().map(|l| l.chain_id.clone()).collect();
            let g = self.sweep(Some((&candidates, &chains)))?;
            reply.deleted = g.deleted;
            reply.space_freed = g.freed;
        }
        Ok(reply)
    }

    /// Remove every blob and snapshot nothing references (and, with `all`, every image no
    /// container uses).
    pub fn gc(&self, req: &GcRequest) -> Result<GcReply> {
        let _g = self.lock.lock().expect("lock");
        let mut reply = GcReply::default();
        // What releases left is given back now, not whenever the background deletion ends
        // (which may be removing the same dirs: what it removed first is no error).
        for d in self.trash()? {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if d.exists() {
                    return Err(io("remove", &d)(e));
                }
            }
        }
        if req.all {
            let st = self.read_state()?;
            let used: HashSet<&str> = st
                .containers
                .values()
                .map(|c| c.manifest.as_str())
                .collect();
            for (r, d) in self.content.refs()? {
                if !used.contains(d.to_string().as_str()) {
                    self.content.remove_ref(&r)?;
                    reply.untagged.push(r);
                }
            }
        }
        let s = self.sweep(None)?;
        reply.blobs_removed = s.blobs;
        reply.snapshots_removed = s.snapshots;
        reply.space_freed = s.freed;
        Ok(reply)
    }

    /// What is in use: blobs and chain IDs of referenced images and prepared containers.
    fn marks(&self) -> Result<(HashSet<String>, HashSet<String>)> {
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        let st = self.read_state()?;
        let mut manifests: BTreeSet<Digest> = self.content.refs()?.into_values().collect();
        for c in st.containers.values() {
            chains.extend(c.chain_ids.iter().cloned());
            if let Ok(d) = c.manifest.parse::<Digest>() {
                manifests.insert(d);
            }
        }
        for m in manifests {
            blobs.insert(m.to_string());
            // An index: keep it and its manifests.
            if let Ok(raw) = self.content.read(&m) {
                if let Ok(idx) = serde_json::from_slice::<serde_json::Value>(&raw) {
                    for e in idx["manifests"].as_array().into_iter().flatten() {
                        if let Some(d) = e["digest"].as_str() {
                            blobs.insert(d.to_string());
                        }
                    }
                }
            }
            match self.read_image(&m) {
                Ok(img) => {
                    blobs.extend(img.blobs().iter().map(|d| d.to_string()));
                    chains.extend(img.layers.iter().map(|l| l.chain_id.clone()));
                }
                Err(e) => {
                    tracing::warn!(%m, %e, "gc: image unreadable, its blobs may be collected")
                }
            }
        }
        Ok((blobs, chains))
    }

    /// Delete unmarked blobs and snapshots (only among `only`, when given). Caller holds
    /// the lock.
    fn sweep(&self, only: Option<(&HashSet<String>, &HashSet<String>)>) -> Result<Swept> {
        let (keep_blobs, keep_chains) = self.marks()?;
        let leased = lease::protected(&self.data_root);
        let mut out = Swept::default();
        if !leased.everything {
            for d in self.content.list()? {
                let s = d.to_string();
                if keep_blobs.contains(&s) || leased.digests.contains(&s) {
                    continue;
                }
                if let Some((c, _)) = only {
                    if !c.contains(&s) {
                        continue;
                    }
                }
                let size = du(&self.content.blob_path(&d));
                if self.content.delete(&d)? {
                    out.freed += size;
                    out.blobs += 1;
                    out.deleted.push(s);
                }
            }
            if only.is_none() {
                out.freed += self.sweep_ingests(&leased);
            }
        }
        let active = self.active.lock().expect("active").clone();
        let rd = std::fs::read_dir(&self.snapshots).map_err(io("read", &self.snapshots))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with(TMP_PREFIX) {
                if only.is_none() && !active.contains(&name) && tmp_is_stale(&name) {
                    out.freed += du(&path);
                    std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
                }
                continue;
            }
            let chain = format!("sha256:{name}");
            if keep_chains.contains(&chain) {
                continue;
            }
            if let Some((_, c)) = only {
                if !c.contains(&chain) {
                    continue;
                }
            }
            let size = du(&path);
            // Renamed aside first, so a half-removed snapshot never looks complete.
            let doomed = self
                .snapshots
                .join(format!("{TMP_PREFIX}rm-{name}-{}-x", std::process::id()));
            std::fs::rename(&path, &doomed).map_err(io("rename", &path))?;
            std::fs::remove_dir_all(&doomed).map_err(io("remove", &doomed))?;
            out.freed += size;
            out.snapshots += 1;
            out.deleted.push(format!("snapshot:{chain}"));
        }
        let tmp = self.own.join("tmp");
        if only.is_none() && tmp.is_dir() && !leased.everything {
            // Leftovers of loads and saves that died (running ones hold a lease).
            for e in std::fs::read_dir(&tmp).map_err(io("read", &tmp))?.flatten() {
                out.freed += du(&e.path());
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        Ok(out)
    }

    /// Partial downloads whose writer is gone (no one holds the ingest file's lock).
    fn sweep_ingests(&self, leased: &lease::Protected) -> u64 {
        let mut freed = 0;
        let Ok(list) = self.content.ingests() else {
            return 0;
        };
        for (d, _) in list {
            if leased.digests.contains(&d.to_string()) {
                continue;
            }
            let p = self.content.ingest_path(&d);
            let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&p) else {
                continue;
            };
            if let Ok(lock) =
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                let size = du(&p);
                if std::fs::remove_file(&p).is_ok() {
                    freed += size;
                }
                drop(lock);
            }
        }
        freed
    }
}

#[derive(Debug, Default)]
struct Swept {
    blobs: usize,
    snapshots: usize,
    freed: u64,
    deleted: Vec<String>,
}

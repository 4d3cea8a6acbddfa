//! Snapshots: the layers of an image unpacked once per chain ID, in parallel, each into a
//! temp dir that becomes the snapshot when complete.

use super::*;

impl LayerStore {
    /// Make sure every layer of `img` is unpacked, unpacking missing ones in parallel.
    /// Returns what was unpacked now.
    pub fn ensure_snapshots(&self, img: &Image) -> Result<Vec<Unpacked>> {
        let missing: Vec<&Layer> = {
            let mut seen = HashSet::new();
            img.layers
                .iter()
                .filter(|l| !self.has_snapshot(&l.chain_id) && seen.insert(l.chain_id.clone()))
                .collect()
        };
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        for l in &missing {
            if !self.content.has(&l.digest) {
                return Err(LayerStoreError::NotFound(format!(
                    "layer {} of image {} is not in the content store (pull the image again)",
                    l.digest, img.digest
                )));
            }
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Mutex<Vec<Result<Option<Unpacked>>>> = Mutex::new(Vec::new());
        let workers = self.parallelism.min(missing.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(l) = missing.get(i) else { break };
                    let r = self.unpack_layer(l);
                    let failed = r.is_err();
                    results.lock().expect("results").push(r);
                    if failed {
                        // Stop taking new layers: the prepare fails anyway.
                        next.store(missing.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let mut out = Vec::new();
        for r in results.into_inner().expect("results") {
            if let Some(u) = r? {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Unpack one layer into its snapshot: into a temp dir beside it, synced, then renamed.
    /// `None` when another unpack finished it first.
    fn unpack_layer(&self, l: &Layer) -> Result<Option<Unpacked>> {
        let lock = self
            .unpacking
            .lock()
            .expect("unpacking")
            .entry(l.chain_id.clone())
            .or_default()
            .clone();
        let r = {
            let _held = lock.lock().expect("snapshot lock");
            if self.has_snapshot(&l.chain_id) {
                // Another prepare unpacked it while this one waited.
                Ok(None)
            } else {
                self.unpack_layer_locked(l)
            }
        };
        let mut map = self.unpacking.lock().expect("unpacking");
        // The map's and ours: nobody else waits on it.
        if std::sync::Arc::strong_count(&lock) == 2 {
            map.remove(&l.chain_id);
        }
        r
    }

    fn unpack_layer_locked(&self, l: &Layer) -> Result<Option<Unpacked>> {
        let hex = hex_of(&l.chain_id);
        let tmp_name = format!(
            "{TMP_PREFIX}{hex}-{}-{}",
            std::process::id(),
            berth_bus::random_hex(4)
        );
        let tmp = self.snapshots.join(&tmp_name);
        self.active.lock().expect("active").insert(tmp_name.clone());
        let r = self.unpack_into(l, &tmp);
        if r.is_err() || matches!(r, Ok(None)) {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        self.active.lock().expect("active").remove(&tmp_name);
        r
    }

    fn unpack_into(&self, l: &Layer, tmp: &Path) -> Result<Option<Unpacked>> {
        let fs = tmp.join(SNAPSHOT_FS);
        std::fs::create_dir_all(&fs).map_err(io("create", &fs))?;
        let started = Instant::now();
        let stats: UnpackStats = unpack::unpack(
            &self.content.blob_path(&l.digest),
            &l.media_type,
            &l.digest.to_string(),
            &fs,
            Some(&l.diff_id),
            self.limits,
        )?;
        let meta = SnapshotMeta {
            chain_id: l.chain_id.clone(),
            layer: l.digest.to_string(),
            diff_id: stats.diff_id,
            entries: stats.entries,
            uncompressed: stats.uncompressed,
            seconds: started.elapsed().as_secs_f64(),
        };
        let mp = tmp.join(SNAPSHOT_META);
        std::fs::write(
            &mp,
            serde_json::to_vec_pretty(&meta).expect("meta serializes"),
        )
        .map_err(io("write", &mp))?;
        // One syncfs makes the whole tree durable before it becomes visible.
        let dir = std::fs::File::open(tmp).map_err(io("open", tmp))?;
        nix::unistd::syncfs(&dir).map_err(|e| io("syncfs", tmp)(e.into()))?;
        let dest = self.snapshot_dir(&l.chain_id);
        match std::fs::rename(tmp, &dest) {
            Ok(()) => Ok(Some(Unpacked { meta })),
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
                    && self.has_snapshot(&l.chain_id) =>
            {
                Ok(None)
            }
            Err(e) => Err(io("rename snapshot to", &dest)(e)),
        }
    }
}

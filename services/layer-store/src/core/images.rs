//! Images: resolving what an image string names, reading manifest and config, listing and
//! inspecting.

use super::*;

impl LayerStore {
    /// The manifest digest an image string names: a full digest (manifest or config), a
    /// reference, or a prefix of an image ID.
    pub fn resolve(&self, input: &str) -> Result<Digest> {
        let input = input.trim();
        if input.is_empty() {
            return Err(LayerStoreError::Invalid {
                what: "image",
                reason: "it is empty".into(),
            });
        }
        let refs = self.content.refs()?;
        let manifests: BTreeSet<&Digest> = refs.values().collect();
        if input.starts_with("sha256:") {
            let d: Digest = input.parse()?;
            if manifests.contains(&d) {
                return Ok(d);
            }
            for m in &manifests {
                if self.config_digest(m).ok().as_ref() == Some(&d) {
                    return Ok((*m).clone());
                }
            }
            return Err(LayerStoreError::NotFound(format!(
                "image {input} is not on this node"
            )));
        }
        if let Ok(r) = Reference::parse(input) {
            if let Some(d) = refs.get(&r.to_string()) {
                return Ok(d.clone());
            }
            if let Some(dg) = r.digest() {
                // `name@digest` (with or without a tag): that manifest, when the node holds it
                // under that name.
                if let Some(d) = refs.get(&r.with_digest(dg)) {
                    return Ok(d.clone());
                }
                let name = r.name();
                if let Some((_, d)) = refs.iter().find(|(k, d)| {
                    d.to_string() == dg && Reference::parse(k).is_ok_and(|x| x.name() == name)
                }) {
                    return Ok(d.clone());
                }
            }
        }
        if input.len() >= 4 && input.len() <= 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits: BTreeSet<Digest> = BTreeSet::new();
            for m in &manifests {
                if m.hex().starts_with(input) {
                    hits.insert((*m).clone());
                } else if let Ok(c) = self.config_digest(m) {
                    if c.hex().starts_with(input) {
                        hits.insert((*m).clone());
                    }
                }
            }
            match hits.len() {
                0 => {}
                1 => return Ok(hits.into_iter().next().expect("one")),
                n => {
                    return Err(LayerStoreError::Invalid {
                        what: "image ID",
                        reason: format!("{input} matches {n} images"),
                    })
                }
            }
        }
        if let Err(e) = Reference::parse(input) {
            return Err(LayerStoreError::Invalid {
                what: "image",
                reason: e.to_string(),
            });
        }
        Err(LayerStoreError::NotFound(format!(
            "image {input} is not on this node (pull or load it first)"
        )))
    }

    fn config_digest(&self, manifest: &Digest) -> Result<Digest> {
        Ok(self.read_image(manifest)?.config_digest)
    }

    /// Read manifest (following an index to this host's platform) and config.
    pub fn read_image(&self, digest: &Digest) -> Result<Image> {
        let bad = |reason: String| LayerStoreError::BadImage {
            digest: digest.to_string(),
            reason,
        };
        let raw = self.content.read(digest)?;
        let v: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
        if v.get("manifests").is_some() {
            let idx = ImageIndex::from_reader(&raw[..]).map_err(|e| bad(format!("index: {e}")))?;
            let pick = host_entry(&idx).ok_or_else(|| {
                bad(format!(
                    "the index has no manifest for {}",
                    berth_docker::platform::Platform::host()
                ))
            })?;
            let d: Digest = pick.digest().to_string().parse()?;
            return self.read_image(&d);
        }
        let m = ImageManifest::from_reader(&raw[..]).map_err(|e| bad(format!("manifest: {e}")))?;
        let media_type = m
            .media_type()
            .as_ref()
            .map(|t| t.to_string())
            .or_else(|| v["mediaType"].as_str().map(String::from))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
        let config_digest: Digest = m.config().digest().to_string().parse()?;
        let config_raw = self.content.read(&config_digest)?;
        let config = ImageConfiguration::from_reader(&config_raw[..])
            .map_err(|e| bad(format!("config {config_digest}: {e}")))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != m.layers().len() {
            return Err(bad(format!(
                "the manifest has {} layers but the config lists {} diff IDs",
                m.layers().len(),
                diff_ids.len()
            )));
        }
        for d in &diff_ids {
            d.parse::<Digest>()
                .map_err(|e| bad(format!("config {config_digest}: diff ID: {e}")))?;
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::new();
        for (i, l) in m.layers().iter().enumerate() {
            let mt = l.media_type().to_string();
            if !(mt.contains("layer") || mt.contains("rootfs.diff")) {
                return Err(bad(format!(
                    "layer {} has media type {mt}, which is not a layer",
                    l.digest()
                )));
            }
            if mt.ends_with("+encrypted") {
                return Err(bad(format!("layer {} is encrypted ({mt})", l.digest())));
            }
            layers.push(Layer {
                digest: l.digest().to_string().parse()?,
                media_type: mt,
                size: l.size(),
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
            });
        }
        Ok(Image {
            digest: digest.clone(),
            media_type,
            manifest_size: raw.len() as u64,
            config_digest,
            config_size: config_raw.len() as u64,
            config_raw,
            config,
            layers,
        })
    }

    /// Every image named by a reference: manifest digest → references.
    pub(super) fn images_by_manifest(&self) -> Result<BTreeMap<Digest, Vec<String>>> {
        let mut by: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (r, d) in self.content.refs()? {
            by.entry(d).or_default().push(r);
        }
        Ok(by)
    }

    pub fn images(&self) -> Result<ImagesReply> {
        let state = self.read_state()?;
        let mut rows = Vec::new();
        for (digest, refs) in self.images_by_manifest()? {
            let img = match self.read_image(&digest) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(%digest, %e, "image not listed");
                    continue;
                }
            };
            let containers = state
                .containers
                .values()
                .filter(|c| c.manifest == digest.to_string())
                .count();
            let parsed: Vec<Reference> = refs
                .iter()
                .filter_map(|r| Reference::parse(r).ok())
                .collect();
            let tagged: HashSet<String> = parsed
                .iter()
                .filter(|r| r.tag().is_some())
                .map(|r| r.name())
                .collect();
            let mut any = false;
            for r in &parsed {
                if r.tag().is_none() && tagged.contains(&r.name()) {
                    continue;
                }
                any = true;
                let full = Reference::parse(&r.name()).expect("a name parses");
                let repo = full.familiar();
                let repo = repo.strip_suffix(":latest").unwrap_or(&repo).to_string();
                rows.push(ImageSummary {
                    repository: repo,
                    tag: r.tag().unwrap_or("<none>").to_string(),
                    digest: digest.to_string(),
                    id: img.config_digest.to_string(),
                    size: img.size(),
                    created: img.created(),
                    containers,
                });
            }
            if !any {
                rows.push(ImageSummary {
                    repository: "<none>".into(),
                    tag: "<none>".into(),
                    digest: digest.to_string(),
                    id: img.config_digest.to_string(),
                    size: img.size(),
                    created: img.created(),
                    containers,
                });
            }
        }
        rows.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
        Ok(ImagesReply { images: rows })
    }

    pub fn inspect(&self, image: &str) -> Result<InspectReply> {
        let digest = self.resolve(image)?;
        let img = self.read_image(&digest)?;
        let references = self
            .content
            .refs()?
            .into_iter()
            .filter(|(_, d)| *d == digest)
            .map(|(r, _)| r)
            .collect();
        let config: serde_json::Value = serde_json::from_slice(&img.config_raw).unwrap_or_default();
        let history = config["history"].as_array().cloned().unwrap_or_default();
        Ok(InspectReply {
            id: img.config_digest.to_string(),
            digest: digest.to_string(),
            references,
            media_type: img.media_type.clone(),
            created: img.created(),
            os: img.config.os().to_string(),
            architecture: img.config.architecture().to_string(),
            size: img.size(),
            layers: img
                .layers
                .iter()
                .map(|l| LayerInfo {
                    digest: l.digest.to_string(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: l.diff_id.clone(),
                    chain_id: l.chain_id.clone(),
                    unpacked: self.has_snapshot(&l.chain_id),
                })
                .collect(),
            config,
            history,
        })
    }
}

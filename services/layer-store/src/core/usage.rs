//! Disk usage (`df`): images, snapshots and containers, with what is in use and what a gc
//! could reclaim.

use super::*;

impl LayerStore {
    pub fn df(&self) -> Result<DfReply> {
        let st = self.read_state()?;
        let mut r = DfReply::default();
        let by = self.images_by_manifest()?;
        let used: HashSet<&str> = st
            .containers
            .values()
            .map(|c| c.manifest.as_str())
            .collect();
        r.images.count = by.len();
        r.images.active = by
            .keys()
            .filter(|d| used.contains(d.to_string().as_str()))
            .count();
        let mut used_blobs: HashSet<String> = HashSet::new();
        for d in by.keys().filter(|d| used.contains(d.to_string().as_str())) {
            if let Ok(i) = self.read_image(d) {
                used_blobs.extend(i.blobs().iter().map(|b| b.to_string()));
            }
        }
        for d in self.content.list()? {
            let size = du(&self.content.blob_path(&d));
            r.images.size += size;
            let s = d.to_string();
            if !used_blobs.contains(&s) {
                r.images.reclaimable += size;
            }
        }
        let used_chains: HashSet<&String> = st
            .containers
            .values()
            .flat_map(|c| c.chain_ids.iter())
            .collect();
        for e in std::fs::read_dir(&self.snapshots)
            .map_err(io("read", &self.snapshots))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = du(&e.path());
            r.snapshots.size += size;
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            r.snapshots.count += 1;
            let chain = format!("sha256:{name}");
            if used_chains.contains(&chain) {
                r.snapshots.active += 1;
            } else {
                r.snapshots.reclaimable += size;
            }
        }
        for c in st.containers.values() {
            r.containers.count += 1;
            r.containers.active += 1;
            r.containers.size += du(Path::new(&c.upper));
        }
        Ok(r)
    }
}

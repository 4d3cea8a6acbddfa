//! The records of prepared containers (one file each): what keeps an image's snapshots from
//! gc and `rmi`.

use super::*;

impl LayerStore {
    pub(super) fn record_path(&self, id: &str) -> PathBuf {
        self.own.join(RECORDS_DIR).join(format!("{id}.json"))
    }

    pub(super) fn read_record(&self, id: &str) -> Result<Option<ContainerRec>> {
        let p = self.record_path(id);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| LayerStoreError::Io {
                    op: "parse",
                    path: p.clone(),
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &p)(e)),
        }
    }

    /// Every record. Unreadable ones are errors: a record that cannot be read could be keeping
    /// snapshots that gc must not remove.
    pub(super) fn read_state(&self) -> Result<State> {
        let d = self.own.join(RECORDS_DIR);
        let mut st = State::default();
        for e in std::fs::read_dir(&d).map_err(io("read", &d))? {
            let e = e.map_err(io("read", &d))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id.starts_with('.') {
                continue;
            }
            if let Some(rec) = self.read_record(id)? {
                st.containers.insert(id.to_string(), rec);
            }
        }
        Ok(st)
    }

    /// Write a container's record atomically (with `durable`, surviving a power loss): it
    /// keeps the image's snapshots from gc and `rmi` for as long as the container exists.
    pub(super) fn write_record(&self, id: &str, rec: &ContainerRec, durable: bool) -> Result<()> {
        let p = self.record_path(id);
        let bytes = serde_json::to_vec(rec).expect("records serialize");
        let durability = if durable {
            berth_files::Durability::PowerLoss
        } else {
            berth_files::Durability::Process
        };
        berth_files::atomic_write(&p, &bytes, durability).map_err(io("write", &p))
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerRec>> {
        self.read_record(id)
    }
}

//! What the store repairs when it opens: records of an older layout, records of containers
//! whose release was cut short, the trash, and what a crash left (stale unpacks and leases).

use super::*;

impl LayerStore {
    /// What a crash left (an unpack or a gc killed with its process, a pull or a load that
    /// never dropped its lease): `snapshots/.tmp-*` of processes that are gone, and leases
    /// expired or whose owner is gone. Logged; a failure to remove is logged and left.
    pub(super) fn remove_leftovers(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.snapshots) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(TMP_PREFIX) || !tmp_is_stale(&name) {
                    continue;
                }
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => tracing::info!(name, "removed an unpack a crash cut short"),
                    Err(e) => tracing::warn!(%e, name, "an unpack a crash cut short is left"),
                }
            }
        }
        for name in lease::remove_stale(&self.data_root) {
            tracing::info!(
                name,
                "removed a lease whose owner is gone or whose time is up"
            );
        }
    }

    /// Earlier versions kept every record in one `state.json`: write them as record files.
    pub(super) fn migrate_state(&self) -> Result<()> {
        let p = self.own.join(OLD_STATE_FILE);
        let st: State = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| LayerStoreError::Io {
                op: "parse",
                path: p.clone(),
                source: std::io::Error::other(e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("read", &p)(e)),
        };
        for (id, rec) in &st.containers {
            self.write_record(id, rec, true)?;
        }
        std::fs::remove_file(&p).map_err(io("remove", &p))
    }

    /// A record whose upper dir is gone belongs to a container whose release or prepare was
    /// cut short (a record is written before the dirs are made, and its removal is not
    /// synced): nothing uses its snapshots.
    pub(super) fn drop_stale_records(&self) -> Result<()> {
        for (id, rec) in self.read_state()?.containers {
            if !Path::new(&rec.upper).is_dir() {
                tracing::info!(
                    id,
                    "dropping the record of a container without an upper dir"
                );
                let p = self.record_path(&id);
                std::fs::remove_file(&p).map_err(io("remove", &p))?;
            }
        }
        Ok(())
    }

    /// Delete what releases left in the trash, in the background.
    pub(super) fn empty_trash(&self) {
        if let Ok(left) = self.trash() {
            berth_files::janitor::remove_later(left);
        }
    }
}

//! The durable record of a container: `<data_root>/containers/<id>/supervisor.<n>.json`, a new
//! version `n` at every transition (temporary file, rename to the new name, older versions
//! removed), read back at start: the highest version wins. Each version has a name of its own
//! because ext4 writes a file's data out at once when it is renamed over another one
//! (`auto_da_alloc`), which made every transition cost a fifth of a millisecond more.

use berth_files::Durability;
use berth_proto::isolator::{ContainerSpec, RootfsMount};
use berth_proto::supervisor::{ContainerState, CreateRequest, HealthCheck};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const RECORD_FILE: &str = "supervisor.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub request: CreateRequest,
    pub spec: ContainerSpec,
    pub rootfs: RootfsMount,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    pub stop_signal: String,
    pub stop_grace_period_ms: u64,
    pub state: ContainerState,
    /// Stopped by `stop` (or the health action `stop`): no policy restart until a `start`.
    #[serde(default)]
    pub manually_stopped: bool,
    /// The exit in `state` was announced (event published).
    #[serde(default = "yes")]
    pub exit_reported: bool,
    /// Consecutive policy restarts since the backoff was last reset.
    #[serde(default)]
    pub backoff_step: u32,
}

fn yes() -> bool {
    true
}

/// The versions of the record in `container_dir`, oldest first (`supervisor.json`, written by
/// earlier versions of berth, is version 0).
fn versions(container_dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let entries = match std::fs::read_dir(container_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        let n = if name == RECORD_FILE {
            Some(0)
        } else {
            name.strip_prefix("supervisor.")
                .and_then(|r| r.strip_suffix(".json"))
                .and_then(|n| n.parse::<u64>().ok())
        };
        if let Some(n) = n {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether `container_dir` holds a record.
pub fn exists(container_dir: &Path) -> bool {
    versions(container_dir).is_ok_and(|v| !v.is_empty())
}

impl Record {
    /// Write the next version of the record atomically (temporary file, rename to a name not
    /// used yet), then remove the older ones. `durable` also syncs it (and the directory) to
    /// disk first: needed when the container comes into existence; later transitions only
    /// have to survive the supervisor's own death (the page cache outlives it), and after a
    /// power loss no container runs anyway.
    pub fn save(&self, container_dir: &Path, durable: bool) -> std::io::Result<()> {
        std::fs::create_dir_all(container_dir)?;
        let old = versions(container_dir)?;
        let next = old.last().map_or(1, |(n, _)| n + 1);
        berth_files::atomic_write(
            &container_dir.join(format!("supervisor.{next}.json")),
            &serde_json::to_vec_pretty(self).expect("records serialize"),
            if durable {
                Durability::PowerLoss
            } else {
                Durability::Process
            },
        )?;
        for (_, p) in old {
            std::fs::remove_file(&p)?;
        }
        Ok(())
    }

    /// Sync the newest version of the record and the directory to disk: what `save` with
    /// `durable` does, for a version saved without.
    pub fn sync(container_dir: &Path) -> std::io::Result<()> {
        if let Some((_, p)) = versions(container_dir)?.last() {
            std::fs::File::open(p)?.sync_data()?;
        }
        berth_files::sync_dir(container_dir)
    }

    /// The newest version of the record.
    pub fn load(container_dir: &Path) -> Result<Record, String> {
        let vs = versions(container_dir)
            .map_err(|e| format!("list {}: {e}", container_dir.display()))?;
        let Some((_, p)) = vs.last() else {
            return Err(format!("no record in {}", container_dir.display()));
        };
        let b = std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
        serde_json::from_slice(&b).map_err(|e| format!("parse {}: {e}", p.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_replace_each_other_and_the_newest_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("c");
        assert!(!exists(&d));
        // A record of an earlier berth, under the old name, is version 0.
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(RECORD_FILE), b"{}").unwrap();
        assert!(exists(&d));
        assert_eq!(versions(&d).unwrap().len(), 1);
        assert!(Record::load(&d).unwrap_err().contains("parse"));
        std::fs::write(d.join("supervisor.7.json"), b"{}").unwrap();
        std::fs::write(d.join("notes.json"), b"{}").unwrap();
        let v = versions(&d).unwrap();
        assert_eq!(v.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![0, 7]);
    }
}

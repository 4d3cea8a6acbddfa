//! The durable record of a container: `<data_root>/containers/<id>/supervisor.json`, written
//! atomically (temporary file, fsync, rename) at every transition, read back at start.

use berth_proto::isolator::{ContainerSpec, RootfsMount};
use berth_proto::supervisor::{ContainerState, CreateRequest, HealthCheck};
use serde::{Deserialize, Serialize};
use std::io::Write;
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

pub fn path(container_dir: &Path) -> PathBuf {
    container_dir.join(RECORD_FILE)
}

impl Record {
    /// Replace the record atomically (temporary file, rename). `durable` also syncs it to
    /// disk first: needed when the container comes into existence; later transitions only
    /// have to survive the supervisor's own death (the page cache outlives it), and after a
    /// power loss no container runs anyway.
    pub fn save(&self, container_dir: &Path, durable: bool) -> std::io::Result<()> {
        std::fs::create_dir_all(container_dir)?;
        let tmp = container_dir.join(format!(".{RECORD_FILE}.tmp"));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(self).expect("records serialize"))?;
        if durable {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, path(container_dir))
    }

    pub fn load(container_dir: &Path) -> Result<Record, String> {
        let p = path(container_dir);
        let b = std::fs::read(&p).map_err(|e| format!("read {}: {e}", p.display()))?;
        serde_json::from_slice(&b).map_err(|e| format!("parse {}: {e}", p.display()))
    }
}

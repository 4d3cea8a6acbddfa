//! Files of the bundle and the run dir: JSON read, and written whole by rename.

use crate::error::{ShimError, Step};
use std::path::Path;

/// Read a JSON file of the bundle.
pub fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, ShimError> {
    let b = std::fs::read(p).step(|| format!("read {}", p.display()))?;
    serde_json::from_slice(&b)
        .map_err(|e| ShimError::invalid(format!("parse {}", p.display()), e.to_string()))
}

/// Write `data` to `path` by rename, so readers see all or nothing; with `durable`, fsync
/// the file and the directory too. Pid files skip the fsyncs: the run dir is on tmpfs
/// normally, and a pid means nothing after a reboot anyway.
pub fn write_replace(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let durability = if durable {
        berth_files::Durability::PowerLoss
    } else {
        berth_files::Durability::Process
    };
    berth_files::atomic_write(path, data, durability)
}

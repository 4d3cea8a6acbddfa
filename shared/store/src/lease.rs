//! Leases: files under `<data_root>/leases/` that keep `gc` from deleting content a writer
//! (a pull, a load) has stored but not referenced yet.
//!
//! A lease is `<data_root>/leases/<name>.json` holding `{"expires": <unix seconds>,
//! "digests": ["sha256:..."]}`. While it has not expired, `gc` keeps every blob it names; a
//! lease with an empty `digests` list keeps every blob and every partial download. Expired
//! lease files are removed by `gc`. Writers create the file (by rename, so it is never read
//! half-written) before their first blob and remove it once their references are set.

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const LEASES_DIR: &str = "leases";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseFile {
    pub expires: u64,
    #[serde(default)]
    pub digests: Vec<String>,
}

/// A lease held by this process; its file is removed on drop.
#[derive(Debug)]
pub struct Lease {
    path: PathBuf,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Lease {
    /// Take a lease on `digests` (every blob when empty) for at most `ttl`.
    pub fn acquire(
        data_root: &Path,
        name: &str,
        digests: &[String],
        ttl: Duration,
    ) -> std::io::Result<Lease> {
        let dir = data_root.join(LEASES_DIR);
        std::fs::create_dir_all(&dir)?;
        let file = LeaseFile {
            expires: now() + ttl.as_secs().max(1),
            digests: digests.to_vec(),
        };
        let path = dir.join(format!("{name}.json"));
        let tmp = dir.join(format!(".{name}.json.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&file).expect("lease serializes"))?;
        std::fs::rename(&tmp, &path)?;
        Ok(Lease { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What the unexpired leases protect.
#[derive(Debug, Default)]
pub struct Protected {
    /// A lease without digests exists: delete no blob and no partial download.
    pub everything: bool,
    pub digests: HashSet<String>,
}

/// Read the leases, removing expired (and unreadable, stale) files.
pub fn protected(data_root: &Path) -> Protected {
    let mut p = Protected::default();
    let Ok(rd) = std::fs::read_dir(data_root.join(LEASES_DIR)) else {
        return p;
    };
    let t = now();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseFile>(&b).ok())
        {
            Some(l) if l.expires > t => {
                if l.digests.is_empty() {
                    p.everything = true;
                }
                p.digests.extend(l.digests);
            }
            Some(_) => {
                let _ = std::fs::remove_file(&path);
            }
            None => {
                // Unreadable: stale after a minute (a writer renames whole files in).
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|d| d > Duration::from_secs(60));
                if old {
                    let _ = std::fs::remove_file(&path);
                } else {
                    p.everything = true;
                }
            }
        }
    }
    p
}

//! Leases: files under `<data_root>/leases/` that keep `gc` from deleting content a writer
//! (a pull, a load) has stored but not referenced yet.
//!
//! A lease is `<data_root>/leases/<name>.json` holding `{"expires": <unix seconds>,
//! "digests": ["sha256:..."]}`. While it has not expired, `gc` keeps every blob it names; a
//! lease with an empty `digests` list keeps every blob and every partial download. Expired
//! lease files are removed by `gc`. Writers create the file (by rename, so it is never read
//! half-written) before their first blob and remove it once their references are set.
//!
//! A lease also names its `owner`: the writer's pid and that process's start time (field 22
//! of `/proc/<pid>/stat`, so a recycled pid is not taken for it). A lease whose owner is gone
//! (a pull or a load killed with berthd) protects nothing any more: [`remove_stale`], run when
//! the layer-store starts, removes it with the expired ones.

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
    /// The process that holds the lease (absent in leases of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A process, told apart from a later one with the same pid by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Clock ticks after boot at which the process started.
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Owner> {
        let pid = std::process::id();
        Some(Owner {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether the process still runs (the same one: same start time).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

/// Field 22 of `/proc/<pid>/stat` (after the command name, which may hold spaces and
/// parentheses: parsed from the last `)`).
fn start_time(pid: u32) -> Option<u64> {
    let t = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &t[t.rfind(')')? + 1..];
    // The fields after the name start with field 3 (state): field 22 is the 20th of them.
    rest.split_whitespace().nth(19)?.parse().ok()
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
            owner: Owner::current(),
        };
        let path = dir.join(format!("{name}.json"));
        // A lease protects a running process's blobs: it means nothing after a reboot.
        berth_files::atomic_write(
            &path,
            &serde_json::to_vec(&file).expect("lease serializes"),
            berth_files::Durability::Process,
        )?;
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

/// Remove the lease files that protect nothing any more: expired, or whose owner is gone.
/// Returns their names.
pub fn remove_stale(data_root: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(rd) = std::fs::read_dir(data_root.join(LEASES_DIR)) else {
        return removed;
    };
    let t = now();
    for e in rd.flatten() {
        let path = e.path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        let Some(l) = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LeaseFile>(&b).ok())
        else {
            continue;
        };
        let stale = l.expires <= t || l.owner.is_some_and(|o| !o.alive());
        if stale && std::fs::remove_file(&path).is_ok() {
            removed.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    removed
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

//! Reading a container's cgroup (stats) and freezing it (pause), found from its init's
//! `/proc/<pid>/cgroup`, on cgroup v1 (and the hybrid layout) and on pure v2.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";

/// Where a process's cgroups are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroups {
    /// One directory per v1 controller we read.
    V1 {
        memory: Option<PathBuf>,
        cpuacct: Option<PathBuf>,
        pids: Option<PathBuf>,
        freezer: Option<PathBuf>,
    },
    V2(PathBuf),
}

/// Parse the text of `/proc/<pid>/cgroup`.
pub fn parse(text: &str, root: &Path) -> Cgroups {
    let mut v1: Vec<(Vec<&str>, &str)> = Vec::new();
    let mut unified: Option<&str> = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if ctrls.is_empty() {
            unified = Some(path);
        } else {
            v1.push((ctrls.split(',').collect(), path));
        }
    }
    let has_v1 = v1
        .iter()
        .any(|(c, _)| c.contains(&"memory") || c.contains(&"pids"));
    if !has_v1 {
        return Cgroups::V2(root.join(unified.unwrap_or("/").trim_start_matches('/')));
    }
    let find = |name: &str| {
        v1.iter().find(|(c, _)| c.contains(&name)).map(|(c, p)| {
            let mount: Vec<&str> = c
                .iter()
                .copied()
                .filter(|x| !x.starts_with("name="))
                .collect();
            root.join(mount.join(",")).join(p.trim_start_matches('/'))
        })
    };
    Cgroups::V1 {
        memory: find("memory"),
        cpuacct: find("cpuacct"),
        pids: find("pids"),
        freezer: find("freezer"),
    }
}

/// The cgroups of `pid`.
pub fn of_pid(pid: u32) -> std::io::Result<Cgroups> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    Ok(parse(&text, Path::new(ROOT)))
}

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `max` or a huge v1 value means no limit.
fn read_limit(p: &Path) -> Option<u64> {
    let t = std::fs::read_to_string(p).ok()?;
    let t = t.trim();
    if t == "max" {
        return None;
    }
    let v: u64 = t.parse().ok()?;
    (v < (1u64 << 62)).then_some(v)
}

fn stat_field(p: &Path, key: &str) -> Option<u64> {
    let t = std::fs::read_to_string(p).ok()?;
    t.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Memory in use, less the inactive file cache (as `docker stats` shows it).
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub cpu_usage_ns: u64,
    pub pids: u64,
    pub pids_limit: Option<u64>,
}

impl Cgroups {
    pub fn usage(&self) -> Usage {
        match self {
            Cgroups::V1 {
                memory,
                cpuacct,
                pids,
                ..
            } => {
                let mut u = Usage::default();
                if let Some(m) = memory {
                    let used = read_u64(&m.join("memory.usage_in_bytes")).unwrap_or(0);
                    let inactive =
                        stat_field(&m.join("memory.stat"), "total_inactive_file").unwrap_or(0);
                    u.memory_bytes = used.saturating_sub(inactive);
                    u.memory_limit_bytes = read_limit(&m.join("memory.limit_in_bytes"));
                }
                if let Some(c) = cpuacct {
                    u.cpu_usage_ns = read_u64(&c.join("cpuacct.usage")).unwrap_or(0);
                }
                if let Some(p) = pids {
                    u.pids = read_u64(&p.join("pids.current")).unwrap_or(0);
                    u.pids_limit = read_limit(&p.join("pids.max"));
                }
                u
            }
            Cgroups::V2(dir) => {
                let used = read_u64(&dir.join("memory.current")).unwrap_or(0);
                let inactive = stat_field(&dir.join("memory.stat"), "inactive_file").unwrap_or(0);
                Usage {
                    memory_bytes: used.saturating_sub(inactive),
                    memory_limit_bytes: read_limit(&dir.join("memory.max")),
                    cpu_usage_ns: stat_field(&dir.join("cpu.stat"), "usage_usec").unwrap_or(0)
                        * 1000,
                    pids: read_u64(&dir.join("pids.current")).unwrap_or(0),
                    pids_limit: read_limit(&dir.join("pids.max")),
                }
            }
        }
    }

    /// Freeze (`true`) or thaw the whole cgroup, and wait until the kernel says it is done.
    pub async fn freeze(&self, frozen: bool) -> Result<(), String> {
        let (file, value, done_file, done): (PathBuf, &str, PathBuf, &str) = match self {
            Cgroups::V1 { freezer, .. } => {
                let Some(f) = freezer else {
                    return Err("no freezer cgroup controller for this container".into());
                };
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (f.join("freezer.state"), v, f.join("freezer.state"), v)
            }
            Cgroups::V2(dir) => {
                let v = if frozen { "1" } else { "0" };
                let done = if frozen { "frozen 1" } else { "frozen 0" };
                (
                    dir.join("cgroup.freeze"),
                    v,
                    dir.join("cgroup.events"),
                    done,
                )
            }
        };
        std::fs::write(&file, value).map_err(|e| format!("write {}: {e}", file.display()))?;
        for _ in 0..500 {
            let t = std::fs::read_to_string(&done_file)
                .map_err(|e| format!("read {}: {e}", done_file.display()))?;
            if t.lines().any(|l| l.trim() == done) {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        Err(format!(
            "{} did not reach {done:?} within 1 s",
            done_file.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hybrid_and_v2_layouts_are_found() {
        let hybrid = "13:pids:/berth/abc\n7:cpu,cpuacct:/berth/abc\n5:memory:/berth/abc\n4:freezer:/berth/abc\n1:name=systemd:/x\n0::/user.slice\n";
        let r = Path::new("/sys/fs/cgroup");
        assert_eq!(
            parse(hybrid, r),
            Cgroups::V1 {
                memory: Some("/sys/fs/cgroup/memory/berth/abc".into()),
                cpuacct: Some("/sys/fs/cgroup/cpu,cpuacct/berth/abc".into()),
                pids: Some("/sys/fs/cgroup/pids/berth/abc".into()),
                freezer: Some("/sys/fs/cgroup/freezer/berth/abc".into()),
            }
        );
        assert_eq!(
            parse("0::/berth/abc\n", r),
            Cgroups::V2("/sys/fs/cgroup/berth/abc".into())
        );
    }

    #[test]
    fn our_own_cgroup_is_found_on_this_host() {
        let dir = match of_pid(std::process::id()).unwrap() {
            Cgroups::V1 { memory, .. } => memory.expect("a v1 memory controller"),
            Cgroups::V2(d) => d,
        };
        assert!(dir.is_dir(), "{}", dir.display());
    }
}

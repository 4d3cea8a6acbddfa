//! What a container berth has given up on may leave in the kernel: its cgroup, and processes
//! still in it (a shim killed while berthd was down leaves its container's processes running,
//! re-parented to PID 1). [`destroy`] empties a container's cgroup (freeze and kill, or
//! `cgroup.kill`) and removes it. [`sweep`] finds the cgroups below `berth/` that no record
//! names and that provably belong to this node's data root, and destroys them.
//!
//! Ownership: many daemons (each with its own data root) may share the `berth/` parent on one
//! host, so a cgroup is this daemon's only when a process in it has, in its mount namespace
//! (`/proc/<pid>/mountinfo`), an overlay whose `upperdir` lies under this daemon's
//! `<data_root>/containers/`: every container's root filesystem is such an overlay, mounted by
//! its init from the paths the supervisor gave. An empty cgroup proves nothing and is left
//! alone, as are the standby shims' `standby-<pid>` placeholders (not container ids).

use berth_cgroups::{Cgroup, Layout};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long killing a container's processes may take.
pub const KILL_WITHIN: Duration = Duration::from_secs(10);

/// This host's cgroup layout, detected once.
fn layout() -> Result<&'static Layout, String> {
    static LAYOUT: std::sync::OnceLock<Result<Layout, String>> = std::sync::OnceLock::new();
    LAYOUT
        .get_or_init(|| Layout::detect().map_err(|e| e.to_string()))
        .as_ref()
        .map_err(Clone::clone)
}

/// Container `id`'s cgroup, if it exists.
pub fn cgroup_of(id: &str) -> Result<Option<Cgroup>, String> {
    let cg = Cgroup::at(layout()?, id).map_err(|e| e.to_string())?;
    let exists = cg.dirs().any(|d| d.is_dir());
    Ok(exists.then_some(cg))
}

/// Kill every process in container `id`'s cgroup and remove the cgroup (blocking). Returns
/// how many processes were found; a cgroup that does not exist has none.
pub fn destroy(id: &str) -> Result<usize, String> {
    match cgroup_of(id)? {
        None => Ok(0),
        Some(cg) => cg.destroy(KILL_WITHIN).map_err(|e| e.to_string()),
    }
}

/// The `upperdir` of every overlay in a mountinfo text.
pub fn overlay_uppers(mountinfo: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((_, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut f = right.split(' ');
        let (Some("overlay"), Some(_source), Some(opts)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        for o in opts.split(',') {
            if let Some(u) = o.strip_prefix("upperdir=") {
                out.push(PathBuf::from(berth_cgroups::unescape_mountinfo(u)));
            }
        }
    }
    out
}

/// Whether `mountinfo` (a process's) has an overlay whose upper dir lies under one of `roots`.
pub fn mounts_under(mountinfo: &str, roots: &[PathBuf]) -> bool {
    overlay_uppers(mountinfo)
        .iter()
        .any(|u| roots.iter().any(|r| u.starts_with(r) && u != r))
}

/// `containers_dir` as configured and as the kernel resolves it (the paths the init mounted
/// were given in one of the two forms).
pub fn roots(containers_dir: &Path) -> Vec<PathBuf> {
    let mut v = vec![containers_dir.to_path_buf()];
    if let Ok(c) = std::fs::canonicalize(containers_dir) {
        if !v.contains(&c) {
            v.push(c);
        }
    }
    v
}

/// A container id: 64 lowercase hexadecimal digits.
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Destroy the cgroups below `berth/` named by a container id that `known` does not hold
/// and whose processes are this daemon's (see the module's doc). Blocking. Returns each
/// destroyed cgroup's id with the number of processes killed in it.
pub fn sweep(
    containers_dir: &Path,
    known: &HashSet<String>,
) -> Vec<(String, Result<usize, String>)> {
    let Ok(layout) = layout() else {
        return Vec::new();
    };
    let roots = roots(containers_dir);
    let mut out = Vec::new();
    for name in berth_cgroups::list(layout) {
        if !is_container_id(&name) || known.contains(&name) {
            continue;
        }
        let Ok(cg) = Cgroup::at(layout, &name) else {
            continue;
        };
        let ours = cg.all_procs().iter().any(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .is_ok_and(|t| mounts_under(&t, &roots))
        });
        if ours {
            out.push((name, cg.destroy(KILL_WITHIN).map_err(|e| e.to_string())));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_overlays_under_our_containers_dir_are_ours() {
        let mi = "1 0 0:50 / / rw,relatime - overlay overlay rw,lowerdir=/a/l1:/a/l2,upperdir=/var/lib/b\\040x/containers/abc/upper,workdir=/var/lib/b\\040x/containers/abc/work\n\
                  2 1 0:5 / /proc rw - proc proc rw\n";
        assert_eq!(
            overlay_uppers(mi),
            vec![PathBuf::from("/var/lib/b x/containers/abc/upper")]
        );
        assert!(mounts_under(
            mi,
            &[PathBuf::from("/var/lib/b x/containers")]
        ));
        // Another daemon's data root, or one whose name only starts the same.
        assert!(!mounts_under(mi, &[PathBuf::from("/var/lib/b x/contain")]));
        assert!(!mounts_under(mi, &[PathBuf::from("/other/containers")]));
        assert!(!mounts_under(
            "1 0 0:5 / / rw - ext4 /dev/sda rw\n",
            &[PathBuf::from("/")]
        ));
    }
}

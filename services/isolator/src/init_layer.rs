//! The init layer: one read-only directory laid above every container's image layers, holding
//! what the init mounts onto (`/proc`, `/sys`, `/dev`, and empty `/etc/hostname`, `/etc/hosts`
//! and `/etc/resolv.conf`), as Docker's init layer does. Without it, an image lacking them has
//! them made in the container's upper directory at every start, before the container runs: a
//! copy-up of `/etc` and three new files (new inodes are what a start pays most for on a
//! filesystem without a journal). Like Docker's, it decides the owner and mode of the merged
//! `/etc` (root, 0755), and a regular file here hides an image's symlink at those three paths.
//!
//! Not used for a container in a user namespace: files owned by the host's root would show as
//! unmapped there.

use crate::error::{io, IsolatorError};
use berth_bus::NodeConfig;
use berth_proto::isolator::RootfsMount;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Directories of the layer, parents first.
pub const DIRS: &[&str] = &["dev", "etc", "proc", "sys"];
/// Empty files of the layer: the targets of the per-container `/etc` files.
pub const FILES: &[&str] = &["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Where the layer lives.
pub fn dir(cfg: &NodeConfig) -> PathBuf {
    cfg.data_root.join("init-layer")
}

/// Make the layer at `dir` unless it is there. It is built beside it and renamed into place,
/// so a container never sees half of it.
pub fn ensure(dir: &Path) -> Result<(), IsolatorError> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    let tmp = parent.join(format!(
        ".init-layer.{}.{}",
        std::process::id(),
        berth_bus::random_hex(8)
    ));
    let built = (|| {
        // Each made, then given its mode (the umask may have taken bits away).
        let made = |p: &Path, is_dir: bool| {
            let (r, mode) = if is_dir {
                (std::fs::create_dir(p), 0o755)
            } else {
                (std::fs::File::create_new(p).map(drop), 0o644)
            };
            r.and_then(|()| std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)))
                .map_err(io("create", p))
        };
        made(&tmp, true)?;
        for d in DIRS {
            made(&tmp.join(d), true)?;
        }
        for f in FILES {
            made(&tmp.join(f), false)?;
        }
        std::fs::rename(&tmp, dir).map_err(io("rename into place", dir))
    })();
    if built.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
        // Another create put one there meanwhile.
        if dir.is_dir() {
            return Ok(());
        }
    }
    built
}

/// `rootfs` with the layer at `dir` above its image layers.
pub fn over(rootfs: &RootfsMount, dir: &Path) -> RootfsMount {
    let mut r = rootfs.clone();
    r.lowerdirs.insert(0, dir.display().to_string());
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_is_made_once_whole_and_goes_on_top() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("data").join("init-layer");
        ensure(&d).unwrap();
        for p in DIRS {
            let m = std::fs::metadata(d.join(p)).unwrap();
            assert!(m.is_dir(), "{p}");
            assert_eq!(m.permissions().mode() & 0o777, 0o755, "{p}");
        }
        for p in FILES {
            let m = std::fs::metadata(d.join(p)).unwrap();
            assert!(m.is_file() && m.len() == 0, "{p}");
            assert_eq!(m.permissions().mode() & 0o777, 0o644, "{p}");
        }
        // Again: nothing changes, nothing is left aside.
        std::fs::write(d.join("etc/hosts"), b"kept").unwrap();
        ensure(&d).unwrap();
        assert_eq!(std::fs::read(d.join("etc/hosts")).unwrap(), b"kept");
        let names: Vec<_> = std::fs::read_dir(t.path().join("data"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["init-layer"]);
        let r = RootfsMount {
            lowerdirs: vec!["/img/top".into(), "/img/base".into()],
            upperdir: "/c/upper".into(),
            workdir: "/c/work".into(),
            volatile: false,
        };
        assert_eq!(
            over(&r, &d).lowerdirs,
            [
                d.display().to_string(),
                "/img/top".into(),
                "/img/base".into()
            ]
        );
    }
}

//! A container's device nodes: the default nodes of its `/dev` and the nodes of the host
//! devices its spec gives it (`--device`). Which devices, and the cgroup rules that let it use
//! them and nothing else, are `berth_policy::devices`.

use crate::error::{ShimError, Step};
use berth_policy::devices::{resolve, DEFAULT_MODE, DEFAULT_NODES};
use berth_proto::isolator::{Device, DeviceMapping};
use nix::errno::Errno;
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use std::os::fd::{AsFd, OwnedFd};

/// Resolve every mapping; the error names the entry (`devices[1]: ...`).
pub fn resolve_all(ms: &[DeviceMapping]) -> Result<Vec<Device>, ShimError> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| resolve(m).map_err(|e| ShimError::refused(format!("devices[{i}]"), e)))
        .collect()
}

/// Make node `name` in directory `dir` (an `O_PATH` fd) and give it `mode` exactly (the
/// umask does not take part) and its owner.
fn node(
    dir: &OwnedFd,
    name: &str,
    kind: SFlag,
    major: u32,
    minor: u32,
    mode: u32,
    owner: Option<(u32, u32)>,
) -> Result<(), Errno> {
    let dev = makedev(u64::from(major), u64::from(minor));
    match mknodat(dir.as_fd(), name, kind, Mode::from_bits_truncate(mode), dev) {
        Ok(()) => {}
        Err(Errno::EEXIST) => {
            // A device given at a path the image (or a default node) has: it replaces it.
            nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)?;
            mknodat(dir.as_fd(), name, kind, Mode::from_bits_truncate(mode), dev)?;
        }
        Err(e) => return Err(e),
    }
    if let Some((uid, gid)) = owner {
        fchownat(
            dir.as_fd(),
            name,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    // After the chown, which clears set-id bits. The node was just made by mknod, nothing
    // runs in the container yet: it is not a symlink.
    fchmodat(
        dir.as_fd(),
        name,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
}

/// Make the default nodes in the container's `/dev` (`dev`, an `O_PATH` fd of it), 0666.
pub fn make_default_nodes(dev: &OwnedFd) -> Result<(), ShimError> {
    for (name, major, minor) in DEFAULT_NODES {
        node(dev, name, SFlag::S_IFCHR, major, minor, DEFAULT_MODE, None)
            .step(|| format!("mknod /dev/{name}"))?;
    }
    Ok(())
}

/// Make the node of each given device at its path below `root` (parents created as
/// directories, resolved inside the root).
pub fn make_nodes(root: &OwnedFd, devices: &[Device]) -> Result<(), ShimError> {
    for d in devices {
        let p = d.container_path.trim_end_matches('/');
        let (parent, name) = p.rsplit_once('/').unwrap_or(("", p));
        let parent = if parent.is_empty() { "/" } else { parent };
        let dir = crate::fsutil::ensure_in(root, parent, crate::fsutil::Kind::Dir)?;
        let kind = if d.block {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFCHR
        };
        node(
            &dir,
            name,
            kind,
            d.major,
            d.minor,
            d.mode,
            Some((d.uid, d.gid)),
        )
        .step(|| {
            format!(
                "mknod {} (device {}:{})",
                d.container_path, d.major, d.minor
            )
        })?;
    }
    Ok(())
}

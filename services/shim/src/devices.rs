//! A container's devices: the default nodes of its `/dev`, the host devices its spec gives it
//! (`--device`), and the cgroup rules that let it use those and nothing else.
//!
//! The rules are Docker's and runc's: every device is refused, except `mknod` of any
//! character or block device (an image may carry nodes; making one opens nothing) and
//! read/write of the default set (`null zero full random urandom tty console ptmx` and the
//! terminals of the container's own devpts, `136:*`), plus each given device with the
//! permissions it was given. A node found in the image or made inside with `mknod` of any
//! other device cannot be opened (`EPERM`).

use crate::error::{ShimError, Step};
use berth_cgroups::{Access, DeviceRule, DeviceType};
use berth_proto::isolator::{Device, DeviceMapping};
use nix::errno::Errno;
use nix::sys::stat::{fchmodat, makedev, mknodat, FchmodatFlags, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use std::os::fd::{AsFd, OwnedFd};

/// The nodes every container's `/dev` has: (name, major, minor). All 0666, as in every engine.
pub const DEFAULT_NODES: [(&str, u32, u32); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Mode of the default nodes.
pub const DEFAULT_MODE: u32 = 0o666;

/// The rules every container gets.
pub fn default_rules() -> Vec<DeviceRule> {
    let any = |kind| DeviceRule {
        kind,
        major: None,
        minor: None,
        access: Access::MKNOD,
    };
    let mut rules = vec![any(DeviceType::Char), any(DeviceType::Block)];
    for (_, major, minor) in DEFAULT_NODES {
        rules.push(DeviceRule::char(major, minor, Access::ALL));
    }
    // /dev/console (a terminal's slave is bound on it) and /dev/ptmx (pts/ptmx).
    rules.push(DeviceRule::char(5, 1, Access::ALL));
    rules.push(DeviceRule::char(5, 2, Access::ALL));
    // The terminals of the container's devpts.
    rules.push(DeviceRule {
        kind: DeviceType::Char,
        major: Some(136),
        minor: None,
        access: Access::ALL,
    });
    rules
}

/// The cgroup rule of a resolved device.
pub fn rule(d: &Device) -> DeviceRule {
    DeviceRule {
        kind: if d.block {
            DeviceType::Block
        } else {
            DeviceType::Char
        },
        major: Some(d.major),
        minor: Some(d.minor),
        // Checked when it was resolved; nothing allowed if not.
        access: Access::parse(&d.permissions).unwrap_or(Access::MKNOD),
    }
}

/// Resolve a mapping on this host: its host path (symlinks followed, as Docker does) must be
/// a character or block device. The error says what is wrong with which path.
pub fn resolve(m: &DeviceMapping) -> Result<Device, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    m.check()?;
    let md = std::fs::metadata(&m.host_path).map_err(|e| format!("{}: {e}", m.host_path))?;
    let ft = md.file_type();
    if !ft.is_char_device() && !ft.is_block_device() {
        return Err(format!(
            "{} is not a character or block device",
            m.host_path
        ));
    }
    let rdev = md.rdev();
    Ok(Device {
        container_path: m.container_path.clone(),
        block: ft.is_block_device(),
        major: nix::sys::stat::major(rdev) as u32,
        minor: nix::sys::stat::minor(rdev) as u32,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        permissions: m.permissions.clone(),
    })
}

/// Resolve every mapping; the error names the entry (`devices[1]: ...`).
pub fn resolve_all(ms: &[DeviceMapping]) -> Result<Vec<Device>, ShimError> {
    ms.iter()
        .enumerate()
        .map(|(i, m)| resolve(m).map_err(|e| ShimError::refused(format!("devices[{i}]"), e)))
        .collect()
}

/// The rules of a container given `devices`: the defaults, then one rule per device.
pub fn rules(devices: &[Device]) -> Vec<DeviceRule> {
    let mut r = default_rules();
    r.extend(devices.iter().map(rule));
    r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_rules_are_dockers() {
        let lines: Vec<String> = default_rules().iter().map(|r| r.v1_line()).collect();
        assert_eq!(
            lines,
            [
                "c *:* m",
                "b *:* m",
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
            ]
        );
    }

    #[test]
    fn a_host_device_resolves_and_a_file_does_not() {
        let m = |p: &str| DeviceMapping {
            host_path: p.into(),
            container_path: "/dev/x".into(),
            permissions: "r".into(),
        };
        let d = resolve(&m("/dev/null")).unwrap();
        assert_eq!((d.block, d.major, d.minor), (false, 1, 3));
        assert_eq!(rule(&d).v1_line(), "c 1:3 r");
        let e = resolve(&m("/etc/hostname")).unwrap_err();
        assert!(e.contains("not a character or block device"), "{e}");
        let e = resolve(&m("/nonexistent/dev")).unwrap_err();
        assert!(e.contains("/nonexistent/dev"), "{e}");
    }
}

//! A container's devices: the default nodes of its `/dev`, the host devices its spec gives it
//! (`--device`) resolved on the host, and the cgroup rules that let it use those and nothing
//! else. The shim makes the nodes (`berth-shim`'s `devices.rs`).
//!
//! The rules are Docker's and runc's: every device is refused, except `mknod` of any
//! character or block device (an image may carry nodes; making one opens nothing) and
//! read/write of the default set (`null zero full random urandom tty console ptmx` and the
//! terminals of the container's own devpts, `136:*`), plus each given device with the
//! permissions it was given. A node found in the image or made inside with `mknod` of any
//! other device cannot be opened (`EPERM`).

use berth_cgroups::{Access, DeviceRule, DeviceType};
use berth_proto::isolator::{Device, DeviceMapping};

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

/// The rules of a container given `devices`: the defaults, then one rule per device.
pub fn rules(devices: &[Device]) -> Vec<DeviceRule> {
    let mut r = default_rules();
    r.extend(devices.iter().map(rule));
    r
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

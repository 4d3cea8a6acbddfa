//! Checks of a create request before anything is written: each error names the field.

use crate::error::IsolatorError;
use berth_proto::isolator::{ContainerSpec, NetworkMode, RootfsMount};
use berth_proto::validate;
use std::path::Path;

/// Docker's smallest memory limit.
pub use berth_proto::validate::MIN_MEMORY;

fn bad(field: impl Into<String>, msg: impl Into<String>) -> IsolatorError {
    IsolatorError::invalid(field, msg)
}

pub fn id(id: &str) -> Result<(), IsolatorError> {
    if id.len() != 64 || !id.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad(
            "id",
            format!("{id:?} is not 64 lowercase hex characters"),
        ));
    }
    Ok(())
}

/// A volume name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 characters.
pub fn volume_name(name: &str) -> Result<(), IsolatorError> {
    validate::volume_name(name).map_err(|e| bad("volume", e))
}

/// A user spec (`uid`, `uid:gid`, `name`, `name:group`): its form, and every id in it within
/// 0..=4294967294 (4294967295 would leave the process root: see the shim's `user`).
pub fn user(field: &str, u: &str) -> Result<(), IsolatorError> {
    validate::user(u).map_err(|e| bad(field, e))
}

fn container_path(field: &str, p: &str) -> Result<(), IsolatorError> {
    if !p.starts_with('/') {
        return Err(bad(field, format!("{p:?} is not an absolute path")));
    }
    if p.contains('\0') {
        return Err(bad(field, format!("{p:?} contains a NUL byte")));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(bad(field, format!("{p:?} contains '..'")));
    }
    Ok(())
}

fn overlay_dir(field: &str, p: &str) -> Result<(), IsolatorError> {
    if !p.starts_with('/') {
        return Err(bad(field, format!("{p:?} is not an absolute path")));
    }
    if p.contains([',', ':', '\0', '\\']) {
        return Err(bad(
            field,
            format!("{p:?} contains ',', ':' or '\\', which overlayfs options cannot carry"),
        ));
    }
    if !Path::new(p).is_dir() {
        return Err(bad(
            field,
            format!("{p} does not exist or is not a directory"),
        ));
    }
    Ok(())
}

pub fn rootfs(r: &RootfsMount) -> Result<(), IsolatorError> {
    if r.lowerdirs.is_empty() {
        return Err(bad("rootfs.lowerdirs", "no lower directory given"));
    }
    for (i, l) in r.lowerdirs.iter().enumerate() {
        overlay_dir(&format!("rootfs.lowerdirs[{i}]"), l)?;
    }
    overlay_dir("rootfs.upperdir", &r.upperdir)?;
    overlay_dir("rootfs.workdir", &r.workdir)?;
    let len = r.lowerdirs.iter().map(|l| l.len() + 1).sum::<usize>()
        + r.upperdir.len()
        + r.workdir.len()
        + 40;
    if len > 4000 {
        return Err(bad(
            "rootfs.lowerdirs",
            format!("the overlay options would be {len} bytes; the kernel takes at most a page"),
        ));
    }
    Ok(())
}

/// The spec's devices, checked and resolved on this host: each host path must be a
/// character or block device.
pub fn devices(s: &ContainerSpec) -> Result<Vec<berth_proto::isolator::Device>, IsolatorError> {
    let mut out = Vec::with_capacity(s.devices.len());
    for (i, d) in s.devices.iter().enumerate() {
        let f = format!("devices[{i}]");
        container_path(&format!("{f}.container_path"), &d.container_path)?;
        if d.container_path.trim_matches('/').is_empty() {
            return Err(bad(
                format!("{f}.container_path"),
                "a device node cannot be the root",
            ));
        }
        if !berth_proto::isolator::valid_device_permissions(&d.permissions) {
            return Err(bad(
                format!("{f}.permissions"),
                format!(
                    "{:?} is not letters from rwm (read, write, mknod), each once",
                    d.permissions
                ),
            ));
        }
        if !d.host_path.starts_with('/') {
            return Err(bad(
                format!("{f}.host_path"),
                format!("{:?} is not an absolute host path", d.host_path),
            ));
        }
        out.push(berth_policy::devices::resolve(d).map_err(|e| bad(format!("{f}.host_path"), e))?);
    }
    Ok(out)
}

pub fn spec(s: &ContainerSpec) -> Result<(), IsolatorError> {
    id(&s.id)?;
    if s.args.is_empty() {
        return Err(bad(
            "args",
            "no command: the image has no entrypoint or cmd and none was given",
        ));
    }
    // The checks the supervisor ran on the create request (berth_proto::validate), again on
    // what it merged with the image's settings.
    for a in &s.args {
        validate::arg(a).map_err(|e| bad("args", e))?;
    }
    for e in &s.env {
        validate::env_entry(e).map_err(|e| bad("env", e))?;
    }
    if let Some(w) = &s.working_dir {
        if !w.is_empty() {
            validate::container_path(w).map_err(|e| bad("working_dir", e))?;
        }
    }
    if let Some(h) = &s.hostname {
        validate::hostname(h).map_err(|e| bad("hostname", e))?;
    }
    if let Some(u) = &s.user {
        user("user", u)?;
    }
    for (i, m) in s.mounts.iter().enumerate() {
        validate::mount(m).map_err(|e| bad(format!("mounts[{i}].{}", e.field), e.reason))?;
        if m.kind == berth_proto::isolator::MountKind::Bind && !Path::new(&m.source).exists() {
            return Err(bad(
                format!("mounts[{i}].source"),
                format!("bind source {} does not exist", m.source),
            ));
        }
    }
    let r = &s.resources;
    validate::resources(r).map_err(|e| bad(format!("resources.{}", e.field), e.reason))?;
    for u in &r.ulimits {
        if berth_policy::process::rlimit_resource(&u.name).is_none() {
            return Err(bad(
                "resources.ulimits",
                format!("unknown ulimit {:?}", u.name),
            ));
        }
        if u.soft > u.hard {
            return Err(bad(
                "resources.ulimits",
                format!("{}: soft {} is above hard {}", u.name, u.soft, u.hard),
            ));
        }
    }
    let caps =
        berth_policy::caps::resolve(&s.cap_add, &s.cap_drop).map_err(|e| bad("capabilities", e))?;
    if s.seccomp && s.seccomp_profile.is_some() {
        berth_policy::seccomp::check(s, &caps).map_err(|e| bad("seccomp profile", e))?;
    }
    match &s.network {
        NetworkMode::Bridge(b) => {
            berth_net::store::check_name(b).map_err(|e| bad("network", e.to_string()))?
        }
        _ if !s.ports.is_empty() => {
            return Err(bad(
                "ports",
                "published ports need a bridge network (network mode is not bridge)",
            ))
        }
        _ => {}
    }
    if let Some(base) = s.userns_remap {
        if base == 0 || base.checked_add(65_536).is_none() {
            return Err(bad(
                "userns_remap",
                format!("{base}: the range of 65536 ids must start above 0 and fit in 32 bits"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::isolator::MountSpec;

    fn good() -> ContainerSpec {
        ContainerSpec {
            id: "a".repeat(64),
            name: "c".into(),
            args: vec!["/bin/sh".into()],
            seccomp: true,
            no_new_privileges: true,
            ..Default::default()
        }
    }

    #[test]
    fn names_the_bad_field() {
        assert!(spec(&good()).is_ok());
        let mut s = good();
        s.id = "xyz".into();
        assert!(spec(&s).unwrap_err().to_string().starts_with("id:"));
        let mut s = good();
        s.mounts.push(MountSpec {
            kind: berth_proto::isolator::MountKind::Bind,
            source: "/nonexistent/berth-src".into(),
            target: "/data".into(),
            read_only: false,
            size_bytes: None,
        });
        let e = spec(&s).unwrap_err().to_string();
        assert!(
            e.contains("mounts[0].source") && e.contains("does not exist"),
            "{e}"
        );
        let mut s = good();
        s.mounts.push(MountSpec {
            kind: berth_proto::isolator::MountKind::Tmpfs,
            source: String::new(),
            target: "/a/../etc".into(),
            read_only: false,
            size_bytes: None,
        });
        assert!(spec(&s).unwrap_err().to_string().contains("'..'"));
        let mut s = good();
        s.cap_add = vec!["CAP_NOPE".into()];
        assert!(spec(&s).unwrap_err().to_string().contains("CAP_NOPE"));
        let mut s = good();
        s.resources.memory_bytes = Some(1024);
        assert!(spec(&s).unwrap_err().to_string().contains("memory_bytes"));
        for u in [
            "4294967295",
            "0:4294967295",
            "-1",
            "1000:-2",
            "18446744073709551616",
        ] {
            let mut s = good();
            s.user = Some(u.into());
            let e = spec(&s).unwrap_err().to_string();
            assert!(
                e.starts_with("user: ") && e.contains(u.rsplit(':').next().unwrap()),
                "{e}"
            );
        }
        let mut s = good();
        s.user = Some("4294967294:alice".into());
        assert!(spec(&s).is_ok());
        let dev = |host: &str, ctr: &str, perms: &str| {
            let mut s = good();
            s.devices.push(berth_proto::isolator::DeviceMapping {
                host_path: host.into(),
                container_path: ctr.into(),
                permissions: perms.into(),
            });
            devices(&s).map(|d| d.len()).map_err(|e| e.to_string())
        };
        assert_eq!(dev("/dev/null", "/dev/mine", "rw"), Ok(1));
        let e = dev("/etc/passwd", "/dev/mine", "rw").unwrap_err();
        assert!(
            e.starts_with("devices[0].host_path:") && e.contains("not a character or block"),
            "{e}"
        );
        let e = dev("/dev/null", "/dev/mine", "rwx").unwrap_err();
        assert!(e.starts_with("devices[0].permissions:"), "{e}");
        let e = dev("/dev/null", "/dev/../etc/x", "r").unwrap_err();
        assert!(e.starts_with("devices[0].container_path:"), "{e}");
        assert!(volume_name("data_1.x").is_ok());
        assert!(volume_name("../x").is_err());
        assert!(volume_name("").is_err());
    }
}

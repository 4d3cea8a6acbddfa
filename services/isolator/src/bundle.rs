//! The container's bundle directory: `spec.json`, `rootfs.json`, the OCI runtime
//! `config.json` (built with `oci-spec`, so the same bundle runs under `runc` once the
//! overlay is mounted on `rootfs/`), and the per-container `hostname`, `hosts` and
//! `resolv.conf`.

use crate::error::IsolatorError;
use berth_cgroups::DeviceType;
use berth_policy::rootfs::{MASKED, READ_ONLY};
use berth_proto::isolator::Device;
use berth_proto::isolator::{ContainerSpec, MountKind, NetworkMode, DEFAULT_PIDS_LIMIT};
use serde_json::{json, Value};
use std::path::Path;

pub fn hosts(spec: &ContainerSpec, hostname: &str) -> String {
    if spec.network == NetworkMode::Host {
        if let Ok(h) = std::fs::read_to_string("/etc/hosts") {
            return h;
        }
    }
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// The host's resolv.conf; without the host's network, loopback name servers (which would
/// be the container's own loopback) are left out.
pub fn resolv_conf(spec: &ContainerSpec) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if spec.network == NetworkMode::Host {
        return host;
    }
    host.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            !(w.next() == Some("nameserver")
                && w.next()
                    .is_some_and(|a| a.starts_with("127.") || a == "::1"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn rlimit_type(name: &str) -> String {
    format!("RLIMIT_{}", name.to_ascii_uppercase())
}

/// `linux.resources.devices`: every device denied, then berth's rules (the default set and
/// the container's own devices), as runc takes them.
fn device_rules(devices: &[Device]) -> Vec<Value> {
    let mut v = vec![json!({"allow": false, "access": "rwm"})];
    for r in berth_policy::devices::rules(devices) {
        let mut o = json!({"allow": true, "access": r.access.to_string()});
        o["type"] = json!(match r.kind {
            DeviceType::All => "a",
            DeviceType::Char => "c",
            DeviceType::Block => "b",
        });
        if let Some(m) = r.major {
            o["major"] = json!(m);
        }
        if let Some(m) = r.minor {
            o["minor"] = json!(m);
        }
        v.push(o);
    }
    v
}

/// The OCI runtime config of the container, checked by deserializing into `oci_spec`'s types.
pub fn oci_config(
    spec: &ContainerSpec,
    devices: &[Device],
    hostname: &str,
    bundle: &Path,
    volumes: &Path,
) -> Result<oci_spec::runtime::Spec, IsolatorError> {
    let caps = berth_policy::caps::resolve(&spec.cap_add, &spec.cap_drop)
        .map_err(|e| IsolatorError::invalid("capabilities", e))?;
    let mut cap_names: Vec<String> = caps.iter().map(|c| c.to_string()).collect();
    cap_names.sort();
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
        json!({"type": "cgroup"}),
    ];
    match &spec.network {
        NetworkMode::None | NetworkMode::Bridge(_) => namespaces.push(json!({"type": "network"})),
        NetworkMode::Host => {}
        NetworkMode::Container(other) => namespaces.push(json!({
            "type": "network",
            "path": format!("/proc/<init of {other}>/ns/net"),
        })),
    }
    let nodev = ["nosuid", "noexec", "nodev"];
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": nodev}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": nodev}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
    ];
    for m in &spec.mounts {
        let ro = if m.read_only { "ro" } else { "rw" };
        mounts.push(match m.kind {
            MountKind::Bind => json!({"destination": m.target, "type": "bind", "source": m.source, "options": ["rbind", ro]}),
            MountKind::Volume => json!({"destination": m.target, "type": "bind", "source": volumes.join(&m.source), "options": ["rbind", ro]}),
            MountKind::Tmpfs => {
                let mut o = vec!["nosuid".to_string(), "nodev".into(), "mode=1777".into(), ro.into()];
                if let Some(n) = m.size_bytes {
                    o.push(format!("size={n}"));
                }
                json!({"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": o})
            }
        });
    }
    for (f, t) in [
        ("hostname", "/etc/hostname"),
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
    ] {
        mounts.push(json!({"destination": t, "type": "bind", "source": bundle.join(f), "options": ["rbind", "rw"]}));
    }
    let r = &spec.resources;
    let mut resources = serde_json::Map::new();
    if let Some(m) = r.memory_bytes {
        resources.insert("memory".into(), json!({"limit": m, "swap": m}));
    }
    let mut cpu = serde_json::Map::new();
    if let Some(c) = r.cpus {
        cpu.insert("quota".into(), json!((c * 100_000.0).round() as i64));
        cpu.insert("period".into(), json!(100_000));
    }
    if let Some(s) = r.cpu_shares {
        cpu.insert("shares".into(), json!(s));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    resources.insert(
        "pids".into(),
        json!({"limit": r.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT)}),
    );
    resources.insert("devices".into(), Value::Array(device_rules(devices)));
    // The container's own nodes; runc makes the default ones itself.
    let linux_devices: Vec<Value> = devices
        .iter()
        .map(|d| {
            json!({
                "path": d.container_path,
                "type": if d.block { "b" } else { "c" },
                "major": d.major,
                "minor": d.minor,
                "fileMode": d.mode,
                "uid": d.uid,
                "gid": d.gid,
            })
        })
        .collect();
    let mut linux = json!({
        "devices": linux_devices,
        "namespaces": namespaces,
        "resources": resources,
        "cgroupsPath": format!("/{}/{}", berth_cgroups::PARENT, spec.id),
        "maskedPaths": MASKED,
        "readonlyPaths": READ_ONLY,
    });
    if let Some(seccomp) = berth_policy::seccomp::oci(spec, &caps).map_err(IsolatorError::Oci)? {
        linux["seccomp"] = seccomp;
    }
    let mut env = spec.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.push(format!("PATH={}", berth_policy::process::DEFAULT_PATH));
    }
    let rlimits: Vec<Value> = r
        .ulimits
        .iter()
        .map(|u| json!({"type": rlimit_type(&u.name), "soft": u.soft, "hard": u.hard}))
        .collect();
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": spec.tty,
            // Names are resolved in the container's /etc/passwd by berth's shim; runc wants
            // numbers, so a named user runs as root under runc.
            "user": numeric_user(spec.user.as_deref()),
            "args": spec.args,
            "env": env,
            "cwd": spec.working_dir.clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into()),
            "capabilities": {
                "bounding": cap_names, "effective": cap_names, "permitted": cap_names,
            },
            "rlimits": rlimits,
            "noNewPrivileges": spec.no_new_privileges,
        },
        "root": {"path": berth_proto::isolator::ROOTFS_DIR, "readonly": spec.read_only},
        "hostname": hostname,
        "mounts": mounts,
        "linux": linux,
        "annotations": {"org.berth.container.name": spec.name, "org.berth.image": spec.image},
    });
    serde_json::from_value(config).map_err(|e| IsolatorError::Oci(e.to_string()))
}

fn numeric_user(user: Option<&str>) -> Value {
    let (u, g) = match user {
        Some(s) => match s.split_once(':') {
            Some((u, g)) => (u, g),
            None => (s, "0"),
        },
        None => ("0", "0"),
    };
    json!({"uid": u.parse::<u32>().unwrap_or(0), "gid": g.parse::<u32>().unwrap_or(0)})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_carries_limits_caps_and_seccomp() {
        let mut s = ContainerSpec {
            id: "b".repeat(64),
            name: "web".into(),
            args: vec!["/bin/true".into()],
            seccomp: true,
            no_new_privileges: true,
            user: Some("1000:1000".into()),
            ..Default::default()
        };
        s.resources.memory_bytes = Some(32 << 20);
        let loop0 = Device {
            container_path: "/dev/disk".into(),
            block: true,
            major: 7,
            minor: 0,
            mode: 0o660,
            uid: 0,
            gid: 6,
            permissions: "r".into(),
        };
        let c = oci_config(&s, &[loop0], "h", Path::new("/b"), Path::new("/v")).unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 32 << 20);
        assert_eq!(v["linux"]["resources"]["pids"]["limit"], DEFAULT_PIDS_LIMIT);
        assert_eq!(v["process"]["user"]["uid"], 1000);
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
        let rules = v["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(rules[0], json!({"allow": false, "access": "rwm"}));
        assert!(rules.contains(
            &json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"})
        ));
        assert!(rules.contains(&json!({"allow": true, "type": "c", "major": 136, "access": "rwm"})));
        assert!(rules
            .contains(&json!({"allow": true, "type": "b", "major": 7, "minor": 0, "access": "r"})));
        assert_eq!(
            v["linux"]["devices"],
            json!([{"path": "/dev/disk", "type": "b", "major": 7, "minor": 0, "fileMode": 0o660, "uid": 0, "gid": 6}])
        );
        let seccomp = &v["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        let names = &seccomp["syscalls"][0]["names"];
        assert!(names.as_array().unwrap().iter().any(|n| n == "read"));
        s.seccomp = false;
        let c = oci_config(&s, &[], "h", Path::new("/b"), Path::new("/v")).unwrap();
        assert!(serde_json::to_value(&c).unwrap()["linux"]["seccomp"].is_null());
    }

    #[test]
    fn resolv_conf_drops_loopback_servers_without_host_network() {
        let s = ContainerSpec::default();
        assert!(!resolv_conf(&s)
            .lines()
            .any(|l| l.contains("nameserver 127.")));
    }
}

//! Compose `devices:`: the short syntax `HOST[:CONTAINER[:PERMISSIONS]]`, its errors (located
//! at the entry), and the merge of an override file by container path.

use berth_spec::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn load(files: &[(&str, &str)]) -> Result<Loaded, SpecError> {
    load_texts(
        files
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
        PathBuf::from("/srv/app"),
        &LoadOptions {
            env: Some(BTreeMap::new()),
            ..Default::default()
        },
    )
}

#[test]
fn devices_short_syntax() {
    let l = load(&[(
        "compose.yaml",
        "services:\n  w:\n    image: x\n    devices:\n      - /dev/fuse\n      - /dev/loop0:/dev/disk:r\n      - /dev/kvm:rw\n",
    )])
    .unwrap();
    let d = &l.project.services["w"].devices;
    let got: Vec<(&str, &str, &str)> = d
        .iter()
        .map(|m| {
            (
                m.host_path.as_str(),
                m.container_path.as_str(),
                m.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/dev/fuse", "/dev/fuse", "rwm"),
            ("/dev/loop0", "/dev/disk", "r"),
            ("/dev/kvm", "/dev/kvm", "rw"),
        ]
    );
}

#[test]
fn bad_devices_are_refused_at_the_entry() {
    let e = load(&[(
        "compose.yaml",
        "services:\n  w:\n    image: x\n    devices:\n      - /dev/fuse\n      - /dev/loop0:/dev/disk:rx\n",
    )])
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("compose.yaml:6:9:") && e.contains("rwm"),
        "{e}"
    );
    let e = load(&[(
        "compose.yaml",
        "services:\n  w:\n    image: x\n    devices: [dev/fuse]\n",
    )])
    .unwrap_err()
    .to_string();
    assert!(e.contains("not absolute"), "{e}");
    let e = load(&[(
        "compose.yaml",
        "services:\n  w:\n    image: x\n    devices: [/dev/a:/dev/x, /dev/b:/dev/x]\n",
    )])
    .unwrap_err()
    .to_string();
    assert!(e.contains("/dev/x is given twice"), "{e}");
}

#[test]
fn an_override_replaces_a_device_by_container_path() {
    let l = load(&[
        (
            "base.yaml",
            "services:\n  w:\n    image: x\n    devices: [/dev/loop0:/dev/disk, /dev/fuse]\n",
        ),
        (
            "over.yaml",
            "services:\n  w:\n    devices: [/dev/loop1:/dev/disk:r]\n",
        ),
    ])
    .unwrap();
    let d = &l.project.services["w"].devices;
    assert_eq!(d.len(), 2, "{d:?}");
    assert_eq!(d[0].host_path, "/dev/loop1");
    assert_eq!(d[0].permissions, "r");
    assert_eq!(d[1].host_path, "/dev/fuse");
}

#[test]
fn a_service_without_devices_hashes_as_before() {
    let l = load(&[("compose.yaml", "services:\n  w:\n    image: x\n")]).unwrap();
    let json = serde_json::to_value(&l.project.services["w"]).unwrap();
    assert!(json.get("devices").is_none(), "{json}");
}

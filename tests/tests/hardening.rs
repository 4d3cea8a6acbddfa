//! Process hardening through the real daemon (as root): empty inheritable and ambient
//! capability sets (CVE-2022-24769), uid/gid 4294967295 refused wherever an id comes from
//! (containerd's CVE-2024-40635), paths through magic links refused, and descriptors
//! berthd inherited reaching no shim, init or container process.
//!
//! Every test runs its own `berthd` (temp data root, run dir, node name and port); the
//! daemon's guard kills its containers and stops it, pass or fail. Files the tests probe for
//! on the host carry a unique name and are removed by a guard.

use berth_store::ContentStore;
use berth_tests::daemon::{stderr, stdout, Berthd};
use berth_tests::images::Layout;
use berth_tests::layers::{host_arch, import_layout, store_image, LayerTar};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const ZERO: &str = "0000000000000000";
/// Docker's default set, as `/proc/<pid>/status` prints it.
const DEFAULT_CAPS: &str = "00000000a80425fb";

/// A daemon and a busybox root filesystem (every applet, `/etc/passwd` with `alice`) to run
/// with `--rootfs`; `None` (the test is skipped) when not root.
fn setup() -> Option<(Berthd, tempfile::TempDir, PathBuf)> {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-hardening-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("rootfs");
    berth_tests::rootfs::make_busybox_rootfs(&root);
    Some((Berthd::start(), dir, root))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// `berth run --rm --rootfs root <opts> <cmd>`: the command's stdout, or a panic with stderr.
fn run_ok(d: &Berthd, root: &Path, opts: &[&str], cmd: &[&str]) -> String {
    let o = run(d, root, opts, cmd);
    assert!(o.status.success(), "{opts:?} {cmd:?}: {}", stderr(&o));
    stdout(&o)
}

fn run(d: &Berthd, root: &Path, opts: &[&str], cmd: &[&str]) -> std::process::Output {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--rootfs", s(root)]);
    args.extend_from_slice(cmd);
    d.berth(&args)
}

/// `berth run` that must fail: its stderr, which must name every one of `want`.
fn refused(d: &Berthd, root: &Path, opts: &[&str], cmd: &[&str], want: &[&str]) -> String {
    let o = run(d, root, opts, cmd);
    let err = stderr(&o);
    assert!(
        !o.status.success(),
        "{opts:?} {cmd:?} ran: {}{err}",
        stdout(&o)
    );
    for w in want {
        assert!(
            err.contains(w),
            "{opts:?}: the error does not say {w:?}: {err}"
        );
    }
    err
}

/// The `Cap*:` lines of a `/proc/<pid>/status` text.
fn caps(status: &str) -> BTreeMap<String, String> {
    status
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.starts_with("Cap"))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn assert_caps(what: &str, status: &str, inh_amb: &str, prm_eff: &str) {
    let c = caps(status);
    for (k, want) in [
        ("CapInh", inh_amb),
        ("CapAmb", inh_amb),
        ("CapPrm", prm_eff),
        ("CapEff", prm_eff),
    ] {
        assert_eq!(
            c.get(k).map(String::as_str),
            Some(want),
            "{what}: {k} in {status}"
        );
    }
}

/// Start a container `name` that sleeps, with `opts`; its id.
fn start(d: &Berthd, root: &Path, name: &str, opts: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["--rootfs", s(root), "sleep", "3600"]);
    let o = d.berth(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).trim().to_string()
}

#[test]
fn inheritable_and_ambient_capabilities_are_empty_for_init_exec_and_health_checks() {
    let Some((d, _dir, root)) = setup() else {
        return;
    };
    let out = run_ok(&d, &root, &[], &["grep", "^Cap", "/proc/self/status"]);
    assert_caps("the init", &out, ZERO, DEFAULT_CAPS);

    start(
        &d,
        &root,
        "hc",
        &[
            "--health-cmd",
            "grep ^Cap /proc/self/status",
            "--health-interval",
            "300ms",
        ],
    );
    let o = d.berth(&["exec", "hc", "grep", "^Cap", "/proc/self/status"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_caps("an exec", &stdout(&o), ZERO, DEFAULT_CAPS);

    let deadline = Instant::now() + Duration::from_secs(20);
    let probe = loop {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&d.berth(&["inspect", "hc"]))).expect("inspect JSON");
        if let Some(p) = v[0]["state"]["health"]["log"]
            .as_array()
            .and_then(|l| l.first())
        {
            break p.clone();
        }
        assert!(Instant::now() < deadline, "no health probe ran: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(probe["exit_code"], 0, "{probe}");
    assert_caps(
        "a health check",
        probe["output"].as_str().unwrap_or_default(),
        ZERO,
        DEFAULT_CAPS,
    );
}

#[test]
fn a_non_root_user_gains_nothing_from_inheritable_file_capabilities() {
    let Some((d, _dir, root)) = setup() else {
        return;
    };
    // A copy of the static busybox carrying inheritable (and effective) file capabilities:
    // named `busybox`, so that it takes its applet from its first argument.
    let capbox = root.join("opt/busybox");
    std::fs::create_dir_all(capbox.parent().unwrap()).unwrap();
    std::fs::copy(root.join("bin/busybox"), &capbox).unwrap();
    let set = Command::new("setcap")
        .args(["cap_net_raw+ei", s(&capbox)])
        .output()
        .expect("run setcap (package libcap2-bin)");
    assert!(set.status.success(), "setcap: {}", stderr(&set));
    let get = Command::new("getcap").arg(&capbox).output().unwrap();
    assert!(
        stdout(&get).contains("cap_net_raw"),
        "the file carries no capability: {}",
        stdout(&get)
    );
    let probe = ["/opt/busybox", "grep", "^Cap", "/proc/self/status"];

    // Executed by the container's init itself (no_new_privileges on, berth's default).
    let out = run_ok(&d, &root, &["--user", "1000:1000"], &probe);
    assert_caps("the init's command", &out, ZERO, ZERO);
    // Through a shell, without no_new_privileges (Docker's default).
    let script = probe.join(" ");
    let out = run_ok(
        &d,
        &root,
        &[
            "--user",
            "1000:1000",
            "--security-opt",
            "no-new-privileges=false",
        ],
        &["sh", "-c", &script],
    );
    assert_caps("a shell's child", &out, ZERO, ZERO);
    // An exec as that user.
    start(&d, &root, "box", &[]);
    let mut args = vec!["exec", "--user", "1000", "box"];
    args.extend_from_slice(&probe);
    let o = d.berth(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_caps("an exec's command", &stdout(&o), ZERO, ZERO);
}

#[test]
fn user_ids_that_do_not_fit_are_refused_for_run_and_exec() {
    let Some((d, _dir, root)) = setup() else {
        return;
    };
    for (user, want) in [
        ("--user=4294967295", "uid 4294967295 is out of range"),
        ("--user=0:4294967295", "gid 4294967295 is out of range"),
        ("--user=4294967296", "uid 4294967296 is out of range"),
        ("--user=-1", "uid \"-1\" is negative"),
        ("--user=alice:-1", "gid \"-1\" is negative"),
    ] {
        refused(&d, &root, &[user], &["id", "-u"], &["user", want]);
    }
    assert_eq!(
        run_ok(&d, &root, &["--user=4294967294:4294967294"], &["id", "-u"]),
        "4294967294\n"
    );

    start(&d, &root, "box", &[]);
    for (user, want) in [
        ("--user=4294967295", "uid 4294967295 is out of range"),
        ("--user=1000:4294967295", "gid 4294967295 is out of range"),
    ] {
        let o = d.berth(&["exec", user, "box", "id", "-u"]);
        let err = stderr(&o);
        assert!(!o.status.success(), "exec {user} ran: {}", stdout(&o));
        assert!(err.contains("user") && err.contains(want), "{user}: {err}");
    }
}

#[test]
fn names_resolving_to_ids_that_do_not_fit_are_refused() {
    let Some((d, _dir, root)) = setup() else {
        return;
    };
    let mut passwd = berth_tests::rootfs::PASSWD.to_string();
    passwd.push_str(
        "maxuid:x:4294967295:1000::/:/bin/sh\n\
         maxgid:x:1001:4294967295::/:/bin/sh\n\
         member:x:1002:1002::/:/bin/sh\n\
         word:x:one:1000::/:/bin/sh\n",
    );
    let mut group = berth_tests::rootfs::GROUP.to_string();
    group.push_str("maxgrp:x:4294967295:member\n");
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/group"), group).unwrap();

    for (user, want) in [
        (
            "maxuid",
            "/etc/passwd: user \"maxuid\": uid 4294967295 is out of range",
        ),
        (
            "maxgid",
            "/etc/passwd: user \"maxgid\": gid 4294967295 is out of range",
        ),
        (
            "alice:maxgrp",
            "/etc/group: group \"maxgrp\": gid 4294967295 is out of range",
        ),
        // A supplementary group of the user.
        (
            "member",
            "/etc/group: group \"maxgrp\": gid 4294967295 is out of range",
        ),
        (
            "word",
            "/etc/passwd: user \"word\": uid \"one\" is not a number",
        ),
    ] {
        refused(&d, &root, &["--user", user], &["id", "-u"], &["user", want]);
    }

    start(&d, &root, "box", &[]);
    let o = d.berth(&["exec", "--user", "maxuid", "box", "id", "-u"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "exec as maxuid ran: {}", stdout(&o));
    assert!(err.contains("uid 4294967295 is out of range"), "{err}");
}

#[test]
fn an_image_whose_config_user_is_4294967295_is_refused() {
    let Some((d, dir, _root)) = setup() else {
        return;
    };
    let layout = Layout::new();
    let base = dir.path().join("layer");
    berth_tests::images::busybox_rootfs(&base);
    layout.build("maxuser", host_arch(), &[&base]);
    let image = format!("{}:maxuser", layout.path().display());
    let o = Command::new("umoci")
        .args(["config", "--image", &image, "--config.user", "4294967295"])
        .output()
        .expect("run umoci");
    assert!(o.status.success(), "umoci config: {}", stderr(&o));
    let store = ContentStore::open(d.data_root().join("content")).unwrap();
    let reference = "localhost:5000/berth-hardening/maxuser:1";
    import_layout(&store, &layout.path(), "maxuser", reference);

    let o = d.berth(&["run", "--rm", reference, "id", "-u"]);
    let err = stderr(&o);
    assert!(!o.status.success(), "the image ran: {}", stdout(&o));
    assert!(
        err.contains("user") && err.contains("uid 4294967295 is out of range"),
        "{err}"
    );
    // With a user that fits, the same image runs.
    let o = d.berth(&["run", "--rm", "--user", "65534", reference, "id", "-u"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "65534\n");
}

#[test]
fn layer_entries_owned_by_ids_that_do_not_fit_are_refused_whole() {
    let Some((d, _dir, _root)) = setup() else {
        return;
    };
    let store = ContentStore::open(d.data_root().join("content")).unwrap();
    let max: &[u8] = b"4294967295";
    // (case, header uid, header gid, PAX records, what the error says)
    type Case<'a> = (&'a str, u64, u64, &'a [(&'a str, &'a [u8])], &'a str);
    let cases: [Case; 5] = [
        ("header-uid", 4_294_967_295, 0, &[], "uid 4294967295"),
        ("header-gid", 0, 4_294_967_295, &[], "gid 4294967295"),
        ("pax-uid", 0, 0, &[("uid", max)], "uid 4294967295"),
        ("pax-gid", 0, 0, &[("gid", max)], "gid 4294967295"),
        ("too-large", 1 << 33, 0, &[], "uid 8589934592"),
    ];
    for (case, uid, gid, pax, want) in cases {
        // Entries before the bad one are unpacked first: none of them may stay.
        let tar = LayerTar::new()
            .dir("bin", 0o755)
            .file("bin/before", 0o644, b"unpacked before the bad entry\n")
            .file_with("bin/suid", b"#!/bin/sh\n", 0o4755, uid, gid, pax)
            .finish();
        let reference = format!("localhost:5000/berth-hardening/owner:{case}");
        let (_, layers) = store_image(&store, &reference, &[tar]);
        let o = d.berth(&["run", "--rm", &reference, "true"]);
        let err = stderr(&o);
        assert!(!o.status.success(), "{case}: the layer was used");
        for w in [layers[0].as_str(), "bin/suid", want, "out of range"] {
            assert!(
                err.contains(w),
                "{case}: the error does not say {w:?}: {err}"
            );
        }
        let snaps = d.data_root().join("snapshots");
        let left: Vec<_> = std::fs::read_dir(&snaps)
            .map(|r| r.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "{case}: left in {}: {left:?}",
            snaps.display()
        );
    }
}

/// A path on the host removed when the test ends, pass or fail.
struct HostPath(PathBuf);

impl Drop for HostPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn paths_through_magic_links_are_refused_and_create_nothing_on_the_host() {
    let Some((d, _dir, root)) = setup() else {
        return;
    };
    let host = HostPath(PathBuf::from("/tmp").join(berth_tests::unique("berth-magic")));
    let name = host.0.file_name().unwrap().to_str().unwrap().to_string();
    // Each link's first component is missing, so the lookup fails (ENOENT) before it reaches
    // the magic link: only a resolver that reads a magic link's text gets past it.
    for (link, target) in [
        ("root-link", format!("/gone-a/../proc/self/root/tmp/{name}")),
        ("fd-link", format!("/gone-b/../proc/self/fd/1/{name}")),
        ("cwd-link", format!("/gone-c/../proc/self/cwd/{name}")),
        ("direct-link", format!("/proc/self/root/tmp/{name}")),
    ] {
        std::os::unix::fs::symlink(&target, root.join(link)).unwrap();
        let w = format!("/{link}");
        refused(
            &d,
            &root,
            &["--workdir", &w],
            &["pwd"],
            &["working directory", &w, "resolves through a magic link"],
        );
        let t = format!("/{link}/sub");
        refused(
            &d,
            &root,
            &["--tmpfs", &t],
            &["true"],
            &[&t, "resolves through a magic link"],
        );
        assert!(
            !host.0.exists(),
            "{link}: {} was created on the host",
            host.0.display()
        );
    }
}

#[test]
fn a_symlinked_workdir_climbing_above_the_root_stays_inside() {
    let Some((d, _dir, root)) = setup() else {
        return;
    };
    let rel = HostPath(PathBuf::from("/tmp").join(berth_tests::unique("berth-climb")));
    let abs = HostPath(PathBuf::from("/tmp").join(berth_tests::unique("berth-climb")));
    let rel_name = rel.0.file_name().unwrap().to_str().unwrap().to_string();
    let abs_name = abs.0.file_name().unwrap().to_str().unwrap().to_string();
    std::fs::create_dir_all(root.join("srv")).unwrap();
    // Dangling links: the working directory is created where they point, inside the root.
    std::os::unix::fs::symlink(
        format!("../../../../../../tmp/{rel_name}/app"),
        root.join("srv/rel"),
    )
    .unwrap();
    std::os::unix::fs::symlink(format!("/../../../tmp/{abs_name}"), root.join("srv/abs")).unwrap();
    for (w, inside) in [
        ("/srv/rel", format!("/tmp/{rel_name}/app")),
        ("/srv/abs", format!("/tmp/{abs_name}")),
    ] {
        let out = run_ok(
            &d,
            &root,
            &["--workdir", w],
            &["sh", "-c", "pwd -P; touch here; ls"],
        );
        assert_eq!(out, format!("{inside}\nhere\n"), "{w}");
    }
    for p in [&rel.0, &abs.0] {
        assert!(!p.exists(), "{} was created on the host", p.display());
    }
}

/// The descriptors of `pid` that point at `path`, as `fd -> target`.
fn holding(pid: i32, path: &Path) -> Vec<String> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}"));
    entries
        .flatten()
        .filter_map(|e| {
            let t = std::fs::read_link(e.path()).ok()?;
            (t == path).then(|| format!("{} -> {}", e.path().display(), t.display()))
        })
        .collect()
}

fn read_pid(p: &Path) -> i32 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn descriptors_berthd_inherited_reach_no_shim_init_or_container_process() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("berth-hardening-")
        .tempdir()
        .unwrap();
    let root = dir.path().join("rootfs");
    berth_tests::rootfs::make_busybox_rootfs(&root);
    let secret = dir.path().join(berth_tests::unique("inherited"));
    let file = std::fs::File::create(&secret).unwrap();
    let d = Berthd::start_inheriting(&file, 9);
    let berthd = d.pid().expect("berthd runs") as i32;
    assert_eq!(
        holding(berthd, &secret).len(),
        1,
        "the test did not pass the descriptor to berthd"
    );

    // `--init`: the container's PID 1 is berth's reaper, the command its child.
    let id = start(&d, &root, "box", &["--init"]);
    let run = d.run_dir().join(&id);
    let shim = read_pid(&run.join(berth_proto::isolator::SHIM_PID_FILE));
    let init = read_pid(&run.join(berth_proto::isolator::INIT_PID_FILE));
    // The reaper forks the command once released: wait for its child.
    let deadline = Instant::now() + Duration::from_secs(10);
    let command: i32 = loop {
        let children = std::fs::read_to_string(format!("/proc/{init}/task/{init}/children"))
            .unwrap_or_default();
        if let Some(c) = children.split_whitespace().next() {
            break c.parse().expect("a pid");
        }
        assert!(Instant::now() < deadline, "the reaper {init} has no child");
        std::thread::sleep(Duration::from_millis(20));
    };
    let nats = d.nats_pid().expect("the local nats-server's pid");
    for (what, pid) in [
        ("the shim", shim),
        ("the init (reaper)", init),
        ("the container's command", command),
        ("the nats-server", nats),
    ] {
        let held = holding(pid, &secret);
        assert!(held.is_empty(), "{what} ({pid}) holds it: {held:?}");
    }
    // An exec'd process, seen from inside.
    let o = d.berth(&["exec", "box", "sh", "-c", "ls -l /proc/$$/fd"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let name = secret.file_name().unwrap().to_str().unwrap();
    assert!(
        !stdout(&o).contains(name),
        "an exec'd process holds it: {}",
        stdout(&o)
    );
}

//! Recovery from crashes, through the real daemon (as root): a shim killed while `berthd` was
//! down or running leaves no process behind, nor does a removed container; cgroups of this
//! node that no record names are emptied at start while another daemon's containers are left
//! alone; a create cut short by a crash answers the CLI at once and leaves nothing once
//! `berthd` is back; a run whose published port is taken leaves nothing; a create retried
//! after a restart gets its first reply; what an unpack and a pull left after a crash is
//! removed when the layer-store starts; a container is announced `created` once.
//!
//! Every container has a unique name; its cgroup is destroyed by a guard when the test ends,
//! pass or fail, and the daemon guard kills what its run directory knows.

use berth_bus::{Bus, ConnectOptions, RequestOptions};
use berth_cgroups::{Cgroup, Layout};
use berth_proto::supervisor::{ContainerOptions, ContainerState, CreateRequest, ListReply};
use berth_tests::daemon::{stderr, stdout, Berthd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

fn rootfs(dir: &Path) -> String {
    let root = dir.join("rootfs");
    berth_tests::images::container_rootfs(&root);
    root.display().to_string()
}

fn ok(d: &Berthd, args: &[&str]) -> String {
    let o = d.berth(args);
    assert!(
        o.status.success(),
        "berth {args:?}: {}{}\nlog:\n{}",
        stdout(&o),
        stderr(&o),
        d.log()
    );
    stdout(&o)
}

/// Destroys the cgroups of the tests' containers when the test ends (their processes with
/// them), whatever the daemon left.
struct CgroupGuard(Vec<String>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let Ok(layout) = Layout::detect() else { return };
        for id in &self.0 {
            if let Ok(cg) = Cgroup::at(&layout, id) {
                let _ = cg.destroy(Duration::from_secs(10));
            }
        }
    }
}

fn cgroup(id: &str) -> Cgroup {
    Cgroup::at(&Layout::detect().expect("cgroup layout"), id).expect("cgroup")
}

fn cgroup_gone(id: &str) -> bool {
    cgroup(id).dirs().all(|d| !d.exists())
}

/// Whether `pid` runs (a zombie does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(t) => t
            .rfind(')')
            .and_then(|i| t[i + 1..].split_whitespace().next())
            .is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn wait_until(what: &str, within: Duration, d: &Berthd, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "{what} not within {within:?}\nlog:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `berth run -d` a container running `sleep` twice (the init and a child of it), and the
/// processes of its cgroup once both are there.
fn run_two_sleeps(
    d: &Berthd,
    name: &str,
    root: &str,
    guard: &mut CgroupGuard,
) -> (String, Vec<i32>) {
    let id = ok(
        d,
        &[
            "run",
            "-d",
            "--name",
            name,
            "--rootfs",
            root,
            "sh",
            "-c",
            "sleep 1000 & exec sleep 1001",
        ],
    )
    .trim()
    .to_string();
    guard.0.push(id.clone());
    let cg = cgroup(&id);
    wait_until(
        "two processes in the container",
        Duration::from_secs(10),
        d,
        || cg.all_procs().len() >= 2,
    );
    (id, cg.all_procs())
}

/// SIGKILL the shim of container `id` (checked to be that shim) and wait until it is gone.
fn kill_shim(d: &Berthd, id: &str) {
    let run = d.run_dir().join(id);
    let shim = read_pid(&run.join("shim.pid")).expect("shim.pid");
    assert!(berth_proto::isolator::is_shim_of(shim as u32, &run));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("the shim gone", Duration::from_secs(10), d, || !alive(shim));
}

fn status_of(d: &Berthd, name: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&ok(d, &["inspect", name])).unwrap();
    v[0]["state"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_container_whose_shim_died_keeps_no_process_and_its_removal_leaves_none() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut guard = CgroupGuard(Vec::new());
    let mut d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());

    // Its shim killed while berthd is down: the container's processes live on, re-parented.
    let down = berth_tests::unique("shim-down");
    let (down_id, down_procs) = run_two_sleeps(&d, &down, &root, &mut guard);
    assert!(d
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    kill_shim(&d, &down_id);
    assert!(down_procs.iter().all(|p| alive(*p)), "{down_procs:?}");
    d.spawn();
    // Recovery marks it dead and kills everything of it.
    wait_until(
        "the processes killed at recovery",
        Duration::from_secs(15),
        &d,
        || down_procs.iter().all(|p| !alive(*p)) && cgroup_gone(&down_id),
    );
    assert_eq!(status_of(&d, &down), "dead");
    let log = d.log();
    assert!(
        log.contains("killed the processes left in a container's cgroup"),
        "{log}"
    );

    // Its shim killed while berthd runs: the same.
    let up = berth_tests::unique("shim-up");
    let (up_id, up_procs) = run_two_sleeps(&d, &up, &root, &mut guard);
    kill_shim(&d, &up_id);
    wait_until(
        "the processes killed at the shim's death",
        Duration::from_secs(15),
        &d,
        || up_procs.iter().all(|p| !alive(*p)) && cgroup_gone(&up_id),
    );
    assert_eq!(status_of(&d, &up), "dead");

    // The removal of a dead container finds nothing left to kill, and leaves nothing.
    ok(&d, &["rm", "-f", &down, &up]);
    let ps = ok(&d, &["ps", "-a"]);
    assert!(!ps.contains(&down) && !ps.contains(&up), "{ps}");
    for id in [&down_id, &up_id] {
        assert!(cgroup_gone(id));
        assert!(!d.data_root().join("containers").join(id).exists());
    }
}

#[test]
fn cgroups_of_this_node_without_a_record_are_emptied_at_start_and_others_left_alone() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut guard = CgroupGuard(Vec::new());
    let mut d = Berthd::start();
    let other = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let mine = berth_tests::unique("unrecorded");
    let (mine_id, mine_procs) = run_two_sleeps(&d, &mine, &root, &mut guard);
    // Another daemon's container, running in the same `berth/` parent.
    let theirs = berth_tests::unique("theirs");
    let (theirs_id, theirs_procs) = run_two_sleeps(&other, &theirs, &root, &mut guard);

    // What a removal of an earlier version left: its shim gone, its record and run directory
    // taken away, its processes still running in its cgroup.
    assert!(d
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    kill_shim(&d, &mine_id);
    for base in [d.data_root().join("containers"), d.run_dir()] {
        std::fs::rename(
            base.join(&mine_id),
            base.join(format!(".removed-{mine_id}.1.0")),
        )
        .unwrap();
    }
    assert!(mine_procs.iter().all(|p| alive(*p)));
    d.spawn();
    wait_until(
        "the unrecorded cgroup emptied",
        Duration::from_secs(15),
        &d,
        || mine_procs.iter().all(|p| !alive(*p)) && cgroup_gone(&mine_id),
    );
    assert!(d
        .log()
        .contains("killed the processes of a cgroup of this node without a container record"));
    // The other daemon's container runs on, untouched.
    assert!(theirs_procs.iter().all(|p| alive(*p)), "{theirs_procs:?}");
    assert_eq!(cgroup(&theirs_id).all_procs(), theirs_procs);
    assert_eq!(status_of(&other, &theirs), "running");
}

#[test]
fn a_create_cut_short_by_a_crash_answers_at_once_and_leaves_nothing() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut guard = CgroupGuard(Vec::new());
    // Every create waits 20 s once its container is set up (its init holding before `exec`).
    let mut d = Berthd::start_with_env(&[("BERTH_TEST_CREATE_DELAY_MS", Path::new("20000"))]);
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let name = berth_tests::unique("cut");
    let mut cli = d
        .command(
            &d.admin_creds(),
            &[
                "run", "-d", "--name", &name, "--rootfs", &root, "sleep", "1000",
            ],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run berth");
    // The container's init exists and waits: its run directory says so.
    let mut found: Option<(String, i32, i32)> = None;
    wait_until("the container's init", Duration::from_secs(20), &d, || {
        let Ok(rd) = std::fs::read_dir(d.run_dir()) else {
            return false;
        };
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if id.len() != 64 {
                continue;
            }
            if let (Some(shim), Some(init)) = (
                read_pid(&e.path().join("shim.pid")),
                read_pid(&e.path().join("init.pid")),
            ) {
                found = Some((id, shim, init));
                return true;
            }
        }
        false
    });
    let (id, shim, init) = found.unwrap();
    guard.0.push(id.clone());

    d.kill();
    let killed = Instant::now();
    let status = loop {
        if let Some(st) = cli.try_wait().unwrap() {
            break st;
        }
        if killed.elapsed() > Duration::from_secs(15) {
            let _ = cli.kill();
            panic!("the CLI still waits 15 s after berthd was killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let answered = killed.elapsed();
    let out = cli.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(!status.success(), "{}", stdout(&out));
    assert!(
        answered < Duration::from_secs(8),
        "answered after {answered:?}: {err}"
    );
    assert!(
        err.contains("supervisor") && err.contains("went away"),
        "{err}"
    );
    // Nothing is cleaned while berthd is away: the half-made container is still there.
    assert!(alive(init) && alive(shim));

    d.spawn();
    wait_until(
        "the half-made container gone",
        Duration::from_secs(30),
        &d,
        || {
            !alive(init)
                && !alive(shim)
                && cgroup_gone(&id)
                && !d.data_root().join("containers").join(&id).exists()
                && !d.run_dir().join(&id).exists()
        },
    );
    assert!(d
        .log()
        .contains("removing a container whose create was cut short"));
    let ps = ok(&d, &["ps", "-a"]);
    assert!(!ps.contains(&name), "{ps}");
    let o = d.berth(&["inspect", &name]);
    assert!(!o.status.success());
}

#[test]
fn a_run_whose_published_port_is_taken_fails_and_leaves_nothing() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let held = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = held.local_addr().unwrap().port();
    let name = berth_tests::unique("port");
    let publish = format!("127.0.0.1:{port}:80");
    let o = d.berth(&[
        "run", "-d", "--name", &name, "-p", &publish, "--rootfs", &root, "httpd", "-f", "-p", "80",
    ]);
    assert!(!o.status.success(), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
    // No container, no record, no run directory, no cgroup; neither announced.
    let ps = ok(&d, &["ps", "-a"]);
    assert!(!ps.contains(&name), "{ps}");
    let ids = |base: PathBuf| -> Vec<String> {
        std::fs::read_dir(base)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.len() == 64)
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(ids(d.data_root().join("containers")), Vec::<String>::new());
    assert_eq!(ids(d.run_dir()), Vec::<String>::new());
    let events = ok(
        &d,
        &[
            "events",
            "--since",
            "5m",
            "--until",
            "0s",
            "--filter",
            &format!("name={name}"),
        ],
    );
    assert!(
        !events.contains("container.created") && !events.contains("container.removed"),
        "{events}"
    );
    drop(held);
}

async fn connect(d: &Berthd) -> Bus {
    Bus::connect(&ConnectOptions {
        url: d.url(),
        creds: Some(d.admin_creds()),
        ca: None,
        name: "recovery-test".into(),
        node: d.node().to_string(),
        persistent: false,
    })
    .await
    .expect("connect")
}

#[tokio::test]
async fn a_create_retried_after_a_restart_gets_its_first_reply() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    // No name: without the first reply kept, a retry would make a second container.
    let req = CreateRequest {
        rootfs: Some(root),
        options: ContainerOptions {
            cmd: Some(vec!["sleep".into(), "1000".into()]),
            ..Default::default()
        },
        labels: [("test".to_string(), berth_tests::unique("idem"))].into(),
        ..Default::default()
    };
    let opts = RequestOptions {
        timeout: Duration::from_secs(30),
        idempotency_key: Some(berth_bus::random_hex(32)),
    };
    let bus = connect(&d).await;
    let first: ContainerState = bus
        .ask_local::<berth_proto::supervisor::verbs::Create>(&req, &opts)
        .await
        .expect("create");
    drop(bus);
    assert!(d
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    d.spawn();
    let bus = connect(&d).await;
    let again: ContainerState = bus
        .ask_local::<berth_proto::supervisor::verbs::Create>(&req, &opts)
        .await
        .expect("the retried create");
    assert_eq!(again, first);
    let list: ListReply = bus
        .ask_local::<berth_proto::supervisor::verbs::List>(
            &berth_proto::supervisor::ListRequest {
                all: true,
                ..Default::default()
            },
            &RequestOptions::default(),
        )
        .await
        .expect("list");
    assert_eq!(list.containers.len(), 1, "{:?}", list.containers);
    assert!(d.log().contains("a retried command: its first reply again"));
}

#[test]
fn leftovers_of_an_unpack_and_of_pulls_cut_short_are_removed_when_the_layer_store_starts() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Berthd::start();
    assert!(d
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    // A process that is gone.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let dead = gone.id();
    let tmp = d
        .data_root()
        .join("snapshots")
        .join(format!(".tmp-{}-{dead}-ab12", "cd".repeat(32)));
    std::fs::create_dir_all(tmp.join("fs/bin")).unwrap();
    std::fs::write(tmp.join("fs/bin/half"), b"half a layer").unwrap();
    let leases = d.data_root().join("leases");
    std::fs::create_dir_all(&leases).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let lease = |name: &str, expires: u64, owner: Option<berth_store::lease::Owner>| {
        let f = berth_store::lease::LeaseFile {
            expires,
            digests: Vec::new(),
            owner,
        };
        std::fs::write(leases.join(name), serde_json::to_vec(&f).unwrap()).unwrap();
    };
    lease(
        "pull-ownerless.json",
        now + 3600,
        Some(berth_store::lease::Owner {
            pid: dead,
            start: 1,
        }),
    );
    lease("load-expired.json", now - 10, None);
    // Held by a process that runs (this test): kept.
    lease(
        "pull-live.json",
        now + 3600,
        berth_store::lease::Owner::current(),
    );
    d.spawn();
    assert!(!tmp.exists());
    assert!(!leases.join("pull-ownerless.json").exists());
    assert!(!leases.join("load-expired.json").exists());
    assert!(leases.join("pull-live.json").exists());
    let log = d.log();
    assert!(log.contains("removed an unpack a crash cut short"), "{log}");
    assert!(log.contains("removed a lease whose owner is gone"), "{log}");
}

#[test]
fn a_container_is_announced_created_once_with_its_process() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut guard = CgroupGuard(Vec::new());
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let name = berth_tests::unique("once");
    let id = ok(
        &d,
        &[
            "run", "-d", "--name", &name, "--rootfs", &root, "sleep", "1000",
        ],
    )
    .trim()
    .to_string();
    guard.0.push(id.clone());
    let created = || -> Vec<serde_json::Value> {
        ok(
            &d,
            &[
                "events",
                "--since",
                "5m",
                "--until",
                "0s",
                "--format",
                "json",
                "--filter",
                "action=created",
                "--filter",
                &format!("name={name}"),
            ],
        )
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    };
    wait_until("the created event", Duration::from_secs(10), &d, || {
        !created().is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    let evs = created();
    assert_eq!(evs.len(), 1, "{evs:?}");
    let a = &evs[0]["attrs"];
    assert_eq!(a["id"], id.as_str());
    assert!(
        a["shim_pid"].as_u64().is_some() && a["init_pid"].as_u64().is_some(),
        "{a}"
    );
    assert!(a["image"].is_string(), "{a}");
    ok(&d, &["rm", "-f", &name]);
}

/// Unmounts (lazily) a file system a test mounted, when the test ends, pass or fail.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// An image archive (`docker-archive`, made by skopeo) of a busybox layer and, when
/// `extra_bytes` is set, a layer of that many random bytes.
fn image_archive(work: &Path, tag: &str, extra_bytes: Option<usize>) -> PathBuf {
    let layout = berth_tests::images::Layout::new();
    let base = work.join(format!("{tag}-base"));
    berth_tests::images::container_rootfs(&base);
    let mut layers = vec![base.clone()];
    if let Some(n) = extra_bytes {
        let extra = work.join(format!("{tag}-extra"));
        std::fs::create_dir_all(&extra).unwrap();
        berth_tests::images::random_file(&extra.join("blob"), n);
        layers.push(extra);
    }
    let refs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    layout.build(tag, berth_tests::layers::host_arch(), &refs);
    let archive = work.join(format!("{tag}.tar"));
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:{tag}", layout.path().display()))
        .arg(format!(
            "docker-archive:{}:berth/{tag}:v1",
            archive.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy");
    archive
}

/// The content store's file system fills up during a load: the load fails with one line
/// saying so, nothing partial is kept (no ingest file, no snapshot in progress, no image),
/// and once there is room the next load works.
#[test]
fn a_load_that_fills_the_disk_fails_clearly_and_keeps_nothing_partial() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Berthd::start();
    d.terminate(Duration::from_secs(10));
    let content = d.data_root().join("content");
    std::fs::create_dir_all(&content).unwrap();
    nix::mount::mount(
        Some(berth_tests::unique("berth-full").as_str()),
        &content,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=6m"),
    )
    .expect("mount a small tmpfs on the content store");
    let _unmount = MountGuard(content.clone());
    d.spawn();
    let work = tempfile::tempdir().unwrap();
    let big = image_archive(work.path(), "full", Some(12 << 20));
    let o = d.berth(&["load", "-i", big.to_str().unwrap()]);
    assert!(!o.status.success(), "a 12 MiB layer fit in 6 MiB");
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    let ingest = content.join("ingest");
    let left: Vec<_> = std::fs::read_dir(&ingest)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "partial downloads left: {left:?}");
    let snapshots: Vec<_> = std::fs::read_dir(d.data_root().join("snapshots"))
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !snapshots
            .iter()
            .any(|n| n.to_string_lossy().starts_with(".tmp-")),
        "{snapshots:?}"
    );
    assert!(!ok(&d, &["images"]).contains("berth/full"));
    // Room for a small image: it loads and runs.
    let small = image_archive(work.path(), "fits", None);
    ok(&d, &["load", "-i", small.to_str().unwrap()]);
    assert_eq!(
        ok(&d, &["run", "--rm", "berth/fits:v1", "echo", "ran"]).trim(),
        "ran"
    );
}

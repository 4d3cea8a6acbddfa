//! Standby shims on the real kernel (as root): the isolator keeps shims waiting with a
//! pre-init in a placeholder cgroup (cgroup v1); a create hands its container to one of them,
//! whose init is born in the container's cgroup without a move; waiting shims leave nothing
//! behind when they are dismissed, and the isolator's sweep removes the placeholders of shims
//! that died. Its own test binary, as its standby shims are the only ones of the process.

use berth_bus::config::NodeConfig;
use berth_cgroups::{Cgroup, Layout, Limits, STANDBY_PREFIX};
use berth_isolator::shim::{StandbyPool, STANDBY_SHIMS};
use berth_isolator::Isolator;
use berth_proto::isolator::{ContainerSpec, CreateRequest, EXIT_FILE};
use berth_tests::rootfs::Rootfs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn placeholder(layout: &Layout, shim: u32) -> Cgroup {
    Cgroup::at(layout, &format!("{STANDBY_PREFIX}{shim}")).unwrap()
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The nice value of a process.
fn nice(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    after.split(' ').nth(16).unwrap().parse().unwrap()
}

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces: the fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

/// Whatever the test made, removed pass or fail: the container (through its cgroup), the
/// waiting shims, the test's own cgroups.
struct Cleanup {
    layout: Layout,
    cgroups: Vec<String>,
    standby: Option<Arc<StandbyPool>>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pool) = &self.standby {
            pool.dismiss();
        }
        for id in &self.cgroups {
            if let Ok(cg) = Cgroup::at(&self.layout, id) {
                let _ = cg.remove(Duration::from_secs(5));
            }
        }
    }
}

#[test]
fn standby_shims_take_containers_and_leave_nothing() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let layout = Layout::detect().expect("cgroup layout");
    let rootfs = Rootfs::new();
    let root = tempfile::Builder::new()
        .prefix("berth-standby-")
        .tempdir()
        .unwrap();
    let cfg = NodeConfig::local("standby", root.path());
    std::fs::create_dir_all(cfg.containers_dir()).unwrap();
    std::fs::create_dir_all(&cfg.run_dir).unwrap();
    let iso = Isolator::new(cfg.clone());
    let pool = iso.standby.clone();
    let mut guard = Cleanup {
        layout: layout.clone(),
        cgroups: Vec::new(),
        standby: Some(pool.clone()),
    };

    // The shims come to wait, each (on v1) with its pre-init inside its placeholder.
    pool.refill();
    wait_until("the standby shims", Duration::from_secs(10), || {
        pool.pids().len() == STANDBY_SHIMS
    });
    let waiting = pool.pids();
    for &shim in &waiting {
        assert!(berth_isolator::alive(shim as i32), "standby shim {shim}");
        // Waiting at the lowest priority, so as not to slow the containers being started.
        assert_eq!(nice(shim as i32), 19, "standby shim {shim}");
        let ph = placeholder(&layout, shim);
        if layout.is_v2() {
            assert!(ph.procs().is_err(), "no placeholder on cgroup v2");
            continue;
        }
        wait_until(
            "the pre-init in its placeholder",
            Duration::from_secs(5),
            || ph.procs().is_ok_and(|p| p.len() == 1),
        );
        let pre = ph.procs().unwrap()[0];
        assert_eq!(
            ppid(pre),
            Some(shim as i32),
            "the pre-init is the shim's child"
        );
    }

    // A create takes one of them: its init is the shim's child, in `berth/<id>` from birth.
    let id = format!("{:0>64}", format!("{:x}5b", std::process::id()));
    guard.cgroups.push(id.clone());
    let req = CreateRequest {
        spec: ContainerSpec {
            id: id.clone(),
            name: "standby-test".into(),
            image: "busybox".into(),
            args: vec!["sleep".into(), "30".into()],
            env: vec!["PATH=/bin".into()],
            seccomp: true,
            no_new_privileges: true,
            ..Default::default()
        },
        rootfs: rootfs.container("c1"),
        release: false,
    };
    let reply = berth_isolator::create(&iso, &req).expect("create");
    assert!(
        waiting.contains(&reply.shim_pid),
        "the container went to a waiting shim ({} not in {waiting:?})",
        reply.shim_pid
    );
    assert_eq!(ppid(reply.init_pid as i32), Some(reply.shim_pid as i32));
    // Given a container, the shim and the init run at the isolator's own priority.
    let own_nice = nice(std::process::id() as i32);
    assert_eq!(nice(reply.shim_pid as i32), own_nice);
    assert_eq!(nice(reply.init_pid as i32), own_nice);
    let cg = Cgroup::at(&layout, &id).unwrap();
    assert_eq!(
        cg.procs().expect("the container's cgroup"),
        vec![reply.init_pid as i32]
    );
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", reply.init_pid)).unwrap();
    let want = format!("/{}/{id}", berth_cgroups::PARENT);
    assert!(
        own.lines()
            .filter(|l| l.contains(":memory:") || l.starts_with("0::"))
            .any(|l| l.ends_with(&want)),
        "the init's cgroups: {own}"
    );
    if !layout.is_v2() {
        assert!(
            placeholder(&layout, reply.shim_pid).procs().is_err(),
            "the placeholder became the container's cgroup"
        );
    }
    // The container ends; its shim records the exit and its cgroup goes.
    cg.kill().unwrap();
    let exit: PathBuf = cfg.container_run_dir(&id).join(EXIT_FILE);
    wait_until("the exit recorded", Duration::from_secs(10), || {
        exit.exists()
    });
    wait_until(
        "the container's cgroup removed",
        Duration::from_secs(10),
        || cg.procs().is_err(),
    );

    // Dismissed shims exit, their pre-inits with them, and remove their placeholders.
    wait_until("the pool topped up", Duration::from_secs(10), || {
        pool.pids().len() == STANDBY_SHIMS
    });
    let waiting = pool.pids();
    let pre: Vec<i32> = waiting
        .iter()
        .filter_map(|&s| placeholder(&layout, s).procs().ok())
        .flatten()
        .collect();
    pool.dismiss();
    for &shim in &waiting {
        wait_until("the dismissed shim gone", Duration::from_secs(5), || {
            !berth_isolator::alive(shim as i32)
        });
        wait_until("its placeholder removed", Duration::from_secs(5), || {
            placeholder(&layout, shim).dirs().all(|d| !d.exists())
        });
    }
    for p in pre {
        wait_until("the pre-init gone", Duration::from_secs(5), || {
            !berth_isolator::alive(p)
        });
    }

    // The sweep removes the placeholder of a shim that is gone, not of one that runs.
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let live = std::process::id();
    for pid in [dead, live] {
        let name = format!("{STANDBY_PREFIX}{pid}");
        guard.cgroups.push(name.clone());
        Cgroup::create(&layout, &name, &Default::default()).expect("a test placeholder");
    }
    assert!(berth_cgroups::sweep_standby(&layout) >= 1);
    assert!(
        placeholder(&layout, dead).dirs().all(|d| !d.exists()),
        "the dead shim's placeholder is removed"
    );
    assert!(
        placeholder(&layout, live).dirs().all(|d| d.exists()),
        "a live shim's placeholder stays"
    );
}

#[test]
fn an_ended_cgroups_removal_leaves_the_next_one_of_its_name_alone() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let layout = Layout::detect().expect("cgroup layout");
    let id = format!("{:0>64}", format!("{:x}5c", std::process::id()));
    let mut guard = Cleanup {
        layout: layout.clone(),
        cgroups: vec![id.clone()],
        standby: None,
    };
    // A container's cgroup, known before its exit is recorded ...
    let old = Cgroup::create(&layout, &id, &Limits::default()).unwrap();
    let ids = old.identify();
    // ... is removed and made again by the next instance, whose process runs in it ...
    old.remove(Duration::from_secs(5)).unwrap();
    let new = Cgroup::create(&layout, &id, &Limits::default()).unwrap();
    let mut child = std::process::Command::new(berth_tests::images::BUSYBOX)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    new.add(child.id() as i32).unwrap();
    // ... when the old shim's removal comes: it leaves the new one and its process alone.
    old.remove_ended(&ids, Duration::from_secs(1)).unwrap();
    assert_eq!(new.procs().unwrap(), vec![child.id() as i32]);
    assert!(
        child.try_wait().unwrap().is_none(),
        "the next instance's process was killed"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    new.remove(Duration::from_secs(5)).unwrap();
    // An ended cgroup of its own is removed.
    let own = Cgroup::create(&layout, &id, &Limits::default()).unwrap();
    let ids = own.identify();
    own.remove_ended(&ids, Duration::from_secs(5)).unwrap();
    assert!(own.procs().is_err(), "removed");
    guard.cgroups.clear();
}

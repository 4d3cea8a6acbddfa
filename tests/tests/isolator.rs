//! The isolator and its shim on the real kernel (as root): namespaces, mounts, cgroups,
//! capabilities, seccomp, users, volumes, exec, and containers outliving the isolator.
//! Needs `berth-shim` and `berth-isolator` built (`cargo build --workspace --bins`).
//!
//! Every test cleans up what it made (processes through the container's cgroup, the cgroup,
//! the temporary directories) in a Drop guard, pass or fail.

use berth_bus::{Bus, BusError, RequestOptions, ServiceContext};
use berth_cgroups::{Cgroup, Layout};
use berth_proto::isolator::*;
use berth_proto::{ErrorCode, Service};
use berth_tests::nats::NatsServer;
use berth_tests::rootfs::Rootfs;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

fn opts() -> RequestOptions {
    RequestOptions::timeout(Duration::from_secs(40))
}

struct Harness {
    nats: NatsServer,
    dir: tempfile::TempDir,
    ctx: ServiceContext,
    bus: Bus,
    rootfs: Rootfs,
    service: Option<tokio::task::JoinHandle<()>>,
    /// Standalone `berth-isolator` process, when the test runs one.
    standalone: Option<std::process::Child>,
    ids: Mutex<Vec<String>>,
}

impl Harness {
    async fn new() -> Harness {
        let nats = NatsServer::start();
        let dir = tempfile::Builder::new()
            .prefix("berth-iso-")
            .tempdir()
            .unwrap();
        let ctx = nats.context("n1", dir.path()).await;
        let bus = nats.bus("n1").await;
        let mut h = Harness {
            nats,
            dir,
            ctx,
            bus,
            rootfs: Rootfs::new(),
            service: None,
            standalone: None,
            ids: Mutex::new(Vec::new()),
        };
        h.start_service().await;
        h
    }

    async fn start_service(&mut self) {
        let ctx = self.ctx.clone();
        self.service = Some(tokio::spawn(async move {
            berth_isolator::run(ctx).await.expect("isolator");
        }));
        self.wait_for_service().await;
    }

    async fn wait_for_service(&self) {
        berth_tests::wait_for_service(&self.bus, Service::Isolator, Duration::from_secs(10)).await;
    }

    /// Stop the in-process service (as a restart would).
    async fn stop_service(&mut self) {
        self.ctx.shutdown.cancel();
        if let Some(t) = self.service.take() {
            let _ = t.await;
        }
    }

    fn config(&self) -> &berth_bus::NodeConfig {
        &self.ctx.config
    }

    fn spec(&self, script: &str) -> ContainerSpec {
        let id = berth_bus::random_hex(64);
        self.ids.lock().unwrap().push(id.clone());
        ContainerSpec {
            name: berth_tests::unique("c"),
            id,
            image: "busybox-test".into(),
            args: vec!["/bin/sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
            seccomp: true,
            no_new_privileges: true,
            ..Default::default()
        }
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<CreateReply, BusError> {
        let req = CreateRequest {
            spec: spec.clone(),
            rootfs: self.rootfs.container(&spec.id),
            release: false,
        };
        let t = Instant::now();
        let r = self
            .bus
            .ask_local::<berth_proto::isolator::verbs::Create>(&req, &opts())
            .await;
        eprintln!("create of {} took {:?}", spec.id, t.elapsed());
        r
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.config().container_run_dir(id)
    }

    /// Release the init blocked on the start FIFO, as the supervisor does.
    fn start(&self, id: &str) {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc_nonblock())
            .open(self.run_dir(id).join(START_FIFO))
            .expect("open start FIFO");
        f.write_all(b"1").expect("write start FIFO");
    }

    async fn wait_exit(&self, id: &str, within: Duration) -> ExitStatus {
        let p = self.run_dir(id).join(EXIT_FILE);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(b) = std::fs::read(&p) {
                return serde_json::from_slice(&b).expect("exit.json parses");
            }
            assert!(
                Instant::now() < deadline,
                "no exit.json for {id} after {within:?}; shim log: {}",
                std::fs::read_to_string(self.config().container_dir(id).join(SHIM_LOG_FILE))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self, id: &str) -> Vec<LogLine> {
        let p = self.config().container_dir(id).join(LOG_FILE);
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("log line parses"))
            .collect()
    }

    fn stdout(&self, id: &str) -> String {
        self.log(id)
            .into_iter()
            .filter(|l| l.s == "stdout")
            .map(|l| l.log)
            .collect()
    }

    async fn run(&self, spec: &ContainerSpec) -> (ExitStatus, String) {
        self.create(spec).await.expect("create");
        self.start(&spec.id);
        let st = self.wait_exit(&spec.id, Duration::from_secs(30)).await;
        (st, self.stdout(&spec.id))
    }

    fn cgroup(&self, id: &str) -> Cgroup {
        Cgroup::at(&Layout::detect().unwrap(), id).unwrap()
    }

    async fn exec(&self, id: &str, args: &[&str]) -> Result<ExecReply, BusError> {
        let req = ExecRequest {
            id: id.to_string(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            user: None,
            working_dir: None,
            stream: None,
            timeout_ms: None,
        };
        self.bus
            .ask_local::<berth_proto::isolator::verbs::Exec>(&req, &opts())
            .await
    }
}

fn libc_nonblock() -> i32 {
    nix::fcntl::OFlag::O_NONBLOCK.bits()
}

impl Drop for Harness {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let Ok(cg) = Cgroup::at(&Layout::detect().unwrap(), id) else {
                continue;
            };
            let _ = cg.kill();
            // The shim writes exit.json and removes the cgroup once its init is gone.
            let shim = std::fs::read_to_string(self.run_dir(id).join(SHIM_PID_FILE))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok());
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Some(pid) = shim {
                if !berth_isolator::alive(pid) || Instant::now() > deadline {
                    break;
                }
                let _ = cg.kill();
                std::thread::sleep(Duration::from_millis(20));
            }
            if let Some(pid) = shim {
                if berth_isolator::alive(pid) && is_shim_of(pid as u32, &self.run_dir(id)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            let _ = cg.remove(Duration::from_secs(5));
        }
        if let Some(mut c) = self.standalone.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.ctx.shutdown.cancel();
        let _ = &self.nats;
        let _ = &self.dir;
    }
}

/// Sections of a script's output, split on lines `== name`.
fn sections(out: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    let mut cur = String::new();
    for line in out.lines() {
        if let Some(n) = line.strip_prefix("== ") {
            cur = n.trim().to_string();
            m.insert(cur.clone(), String::new());
        } else if let Some(s) = m.get_mut(&cur) {
            s.push_str(line);
            s.push('\n');
        }
    }
    m
}

macro_rules! need_root {
    () => {
        if !berth_tests::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

const PROBE: &str = r#"
echo "== ps"; ps -o pid,comm
echo "== hostname"; hostname; cat /etc/hostname
echo "== mounts"; cat /proc/mounts
echo "== procsys"; (echo 1 > /proc/sys/kernel/shmmax) 2>/dev/null && echo WROTE || echo REFUSED
echo "== mount"; mount -t tmpfs none /mnt 2>/dev/null && echo MOUNTED || echo REFUSED
echo "== unshare"; unshare -m true 2>/dev/null && echo UNSHARED || echo REFUSED
echo "== caps"; grep CapEff /proc/self/status
echo "== nnp"; grep NoNewPrivs /proc/self/status
echo "== seccomp"; grep '^Seccomp:' /proc/self/status
echo "== masked"; wc -c < /proc/timer_list
echo "== net"; ls /sys/class/net
echo "== dev"; ls /dev
echo "== exe"; (echo x >> /proc/1/exe) 2>/dev/null && echo WROTE || echo REFUSED
echo "== id"; id -u; id -g
echo "== fds"; ls /proc/1/fd
echo "== end"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_seen_from_inside() {
    need_root!();
    let h = Harness::new().await;
    let mut spec = h.spec(PROBE);
    spec.hostname = Some("probe-host".into());
    let created = h.create(&spec).await.expect("create");
    assert!(berth_isolator::alive(created.init_pid as i32));
    assert!(berth_isolator::alive(created.shim_pid as i32));
    // Blocked before exec: the init is still the shim's code, and nothing was logged.
    assert!(h.log(&spec.id).is_empty());
    let cg = h.cgroup(&spec.id);
    assert_eq!(
        cg.stats().unwrap().pids_limit,
        Some(DEFAULT_PIDS_LIMIT as u64),
        "default pids limit"
    );
    h.start(&spec.id);
    let st = h.wait_exit(&spec.id, Duration::from_secs(30)).await;
    let out = h.stdout(&spec.id);
    assert_eq!(st.exit_code, 0, "{out}");
    assert!(!st.oom_killed);
    let s = sections(&out);

    // ps: only the container's processes; its init is PID 1.
    let procs: Vec<(u32, String)> = s["ps"]
        .lines()
        .skip(1)
        .map(|l| {
            let mut w = l.split_whitespace();
            (
                w.next().unwrap().parse().unwrap(),
                w.next().unwrap().to_string(),
            )
        })
        .collect();
    assert!(procs.contains(&(1, "sh".to_string())), "{procs:?}");
    assert!(
        procs.iter().all(|(_, c)| c == "sh" || c == "ps"),
        "{procs:?}"
    );

    assert_eq!(s["hostname"], "probe-host\nprobe-host\n");

    // The host's mounts are not visible: only the container's own.
    let host_dir = h.dir.path().display().to_string();
    for line in s["mounts"].lines() {
        let target = line.split_whitespace().nth(1).unwrap();
        assert!(
            target == "/"
                || [
                    "/proc",
                    "/dev",
                    "/sys",
                    "/etc/hostname",
                    "/etc/hosts",
                    "/etc/resolv.conf"
                ]
                .iter()
                .any(|p| target.starts_with(p)),
            "unexpected mount {line}"
        );
        // The overlay's own line names its layers (the init layer is in the data root), as
        // a Docker container's does; no other mount may come from the host's paths.
        if target != "/" {
            assert!(!line.contains(&host_dir), "host path leaked: {line}");
        }
    }
    assert!(!s["mounts"].contains("cgroup"), "{}", s["mounts"]);
    assert!(s["mounts"]
        .lines()
        .next()
        .unwrap()
        .starts_with("overlay / overlay"));

    assert_eq!(s["procsys"].trim(), "REFUSED");
    assert_eq!(s["mount"].trim(), "REFUSED");
    assert_eq!(s["unshare"].trim(), "REFUSED");
    assert_eq!(s["caps"].trim(), "CapEff:\t00000000a80425fb");
    assert_eq!(s["nnp"].trim(), "NoNewPrivs:\t1");
    assert_eq!(s["seccomp"].trim(), "Seccomp:\t2");
    assert_eq!(s["masked"].trim(), "0", "/proc/timer_list is masked");
    assert_eq!(s["net"].trim(), "lo", "loopback only");
    let devs: Vec<&str> = s["dev"].split_whitespace().collect();
    for d in [
        "null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "mqueue",
    ] {
        assert!(devs.contains(&d), "/dev/{d} missing: {devs:?}");
    }
    assert!(!devs.contains(&"sda") && !devs.contains(&"vda"), "{devs:?}");
    assert_eq!(s["id"], "0\n0\n");
    // No fd of the host beyond stdio reached the init.
    assert_eq!(
        s["fds"].split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2"]
    );

    // The shim's cgroup goes: removed by a child the shim leaves behind once exit.json is
    // written (it may wait behind other cgroup moves, such as a standby shim's), so soon after.
    let deadline = Instant::now() + Duration::from_secs(10);
    while cg.dirs().any(|d| d.exists()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for d in cg.dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    // The overlay was mounted only in the container's mount namespace.
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mi.contains(&spec.id),
        "overlay leaked into the host's mount table"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_kills_and_exit_says_oom() {
    need_root!();
    let h = Harness::new().await;
    // The shell holds the 64 MiB in a variable: well above the 32 MiB limit.
    let mut spec = h.spec("x=$(head -c 67108864 /dev/zero | tr '\\0' a); echo survived ${#x}");
    spec.resources.memory_bytes = Some(32 << 20);
    let (st, out) = h.run(&spec).await;
    assert!(st.oom_killed, "{st:?} {out}");
    assert_eq!(st.exit_code, 137, "{st:?}");
    assert_eq!(st.signal, Some(9));
    assert!(!out.contains("survived"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_bomb_stops_at_pids_limit_and_host_stays_responsive() {
    need_root!();
    let h = Harness::new().await;
    let mut spec = h.spec("b() { b | b & }; b; sleep 60");
    spec.resources.pids_limit = Some(64);
    h.create(&spec).await.expect("create");
    let cg = h.cgroup(&spec.id);
    h.start(&spec.id);
    let until = Instant::now() + Duration::from_secs(3);
    let mut peak = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() < until {
        let st = cg.stats().unwrap();
        peak = peak.max(st.pids);
        let t = Instant::now();
        let ok = std::process::Command::new("/bin/true").status().unwrap();
        assert!(ok.success());
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(peak <= 64, "pids reached {peak}");
    assert!(peak >= 32, "the bomb never got going: {peak} pids");
    assert!(
        slowest < Duration::from_secs(2),
        "host fork took {slowest:?}"
    );
    cg.kill().unwrap();
    let st = h.wait_exit(&spec.id, Duration::from_secs(20)).await;
    assert_eq!(st.signal, Some(9), "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mounts_and_named_volumes_keep_data() {
    need_root!();
    let h = Harness::new().await;
    let host = tempfile::Builder::new()
        .prefix("berth-bind-")
        .tempdir()
        .unwrap();
    let ro = tempfile::Builder::new()
        .prefix("berth-ro-")
        .tempdir()
        .unwrap();
    std::fs::write(ro.path().join("given"), "from host\n").unwrap();
    let vol = berth_tests::unique("vol");
    let mounts = |rw_target: &str| {
        vec![
            MountSpec {
                kind: MountKind::Bind,
                source: host.path().display().to_string(),
                target: rw_target.into(),
                read_only: false,
                size_bytes: None,
            },
            MountSpec {
                kind: MountKind::Volume,
                source: vol.clone(),
                target: "/vol".into(),
                read_only: false,
                size_bytes: None,
            },
            MountSpec {
                kind: MountKind::Bind,
                source: ro.path().display().to_string(),
                target: "/ro".into(),
                read_only: true,
                size_bytes: None,
            },
            MountSpec {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target: "/scratch".into(),
                read_only: false,
                size_bytes: Some(1 << 20),
            },
        ]
    };
    let mut first = h.spec(
        "echo one > /data/f && echo two > /vol/g && cat /ro/given && \
         (echo x > /ro/new) 2>/dev/null || echo RO-REFUSED; \
         (head -c 2097152 /dev/zero > /scratch/big) 2>/dev/null || echo TMPFS-FULL",
    );
    first.mounts = mounts("/data");
    let (st, out) = h.run(&first).await;
    assert_eq!(st.exit_code, 0, "{out}");
    assert_eq!(out, "from host\nRO-REFUSED\nTMPFS-FULL\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("f")).unwrap(),
        "one\n"
    );
    assert!(!ro.path().join("new").exists());
    // Remove the first container's files, as `berth rm` would.
    std::fs::remove_dir_all(h.config().container_dir(&first.id)).unwrap();
    std::fs::remove_dir_all(h.run_dir(&first.id)).unwrap();

    let mut second = h.spec("cat /elsewhere/f /vol/g");
    second.mounts = mounts("/elsewhere");
    let (st, out) = h.run(&second).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(out, "one\ntwo\n");

    let list: VolumesReply = h
        .bus
        .ask_local::<berth_proto::isolator::verbs::Volumes>(&VolumesRequest {}, &opts())
        .await
        .unwrap();
    let v = list.volumes.iter().find(|v| v.name == vol).expect("listed");
    assert!(v.used_by.is_empty());
    let _: VolumeRemoveReply = h
        .bus
        .ask_local::<berth_proto::isolator::verbs::VolumeRemove>(
            &VolumeRemoveRequest {
                name: vol.clone(),
                force: false,
            },
            &opts(),
        )
        .await
        .unwrap();
    assert!(!h.config().volumes_dir().join(&vol).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_by_id_and_by_name() {
    need_root!();
    let h = Harness::new().await;
    let mut a = h.spec("id -u; id -g; grep CapEff /proc/self/status; pwd");
    a.user = Some("1000:1000".into());
    a.working_dir = Some("/srv/app".into());
    let (st, out) = h.run(&a).await;
    assert_eq!(st.exit_code, 0, "{out}");
    assert_eq!(out, "1000\n1000\nCapEff:\t0000000000000000\n/srv/app\n");

    let mut b = h.spec("id -u; id -g; id -G; echo $HOME");
    b.user = Some("alice".into());
    let (st, out) = h.run(&b).await;
    assert_eq!(st.exit_code, 0, "{out}");
    assert_eq!(out, "1000\n1000\n1000 10 50\n/home/alice\n");

    let mut c = h.spec("true");
    c.user = Some("mallory".into());
    let e = h.create(&c).await.unwrap_err();
    let e = e.remote().expect("typed error").clone();
    assert!(e.message.contains("mallory"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_joins_the_running_container() {
    need_root!();
    let h = Harness::new().await;
    let mut spec = h.spec("echo up; sleep 30; echo never");
    spec.hostname = Some("exec-host".into());
    let created = h.create(&spec).await.expect("create");
    h.start(&spec.id);
    let t = Instant::now();
    let r = h
        .exec(&spec.id, &["sh", "-c", "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; grep CapEff /proc/self/status; echo err >&2; exit 3"])
        .await
        .expect("exec");
    eprintln!("exec round trip: {:?}", t.elapsed());
    assert_eq!(r.exit_code, 3);
    assert_eq!(
        r.stdout,
        "exec-host\n/bin/sh -c echo up; sleep 30; echo never \nCapEff:\t00000000a80425fb\n"
    );
    assert_eq!(r.stderr, "err\n");
    let bad = h.exec(&spec.id, &["/no/such/program"]).await.unwrap_err();
    let bad = bad.remote().expect("typed").clone();
    assert!(bad.message.contains("/no/such/program"), "{bad}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(created.init_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = h.wait_exit(&spec.id, Duration::from_secs(10)).await;
    assert_eq!((st.exit_code, st.signal), (137, Some(9)));
    let e = h.exec(&spec.id, &["true"]).await.unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::FailedPrecondition);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_create_leaves_nothing_and_names_the_step() {
    need_root!();
    let h = Harness::new().await;
    // Fails inside the shim, after cgroup, namespaces and mounts were made.
    let mut spec = h.spec("unused");
    spec.args = vec!["/bin/no-such-command".into()];
    let e = h.create(&spec).await.unwrap_err();
    let e = e.remote().expect("typed error").clone();
    assert!(
        e.message.contains("command") && e.message.contains("/bin/no-such-command"),
        "{e}"
    );
    let bundle = h.config().container_dir(&spec.id);
    assert!(!bundle.exists(), "{} left behind", bundle.display());
    assert!(!h.run_dir(&spec.id).exists());
    for d in h.cgroup(&spec.id).dirs() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    assert!(!std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&spec.id));
    let leftover = std::fs::read_dir("/proc").unwrap().flatten().any(|p| {
        std::fs::read(p.path().join("cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&spec.id))
            .unwrap_or(false)
    });
    assert!(!leftover, "a process of the failed create is still running");

    // Refused before anything is made: a missing bind source, by field.
    let mut spec = h.spec("true");
    spec.mounts.push(MountSpec {
        kind: MountKind::Bind,
        source: "/nonexistent/berth-source".into(),
        target: "/x".into(),
        read_only: false,
        size_bytes: None,
    });
    let e = h.create(&spec).await.unwrap_err();
    let e = e.remote().unwrap().clone();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("mounts[0].source"), "{e}");
    assert!(!h.config().container_dir(&spec.id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_and_magic_links_cannot_reach_the_host() {
    need_root!();
    let h = Harness::new().await;
    let outside = tempfile::Builder::new()
        .prefix("berth-outside-")
        .tempdir()
        .unwrap();
    // An image whose /escape points far above its root, at a host directory.
    let hops = "../".repeat(20);
    std::os::unix::fs::symlink(
        format!("{hops}{}", outside.path().display()),
        h.rootfs.lower().join("escape"),
    )
    .unwrap();
    let mut spec =
        h.spec("ls -a /escape-target-check 2>/dev/null; echo hi > /escape/sub/f && echo wrote");
    spec.mounts.push(MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: "/escape/sub".into(),
        read_only: false,
        size_bytes: Some(1 << 20),
    });
    let (st, out) = h.run(&spec).await;
    assert_eq!(st.exit_code, 0, "{out}");
    assert_eq!(out, "wrote\n");
    // The mount went inside the container's root, never onto the host directory.
    assert!(
        std::fs::read_dir(outside.path()).unwrap().next().is_none(),
        "something was created in the host directory"
    );

    // A working directory through a magic link is refused, naming the step.
    let mut spec = h.spec("pwd");
    spec.working_dir = Some("/proc/self/root/tmp".into());
    let e = h.create(&spec).await.unwrap_err();
    let e = e.remote().unwrap().clone();
    assert!(e.message.contains("working directory"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_reaper_forwards_signals_and_its_exe_is_not_writable() {
    need_root!();
    let h = Harness::new().await;
    let mut spec = h.spec(
        "trap 'echo got-term; exit 7' TERM; \
         (echo x >> /proc/1/exe) 2>/dev/null && echo WROTE || echo REFUSED; \
         ps -o pid,comm | grep -c berth-shim; echo ready; while :; do sleep 0.1; done",
    );
    spec.init = true;
    let created = h.create(&spec).await.expect("create");
    h.start(&spec.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.stdout(&spec.id).contains("ready") {
        assert!(Instant::now() < deadline, "{}", h.stdout(&spec.id));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(created.init_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let st = h.wait_exit(&spec.id, Duration::from_secs(10)).await;
    let out = h.stdout(&spec.id);
    assert_eq!(st.exit_code, 7, "{out}");
    assert_eq!(out, "REFUSED\n1\nready\ngot-term\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_outlives_a_killed_isolator() {
    need_root!();
    let mut h = Harness::new().await;
    // Serve from a separate berth-isolator process, so it can be killed with SIGKILL.
    h.stop_service().await;
    // The test server has no authorization; the standalone service still wants a file.
    let creds = h.dir.path().join("creds.json");
    std::fs::write(&creds, r#"{"user":"admin","password":"unused"}"#).unwrap();
    // An identity file that others may read is refused.
    std::fs::set_permissions(
        &creds,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .unwrap();
    let spawn = |h: &Harness| {
        std::process::Command::new(berth_tests::bin("berth-isolator"))
            .env("BERTH_NATS_CREDS", &creds)
            .env("BERTH_NODE", "n1")
            .env("BERTH_NATS_URL", h.nats.url())
            .env("BERTH_DATA_ROOT", &h.config().data_root)
            .env("BERTH_RUN_DIR", &h.config().run_dir)
            .env("BERTH_SHIM_BIN", berth_tests::bin("berth-shim"))
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(h.dir.path().join("isolator.log"))
                    .unwrap(),
            )
            .spawn()
            .expect("spawn berth-isolator")
    };
    h.standalone = Some(spawn(&h));
    h.wait_for_service().await;
    let spec = h.spec("echo start; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo bye; exit 5");
    let created = h.create(&spec).await.expect("create");
    h.start(&spec.id);

    let mut iso = h.standalone.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(iso.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    iso.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        berth_isolator::alive(created.shim_pid as i32),
        "shim died with the isolator"
    );
    assert!(
        berth_isolator::alive(created.init_pid as i32),
        "container died with the isolator"
    );

    h.standalone = Some(spawn(&h));
    h.wait_for_service().await;
    // The new isolator reaches the same container.
    let r = h
        .exec(&spec.id, &["touch", "/tmp/go"])
        .await
        .expect("exec after restart");
    assert_eq!(r.exit_code, 0);
    let st = h.wait_exit(&spec.id, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, 5);
    assert_eq!(h.stdout(&spec.id), "start\nbye\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_options_reach_the_container() {
    need_root!();
    let h = Harness::new().await;
    // Read-only root, capabilities, rlimits and cgroup limits.
    let mut spec = h.spec(
        "(touch /newfile) 2>/dev/null && echo RW || echo RO; \
         touch /tmp/ok 2>/dev/null && echo TMP-RW || echo TMP-RO; \
         grep CapEff /proc/self/status; ulimit -n; \
         mount -t tmpfs none /mnt && echo MOUNTED; sleep 1",
    );
    spec.read_only = true;
    spec.mounts.push(MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: "/tmp".into(),
        read_only: false,
        size_bytes: None,
    });
    spec.cap_drop = vec!["ALL".into()];
    spec.cap_add = vec!["sys_admin".into(), "CAP_CHOWN".into()];
    spec.resources.ulimits = vec![Rlimit {
        name: "nofile".into(),
        soft: 321,
        hard: 654,
    }];
    spec.resources.cpus = Some(0.5);
    spec.resources.cpu_shares = Some(512);
    spec.resources.memory_bytes = Some(64 << 20);
    h.create(&spec).await.expect("create");
    let cg = h.cgroup(&spec.id);
    let read = |c: &str, f: &str| {
        std::fs::read_to_string(cg.dir(c).unwrap().join(f))
            .unwrap()
            .trim()
            .to_string()
    };
    if cg.layout().is_v2() {
        assert_eq!(read("cpu", "cpu.max"), "50000 100000");
        assert_eq!(read("memory", "memory.max"), (64u64 << 20).to_string());
    } else {
        assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu", "cpu.shares"), "512");
        assert_eq!(
            read("memory", "memory.limit_in_bytes"),
            (64u64 << 20).to_string()
        );
    }
    h.start(&spec.id);
    let st = h.wait_exit(&spec.id, Duration::from_secs(20)).await;
    let out = h.stdout(&spec.id);
    assert_eq!(st.exit_code, 0, "{out}");
    // SYS_ADMIN (bit 21) and CHOWN (bit 0) only; seccomp lets mount through with SYS_ADMIN.
    assert_eq!(out, "RO\nTMP-RW\nCapEff:\t0000000000200001\n321\nMOUNTED\n");

    // Without seccomp, unshare is stopped by capabilities alone; with SYS_ADMIN and no
    // seccomp, it works.
    let mut open = h.spec("unshare -m true && echo UNSHARED");
    open.seccomp = false;
    open.cap_add = vec!["SYS_ADMIN".into()];
    let (st, out) = h.run(&open).await;
    assert_eq!((st.exit_code, out.as_str()), (0, "UNSHARED\n"));
    let mut closed =
        h.spec("grep '^Seccomp:' /proc/self/status; unshare -m true 2>/dev/null || echo REFUSED");
    closed.seccomp = false;
    let (_, out) = h.run(&closed).await;
    assert_eq!(out, "Seccomp:\t0\nREFUSED\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_modes() {
    need_root!();
    let h = Harness::new().await;
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let first = h.spec("readlink /proc/self/ns/net; sleep 30; echo never");
    h.create(&first).await.expect("create first");
    h.start(&first.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while h.stdout(&first.id).is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_net = h.stdout(&first.id).trim().to_string();
    assert_ne!(first_net, host_net.display().to_string());

    let mut joined = h.spec("readlink /proc/self/ns/net");
    joined.network = NetworkMode::Container(first.id.clone());
    let (st, out) = h.run(&joined).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(
        out.trim(),
        first_net,
        "joined the first container's network"
    );

    let mut host = h.spec("readlink /proc/self/ns/net");
    host.network = NetworkMode::Host;
    let (_, out) = h.run(&host).await;
    assert_eq!(out.trim(), host_net.display().to_string());

    // A bridge network that does not exist is refused, naming it, and nothing is left.
    let mut bridge = h.spec("true");
    bridge.network = NetworkMode::Bridge("br0".into());
    let e = h.create(&bridge).await.unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::NotFound, "{e}");
    assert!(e.to_string().contains("\"br0\""), "{e}");
    assert!(!h.run_dir(&bridge.id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_on_request() {
    need_root!();
    let h = Harness::new().await;
    let mut spec = h.spec(
        "tty; [ -t 1 ] && echo IS-A-TTY; echo $TERM; stty size; \
         [ -c /dev/console ] && echo CONSOLE; echo to-stderr >&2",
    );
    spec.tty = true;
    let (st, out) = h.run(&spec).await;
    assert_eq!(st.exit_code, 0, "{out}");
    // A terminal turns \n into \r\n and merges stderr into the one stream.
    assert_eq!(
        out,
        "/dev/pts/0\r\nIS-A-TTY\r\nxterm\r\n24 80\r\nCONSOLE\r\nto-stderr\r\n"
    );
    assert!(h.log(&spec.id).iter().all(|l| l.s == "stdout"));
}

#[test]
fn cli_volume_ls_and_rm_through_berthd() {
    need_root!();
    use berth_tests::daemon::{stderr, stdout, Berthd};
    let d = Berthd::start();
    let vols = d.data_root().join("volumes");
    for v in ["alpha", "beta"] {
        std::fs::create_dir_all(vols.join(v)).unwrap();
    }
    let o = d.berth(&["volume", "ls", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "alpha\nbeta\n");
    let o = d.berth(&["volume", "ls"]);
    assert!(stdout(&o).starts_with("VOLUME NAME"), "{}", stdout(&o));
    let o = d.berth(&["volume", "rm", "alpha"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "alpha\n");
    assert!(!vols.join("alpha").exists());
    let o = d.berth(&["volume", "rm", "nope"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no volume \"nope\""), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shim_stays_idle_when_the_container_closes_its_output() {
    need_root!();
    let h = Harness::new().await;
    let spec = h.spec("echo bye; exec >&- 2>&-; sleep 1.5");
    let created = h.create(&spec).await.expect("create");
    h.start(&spec.id);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // utime + stime of the shim, in clock ticks (1/100 s).
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", created.shim_pid)).unwrap();
    let fields: Vec<&str> = stat.rsplit(") ").next().unwrap().split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    assert!(
        ticks < 20,
        "the shim used {ticks} ticks of CPU while waiting"
    );
    let st = h.wait_exit(&spec.id, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(h.stdout(&spec.id), "bye\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_with_proc_and_dev_as_symlinks_cannot_mount_onto_the_host() {
    need_root!();
    let h = Harness::new().await;
    let outside = tempfile::Builder::new()
        .prefix("berth-outside-")
        .tempdir()
        .unwrap();
    let hops = "../".repeat(20);
    for d in ["proc", "dev"] {
        let host_dir = outside.path().join(d);
        std::fs::create_dir(&host_dir).unwrap();
        let link = h.rootfs.lower().join(d);
        std::fs::remove_dir(&link).unwrap();
        std::os::unix::fs::symlink(format!("{hops}{}", host_dir.display()), &link).unwrap();
    }
    // The init layer's directories hide the image's links; a container in a user namespace
    // goes without that layer and meets the links themselves.
    for userns in [None, Some(231_072)] {
        let mut spec = h.spec("ls /dev | grep -c '^null$'; ls /proc/self/ns | grep -c '^mnt$'");
        spec.userns_remap = userns;
        let (st, out) = h.run(&spec).await;
        assert_eq!(st.exit_code, 0, "{userns:?}: {out}");
        assert_eq!(out, "1\n1\n", "{userns:?}");
    }
    for d in ["proc", "dev"] {
        assert!(
            std::fs::read_dir(outside.path().join(d))
                .unwrap()
                .next()
                .is_none(),
            "a mount or file reached the host's {d} directory"
        );
    }
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mi.contains(&outside.path().display().to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_points_come_from_the_init_layer_and_the_upper_dir_stays_empty() {
    need_root!();
    let h = Harness::new().await;
    // The image has an /etc of its own but none of the files the init binds there.
    let etc = h.rootfs.lower().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("from-the-image"), b"image\n").unwrap();
    for f in ["hostname", "hosts", "resolv.conf"] {
        assert!(!etc.join(f).exists(), "{f}");
    }
    let mut spec = h.spec("cat /etc/hostname /etc/from-the-image; ls -ld /etc | cut -c1-10");
    spec.hostname = Some("layered".into());
    let (st, out) = h.run(&spec).await;
    assert_eq!(st.exit_code, 0, "{out}");
    assert_eq!(out, "layered\nimage\ndrwxr-xr-x\n");
    // Nothing was made in the container's own layer to mount onto.
    let upper = PathBuf::from(h.rootfs.container(&spec.id).upperdir);
    let made: Vec<_> = std::fs::read_dir(&upper)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(made.is_empty(), "{made:?}");
    // The layer is the node's, above the image's.
    let rootfs: berth_proto::isolator::RootfsMount = serde_json::from_slice(
        &std::fs::read(h.config().container_dir(&spec.id).join("rootfs.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        rootfs.lowerdirs,
        [
            h.config()
                .data_root
                .join("init-layer")
                .display()
                .to_string(),
            h.rootfs.lower().display().to_string()
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_do_not_interfere() {
    need_root!();
    let h = Harness::new().await;
    let specs: Vec<ContainerSpec> = (0..6)
        .map(|i| {
            let mut s = h.spec(&format!("echo container-{i}; hostname"));
            s.hostname = Some(format!("host-{i}"));
            s
        })
        .collect();
    let replies = futures::future::join_all(specs.iter().map(|s| h.create(s))).await;
    for r in &replies {
        assert!(r.is_ok(), "{r:?}");
    }
    for s in &specs {
        h.start(&s.id);
    }
    for (i, s) in specs.iter().enumerate() {
        let st = h.wait_exit(&s.id, Duration::from_secs(20)).await;
        assert_eq!(st.exit_code, 0);
        assert_eq!(h.stdout(&s.id), format!("container-{i}\nhost-{i}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_namespace_maps_root_to_an_unprivileged_range() {
    need_root!();
    let h = Harness::new().await;
    let base = 231_072u32;
    let mut spec = h.spec(
        "id -u; awk '{print $1, $2, $3}' /proc/self/uid_map; \
         touch /tmp/made && echo TMP-OK; (touch /made) 2>/dev/null || echo ROOT-DIR-REFUSED; \
         grep CapEff /proc/self/status; while [ ! -e /tmp/go ]; do sleep 0.05; done",
    );
    spec.userns_remap = Some(base);
    let created = h.create(&spec).await.expect("create");
    h.start(&spec.id);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !h.stdout(&spec.id).contains("CapEff") {
        assert!(Instant::now() < deadline, "{}", h.stdout(&spec.id));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Seen from the host, the container's root is the unprivileged base id.
    let status = std::fs::read_to_string(format!("/proc/{}/status", created.init_pid)).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line, format!("Uid:\t{base}\t{base}\t{base}\t{base}"));
    // exec joins the user namespace too.
    let r = h
        .exec(&spec.id, &["sh", "-c", "id -u; touch /tmp/go"])
        .await
        .expect("exec");
    assert_eq!((r.exit_code, r.stdout.as_str()), (0, "0\n"), "{}", r.stderr);
    let st = h.wait_exit(&spec.id, Duration::from_secs(10)).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(
        h.stdout(&spec.id),
        format!("0\n0 {base} 65536\nTMP-OK\nROOT-DIR-REFUSED\nCapEff:\t00000000a80425fb\n")
    );
    use std::os::unix::fs::MetadataExt;
    let upper = PathBuf::from(h.rootfs.container(&spec.id).upperdir);
    let made = std::fs::metadata(upper.join("tmp/made")).unwrap();
    assert_eq!((made.uid(), made.gid()), (base, base));
}

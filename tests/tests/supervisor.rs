//! The supervisor against a real nats-server, the real isolator and shim and the real kernel
//! (as root): restart policies with backoff, health checks, stop with a grace period, live
//! logs and rotation, re-adoption after a supervisor restart, and `berth run --rm`.
//!
//! Containers run a busybox-static root filesystem given as `rootfs` (a host directory used
//! as the read-only lower layer). Every container, cgroup and directory a test makes is removed
//! when it ends, pass or fail.

use berth_bus::{Bus, RequestOptions, ServiceContext};
use berth_proto::supervisor::*;
use berth_proto::{subjects, ErrorCode, Event, Service};
use berth_supervisor::settings::Settings;
use berth_tests::nats::NatsServer;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(30);

struct Hosted {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl Hosted {
    async fn stop(self) {
        self.token.cancel();
        let _ = self.task.await;
    }
}

/// One node: nats, the isolator and the supervisor in-process, a busybox rootfs, and the
/// events of containers recorded as they arrive.
struct Node {
    node: String,
    root: tempfile::TempDir,
    rootfs: tempfile::TempDir,
    bus: Bus,
    isolator: Option<Hosted>,
    supervisor: Option<Hosted>,
    settings: Settings,
    events: Arc<Mutex<Vec<(Instant, Event)>>>,
    // Last: dropped after the cleanup in `Drop`.
    nats: NatsServer,
}

impl Node {
    async fn start(settings: Settings) -> Node {
        let nats = NatsServer::start();
        let node = berth_tests::unique("sv").replace('-', "_");
        let root = tempfile::Builder::new()
            .prefix("berth-sv-")
            .tempdir()
            .unwrap();
        let rootfs = tempfile::Builder::new()
            .prefix("berth-rootfs-")
            .tempdir()
            .unwrap();
        berth_tests::images::container_rootfs(rootfs.path());
        for applet in ["rm", "touch", "false"] {
            std::os::unix::fs::symlink("busybox", rootfs.path().join("bin").join(applet)).unwrap();
        }
        let bus = nats.bus(&node).await;
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut sub = bus
            .client()
            .subscribe(format!("{}.{node}.{EV_ENTITY}.>", subjects::EVENTS_PREFIX))
            .await
            .unwrap();
        let ev2 = events.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Ok(e) = serde_json::from_slice::<Event>(&m.payload) {
                    ev2.lock().unwrap().push((Instant::now(), e));
                }
            }
        });
        let mut n = Node {
            node,
            root,
            rootfs,
            bus,
            isolator: None,
            supervisor: None,
            settings,
            events,
            nats,
        };
        let ctx = n.ctx().await;
        n.isolator = Some(spawn(ctx.clone(), |c| async move {
            berth_isolator::run(c).await.map_err(|e| e.to_string())
        }));
        // Ready when it answers: a create sent before would find no isolator.
        berth_tests::wait_for_service(&n.bus, Service::Isolator, T).await;
        n.start_supervisor().await;
        n
    }

    async fn ctx(&self) -> ServiceContext {
        self.nats.context(&self.node, self.root.path()).await
    }

    async fn start_supervisor(&mut self) {
        let ctx = self.ctx().await;
        let s = self.settings.clone();
        self.supervisor = Some(spawn(ctx, move |c| async move {
            berth_supervisor::run_with(c, s)
                .await
                .map_err(|e| e.to_string())
        }));
        // Ready when it answers.
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            let r: Result<ListReply, _> = self
                .bus
                .ask_local::<berth_proto::supervisor::verbs::List>(
                    &ListRequest::default(),
                    &RequestOptions::timeout(Duration::from_secs(2)),
                )
                .await;
            if r.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the supervisor did not answer");
    }

    async fn stop_supervisor(&mut self) {
        if let Some(s) = self.supervisor.take() {
            s.stop().await;
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.root.path().join("run")
    }
    fn data_root(&self) -> PathBuf {
        self.root.path().join("data")
    }

    async fn call<Req: serde::Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        verb: &str,
        body: &Req,
    ) -> Result<Resp, berth_bus::BusError> {
        self.bus
            .call(
                Service::Supervisor,
                verb,
                body,
                &RequestOptions::mutating(Duration::from_secs(60)),
            )
            .await
    }

    fn request(&self, name: &str, cmd: &[&str]) -> CreateRequest {
        CreateRequest {
            name: Some(name.to_string()),
            rootfs: Some(self.rootfs.path().display().to_string()),
            options: ContainerOptions {
                cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            start: true,
            ..Default::default()
        }
    }

    async fn run(&self, name: &str, cmd: &[&str]) -> ContainerState {
        self.call(CREATE, &self.request(name, cmd)).await.unwrap()
    }

    async fn inspect(&self, c: &str) -> InspectReply {
        self.call(
            INSPECT,
            &Target {
                container: c.to_string(),
            },
        )
        .await
        .unwrap()
    }

    /// The error `inspect` gets for `c` (which must not exist).
    async fn inspect_err(&self, c: &str) -> berth_bus::BusError {
        self.call::<_, InspectReply>(
            INSPECT,
            &Target {
                container: c.to_string(),
            },
        )
        .await
        .unwrap_err()
    }

    /// Poll `inspect` until `f` holds.
    async fn until(
        &self,
        c: &str,
        what: &str,
        f: impl Fn(&ContainerState) -> bool,
    ) -> ContainerState {
        let deadline = Instant::now() + T;
        loop {
            let s = self.inspect(c).await.state;
            if f(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{c}: never {what}; last state {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events of container `id` with this action, with the time they arrived.
    fn events_of(&self, id: &str, action: &str) -> Vec<(Instant, Event)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| {
                e.action == action && e.attrs.get("id").and_then(|v| v.as_str()) == Some(id)
            })
            .cloned()
            .collect()
    }

    /// Every `exited` event of `id` kept in the stream (the durable record, after dedup).
    async fn stored_exits(&self, id: &str) -> usize {
        use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
        let stream = self
            .bus
            .jetstream()
            .get_stream(subjects::EVENTS_STREAM)
            .await
            .unwrap();
        let c = stream
            .create_consumer(OrderedConfig {
                filter_subject: subjects::event(&self.node, EV_ENTITY, EV_EXITED),
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = c.messages().await.unwrap();
        let mut n = 0;
        while let Ok(Some(Ok(m))) =
            tokio::time::timeout(Duration::from_millis(500), msgs.next()).await
        {
            let e: Event = serde_json::from_slice(&m.payload).unwrap();
            if e.attrs.get("id").and_then(|v| v.as_str()) == Some(id) {
                n += 1;
            }
        }
        n
    }
}

fn spawn<F, Fut>(ctx: ServiceContext, f: F) -> Hosted
where
    F: FnOnce(ServiceContext) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let token = ctx.shutdown.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = f(ctx).await {
            panic!("service failed: {e}");
        }
    });
    Hosted { token, task }
}

/// Kill whatever containers are left (by the pids their shims recorded, after checking they
/// belong to this test's run directory) and wait for their shims, which remove the cgroups.
fn kill_leftovers(run_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    let mut shims = Vec::new();
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| -> Option<i32> {
            std::fs::read_to_string(e.path().join(f))
                .ok()?
                .trim()
                .parse()
                .ok()
        };
        let (Some(shim), Some(init)) = (read("shim.pid"), read("init.pid")) else {
            continue;
        };
        if !berth_proto::isolator::is_shim_of(shim as u32, &e.path()) {
            continue;
        }
        let cg = std::fs::read_to_string(format!("/proc/{init}/cgroup")).unwrap_or_default();
        if cg.contains(&id) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        shims.push(shim);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for shim in shims {
        while Path::new(&format!("/proc/{shim}")).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.supervisor.take() {
            s.token.cancel();
            s.task.abort();
        }
        if let Some(s) = self.isolator.take() {
            s.token.cancel();
            s.task.abort();
        }
        kill_leftovers(&self.run_dir());
    }
}

fn fast() -> Settings {
    Settings {
        restart_backoff_ms: 100,
        restart_backoff_max_ms: 400,
        log_poll_ms: 20,
        ..Default::default()
    }
}

macro_rules! need_root {
    () => {
        if !berth_tests::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_backs_off_and_stops_after_max() {
    need_root!();
    let n = Node::start(fast()).await;
    let mut req = n.request("flaky", &["sh", "-c", "echo try; exit 1"]);
    req.restart = RestartPolicy::OnFailure {
        max_retries: Some(4),
    };
    let st: ContainerState = n.call(CREATE, &req).await.unwrap();
    let w: WaitReply = n
        .call(
            WAIT,
            &WaitRequest {
                container: st.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(w.exit_code, 1);
    let s = n.inspect("flaky").await.state;
    assert_eq!(s.status, ContainerStatus::Exited);
    assert_eq!(s.restart_count, 4);
    // No more restarts after the maximum.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let starts = n.events_of(&st.id, EV_STARTED);
    assert_eq!(starts.len(), 5, "one start and four restarts");
    assert_eq!(n.events_of(&st.id, EV_EXITED).len(), 5);
    let delays: Vec<u64> = n
        .events_of(&st.id, EV_RESTARTING)
        .iter()
        .map(|(_, e)| e.attrs["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays, [100, 200, 400, 400], "doubling, capped at 400 ms");
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1].0 - w[0].0).collect();
    for (g, d) in gaps.iter().zip(&delays) {
        assert!(
            *g >= Duration::from_millis(*d),
            "restart came after {g:?}, before its delay of {d} ms"
        );
    }
    assert!(gaps[2] > gaps[0], "delays grow: {gaps:?}");
    // Logs of every run are kept.
    let logs: LogsReply = n
        .call(
            LOGS,
            &LogsRequest {
                container: "flaky".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(logs.lines.iter().filter(|l| l.log == "try\n").count(), 5);
    let _: ContainerState = n
        .call(
            REMOVE,
            &RemoveRequest {
                container: "flaky".into(),
                force: false,
            },
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_unhealthy_and_back_and_the_action_applies() {
    need_root!();
    let n = Node::start(fast()).await;
    let mut req = n.request("doc", &["sh", "-c", "touch /tmp/ok; exec sleep 1000"]);
    req.healthcheck = Some(HealthCheck {
        test: vec!["CMD-SHELL".into(), "test -e /tmp/ok".into()],
        interval_ms: Some(150),
        timeout_ms: Some(5000),
        retries: Some(2),
        start_period_ms: None,
    });
    let st: ContainerState = n.call(CREATE, &req).await.unwrap();
    assert_eq!(
        st.health.as_ref().map(|h| h.status),
        Some(HealthStatus::Starting)
    );
    let health = |s: &ContainerState| s.health.as_ref().map(|h| h.status);
    n.until("doc", "healthy", |s| {
        health(s) == Some(HealthStatus::Healthy)
    })
    .await;
    let exec = |args: &[&str]| ExecRequest {
        container: "doc".into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let r: ExecReply = n.call(EXEC, &exec(&["rm", "/tmp/ok"])).await.unwrap();
    assert_eq!(r.exit_code, 0, "{r:?}");
    let s = n
        .until("doc", "unhealthy", |s| {
            health(s) == Some(HealthStatus::Unhealthy)
        })
        .await;
    assert!(s.health.unwrap().failing_streak >= 2);
    let r: ExecReply = n.call(EXEC, &exec(&["touch", "/tmp/ok"])).await.unwrap();
    assert_eq!(r.exit_code, 0);
    n.until("doc", "healthy again", |s| {
        health(s) == Some(HealthStatus::Healthy)
    })
    .await;
    // The state is committed before its event is published: give the last event a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while n.events_of(&st.id, EV_HEALTH).len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen: Vec<String> = n
        .events_of(&st.id, EV_HEALTH)
        .iter()
        .map(|(_, e)| e.attrs["health"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, ["healthy", "unhealthy", "healthy"]);

    // The action `restart` on a container that turns unhealthy.
    let mut req = n.request("sick", &["sh", "-c", "exec sleep 1000"]);
    req.healthcheck = Some(HealthCheck {
        test: vec!["CMD".into(), "false".into()],
        interval_ms: Some(100),
        retries: Some(1),
        ..Default::default()
    });
    req.health_on_failure = HealthAction::Restart;
    let sick: ContainerState = n.call(CREATE, &req).await.unwrap();
    let s = n
        .until("sick", "restarted by its health action", |s| {
            s.restart_count >= 1 && s.status == ContainerStatus::Running
        })
        .await;
    assert_ne!(s.pid, sick.pid);
    for c in ["doc", "sick"] {
        let _: ContainerState = n
            .call(
                REMOVE,
                &RemoveRequest {
                    container: c.into(),
                    force: true,
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_the_signal_then_kills_after_the_grace_period() {
    need_root!();
    let n = Node::start(fast()).await;
    // Handles SIGTERM: exits with its own code at once.
    let polite = n
        .run(
            "polite",
            &[
                "sh",
                "-c",
                "trap 'echo got-term; exit 7' TERM; while true; do sleep 0.05; done",
            ],
        )
        .await;
    // Ignores SIGTERM: killed after the grace period.
    let deaf = n
        .run(
            "deaf",
            &["sh", "-c", "trap '' TERM; while true; do sleep 0.05; done"],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let s: ContainerState = n
        .call(
            STOP,
            &StopRequest {
                container: "polite".into(),
                timeout_ms: Some(5000),
            },
        )
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert_eq!(s.status, ContainerStatus::Exited);
    assert_eq!(s.exit_code, Some(7));
    let logs: LogsReply = n
        .call(
            LOGS,
            &LogsRequest {
                container: polite.id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(logs.lines.iter().any(|l| l.log == "got-term\n"), "{logs:?}");

    let t0 = Instant::now();
    let s: ContainerState = n
        .call(
            STOP,
            &StopRequest {
                container: deaf.id[..12].to_string(),
                timeout_ms: Some(700),
            },
        )
        .await
        .unwrap();
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(700), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(s.exit_code, Some(137));
    let kills: Vec<String> = n
        .events_of(&deaf.id, EV_KILLED)
        .iter()
        .map(|(_, e)| e.attrs["signal"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kills, ["SIGTERM", "SIGKILL"]);
    for c in ["polite", "deaf"] {
        let _: ContainerState = n
            .call(
                REMOVE,
                &RemoveRequest {
                    container: c.into(),
                    force: false,
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_sees_new_lines_and_rotation_keeps_history() {
    need_root!();
    let n = Node::start(Settings {
        log_max_bytes: 4096,
        log_max_files: 3,
        ..fast()
    })
    .await;
    let st = n
        .run(
            "talker",
            &[
                "sh",
                "-c",
                "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.002; done",
            ],
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // As `berth logs -f` does: subscribe, then read the history.
    let mut live = n
        .bus
        .client()
        .subscribe(logs_subject(&n.node, &st.id))
        .await
        .unwrap();
    let hist: LogsReply = n
        .call(
            LOGS,
            &LogsRequest {
                container: "talker".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(hist.running);
    let num = |s: &str| -> u64 { s.trim().trim_start_matches("line").parse().unwrap() };
    let mut seen: Vec<u64> = hist.lines.iter().map(|l| num(&l.log)).collect();
    assert!(!seen.is_empty());
    let last_history = *seen.last().unwrap();
    let deadline = Instant::now() + T;
    while seen.len() < hist.lines.len() + 400 {
        assert!(Instant::now() < deadline, "live lines stopped");
        let m = tokio::time::timeout(T, live.next()).await.unwrap().unwrap();
        match serde_json::from_slice::<LogMessage>(&m.payload).unwrap() {
            LogMessage::Line { epoch, seq, line } => {
                if epoch == hist.epoch && seq <= hist.seq {
                    continue;
                }
                seen.push(num(&line.log));
            }
            LogMessage::Exited { .. } => panic!("exited while followed"),
        }
    }
    assert!(*seen.last().unwrap() > last_history);
    // No line lost or repeated where history meets the live stream (after the rotated
    // files' start: the oldest lines may be gone).
    for w in seen.windows(2) {
        assert_eq!(w[1], w[0] + 1, "gap or repeat around {w:?}");
    }
    let dir = n.data_root().join("containers").join(&st.id);
    assert!(dir.join("log.jsonl.1").exists(), "rotated");
    assert!(!dir.join("log.jsonl.3").exists(), "at most 3 files");
    assert!(std::fs::metadata(dir.join("log.jsonl")).unwrap().len() < 4096 * 4);
    let tail: LogsReply = n
        .call(
            LOGS,
            &LogsRequest {
                container: "talker".into(),
                tail: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail.lines.len(), 5);
    let _: ContainerState = n
        .call(
            REMOVE,
            &RemoveRequest {
                container: "talker".into(),
                force: true,
            },
        )
        .await
        .unwrap();
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_supervisor_readopts_all_and_reports_a_missed_exit_once() {
    need_root!();
    let mut n = Node::start(fast()).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let mut req = n.request(&format!("c{i}"), &["sleep", "1000"]);
        req.restart = RestartPolicy::Always;
        let st: ContainerState = n.call(CREATE, &req).await.unwrap();
        ids.push(st.id);
    }
    let quitter = n.run("quitter", &["sleep", "1000"]).await;
    let before: Vec<ContainerState> = {
        let mut v = Vec::new();
        for id in &ids {
            v.push(n.inspect(id).await.state);
        }
        v
    };

    n.stop_supervisor().await;
    // While it is away: the quitter is killed, and its exit lands in exit.json.
    let pid = nix::unistd::Pid::from_raw(quitter.pid.unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let exit_file = n.run_dir().join(&quitter.id).join("exit.json");
    let deadline = Instant::now() + T;
    while !exit_file.exists() {
        assert!(Instant::now() < deadline, "no exit.json");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started_before = n.events.lock().unwrap().len();

    n.start_supervisor().await;
    for (id, b) in ids.iter().zip(&before) {
        let s = n.inspect(id).await.state;
        assert_eq!(s.status, ContainerStatus::Running, "{id}");
        assert_eq!(s.pid, b.pid, "same process");
        assert_eq!(s.started_at, b.started_at, "not restarted");
        assert_eq!(s.restart_count, 0);
    }
    let q = n.inspect("quitter").await.state;
    assert_eq!(q.status, ContainerStatus::Exited);
    assert_eq!(q.exit_code, Some(137));
    // A second restart changes nothing and announces nothing again.
    n.stop_supervisor().await;
    n.start_supervisor().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new_events: Vec<Event> = n.events.lock().unwrap()[started_before..]
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    assert!(
        !new_events.iter().any(|e| e.action == EV_STARTED),
        "nothing restarted: {new_events:?}"
    );
    assert_eq!(
        n.stored_exits(&quitter.id).await,
        1,
        "the missed exit, once"
    );
    // The actual-state bucket agrees.
    let kv = berth_bus::infra::actual(&n.bus).await.unwrap();
    let v = kv
        .get(subjects::actual_key(&n.node, &quitter.id))
        .await
        .unwrap()
        .unwrap();
    let st: ContainerState = serde_json::from_slice(&v).unwrap();
    assert_eq!(st.exit_code, Some(137));
    // The re-adopted ones are still watched: a stop works and is seen.
    let s: ContainerState = n
        .call(
            STOP,
            &StopRequest {
                container: "c3".into(),
                timeout_ms: Some(2000),
            },
        )
        .await
        .unwrap();
    assert_eq!(s.status, ContainerStatus::Exited);
    for i in 0..10 {
        let _: ContainerState = n
            .call(
                REMOVE,
                &RemoveRequest {
                    container: format!("c{i}"),
                    force: true,
                },
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_removed_at_their_exit_are_saved_once_and_removed_by_a_restarted_supervisor() {
    need_root!();
    let mut n = Node::start(fast()).await;
    let mut started = Vec::new();
    for name in ["ends-away", "lost-exit"] {
        let mut req = n.request(name, &["sleep", "1000"]);
        req.auto_remove = true;
        let st: ContainerState = n.call(CREATE, &req).await.unwrap();
        assert_eq!(st.status, ContainerStatus::Running);
        started.push(st);
    }
    // Saved once, at the create: the running state is never written.
    for st in &started {
        let dir = n.data_root().join("containers").join(&st.id);
        let mut records: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with("supervisor."))
            .collect();
        records.sort();
        assert_eq!(records, ["supervisor.1.json"], "{}", dir.display());
    }
    n.stop_supervisor().await;
    // While it is away both end; the run directory of one is lost, as a reboot loses it.
    for st in &started {
        let pid = nix::unistd::Pid::from_raw(st.pid.unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
        let exit_file = n.run_dir().join(&st.id).join("exit.json");
        let deadline = Instant::now() + T;
        while !exit_file.exists() {
            assert!(Instant::now() < deadline, "no exit.json for {}", st.name);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The shim's cgroup removal is done once it has gone.
    kill_leftovers(&n.run_dir());
    std::fs::remove_dir_all(n.run_dir().join(&started[1].id)).unwrap();
    // And a removal's run directory it had not deleted yet.
    let leftover = n.run_dir().join(".removed-leftover");
    std::fs::create_dir_all(leftover.join("sub")).unwrap();
    std::fs::write(leftover.join("sub/exit.json"), b"{}").unwrap();

    n.start_supervisor().await;
    for st in &started {
        let deadline = Instant::now() + T;
        loop {
            let found: Result<InspectReply, _> = n
                .call(
                    INSPECT,
                    &Target {
                        container: st.id.clone(),
                    },
                )
                .await;
            let gone = found.err().and_then(|e| e.remote().map(|r| r.code))
                == Some(ErrorCode::NotFound)
                && !n.data_root().join("containers").join(&st.id).exists();
            if gone && !n.events_of(&st.id, EV_REMOVED).is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "{} not removed", st.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(n.events_of(&st.id, EV_REMOVED).len(), 1, "{}", st.name);
    }
    let deadline = Instant::now() + T;
    while leftover.exists() {
        assert!(
            Instant::now() < deadline,
            "the run directory's trash is not swept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The one whose exit was found announces it (once); names are free again.
    assert_eq!(n.stored_exits(&started[0].id).await, 1);
    let again = n.run("ends-away", &["true"]).await;
    assert_ne!(again.id, started[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_names_ids_pause_kill_and_remove() {
    need_root!();
    let n = Node::start(fast()).await;
    let mut web = n.request("web", &["sleep", "1000"]);
    web.labels.insert("tier".into(), "front".into());
    let a: ContainerState = n.call(CREATE, &web).await.unwrap();
    // Its events carry its labels, as Docker's do.
    let deadline = Instant::now() + T;
    while n.events_of(&a.id, EV_CREATED).is_empty() {
        assert!(Instant::now() < deadline, "no created event");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let created = n.events_of(&a.id, EV_CREATED);
    assert_eq!(
        created
            .first()
            .and_then(|(_, e)| e.attrs.get("labels"))
            .and_then(|l| l.get("tier")),
        Some(&serde_json::json!("front")),
        "{created:?}"
    );
    // Names are unique per node.
    let e = n
        .call::<_, ContainerState>(CREATE, &n.request("web", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::Conflict);
    // Random names when none is given; short ids work.
    let mut anon = n.request("x", &["sleep", "1000"]);
    anon.name = None;
    let b: ContainerState = n.call(CREATE, &anon).await.unwrap();
    assert!(b.name.contains('_'), "{}", b.name);
    assert_eq!(n.inspect(&b.id[..8]).await.state.name, b.name);
    // A caller may choose the id (to listen on the container's subjects first): it must be
    // 64 lowercase hex digits and not in use.
    let mut chosen = n.request("chosen", &["true"]);
    chosen.id = Some(format!("{:0>64}", "c0ffee"));
    let c: ContainerState = n.call(CREATE, &chosen).await.unwrap();
    assert_eq!(c.id, format!("{:0>64}", "c0ffee"));
    chosen.name = Some("chosen-again".into());
    for (id, why) in [
        (c.id.clone(), "exists already"),
        ("C0FFEE".repeat(10) + "abcd", "lowercase hexadecimal"),
        ("abc".into(), "lowercase hexadecimal"),
    ] {
        chosen.id = Some(id.clone());
        let e = n
            .call::<_, ContainerState>(CREATE, &chosen)
            .await
            .unwrap_err();
        assert_eq!(
            e.remote().unwrap().code,
            ErrorCode::InvalidArgument,
            "{id}: {e}"
        );
        assert!(e.to_string().contains(why), "{id}: {e}");
    }
    // Removed at its exit and restarted cannot both be asked for, as with Docker.
    let mut both = n.request("both", &["true"]);
    both.auto_remove = true;
    both.restart = RestartPolicy::Always;
    let e = n
        .call::<_, ContainerState>(CREATE, &both)
        .await
        .unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::InvalidArgument, "{e}");
    assert!(e.to_string().contains("auto_remove"), "{e}");
    assert_eq!(
        n.inspect_err("both").await.remote().unwrap().code,
        ErrorCode::NotFound
    );
    let e = n.inspect_err("chosen-again").await;
    assert_eq!(
        e.remote().unwrap().code,
        ErrorCode::NotFound,
        "a refused create leaves no container"
    );
    // Created and started in one request (`run`), a container that fails to start leaves
    // nothing: no record, no directory.
    let mut bad = n.request("bad-mount", &["true"]);
    bad.options.mounts = vec![berth_proto::isolator::MountSpec {
        kind: berth_proto::isolator::MountKind::Bind,
        source: n.root.path().join("no-such-dir").display().to_string(),
        target: "/data".into(),
        read_only: false,
        size_bytes: None,
    }];
    let e = n.call::<_, ContainerState>(CREATE, &bad).await.unwrap_err();
    assert!(e.to_string().contains("no-such-dir"), "{e}");
    assert_eq!(
        n.inspect_err("bad-mount").await.remote().unwrap().code,
        ErrorCode::NotFound,
        "a failed run leaves no container"
    );
    let containers = n.data_root().join("containers");
    // Container directories only: the trash of earlier removals (dot names) goes away on
    // the janitor's own time.
    let records = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
    };
    let before = records(&containers);
    // Created first (`create`), a container that then fails to start stays created, with the
    // error, and its record is on disk like any created container's.
    bad.start = false;
    let _: ContainerState = n.call(CREATE, &bad).await.unwrap();
    let e = n
        .call::<_, ContainerState>(
            START,
            &Target {
                container: "bad-mount".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(
        records(&containers),
        before + 1,
        "one directory, the created container's"
    );
    let i = n.inspect("bad-mount").await;
    assert_eq!(i.state.status, ContainerStatus::Created, "{e}");
    assert!(i.state.error.is_some(), "{:?}", i.state);
    let dir = n.data_root().join("containers").join(&i.state.id);
    let records: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.starts_with("supervisor.") && f.ends_with(".json"))
        .collect();
    assert_eq!(records.len(), 1, "one version of the record: {records:?}");
    let _: serde_json::Value = n
        .call(
            REMOVE,
            &RemoveRequest {
                container: "bad-mount".into(),
                force: false,
            },
        )
        .await
        .unwrap();
    // Removing a running container is refused unless forced.
    let e = n
        .call::<_, ContainerState>(
            REMOVE,
            &RemoveRequest {
                container: "web".into(),
                force: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::FailedPrecondition);
    // Pause freezes, unpause thaws.
    let s: ContainerState = n
        .call(
            PAUSE,
            &Target {
                container: "web".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(s.status, ContainerStatus::Paused);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", a.pid.unwrap())).unwrap();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(state == "D" || state == "S", "frozen task state {state}");
    let s: ContainerState = n
        .call(
            UNPAUSE,
            &Target {
                container: "web".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(s.status, ContainerStatus::Running);
    // Stats read the container's cgroup.
    let st: StatsReply = n
        .call(
            STATS,
            &StatsRequest {
                containers: vec!["web".into()],
            },
        )
        .await
        .unwrap();
    assert_eq!(st.stats.len(), 1);
    assert!(
        st.stats[0].pids >= 1 && st.stats[0].memory_bytes > 0,
        "{st:?}"
    );
    // Kill: SIGKILL by name without the SIG prefix; the exit is 128 + 9.
    let _: ContainerState = n
        .call(
            KILL,
            &KillRequest {
                container: "web".into(),
                signal: Some("KILL".into()),
            },
        )
        .await
        .unwrap();
    let s = n
        .until("web", "exited", |s| s.status == ContainerStatus::Exited)
        .await;
    assert_eq!(s.exit_code, Some(137));
    // Start again: same container, new process.
    let s: ContainerState = n
        .call(
            START,
            &Target {
                container: "web".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(s.status, ContainerStatus::Running);
    assert_ne!(s.pid, a.pid);
    // List: running by default, all with `all`, filtered by label.
    let l: ListReply = n.call(LIST, &ListRequest::default()).await.unwrap();
    assert_eq!(l.containers.len(), 2);
    for c in ["web", b.name.as_str(), c.id.as_str()] {
        let _: ContainerState = n
            .call(
                REMOVE,
                &RemoveRequest {
                    container: c.into(),
                    force: true,
                },
            )
            .await
            .unwrap();
    }
    let l: ListReply = n
        .call(
            LIST,
            &ListRequest {
                all: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(l.containers.is_empty());
    let e = n.inspect_err("web").await;
    assert_eq!(e.remote().unwrap().code, ErrorCode::NotFound);
    assert_eq!(
        std::fs::read_dir(n.run_dir())
            .map(|d| d.count())
            .unwrap_or(0),
        0,
        "run directories removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_run_rm_returns_the_exit_code_and_cleans_up() {
    need_root!();
    let n = Node::start(fast()).await;
    let berth = berth_tests::bin("berth");
    let cli = |args: &[&str]| {
        let mut c = std::process::Command::new(&berth);
        c.args(["--nats", &n.nats.url(), "--node", &n.node]);
        c.args(args);
        c.env_remove("BERTH_NATS_CREDS");
        c
    };
    let rootfs = n.rootfs.path().display().to_string();
    let out = tokio::task::block_in_place(|| {
        cli(&[
            "run",
            "--rm",
            "--rootfs",
            &rootfs,
            "sh",
            "-c",
            "echo out; echo err >&2; exit 42",
        ])
        .output()
        .unwrap()
    });
    assert_eq!(out.status.code(), Some(42), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    let l: ListReply = n
        .call(
            LIST,
            &ListRequest {
                all: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(l.containers.is_empty(), "{l:?}");
    // The files go in the background, right after the removal: its container and run
    // directories.
    let deadline = Instant::now() + T;
    for dir in [n.data_root().join("containers"), n.run_dir()] {
        while std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0) > 0 {
            assert!(
                Instant::now() < deadline,
                "{} not emptied: {:?}",
                dir.display(),
                std::fs::read_dir(&dir)
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // What a container removed at its exit writes is never synced: its root is a volatile
    // overlay. One that stays after its exit has an ordinary one.
    let root_mount = |rm: bool| {
        let mut a = vec!["run"];
        if rm {
            a.push("--rm");
        } else {
            a.extend(["--name", "kept"]);
        }
        // Shell builtins only: this root has few applets.
        let script = r#"while read -r l; do case "$l" in "overlay / "*) echo "$l";; esac; done </proc/mounts"#;
        a.extend(["--rootfs", &rootfs, "sh", "-c", script]);
        let out = tokio::task::block_in_place(|| cli(&a).output().unwrap());
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let m = root_mount(true);
    assert!(
        m.starts_with("overlay / overlay") && m.contains("volatile"),
        "{m}"
    );
    let m = root_mount(false);
    assert!(
        m.starts_with("overlay / overlay") && !m.contains("volatile"),
        "{m}"
    );
    let out = tokio::task::block_in_place(|| cli(&["rm", "kept"]).output().unwrap());
    assert!(out.status.success(), "{out:?}");
    // Informal timing of `run --rm /bin/true` (see the benchmark for figures).
    let mut times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let out = tokio::task::block_in_place(|| {
            cli(&["run", "--rm", "--rootfs", &rootfs, "/bin/true"])
                .output()
                .unwrap()
        });
        times.push(t0.elapsed());
        assert!(out.status.success(), "{out:?}");
    }
    times.sort();
    eprintln!(
        "berth run --rm /bin/true: median {:?} (min {:?})",
        times[2], times[0]
    );
    // Detached, then ps, logs, stop, rm through the CLI.
    let out = tokio::task::block_in_place(|| {
        cli(&[
            "run",
            "-d",
            "--name",
            "bg",
            "--rootfs",
            &rootfs,
            "sh",
            "-c",
            "echo ready; exec sleep 1000",
        ])
        .output()
        .unwrap()
    });
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 64);
    n.until("bg", "running", |s| s.status == ContainerStatus::Running)
        .await;
    let out = tokio::task::block_in_place(|| cli(&["ps", "-q"]).output().unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), &id[..12]);
    let deadline = Instant::now() + T;
    loop {
        let out = tokio::task::block_in_place(|| cli(&["logs", "bg"]).output().unwrap());
        if String::from_utf8_lossy(&out.stdout) == "ready\n" {
            break;
        }
        assert!(Instant::now() < deadline, "{out:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // `logs -f` prints new lines as they come and returns when the container stops.
    let ticker = n
        .run(
            "ticker",
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.05; done",
            ],
        )
        .await;
    let mut follower = cli(&["logs", "-f", "--tail", "1", "ticker"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let _: ContainerState = n
        .call(
            STOP,
            &StopRequest {
                container: ticker.id.clone(),
                timeout_ms: Some(5000),
            },
        )
        .await
        .unwrap();
    let status = tokio::task::block_in_place(|| follower.wait().unwrap());
    assert!(status.success(), "{status:?}");
    let lines = lines.await.unwrap();
    assert!(lines.len() >= 5, "{lines:?}");
    let nums: Vec<u64> = lines
        .iter()
        .map(|l| l.trim_start_matches("tick").parse().unwrap())
        .collect();
    for w in nums.windows(2) {
        assert_eq!(w[1], w[0] + 1, "{lines:?}");
    }
    let out = tokio::task::block_in_place(|| cli(&["rm", "bg"]).output().unwrap());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("running"),
        "{out:?}"
    );
    let out = tokio::task::block_in_place(|| cli(&["rm", "-f", "bg", "ticker"]).output().unwrap());
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bg\nticker\n");
}

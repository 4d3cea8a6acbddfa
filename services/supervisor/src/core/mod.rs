//! The supervisor's state machine: containers by id and name, their records on disk, their
//! running instances (watched through the shim's pidfd), restart policies, stop/kill/remove,
//! and the recovery of all of it from disk and the run directory at start.

mod create;
mod exec;
mod exits;
mod recovery;
mod remove;
mod signals;
mod start;

use crate::error::{Result, SupervisorError};
use crate::logs::{LiveReaders, Tailer};
use crate::process::{parse_signal, PidFd};
use crate::record::Record;
use crate::settings::Settings;
use crate::{cgroup, health, merge, names};
use async_nats::jetstream::kv;
use berth_bus::{attrs, now_rfc3339, BusError, RequestOptions, ServiceContext};
use berth_proto::isolator::{self as iso, ExitStatus};
use berth_proto::layer_store::{PrepareReply, PrepareRequest, ReleaseRequest};
use berth_proto::puller::PullRequest;
use berth_proto::supervisor::*;
use berth_proto::{subjects, ErrorCode};
use futures::future::BoxFuture;
use nix::sys::signal::Signal;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::sync::{watch, Mutex};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const PREPARE_TIMEOUT: Duration = Duration::from_secs(600);
const PULL_TIMEOUT: Duration = Duration::from_secs(1800);
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
const RELEASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Prefix of a removed container's directory while it is deleted in the background.
const TRASH_PREFIX: &str = ".removed-";

/// A trash entry's name for container `id`: apart from an earlier one of the same id (an id a
/// caller chose may be used again before the janitor got to it).
fn trash_name(id: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{TRASH_PREFIX}{id}.{}.{n}", std::process::id())
}
/// How long a SIGKILLed container may take to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(30);

pub struct Supervisor {
    pub(crate) ctx: ServiceContext,
    pub(crate) settings: Settings,
    kv: kv::Store,
    table: StdMutex<Table>,
    pub(crate) tasks: TaskTracker,
    /// Cancelled on shutdown: every background task of the supervisor ends (containers live on).
    pub(crate) token: CancellationToken,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<String, Arc<Container>>,
    /// name → id; names are reserved here before the container exists.
    names: HashMap<String, String>,
}

pub struct Container {
    pub id: String,
    pub name: String,
    pub(crate) inner: Mutex<Inner>,
    /// A copy of the record as last committed, for `list`/`inspect` without waiting.
    view: StdMutex<Record>,
    /// Bumped after every processed exit and at removal.
    changed: watch::Sender<u64>,
    pub(crate) tailer: Mutex<Option<Tailer>>,
    /// Readers of its log history, which a rotation hands the rotated copy.
    pub(crate) log_readers: Arc<LiveReaders>,
}

pub(crate) struct Inner {
    pub rec: Record,
    /// The init of the running instance.
    pub init: Option<Arc<PidFd>>,
    /// Cancels the tasks of the running instance (health checks, log tail).
    pub run: Option<CancellationToken>,
    pub pending_restart: Option<CancellationToken>,
    pub removing: bool,
    pub removed: bool,
    /// Instance generation: a monitor acts only on the instance it watches.
    pub gen: u64,
    /// The root filesystem's release was sent as soon as a container to remove on exit
    /// exited (while the exit is recorded and announced): the removal does not send it again,
    /// nor wait for it (a failure is logged).
    pub release_sent: bool,
    /// A create that failed or was cut short: never announced, so neither is its removal.
    pub unannounced: bool,
}

/// A container id: 64 lowercase hexadecimal digits.
fn is_container_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn peer(name: &str, step: &str) -> impl FnOnce(BusError) -> SupervisorError {
    let name = name.to_string();
    let step = step.to_string();
    move |source| SupervisorError::Peer {
        name,
        step,
        source: Box::new(source),
    }
}

fn state_err(rec: &Record, reason: impl Into<String>) -> SupervisorError {
    SupervisorError::State {
        name: rec.state.name.clone(),
        id: rec.state.id.clone(),
        reason: reason.into(),
    }
}

fn sys_err(rec: &Record, step: &str, reason: impl std::fmt::Display) -> SupervisorError {
    SupervisorError::System {
        name: rec.state.name.clone(),
        step: step.to_string(),
        reason: reason.to_string(),
    }
}

/// A deterministic event id, so the stream drops a re-published announcement of one exit.
fn event_id(id: &str, action: &str, at: &str) -> String {
    use sha2::Digest;
    let h = sha2::Sha256::digest(format!("{id}:{action}:{at}").as_bytes());
    hex::encode(&h[..12])
}

impl Supervisor {
    pub async fn new(ctx: ServiceContext, settings: Settings) -> Result<Arc<Supervisor>> {
        let kv = berth_bus::infra::actual(&ctx.bus)
            .await
            .map_err(peer("-", "open the actual-state bucket"))?;
        let token = ctx.shutdown.child_token();
        Ok(Arc::new(Supervisor {
            ctx,
            settings,
            kv,
            table: StdMutex::new(Table::default()),
            tasks: TaskTracker::new(),
            token,
        }))
    }

    pub(crate) fn node(&self) -> &str {
        &self.ctx.config.node
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.ctx.config.container_dir(id)
    }

    fn run_dir(&self, id: &str) -> PathBuf {
        self.ctx.config.container_run_dir(id)
    }

    // ----- lookup ---------------------------------------------------------------------------

    /// Full id, name, or a unique id prefix.
    pub fn resolve(&self, given: &str) -> Result<Arc<Container>> {
        let t = self.table.lock().unwrap();
        if let Some(c) = t.by_id.get(given) {
            return Ok(c.clone());
        }
        if let Some(c) = t.names.get(given).and_then(|id| t.by_id.get(id)) {
            return Ok(c.clone());
        }
        if !given.is_empty() && given.chars().all(|c| c.is_ascii_hexdigit()) {
            let m: Vec<&Arc<Container>> = t
                .by_id
                .iter()
                .filter(|(id, _)| id.starts_with(given))
                .map(|(_, c)| c)
                .collect();
            match m.len() {
                1 => return Ok(m[0].clone()),
                0 => {}
                _ => {
                    return Err(SupervisorError::Ambiguous {
                        given: given.to_string(),
                        matches: m
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
                }
            }
        }
        Err(SupervisorError::NotFound(given.to_string()))
    }

    pub fn all(&self) -> Vec<Arc<Container>> {
        self.table.lock().unwrap().by_id.values().cloned().collect()
    }

    pub fn view(c: &Container) -> Record {
        c.view.lock().unwrap().clone()
    }

    fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let mut t = self.table.lock().unwrap();
        if let Some(other) = t.names.get(name) {
            return Err(SupervisorError::NameInUse {
                name: name.to_string(),
                id: other.clone(),
            });
        }
        t.names.insert(name.to_string(), id.to_string());
        Ok(())
    }

    fn release_name(&self, name: &str, id: &str) {
        let mut t = self.table.lock().unwrap();
        if t.names.get(name).map(String::as_str) == Some(id) {
            t.names.remove(name);
        }
    }

    fn insert(&self, rec: Record) -> Arc<Container> {
        let c = Arc::new(Container {
            id: rec.state.id.clone(),
            name: rec.state.name.clone(),
            view: StdMutex::new(rec.clone()),
            inner: Mutex::new(Inner {
                rec,
                init: None,
                run: None,
                pending_restart: None,
                removing: false,
                removed: false,
                gen: 0,
                release_sent: false,
                unannounced: false,
            }),
            changed: watch::channel(0).0,
            tailer: Mutex::new(None),
            log_readers: Arc::default(),
        });
        let mut t = self.table.lock().unwrap();
        t.names.insert(c.name.clone(), c.id.clone());
        t.by_id.insert(c.id.clone(), c.clone());
        c
    }

    // ----- persistence and announcements -----------------------------------------------------

    /// Save the record, refresh the view and the actual-state bucket.
    async fn commit(&self, c: &Container, inner: &Inner) -> Result<()> {
        self.save(c, inner)?;
        self.publish_state(&inner.rec.state).await;
        Ok(())
    }

    /// Sync the record of `id` to disk, on a blocking thread.
    fn sync_record(&self, id: &str) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let dir = self.dir(id);
        tokio::task::spawn_blocking(move || crate::record::Record::sync(&dir))
    }

    /// Save the record and refresh the view (what `commit` does on this node).
    fn save(&self, c: &Container, inner: &Inner) -> Result<()> {
        let dir = self.dir(&c.id);
        inner
            .rec
            .save(&dir, false)
            .map_err(|e| SupervisorError::io("save the record in", &dir, e))?;
        *c.view.lock().unwrap() = inner.rec.clone();
        Ok(())
    }

    async fn publish_state(&self, st: &ContainerState) {
        let key = subjects::actual_key(self.node(), &st.id);
        let v = serde_json::to_vec(st).expect("states serialize");
        if let Err(e) = self.ctx.bus.kv_send(&self.kv, &key, Some(v.into())).await {
            tracing::warn!(%e, key, "actual state not stored");
        }
    }

    async fn emit(
        &self,
        rec: &Record,
        action: &str,
        extra: Map<String, Value>,
        id: Option<String>,
    ) {
        let mut a = attrs! {"id" => rec.state.id, "image" => rec.state.image};
        if !rec.state.labels.is_empty() {
            a.insert("labels".into(), serde_json::json!(rec.state.labels));
        }
        a.extend(extra);
        let mut ev = self.ctx.bus.event(EV_ENTITY, action, &rec.state.name, a);
        if let Some(id) = id {
            ev.id = id;
        }
        if let Err(e) = self.ctx.bus.send_event(&ev).await {
            tracing::warn!(%e, action, name = %rec.state.name, "event not published");
        }
    }

    async fn publish_log(&self, id: &str, m: &LogMessage) {
        let subject = logs_subject(self.node(), id);
        let payload = serde_json::to_vec(m).expect("log messages serialize");
        if let Err(e) = self.ctx.bus.client().publish(subject, payload.into()).await {
            tracing::debug!(%e, "log message not published");
        }
    }
}

/// A container created and started in one request whose process was never released (as far
/// as its record says): `created` is announced with the process, once the create is done.
fn never_announced(rec: &Record) -> bool {
    rec.state.status == ContainerStatus::Created && rec.request.start
}

fn read_pid(p: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn read_exit(run_dir: &std::path::Path) -> Option<ExitStatus> {
    let b = std::fs::read(run_dir.join(iso::EXIT_FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// The shim of `id` if it still runs: its pidfd, after checking that the pid is really that
/// shim (`iso::is_shim_of`), not a recycled pid.
fn live_shim(run_dir: &std::path::Path) -> Option<PidFd> {
    let pid = read_pid(&run_dir.join(iso::SHIM_PID_FILE))?;
    let fd = PidFd::open(pid).ok()?;
    if !iso::is_shim_of(pid, run_dir) || fd.exited() {
        return None;
    }
    Some(fd)
}

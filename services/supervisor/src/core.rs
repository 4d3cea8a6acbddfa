//! The supervisor's state machine: containers by id and name, their records on disk, their
//! running instances (watched through the shim's pidfd), restart policies, stop/kill/remove,
//! and the recovery of all of it from disk and the run directory at start.

use crate::error::{Result, SupervisorError};
use crate::logs::{LiveReaders, Tailer};
use crate::process::{parse_signal, PidFd};
use crate::record::Record;
use crate::settings::Settings;
use crate::{cgroup, health, merge, names};
use async_nats::jetstream::kv;
use berth_bus::{attrs, now_rfc3339, BusError, RequestOptions, ServiceContext};
use berth_proto::isolator::{self as iso, ExitStatus};
use berth_proto::layer_store::{self as ls, PrepareReply, PrepareRequest, ReleaseRequest};
use berth_proto::puller::{PullReply, PullRequest, PULL};
use berth_proto::supervisor::*;
use berth_proto::{subjects, ErrorCode, Service};
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

    // ----- create -----------------------------------------------------------------------------

    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<ContainerState> {
        // Everything that can be checked before pulling or preparing anything (the same checks
        // `berth plan` and `apply` run on a spec; berth_proto::validate). Among them, as
        // Docker refuses it: a container removed at its exit is never restarted (and its
        // volatile root filesystem could not be mounted again).
        berth_proto::validate::create_request(&req)
            .map_err(|e| SupervisorError::invalid(e.field, e.reason))?;
        let id = match &req.id {
            None => berth_bus::random_hex(64),
            Some(id) => {
                if !is_container_id(id) {
                    return Err(SupervisorError::invalid(
                        "id",
                        format!("{id:?} is not 64 lowercase hexadecimal digits"),
                    ));
                }
                if self.table.lock().unwrap().by_id.contains_key(id) || self.dir(id).exists() {
                    return Err(SupervisorError::invalid(
                        "id",
                        format!("a container with id {id} exists already"),
                    ));
                }
                id.clone()
            }
        };
        let name = match &req.name {
            Some(n) => {
                names::check_name(n).map_err(|e| SupervisorError::invalid("name", e))?;
                self.reserve_name(n, &id)?;
                n.clone()
            }
            None => loop {
                let n = names::random_name();
                if self.reserve_name(&n, &id).is_ok() {
                    break n;
                }
            },
        };
        match self.create_reserved(&id, &name, req).await {
            Ok(s) => Ok(s),
            Err(e) => {
                if self.resolve(&id).is_err() {
                    self.release_name(&name, &id);
                }
                Err(e)
            }
        }
    }

    async fn prepare(
        &self,
        id: &str,
        name: &str,
        image: &str,
        volatile: bool,
    ) -> Result<PrepareReply> {
        let req = PrepareRequest {
            container_id: id.to_string(),
            image: image.to_string(),
            volatile,
        };
        let opts = RequestOptions::mutating(PREPARE_TIMEOUT);
        match self
            .ctx
            .bus
            .call::<_, PrepareReply>(Service::LayerStore, ls::PREPARE, &req, &opts)
            .await
        {
            Err(e) if e.remote().map(|r| r.code) == Some(ErrorCode::NotFound) => {
                tracing::info!(image, "image not on this node: pulling it");
                let pull = PullRequest {
                    reference: image.to_string(),
                    platform: None,
                    pull_id: None,
                };
                self.ctx
                    .bus
                    .call::<_, PullReply>(
                        Service::Puller,
                        PULL,
                        &pull,
                        &RequestOptions::mutating(PULL_TIMEOUT),
                    )
                    .await
                    .map_err(peer(name, &format!("pulling image {image}")))?;
                self.ctx
                    .bus
                    .call(Service::LayerStore, ls::PREPARE, &req, &opts)
                    .await
                    .map_err(peer(name, "preparing the root filesystem"))
            }
            r => r.map_err(peer(name, "preparing the root filesystem")),
        }
    }

    async fn create_reserved(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        req: CreateRequest,
    ) -> Result<ContainerState> {
        let mut req = req;
        if let Some(s) = &req.options.stop_signal {
            parse_signal(s).map_err(|e| SupervisorError::invalid("stop signal", e))?;
        }
        // `container:NAME` may name the container, or a prefix of its id: the isolator wants
        // the id.
        if let iso::NetworkMode::Container(other) = &req.options.network {
            let c = self.resolve(other).map_err(|_| {
                SupervisorError::invalid(
                    "network",
                    format!("container:{other}: no such container to share the network of"),
                )
            })?;
            req.options.network = iso::NetworkMode::Container(c.id.clone());
        }
        let prepared = match &req.rootfs {
            Some(dir) => {
                let p = PathBuf::from(dir);
                if !p.is_absolute() || !p.is_dir() {
                    return Err(SupervisorError::invalid(
                        "rootfs",
                        format!("{dir:?} is not an absolute path to a directory"),
                    ));
                }
                if req.image.is_empty() {
                    req.image = dir.clone();
                }
                let cdir = self.dir(id);
                let (upper, work) = (cdir.join("upper"), cdir.join("work"));
                for d in [&upper, &work] {
                    std::fs::create_dir_all(d).map_err(|e| SupervisorError::io("create", d, e))?;
                }
                PrepareReply {
                    rootfs: iso::RootfsMount {
                        lowerdirs: vec![dir.clone()],
                        upperdir: upper.display().to_string(),
                        workdir: work.display().to_string(),
                        volatile: req.auto_remove,
                    },
                    image_digest: String::new(),
                    config: Default::default(),
                }
            }
            None if req.image.is_empty() => {
                return Err(SupervisorError::invalid("image", "no image given"))
            }
            // What a container removed at its exit writes is thrown away: never synced.
            None => self.prepare(id, name, &req.image, req.auto_remove).await?,
        };
        let built = (|| {
            let hc = merge::healthcheck(
                req.healthcheck.as_ref(),
                prepared.config.healthcheck.as_ref(),
            )
            .map_err(|e| SupervisorError::invalid("healthcheck", e))?;
            let spec = merge::spec(id, name, &req, &prepared.image_digest, &prepared.config)
                .map_err(|e| SupervisorError::invalid("container", e))?;
            if let Some(s) = &spec.stop_signal {
                parse_signal(s).map_err(|e| SupervisorError::invalid("image stop signal", e))?;
            }
            Ok::<_, SupervisorError>((hc, spec))
        })();
        let (hc, spec) = match built {
            Ok(x) => x,
            Err(e) => {
                self.discard_rootfs(id, name, &req).await;
                return Err(e);
            }
        };
        let state = ContainerState {
            id: id.to_string(),
            name: name.to_string(),
            node: self.node().to_string(),
            image: req.image.clone(),
            image_digest: prepared.image_digest.clone(),
            args: spec.args.clone(),
            status: ContainerStatus::Created,
            pid: None,
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            restart_count: 0,
            health: None,
            labels: spec.labels.clone(),
            restart: req.restart,
            error: None,
        };
        let rec = Record {
            stop_signal: spec
                .stop_signal
                .clone()
                .unwrap_or_else(|| merge::DEFAULT_STOP_SIGNAL.into()),
            stop_grace_period_ms: req
                .options
                .stop_grace_period_ms
                .unwrap_or(self.settings.stop_grace_period_ms),
            request: req,
            spec,
            rootfs: prepared.rootfs,
            healthcheck: hc,
            state,
            manually_stopped: false,
            exit_reported: true,
            backoff_step: 0,
        };
        // Synced now, or (created and started at once) by the start, while the isolator works.
        // Never for a container removed at its exit: after a power loss, recovery finds its
        // directory without a record and removes it (`sweep_orphans`).
        let start = rec.request.start;
        if let Err(e) = rec.save(&self.dir(id), !start && !rec.request.auto_remove) {
            self.discard_rootfs(id, name, &rec.request).await;
            return Err(SupervisorError::io("save the record in", &self.dir(id), e));
        }
        let c = self.insert(rec);
        let mut inner = c.inner.lock().await;
        if !start {
            tokio::join!(
                self.publish_state(&inner.rec.state),
                self.emit(&inner.rec, EV_CREATED, Map::new(), None)
            );
            return Ok(inner.rec.state.clone());
        }
        // Created and started in one request: `created` is announced once its process
        // exists (with the shim's and the init's pids), just before `started`.
        self.publish_state(&inner.rec.state).await;
        if let Err(e) = self.start_instance(&c, &mut inner, true).await {
            // A failed create leaves nothing: whatever its start made (a process, a cgroup,
            // files, the root filesystem) goes with the record, unannounced.
            inner.unannounced = true;
            drop(inner);
            if let Err(r) = self.remove(&c, true).await {
                tracing::warn!(%r, id = %c.id, "what a failed create made is not all removed");
            }
            return Err(e);
        }
        Ok(inner.rec.state.clone())
    }

    /// Undo a prepared root filesystem of a container that will not exist after all.
    async fn discard_rootfs(&self, id: &str, name: &str, req: &CreateRequest) {
        if req.rootfs.is_none() {
            self.release_rootfs(id, name).await;
        }
        let _ = std::fs::remove_dir_all(self.dir(id));
    }

    async fn release_rootfs(&self, id: &str, name: &str) -> Option<SupervisorError> {
        match self.ask_release(id).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(%e, id, "releasing the root filesystem failed");
                Some(peer(name, "releasing the root filesystem")(e))
            }
        }
    }

    /// Ask the layer-store to release a container's root filesystem (none there: done).
    async fn ask_release(&self, id: &str) -> std::result::Result<(), BusError> {
        let r = self
            .ctx
            .bus
            .call::<_, Value>(
                Service::LayerStore,
                ls::RELEASE,
                &ReleaseRequest {
                    container_id: id.to_string(),
                },
                &RequestOptions::mutating(RELEASE_TIMEOUT),
            )
            .await;
        match r {
            Err(e) if e.remote().map(|r| r.code) == Some(ErrorCode::NotFound) => Ok(()),
            r => r.map(drop),
        }
    }

    // ----- start ------------------------------------------------------------------------------

    pub async fn start(self: &Arc<Self>, c: &Arc<Container>) -> Result<ContainerState> {
        let mut inner = c.inner.lock().await;
        if inner.removing || inner.removed {
            return Err(state_err(&inner.rec, "is being removed"));
        }
        if inner.rec.state.status.is_alive() {
            return Ok(inner.rec.state.clone());
        }
        if let Some(t) = inner.pending_restart.take() {
            t.cancel();
        }
        inner.rec.manually_stopped = false;
        inner.rec.backoff_step = 0;
        if let Err(e) = self.start_instance(c, &mut inner, false).await {
            inner.rec.state.error = Some(e.to_string());
            if inner.rec.state.status == ContainerStatus::Restarting {
                inner.rec.state.status = ContainerStatus::Exited;
            }
            let _ = self.commit(c, &inner).await;
            return Err(e);
        }
        Ok(inner.rec.state.clone())
    }

    /// Create the container's process through the isolator, release it, and watch it.
    /// `unsynced`: the record was saved without syncing (a create that also starts): it is
    /// synced while the isolator makes the process, which is released only once it is on disk.
    /// A container removed at its exit has nothing to put on disk first: the isolator releases
    /// it as soon as it is set up, and it may have ended by the time the reply comes.
    async fn start_instance(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        unsynced: bool,
    ) -> Result<()> {
        let run_dir = self.run_dir(&c.id);
        // What is left is the previous instance's, whose exit has been processed.
        match std::fs::remove_dir_all(&run_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(SupervisorError::io("clear the run directory", &run_dir, e)),
        }
        let at_once = inner.rec.request.auto_remove;
        let synced = (unsynced && !at_once).then(|| self.sync_record(&c.id));
        // Where this instance's output starts: released at once, it may write (and end)
        // before its tailer exists.
        let log_from = crate::logs::log_end(&self.dir(&c.id));
        let reply: iso::CreateReply = self
            .ctx
            .bus
            .call(
                Service::Isolator,
                iso::CREATE,
                &iso::CreateRequest {
                    spec: inner.rec.spec.clone(),
                    rootfs: inner.rec.rootfs.clone(),
                    release: at_once,
                },
                &RequestOptions::mutating(CREATE_TIMEOUT),
            )
            .await
            .map_err(peer(&c.name, "creating the container's process"))?;
        if let Some(h) = synced {
            if let Err(e) = h.await.map_err(std::io::Error::other).and_then(|r| r) {
                // The process exists but must not run without its record on disk: it ends
                // before it was released, and its shim with it.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(reply.init_pid as i32),
                    Signal::SIGKILL,
                );
                return Err(SupervisorError::io(
                    "sync the record in",
                    &self.dir(&c.id),
                    e,
                ));
            }
        }
        let shim = PidFd::open(reply.shim_pid).ok();
        inner.init = PidFd::open(reply.init_pid).ok().map(Arc::new);
        inner.gen += 1;
        *c.tailer.lock().await = Some(Tailer::starting_at(
            &self.dir(&c.id),
            logs_subject(self.node(), &c.id),
            (self.settings.log_max_bytes, self.settings.log_max_files),
            c.log_readers.clone(),
            log_from,
        ));
        let st = &mut inner.rec.state;
        st.status = ContainerStatus::Running;
        st.pid = Some(reply.init_pid);
        st.started_at = Some(now_rfc3339());
        st.finished_at = None;
        st.exit_code = None;
        st.oom_killed = false;
        st.error = None;
        st.health = inner.rec.healthcheck.as_ref().map(|_| HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: Vec::new(),
        });
        // Released at once, then saved; the bus hears of it meanwhile. The record synced at
        // create is on disk: a supervisor that dies before this save finds the shim alive
        // (or its exit) and adopts the container as running.
        if !at_once {
            if let Err(e) = iso::release_start(&run_dir) {
                tracing::warn!(%e, id = %c.id, "the container could not be released");
            }
        }
        if at_once {
            // Nothing on disk needs it: recovery adopts a live shim (or processes its exit)
            // whatever state the record was saved in.
            self.refresh_view(c, inner);
        } else if let Err(e) = self.save(c, inner) {
            tracing::error!(%e, id = %c.id, "the running state is not recorded");
        }
        self.watch_instance(c, inner, shim);
        if unsynced {
            // The first instance of a container created and started in one request.
            self.emit(
                &inner.rec,
                EV_CREATED,
                attrs! {"shim_pid" => reply.shim_pid, "init_pid" => reply.init_pid},
                None,
            )
            .await;
        }
        tokio::join!(
            self.publish_state(&inner.rec.state),
            self.emit(
                &inner.rec,
                EV_STARTED,
                attrs! {"pid" => reply.init_pid},
                None,
            )
        );
        Ok(())
    }

    /// Spawn the tasks of a running instance: exit watch, log tail, health checks.
    fn watch_instance(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        shim: Option<PidFd>,
    ) {
        let run = self.token.child_token();
        inner.run = Some(run.clone());
        let gen = inner.gen;
        self.tasks.spawn(self.clone().monitor(c.clone(), shim, gen));
        let (sup, c2, run2) = (self.clone(), c.clone(), run.clone());
        self.tasks.spawn(async move {
            let every = Duration::from_millis(sup.settings.log_poll_ms.max(10));
            loop {
                tokio::select! {
                    _ = run2.cancelled() => return,
                    _ = tokio::time::sleep(every) => {}
                }
                if let Some(t) = c2.tailer.lock().await.as_mut() {
                    t.poll(sup.ctx.bus.client()).await;
                }
            }
        });
        if let Some(hc) = inner.rec.healthcheck.clone() {
            self.tasks
                .spawn(health::checker(self.clone(), c.clone(), hc, gen, run));
        }
    }

    fn monitor(
        self: Arc<Self>,
        c: Arc<Container>,
        shim: Option<PidFd>,
        gen: u64,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            if let Some(shim) = shim {
                tokio::select! {
                    _ = self.token.cancelled() => return,
                    r = shim.wait() => if let Err(e) = r {
                        tracing::warn!(%e, id = %c.id, "waiting on the shim failed");
                    },
                }
            }
            let mut inner = c.inner.lock().await;
            if inner.gen != gen || !inner.rec.state.status.is_alive() {
                return;
            }
            let status = read_exit(&self.run_dir(&c.id));
            self.process_exit(&c, &mut inner, status).await;
        })
    }

    // ----- exits and restart policies ---------------------------------------------------------

    /// Record an exit (or a lost one: `None`), announce it once, and apply the restart policy.
    async fn process_exit(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        status: Option<ExitStatus>,
    ) {
        if let Some(t) = inner.run.take() {
            t.cancel();
        }
        inner.init = None;
        if let Some(t) = c.tailer.lock().await.as_mut() {
            t.poll(self.ctx.bus.client()).await;
        }
        let lost = status.is_none();
        if lost {
            // The shim is gone without recording the exit: what it started may still run,
            // re-parented away. Nothing of a container given up on keeps running.
            self.end_processes(&c.id).await;
        }
        let (code, oom, finished) = match &status {
            Some(s) => (s.exit_code, s.oom_killed, s.finished_at.clone()),
            None => (255, false, now_rfc3339()),
        };
        let rec = &mut inner.rec;
        let decision = crate::restart::decide(
            &crate::restart::Exit {
                policy: &rec.request.restart,
                exit_code: code,
                ran: crate::restart::run_length(rec.state.started_at.as_deref(), &finished),
                restart_count: rec.state.restart_count,
                backoff_step: rec.backoff_step,
                manually_stopped: rec.manually_stopped,
                removing: inner.removing,
            },
            &self.settings,
        );
        let restart = decision.restart;
        rec.backoff_step = decision.backoff_step;
        if !restart
            && rec.request.auto_remove
            && rec.request.rootfs.is_none()
            && !inner.release_sent
        {
            inner.release_sent = true;
            let (sup, id, name) = (self.clone(), c.id.clone(), c.name.clone());
            self.tasks
                .spawn(async move { sup.release_rootfs(&id, &name).await });
        }
        let rec = &mut inner.rec;
        rec.state.pid = None;
        rec.state.exit_code = Some(code);
        rec.state.oom_killed = oom;
        rec.state.finished_at = Some(finished.clone());
        if lost {
            rec.state.error = Some("the shim ended without recording the exit status".into());
        }
        rec.state.status = if restart {
            ContainerStatus::Restarting
        } else if lost {
            ContainerStatus::Dead
        } else {
            ContainerStatus::Exited
        };
        rec.exit_reported = false;
        let delay = decision.delay;
        // A container removed at its exit goes now: its record stays as it was saved at the
        // create (recovery finishes the removal), and its followers hear of the exit once it
        // is removed, in one message.
        let remove_now = !restart && inner.rec.request.auto_remove && !inner.removing;
        if remove_now {
            self.refresh_view(c, inner);
            self.publish_state(&inner.rec.state).await;
        } else if let Err(e) = self.commit(c, inner).await {
            tracing::error!(%e, "exit not recorded");
        }
        let exited = move |removed| LogMessage::Exited {
            exit_code: code,
            oom_killed: oom,
            restarting: restart,
            removed,
        };
        if !remove_now {
            self.publish_log(&c.id, &exited(false)).await;
        }
        *c.tailer.lock().await = None;
        self.announce_exit(c, inner).await;
        if !remove_now {
            // (The removal takes it out of the way.)
            let _ = std::fs::remove_dir_all(self.run_dir(&c.id));
        }
        c.changed.send_modify(|g| *g += 1);
        if restart {
            self.schedule_restart(c, inner, delay).await;
        } else if remove_now {
            let (sup, c2) = (self.clone(), c.clone());
            self.tasks.spawn(async move {
                let removed = sup.remove(&c2, false).await;
                if let Err(e) = &removed {
                    tracing::warn!(%e, "automatic removal failed");
                }
                sup.publish_log(&c2.id, &exited(removed.is_ok())).await;
            });
        }
    }

    /// Publish the `exited` event of the exit in the record (once: its id is derived from the
    /// exit), then mark it announced.
    async fn announce_exit(&self, c: &Container, inner: &mut Inner) {
        let rec = &inner.rec;
        let at = rec.state.finished_at.clone().unwrap_or_default();
        let mut a = attrs! {
            "exit_code" => rec.state.exit_code,
            "oom_killed" => rec.state.oom_killed,
            "restart_count" => rec.state.restart_count,
        };
        if let Some(e) = &rec.state.error {
            a.insert("error".into(), Value::String(e.clone()));
        }
        self.emit(rec, EV_EXITED, a, Some(event_id(&c.id, EV_EXITED, &at)))
            .await;
        if rec.state.oom_killed {
            self.emit(rec, "oom", Map::new(), Some(event_id(&c.id, "oom", &at)))
                .await;
        }
        inner.rec.exit_reported = true;
        if inner.rec.request.auto_remove {
            // Its removal follows, and the record on disk stays as the create saved it: an
            // announcement made again after a supervisor's death has the same id, and the
            // events stream drops it as a duplicate.
            self.refresh_view(c, inner);
            return;
        }
        let dir = self.dir(&c.id);
        if let Err(e) = inner.rec.save(&dir, false) {
            tracing::warn!(%e, dir = %dir.display(), "record not saved");
        }
    }

    async fn schedule_restart(
        self: &Arc<Self>,
        c: &Arc<Container>,
        inner: &mut Inner,
        delay: Duration,
    ) {
        let tok = self.token.child_token();
        inner.pending_restart = Some(tok.clone());
        self.emit(
            &inner.rec,
            EV_RESTARTING,
            attrs! {"restart_count" => inner.rec.state.restart_count + 1, "delay_ms" => delay.as_millis() as u64},
            None,
        )
        .await;
        self.tasks
            .spawn(self.clone().delayed_restart(c.clone(), tok, delay));
    }

    fn delayed_restart(
        self: Arc<Self>,
        c: Arc<Container>,
        tok: CancellationToken,
        delay: Duration,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            tokio::select! {
                _ = tok.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            let mut inner = c.inner.lock().await;
            if tok.is_cancelled()
                || inner.removing
                || inner.rec.state.status != ContainerStatus::Restarting
            {
                return;
            }
            inner.pending_restart = None;
            inner.rec.state.restart_count += 1;
            if let Err(e) = self.start_instance(&c, &mut inner, false).await {
                tracing::warn!(%e, id = %c.id, "restart failed");
                // A failed start counts as a failed run: the policy decides again.
                inner.rec.state.status = ContainerStatus::Running;
                let status = ExitStatus {
                    exit_code: 255,
                    signal: None,
                    oom_killed: false,
                    finished_at: now_rfc3339(),
                };
                self.process_exit(&c, &mut inner, Some(status)).await;
                inner.rec.state.error = Some(e.to_string());
                let _ = self.commit(&c, &inner).await;
            }
        })
    }

    // ----- stop, kill, restart, pause ---------------------------------------------------------

    /// Signal the init. Without a pidfd the init had ended already when the supervisor
    /// looked (its exit is on the way): nothing to signal.
    fn signal(&self, inner: &Inner, sig: Signal) -> Result<()> {
        let Some(init) = &inner.init else {
            return Ok(());
        };
        init.signal(sig)
            .map_err(|e| sys_err(&inner.rec, &format!("sending {sig}"), e))
    }

    /// Stop: the stop signal, then SIGKILL after the grace period. `manual` keeps the restart
    /// policy from starting it again.
    pub async fn stop(
        self: &Arc<Self>,
        c: &Arc<Container>,
        timeout_ms: Option<u64>,
        manual: bool,
    ) -> Result<ContainerState> {
        let (mut rx, grace) = {
            let mut inner = c.inner.lock().await;
            if manual && !inner.rec.manually_stopped {
                inner.rec.manually_stopped = true;
                self.commit(c, &inner).await?;
            }
            match inner.rec.state.status {
                ContainerStatus::Restarting => {
                    if let Some(t) = inner.pending_restart.take() {
                        t.cancel();
                    }
                    inner.rec.state.status = ContainerStatus::Exited;
                    self.commit(c, &inner).await?;
                    c.changed.send_modify(|g| *g += 1);
                    return Ok(inner.rec.state.clone());
                }
                s if !s.is_alive() => return Ok(inner.rec.state.clone()),
                _ => {}
            }
            let rx = c.changed.subscribe();
            let sig = parse_signal(&inner.rec.stop_signal).unwrap_or(Signal::SIGTERM);
            self.signal(&inner, sig)?;
            if inner.rec.state.status == ContainerStatus::Paused {
                self.set_frozen(c, &mut inner, false).await?;
            }
            self.emit(
                &inner.rec,
                EV_KILLED,
                attrs! {"signal" => sig.as_str()},
                None,
            )
            .await;
            (
                rx,
                Duration::from_millis(timeout_ms.unwrap_or(inner.rec.stop_grace_period_ms)),
            )
        };
        if tokio::time::timeout(grace, rx.changed()).await.is_err() {
            {
                let inner = c.inner.lock().await;
                if inner.rec.state.status.is_alive() {
                    self.signal(&inner, Signal::SIGKILL)?;
                    self.emit(&inner.rec, EV_KILLED, attrs! {"signal" => "SIGKILL"}, None)
                        .await;
                }
            }
            if tokio::time::timeout(KILL_WAIT, rx.changed()).await.is_err() {
                let inner = c.inner.lock().await;
                if inner.rec.state.status.is_alive() {
                    return Err(state_err(
                        &inner.rec,
                        format!("still running {KILL_WAIT:?} after SIGKILL"),
                    ));
                }
            }
        }
        Ok(Self::view(c).state)
    }

    pub async fn kill(self: &Arc<Self>, c: &Arc<Container>, signal: Option<&str>) -> Result<()> {
        let sig = match signal {
            Some(s) => parse_signal(s).map_err(|e| SupervisorError::invalid("signal", e))?,
            None => Signal::SIGKILL,
        };
        let mut inner = c.inner.lock().await;
        if !inner.rec.state.status.is_alive() {
            return Err(state_err(&inner.rec, "is not running"));
        }
        let paused = inner.rec.state.status == ContainerStatus::Paused;
        if paused && sig != Signal::SIGKILL {
            return Err(state_err(&inner.rec, "is paused: unpause it first"));
        }
        self.signal(&inner, sig)?;
        if paused {
            self.set_frozen(c, &mut inner, false).await?;
        }
        self.emit(
            &inner.rec,
            EV_KILLED,
            attrs! {"signal" => sig.as_str()},
            None,
        )
        .await;
        Ok(())
    }

    pub async fn restart(
        self: &Arc<Self>,
        c: &Arc<Container>,
        timeout_ms: Option<u64>,
    ) -> Result<ContainerState> {
        self.stop(c, timeout_ms, true).await?;
        self.start(c).await
    }

    /// Stop then start, counted as a restart (the health action `restart`).
    pub(crate) async fn restart_counted(self: &Arc<Self>, c: &Arc<Container>) -> Result<()> {
        self.stop(c, None, true).await?;
        {
            let mut inner = c.inner.lock().await;
            inner.rec.state.restart_count += 1;
        }
        self.start(c).await.map(|_| ())
    }

    async fn set_frozen(&self, c: &Container, inner: &mut Inner, frozen: bool) -> Result<()> {
        let pid = inner
            .rec
            .state
            .pid
            .ok_or_else(|| state_err(&inner.rec, "has no process"))?;
        let cg = cgroup::of_pid(pid).map_err(|e| sys_err(&inner.rec, "finding its cgroup", e))?;
        cg.freeze(frozen)
            .await
            .map_err(|e| sys_err(&inner.rec, if frozen { "freezing" } else { "thawing" }, e))?;
        inner.rec.state.status = if frozen {
            ContainerStatus::Paused
        } else {
            ContainerStatus::Running
        };
        self.commit(c, inner).await?;
        let action = if frozen { EV_PAUSED } else { EV_UNPAUSED };
        self.emit(&inner.rec, action, Map::new(), None).await;
        Ok(())
    }

    pub async fn pause(&self, c: &Container, frozen: bool) -> Result<ContainerState> {
        let mut inner = c.inner.lock().await;
        let want = if frozen {
            ContainerStatus::Running
        } else {
            ContainerStatus::Paused
        };
        if inner.rec.state.status != want {
            return Err(state_err(
                &inner.rec,
                format!(
                    "is {}, not {}",
                    inner.rec.state.status.as_str(),
                    want.as_str()
                ),
            ));
        }
        self.set_frozen(c, &mut inner, frozen).await?;
        Ok(inner.rec.state.clone())
    }

    // ----- remove -----------------------------------------------------------------------------

    pub async fn remove(self: &Arc<Self>, c: &Arc<Container>, force: bool) -> Result<()> {
        let rx = {
            let mut inner = c.inner.lock().await;
            if inner.removed {
                return Ok(());
            }
            if inner.removing {
                return Err(state_err(&inner.rec, "is already being removed"));
            }
            if inner.rec.state.status.is_alive() && !force {
                return Err(state_err(
                    &inner.rec,
                    "is running: stop it first, or force the removal",
                ));
            }
            if let Some(t) = inner.pending_restart.take() {
                t.cancel();
            }
            inner.removing = true;
            if inner.rec.state.status.is_alive() {
                let rx = c.changed.subscribe();
                self.signal(&inner, Signal::SIGKILL)?;
                if inner.rec.state.status == ContainerStatus::Paused {
                    let _ = self.set_frozen(c, &mut inner, false).await;
                }
                Some(rx)
            } else {
                None
            }
        };
        if let Some(mut rx) = rx {
            if tokio::time::timeout(KILL_WAIT, rx.changed()).await.is_err() {
                let mut inner = c.inner.lock().await;
                inner.removing = false;
                return Err(state_err(
                    &inner.rec,
                    format!("still running {KILL_WAIT:?} after SIGKILL"),
                ));
            }
        }
        let mut inner = c.inner.lock().await;
        if let Err(e) = self.end_processes_checked(&c.id).await {
            inner.removing = false;
            return Err(sys_err(&inner.rec, "ending its processes", e));
        }
        if inner.rec.request.rootfs.is_none() {
            // The release sent at the exit of a container removed at its exit finishes on its
            // own: whatever of the root filesystem is still in the container's directory goes
            // with it below, and the layer-store drops a record without its upper dir at its
            // next start.
            let released = if std::mem::take(&mut inner.release_sent) {
                None
            } else {
                self.release_rootfs(&c.id, &c.name).await
            };
            if let Some(e) = released {
                inner.removing = false;
                return Err(e);
            }
        }
        // Out of the way at once (one rename each), deleted later at the lowest priority
        // (`berth_files::janitor`); what is left of them is swept at the next start.
        let run_dir = self.run_dir(&c.id);
        let run_trash = self.ctx.config.run_dir.join(trash_name(&c.id));
        match std::fs::rename(&run_dir, &run_trash) {
            Ok(()) => berth_files::janitor::remove_later([run_trash]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => {
                let _ = std::fs::remove_dir_all(&run_dir);
            }
        }
        let dir = self.dir(&c.id);
        let trash = self.ctx.config.containers_dir().join(trash_name(&c.id));
        match std::fs::rename(&dir, &trash) {
            Ok(()) => berth_files::janitor::remove_later([trash]),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                inner.removing = false;
                return Err(SupervisorError::io("remove", &dir, e));
            }
        }
        let key = subjects::actual_key(self.node(), &c.id);
        if let Err(e) = self.ctx.bus.kv_send(&self.kv, &key, None).await {
            tracing::warn!(%e, key, "actual state not deleted");
        }
        {
            let mut t = self.table.lock().unwrap();
            t.by_id.remove(&c.id);
            if t.names.get(&c.name) == Some(&c.id) {
                t.names.remove(&c.name);
            }
        }
        inner.removed = true;
        if !inner.unannounced {
            self.emit(&inner.rec, EV_REMOVED, Map::new(), None).await;
        }
        c.changed.send_modify(|g| *g += 1);
        Ok(())
    }

    /// End whatever container `id` has left in the kernel: every process of its cgroup
    /// (frozen and killed, so none forks meanwhile) and the cgroup itself, and a shim still
    /// there (which records the exit and goes once its init is killed; SIGKILL after a few
    /// seconds). Returns how many processes the cgroup held.
    async fn end_processes_checked(&self, id: &str) -> std::result::Result<usize, String> {
        let run_dir = self.run_dir(id);
        let shim = live_shim(&run_dir);
        let cid = id.to_string();
        let n = tokio::task::spawn_blocking(move || {
            let Some(cg) = crate::orphans::cgroup_of(&cid)? else {
                return Ok(0);
            };
            let n = cg
                .kill_all(crate::orphans::KILL_WITHIN)
                .map_err(|e| e.to_string())?;
            if n == 0 {
                // Nothing ran in it (the usual case: the container's processes ended with its
                // init). Its shim's child is removing it; removing a v1 cgroup may wait an RCU
                // grace period, which no reply waits for. Only this directory is removed (by
                // inode): the next instance of the container may take the name meanwhile.
                let ids = cg.identify();
                tokio::task::spawn_blocking(move || {
                    let _ = cg.remove_ended(&ids, crate::orphans::KILL_WITHIN);
                });
                return Ok(0);
            }
            cg.destroy(crate::orphans::KILL_WITHIN)
                .map(|_| n)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())??;
        if let Some(shim) = shim {
            if tokio::time::timeout(Duration::from_secs(5), shim.wait())
                .await
                .is_err()
            {
                if let Some(s) = live_shim(&run_dir) {
                    let _ = s.signal(Signal::SIGKILL);
                }
            }
        }
        Ok(n)
    }

    /// [`Supervisor::end_processes_checked`], logging what it did.
    async fn end_processes(&self, id: &str) {
        match self.end_processes_checked(id).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(id, n, "killed the processes left in a container's cgroup"),
            Err(e) => {
                tracing::error!(%e, id, "the processes left in a container's cgroup are not all killed")
            }
        }
    }

    // ----- wait, exec ------------------------------------------------------------------------

    /// Wait until the container is not running and no restart is pending.
    pub async fn wait(&self, c: &Arc<Container>) -> Result<WaitReply> {
        let mut rx = c.changed.subscribe();
        loop {
            {
                let inner = c.inner.lock().await;
                let st = &inner.rec.state;
                let busy = st.status.is_alive() || st.status == ContainerStatus::Restarting;
                if !busy || inner.removed {
                    return Ok(WaitReply {
                        exit_code: st.exit_code.unwrap_or(0),
                        oom_killed: st.oom_killed,
                    });
                }
            }
            tokio::select! {
                _ = self.token.cancelled() => return Err(SupervisorError::invalid("wait", "the supervisor is shutting down")),
                r = rx.changed() => if r.is_err() { return Err(SupervisorError::NotFound(c.id.clone())) },
            }
        }
    }

    pub async fn exec(
        &self,
        c: &Container,
        req: ExecRequest,
        timeout: Duration,
        kill_after: Option<Duration>,
    ) -> Result<iso::ExecReply> {
        {
            let inner = c.inner.lock().await;
            if inner.rec.state.status != ContainerStatus::Running {
                return Err(state_err(
                    &inner.rec,
                    format!("is {}, not running", inner.rec.state.status.as_str()),
                ));
            }
        }
        self.ctx
            .bus
            .call(
                Service::Isolator,
                iso::EXEC,
                &iso::ExecRequest {
                    id: c.id.clone(),
                    args: req.args,
                    env: req.env,
                    user: req.user,
                    working_dir: req.working_dir,
                    stream: req.stream,
                    timeout_ms: kill_after.map(|d| d.as_millis() as u64),
                },
                // With `kill_after`, the isolator's reply follows the kill shortly.
                &RequestOptions::timeout(timeout + Duration::from_secs(5)),
            )
            .await
            .map_err(peer(&c.name, "exec"))
    }

    // ----- health -----------------------------------------------------------------------------

    /// Record a health transition (called by the checker with the container locked).
    pub(crate) async fn health_changed(&self, c: &Container, inner: &Inner) {
        if let Err(e) = self.commit(c, inner).await {
            tracing::warn!(%e, "health not recorded");
        }
        if let Some(h) = &inner.rec.state.health {
            self.emit(
                &inner.rec,
                EV_HEALTH,
                attrs! {"health" => h.status.as_str()},
                None,
            )
            .await;
        }
    }

    /// Refresh the view only (a probe that changed nothing but the probe log).
    pub(crate) fn refresh_view(&self, c: &Container, inner: &Inner) {
        *c.view.lock().unwrap() = inner.rec.clone();
    }

    // ----- recovery --------------------------------------------------------------------------

    /// Rebuild every container from its record and the run directory: re-adopt running shims,
    /// process exits that happened while the supervisor was away, resume pending restarts.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        // Run directories of removals the supervisor did not finish.
        if let Ok(run) = std::fs::read_dir(&self.ctx.config.run_dir) {
            berth_files::janitor::remove_later(
                run.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with(TRASH_PREFIX))
                    .map(|e| e.path()),
            );
        }
        let root = self.ctx.config.containers_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SupervisorError::io("list", &root, e)),
        };
        let mut known = std::collections::HashSet::new();
        let mut orphans = Vec::new();
        for ent in entries.flatten() {
            let dir = ent.path();
            if ent.file_name().to_string_lossy().starts_with(TRASH_PREFIX) {
                // A removal the supervisor did not finish.
                berth_files::janitor::remove_later([dir]);
                continue;
            }
            if !crate::record::exists(&dir) {
                orphans.push(ent.file_name().to_string_lossy().into_owned());
                continue;
            }
            known.insert(ent.file_name().to_string_lossy().into_owned());
            let rec = match Record::load(&dir) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(%e, "container record unreadable: left alone");
                    continue;
                }
            };
            known.insert(rec.state.id.clone());
            let c = self.insert(rec);
            if let Err(e) = self.recover_one(&c).await {
                tracing::error!(%e, id = %c.id, "recovery failed");
            }
        }
        if !orphans.is_empty() {
            self.tasks.spawn(self.clone().sweep_orphans(orphans));
        }
        // Cgroups of this node's containers that no record names (removed while their
        // processes still ran): emptied and removed before any create can make a new one.
        let dir = self.ctx.config.containers_dir();
        let known2 = known.clone();
        let swept = tokio::task::spawn_blocking(move || crate::orphans::sweep(&dir, &known2))
            .await
            .unwrap_or_default();
        for (id, r) in swept {
            match r {
                Ok(n) => tracing::warn!(id, n, "killed the processes of a cgroup of this node without a container record, and removed it"),
                Err(e) => tracing::error!(%e, id, "a cgroup of this node without a container record is not emptied"),
            }
        }
        // Drop actual-state keys of containers that are gone.
        let prefix = format!("{}.", self.node());
        if let Ok(mut keys) = self.kv.keys().await {
            use futures::StreamExt;
            let mut stale = Vec::new();
            while let Some(Ok(k)) = keys.next().await {
                if let Some(id) = k.strip_prefix(&prefix) {
                    if !known.contains(id) {
                        stale.push(k.clone());
                    }
                }
            }
            for k in stale {
                let _ = self.kv.delete(&k).await;
            }
        }
        Ok(())
    }

    /// Container directories without a record: a container removed at its exit whose record
    /// never reached the disk (a power loss), or a create cut short between preparing the
    /// root filesystem and saving the record. Each is released by the layer-store (waited for
    /// up to a minute while it is not there yet) and removed; one whose release fails is left
    /// for the next start.
    async fn sweep_orphans(self: Arc<Self>, names: Vec<String>) {
        for id in names {
            if !is_container_id(&id) {
                continue;
            }
            let released = self
                .retrying(
                    || self.ask_release(&id),
                    |e| matches!(e, BusError::NoResponders { .. }),
                )
                .await;
            match released {
                None => return,
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(%e, id, "a container directory without a record is left: its root filesystem was not released");
                    continue;
                }
            }
            let dir = self.dir(&id);
            // The layer-store removes the directory once its own part is gone, if nothing else
            // is left in it.
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(%e, dir = %dir.display(), "orphan not removed")
                }
                _ => tracing::info!(id, "removed a container directory without a record"),
            }
        }
    }

    /// Remove a container removed at its exit whose removal a supervisor's death cut short,
    /// retried for up to a minute while the layer-store is not there yet.
    async fn finish_removal(self: Arc<Self>, c: &Arc<Container>) {
        if let Some(Err(e)) = self.retrying(|| self.remove(c, true), |_| true).await {
            tracing::warn!(%e, id = %c.id, "a container removed at its exit is left");
        }
    }

    /// `attempt`, again every 200 ms for up to a minute while `again` says its error may pass
    /// (a service not there yet after a start); `None` when the supervisor stops meanwhile.
    async fn retrying<T, E, Fut>(
        &self,
        mut attempt: impl FnMut() -> Fut,
        again: impl Fn(&E) -> bool,
    ) -> Option<std::result::Result<T, E>>
    where
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
    {
        const EVERY: Duration = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        loop {
            match attempt().await {
                Err(e) if again(&e) && waited < Duration::from_secs(60) => {}
                r => return Some(r),
            }
            tokio::select! {
                _ = self.token.cancelled() => return None,
                _ = tokio::time::sleep(EVERY) => {}
            }
            waited += EVERY;
        }
    }

    async fn recover_one(self: &Arc<Self>, c: &Arc<Container>) -> Result<()> {
        let mut inner = c.inner.lock().await;
        let run_dir = self.run_dir(&c.id);
        let shim = live_shim(&run_dir);
        if never_announced(&inner.rec) {
            // Created and started in one request that did not finish (berthd stopped during
            // it): unless its process was released (the create then happened, only its reply
            // was lost), nothing of it stays: process, cgroup, files, record. (A container
            // removed at its exit keeps the record of its create: with neither a shim nor an
            // exit it has ended, and its removal is finished below.)
            let waiting = shim.is_some() && iso::waiting_for_start(&run_dir);
            let nothing = shim.is_none() && read_exit(&run_dir).is_none();
            if waiting || (nothing && !inner.rec.request.auto_remove) {
                tracing::warn!(id = %c.id, name = %c.name, "removing a container whose create was cut short");
                inner.unannounced = true;
                drop(inner);
                drop(shim);
                let (sup, c) = (self.clone(), c.clone());
                self.tasks
                    .spawn(async move { sup.finish_removal(&c).await });
                return Ok(());
            }
        }
        if shim.is_none() {
            // Nothing may run in the cgroup of a container whose shim is gone.
            self.end_processes(&c.id).await;
        }
        if let Some(shim) = shim {
            // Running (or created and never released: release it now).
            let init_pid = read_pid(&run_dir.join(iso::INIT_PID_FILE)).or(inner.rec.state.pid);
            inner.init = init_pid.and_then(|p| PidFd::open(p).ok()).map(Arc::new);
            inner.gen += 1;
            if !inner.rec.state.status.is_alive() {
                inner.rec.state.status = ContainerStatus::Running;
                inner.rec.state.started_at = Some(now_rfc3339());
                inner.rec.state.finished_at = None;
                inner.rec.state.exit_code = None;
            }
            inner.rec.state.pid = init_pid;
            if let Err(e) = iso::release_start(&run_dir) {
                tracing::warn!(%e, id = %c.id, "the container could not be released");
            }
            *c.tailer.lock().await = Some(Tailer::new(
                &self.dir(&c.id),
                logs_subject(self.node(), &c.id),
                (self.settings.log_max_bytes, self.settings.log_max_files),
                c.log_readers.clone(),
            ));
            if inner.rec.healthcheck.is_some() && inner.rec.state.health.is_none() {
                inner.rec.state.health = Some(HealthState {
                    status: HealthStatus::Starting,
                    failing_streak: 0,
                    log: Vec::new(),
                });
            }
            self.commit(c, &inner).await?;
            self.watch_instance(c, &mut inner, Some(shim));
            tracing::info!(id = %c.id, name = %c.name, "re-adopted a running container");
            return Ok(());
        }
        let exit = read_exit(&run_dir);
        let fresh_exit = exit
            .as_ref()
            .is_some_and(|e| inner.rec.state.finished_at.as_deref() != Some(&e.finished_at));
        if fresh_exit {
            // It ended while the supervisor was away.
            inner.rec.state.status = ContainerStatus::Running;
            self.process_exit(c, &mut inner, exit).await;
            return Ok(());
        }
        match inner.rec.state.status {
            ContainerStatus::Running | ContainerStatus::Paused => {
                self.process_exit(c, &mut inner, None).await;
            }
            ContainerStatus::Restarting => {
                let delay = self
                    .settings
                    .backoff(inner.rec.backoff_step.saturating_sub(1));
                self.publish_state(&inner.rec.state).await;
                self.schedule_restart(c, &mut inner, delay).await;
            }
            _ if inner.rec.request.auto_remove && inner.rec.request.start => {
                // Removed at its exit, and it has ended (its exit processed, or lost with the
                // run directory at a reboot) or never got a process: finish the removal. Its
                // record is the one saved at the create; `remove` takes its run directory.
                drop(inner);
                let (sup, c) = (self.clone(), c.clone());
                self.tasks
                    .spawn(async move { sup.finish_removal(&c).await });
            }
            _ => {
                if !inner.rec.exit_reported {
                    self.announce_exit(c, &mut inner).await;
                }
                let _ = std::fs::remove_dir_all(&run_dir);
                self.publish_state(&inner.rec.state).await;
            }
        }
        Ok(())
    }

    pub(crate) fn dir_of(&self, id: &str) -> PathBuf {
        self.dir(id)
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

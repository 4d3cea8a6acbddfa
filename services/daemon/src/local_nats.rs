//! The local `nats-server` of a single-host berth: configuration with one generated identity
//! per role (admin, services, reconciler, cli, monitor; see [`permissions`] and
//! docs/security.md), listening on 127.0.0.1 only, JetStream under the data root, run as a
//! child process that is restarted if it dies.

use berth_bus::{Credentials, Identity, NodeConfig};
use berth_proto::{subjects, Service};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LocalNatsError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading credentials {path}: {reason}")]
    Creds { path: PathBuf, reason: String },
    #[error("{0}")]
    Loose(berth_bus::BusError),
    #[error("starting {bin} (install nats-server, or set nats_server_bin / BERTH_NATS_SERVER_BIN): {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("nats-server did not accept connections on 127.0.0.1:{port} within {within:?}; its log: {log}")]
    NotReady {
        port: u16,
        within: Duration,
        log: PathBuf,
    },
    #[error("nats-server exited at start ({status}); its log {log} says: {tail}")]
    Exited {
        status: String,
        log: PathBuf,
        tail: String,
    },
}

pub struct LocalNats {
    pub port: u16,
    pub dir: PathBuf,
    bin: String,
    child: Arc<Mutex<Option<Child>>>,
    stopping: AtomicBool,
}

impl LocalNats {
    /// Write the identities (once; kept across restarts) and the server config.
    pub fn prepare(cfg: &NodeConfig) -> Result<LocalNats, LocalNatsError> {
        let dir = cfg.data_root.join("nats");
        mkdir_private(&dir)?;
        // The identities' directory is made private once; found open later, it is refused
        // rather than quietly repaired (what was in it may have been read).
        let auth = cfg.auth_dir();
        if auth.exists() {
            berth_bus::identity::check_private(&auth).map_err(LocalNatsError::Loose)?;
        } else {
            mkdir_private(&auth)?;
        }
        let url = format!("nats://127.0.0.1:{}", cfg.nats_port);
        let mut users = Vec::new();
        for id in Identity::ALL {
            users.push((id, ensure_creds(&cfg.creds_path(id), id, &url)?));
        }
        let conf = server_config(cfg.nats_port, &dir.join("jetstream"), &users);
        write_private(&dir.join("nats.conf"), conf.as_bytes())?;
        Ok(LocalNats {
            port: cfg.nats_port,
            dir,
            bin: cfg.nats_server_bin.clone(),
            child: Arc::new(Mutex::new(None)),
            stopping: AtomicBool::new(false),
        })
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("nats.log")
    }

    /// Start the server and wait until it accepts connections. Call it from the thread that
    /// should be the server's parent (see [`LocalNats::run_supervised`]).
    fn start(&self) -> Result<(), LocalNatsError> {
        self.stop_stale();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|source| LocalNatsError::Write {
                path: self.log_path(),
                source,
            })?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(self.dir.join("nats.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group: a Ctrl-C meant for berthd must not stop the bus before the
            // services have drained.
            .process_group(0);
        // SAFETY: the closure runs in the child between fork and exec and only calls prctl,
        // which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                // Die with berthd rather than linger on the port.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|source| LocalNatsError::Spawn {
            bin: self.bin.clone(),
            source,
        })?;
        let within = Duration::from_secs(15);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(LocalNatsError::Exited {
                    status: status.to_string(),
                    log: self.log_path(),
                    tail: tail(&self.log_path()),
                });
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LocalNatsError::NotReady {
                    port: self.port,
                    within,
                    log: self.log_path(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::info!(
            pid = child.id(),
            port = self.port,
            "local nats-server started"
        );
        *self.child.lock().unwrap() = Some(child);
        Ok(())
    }

    /// The pid of the running server child.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id())
    }

    /// A server left by a berthd that was killed: it is ours (its pid file is in our dir and its
    /// command line names our config), so stop it by pid before starting a new one.
    fn stop_stale(&self) {
        let pid_file = self.dir.join("nats.pid");
        let Ok(text) = std::fs::read_to_string(&pid_file) else {
            return;
        };
        let Ok(pid) = text.trim().parse::<i32>() else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let conf = self.dir.join("nats.conf");
        if String::from_utf8_lossy(&cmdline).contains(conf.to_string_lossy().as_ref()) {
            tracing::warn!(pid, "stopping a nats-server left by an earlier berthd");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Start the server and keep it running: a dedicated thread (the parent of the server, so
    /// that PR_SET_PDEATHSIG fires only when berthd itself goes) starts it, waits for it, and
    /// starts it again with backoff whenever it dies, until [`LocalNats::stop`]. Returns once
    /// the first start has succeeded or failed.
    pub fn run_supervised(self: &Arc<Self>) -> Result<std::thread::JoinHandle<()>, LocalNatsError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let me = self.clone();
        let handle = std::thread::Builder::new()
            .name("berth-nats".into())
            .spawn(move || {
                let first = me.start();
                let ok = first.is_ok();
                let _ = tx.send(first);
                if !ok {
                    return;
                }
                let mut backoff = Duration::from_millis(100);
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    if me.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    let exited = {
                        let mut g = me.child.lock().unwrap();
                        match g.as_mut().map(|c| c.try_wait()) {
                            Some(Ok(Some(status))) => {
                                g.take();
                                Some(status.to_string())
                            }
                            None => Some("not running".to_string()),
                            _ => None,
                        }
                    };
                    let Some(status) = exited else { continue };
                    if me.stopping.load(Ordering::SeqCst) {
                        return;
                    }
                    tracing::warn!(%status, "local nats-server is gone; starting it again");
                    match me.start() {
                        Ok(()) => backoff = Duration::from_millis(100),
                        Err(e) => {
                            tracing::error!(%e, "restarting nats-server failed");
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
            })
            .map_err(|source| LocalNatsError::Spawn {
                bin: "the berth-nats thread".into(),
                source,
            })?;
        match rx.recv() {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(LocalNatsError::NotReady {
                port: self.port,
                within: Duration::ZERO,
                log: self.log_path(),
            }),
        }
    }

    /// Stop the child: SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                tracing::info!("local nats-server stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// What one identity may do, as the server enforces it: subjects it may publish to and
/// subscribe to (allow lists, with denials that win over them), and whether it may answer the
/// requests it receives (`allow_responses`: one reply to each request's reply subject).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe: Vec<String>,
    pub responses: bool,
}

/// Streams and buckets by their JetStream stream name.
fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The JetStream API calls that only read: account and stream info, stored messages by
/// sequence or subject (direct gets, which create nothing on the server).
fn read_api() -> Vec<String> {
    [
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.*",
        "$JS.API.STREAM.MSG.GET.*",
        "$JS.API.DIRECT.GET.*",
        "$JS.API.DIRECT.GET.*.>",
    ]
    .map(String::from)
    .to_vec()
}

/// The idempotency bucket holds other clients' replies: readers may not read it.
fn idem_reads() -> Vec<String> {
    let s = kv_stream(IDEM_BUCKET);
    vec![
        format!("$JS.API.STREAM.INFO.{s}"),
        format!("$JS.API.STREAM.MSG.GET.{s}"),
        format!("$JS.API.DIRECT.GET.{s}"),
        format!("$JS.API.DIRECT.GET.{s}.>"),
    ]
}

/// The bucket of idempotency keys the services keep (read and written by services only).
pub const IDEM_BUCKET: &str = subjects::KV_IDEMPOTENCY;

/// What a berth service connection may do: serve and call verbs, publish events, logs, exec
/// streams and actual state (`berth.v1.>`), answer requests, use consumers (key-value watches
/// and listings), create the streams it keeps and write the buckets it owns (`buckets`).
fn service_permissions(id: Identity, creates: &[String], buckets: &[&str]) -> Permissions {
    let mut publish = vec![format!("{}.>", subjects::PREFIX)];
    publish.extend(read_api());
    publish.extend(
        [
            "$JS.API.CONSUMER.CREATE.>",
            "$JS.API.CONSUMER.DELETE.>",
            "$JS.API.CONSUMER.INFO.>",
            "$JS.API.CONSUMER.MSG.NEXT.>",
            "$JS.FC.>",
            "$JS.ACK.>",
        ]
        .map(String::from),
    );
    for stream in creates {
        publish.push(format!("$JS.API.STREAM.CREATE.{stream}"));
        publish.push(format!("$JS.API.STREAM.UPDATE.{stream}"));
    }
    for b in buckets {
        publish.push(format!("$KV.{b}.>"));
    }
    // Replies to every identity's requests, however long they took (the server's response
    // permission lapses after two minutes; a `pull`, a `stop`, an `apply --wait` or a long
    // `logs` may answer later).
    for other in Identity::ALL {
        publish.push(format!(
            "{}.>",
            other.inbox_prefix().as_deref().unwrap_or("_INBOX")
        ));
    }
    Permissions {
        publish,
        publish_deny: vec![],
        subscribe: vec![
            format!("{}.>", subjects::PREFIX),
            format!("{}.>", id.inbox_prefix().expect("services have an inbox")),
            format!("{}.*", berth_bus::infra::STREAM_DELETED_ADVISORY),
        ],
        responses: true,
    }
}

/// Each identity's permissions; `None` for the admin (everything).
pub fn permissions(id: Identity) -> Option<Permissions> {
    let inbox = |id: Identity| format!("{}.>", id.inbox_prefix().expect("not the admin"));
    let events = format!("{}.>", subjects::EVENTS_PREFIX);
    Some(match id {
        Identity::Admin => return None,
        Identity::Services => service_permissions(
            id,
            &[
                subjects::EVENTS_STREAM.to_string(),
                kv_stream(subjects::KV_ACTUAL),
                kv_stream(IDEM_BUCKET),
            ],
            &[subjects::KV_ACTUAL, IDEM_BUCKET],
        ),
        Identity::Reconciler => service_permissions(
            id,
            &[kv_stream(subjects::KV_DESIRED), kv_stream(IDEM_BUCKET)],
            &[subjects::KV_DESIRED, IDEM_BUCKET],
        ),
        Identity::Cli => {
            // Every service's verbs, and the input of an exec stream it started.
            let mut publish: Vec<String> = Service::ALL
                .iter()
                .map(|s| {
                    let node = if s.is_cluster_wide() {
                        subjects::CLUSTER_NODE
                    } else {
                        "*"
                    };
                    format!("{}.{node}.{}.*", subjects::PREFIX, s.name())
                })
                .collect();
            publish.push(format!("{}.*.exec.*.in", subjects::PREFIX));
            publish.extend(read_api());
            let mut subscribe = vec![
                inbox(id),
                events.clone(),
                format!("{}.*.logs.>", subjects::PREFIX),
            ];
            for s in ["started", "out", "err"] {
                subscribe.push(format!("{}.*.exec.*.{s}", subjects::PREFIX));
            }
            Permissions {
                publish,
                // A node named like a subject word must not turn a verb into an event.
                publish_deny: [vec![events.clone()], idem_reads()].concat(),
                subscribe,
                // Acknowledging each chunk of a `logs` history (once per chunk received);
                // no other reply subject of another identity may be published to.
                responses: true,
            }
        }
        Identity::Monitor => Permissions {
            publish: read_api(),
            publish_deny: idem_reads(),
            subscribe: vec![inbox(id), events],
            responses: false,
        },
    })
}

/// The server configuration: loopback only, JetStream under the data root, one user per
/// identity with its [`permissions`].
pub fn server_config(port: u16, store: &Path, users: &[(Identity, Credentials)]) -> String {
    let list = |v: &[String]| {
        v.iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut entries = String::new();
    for (id, c) in users {
        let perms = match permissions(*id) {
            None => String::new(),
            Some(p) => {
                let deny = if p.publish_deny.is_empty() {
                    String::new()
                } else {
                    format!(", deny: [{}]", list(&p.publish_deny))
                };
                format!(
                    r#", permissions: {{
        publish: {{ allow: [{}]{deny} }}
        subscribe: {{ allow: [{}] }}{}
    }}"#,
                    list(&p.publish),
                    list(&p.subscribe),
                    if p.responses {
                        "\n        allow_responses: true"
                    } else {
                        ""
                    },
                )
            }
        };
        entries.push_str(&format!(
            "    {{ user: {:?}, password: {:?}{perms} }}\n",
            c.user, c.password
        ));
    }
    format!(
        r#"# Written by berthd; regenerated at every start.
listen: 127.0.0.1:{port}
pid_file: {pid:?}
jetstream {{
  store_dir: {store:?}
}}
authorization {{
  users = [
{entries}  ]
}}
"#,
        pid = store.parent().unwrap_or(store).join("nats.pid"),
    )
}

/// The identity file of `id`: kept when it is sound and current, else written anew (0600).
/// One that others may read is refused, not repaired: its password may have leaked.
fn ensure_creds(path: &Path, id: Identity, url: &str) -> Result<Credentials, LocalNatsError> {
    let user = id.user();
    if path.exists() {
        let c = Credentials::read(path).map_err(|e| match e {
            e @ berth_bus::BusError::Loose { .. } => LocalNatsError::Loose(e),
            e => LocalNatsError::Creds {
                path: path.to_path_buf(),
                reason: e.to_string(),
            },
        })?;
        if c.user == user && c.url.as_deref() == Some(url) && c.inbox_prefix == id.inbox_prefix() {
            return Ok(c);
        }
    }
    let c = Credentials {
        user,
        password: berth_bus::random_hex(40),
        url: Some(url.to_string()),
        inbox_prefix: id.inbox_prefix(),
    };
    write_private(
        path,
        &serde_json::to_vec_pretty(&c).expect("creds serialize"),
    )?;
    Ok(c)
}

fn mkdir_private(dir: &Path) -> Result<(), LocalNatsError> {
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| LocalNatsError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// Write a 0600 file atomically, surviving a power loss.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LocalNatsError> {
    berth_files::atomic_write_mode(path, bytes, 0o600, berth_files::Durability::PowerLoss).map_err(
        |source| LocalNatsError::Write {
            path: path.to_path_buf(),
            source,
        },
    )
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

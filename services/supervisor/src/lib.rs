//! The supervisor service of berth: the life of created containers (start, stop, kill,
//! restart, remove, pause), their exits and restart policies, health checks, logs, stats, and
//! the node's actual state. See docs/supervisor.md.

pub mod cgroup;
pub mod core;
pub mod error;
pub mod health;
pub mod logs;
pub mod merge;
pub mod names;
pub mod orphans;
pub mod process;
pub mod record;
pub mod restart;
pub mod settings;

use crate::core::Supervisor;
use crate::error::SupervisorError;
use berth_bus::{now_rfc3339, serve, Router, ServiceContext};
use berth_proto::supervisor::*;
use berth_proto::{BerthError, Service};
use settings::Settings;
use std::sync::Arc;
use std::time::Duration;

/// Longest an `exec` through the supervisor may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(3600);

/// Serve the supervisor's verbs until `ctx.shutdown` is cancelled, with the settings of
/// `<data_root>/supervisor.toml`.
pub async fn run(ctx: ServiceContext) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let settings = Settings::load(&ctx.config.data_root)?;
    run_with(ctx, settings).await
}

/// Like [`run`] with the given settings.
pub async fn run_with(
    ctx: ServiceContext,
    settings: Settings,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let sup = Supervisor::new(ctx.clone(), settings).await?;
    sup.recover().await?;
    let r = serve(&ctx, Service::Supervisor, router(sup.clone())).await;
    sup.token.cancel();
    sup.tasks.close();
    sup.tasks.wait().await;
    r?;
    Ok(())
}

fn be(e: SupervisorError) -> BerthError {
    e.into()
}

fn router(sup: Arc<Supervisor>) -> Router {
    let s = sup.clone();
    let r = Router::new().verb::<berth_proto::supervisor::verbs::Create, _, _>(
        move |req: CreateRequest| {
            let s = s.clone();
            async move { s.create(req).await.map_err(be) }
        },
    );
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Start, _, _>(move |req: StartRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.start(&c).await.map_err(be)
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Stop, _, _>(move |req: StopRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.stop(&c, req.timeout_ms, true).await.map_err(be)
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Restart, _, _>(move |req: RestartRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.restart(&c, req.timeout_ms).await.map_err(be)
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Kill, _, _>(move |req: KillRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.kill(&c, req.signal.as_deref()).await.map_err(be)?;
            Ok(Supervisor::view(&c).state)
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Remove, _, _>(move |req: RemoveRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.remove(&c, req.force).await.map_err(be)?;
            Ok(Supervisor::view(&c).state)
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Pause, _, _>(move |req: PauseRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.pause(&c, true).await.map_err(be)
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Unpause, _, _>(move |req: PauseRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.pause(&c, false).await.map_err(be)
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::List, _, _>(move |req: ListRequest| {
        let s = s.clone();
        async move { Ok::<_, BerthError>(list(&s, &req)) }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Inspect, _, _>(move |req: InspectRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            let rec = Supervisor::view(&c);
            Ok::<_, BerthError>(InspectReply {
                log_path: logs::live_path(&s.dir_of(&c.id)).display().to_string(),
                state: rec.state,
                spec: rec.spec,
                request: rec.request,
                healthcheck: rec.healthcheck,
                stop_signal: rec.stop_signal,
                stop_grace_period_ms: rec.stop_grace_period_ms,
            })
        }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Logs, _, _>(move |req: LogsRequest| {
        let s = s.clone();
        async move { read_logs(&s, req).await.map_err(be) }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Stats, _, _>(move |req: StatsRequest| {
        let s = s.clone();
        async move { stats(&s, &req).map_err(be) }
    });
    let s = sup.clone();
    let r = r.verb::<berth_proto::supervisor::verbs::Exec, _, _>(move |req: ExecRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            if req.args.is_empty() {
                return Err(BerthError::invalid("exec: no command given"));
            }
            s.exec(&c, req, EXEC_TIMEOUT, None).await.map_err(be)
        }
    });
    let s = sup;
    r.verb::<berth_proto::supervisor::verbs::Wait, _, _>(move |req: WaitRequest| {
        let s = s.clone();
        async move {
            let c = s.resolve(&req.container).map_err(be)?;
            s.wait(&c).await.map_err(be)
        }
    })
}

fn list(s: &Supervisor, req: &ListRequest) -> ListReply {
    let mut containers: Vec<ContainerState> = s
        .all()
        .iter()
        .map(|c| Supervisor::view(c).state)
        .filter(|st| {
            let all = req.all || req.status.is_some();
            (all || st.status.is_alive() || st.status == ContainerStatus::Restarting)
                && req.status.is_none_or(|want| st.status == want)
                && req.labels.iter().all(|(k, v)| st.labels.get(k) == Some(v))
                && req.label_keys.iter().all(|k| st.labels.contains_key(k))
                && req.name.as_deref().is_none_or(|n| st.name.contains(n))
        })
        .collect();
    // Newest first, as `docker ps` lists them.
    containers.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    ListReply { containers }
}

/// `logs`: the history `req` selects, in the reply (when it fits) or streamed to
/// `req.stream` (any size), with the live stream's epoch and sequence at the moment the files
/// were opened, so that a follower joins the live lines without gap or repeat.
async fn read_logs(s: &Supervisor, req: LogsRequest) -> Result<LogsReply, SupervisorError> {
    let c = s.resolve(&req.container)?;
    let parse = |what: &str, v: &Option<String>| match v {
        None => Ok(None),
        Some(t) => logs::parse_time(t).map(Some).ok_or_else(|| {
            SupervisorError::invalid(what, format!("{t:?} is not an RFC 3339 time"))
        }),
    };
    let q = logs::Query {
        since: parse("since", &req.since)?,
        until: parse("until", &req.until)?,
        tail: req.tail,
    };
    let node = &s.ctx.config.node;
    if let Some(sub) = &req.stream {
        if !is_logs_stream_subject(node, sub) {
            return Err(SupervisorError::invalid(
                "stream",
                format!(
                    "{sub:?} is not a subject under {}",
                    logs_stream_subject(node, "")
                ),
            ));
        }
    }
    let dir = s.dir_of(&c.id);
    let max_files = s.settings.log_max_files;
    let subject = logs_subject(node, &c.id);
    let opened = |live_end| {
        logs::History::open(&dir, max_files, live_end, &c.log_readers)
            .map_err(|e| SupervisorError::io("open the log in", &dir, e))
    };
    // The files are opened under the tailer's lock, after it published what is pending: the
    // history ends exactly where the live lines go on. Then the lock is released, and the
    // tailer publishes (and rotates) on while the history is read.
    let (history, epoch, seq, running) = {
        let mut tailer = c.tailer.lock().await;
        match tailer.as_mut() {
            Some(t) => {
                t.poll(s.ctx.bus.client()).await;
                (opened(Some(t.offset()))?, t.epoch.clone(), t.seq, true)
            }
            None => (opened(None)?, String::new(), 0, false),
        }
    };
    let mut reply = LogsReply {
        id: c.id.clone(),
        lines: Vec::new(),
        subject,
        epoch,
        seq,
        running,
        streamed: StreamedCount::default(),
    };
    match req.stream {
        Some(to) => {
            reply.streamed = logs::stream(s.ctx.bus.client(), &to, history, q)
                .await
                .map_err(|source| SupervisorError::LogStream {
                    name: c.name.clone(),
                    source,
                })?;
        }
        None => {
            let read =
                tokio::task::spawn_blocking(move || history.collect(&q, LOGS_REPLY_MAX_BYTES))
                    .await
                    .map_err(|e| {
                        SupervisorError::io("read the log in", &dir, std::io::Error::other(e))
                    })?
                    .map_err(|e| SupervisorError::io("read the log in", &dir, e))?;
            reply.lines = read.ok_or_else(|| SupervisorError::State {
                name: c.name.clone(),
                id: c.id.clone(),
                reason: format!(
                    "its log history is more than {} KiB, too much for one reply: ask for it \
                     as a stream (berth logs does), or for less (tail, since)",
                    LOGS_REPLY_MAX_BYTES >> 10
                ),
            })?;
        }
    }
    Ok(reply)
}

fn stats(s: &Supervisor, req: &StatsRequest) -> Result<StatsReply, SupervisorError> {
    let targets = if req.containers.is_empty() {
        s.all()
    } else {
        req.containers
            .iter()
            .map(|n| s.resolve(n))
            .collect::<Result<Vec<_>, _>>()?
    };
    let mut out = Vec::new();
    for c in targets {
        let st = Supervisor::view(&c).state;
        let Some(pid) = st.pid.filter(|_| st.status.is_alive()) else {
            if !req.containers.is_empty() {
                return Err(SupervisorError::State {
                    name: st.name,
                    id: st.id,
                    reason: "is not running".into(),
                });
            }
            continue;
        };
        let Ok(cg) = cgroup::of_pid(pid) else {
            continue;
        };
        let u = cg.usage();
        out.push(ContainerStats {
            id: st.id,
            name: st.name,
            read_at: now_rfc3339(),
            memory_bytes: u.memory_bytes,
            memory_limit_bytes: u.memory_limit_bytes,
            cpu_usage_ns: u.cpu_usage_ns,
            pids: u.pids,
            pids_limit: u.pids_limit,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(StatsReply {
        stats: out,
        online_cpus: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
    })
}

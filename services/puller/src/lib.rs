//! The puller service of berth: it resolves image references on registries, authenticates,
//! and downloads manifests, configs and layers into the node's content store, verified.
//! Verbs: `pull`, `resolve`, `login`. Events: `image.pulling` (progress), `image.pulled`,
//! `image.pull-failed`. See docs/puller.md.

pub mod client;
pub mod error;
pub mod manifest;
pub mod progress;
pub mod pull;
pub mod retry;
pub mod settings;

use berth_bus::{attrs, serve, Bus, Router, ServiceContext};
use berth_docker::platform::Platform;
use berth_proto::puller::{
    LoginReply, LoginRequest, PullReply, PullRequest, ResolveReply, ResolveRequest, EVENT_PULLED,
    EVENT_PULLING, EVENT_PULL_FAILED,
};
use berth_proto::reference::Reference;
use berth_proto::{BerthError, Service};
use berth_store::ContentStore;
use error::PullError;
use progress::Progress;
use pull::Puller;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often `image.pulling` is published at most, per pull.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Serve the puller's verbs until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let store = ContentStore::open(ctx.config.content_dir())?;
    let puller = Arc::new(Puller::new(store, ctx.config.data_root.clone()));
    let router = Router::new()
        .verb::<berth_proto::puller::verbs::Pull, _, _>({
            let (p, bus) = (puller.clone(), ctx.bus.clone());
            move |req: PullRequest| {
                let (p, bus) = (p.clone(), bus.clone());
                async move { pull(&p, &bus, req).await }
            }
        })
        .verb::<berth_proto::puller::verbs::Resolve, _, _>({
            let p = puller.clone();
            move |req: ResolveRequest| {
                let p = p.clone();
                async move { resolve(&p, req).await.map_err(BerthError::from) }
            }
        })
        .verb::<berth_proto::puller::verbs::Login, _, _>({
            let p = puller.clone();
            move |req: LoginRequest| {
                let p = p.clone();
                async move { login(&p, req).await.map_err(BerthError::from) }
            }
        });
    serve(&ctx, Service::Puller, router).await?;
    Ok(())
}

fn parse_platform(p: &Option<String>) -> Result<Option<Platform>, PullError> {
    p.as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            Platform::parse(s).map_err(|e| PullError::Platform {
                input: e.input,
                reason: e.reason,
            })
        })
        .transpose()
}

async fn resolve(p: &Puller, req: ResolveRequest) -> Result<ResolveReply, PullError> {
    let r = Reference::parse(&req.reference)?;
    let plat = parse_platform(&req.platform)?;
    p.resolve(&r, plat.as_ref()).await
}

async fn login(p: &Puller, req: LoginRequest) -> Result<LoginReply, PullError> {
    let server = if req.server.is_empty() {
        berth_proto::reference::DEFAULT_DOMAIN.to_string()
    } else {
        req.server.clone()
    };
    let settings = p.settings()?;
    client::check_login(&settings, &server, &req.username, &req.password).await?;
    Ok(LoginReply {
        server,
        status: "Login Succeeded".into(),
    })
}

/// A pull with its events: progress every [`PROGRESS_INTERVAL`] while it runs, then
/// `image.pulled` or `image.pull-failed`.
async fn pull(p: &Puller, bus: &Bus, req: PullRequest) -> Result<PullReply, BerthError> {
    let pull_id = req
        .pull_id
        .clone()
        .unwrap_or_else(|| berth_bus::random_hex(12));
    let started = Instant::now();
    let parsed = Reference::parse(&req.reference)
        .map_err(PullError::from)
        .and_then(|r| Ok((r, parse_platform(&req.platform)?)));
    let (r, plat) = match parsed {
        Ok(x) => x,
        Err(e) => return Err(failed(bus, &req.reference, &pull_id, e).await),
    };
    let name = r.to_string();
    let progress = Arc::new(Progress::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let ticker = tokio::spawn(progress_events(
        bus.clone(),
        name.clone(),
        pull_id.clone(),
        progress.clone(),
        stopped,
    ));
    let res = p.pull(&r, plat.as_ref(), &progress).await;
    let _ = stop.send(());
    let _ = ticker.await;
    match res {
        Ok(reply) => {
            tracing::info!(reference = %name, digest = %reply.digest, downloaded = reply.downloaded, "pulled");
            bus.emit(
                "image",
                EVENT_PULLED,
                &name,
                attrs! {
                    "pull_id" => pull_id,
                    "digest" => reply.digest,
                    "size" => reply.size,
                    "downloaded" => reply.downloaded,
                    "platform" => reply.platform,
                    "seconds" => started.elapsed().as_secs_f64(),
                },
            )
            .await;
            Ok(reply)
        }
        Err(e) => Err(failed(bus, &name, &pull_id, e).await),
    }
}

async fn failed(bus: &Bus, name: &str, pull_id: &str, e: PullError) -> BerthError {
    tracing::warn!(reference = %name, error = %e, "pull failed");
    let be = BerthError::from(e);
    bus.emit(
        "image",
        EVENT_PULL_FAILED,
        name,
        attrs! {"pull_id" => pull_id, "code" => be.code.as_str(), "error" => be.message},
    )
    .await;
    be
}

async fn progress_events(
    bus: Bus,
    name: String,
    pull_id: String,
    progress: Arc<Progress>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let emit = |bus: Bus, name: String, pull_id: String, progress: Arc<Progress>| async move {
        let (layers, done, total) = progress.snapshot();
        bus.emit(
            "image",
            EVENT_PULLING,
            &name,
            attrs! {"pull_id" => pull_id, "done" => done, "total" => total, "layers" => layers},
        )
        .await;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(PROGRESS_INTERVAL) => {
                if progress.take_changed() {
                    emit(bus.clone(), name.clone(), pull_id.clone(), progress.clone()).await;
                }
            }
            _ = &mut stopped => {
                if progress.take_changed() {
                    emit(bus.clone(), name.clone(), pull_id.clone(), progress.clone()).await;
                }
                return;
            }
        }
    }
}

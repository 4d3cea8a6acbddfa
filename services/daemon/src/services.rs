//! Hosting the five services in one process: each runs as a task with its own child shutdown
//! token; one that fails is logged and started again after a backoff, so a fault in one
//! service never takes the others down. The reconciler gets its own bus connection (its own
//! identity: the only one that may write desired state); the others share berthd's.

use berth_bus::{Bus, ServiceContext};
use berth_proto::Service;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::task::JoinSet;

type ServiceResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type RunFn = fn(ServiceContext) -> Pin<Box<dyn Future<Output = ServiceResult> + Send>>;

/// Every service's entry point.
pub fn entry_points() -> Vec<(Service, RunFn)> {
    vec![
        (Service::Puller, |c| Box::pin(berth_puller::run(c))),
        (Service::LayerStore, |c| Box::pin(berth_layer_store::run(c))),
        (Service::Isolator, |c| Box::pin(berth_isolator::run(c))),
        (Service::Supervisor, |c| Box::pin(berth_supervisor::run(c))),
        (Service::Reconciler, |c| Box::pin(berth_reconciler::run(c))),
    ]
}

/// Run every service until `ctx.shutdown` is cancelled; returns when all have drained. The
/// reconciler talks over `reconciler_bus`, the others over `ctx.bus`.
pub async fn host_all(ctx: ServiceContext, reconciler_bus: Bus) {
    let mut set = JoinSet::new();
    for (service, run) in entry_points() {
        let mut ctx = ctx.clone();
        if service == Service::Reconciler {
            ctx.bus = reconciler_bus.clone();
        }
        set.spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                let r = run(ctx.clone()).await;
                if ctx.shutdown.is_cancelled() {
                    if let Err(e) = r {
                        tracing::warn!(service = service.name(), %e, "stopped with an error");
                    }
                    return;
                }
                match r {
                    Ok(()) => {
                        tracing::warn!(service = service.name(), "returned early; restarting")
                    }
                    Err(e) => tracing::error!(service = service.name(), %e, "failed; restarting"),
                }
                tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        });
    }
    while set.join_next().await.is_some() {}
}

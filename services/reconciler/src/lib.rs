//! The reconciler service of berth. See docs/architecture.md.

use berth_bus::{serve, Router, ServiceContext};
use berth_proto::Service;

pub mod converge;
pub mod plan;

/// Serve the reconciler's verbs until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let router = Router::new();
    serve(&ctx, Service::Reconciler, router).await?;
    Ok(())
}

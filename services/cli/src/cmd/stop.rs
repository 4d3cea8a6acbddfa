//! `berth stop [-t SECONDS] CONTAINER...`: the stop signal, then SIGKILL after the grace period.

use crate::cmd::run::each;
use crate::ctx::Ctx;
use berth_proto::supervisor::StopRequest;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Seconds to wait before SIGKILL (default: the container's grace period, 10 s).
    #[arg(short = 't', long = "time")]
    time: Option<u64>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let node = ctx.node()?;
    let bus = ctx.bus().await?;
    let mut opts = ctx.request_options(true);
    opts.timeout = opts
        .timeout
        .max(Duration::from_secs(a.time.unwrap_or(10) + 60));
    each(&a.containers, |c| {
        let (node, opts) = (node.clone(), opts.clone());
        async move {
            let req = StopRequest {
                container: c,
                timeout_ms: a.time.map(|s| s * 1000),
            };
            bus.ask::<berth_proto::supervisor::verbs::Stop>(&node, &req, &opts)
                .await?;
            Ok(())
        }
    })
    .await
}

//! `berth start [-a] CONTAINER...`: start created or stopped containers; with `-a`, one
//! container, whose output is printed until it exits, berth exiting with its exit code (and
//! Docker's 125/126/127 when it cannot be started, as `run`).

use crate::cmd::run::{attach, each};
use crate::ctx::{engine_error, exit, Ctx};
use anyhow::{bail, Context};
use berth_proto::supervisor::{logs_subject, ContainerState, InspectReply, Target};

#[derive(clap::Args)]
pub struct Args {
    /// Print the container's output until it exits, and exit with its exit code.
    #[arg(short = 'a', long)]
    attach: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    if a.attach {
        return start_attached(ctx, &a.containers)
            .await
            .map_err(engine_error);
    }
    each(&a.containers, |c| async move {
        ctx.call_mut::<berth_proto::supervisor::verbs::Start>(&Target { container: c })
            .await?;
        Ok(())
    })
    .await
}

/// Subscribe to the container's output, start it, print until it exits.
async fn start_attached(ctx: &Ctx, containers: &[String]) -> anyhow::Result<()> {
    let [container] = containers else {
        bail!("--attach takes one container, not {}", containers.len());
    };
    let info: InspectReply = ctx
        .call::<berth_proto::supervisor::verbs::Inspect>(&Target {
            container: container.clone(),
        })
        .await?;
    let node = ctx.node()?;
    let mut logs = ctx
        .bus()
        .await?
        .client()
        .subscribe(logs_subject(&node, &info.state.id))
        .await
        .context("subscribe to the container's output")?;
    let st: ContainerState = ctx
        .call_mut::<berth_proto::supervisor::verbs::Start>(&Target {
            container: info.state.id.clone(),
        })
        .await?;
    let (code, _) = attach(ctx, &mut logs, &st).await?;
    if code == 0 {
        Ok(())
    } else {
        Err(exit(code))
    }
}

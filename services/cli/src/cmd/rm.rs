//! `berth rm [-f] CONTAINER...`: remove containers (running ones only with `-f`, which kills
//! them first).

use crate::cmd::run::each;
use crate::ctx::Ctx;
use berth_proto::supervisor::RemoveRequest;

#[derive(clap::Args)]
pub struct Args {
    /// Kill running containers first.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    each(&a.containers, |c| async move {
        ctx.call_mut::<berth_proto::supervisor::verbs::Remove>(&RemoveRequest {
            container: c,
            force: a.force,
        })
        .await?;
        Ok(())
    })
    .await
}

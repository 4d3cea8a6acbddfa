//! `berth pause CONTAINER...`: freeze every process of the containers (cgroup freezer).

use crate::cmd::run::each;
use crate::ctx::Ctx;
use berth_proto::supervisor::Target;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    each(&a.containers, |c| async move {
        ctx.call_mut::<berth_proto::supervisor::verbs::Pause>(&Target { container: c })
            .await?;
        Ok(())
    })
    .await
}

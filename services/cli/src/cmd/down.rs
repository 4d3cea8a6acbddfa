//! `berth down PROJECT [-v]`: take a project down: its containers and its own networks are
//! removed (its history is kept); with `-v`, its named and anonymous volumes too.

use crate::ctx::Ctx;
use berth_proto::reconciler::{DownReply, DownRequest};

#[derive(clap::Args)]
pub struct Args {
    /// The project.
    project: String,
    /// Also remove the volumes the project declares and its anonymous volumes (not external
    /// ones).
    #[arg(short = 'v', long = "volumes")]
    volumes: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r: DownReply = ctx
        .call_mut::<berth_proto::reconciler::verbs::Down>(&DownRequest {
            project: a.project,
            volumes: a.volumes,
        })
        .await?;
    if ctx.json() {
        return crate::output::print_json(&r);
    }
    eprintln!(
        "project {}: down, {} containers removed",
        r.project, r.removed
    );
    Ok(())
}

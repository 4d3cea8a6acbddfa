//! `berth down PROJECT`: take a project down (its containers are removed; its history is kept).

use crate::ctx::Ctx;
use berth_proto::reconciler::{self as rp, DownReply, ProjectRequest};
use berth_proto::Service;

#[derive(clap::Args)]
pub struct Args {
    /// The project.
    project: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r: DownReply = ctx
        .call_mut(
            Service::Reconciler,
            rp::DOWN,
            &ProjectRequest { project: a.project },
        )
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

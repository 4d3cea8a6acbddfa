//! `berth rollback PROJECT [--to REV]`: apply an earlier revision again (as a new revision).

use crate::ctx::Ctx;
use berth_proto::reconciler::{self as rp, ApplyReply, RollbackRequest};
use berth_proto::Service;

#[derive(clap::Args)]
pub struct Args {
    /// The project.
    project: String,
    /// The revision to restore (default: the one before the current).
    #[arg(long)]
    to: Option<u64>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r: ApplyReply = ctx
        .call_mut(
            Service::Reconciler,
            rp::ROLLBACK,
            &RollbackRequest {
                project: a.project,
                to: a.to,
            },
        )
        .await?;
    if ctx.json() {
        return crate::output::print_json(&r);
    }
    eprintln!(
        "project {}: rolled back, now revision {}",
        r.project, r.revision
    );
    Ok(())
}

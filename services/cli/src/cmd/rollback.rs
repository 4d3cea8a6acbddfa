//! `berth rollback PROJECT [--to REV]`: apply an earlier revision again (as a new revision),
//! on top of the project's revision read just before (another change stored in between makes
//! it fail with the conflict naming both revisions, as `apply`).

use crate::ctx::Ctx;
use berth_proto::reconciler::{ApplyReply, RollbackRequest};

#[derive(clap::Args)]
pub struct Args {
    /// The project.
    project: String,
    /// The revision to restore (default: the one before the current).
    #[arg(long)]
    to: Option<u64>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let base = crate::cmd::history::current_base(ctx, &a.project).await?;
    let r: ApplyReply = ctx
        .call_mut::<berth_proto::reconciler::verbs::Rollback>(&RollbackRequest {
            project: a.project,
            to: a.to,
            base: Some(base),
        })
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

//! `berth history PROJECT`: the stored revisions of a project's desired state.

use crate::ctx::Ctx;
use berth_proto::reconciler::{self as rp, HistoryReply, ProjectRequest};
use berth_proto::Service;

#[derive(clap::Args)]
pub struct Args {
    /// The project.
    project: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r: HistoryReply = ctx
        .call(
            Service::Reconciler,
            rp::HISTORY,
            &ProjectRequest { project: a.project },
        )
        .await?;
    if ctx.json() {
        return crate::output::print_json(&r);
    }
    let mut t = crate::output::table(&["REVISION", "APPLIED", "SERVICES", "NOTE"]);
    for i in &r.revisions {
        let note = match (i.deleted, i.rollback_of) {
            (true, _) => "down".to_string(),
            (false, Some(of)) => format!("rollback to {of}"),
            _ => String::new(),
        };
        t.add_row(vec![
            i.revision.to_string(),
            i.applied_at.clone(),
            i.services.join(","),
            note,
        ]);
    }
    crate::output::print_table(&t);
    Ok(())
}

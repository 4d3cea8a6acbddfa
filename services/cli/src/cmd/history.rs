//! `berth history PROJECT`: the stored revisions of a project's desired state.

use crate::ctx::Ctx;
use berth_bus::BusError;
use berth_proto::reconciler::{BaseRevision, HistoryReply, ProjectRequest};
use berth_proto::ErrorCode;

#[derive(clap::Args)]
pub struct Args {
    /// The project.
    project: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r: HistoryReply = ctx
        .call::<berth_proto::reconciler::verbs::History>(&ProjectRequest { project: a.project })
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

/// The revision a change of `project` builds on, as the reconciler has it now: its key's last
/// revision (a take-down counts), or none for a project never applied. `apply` and `rollback`
/// send it, so that a change stored by someone else in between is a conflict, not lost.
pub async fn current_base(ctx: &Ctx, project: &str) -> anyhow::Result<BaseRevision> {
    let r: Result<HistoryReply, _> = ctx
        .call::<berth_proto::reconciler::verbs::History>(&ProjectRequest {
            project: project.to_string(),
        })
        .await;
    match r {
        Ok(h) => Ok(h
            .revisions
            .last()
            .map_or(BaseRevision::None, |i| BaseRevision::At(i.revision))),
        Err(e)
            if e.downcast_ref::<BusError>()
                .and_then(|b| b.remote())
                .is_some_and(|r| r.code == ErrorCode::NotFound) =>
        {
            Ok(BaseRevision::None)
        }
        Err(e) => Err(e),
    }
}

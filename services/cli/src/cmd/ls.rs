//! `berth ls`: projects, their revision and whether they have converged.

use crate::ctx::Ctx;
use berth_proto::reconciler::LsReply;

#[derive(clap::Args)]
pub struct Args {}

pub async fn run(ctx: &Ctx, _a: Args) -> anyhow::Result<()> {
    let r: LsReply = ctx
        .call::<berth_proto::reconciler::verbs::Ls>(&berth_proto::Empty {})
        .await?;
    if ctx.json() {
        return crate::output::print_json(&r);
    }
    let mut t = crate::output::table(&["PROJECT", "REVISION", "SERVICES", "RUNNING", "STATUS"]);
    for p in &r.projects {
        let status = match (&p.last_error, p.converged) {
            (_, true) => "converged".to_string(),
            (Some(e), false) => format!("failing: {e}"),
            (None, false) => "converging".to_string(),
        };
        t.add_row(vec![
            p.project.clone(),
            p.revision.to_string(),
            p.services.to_string(),
            format!("{}/{}", p.running_containers, p.desired_containers),
            status,
        ]);
    }
    crate::output::print_table(&t);
    Ok(())
}

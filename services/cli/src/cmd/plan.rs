//! `berth plan -f FILE`: what `apply` would create, replace, remove or start, and why.
//! Exits 0 when nothing would change, 2 when something would. Says which revision it planned
//! against (`apply --base REV` stores only on top of it).

use crate::cmd::compose::SpecArgs;
use crate::ctx::{exit, Ctx};
use berth_proto::reconciler::{PlanReply, PlanRequest};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    spec: SpecArgs,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let (project, _) = a.spec.load()?;
    let reply: PlanReply = ctx
        .call::<berth_proto::reconciler::verbs::Plan>(&PlanRequest {
            project: project.name.clone(),
            spec: serde_json::to_value(&project)?,
        })
        .await?;
    if ctx.json() {
        crate::output::print_json(&reply)?;
    } else {
        if let Some(b) = reply.base {
            // What `apply --base` takes to store exactly on top of what was planned against.
            eprintln!("project {}: planned against revision {b}", reply.project);
        }
        print_steps(&reply);
    }
    if reply.steps.is_empty() {
        Ok(())
    } else {
        Err(exit(2))
    }
}

fn print_steps(reply: &PlanReply) {
    if reply.steps.is_empty() {
        println!("project {}: no change", reply.project);
    } else {
        let mut t = crate::output::table(&["ACTION", "CONTAINER", "WHY"]);
        for s in &reply.steps {
            t.add_row(vec![
                s.action.clone(),
                s.container.clone(),
                s.reason.clone(),
            ]);
        }
        crate::output::print_table(&t);
    }
}

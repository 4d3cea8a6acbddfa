//! `berth apply -f FILE [-p NAME] [--base REV] [--wait]`: store the spec as the project's next
//! revision; the reconciler converges toward it. With `--wait`, return once converged (or fail
//! with why). The spec is stored only on top of the revision it was planned against (`--base`,
//! else the project's revision read just before): if another apply was stored in between, this
//! one fails with the conflict naming both revisions and stores nothing.

use crate::cmd::compose::SpecArgs;
use crate::ctx::Ctx;
use anyhow::{anyhow, bail};
use berth_proto::reconciler::{ApplyReply, ApplyRequest, BaseRevision, LsReply};
use berth_proto::{subjects, Event};
use futures::StreamExt;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    spec: SpecArgs,
    /// Wait until the project has converged (or a step fails).
    #[arg(long)]
    wait: bool,
    /// Store only if the project is still at this revision (as `berth plan` showed it), or
    /// `none` for a project never applied. Default: the revision read just before applying.
    #[arg(long, value_name = "REV|none")]
    base: Option<BaseRevision>,
    /// How long --wait waits (a duration: 5m, 90s, 1h30m).
    #[arg(long, default_value = "5m", value_parser = berth_docker::units::parse_duration)]
    wait_timeout: Duration,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let (project, files) = a.spec.load()?;
    let name = project.name.clone();
    let bus = ctx.bus().await?;
    // Subscribe before applying so no event is missed.
    let mut events = if a.wait {
        Some(
            bus.client()
                .subscribe(format!("{}.*.reconcile.>", subjects::EVENTS_PREFIX))
                .await
                .map_err(|e| anyhow!("subscribing to reconcile events: {e}"))?,
        )
    } else {
        None
    };
    let base = match a.base {
        Some(b) => b,
        None => crate::cmd::history::current_base(ctx, &name).await?,
    };
    let reply: ApplyReply = ctx
        .call_mut::<berth_proto::reconciler::verbs::Apply>(&ApplyRequest {
            project: name.clone(),
            spec: serde_json::to_value(&project)?,
            files,
            base: Some(base),
        })
        .await?;
    if ctx.json() && !a.wait {
        crate::output::print_json(&reply)?;
        return Ok(());
    }
    let what = if reply.changed {
        "applied as"
    } else {
        "unchanged at"
    };
    eprintln!("project {name}: {what} revision {}", reply.revision);
    let Some(events) = events.as_mut() else {
        return Ok(());
    };
    // Already converged (a no-op re-apply)?
    let ls: LsReply = ctx
        .call::<berth_proto::reconciler::verbs::Ls>(&berth_proto::Empty {})
        .await?;
    if let Some(p) = ls.projects.iter().find(|p| p.project == name) {
        if p.converged && p.revision == reply.revision {
            eprintln!(
                "project {name}: converged ({} containers running)",
                p.running_containers
            );
            return Ok(());
        }
    }
    let deadline = tokio::time::Instant::now() + a.wait_timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, events.next())
            .await
            .map_err(|_| {
                anyhow!(
                    "project {name} did not converge within {:?}",
                    a.wait_timeout
                )
            })?
            .ok_or_else(|| anyhow!("the event subscription ended"))?;
        let Ok(ev) = serde_json::from_slice::<Event>(&msg.payload) else {
            continue;
        };
        if ev.name != name {
            continue;
        }
        let rev = ev
            .attrs
            .get("revision")
            .and_then(|r| r.as_u64())
            .unwrap_or(0);
        if rev < reply.revision {
            continue;
        }
        match ev.action.as_str() {
            "step" => {
                if let Some(s) = ev.attrs.get("step").and_then(|s| s.as_str()) {
                    eprintln!("  {s}");
                }
            }
            "converged" => {
                eprintln!("project {name}: converged");
                return Ok(());
            }
            "failed" => {
                let c = ev
                    .attrs
                    .get("container")
                    .and_then(|s| s.as_str())
                    .unwrap_or("?");
                let e = ev
                    .attrs
                    .get("error")
                    .and_then(|s| s.as_str())
                    .unwrap_or("?");
                bail!("project {name}: {c}: {e}");
            }
            _ => {}
        }
    }
}

//! `berth ps [-a] [-q] [--no-trunc] [--filter KEY=VALUE] [--json]`: the node's containers.

use crate::ctx::Ctx;
use crate::output::{human_duration, print_json, print_table, table};
use anyhow::{anyhow, bail};
use berth_proto::supervisor::*;

#[derive(clap::Args)]
pub struct Args {
    /// Show every container (default: running ones).
    #[arg(short = 'a', long)]
    all: bool,
    /// Only the ids.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Do not shorten ids and commands.
    #[arg(long = "no-trunc")]
    no_trunc: bool,
    /// label=KEY, label=KEY=VALUE, name=TEXT or status=STATUS; repeat to combine.
    #[arg(short = 'f', long = "filter")]
    filters: Vec<String>,
}

/// `Up 5 minutes`, `Exited (1) 3 seconds ago`, as Docker writes it.
pub fn status_text(st: &ContainerState) -> String {
    let ago = |t: &Option<String>| {
        t.as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| {
                let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                human_duration(secs)
            })
            .unwrap_or_default()
    };
    let health = st
        .health
        .as_ref()
        .map(|h| match h.status {
            HealthStatus::Starting => " (health: starting)".to_string(),
            s => format!(" ({})", s.as_str()),
        })
        .unwrap_or_default();
    match st.status {
        ContainerStatus::Created => "Created".into(),
        ContainerStatus::Running => format!("Up {}{health}", ago(&st.started_at)),
        ContainerStatus::Paused => format!("Up {} (Paused)", ago(&st.started_at)),
        ContainerStatus::Restarting => format!(
            "Restarting ({}) {} ago",
            st.exit_code.unwrap_or(0),
            ago(&st.finished_at)
        ),
        ContainerStatus::Exited => format!(
            "Exited ({}) {} ago",
            st.exit_code.unwrap_or(0),
            ago(&st.finished_at)
        ),
        ContainerStatus::Dead => "Dead".into(),
    }
}

pub fn parse_filters(filters: &[String], req: &mut ListRequest) -> anyhow::Result<()> {
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {f:?}: expected KEY=VALUE"))?;
        match k {
            "label" => match v.split_once('=') {
                Some((lk, lv)) => {
                    req.labels.insert(lk.to_string(), lv.to_string());
                }
                None => req.label_keys.push(v.to_string()),
            },
            "name" => req.name = Some(v.to_string()),
            "status" => req.status = Some(v.parse().map_err(|e: String| anyhow!("--filter: {e}"))?),
            other => bail!("--filter {other:?}: supported keys are label, name and status"),
        }
    }
    Ok(())
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let mut req = ListRequest {
        all: a.all,
        ..Default::default()
    };
    parse_filters(&a.filters, &mut req)?;
    let r: ListReply = ctx
        .call::<berth_proto::supervisor::verbs::List>(&req)
        .await?;
    if ctx.json() {
        return print_json(&r.containers);
    }
    let short = |id: &str| {
        if a.no_trunc {
            id.to_string()
        } else {
            id.chars().take(12).collect()
        }
    };
    if a.quiet {
        for c in &r.containers {
            println!("{}", short(&c.id));
        }
        return Ok(());
    }
    let mut t = table(&[
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "NAMES",
    ]);
    for c in &r.containers {
        let mut cmd = c.args.join(" ");
        if !a.no_trunc && cmd.chars().count() > 20 {
            cmd = cmd.chars().take(19).collect::<String>() + "…";
        }
        let created = chrono::DateTime::parse_from_rfc3339(&c.created_at)
            .map(|t| {
                let s = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0;
                format!("{} ago", human_duration(s))
            })
            .unwrap_or_default();
        t.add_row(vec![
            short(&c.id),
            c.image.clone(),
            format!("\"{cmd}\""),
            created,
            status_text(c),
            c.name.clone(),
        ]);
    }
    print_table(&t);
    Ok(())
}

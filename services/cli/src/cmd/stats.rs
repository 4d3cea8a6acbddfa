//! `berth stats [--no-stream] [CONTAINER...]`: memory, CPU and processes of running
//! containers, refreshed every second (or once with `--no-stream`).

use crate::ctx::Ctx;
use crate::output::{human_size, print_json, print_table, table};
use berth_proto::supervisor::{ContainerStats, StatsReply, StatsRequest};
use std::collections::HashMap;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Print one reading and return.
    #[arg(long = "no-stream")]
    no_stream: bool,
    /// Containers to show (default: every running one).
    containers: Vec<String>,
}

/// CPU use between two readings, in percent of one CPU (200% = two CPUs busy).
pub fn cpu_percent(prev: &ContainerStats, now: &ContainerStats) -> Option<f64> {
    let t0 = chrono::DateTime::parse_from_rfc3339(&prev.read_at).ok()?;
    let t1 = chrono::DateTime::parse_from_rfc3339(&now.read_at).ok()?;
    let wall = (t1 - t0).num_nanoseconds()? as f64;
    if wall <= 0.0 {
        return None;
    }
    Some(now.cpu_usage_ns.saturating_sub(prev.cpu_usage_ns) as f64 / wall * 100.0)
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let req = StatsRequest {
        containers: a.containers.clone(),
    };
    let mut prev: HashMap<String, ContainerStats> = HashMap::new();
    // The first CPU figure needs two readings.
    let first: StatsReply = ctx
        .call::<berth_proto::supervisor::verbs::Stats>(&req)
        .await?;
    for s in first.stats {
        prev.insert(s.id.clone(), s);
    }
    loop {
        tokio::time::sleep(Duration::from_millis(if a.no_stream { 200 } else { 1000 })).await;
        let r: StatsReply = ctx
            .call::<berth_proto::supervisor::verbs::Stats>(&req)
            .await?;
        if ctx.json() {
            print_json(&r)?;
        } else {
            if !a.no_stream {
                // Clear the screen and go home, as `docker stats` does.
                print!("\x1b[2J\x1b[H");
            }
            let mut t = table(&[
                "CONTAINER ID",
                "NAME",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "PIDS",
            ]);
            for s in &r.stats {
                let cpu = prev
                    .get(&s.id)
                    .and_then(|p| cpu_percent(p, s))
                    .map(|c| format!("{c:.2}%"))
                    .unwrap_or_else(|| "--".into());
                let limit = s.memory_limit_bytes;
                let mem_pct = limit
                    .filter(|l| *l > 0)
                    .map(|l| format!("{:.2}%", s.memory_bytes as f64 / l as f64 * 100.0))
                    .unwrap_or_else(|| "--".into());
                t.add_row(vec![
                    s.id.chars().take(12).collect(),
                    s.name.clone(),
                    cpu,
                    format!(
                        "{} / {}",
                        human_size(s.memory_bytes),
                        limit.map(human_size).unwrap_or_else(|| "unlimited".into())
                    ),
                    mem_pct,
                    match s.pids_limit {
                        Some(l) => format!("{} / {l}", s.pids),
                        None => s.pids.to_string(),
                    },
                ]);
            }
            print_table(&t);
        }
        if a.no_stream {
            return Ok(());
        }
        prev = r.stats.into_iter().map(|s| (s.id.clone(), s)).collect();
    }
}

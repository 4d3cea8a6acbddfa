//! `berth logs [-f] [--since] [--until] [--tail N] [-t] CONTAINER`: the container's output from
//! its log file; with `-f`, then the live lines the supervisor publishes while it runs.

use crate::ctx::Ctx;
use anyhow::{anyhow, bail, Context};
use berth_proto::isolator::LogLine;
use berth_proto::supervisor::*;
use berth_proto::Service;
use futures::StreamExt;
use std::io::Write;

#[derive(clap::Args)]
pub struct Args {
    /// Keep following the output while the container runs.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only lines since this time: a duration ago (10m) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Only lines before this time: a duration ago or an RFC 3339 time.
    #[arg(long)]
    until: Option<String>,
    /// Only the last N lines (`all` for every line).
    #[arg(short = 'n', long, default_value = "all")]
    tail: String,
    /// Prefix every line with its time.
    #[arg(short = 't', long)]
    timestamps: bool,
    container: String,
}

/// Print a line on stdout or stderr as the container wrote it.
pub fn print_line(l: &LogLine, timestamps: bool) {
    let text = if timestamps {
        format!("{} {}", l.t, l.log)
    } else {
        l.log.clone()
    };
    if l.s == "stderr" {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(text.as_bytes());
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(text.as_bytes());
        let _ = o.flush();
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let tail = match a.tail.as_str() {
        "all" => None,
        n => Some(
            n.parse::<usize>()
                .map_err(|_| anyhow!("--tail {n:?}: expected a number or `all`"))?,
        ),
    };
    let time = |s: &Option<String>| -> anyhow::Result<Option<String>> {
        s.as_deref()
            .map(|t| crate::cmd::events::parse_time(t).map(|t| t.to_rfc3339()))
            .transpose()
    };
    let req = LogsRequest {
        container: a.container.clone(),
        since: time(&a.since)?,
        until: time(&a.until)?,
        tail,
    };
    if !a.follow {
        let r: LogsReply = ctx.call(Service::Supervisor, LOGS, &req).await?;
        for l in &r.lines {
            print_line(l, a.timestamps);
        }
        return Ok(());
    }
    if a.until.is_some() {
        bail!("--until cannot be combined with --follow");
    }
    // Resolve the id first (the live subject carries it), subscribe, then read the history:
    // live lines already in the history are dropped by their sequence number.
    let info: InspectReply = ctx
        .call(
            Service::Supervisor,
            INSPECT,
            &Target {
                container: a.container.clone(),
            },
        )
        .await?;
    let node = ctx.node()?;
    let bus = ctx.bus().await?;
    let mut live = bus
        .client()
        .subscribe(logs_subject(&node, &info.state.id))
        .await
        .context("subscribe to live logs")?;
    let req = LogsRequest {
        container: info.state.id.clone(),
        ..req
    };
    let r: LogsReply = ctx.call(Service::Supervisor, LOGS, &req).await?;
    for l in &r.lines {
        print_line(l, a.timestamps);
    }
    if !r.running {
        return Ok(());
    }
    while let Some(m) = live.next().await {
        match serde_json::from_slice::<LogMessage>(&m.payload) {
            Ok(LogMessage::Line { epoch, seq, line }) => {
                if epoch == r.epoch && seq <= r.seq {
                    continue;
                }
                print_line(&line, a.timestamps);
            }
            Ok(LogMessage::Exited { restarting, .. }) => {
                if !restarting {
                    return Ok(());
                }
            }
            Err(_) => {}
        }
    }
    Ok(())
}

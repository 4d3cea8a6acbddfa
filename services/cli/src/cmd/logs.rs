//! `berth logs [-f] [--since] [--until] [--tail N] [-t] CONTAINER`: the container's output from
//! its log files, of any size: the supervisor streams it in chunks to a subject of this
//! command's own, each acknowledged once written (so a slow reader slows the stream), and its
//! reply counts what it sent. With `-f`, then the live lines it publishes while it runs.

use crate::ctx::Ctx;
use anyhow::{anyhow, bail, Context};
use berth_proto::isolator::LogLine;
use berth_proto::supervisor::*;
use futures::StreamExt;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Keep following the output while the container runs.
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only lines since this time: a duration ago (10m), an RFC 3339 time, a date, or a Unix
    /// timestamp.
    #[arg(long)]
    since: Option<String>,
    /// Only lines before this time (same forms as --since).
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

/// The text of a line as printed.
fn text(l: &LogLine, timestamps: bool) -> std::borrow::Cow<'_, str> {
    if timestamps {
        format!("{} {}", l.t, l.log).into()
    } else {
        l.log.as_str().into()
    }
}

/// Print a line on stdout or stderr as the container wrote it.
pub fn print_line(l: &LogLine, timestamps: bool) {
    let _ = print_lines(std::slice::from_ref(l), timestamps);
}

/// Print lines on stdout or stderr as the container wrote them, each run of lines of one
/// stream in one write.
fn print_lines(lines: &[LogLine], timestamps: bool) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut to_err = false;
    let flush = |buf: &mut Vec<u8>, to_err: bool| -> std::io::Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let r = if to_err {
            let mut e = std::io::stderr().lock();
            e.write_all(buf).and_then(|_| e.flush())
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(buf).and_then(|_| o.flush())
        };
        buf.clear();
        r
    };
    for l in lines {
        let err = l.s == "stderr";
        if err != to_err {
            flush(&mut buf, to_err)?;
            to_err = err;
        }
        buf.extend_from_slice(text(l, timestamps).as_bytes());
    }
    flush(&mut buf, to_err)
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
    if a.follow && a.until.is_some() {
        bail!("--until cannot be combined with --follow");
    }
    let mut req = LogsRequest {
        container: a.container.clone(),
        since: time(&a.since)?,
        until: time(&a.until)?,
        tail,
        stream: None,
    };
    let node = ctx.node()?;
    let bus = ctx.bus().await?;
    // To follow: resolve the id first (the live subject carries it), subscribe, then read
    // the history: live lines already in the history are dropped by their sequence number.
    let mut live = None;
    if a.follow {
        let info: InspectReply = ctx
            .call::<berth_proto::supervisor::verbs::Inspect>(&Target {
                container: a.container.clone(),
            })
            .await?;
        live = Some(
            bus.client()
                .subscribe(logs_subject(&node, &info.state.id))
                .await
                .context("subscribe to live logs")?,
        );
        req.container = info.state.id;
    }
    let r = match history(ctx, &node, req, a.timestamps).await? {
        Some(r) => r,
        // The output was closed (`| head`): nothing more to write.
        None => return Ok(()),
    };
    let Some(mut live) = live.filter(|_| r.running) else {
        return Ok(());
    };
    while let Some(m) = live.next().await {
        match serde_json::from_slice::<LogMessage>(&m.payload) {
            Ok(LogMessage::Line { epoch, seq, line }) => {
                if epoch == r.epoch && seq <= r.seq {
                    continue;
                }
                if let Err(e) = print_lines(std::slice::from_ref(&line), a.timestamps) {
                    return closed_output(e);
                }
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

/// A closed output (the reader went away) ends the command quietly; another write error
/// does not.
fn closed_output<T: Default>(e: std::io::Error) -> anyhow::Result<T> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(T::default())
    } else {
        Err(anyhow::Error::new(e).context("write the logs"))
    }
}

/// The history `req` selects, printed as it arrives: streamed in chunks to a subject of our
/// own, each acknowledged once written; the reply says what was sent, which must be what
/// came. Waits as long as chunks keep coming, and `--timeout` seconds of silence at most.
/// `None` when the output was closed.
async fn history(
    ctx: &Ctx,
    node: &str,
    mut req: LogsRequest,
    timestamps: bool,
) -> anyhow::Result<Option<LogsReply>> {
    let bus = ctx.bus().await?;
    let subject = logs_stream_subject(node, &berth_bus::random_hex(16));
    let mut chunks = bus
        .client()
        .subscribe(subject.clone())
        .await
        .context("subscribe to the log stream")?;
    req.stream = Some(subject.clone());
    let idle = Duration::from_secs(ctx.global.timeout.max(1));
    // The reply comes once every chunk is acknowledged: however long that takes.
    let mut opts = ctx.request_options(false);
    opts.timeout = Duration::from_secs(7 * 24 * 3600);
    let reply = bus.ask::<berth_proto::supervisor::verbs::Logs>(node, &req, &opts);
    tokio::pin!(reply);
    let mut got = StreamedCount::default();
    let r = loop {
        tokio::select! {
            r = &mut reply => break r?,
            m = chunks.next() => {
                let Some(m) = m else {
                    bail!("the bus connection closed while receiving the logs of {}", req.container);
                };
                let chunk: LogChunk = serde_json::from_slice(&m.payload)
                    .with_context(|| format!("a log chunk on {subject}"))?;
                if chunk.probe {
                    continue;
                }
                if chunk.n != got.chunks + 1 {
                    bail!(
                        "the logs of {} arrived out of order: chunk {} after chunk {}",
                        req.container, chunk.n, got.chunks
                    );
                }
                if let Err(e) = print_lines(&chunk.lines, timestamps) {
                    return closed_output(e);
                }
                got.chunks += 1;
                got.lines += chunk.lines.len() as u64;
                got.bytes += chunk.lines.iter().map(|l| l.log.len() as u64).sum::<u64>();
                if let Some(to) = m.reply {
                    bus.client()
                        .publish(to, chunk.n.to_string().into())
                        .await
                        .context("acknowledge a log chunk")?;
                }
            }
            _ = tokio::time::sleep(idle) => bail!(
                "the supervisor on node {node} sent no log line of {} for {idle:?}: the outcome is unknown",
                req.container
            ),
        }
    };
    if got != r.streamed {
        bail!(
            "the logs of {} arrived incomplete: {} lines ({} bytes) of {} ({} bytes)",
            req.container,
            got.lines,
            got.bytes,
            r.streamed.lines,
            r.streamed.bytes
        );
    }
    Ok(Some(r))
}

//! `berth events`: replay the event stream from `--since`, then follow live (until `--until`).
//! Stored events are read with direct gets and live ones by subscription: the CLI and the
//! monitor create no consumer on the server (docs/security.md).

use crate::ctx::Ctx;
use anyhow::{anyhow, bail, Context};
use berth_proto::{subjects, Event};
use futures::StreamExt;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Show events since this time: a duration ago (`10m`, `1h30m`) or an RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    /// Stop at this time (a duration ago or an RFC 3339 time); without it, follow forever.
    #[arg(long)]
    until: Option<String>,
    /// Only events matching `key=value` (node, entity, action, name, or an attribute);
    /// repeat to combine.
    #[arg(long = "filter", short = 'f')]
    filters: Vec<String>,
    /// `json` for one JSON object a line.
    #[arg(long)]
    format: Option<String>,
}

/// A point in time as Docker's `--since`/`--until` take it: a duration ago (`10m`, `1h30m`),
/// an RFC 3339 time, a date and time without a zone (local time) or a date, or a Unix
/// timestamp in seconds with an optional fraction (`1700000000.5`).
pub fn parse_time(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(t) = unix_time(s) {
        return Ok(t);
    }
    let local = |n: NaiveDateTime| chrono::Local.from_local_datetime(&n).earliest();
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Some(t) = NaiveDateTime::parse_from_str(s, f).ok().and_then(local) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Some(t) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .and_then(local)
    {
        return Ok(t.with_timezone(&Utc));
    }
    let d = berth_docker::units::parse_duration(s).map_err(|_| {
        anyhow!(
            "time {s:?}: expected a duration like 10m, an RFC 3339 time, a date, or a Unix \
             timestamp"
        )
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(d)?)
}

/// `1700000000` or `1700000000.123456789`: seconds since the epoch.
fn unix_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse::<u32>().ok()?
    };
    chrono::DateTime::from_timestamp(secs.parse().ok()?, nanos)
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let json = match a.format.as_deref() {
        None => ctx.json(),
        Some("json") => true,
        Some(other) => bail!("--format {other:?}: only `json` is supported"),
    };
    let mut filters = Vec::new();
    for f in &a.filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| anyhow!("--filter {f:?}: expected key=value"))?;
        filters.push((k.to_string(), v.to_string()));
    }
    let since = a.since.as_deref().map(parse_time).transpose()?;
    let until = a.until.as_deref().map(parse_time).transpose()?;

    // Narrow by subject where the filter names a subject token.
    let token = |key: &str| {
        filters
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "*".into())
    };
    let filter_subject = format!(
        "{}.{}.{}.{}",
        subjects::EVENTS_PREFIX,
        token("node"),
        {
            let e = token("entity");
            if e == "*" {
                token("type")
            } else {
                e
            }
        },
        token("action")
    );

    let bus = ctx.bus().await?;
    let client = bus.client();
    // Live events first, so that none published while the stored ones are read is missed;
    // those also read from the stream are shown once (by their unique id).
    let following_from = chrono::Utc::now() - chrono::Duration::seconds(REPLAY_OVERLAP_SECS);
    let mut live = client
        .subscribe(filter_subject.clone())
        .await
        .with_context(|| format!("following {filter_subject}"))?;
    let mut replayed = std::collections::HashSet::new();
    if let Some(since) = since {
        let mut show_stored = |ev: Event, stored_at: Option<chrono::DateTime<chrono::Utc>>| {
            if until.is_some_and(|u| event_time(&ev).is_some_and(|t| t > u)) {
                return Ok::<bool, anyhow::Error>(false);
            }
            if stored_at.is_none_or(|t| t >= following_from) {
                replayed.insert(ev.id.clone());
            }
            if filters.iter().all(|(k, v)| ev.matches(k, v)) {
                show(&ev, json)?;
            }
            Ok(true)
        };
        replay(client, &filter_subject, since, &mut show_stored).await?;
    }
    if until.is_some_and(|u| u <= chrono::Utc::now()) {
        // Everything up to `until` was stored, and read.
        return Ok(());
    }
    loop {
        let next = match until {
            Some(u) => {
                let left = (u - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
                match tokio::time::timeout(left, live.next()).await {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                }
            }
            None => live.next().await,
        };
        let Some(msg) = next else { return Ok(()) };
        let Some(ev) = decode(&msg.subject, &msg.payload) else {
            continue;
        };
        if replayed.remove(&ev.id) {
            continue;
        }
        if until.is_some_and(|u| event_time(&ev).is_some_and(|t| t > u)) {
            return Ok(());
        }
        if filters.iter().all(|(k, v)| ev.matches(k, v)) {
            show(&ev, json)?;
        }
    }
}

/// Stored events older than the live subscription by this much may also arrive live (clocks
/// of the server and of this host, a publish in flight): their ids are remembered.
const REPLAY_OVERLAP_SECS: i64 = 10;
/// Stored events asked for at once.
const REPLAY_BATCH: usize = 256;

/// Read the stored events on `filter` from `since` on, oldest first, with batched direct gets
/// on the stream (a reader creates no consumer on the server, see docs/security.md), handing
/// each to `each` with the time the stream stored it, until `each` says stop or none is left.
async fn replay(
    client: &async_nats::Client,
    filter: &str,
    since: chrono::DateTime<chrono::Utc>,
    each: &mut dyn FnMut(Event, Option<chrono::DateTime<chrono::Utc>>) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let api = format!("$JS.API.DIRECT.GET.{}", subjects::EVENTS_STREAM);
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .context("reading stored events")?;
    let mut request = serde_json::json!({
        "batch": REPLAY_BATCH,
        "next_by_subj": filter,
        "start_time": since.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    });
    loop {
        client
            .publish_with_reply(api.clone(), inbox.clone(), request.to_string().into())
            .await
            .context("reading stored events")?;
        let mut last_seq = None;
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(10), replies.next())
                .await
                .map_err(|_| {
                    anyhow!(
                        "the {} stream did not answer within 10s",
                        subjects::EVENTS_STREAM
                    )
                })?
                .ok_or_else(|| anyhow!("the bus connection closed while reading events"))?;
            let header = |name: &str| {
                msg.headers
                    .as_ref()
                    .and_then(|h| h.get(name))
                    .map(|v| v.as_str().to_string())
            };
            match msg.status {
                Some(async_nats::StatusCode::NOT_FOUND) => return Ok(()),
                Some(async_nats::StatusCode::NO_RESPONDERS) => bail!(
                    "the {} stream does not answer (is berthd running?)",
                    subjects::EVENTS_STREAM
                ),
                Some(s) if s.as_u16() == 204 => {
                    // End of a batch: ask for the next one if more are stored.
                    let pending: u64 = header("Nats-Num-Pending")
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    match last_seq {
                        Some(seq) if pending > 0 => {
                            request = serde_json::json!({
                                "batch": REPLAY_BATCH,
                                "next_by_subj": filter,
                                "seq": seq + 1,
                            });
                            break;
                        }
                        _ => return Ok(()),
                    }
                }
                Some(s) if s.as_u16() >= 300 => bail!(
                    "reading the {} stream: {s} {}",
                    subjects::EVENTS_STREAM,
                    msg.description.as_deref().unwrap_or_default()
                ),
                _ => {
                    last_seq = header("Nats-Sequence").and_then(|s| s.parse::<u64>().ok());
                    let stored_at = header("Nats-Time-Stamp").and_then(|t| {
                        chrono::DateTime::parse_from_rfc3339(&t)
                            .ok()
                            .map(|t| t.with_timezone(&chrono::Utc))
                    });
                    let subject = header("Nats-Subject").unwrap_or_default();
                    if let Some(ev) = decode(&subject, &msg.payload) {
                        if !each(ev, stored_at)? {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

fn event_time(ev: &Event) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(&ev.time)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// An event, or `None` (with a note) when it does not decode.
fn decode(subject: &str, payload: &[u8]) -> Option<Event> {
    match serde_json::from_slice(payload) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("berth: skipping an event that does not decode on {subject}: {e}");
            None
        }
    }
}

fn show(ev: &Event, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(ev)?);
    } else {
        let attrs: Vec<String> = ev
            .attrs
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect();
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" ({})", attrs.join(", "))
        };
        println!(
            "{} {} {}.{} {}{}",
            ev.time, ev.node, ev.entity, ev.action, ev.name, attrs
        );
    }
    Ok(())
}
#[cfg(test)]
mod tests {
    use super::parse_time;

    #[test]
    fn times_parse_as_docker_takes_them() {
        let t = parse_time("1700000000").unwrap();
        assert_eq!(t.to_rfc3339(), "2023-11-14T22:13:20+00:00");
        let t = parse_time("1700000000.25").unwrap();
        assert_eq!(t.timestamp_subsec_millis(), 250);
        let t = parse_time("2024-01-02T03:04:05Z").unwrap();
        assert_eq!(t.timestamp(), 1704164645);
        let ago = chrono::Utc::now() - parse_time("10m").unwrap();
        assert!((599..=601).contains(&ago.num_seconds()), "{ago}");
        assert!(parse_time("2024-01-02").is_ok());
        assert!(parse_time("2024-01-02T03:04:05").is_ok());
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("12.x").is_err());
        // Durations are Go's, as Docker reads them: no `min`, no spaces.
        let ago = chrono::Utc::now() - parse_time("1h2m3.5s").unwrap();
        assert!((3722..=3724).contains(&ago.num_seconds()), "{ago}");
        assert!(parse_time("10min").is_err());
    }
}

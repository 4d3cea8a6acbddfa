//! `berth events`: replay the event stream from `--since`, then follow live (until `--until`).

use crate::ctx::Ctx;
use anyhow::{anyhow, bail, Context};
use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
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
    let d = humantime::parse_duration(s).map_err(|_| {
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
    let stream = bus
        .jetstream()
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .with_context(|| format!("opening the {} stream", subjects::EVENTS_STREAM))?;
    let deliver_policy = match since {
        Some(t) => DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                t.timestamp_nanos_opt().unwrap_or(0) as i128,
            )?,
        },
        None => DeliverPolicy::New,
    };
    let consumer = stream
        .create_consumer(OrderedConfig {
            filter_subject,
            deliver_policy,
            ..Default::default()
        })
        .await
        .context("creating a consumer on the event stream")?;
    let mut messages = consumer.messages().await.context("reading events")?;

    loop {
        let next = match until {
            Some(u) => {
                let left = (u - chrono::Utc::now()).to_std().unwrap_or(Duration::ZERO);
                // Past `until`: drain what is already stored, then stop.
                let wait = left.max(Duration::from_millis(300));
                match tokio::time::timeout(wait, messages.next()).await {
                    Ok(m) => m,
                    Err(_) => return Ok(()),
                }
            }
            None => messages.next().await,
        };
        let Some(msg) = next else { return Ok(()) };
        let msg = msg.map_err(|e| anyhow!("reading events: {e}"))?;
        let ev: Event = match serde_json::from_slice(&msg.payload) {
            Ok(e) => e,
            Err(e) => {
                eprintln!(
                    "berth: skipping an event that does not decode on {}: {e}",
                    msg.subject
                );
                continue;
            }
        };
        if let Some(u) = until {
            if chrono::DateTime::parse_from_rfc3339(&ev.time)
                .map(|t| t.with_timezone(&chrono::Utc) > u)
                .unwrap_or(false)
            {
                return Ok(());
            }
        }
        if !filters.iter().all(|(k, v)| ev.matches(k, v)) {
            continue;
        }
        if json {
            println!("{}", serde_json::to_string(&ev)?);
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
    }
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
    }
}

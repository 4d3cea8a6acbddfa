//! The JetStream stream and key-value buckets berth needs (`BERTH_EVENTS`, `berth_desired`,
//! `berth_actual`, `berth_idem`): created idempotently at start by the identity that owns
//! each, and kept: when one is deleted under a running berth (the server's deletion advisory,
//! or an operation that finds it gone), its owner creates it again and says so once in its log.

use crate::{Bus, BusError};
use async_nats::jetstream::{self, kv, stream};
use berth_proto::subjects;
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long events are kept.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How many bytes of events are kept.
pub const EVENTS_MAX_BYTES: i64 = 256 * 1024 * 1024;
/// Revisions of desired state kept per project (for `history` and `rollback`).
pub const DESIRED_HISTORY: i64 = 64;

/// The server's advisory subject when a stream is deleted (the last token is the stream).
pub const STREAM_DELETED_ADVISORY: &str = "$JS.EVENT.ADVISORY.STREAM.DELETED";

/// A stream or bucket berth keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The `BERTH_EVENTS` stream.
    Events,
    /// The `berth_desired` bucket (the reconciler's).
    Desired,
    /// The `berth_actual` bucket (the supervisor's).
    Actual,
    /// The `berth_idem` bucket: first replies of state-changing commands, for their retries
    /// (every service's).
    Idempotency,
}

impl Part {
    pub const ALL: [Part; 4] = [Part::Events, Part::Desired, Part::Actual, Part::Idempotency];

    /// The JetStream stream behind it.
    pub fn stream(self) -> String {
        match self {
            Part::Events => subjects::EVENTS_STREAM.to_string(),
            Part::Desired => format!("KV_{}", subjects::KV_DESIRED),
            Part::Actual => format!("KV_{}", subjects::KV_ACTUAL),
            Part::Idempotency => format!("KV_{}", subjects::KV_IDEMPOTENCY),
        }
    }

    /// What the log calls it.
    pub fn describe(self) -> String {
        match self {
            Part::Events => format!("stream {}", subjects::EVENTS_STREAM),
            Part::Desired => format!("bucket {}", subjects::KV_DESIRED),
            Part::Actual => format!("bucket {}", subjects::KV_ACTUAL),
            Part::Idempotency => format!("bucket {}", subjects::KV_IDEMPOTENCY),
        }
    }

    /// Create it if missing; for the event stream, also let readers fetch stored events
    /// directly (`allow_direct`), which `berth events` replays with, creating nothing on the
    /// server.
    pub async fn ensure(self, bus: &Bus) -> Result<(), BusError> {
        let js = bus.jetstream();
        match self {
            Part::Events => {
                let config = stream::Config {
                    name: subjects::EVENTS_STREAM.to_string(),
                    subjects: vec![format!("{}.>", subjects::EVENTS_PREFIX)],
                    max_age: EVENTS_MAX_AGE,
                    max_bytes: EVENTS_MAX_BYTES,
                    duplicate_window: Duration::from_secs(120),
                    storage: stream::StorageType::File,
                    allow_direct: true,
                    ..Default::default()
                };
                let s = js
                    .get_or_create_stream(config)
                    .await
                    .map_err(|e| BusError::nats("create stream BERTH_EVENTS", e))?;
                let info = s.cached_info();
                if !info.config.allow_direct {
                    let mut updated = info.config.clone();
                    updated.allow_direct = true;
                    js.update_stream(updated)
                        .await
                        .map_err(|e| BusError::nats("update stream BERTH_EVENTS", e))?;
                }
                Ok(())
            }
            Part::Desired | Part::Actual | Part::Idempotency => {
                let (bucket, history, max_age) = match self {
                    Part::Desired => (subjects::KV_DESIRED, DESIRED_HISTORY, Duration::ZERO),
                    Part::Actual => (subjects::KV_ACTUAL, 1, Duration::ZERO),
                    _ => (subjects::KV_IDEMPOTENCY, 1, crate::server::IDEMPOTENCY_TTL),
                };
                if js.get_key_value(bucket).await.is_ok() {
                    return Ok(());
                }
                js.create_key_value(kv::Config {
                    bucket: bucket.to_string(),
                    history,
                    max_age,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| BusError::nats(&format!("create bucket {bucket}"), e))
            }
        }
    }

    /// Whether the server says its stream does not exist (`false` when it exists or the
    /// server could not be asked).
    async fn is_gone(self, js: &jetstream::Context) -> bool {
        match js.get_stream(self.stream()).await {
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                jetstream::context::GetStreamErrorKind::JetStream(j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
            ),
        }
    }
}

/// Which parts a service run on its own creates and keeps: the reconciler its bucket, the
/// supervisor the actual-state bucket and the event stream, the others the event stream; every
/// service the idempotency bucket, which berthd's services' connection keeps for all of them.
pub fn parts_of(service: &str) -> Vec<Part> {
    match service {
        "reconciler" => vec![Part::Desired],
        "supervisor" => vec![Part::Events, Part::Actual, Part::Idempotency],
        _ => vec![Part::Events, Part::Idempotency],
    }
}

/// Create (or update) the events stream and the state buckets.
pub async fn ensure(bus: &Bus) -> Result<(), BusError> {
    ensure_parts(bus, &Part::ALL).await
}

/// Create (or update) `parts`.
pub async fn ensure_parts(bus: &Bus, parts: &[Part]) -> Result<(), BusError> {
    for p in parts {
        p.ensure(bus).await?;
    }
    Ok(())
}

/// Keep `parts` in place until `shutdown`: when the server announces one deleted, or an
/// operation on this connection reports one gone ([`Bus::report_missing`]), look, and create
/// again what is gone, logging once for each re-creation.
pub fn keep(
    bus: &Bus,
    parts: Vec<Part>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let bus = bus.clone();
    tokio::spawn(async move {
        let missing = bus.missing();
        let advisories = format!("{STREAM_DELETED_ADVISORY}.*");
        let mut sub = match bus.client().subscribe(advisories).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(%e, "cannot follow stream deletions; re-creating on errors only");
                None
            }
        };
        loop {
            let named = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = missing.notified() => None,
                m = async {
                    match sub.as_mut() {
                        Some(s) => s.next().await,
                        None => futures::future::pending().await,
                    }
                } => match m {
                    Some(m) => Some(m.subject.as_str().rsplit('.').next().unwrap_or_default().to_string()),
                    None => { sub = None; continue }
                },
            };
            for p in &parts {
                if named.as_deref().is_some_and(|n| n != p.stream()) {
                    continue;
                }
                if !p.is_gone(bus.jetstream()).await {
                    continue;
                }
                match p.ensure(&bus).await {
                    Ok(()) => tracing::warn!(
                        part = %p.describe(),
                        "the {} was deleted under the running service; re-created it (empty)",
                        p.describe()
                    ),
                    Err(e) => tracing::error!(%e, "re-creating the {}", p.describe()),
                }
            }
            // A burst of reports (every publish of a deleted stream) makes one look.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

pub async fn desired(bus: &Bus) -> Result<kv::Store, BusError> {
    bucket(bus.jetstream(), subjects::KV_DESIRED).await
}

pub async fn actual(bus: &Bus) -> Result<kv::Store, BusError> {
    bucket(bus.jetstream(), subjects::KV_ACTUAL).await
}

async fn bucket(js: &jetstream::Context, name: &str) -> Result<kv::Store, BusError> {
    js.get_key_value(name)
        .await
        .map_err(|e| BusError::nats(&format!("open bucket {name}"), e))
}

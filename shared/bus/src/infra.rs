//! The JetStream stream and key-value buckets berth needs (`berth_desired`, `berth_actual`,
//! `berth_idem`), created idempotently at start.

use crate::{Bus, BusError};
use async_nats::jetstream::{self, kv, stream};
use berth_proto::subjects;
use std::time::Duration;

/// How long events are kept.
pub const EVENTS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How many bytes of events are kept.
pub const EVENTS_MAX_BYTES: i64 = 256 * 1024 * 1024;
/// Revisions of desired state kept per project (for `history` and `rollback`).
pub const DESIRED_HISTORY: i64 = 64;

/// Create (or update) the events stream and the state buckets.
pub async fn ensure(bus: &Bus) -> Result<(), BusError> {
    let js = bus.jetstream();
    js.get_or_create_stream(stream::Config {
        name: subjects::EVENTS_STREAM.to_string(),
        subjects: vec![format!("{}.>", subjects::EVENTS_PREFIX)],
        max_age: EVENTS_MAX_AGE,
        max_bytes: EVENTS_MAX_BYTES,
        duplicate_window: Duration::from_secs(120),
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| BusError::nats("create stream BERTH_EVENTS", e))?;
    for (bucket, history, max_age) in [
        (subjects::KV_DESIRED, DESIRED_HISTORY, Duration::ZERO),
        (subjects::KV_ACTUAL, 1, Duration::ZERO),
        // First replies of state-changing commands, for their retries.
        (subjects::KV_IDEMPOTENCY, 1, crate::server::IDEMPOTENCY_TTL),
    ] {
        if js.get_key_value(bucket).await.is_ok() {
            continue;
        }
        js.create_key_value(kv::Config {
            bucket: bucket.to_string(),
            history,
            max_age,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::nats(&format!("create bucket {bucket}"), e))?;
    }
    Ok(())
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

//! berth's bus layer over NATS: connecting (with reconnect), typed request/reply with
//! versioned envelopes and typed errors, hosting a service's verbs, publishing events into the
//! `BERTH_EVENTS` stream, the state buckets, and the node configuration every binary reads.

pub mod client;
pub mod config;
pub mod error;
pub mod host;
pub mod identity;
pub mod infra;
pub mod server;

pub use client::{Bus, ConnectOptions, Credentials, RequestOptions};
pub use config::NodeConfig;
pub use error::BusError;
pub use identity::Identity;
pub use server::{serve, Router, ServiceContext};

/// RFC 3339 UTC timestamp with nanoseconds, as berth writes times everywhere.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// A fresh random id of `n` hex characters.
pub fn random_hex(n: usize) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| char::from_digit(rng.gen_range(0..16), 16).unwrap())
        .collect()
}

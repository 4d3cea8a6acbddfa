//! `berthd`: one process hosting every berth service for a single host, with its own local
//! `nats-server` when no NATS URL is configured.
//!
//! Config → build → wait for a signal → drain: [`Daemon::start`] reads the node config,
//! starts (or connects to) NATS, creates the stream and buckets, and starts the five services;
//! [`Daemon::run_until`] waits for the shutdown token, then stops the services (they finish the
//! requests in flight), then the NATS child. Containers are never stopped by the daemon.

pub mod local_nats;
pub mod services;

pub use local_nats::LocalNats;

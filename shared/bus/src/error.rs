//! What can go wrong on the bus, as typed errors that name where.

use berth_proto::BerthError;
use std::time::Duration;

/// What can go wrong talking over the bus. Every variant names where.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {reason} (is berthd running?)")]
    Connect { url: String, reason: String },
    #[error("cannot read credentials file {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("{what} {path} {problem}: run `{fix}`")]
    Loose {
        what: &'static str,
        path: String,
        problem: String,
        fix: String,
    },
    #[error("the {service} service on node {node} is not running (no responders on {subject})")]
    NoResponders {
        service: String,
        node: String,
        subject: String,
    },
    #[error(
        "{service} on node {node} did not answer {verb} within {after:?}: the outcome is unknown"
    )]
    Timeout {
        service: String,
        node: String,
        verb: String,
        after: Duration,
    },
    #[error(
        "the {service} service on node {node} went away during {verb} (is berthd still running?): the outcome is unknown"
    )]
    Gone {
        service: String,
        node: String,
        verb: String,
    },
    #[error("{0}")]
    Remote(BerthError),
    #[error("cannot decode the reply on {subject}: {reason}")]
    Decode { subject: String, reason: String },
    #[error("NATS {op} failed: {reason}")]
    Nats { op: String, reason: String },
}

impl BusError {
    pub fn nats(op: &str, e: impl std::fmt::Display) -> Self {
        BusError::Nats {
            op: op.to_string(),
            reason: e.to_string(),
        }
    }

    /// The typed error, if the remote service answered with one.
    pub fn remote(&self) -> Option<&BerthError> {
        match self {
            BusError::Remote(e) => Some(e),
            _ => None,
        }
    }
}

//! The supervisor's errors. Each variant names the container and the step; they become typed
//! [`BerthError`] replies at the service boundary.

use berth_bus::BusError;
use berth_proto::{BerthError, ErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("no such container: {0:?}")]
    NotFound(String),
    #[error("{given:?} matches several containers ({matches}): give more of the id")]
    Ambiguous { given: String, matches: String },
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error("the name {name:?} is already in use by container {id}")]
    NameInUse { name: String, id: String },
    #[error("container {name} ({id}): {reason}")]
    State {
        name: String,
        id: String,
        reason: String,
    },
    #[error("container {name}: {step} failed: {}", peer_message(.source))]
    Peer {
        name: String,
        step: String,
        #[source]
        source: Box<BusError>,
    },
    #[error("{step} {path}: {source}")]
    Io {
        step: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("container {name}: log stream: {source}")]
    LogStream {
        name: String,
        #[source]
        source: crate::logs::StreamError,
    },
    #[error("container {name}: {step}: {reason}")]
    System {
        name: String,
        step: String,
        reason: String,
    },
}

impl SupervisorError {
    pub fn invalid(what: impl Into<String>, reason: impl Into<String>) -> Self {
        SupervisorError::Invalid {
            what: what.into(),
            reason: reason.into(),
        }
    }
    pub fn io(step: impl Into<String>, path: &std::path::Path, source: std::io::Error) -> Self {
        SupervisorError::Io {
            step: step.into(),
            path: path.display().to_string(),
            source,
        }
    }
}

/// A peer's error as one line: a typed error's message (and detail) without its code, which
/// the reply carries as its own; anything else (no responders, a timeout) as it reads.
fn peer_message(e: &BusError) -> String {
    match e.remote() {
        Some(r) => match &r.detail {
            Some(d) => format!("{}: {d}", r.message),
            None => r.message.clone(),
        },
        None => e.to_string(),
    }
}

impl From<SupervisorError> for BerthError {
    fn from(e: SupervisorError) -> BerthError {
        // A peer's reason (a command not found) travels on.
        let reason = match &e {
            SupervisorError::Peer { source, .. } => source.remote().and_then(|r| r.reason),
            _ => None,
        };
        let code = match &e {
            SupervisorError::NotFound(_) => ErrorCode::NotFound,
            SupervisorError::Ambiguous { .. } | SupervisorError::Invalid { .. } => {
                ErrorCode::InvalidArgument
            }
            SupervisorError::NameInUse { .. } => ErrorCode::Conflict,
            SupervisorError::State { .. } => ErrorCode::FailedPrecondition,
            SupervisorError::Peer { source, .. } => match source.remote() {
                // Keep the peer's own code (an image that does not exist stays not_found).
                Some(remote) => remote.code,
                None => ErrorCode::Unavailable,
            },
            SupervisorError::LogStream { .. } => ErrorCode::Unavailable,
            SupervisorError::Io { .. } | SupervisorError::System { .. } => ErrorCode::Internal,
        };
        BerthError {
            reason,
            ..BerthError::new(code, e.to_string())
        }
    }
}

pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::ErrorReason;

    #[test]
    fn a_peer_error_keeps_its_code_and_reason_and_reads_without_the_code() {
        let remote = BerthError::with_reason(
            ErrorReason::CommandNotFound,
            "create failed: container init: command: \"nope\": executable file not found",
        );
        let e: BerthError = SupervisorError::Peer {
            name: "web".into(),
            step: "creating the container's process".into(),
            source: Box::new(BusError::Remote(remote)),
        }
        .into();
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(e.reason, Some(ErrorReason::CommandNotFound));
        assert!(!e.message.contains("(not_found)"), "{}", e.message);
        assert!(
            e.message.starts_with("container web: creating"),
            "{}",
            e.message
        );
    }
}

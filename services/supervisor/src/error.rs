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
    #[error("container {name}: {step} failed: {source}")]
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

impl From<SupervisorError> for BerthError {
    fn from(e: SupervisorError) -> BerthError {
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
            SupervisorError::Io { .. } | SupervisorError::System { .. } => ErrorCode::Internal,
        };
        BerthError::new(code, e.to_string())
    }
}

pub type Result<T, E = SupervisorError> = std::result::Result<T, E>;

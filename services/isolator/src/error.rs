//! The isolator's errors, each naming the step or field, mapped to `BerthError` at the bus.

use berth_proto::isolator::ShimFailure;
use berth_proto::{BerthError, ErrorCode};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum IsolatorError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{0} is not supported yet")]
    Unsupported(String),
    #[error("container {0} exists already and its shim is running")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{step} {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("start the shim {path}: {source}")]
    ShimSpawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The shim reported that a step of the container's creation failed.
    #[error("create failed: {}", .0.message)]
    Shim(ShimFailure),
    /// The shim's exec helper could not start the command in the container.
    #[error("exec in {id}: {}", .failure.message)]
    Exec { id: String, failure: ShimFailure },
    #[error("the shim did not report within {0:?}")]
    Timeout(std::time::Duration),
    #[error("config.json: {0}")]
    Oci(String),
    /// Attaching the container to its bridge network failed; the container was removed.
    #[error("create failed: network: {0}")]
    Network(#[from] berth_net::NetError),
}

impl IsolatorError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        IsolatorError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub fn io(
    step: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> IsolatorError {
    let path = path.into();
    move |source| IsolatorError::Io { step, path, source }
}

impl From<IsolatorError> for BerthError {
    fn from(e: IsolatorError) -> BerthError {
        let msg = e.to_string();
        match e {
            IsolatorError::Invalid { .. } => BerthError::invalid(msg),
            IsolatorError::Unsupported(_) => BerthError::unsupported(msg),
            IsolatorError::Conflict(_) => BerthError::conflict(msg),
            IsolatorError::NotFound(_) => BerthError::not_found(msg),
            IsolatorError::Precondition(_) => BerthError::precondition(msg),
            IsolatorError::Shim(f) => BerthError {
                reason: f.reason,
                ..BerthError::new(f.code, msg)
            },
            // Before the command runs, the container's state is what fails (it stopped).
            IsolatorError::Exec { failure: f, .. } => BerthError {
                reason: f.reason,
                ..BerthError::new(
                    match f.code {
                        ErrorCode::Unavailable => ErrorCode::FailedPrecondition,
                        c => c,
                    },
                    msg,
                )
            },
            IsolatorError::Timeout(_) => BerthError::unavailable(msg),
            IsolatorError::Network(n) => BerthError {
                message: msg,
                ..BerthError::from(n)
            },
            IsolatorError::Io { .. } | IsolatorError::ShimSpawn { .. } | IsolatorError::Oci(_) => {
                BerthError::internal(msg)
            }
        }
    }
}

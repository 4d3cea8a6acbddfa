//! The shim's errors: every variant names the step that failed.

use berth_proto::isolator::ShimFailure;
use berth_proto::{ErrorCode, ErrorReason};
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    /// A system call failed during `step`.
    #[error("{step}: {source}")]
    Sys {
        step: String,
        #[source]
        source: io::Error,
    },
    /// The spec asks for something that cannot be done, found during `step`.
    #[error("{step}: {message}")]
    Invalid { step: String, message: String },
    /// The container's configuration asks for something that does not exist there (a user, a
    /// working directory, a capability): the requester's mistake.
    #[error("{step}: {message}")]
    Refused { step: String, message: String },
    /// The command cannot be started: it is not there, or cannot be executed.
    #[error("command: {message}")]
    Command {
        reason: ErrorReason,
        message: String,
    },
    /// Another process of the container's setup (its init) failed at `step`, and said so.
    #[error("{step}: {}", .failure.message)]
    Reported { step: String, failure: ShimFailure },
    #[error("{0}")]
    Cgroup(#[from] berth_cgroups::CgroupError),
}

impl ShimError {
    pub fn invalid(step: impl Into<String>, message: impl Into<String>) -> ShimError {
        ShimError::Invalid {
            step: step.into(),
            message: message.into(),
        }
    }

    pub fn refused(step: impl Into<String>, message: impl Into<String>) -> ShimError {
        ShimError::Refused {
            step: step.into(),
            message: message.into(),
        }
    }

    /// What is reported to the isolator: the message, its code and its reason.
    pub fn failure(&self) -> ShimFailure {
        let (code, reason) = match self {
            ShimError::Refused { .. } => (ErrorCode::InvalidArgument, None),
            ShimError::Command { reason, .. } => (reason.code(), Some(*reason)),
            ShimError::Reported { failure, .. } => (failure.code, failure.reason),
            ShimError::Sys { .. } | ShimError::Invalid { .. } | ShimError::Cgroup(_) => {
                (ErrorCode::Unavailable, None)
            }
        };
        ShimFailure {
            message: self.to_string(),
            code,
            reason,
        }
    }
}

/// Attach the failing step to an error.
pub trait Step<T> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, ShimError>;
}

impl<T> Step<T> for Result<T, nix::errno::Errno> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, ShimError> {
        self.map_err(|e| ShimError::Sys {
            step: step(),
            source: io::Error::from(e),
        })
    }
}

impl<T> Step<T> for Result<T, io::Error> {
    fn step(self, step: impl FnOnce() -> String) -> Result<T, ShimError> {
        self.map_err(|e| ShimError::Sys {
            step: step(),
            source: e,
        })
    }
}

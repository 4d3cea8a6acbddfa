//! The shim's errors: every variant names the step that failed.

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

//! The puller's errors, each naming the registry, repository, digest or file involved, and
//! their mapping to the typed errors that travel on the bus.

use berth_proto::{BerthError, ErrorCode};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    Reference(#[from] berth_proto::reference::ReferenceError),

    #[error("invalid platform {input:?}: {reason}")]
    Platform { input: String, reason: String },

    #[error("registry settings {}: {reason}", path.display())]
    Settings { path: PathBuf, reason: String },

    #[error("docker config {}: {reason}", path.display())]
    DockerConfig { path: PathBuf, reason: String },

    #[error("{registry}: cannot connect: {reason}")]
    Connect { registry: String, reason: String },

    #[error("{registry}: {step}: {reason}")]
    Network {
        registry: String,
        step: String,
        reason: String,
    },

    #[error(
        "{registry}: {step}: the registry answered {status}{}",
        fmt_detail(detail)
    )]
    Status {
        registry: String,
        step: String,
        status: u16,
        detail: Option<String>,
    },

    #[error("{registry}: authentication failed{}: {reason}", user.as_ref().map(|u| format!(" for user {u:?}")).unwrap_or_default())]
    Unauthorized {
        registry: String,
        user: Option<String>,
        reason: String,
    },

    #[error("repository {repository} does not exist on {registry}")]
    RepositoryNotFound {
        registry: String,
        repository: String,
    },

    #[error("manifest {reference} not found in repository {repository} on {registry}")]
    ManifestNotFound {
        registry: String,
        repository: String,
        reference: String,
    },

    #[error("{reference}: {reason}")]
    UnsupportedManifest { reference: String, reason: String },

    #[error("{reference}: malformed {what}: {reason}")]
    Malformed {
        reference: String,
        what: String,
        reason: String,
    },

    #[error("{reference}: no image for platform {wanted} in the index (it has: {available})")]
    NoPlatform {
        reference: String,
        wanted: String,
        available: String,
    },

    #[error("{reference}: the image is for {found}, not {wanted}")]
    PlatformMismatch {
        reference: String,
        wanted: String,
        found: String,
    },

    #[error("{registry}: blob {digest} of {repository} failed verification: {reason}")]
    Verify {
        registry: String,
        repository: String,
        digest: String,
        reason: String,
    },

    #[error("content store: {0}")]
    Store(#[from] berth_store::StoreError),

    #[error("{0}")]
    Internal(String),
}

fn fmt_detail(d: &Option<String>) -> String {
    d.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()
}

impl PullError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PullError::Reference(_) | PullError::Platform { .. } => ErrorCode::InvalidArgument,
            PullError::Settings { .. } | PullError::DockerConfig { .. } => {
                ErrorCode::FailedPrecondition
            }
            PullError::Connect { .. } | PullError::Network { .. } => ErrorCode::Unavailable,
            PullError::Status { status, .. } => match status {
                401 | 403 => ErrorCode::Unauthorized,
                404 => ErrorCode::NotFound,
                _ => ErrorCode::Unavailable,
            },
            PullError::Unauthorized { .. } => ErrorCode::Unauthorized,
            PullError::RepositoryNotFound { .. }
            | PullError::ManifestNotFound { .. }
            | PullError::NoPlatform { .. } => ErrorCode::NotFound,
            PullError::UnsupportedManifest { .. } => ErrorCode::Unsupported,
            PullError::Malformed { .. } | PullError::Verify { .. } => ErrorCode::Unavailable,
            PullError::PlatformMismatch { .. } => ErrorCode::FailedPrecondition,
            PullError::Store(_) | PullError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// Worth another attempt: the network or a 5xx/429, not a definite answer.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Connect { .. } | PullError::Network { .. } => true,
            PullError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            _ => false,
        }
    }
}

impl From<PullError> for BerthError {
    fn from(e: PullError) -> BerthError {
        BerthError::new(e.code(), e.to_string())
    }
}

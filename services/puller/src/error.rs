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

    #[error("{0}")]
    DockerConfig(#[from] berth_docker::ConfigError),

    #[error("{registry}: cannot connect: {reason}")]
    Connect { registry: String, reason: String },

    #[error("{registry}: {step}: {reason}")]
    Network {
        registry: String,
        step: String,
        reason: String,
    },

    /// An HTTP answer that is not the one wanted. `url` is where it came from (after
    /// redirects, without its query); `retry_after` is the registry's `Retry-After`.
    #[error(
        "{registry}: {step}: {url} answered {status}{}{}",
        fmt_detail(detail),
        fmt_final(*status)
    )]
    Status {
        registry: String,
        step: String,
        url: String,
        status: u16,
        detail: Option<String>,
        retry_after: Option<std::time::Duration>,
    },

    /// A transient failure that lasted through every attempt.
    #[error("{last}; gave up after {attempts} attempt{}{note}", if *attempts == 1 { "" } else { "s" })]
    GaveUp {
        attempts: u32,
        last: Box<PullError>,
        note: String,
    },

    /// A redirect (or a token realm) that leaves HTTPS for plain HTTP on a registry not marked
    /// insecure.
    #[error(
        "{registry}: {step}: refused the {what} from {from} to {to}: it leaves HTTPS for plain \
         HTTP (allowed only for a registry marked insecure = true in registries.toml)"
    )]
    Downgrade {
        registry: String,
        step: String,
        what: &'static str,
        from: String,
        to: String,
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

/// Said of a 4xx that is not tried again.
fn fmt_final(status: u16) -> &'static str {
    if (400..500).contains(&status) && !is_transient_status(status) {
        "; not retried (a final answer)"
    } else {
        ""
    }
}

/// Answers worth another attempt: 5xx, 408 (request timeout), 429 (too many requests).
pub fn is_transient_status(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

impl PullError {
    pub fn code(&self) -> ErrorCode {
        match self {
            PullError::Reference(_) | PullError::Platform { .. } => ErrorCode::InvalidArgument,
            PullError::Settings { .. } | PullError::DockerConfig(_) => {
                ErrorCode::FailedPrecondition
            }
            PullError::Connect { .. } | PullError::Network { .. } => ErrorCode::Unavailable,
            PullError::Status { status, .. } => match status {
                401 | 403 => ErrorCode::Unauthorized,
                404 => ErrorCode::NotFound,
                _ => ErrorCode::Unavailable,
            },
            PullError::GaveUp { last, .. } => last.code(),
            PullError::Downgrade { .. } => ErrorCode::FailedPrecondition,
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

    /// Worth another attempt: the network or a 5xx/408/429, not a definite answer.
    pub fn is_transient(&self) -> bool {
        match self {
            PullError::Connect { .. } | PullError::Network { .. } => true,
            PullError::Status { status, .. } => is_transient_status(*status),
            _ => false,
        }
    }

    /// The pause the registry asked for (`Retry-After` of a 429 or 503).
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            PullError::Status {
                status: 429 | 503,
                retry_after,
                ..
            } => *retry_after,
            _ => None,
        }
    }
}

impl From<PullError> for BerthError {
    fn from(e: PullError) -> BerthError {
        BerthError::new(e.code(), e.to_string())
    }
}

use crate::Digest;
use std::path::PathBuf;

/// What can go wrong in the content store; every variant names the digest, path or step.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid digest {input:?}: {reason}")]
    InvalidDigest { input: String, reason: String },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("blob {digest} is not in the content store")]
    NotFound { digest: Digest },

    #[error("blob {digest} is already in the content store")]
    AlreadyExists { digest: Digest },

    #[error("content does not match its digest: expected {expected}, got {actual} ({size} bytes)")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        size: u64,
    },

    #[error("blob {digest} has the wrong size: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },

    #[error("reference map {}: {reason}", path.display())]
    Refs { path: PathBuf, reason: String },

    #[error("invalid reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
}

impl StoreError {
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}

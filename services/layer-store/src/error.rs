//! Errors of the layer-store, mapped to typed `BerthError`s at the service boundary.

use crate::unpack::UnpackError;
use berth_proto::{BerthError, ErrorCode};
use berth_store::StoreError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LayerStoreError {
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },

    #[error("{0}")]
    NotFound(String),

    #[error("{0}")]
    Conflict(String),

    #[error("image {digest}: {reason}")]
    BadImage { digest: String, reason: String },

    #[error("{path}: {reason}")]
    BadArchive { path: String, reason: String },

    #[error(transparent)]
    Unpack(#[from] UnpackError),

    #[error("content store: {0}")]
    Store(#[from] StoreError),

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, LayerStoreError>;

/// `map_err` helper: an I/O error with the step and path.
pub fn io(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> LayerStoreError {
    let path = path.into();
    move |source| LayerStoreError::Io { op, path, source }
}

impl From<LayerStoreError> for BerthError {
    fn from(e: LayerStoreError) -> BerthError {
        let code = match &e {
            LayerStoreError::Invalid { .. } | LayerStoreError::BadArchive { .. } => {
                ErrorCode::InvalidArgument
            }
            LayerStoreError::NotFound(_) => ErrorCode::NotFound,
            LayerStoreError::Conflict(_) => ErrorCode::Conflict,
            LayerStoreError::BadImage { .. } => ErrorCode::Unsupported,
            LayerStoreError::Unpack(u) => match u {
                UnpackError::Io { .. } | UnpackError::Entry { .. } => ErrorCode::Internal,
                _ => ErrorCode::InvalidArgument,
            },
            LayerStoreError::Store(StoreError::NotFound { .. }) => ErrorCode::NotFound,
            LayerStoreError::Store(StoreError::InvalidDigest { .. })
            | LayerStoreError::Store(StoreError::InvalidReference { .. })
            | LayerStoreError::Store(StoreError::DigestMismatch { .. })
            | LayerStoreError::Store(StoreError::SizeMismatch { .. }) => ErrorCode::InvalidArgument,
            LayerStoreError::Store(_) | LayerStoreError::Io { .. } => ErrorCode::Internal,
        };
        BerthError::new(code, e.to_string())
    }
}

//! Errors of berth's networking, each naming the network, container, port or step involved.

use berth_proto::network::Protocol;
use berth_proto::{BerthError, ErrorCode};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
    #[error("network {0:?} not found")]
    NotFound(String),
    #[error("network {0:?} already exists")]
    Exists(String),
    #[error("network {network:?} is in use by container(s) {containers}")]
    InUse { network: String, containers: String },
    #[error("no free /{prefix} subnet left in pool {pool} (the host's routes and berth's networks use the rest)")]
    NoSubnet { pool: String, prefix: u8 },
    #[error("subnet {subnet} overlaps {what}")]
    Overlap { subnet: String, what: String },
    #[error("network {0:?} has no free address left")]
    Exhausted(String),
    #[error("port {addr} ({proto}) for container {container}: {reason}")]
    Port {
        addr: String,
        proto: Protocol,
        container: String,
        reason: String,
    },
    #[error("{step}: {path}: {source}")]
    Io {
        step: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{step}: {path}: {source}")]
    Json {
        step: &'static str,
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("netlink: {step}: {reason}")]
    Netlink { step: String, reason: String },
    #[error("iptables {args}: {reason}")]
    Iptables { args: String, reason: String },
    #[error("{step}: {source}")]
    Sys { step: String, source: nix::Error },
}

impl NetError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        NetError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(crate) fn netlink(step: impl Into<String>, e: impl std::fmt::Display) -> Self {
        NetError::Netlink {
            step: step.into(),
            reason: e.to_string(),
        }
    }
}

pub(crate) fn io(step: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetError {
    let path = path.to_path_buf();
    move |source| NetError::Io { step, path, source }
}

impl From<NetError> for BerthError {
    fn from(e: NetError) -> Self {
        let code = match &e {
            NetError::Invalid { .. } | NetError::Overlap { .. } => ErrorCode::InvalidArgument,
            NetError::NotFound(_) => ErrorCode::NotFound,
            NetError::Exists(_) | NetError::Port { .. } => ErrorCode::Conflict,
            NetError::InUse { .. } => ErrorCode::FailedPrecondition,
            NetError::NoSubnet { .. } | NetError::Exhausted(_) => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        };
        BerthError::new(code, e.to_string())
    }
}

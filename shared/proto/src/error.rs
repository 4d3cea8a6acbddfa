//! Typed errors that travel as replies: `{code, message, detail, reason}`. The code says what
//! kind of failure it is (the user's mistake, a missing thing, a peer that failed); the optional
//! reason says more where a client acts on it (the exit code of `berth run`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or names something invalid.
    InvalidArgument,
    /// The thing named does not exist.
    NotFound,
    /// It exists already, or a compare-and-set lost.
    Conflict,
    /// Refused in the current state (e.g. removing a running container without force).
    FailedPrecondition,
    /// The feature is not supported (yet).
    Unsupported,
    /// A peer (registry, kernel, disk) failed.
    Unavailable,
    /// Authentication or authorisation failed.
    Unauthorized,
    /// The message's schema version is not one this service understands.
    VersionMismatch,
    /// Anything else.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::VersionMismatch => "version_mismatch",
            ErrorCode::Internal => "internal",
        }
    }
}

impl ErrorCode {
    /// Whether the error is the requester's to fix (a bad value, a name that does not exist,
    /// a name taken, a state that does not allow it), rather than a failure of berth or of
    /// what it depends on.
    pub fn is_user_error(self) -> bool {
        matches!(
            self,
            ErrorCode::InvalidArgument
                | ErrorCode::NotFound
                | ErrorCode::Conflict
                | ErrorCode::FailedPrecondition
                | ErrorCode::Unsupported
                | ErrorCode::Unauthorized
        )
    }
}

/// Why a request failed, where a client acts on more than the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorReason {
    /// The container's (or an exec's) command does not exist.
    CommandNotFound,
    /// The command exists but cannot be run: not executable, a directory, permission denied.
    CommandNotExecutable,
}

impl ErrorReason {
    /// Docker's exit code of `run`/`exec`/`start -a` for this reason: 127, 126.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorReason::CommandNotFound => 127,
            ErrorReason::CommandNotExecutable => 126,
        }
    }
    /// The code an error of this reason travels with.
    pub fn code(self) -> ErrorCode {
        match self {
            ErrorReason::CommandNotFound => ErrorCode::NotFound,
            ErrorReason::CommandNotExecutable => ErrorCode::InvalidArgument,
        }
    }
}

/// An error reply. `message` is one plain line for people; `detail` is optional context;
/// `reason` is set where a client acts on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BerthError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<ErrorReason>,
}

impl BerthError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        BerthError {
            code,
            message: message.into(),
            detail: None,
            reason: None,
        }
    }
    /// An error of `reason`, with the reason's code.
    pub fn with_reason(reason: ErrorReason, message: impl Into<String>) -> Self {
        BerthError {
            reason: Some(reason),
            ..Self::new(reason.code(), message)
        }
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidArgument, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::FailedPrecondition, message)
    }
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unsupported, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl std::fmt::Display for BerthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code.as_str())?;
        if let Some(d) = &self.detail {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BerthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_travels_and_an_old_reply_reads_without_one() {
        let e = BerthError::with_reason(ErrorReason::CommandNotFound, "no such command");
        let j = serde_json::to_string(&e).unwrap();
        assert!(j.contains(r#""reason":"command_not_found""#), "{j}");
        assert_eq!(serde_json::from_str::<BerthError>(&j).unwrap(), e);
        assert_eq!(e.code, ErrorCode::NotFound);
        let old: BerthError =
            serde_json::from_str(r#"{"code":"unavailable","message":"m"}"#).unwrap();
        assert_eq!(old.reason, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("reason"));
        assert_eq!(ErrorReason::CommandNotExecutable.exit_code(), 126);
    }
}

//! The versioned JSON envelope of every request and reply.

use crate::error::{BerthError, ErrorCode};
use serde::{Deserialize, Serialize};

/// The schema version this build speaks. A message with another version is refused clearly.
pub const SCHEMA_VERSION: u32 = 1;

/// Header carrying the idempotency key of a state-changing command.
pub const IDEMPOTENCY_HEADER: &str = "Berth-Idempotency-Key";

/// A command: `{"v": 1, "body": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request<T> {
    pub v: u32,
    pub body: T,
}

impl<T> Request<T> {
    pub fn new(body: T) -> Self {
        Request {
            v: SCHEMA_VERSION,
            body,
        }
    }
}

/// A reply: `{"v": 1, "ok": {...}}` or `{"v": 1, "error": {code, message, detail}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply<T> {
    pub v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<BerthError>,
}

impl<T> Reply<T> {
    pub fn ok(body: T) -> Self {
        Reply {
            v: SCHEMA_VERSION,
            ok: Some(body),
            error: None,
        }
    }
    pub fn err(error: BerthError) -> Self {
        Reply {
            v: SCHEMA_VERSION,
            ok: None,
            error: Some(error),
        }
    }
    pub fn into_result(self) -> Result<T, BerthError> {
        if self.v != SCHEMA_VERSION {
            return Err(version_mismatch(self.v));
        }
        match (self.ok, self.error) {
            (_, Some(e)) => Err(e),
            (Some(ok), None) => Ok(ok),
            (None, None) => Err(BerthError::internal(
                "reply carries neither a result nor an error",
            )),
        }
    }
}

pub fn version_mismatch(got: u32) -> BerthError {
    BerthError::new(
        ErrorCode::VersionMismatch,
        format!("message has schema version {got}; this berth speaks version {SCHEMA_VERSION}"),
    )
}

/// Only the version, to check it before decoding the body.
#[derive(Deserialize)]
pub struct VersionProbe {
    pub v: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_round_trips_and_refuses_other_versions() {
        let r: Reply<u32> = serde_json::from_str(r#"{"v":1,"ok":7}"#).unwrap();
        assert_eq!(r.into_result().unwrap(), 7);
        let r: Reply<u32> =
            serde_json::from_str(r#"{"v":1,"error":{"code":"not_found","message":"no x"}}"#)
                .unwrap();
        assert_eq!(r.into_result().unwrap_err().code, ErrorCode::NotFound);
        let r: Reply<u32> = serde_json::from_str(r#"{"v":9,"ok":7}"#).unwrap();
        assert_eq!(
            r.into_result().unwrap_err().code,
            ErrorCode::VersionMismatch
        );
    }
}

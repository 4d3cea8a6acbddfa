//! The `info` verb every service answers.

use serde::{Deserialize, Serialize};

pub const VERB: &str = "info";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub service: String,
    pub version: String,
    pub node: String,
    /// RFC 3339 start time.
    pub started_at: String,
    pub uptime_secs: f64,
}

//! Request and reply types of the puller.

use serde::{Deserialize, Serialize};

pub const PULL: &str = "pull";
pub const RESOLVE: &str = "resolve";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// As users write it: `busybox`, `localhost:5000/x:tag`, `repo@sha256:...`.
    pub reference: String,
    /// `os/arch[/variant]`; the host's platform when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullReply {
    /// The normalized reference (`docker.io/library/busybox:latest`).
    pub reference: String,
    /// Digest of the image manifest (for the platform).
    pub digest: String,
    pub config_digest: String,
    pub layers: Vec<String>,
    /// Total compressed size of the layers.
    pub size: u64,
    /// False when everything was present already.
    pub downloaded: bool,
}

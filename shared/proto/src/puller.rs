//! Request and reply types of the puller, and the attributes of its events.
//!
//! Events (entity `image`, name = the normalized reference):
//! - `pulling`: progress, at most every 250 ms per pull; attrs `pull_id`, `done`, `total`
//!   (bytes of all layers), `layers` (a list of [`LayerProgress`]).
//! - `pulled`: attrs `pull_id`, `digest`, `size`, `downloaded`, `seconds`.
//! - `pull-failed`: attrs `pull_id`, `code`, `error`.

use serde::{Deserialize, Serialize};

pub const PULL: &str = "pull";
pub const RESOLVE: &str = "resolve";
pub const LOGIN: &str = "login";

/// Event actions of the puller (entity `image`).
pub const EVENT_PULLING: &str = "pulling";
pub const EVENT_PULLED: &str = "pulled";
pub const EVENT_PULL_FAILED: &str = "pull-failed";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullRequest {
    /// As users write it: `busybox`, `localhost:5000/x:tag`, `repo@sha256:...`.
    pub reference: String,
    /// `os/arch[/variant]`; the host's platform when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// Chosen by the caller to find this pull's progress events (attr `pull_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_id: Option<String>,
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
    /// Digest of the index (manifest list) the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// Media type of the image manifest.
    #[serde(default)]
    pub media_type: String,
    /// `os/arch[/variant]` of the image.
    #[serde(default)]
    pub platform: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveRequest {
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// What a reference names on its registry now, without downloading layers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResolveReply {
    pub reference: String,
    /// Digest of the image manifest for the platform.
    pub digest: String,
    pub media_type: String,
    /// Digest of the index the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    pub config_digest: String,
    /// `(digest, compressed size)` of each layer.
    pub layers: Vec<(String, u64)>,
    pub size: u64,
    pub platform: String,
}

/// Check credentials against a registry (the CLI then records them in the Docker config file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginRequest {
    /// Registry host (`localhost:5000`); Docker Hub when empty.
    #[serde(default)]
    pub server: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginReply {
    /// The registry host the credentials are for (`docker.io` for Docker Hub).
    pub server: String,
    /// The registry's answer in one line ("Login Succeeded").
    pub status: String,
}

/// One layer in an `image.pulling` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerProgress {
    pub digest: String,
    /// Bytes written so far (a resumed download starts above 0).
    pub done: u64,
    pub total: u64,
    pub state: LayerState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerState {
    /// Queued behind the concurrency limit, or another pull of the same blob.
    Waiting,
    Downloading,
    /// A failed attempt; the download resumes after a pause.
    Retrying,
    Verifying,
    /// Downloaded and verified by this pull.
    Done,
    /// Present in the content store before this pull.
    Exists,
}

/// The puller's verbs (see [`crate::verb`]).
pub mod verbs {
    use super::*;
    crate::verbs! { crate::Service::Puller;
        Pull = PULL, PullRequest => PullReply;
        Resolve = RESOLVE, ResolveRequest => ResolveReply;
        Login = LOGIN, LoginRequest => LoginReply;
    }
}

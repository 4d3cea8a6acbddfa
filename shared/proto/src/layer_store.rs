//! Request and reply types of the layer-store.

use crate::isolator::RootfsMount;
use serde::{Deserialize, Serialize};

pub const PREPARE: &str = "prepare";
pub const RELEASE: &str = "release";
pub const IMAGES: &str = "images";

/// Prepare the root filesystem of a container from an image present in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareRequest {
    pub container_id: String,
    /// A reference or a manifest digest.
    pub image: String,
}

/// The parts of an image's config the supervisor needs to build a container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageRuntimeConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// The image's HEALTHCHECK test, as in the OCI/Docker config (`["CMD-SHELL", "..."]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Vec<String>>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareReply {
    pub rootfs: RootfsMount,
    /// Manifest digest of the image.
    pub image_digest: String,
    pub config: ImageRuntimeConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub container_id: String,
}

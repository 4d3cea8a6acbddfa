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
    /// The container is removed when it exits (`--rm`): its root filesystem comes back
    /// volatile ([`crate::isolator::RootfsMount::volatile`]) and its record here is not synced.
    /// After a crash the supervisor's own synced record leads to the release, which needs no
    /// record here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volatile: bool,
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

pub const INSPECT: &str = "inspect";
pub const REMOVE: &str = "remove";
pub const GC: &str = "gc";
pub const DF: &str = "df";
pub const LOAD: &str = "load";
pub const SAVE: &str = "save";

/// Event actions of the layer-store.
/// `image.unpacked` (name: the image; attrs `layer`, `chain_id`, `bytes`, `entries`,
/// `seconds`), `image.removed` (name: the reference or ID removed; attrs `digest`,
/// `deleted`), `image.loaded` (name: the reference; attrs `digest`),
/// `snapshot.prepared` (name: the container ID; attrs `image`, `digest`, `layers`).
pub const EVENT_UNPACKED: &str = "unpacked";
pub const EVENT_REMOVED: &str = "removed";
pub const EVENT_LOADED: &str = "loaded";
pub const EVENT_PREPARED: &str = "prepared";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImagesRequest {}

/// One row of `images`: one reference (or one untagged image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSummary {
    /// Familiar repository name (`busybox`, `localhost:5000/x`), `<none>` when untagged.
    pub repository: String,
    /// The tag, `<none>` for a reference by digest only.
    pub tag: String,
    /// Manifest digest.
    pub digest: String,
    /// Config digest (the image ID, as Docker shows it).
    pub id: String,
    /// Bytes of the manifest, config and layers as stored (compressed).
    pub size: u64,
    /// The config's `created`, RFC 3339, if it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Containers prepared from this image.
    pub containers: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImagesReply {
    pub images: Vec<ImageSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectRequest {
    /// A reference, a manifest or config digest, or an ID prefix.
    pub image: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    pub diff_id: String,
    pub chain_id: String,
    /// Whether this node has unpacked it.
    pub unpacked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectReply {
    pub id: String,
    pub digest: String,
    pub references: Vec<String>,
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    pub os: String,
    pub architecture: String,
    pub size: u64,
    pub layers: Vec<LayerInfo>,
    /// The image config as stored (OCI or Docker JSON).
    pub config: serde_json::Value,
    /// The config's `history` entries.
    pub history: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub image: String,
    /// Remove even when containers use it (their root filesystems stay until released).
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RemoveReply {
    /// References removed.
    pub untagged: Vec<String>,
    /// Blobs and snapshots deleted (digests and `snapshot:<chain-id>`).
    pub deleted: Vec<String>,
    pub space_freed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcRequest {
    /// Also remove every image no container uses (`image prune -a`).
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GcReply {
    /// References removed (with `all`).
    pub untagged: Vec<String>,
    pub blobs_removed: usize,
    pub snapshots_removed: usize,
    pub space_freed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DfRequest {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub count: usize,
    pub active: usize,
    pub size: u64,
    pub reclaimable: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DfReply {
    /// Blobs of the content store (`active`: images used by containers).
    pub images: UsageRow,
    /// Unpacked layers.
    pub snapshots: UsageRow,
    /// Upper dirs of prepared containers.
    pub containers: UsageRow,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadRequest {
    /// Absolute path, on the layer-store's node, of a Docker archive (`docker save`), an OCI
    /// archive, or an OCI image layout directory.
    pub path: String,
    /// Name the loaded image this way (for archives whose image carries no name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadedImage {
    /// Normalized reference, or `<none>` when the archive named none.
    pub reference: String,
    pub digest: String,
    pub id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadReply {
    /// `docker-archive`, `oci-archive` or `oci-layout`.
    pub format: String,
    pub images: Vec<LoadedImage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SaveRequest {
    pub images: Vec<String>,
    /// Absolute path on the layer-store's node; replaced atomically.
    pub path: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SaveReply {
    pub path: String,
    pub size: u64,
    pub images: Vec<LoadedImage>,
}

/// The layer-store's verbs (see [`crate::verb`]).
pub mod verbs {
    use super::*;
    use crate::verb::Empty;
    crate::verbs! { crate::Service::LayerStore;
        Prepare = PREPARE, PrepareRequest => PrepareReply;
        Release = RELEASE, ReleaseRequest => Empty;
        Images = IMAGES, ImagesRequest => ImagesReply;
        Inspect = INSPECT, InspectRequest => InspectReply;
        Remove = REMOVE, RemoveRequest => RemoveReply;
        Gc = GC, GcRequest => GcReply;
        Df = DF, DfRequest => DfReply;
        Load = LOAD, LoadRequest => LoadReply;
        Save = SAVE, SaveRequest => SaveReply;
    }
}

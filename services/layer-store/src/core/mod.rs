//! The layer-store's work, blocking (the service runs it on blocking threads): images read
//! from the content store, snapshots (one unpacked layer per chain ID), root filesystems of
//! containers, reference counts, garbage collection and disk usage. Here: the store, its
//! types, its constructor and the helpers its parts share; one child module per job.

mod gc;
mod images;
mod records;
mod recovery;
mod rootfs;
mod snapshots;
mod usage;

use crate::error::{io, LayerStoreError, Result};
use crate::lease;
use crate::unpack::{self, Limits, UnpackStats};
use berth_proto::isolator::RootfsMount;
use berth_proto::layer_store::*;
use berth_proto::reference::Reference;
use berth_store::{ContentStore, Digest};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Directory of the layer-store's own files under the data root.
pub const OWN_DIR: &str = "layer-store";
/// The single state file of earlier versions, moved into record files at open.
const OLD_STATE_FILE: &str = "state.json";
/// One record per prepared container, `<id>.json` holding its [`ContainerRec`]: what keeps
/// its image's snapshots from gc and `rmi`.
const RECORDS_DIR: &str = "containers";
/// Released upper and work dirs, renamed here and deleted in the background.
const TRASH_DIR: &str = "trash";
/// Inside a snapshot: the unpacked tree and its description.
pub const SNAPSHOT_FS: &str = "fs";
pub const SNAPSHOT_META: &str = "meta.json";
const TMP_PREFIX: &str = ".tmp-";

/// One layer of an image, with the IDs that name its snapshot.
#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: String,
    pub chain_id: String,
}

/// An image read from the content store.
#[derive(Debug, Clone)]
pub struct Image {
    pub digest: Digest,
    pub media_type: String,
    pub manifest_size: u64,
    pub config_digest: Digest,
    pub config_size: u64,
    pub config_raw: Vec<u8>,
    pub config: ImageConfiguration,
    pub layers: Vec<Layer>,
}

impl Image {
    /// Every blob of the image.
    pub fn blobs(&self) -> Vec<Digest> {
        let mut v = vec![self.digest.clone(), self.config_digest.clone()];
        v.extend(self.layers.iter().map(|l| l.digest.clone()));
        v
    }

    pub fn size(&self) -> u64 {
        self.manifest_size + self.config_size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    pub fn created(&self) -> Option<String> {
        self.config.created().clone()
    }

    /// What the supervisor needs from the config.
    pub fn runtime_config(&self) -> ImageRuntimeConfig {
        let mut rc = ImageRuntimeConfig::default();
        if let Some(c) = self.config.config() {
            rc.entrypoint = c.entrypoint().clone().unwrap_or_default();
            rc.cmd = c.cmd().clone().unwrap_or_default();
            rc.env = c.env().clone().unwrap_or_default();
            rc.working_dir = c.working_dir().clone().filter(|w| !w.is_empty());
            rc.user = c.user().clone().filter(|u| !u.is_empty());
            rc.stop_signal = c.stop_signal().clone().filter(|s| !s.is_empty());
            if let Some(l) = c.labels() {
                rc.labels = l.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
        }
        // Docker's HEALTHCHECK is not part of the OCI config: read it from the raw JSON.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.config_raw) {
            if let Some(test) = v["config"]["Healthcheck"]["Test"].as_array() {
                let t: Vec<String> = test
                    .iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect();
                if !t.is_empty() {
                    rc.healthcheck = Some(t);
                }
            }
        }
        rc
    }
}

/// `chain_id(L0) = diff_id(L0)`, `chain_id(Ln) = sha256(chain_id(Ln-1) + " " + diff_id(Ln))`.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{prev} {d}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

fn hex_of(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// This host's architecture as images write it (`amd64`, `arm64`, ...).
pub fn host_arch() -> &'static str {
    static ARCH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ARCH.get_or_init(|| berth_docker::platform::Platform::host().arch)
}

/// The entry of an image index for this host's platform, chosen as the puller chooses
/// (`berth_docker::platform`: the variant counts, an exact one first).
pub fn host_entry(idx: &oci_spec::image::ImageIndex) -> Option<&oci_spec::image::Descriptor> {
    berth_docker::platform::Platform::host().pick(idx.manifests().iter().filter_map(|m| {
        let p = m.platform().as_ref()?;
        Some((
            p.os().to_string(),
            p.architecture().to_string(),
            p.variant().clone(),
            m,
        ))
    }))
}

/// What a prepared container holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerRec {
    pub image: String,
    pub manifest: String,
    pub chain_ids: Vec<String>,
    pub upper: String,
    pub work: String,
}

/// The records of every prepared container, as read from `containers/` (and, once, from an
/// old `state.json`).
#[derive(Debug, Default, Deserialize)]
struct State {
    #[serde(default)]
    containers: BTreeMap<String, ContainerRec>,
}

/// Description of a snapshot, beside its tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub chain_id: String,
    pub layer: String,
    pub diff_id: String,
    pub entries: u64,
    pub uncompressed: u64,
    pub seconds: f64,
}

/// One snapshot made by a `prepare`, for the `image.unpacked` event.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub meta: SnapshotMeta,
}

pub struct LayerStore {
    pub data_root: PathBuf,
    pub content: ContentStore,
    pub snapshots: PathBuf,
    pub containers: PathBuf,
    own: PathBuf,
    /// Serialises changes of the state file, reference removals and gc.
    lock: Mutex<()>,
    /// Temp snapshot dirs this process is writing (gc leaves them).
    active: Mutex<HashSet<String>>,
    /// One lock per chain ID being unpacked, so concurrent prepares unpack a layer once.
    unpacking: Mutex<HashMap<String, std::sync::Arc<Mutex<()>>>>,
    pub limits: Limits,
    /// Layers unpacked at once by one prepare.
    pub parallelism: usize,
}

impl LayerStore {
    pub fn open(data_root: &Path) -> Result<LayerStore> {
        let content = ContentStore::open(data_root.join("content"))?;
        let snapshots = data_root.join("snapshots");
        let containers = data_root.join("containers");
        let own = data_root.join(OWN_DIR);
        for d in [
            &snapshots,
            &containers,
            &own.join(RECORDS_DIR),
            &own.join(TRASH_DIR),
        ] {
            std::fs::create_dir_all(d).map_err(io("create", d))?;
        }
        let ls = LayerStore {
            data_root: data_root.to_path_buf(),
            content,
            snapshots,
            containers,
            own,
            lock: Mutex::new(()),
            active: Mutex::new(HashSet::new()),
            unpacking: Mutex::new(HashMap::new()),
            limits: Limits::default(),
            parallelism: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 8),
        };
        ls.migrate_state()?;
        ls.drop_stale_records()?;
        ls.empty_trash();
        ls.remove_leftovers();
        Ok(ls)
    }

    /// What releases left in the trash.
    fn trash(&self) -> Result<Vec<PathBuf>> {
        let d = self.own.join(TRASH_DIR);
        let entries = std::fs::read_dir(&d).map_err(io("read", &d))?;
        Ok(entries.flatten().map(|e| e.path()).collect())
    }

    /// Where temporary files of loads and saves go (same filesystem as the store).
    pub fn tmp_dir(&self) -> Result<PathBuf> {
        let d = self.own.join("tmp");
        std::fs::create_dir_all(&d).map_err(io("create", &d))?;
        Ok(d)
    }

    pub fn snapshot_dir(&self, chain_id: &str) -> PathBuf {
        self.snapshots.join(hex_of(chain_id))
    }

    /// The tree of a snapshot: an overlay lower dir.
    pub fn snapshot_fs(&self, chain_id: &str) -> PathBuf {
        self.snapshot_dir(chain_id).join(SNAPSHOT_FS)
    }

    pub fn has_snapshot(&self, chain_id: &str) -> bool {
        self.snapshot_dir(chain_id).join(SNAPSHOT_META).is_file()
    }
}

/// Whether `snapshots/<name>` (`.tmp-<chain>-<pid>-<rand>` of an unpack,
/// `.tmp-rm-<chain>-<pid>-x` of a gc's removal) is left by a process that is gone, or by this
/// one (whose unpacks in progress the caller knows and skips).
fn tmp_is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(TMP_PREFIX) else {
        return false;
    };
    let pid: Option<i32> = rest.rsplit('-').nth(1).and_then(|p| p.parse().ok());
    let ours = pid == Some(std::process::id() as i32);
    let alive = pid.is_some_and(|p| {
        p > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok()
    });
    ours || !alive
}

/// A container ID usable as one path component.
pub fn check_container_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(LayerStoreError::Invalid {
            what: "container ID",
            reason: format!("{id:?} must be 1-128 of [A-Za-z0-9_.-], not starting with '.'"),
        })
    }
}

/// Bytes on disk under `path` (allocated blocks; hard links counted once), never following
/// symlinks.
pub fn du(path: &Path) -> u64 {
    let mut seen: HashMap<(u64, u64), ()> = HashMap::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if m.nlink() > 1 && !m.is_dir() && seen.insert((m.dev(), m.ino()), ()).is_some() {
            continue;
        }
        total += m.blocks() * 512;
        if m.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_oci_rule() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        let want = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(c[1], want);
    }

    #[test]
    fn container_ids() {
        assert!(check_container_id("abc-1_2.x").is_ok());
        assert!(check_container_id("../x").is_err());
        assert!(check_container_id(".x").is_err());
        assert!(check_container_id("").is_err());
    }
}

//! The layer-store's work, blocking (the service runs it on blocking threads): images read
//! from the content store, snapshots (one unpacked layer per chain ID), root filesystems of
//! containers, reference counts, garbage collection and disk usage.

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

/// The platform names of this host, as images write them.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        other => other,
    }
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

/// Names trash entries apart (the same container may be released twice in a row).
static TRASH_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

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

    /// What a crash left (an unpack or a gc killed with its process, a pull or a load that
    /// never dropped its lease): `snapshots/.tmp-*` of processes that are gone, and leases
    /// expired or whose owner is gone. Logged; a failure to remove is logged and left.
    fn remove_leftovers(&self) {
        if let Ok(rd) = std::fs::read_dir(&self.snapshots) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !name.starts_with(TMP_PREFIX) || !tmp_is_stale(&name) {
                    continue;
                }
                match std::fs::remove_dir_all(e.path()) {
                    Ok(()) => tracing::info!(name, "removed an unpack a crash cut short"),
                    Err(e) => tracing::warn!(%e, name, "an unpack a crash cut short is left"),
                }
            }
        }
        for name in lease::remove_stale(&self.data_root) {
            tracing::info!(
                name,
                "removed a lease whose owner is gone or whose time is up"
            );
        }
    }

    /// Earlier versions kept every record in one `state.json`: write them as record files.
    fn migrate_state(&self) -> Result<()> {
        let p = self.own.join(OLD_STATE_FILE);
        let st: State = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| LayerStoreError::Io {
                op: "parse",
                path: p.clone(),
                source: std::io::Error::other(e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("read", &p)(e)),
        };
        for (id, rec) in &st.containers {
            self.write_record(id, rec, true)?;
        }
        std::fs::remove_file(&p).map_err(io("remove", &p))
    }

    /// A record whose upper dir is gone belongs to a container whose release or prepare was
    /// cut short (a record is written before the dirs are made, and its removal is not
    /// synced): nothing uses its snapshots.
    fn drop_stale_records(&self) -> Result<()> {
        for (id, rec) in self.read_state()?.containers {
            if !Path::new(&rec.upper).is_dir() {
                tracing::info!(
                    id,
                    "dropping the record of a container without an upper dir"
                );
                let p = self.record_path(&id);
                std::fs::remove_file(&p).map_err(io("remove", &p))?;
            }
        }
        Ok(())
    }

    /// What releases left in the trash.
    fn trash(&self) -> Result<Vec<PathBuf>> {
        let d = self.own.join(TRASH_DIR);
        let entries = std::fs::read_dir(&d).map_err(io("read", &d))?;
        Ok(entries.flatten().map(|e| e.path()).collect())
    }

    /// Delete what releases left in the trash, in the background.
    fn empty_trash(&self) {
        if let Ok(left) = self.trash() {
            berth_files::janitor::remove_later(left);
        }
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

    // ----- state --------------------------------------------------------------------------

    fn record_path(&self, id: &str) -> PathBuf {
        self.own.join(RECORDS_DIR).join(format!("{id}.json"))
    }

    fn read_record(&self, id: &str) -> Result<Option<ContainerRec>> {
        let p = self.record_path(id);
        match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| LayerStoreError::Io {
                    op: "parse",
                    path: p.clone(),
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &p)(e)),
        }
    }

    /// Every record. Unreadable ones are errors: a record that cannot be read could be keeping
    /// snapshots that gc must not remove.
    fn read_state(&self) -> Result<State> {
        let d = self.own.join(RECORDS_DIR);
        let mut st = State::default();
        for e in std::fs::read_dir(&d).map_err(io("read", &d))? {
            let e = e.map_err(io("read", &d))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_suffix(".json") else {
                continue;
            };
            if id.starts_with('.') {
                continue;
            }
            if let Some(rec) = self.read_record(id)? {
                st.containers.insert(id.to_string(), rec);
            }
        }
        Ok(st)
    }

    /// Write a container's record atomically (with `durable`, surviving a power loss): it
    /// keeps the image's snapshots from gc and `rmi` for as long as the container exists.
    fn write_record(&self, id: &str, rec: &ContainerRec, durable: bool) -> Result<()> {
        let p = self.record_path(id);
        let bytes = serde_json::to_vec(rec).expect("records serialize");
        let durability = if durable {
            berth_files::Durability::PowerLoss
        } else {
            berth_files::Durability::Process
        };
        berth_files::atomic_write(&p, &bytes, durability).map_err(io("write", &p))
    }

    pub fn container(&self, id: &str) -> Result<Option<ContainerRec>> {
        self.read_record(id)
    }

    // ----- images -------------------------------------------------------------------------

    /// The manifest digest an image string names: a full digest (manifest or config), a
    /// reference, or a prefix of an image ID.
    pub fn resolve(&self, input: &str) -> Result<Digest> {
        let input = input.trim();
        if input.is_empty() {
            return Err(LayerStoreError::Invalid {
                what: "image",
                reason: "it is empty".into(),
            });
        }
        let refs = self.content.refs()?;
        let manifests: BTreeSet<&Digest> = refs.values().collect();
        if input.starts_with("sha256:") {
            let d: Digest = input.parse()?;
            if manifests.contains(&d) {
                return Ok(d);
            }
            for m in &manifests {
                if self.config_digest(m).ok().as_ref() == Some(&d) {
                    return Ok((*m).clone());
                }
            }
            return Err(LayerStoreError::NotFound(format!(
                "image {input} is not on this node"
            )));
        }
        if let Ok(r) = Reference::parse(input) {
            if let Some(d) = refs.get(&r.to_string()) {
                return Ok(d.clone());
            }
            if let Some(dg) = r.digest() {
                // `name@digest` (with or without a tag): that manifest, when the node holds it
                // under that name.
                if let Some(d) = refs.get(&r.with_digest(dg)) {
                    return Ok(d.clone());
                }
                let name = r.name();
                if let Some((_, d)) = refs.iter().find(|(k, d)| {
                    d.to_string() == dg && Reference::parse(k).is_ok_and(|x| x.name() == name)
                }) {
                    return Ok(d.clone());
                }
            }
        }
        if input.len() >= 4 && input.len() <= 64 && input.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut hits: BTreeSet<Digest> = BTreeSet::new();
            for m in &manifests {
                if m.hex().starts_with(input) {
                    hits.insert((*m).clone());
                } else if let Ok(c) = self.config_digest(m) {
                    if c.hex().starts_with(input) {
                        hits.insert((*m).clone());
                    }
                }
            }
            match hits.len() {
                0 => {}
                1 => return Ok(hits.into_iter().next().expect("one")),
                n => {
                    return Err(LayerStoreError::Invalid {
                        what: "image ID",
                        reason: format!("{input} matches {n} images"),
                    })
                }
            }
        }
        if let Err(e) = Reference::parse(input) {
            return Err(LayerStoreError::Invalid {
                what: "image",
                reason: e.to_string(),
            });
        }
        Err(LayerStoreError::NotFound(format!(
            "image {input} is not on this node (pull or load it first)"
        )))
    }

    fn config_digest(&self, manifest: &Digest) -> Result<Digest> {
        Ok(self.read_image(manifest)?.config_digest)
    }

    /// Read manifest (following an index to this host's platform) and config.
    pub fn read_image(&self, digest: &Digest) -> Result<Image> {
        let bad = |reason: String| LayerStoreError::BadImage {
            digest: digest.to_string(),
            reason,
        };
        let raw = self.content.read(digest)?;
        let v: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|e| bad(format!("manifest is not JSON: {e}")))?;
        if v.get("manifests").is_some() {
            let idx = ImageIndex::from_reader(&raw[..]).map_err(|e| bad(format!("index: {e}")))?;
            let want = host_arch();
            let pick = idx
                .manifests()
                .iter()
                .find(|m| {
                    m.platform().as_ref().is_some_and(|p| {
                        p.os().to_string() == "linux" && p.architecture().to_string() == want
                    })
                })
                .ok_or_else(|| bad(format!("the index has no manifest for linux/{want}")))?;
            let d: Digest = pick.digest().to_string().parse()?;
            return self.read_image(&d);
        }
        let m = ImageManifest::from_reader(&raw[..]).map_err(|e| bad(format!("manifest: {e}")))?;
        let media_type = m
            .media_type()
            .as_ref()
            .map(|t| t.to_string())
            .or_else(|| v["mediaType"].as_str().map(String::from))
            .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
        let config_digest: Digest = m.config().digest().to_string().parse()?;
        let config_raw = self.content.read(&config_digest)?;
        let config = ImageConfiguration::from_reader(&config_raw[..])
            .map_err(|e| bad(format!("config {config_digest}: {e}")))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != m.layers().len() {
            return Err(bad(format!(
                "the manifest has {} layers but the config lists {} diff IDs",
                m.layers().len(),
                diff_ids.len()
            )));
        }
        for d in &diff_ids {
            d.parse::<Digest>()
                .map_err(|e| bad(format!("config {config_digest}: diff ID: {e}")))?;
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::new();
        for (i, l) in m.layers().iter().enumerate() {
            let mt = l.media_type().to_string();
            if !(mt.contains("layer") || mt.contains("rootfs.diff")) {
                return Err(bad(format!(
                    "layer {} has media type {mt}, which is not a layer",
                    l.digest()
                )));
            }
            if mt.ends_with("+encrypted") {
                return Err(bad(format!("layer {} is encrypted ({mt})", l.digest())));
            }
            layers.push(Layer {
                digest: l.digest().to_string().parse()?,
                media_type: mt,
                size: l.size(),
                diff_id: diff_ids[i].clone(),
                chain_id: chains[i].clone(),
            });
        }
        Ok(Image {
            digest: digest.clone(),
            media_type,
            manifest_size: raw.len() as u64,
            config_digest,
            config_size: config_raw.len() as u64,
            config_raw,
            config,
            layers,
        })
    }

    /// Every image named by a reference: manifest digest → references.
    fn images_by_manifest(&self) -> Result<BTreeMap<Digest, Vec<String>>> {
        let mut by: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
        for (r, d) in self.content.refs()? {
            by.entry(d).or_default().push(r);
        }
        Ok(by)
    }

    pub fn images(&self) -> Result<ImagesReply> {
        let state = self.read_state()?;
        let mut rows = Vec::new();
        for (digest, refs) in self.images_by_manifest()? {
            let img = match self.read_image(&digest) {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(%digest, %e, "image not listed");
                    continue;
                }
            };
            let containers = state
                .containers
                .values()
                .filter(|c| c.manifest == digest.to_string())
                .count();
            let parsed: Vec<Reference> = refs
                .iter()
                .filter_map(|r| Reference::parse(r).ok())
                .collect();
            let tagged: HashSet<String> = parsed
                .iter()
                .filter(|r| r.tag().is_some())
                .map(|r| r.name())
                .collect();
            let mut any = false;
            for r in &parsed {
                if r.tag().is_none() && tagged.contains(&r.name()) {
                    continue;
                }
                any = true;
                let full = Reference::parse(&r.name()).expect("a name parses");
                let repo = full.familiar();
                let repo = repo.strip_suffix(":latest").unwrap_or(&repo).to_string();
                rows.push(ImageSummary {
                    repository: repo,
                    tag: r.tag().unwrap_or("<none>").to_string(),
                    digest: digest.to_string(),
                    id: img.config_digest.to_string(),
                    size: img.size(),
                    created: img.created(),
                    containers,
                });
            }
            if !any {
                rows.push(ImageSummary {
                    repository: "<none>".into(),
                    tag: "<none>".into(),
                    digest: digest.to_string(),
                    id: img.config_digest.to_string(),
                    size: img.size(),
                    created: img.created(),
                    containers,
                });
            }
        }
        rows.sort_by(|a, b| (&a.repository, &a.tag).cmp(&(&b.repository, &b.tag)));
        Ok(ImagesReply { images: rows })
    }

    pub fn inspect(&self, image: &str) -> Result<InspectReply> {
        let digest = self.resolve(image)?;
        let img = self.read_image(&digest)?;
        let references = self
            .content
            .refs()?
            .into_iter()
            .filter(|(_, d)| *d == digest)
            .map(|(r, _)| r)
            .collect();
        let config: serde_json::Value = serde_json::from_slice(&img.config_raw).unwrap_or_default();
        let history = config["history"].as_array().cloned().unwrap_or_default();
        Ok(InspectReply {
            id: img.config_digest.to_string(),
            digest: digest.to_string(),
            references,
            media_type: img.media_type.clone(),
            created: img.created(),
            os: img.config.os().to_string(),
            architecture: img.config.architecture().to_string(),
            size: img.size(),
            layers: img
                .layers
                .iter()
                .map(|l| LayerInfo {
                    digest: l.digest.to_string(),
                    media_type: l.media_type.clone(),
                    size: l.size,
                    diff_id: l.diff_id.clone(),
                    chain_id: l.chain_id.clone(),
                    unpacked: self.has_snapshot(&l.chain_id),
                })
                .collect(),
            config,
            history,
        })
    }

    // ----- snapshots ----------------------------------------------------------------------

    /// Make sure every layer of `img` is unpacked, unpacking missing ones in parallel.
    /// Returns what was unpacked now.
    pub fn ensure_snapshots(&self, img: &Image) -> Result<Vec<Unpacked>> {
        let missing: Vec<&Layer> = {
            let mut seen = HashSet::new();
            img.layers
                .iter()
                .filter(|l| !self.has_snapshot(&l.chain_id) && seen.insert(l.chain_id.clone()))
                .collect()
        };
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        for l in &missing {
            if !self.content.has(&l.digest) {
                return Err(LayerStoreError::NotFound(format!(
                    "layer {} of image {} is not in the content store (pull the image again)",
                    l.digest, img.digest
                )));
            }
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results: Mutex<Vec<Result<Option<Unpacked>>>> = Mutex::new(Vec::new());
        let workers = self.parallelism.min(missing.len()).max(1);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(l) = missing.get(i) else { break };
                    let r = self.unpack_layer(l);
                    let failed = r.is_err();
                    results.lock().expect("results").push(r);
                    if failed {
                        // Stop taking new layers: the prepare fails anyway.
                        next.store(missing.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let mut out = Vec::new();
        for r in results.into_inner().expect("results") {
            if let Some(u) = r? {
                out.push(u);
            }
        }
        Ok(out)
    }

    /// Unpack one layer into its snapshot: into a temp dir beside it, synced, then renamed.
    /// `None` when another unpack finished it first.
    fn unpack_layer(&self, l: &Layer) -> Result<Option<Unpacked>> {
        let lock = self
            .unpacking
            .lock()
            .expect("unpacking")
            .entry(l.chain_id.clone())
            .or_default()
            .clone();
        let r = {
            let _held = lock.lock().expect("snapshot lock");
            if self.has_snapshot(&l.chain_id) {
                // Another prepare unpacked it while this one waited.
                Ok(None)
            } else {
                self.unpack_layer_locked(l)
            }
        };
        let mut map = self.unpacking.lock().expect("unpacking");
        // The map's and ours: nobody else waits on it.
        if std::sync::Arc::strong_count(&lock) == 2 {
            map.remove(&l.chain_id);
        }
        r
    }

    fn unpack_layer_locked(&self, l: &Layer) -> Result<Option<Unpacked>> {
        let hex = hex_of(&l.chain_id);
        let tmp_name = format!(
            "{TMP_PREFIX}{hex}-{}-{}",
            std::process::id(),
            berth_bus::random_hex(4)
        );
        let tmp = self.snapshots.join(&tmp_name);
        self.active.lock().expect("active").insert(tmp_name.clone());
        let r = self.unpack_into(l, &tmp);
        if r.is_err() || matches!(r, Ok(None)) {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        self.active.lock().expect("active").remove(&tmp_name);
        r
    }

    fn unpack_into(&self, l: &Layer, tmp: &Path) -> Result<Option<Unpacked>> {
        let fs = tmp.join(SNAPSHOT_FS);
        std::fs::create_dir_all(&fs).map_err(io("create", &fs))?;
        let started = Instant::now();
        let stats: UnpackStats = unpack::unpack(
            &self.content.blob_path(&l.digest),
            &l.media_type,
            &l.digest.to_string(),
            &fs,
            Some(&l.diff_id),
            self.limits,
        )?;
        let meta = SnapshotMeta {
            chain_id: l.chain_id.clone(),
            layer: l.digest.to_string(),
            diff_id: stats.diff_id,
            entries: stats.entries,
            uncompressed: stats.uncompressed,
            seconds: started.elapsed().as_secs_f64(),
        };
        let mp = tmp.join(SNAPSHOT_META);
        std::fs::write(
            &mp,
            serde_json::to_vec_pretty(&meta).expect("meta serializes"),
        )
        .map_err(io("write", &mp))?;
        // One syncfs makes the whole tree durable before it becomes visible.
        let dir = std::fs::File::open(tmp).map_err(io("open", tmp))?;
        nix::unistd::syncfs(&dir).map_err(|e| io("syncfs", tmp)(e.into()))?;
        let dest = self.snapshot_dir(&l.chain_id);
        match std::fs::rename(tmp, &dest) {
            Ok(()) => Ok(Some(Unpacked { meta })),
            Err(e)
                if matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST))
                    && self.has_snapshot(&l.chain_id) =>
            {
                Ok(None)
            }
            Err(e) => Err(io("rename snapshot to", &dest)(e)),
        }
    }

    // ----- containers ---------------------------------------------------------------------

    /// Make the root filesystem of a container: snapshots of its image as lower dirs (topmost
    /// first) and a fresh upper and work dir.
    pub fn prepare(&self, req: &PrepareRequest) -> Result<(PrepareReply, Vec<Unpacked>)> {
        check_container_id(&req.container_id)?;
        let cdir = self.containers.join(&req.container_id);
        let upper = cdir.join("upper");
        let work = cdir.join("work");
        let img = {
            let _g = self.lock.lock().expect("lock");
            let digest = self.resolve(&req.image)?;
            let img = self.read_image(&digest)?;
            if img.layers.is_empty() {
                return Err(LayerStoreError::BadImage {
                    digest: digest.to_string(),
                    reason: "it has no layers".into(),
                });
            }
            let rec = ContainerRec {
                image: req.image.clone(),
                manifest: digest.to_string(),
                chain_ids: img.layers.iter().map(|l| l.chain_id.clone()).collect(),
                upper: upper.display().to_string(),
                work: work.display().to_string(),
            };
            match self.read_record(&req.container_id)? {
                // A retried prepare: the same root filesystem.
                Some(old)
                    if old.manifest == rec.manifest
                        && upper.is_dir()
                        && work.is_dir()
                        && img.layers.iter().all(|l| self.has_snapshot(&l.chain_id)) =>
                {
                    return Ok((self.reply(&img, &upper, &work, req.volatile), Vec::new()));
                }
                Some(old) if old.manifest != rec.manifest => {
                    return Err(LayerStoreError::Conflict(format!(
                        "container {} already has a root filesystem from image {}",
                        req.container_id, old.image
                    )));
                }
                _ => {}
            }
            // Recorded first, so a concurrent gc keeps the snapshots this prepare makes.
            self.write_record(&req.container_id, &rec, !req.volatile)?;
            img
        };
        let made = (|| {
            let unpacked = self.ensure_snapshots(&img)?;
            for d in [&upper, &work] {
                if d.exists() {
                    std::fs::remove_dir_all(d).map_err(io("remove stale", d))?;
                }
                std::fs::create_dir_all(d).map_err(io("create", d))?;
            }
            Ok(unpacked)
        })();
        match made {
            Ok(unpacked) => Ok((self.reply(&img, &upper, &work, req.volatile), unpacked)),
            Err(e) => {
                let _ = self.release(&req.container_id);
                Err(e)
            }
        }
    }

    fn reply(&self, img: &Image, upper: &Path, work: &Path, volatile: bool) -> PrepareReply {
        PrepareReply {
            rootfs: RootfsMount {
                lowerdirs: img
                    .layers
                    .iter()
                    .rev()
                    .map(|l| self.snapshot_fs(&l.chain_id).display().to_string())
                    .collect(),
                upperdir: upper.display().to_string(),
                workdir: work.display().to_string(),
                volatile,
            },
            image_digest: img.digest.to_string(),
            config: img.runtime_config(),
        }
    }

    /// Remove a container's upper and work dirs and its references.
    pub fn release(&self, id: &str) -> Result<()> {
        check_container_id(id)?;
        let _g = self.lock.lock().expect("lock");
        let record = self.record_path(id);
        let had = record.exists();
        let cdir = self.containers.join(id);
        // Out of the way at once (a rename each), deleted in the background; the record goes
        // last, so a release cut short leaves a record without an upper dir, dropped at open.
        let mut moved = Vec::new();
        let mut existed = false;
        for d in ["upper", "work"] {
            let from = cdir.join(d);
            let to = self.own.join(TRASH_DIR).join(format!(
                "{id}.{d}.{}.{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|t| t.as_nanos())
                    .unwrap_or_default(),
                TRASH_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ));
            match std::fs::rename(&from, &to) {
                Ok(()) => {
                    existed = true;
                    moved.push(to);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // The containers dir on a filesystem of its own: deleted in place.
                Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
                    existed = true;
                    std::fs::remove_dir_all(&from).map_err(io("remove", &from))?;
                }
                Err(e) => return Err(io("move to the trash", &from)(e)),
            }
        }
        berth_files::janitor::remove_later(moved);
        // The container dir is shared with the supervisor: removed only when empty.
        let _ = std::fs::remove_dir(&cdir);
        if had {
            std::fs::remove_file(&record).map_err(io("remove", &record))?;
        }
        if !had && !existed {
            return Err(LayerStoreError::NotFound(format!(
                "container {id} has no root filesystem here"
            )));
        }
        Ok(())
    }

    // ----- removal and gc -----------------------------------------------------------------

    /// Remove an image reference (and the image, when it was the last one).
    pub fn remove(&self, req: &RemoveRequest) -> Result<RemoveReply> {
        let _g = self.lock.lock().expect("lock");
        let digest = self.resolve(&req.image)?;
        let refs = self.content.refs()?;
        let of_image: Vec<String> = refs
            .iter()
            .filter(|(_, d)| **d == digest)
            .map(|(r, _)| r.clone())
            .collect();
        // By reference: that reference; by ID or digest: every reference of the image.
        let named: Option<String> = Reference::parse(&req.image)
            .ok()
            .map(|r| r.to_string())
            .filter(|r| of_image.contains(r) && !req.image.starts_with("sha256:"));
        let to_remove: Vec<String> = match &named {
            Some(r) => {
                let mut v = vec![r.clone()];
                // The last tag takes the image's digest references with it.
                let tags_left = of_image
                    .iter()
                    .filter(|x| *x != r)
                    .filter(|x| {
                        Reference::parse(x)
                            .ok()
                            .and_then(|p| p.tag().map(|_| ()))
                            .is_some()
                    })
                    .count();
                if tags_left == 0 {
                    v = of_image.clone();
                }
                v
            }
            None => {
                let repos: BTreeSet<String> = of_image
                    .iter()
                    .filter_map(|x| Reference::parse(x).ok().map(|p| p.name()))
                    .collect();
                if repos.len() > 1 && !req.force {
                    return Err(LayerStoreError::Conflict(format!(
                        "image {} is referenced in {} repositories ({}): remove them by name, or force",
                        req.image,
                        repos.len(),
                        repos.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                of_image.clone()
            }
        };
        let deletes_image = to_remove.len() == of_image.len();
        let st = self.read_state()?;
        let users: Vec<&String> = st
            .containers
            .iter()
            .filter(|(_, c)| c.manifest == digest.to_string())
            .map(|(id, _)| id)
            .collect();
        if deletes_image && !users.is_empty() && !req.force {
            return Err(LayerStoreError::Conflict(format!(
                "image {} is used by container{} {}: remove {} first, or force",
                req.image,
                if users.len() > 1 { "s" } else { "" },
                users
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if users.len() > 1 { "them" } else { "it" }
            )));
        }
        let mut reply = RemoveReply::default();
        for r in &to_remove {
            self.content.remove_ref(r)?;
            reply.untagged.push(r.clone());
        }
        if deletes_image {
            let img = self.read_image(&digest)?;
            let candidates: HashSet<String> = img.blobs().iter().map(|d| d.to_string()).collect();
            let chains: HashSet<String> = img.layers.iter().map(|l| l.chain_id.clone()).collect();
            let g = self.sweep(Some((&candidates, &chains)))?;
            reply.deleted = g.deleted;
            reply.space_freed = g.freed;
        }
        Ok(reply)
    }

    /// Remove every blob and snapshot nothing references (and, with `all`, every image no
    /// container uses).
    pub fn gc(&self, req: &GcRequest) -> Result<GcReply> {
        let _g = self.lock.lock().expect("lock");
        let mut reply = GcReply::default();
        // What releases left is given back now, not whenever the background deletion ends
        // (which may be removing the same dirs: what it removed first is no error).
        for d in self.trash()? {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                if d.exists() {
                    return Err(io("remove", &d)(e));
                }
            }
        }
        if req.all {
            let st = self.read_state()?;
            let used: HashSet<&str> = st
                .containers
                .values()
                .map(|c| c.manifest.as_str())
                .collect();
            for (r, d) in self.content.refs()? {
                if !used.contains(d.to_string().as_str()) {
                    self.content.remove_ref(&r)?;
                    reply.untagged.push(r);
                }
            }
        }
        let s = self.sweep(None)?;
        reply.blobs_removed = s.blobs;
        reply.snapshots_removed = s.snapshots;
        reply.space_freed = s.freed;
        Ok(reply)
    }

    /// What is in use: blobs and chain IDs of referenced images and prepared containers.
    fn marks(&self) -> Result<(HashSet<String>, HashSet<String>)> {
        let mut blobs = HashSet::new();
        let mut chains = HashSet::new();
        let st = self.read_state()?;
        let mut manifests: BTreeSet<Digest> = self.content.refs()?.into_values().collect();
        for c in st.containers.values() {
            chains.extend(c.chain_ids.iter().cloned());
            if let Ok(d) = c.manifest.parse::<Digest>() {
                manifests.insert(d);
            }
        }
        for m in manifests {
            blobs.insert(m.to_string());
            // An index: keep it and its manifests.
            if let Ok(raw) = self.content.read(&m) {
                if let Ok(idx) = serde_json::from_slice::<serde_json::Value>(&raw) {
                    for e in idx["manifests"].as_array().into_iter().flatten() {
                        if let Some(d) = e["digest"].as_str() {
                            blobs.insert(d.to_string());
                        }
                    }
                }
            }
            match self.read_image(&m) {
                Ok(img) => {
                    blobs.extend(img.blobs().iter().map(|d| d.to_string()));
                    chains.extend(img.layers.iter().map(|l| l.chain_id.clone()));
                }
                Err(e) => {
                    tracing::warn!(%m, %e, "gc: image unreadable, its blobs may be collected")
                }
            }
        }
        Ok((blobs, chains))
    }

    /// Delete unmarked blobs and snapshots (only among `only`, when given). Caller holds
    /// the lock.
    fn sweep(&self, only: Option<(&HashSet<String>, &HashSet<String>)>) -> Result<Swept> {
        let (keep_blobs, keep_chains) = self.marks()?;
        let leased = lease::protected(&self.data_root);
        let mut out = Swept::default();
        if !leased.everything {
            for d in self.content.list()? {
                let s = d.to_string();
                if keep_blobs.contains(&s) || leased.digests.contains(&s) {
                    continue;
                }
                if let Some((c, _)) = only {
                    if !c.contains(&s) {
                        continue;
                    }
                }
                let size = du(&self.content.blob_path(&d));
                if self.content.delete(&d)? {
                    out.freed += size;
                    out.blobs += 1;
                    out.deleted.push(s);
                }
            }
            if only.is_none() {
                out.freed += self.sweep_ingests(&leased);
            }
        }
        let active = self.active.lock().expect("active").clone();
        let rd = std::fs::read_dir(&self.snapshots).map_err(io("read", &self.snapshots))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if name.starts_with(TMP_PREFIX) {
                if only.is_none() && !active.contains(&name) && tmp_is_stale(&name) {
                    out.freed += du(&path);
                    std::fs::remove_dir_all(&path).map_err(io("remove", &path))?;
                }
                continue;
            }
            let chain = format!("sha256:{name}");
            if keep_chains.contains(&chain) {
                continue;
            }
            if let Some((_, c)) = only {
                if !c.contains(&chain) {
                    continue;
                }
            }
            let size = du(&path);
            // Renamed aside first, so a half-removed snapshot never looks complete.
            let doomed = self
                .snapshots
                .join(format!("{TMP_PREFIX}rm-{name}-{}-x", std::process::id()));
            std::fs::rename(&path, &doomed).map_err(io("rename", &path))?;
            std::fs::remove_dir_all(&doomed).map_err(io("remove", &doomed))?;
            out.freed += size;
            out.snapshots += 1;
            out.deleted.push(format!("snapshot:{chain}"));
        }
        let tmp = self.own.join("tmp");
        if only.is_none() && tmp.is_dir() && !leased.everything {
            // Leftovers of loads and saves that died (running ones hold a lease).
            for e in std::fs::read_dir(&tmp).map_err(io("read", &tmp))?.flatten() {
                out.freed += du(&e.path());
                let _ =
                    std::fs::remove_dir_all(e.path()).or_else(|_| std::fs::remove_file(e.path()));
            }
        }
        Ok(out)
    }

    /// Partial downloads whose writer is gone (no one holds the ingest file's lock).
    fn sweep_ingests(&self, leased: &lease::Protected) -> u64 {
        let mut freed = 0;
        let Ok(list) = self.content.ingests() else {
            return 0;
        };
        for (d, _) in list {
            if leased.digests.contains(&d.to_string()) {
                continue;
            }
            let p = self.content.ingest_path(&d);
            let Ok(f) = std::fs::OpenOptions::new().read(true).write(true).open(&p) else {
                continue;
            };
            if let Ok(lock) =
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
            {
                let size = du(&p);
                if std::fs::remove_file(&p).is_ok() {
                    freed += size;
                }
                drop(lock);
            }
        }
        freed
    }

    pub fn df(&self) -> Result<DfReply> {
        let st = self.read_state()?;
        let mut r = DfReply::default();
        let by = self.images_by_manifest()?;
        let used: HashSet<&str> = st
            .containers
            .values()
            .map(|c| c.manifest.as_str())
            .collect();
        r.images.count = by.len();
        r.images.active = by
            .keys()
            .filter(|d| used.contains(d.to_string().as_str()))
            .count();
        let mut used_blobs: HashSet<String> = HashSet::new();
        for d in by.keys().filter(|d| used.contains(d.to_string().as_str())) {
            if let Ok(i) = self.read_image(d) {
                used_blobs.extend(i.blobs().iter().map(|b| b.to_string()));
            }
        }
        for d in self.content.list()? {
            let size = du(&self.content.blob_path(&d));
            r.images.size += size;
            let s = d.to_string();
            if !used_blobs.contains(&s) {
                r.images.reclaimable += size;
            }
        }
        let used_chains: HashSet<&String> = st
            .containers
            .values()
            .flat_map(|c| c.chain_ids.iter())
            .collect();
        for e in std::fs::read_dir(&self.snapshots)
            .map_err(io("read", &self.snapshots))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = du(&e.path());
            r.snapshots.size += size;
            if name.starts_with(TMP_PREFIX) {
                continue;
            }
            r.snapshots.count += 1;
            let chain = format!("sha256:{name}");
            if used_chains.contains(&chain) {
                r.snapshots.active += 1;
            } else {
                r.snapshots.reclaimable += size;
            }
        }
        for c in st.containers.values() {
            r.containers.count += 1;
            r.containers.active += 1;
            r.containers.size += du(Path::new(&c.upper));
        }
        Ok(r)
    }
}

#[derive(Debug, Default)]
struct Swept {
    blobs: usize,
    snapshots: usize,
    freed: u64,
    deleted: Vec<String>,
}

/// A container ID usable as one path component.
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

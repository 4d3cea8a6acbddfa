//! A pull: resolve the reference (mirrors first, then the origin), choose the platform's
//! manifest, download config and layers concurrently into the content store (each streamed
//! through its digest check, retried with backoff and resumed with Range requests), then record
//! the manifest and the reference.

use crate::client::{EndpointSpec, RegistryClient};
use crate::error::PullError;
use crate::manifest::{self, Parsed};
use crate::progress::Progress;
use crate::retry::Attempts;
use crate::settings::Settings;
use berth_docker::config as docker_config;
use berth_docker::platform::Platform;
use berth_proto::puller::{LayerState, PullReply, ResolveReply};
use berth_proto::reference::Reference;
use berth_store::lease::Lease;
use berth_store::{ContentStore, Digest, IngestWriter, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use oci_spec::image::ImageManifest;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

/// Configs larger than this are refused.
const CONFIG_LIMIT: usize = 8 << 20;
/// Bytes gathered before one write to the ingest file.
const WRITE_BATCH: usize = 1 << 20;

/// How long a pull's lease protects its blobs from `gc` (a pull that takes longer loses
/// nothing already referenced; a killed pull's lease expires by itself).
const PULL_LEASE_TTL: Duration = Duration::from_secs(3600);

/// `pull-<pid>-<n>-<nanos>`: unique among the pulls of this host.
fn lease_name() -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("pull-{}-{n}-{t}", std::process::id())
}

pub struct Puller {
    store: ContentStore,
    data_root: PathBuf,
}

/// What a reference resolved to on a registry.
struct Resolved {
    client: Arc<RegistryClient>,
    index: Option<(Digest, Bytes)>,
    digest: Digest,
    body: Bytes,
    media_type: String,
    manifest: ImageManifest,
    /// The platform named by the index entry, when chosen from an index.
    platform: Option<String>,
}

fn digest_of(reference: &str, what: &str, s: &str) -> Result<Digest, PullError> {
    s.parse().map_err(|e: StoreError| PullError::Malformed {
        reference: reference.to_string(),
        what: what.to_string(),
        reason: e.to_string(),
    })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .expect("a content store task panicked")
}

impl Puller {
    pub fn new(store: ContentStore, data_root: PathBuf) -> Puller {
        Puller { store, data_root }
    }

    pub fn store(&self) -> &ContentStore {
        &self.store
    }

    pub fn settings(&self) -> Result<Settings, PullError> {
        Settings::load(&self.data_root)
    }

    fn docker_config_path(settings: &Settings) -> Option<PathBuf> {
        settings
            .docker_config
            .clone()
            .or_else(docker_config::default_path)
    }

    /// Connect to `spec` for `repository` with the credentials recorded for its host (read on
    /// a blocking thread: a credential helper may take a while).
    async fn connect(
        settings: &Settings,
        spec: &EndpointSpec,
        cred_host: &str,
        repository: &str,
    ) -> Result<RegistryClient, PullError> {
        let creds = match Self::docker_config_path(settings) {
            Some(p) => {
                let host = cred_host.to_string();
                tokio::task::spawn_blocking(move || docker_config::lookup(&p, &host))
                    .await
                    .map_err(|e| PullError::Internal(format!("credential lookup: {e}")))??
            }
            None => None,
        };
        RegistryClient::connect(
            spec,
            &settings.for_host(&spec.host),
            repository,
            creds,
            settings.retry_policy(),
        )
        .await
    }

    /// Resolve on the mirrors (in order), then on the origin.
    async fn resolve_remote(
        &self,
        settings: &Settings,
        r: &Reference,
        want: &Platform,
    ) -> Result<Resolved, PullError> {
        let mirrors = settings.for_host(r.domain()).mirrors;
        for m in &mirrors {
            let spec = EndpointSpec::mirror(m).map_err(|reason| PullError::Settings {
                path: self.data_root.join(crate::settings::FILE_NAME),
                reason,
            })?;
            let host = spec.host.clone();
            let attempt = async {
                let c = Self::connect(settings, &spec, &host, r.path()).await?;
                self.resolve_on(Arc::new(c), r, want).await
            };
            match attempt.await {
                Ok(res) => return Ok(res),
                Err(e) => {
                    tracing::info!(mirror = %m, reference = %r, error = %e, "mirror failed; next")
                }
            }
        }
        let spec = EndpointSpec::origin(r.domain());
        let c = Self::connect(settings, &spec, r.domain(), r.path()).await?;
        self.resolve_on(Arc::new(c), r, want).await
    }

    async fn resolve_on(
        &self,
        client: Arc<RegistryClient>,
        r: &Reference,
        want: &Platform,
    ) -> Result<Resolved, PullError> {
        let name = r.to_string();
        let (body, ctype, header_digest) = client.manifest(r.manifest_reference()).await?;
        let digest = Digest::of(&body);
        let claimed = match r.digest() {
            Some(d) => Some(d.to_string()),
            None => header_digest,
        };
        if let Some(c) = claimed {
            if c != digest.to_string() {
                return Err(PullError::Verify {
                    registry: client.host.clone(),
                    repository: client.repository.clone(),
                    digest: c.clone(),
                    reason: format!("the manifest received has digest {digest}, not {c}"),
                });
            }
        }
        let (parsed, media_type) = manifest::parse_served(&name, &body, ctype.as_deref())?;
        match parsed {
            Parsed::Image(m) => Ok(Resolved {
                client,
                index: None,
                digest,
                body,
                media_type,
                manifest: *m,
                platform: None,
            }),
            Parsed::Index(idx) => {
                let desc = manifest::select(&name, &idx, want)?;
                let child = digest_of(&name, "index entry", desc.digest().as_ref())?;
                let (cbody, cctype, _) = client.manifest(&child.to_string()).await?;
                let got = Digest::of(&cbody);
                if got != child || cbody.len() as u64 != desc.size() {
                    return Err(PullError::Verify {
                        registry: client.host.clone(),
                        repository: client.repository.clone(),
                        digest: child.to_string(),
                        reason: format!(
                            "the manifest received has digest {got} and {} bytes, the index says {child} and {} bytes",
                            cbody.len(),
                            desc.size()
                        ),
                    });
                }
                let (parsed, cmedia) = manifest::parse_served(&name, &cbody, cctype.as_deref())?;
                let Parsed::Image(m) = parsed else {
                    return Err(PullError::UnsupportedManifest {
                        reference: name,
                        reason: format!("index entry {child} is itself an index"),
                    });
                };
                let p = desc.platform().as_ref().map(|p| {
                    let mut s = format!("{}/{}", p.os(), p.architecture());
                    if let Some(v) = p.variant() {
                        s.push('/');
                        s.push_str(v);
                    }
                    s
                });
                Ok(Resolved {
                    client,
                    index: Some((digest, body)),
                    digest: child,
                    body: cbody,
                    media_type: cmedia,
                    manifest: *m,
                    platform: p,
                })
            }
        }
    }

    /// `resolve`: what the reference names now, without downloading layers or writing.
    pub async fn resolve(
        &self,
        r: &Reference,
        platform: Option<&Platform>,
    ) -> Result<ResolveReply, PullError> {
        let settings = self.settings()?;
        let want = platform.cloned().unwrap_or_else(Platform::host);
        let res = self.resolve_remote(&settings, r, &want).await?;
        let cfg_digest = res.manifest.config().digest().to_string();
        let cfg = res.client.small_blob(&cfg_digest, CONFIG_LIMIT).await?;
        if Digest::of(&cfg).to_string() != cfg_digest {
            return Err(PullError::Verify {
                registry: res.client.host.clone(),
                repository: res.client.repository.clone(),
                digest: cfg_digest,
                reason: format!("the config received has digest {}", Digest::of(&cfg)),
            });
        }
        let plat = self.check_platform(r, res.platform.as_deref(), &cfg, platform)?;
        let layers: Vec<(String, u64)> = res
            .manifest
            .layers()
            .iter()
            .map(|l| (l.digest().to_string(), l.size()))
            .collect();
        Ok(ResolveReply {
            reference: r.to_string(),
            digest: res.digest.to_string(),
            media_type: res.media_type,
            index_digest: res.index.map(|(d, _)| d.to_string()),
            config_digest: cfg_digest,
            size: layers.iter().map(|(_, s)| s).sum(),
            layers,
            platform: plat,
        })
    }

    /// The image's platform from its config; an error when one was asked for explicitly and
    /// the image (not chosen from an index) is for another.
    fn check_platform(
        &self,
        r: &Reference,
        index_platform: Option<&str>,
        config: &[u8],
        explicit: Option<&Platform>,
    ) -> Result<String, PullError> {
        let v: serde_json::Value =
            serde_json::from_slice(config).map_err(|e| PullError::Malformed {
                reference: r.to_string(),
                what: "image config".into(),
                reason: e.to_string(),
            })?;
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let (os, arch, variant) = (field("os"), field("architecture"), field("variant"));
        let mut found = format!("{os}/{arch}");
        if !variant.is_empty() {
            found.push('/');
            found.push_str(&variant);
        }
        if let (Some(want), None) = (explicit, index_platform) {
            let var = (!variant.is_empty()).then_some(variant.as_str());
            if want.score(&os, &arch, var).is_none() {
                return Err(PullError::PlatformMismatch {
                    reference: r.to_string(),
                    wanted: want.to_string(),
                    found,
                });
            }
        }
        Ok(index_platform.map(str::to_string).unwrap_or(found))
    }

    /// `pull`: make the image available in the content store and record its reference.
    pub async fn pull(
        &self,
        r: &Reference,
        platform: Option<&Platform>,
        progress: &Arc<Progress>,
    ) -> Result<PullReply, PullError> {
        let settings = self.settings()?;
        let want = platform.cloned().unwrap_or_else(Platform::host);
        if r.digest().is_some() {
            if let Some(reply) = self.pull_local(r, &want, platform, progress).await? {
                return Ok(reply);
            }
        }
        let res = self.resolve_remote(&settings, r, &want).await?;
        // Until the manifest and the reference are stored, nothing refers to the blobs this
        // pull writes: a lease keeps the layer-store's `gc` off them (and off the partial
        // downloads). Removed when this function returns, whatever it returns.
        let _lease = Lease::acquire(&self.data_root, &lease_name(), &[], PULL_LEASE_TTL).map_err(
            |source| {
                PullError::Store(StoreError::Io {
                    op: "take a lease in",
                    path: self.data_root.join(berth_store::lease::LEASES_DIR),
                    source,
                })
            },
        )?;
        let client = res.client.clone();
        let cfg = res.manifest.config();
        let cfg_digest = digest_of(&r.to_string(), "config descriptor", cfg.digest().as_ref())?;
        // The config is small: verified in memory, stored with the manifest at the end.
        let config = client
            .small_blob(&cfg_digest.to_string(), CONFIG_LIMIT)
            .await?;
        if Digest::of(&config) != cfg_digest {
            return Err(PullError::Verify {
                registry: client.host.clone(),
                repository: client.repository.clone(),
                digest: cfg_digest.to_string(),
                reason: format!("the config received has digest {}", Digest::of(&config)),
            });
        }
        let mut downloaded = false;
        let plat = self.check_platform(r, res.platform.as_deref(), &config, platform)?;

        // Layers, once each, in manifest order for the progress display.
        let mut layers: Vec<(Digest, u64)> = Vec::new();
        for l in res.manifest.layers() {
            let d = digest_of(&r.to_string(), "layer descriptor", l.digest().as_ref())?;
            if !layers.iter().any(|(x, _)| x == &d) {
                layers.push((d, l.size()));
            }
        }
        progress.set_layers(
            &layers
                .iter()
                .map(|(d, s)| (d.to_string(), *s))
                .collect::<Vec<_>>(),
        );
        let sem = Arc::new(Semaphore::new(settings.max_concurrent_downloads));
        let mut tasks = tokio::task::JoinSet::new();
        for (idx, (d, size)) in layers.iter().cloned().enumerate() {
            let (client, store, sem, settings, progress) = (
                client.clone(),
                self.store.clone(),
                sem.clone(),
                settings.clone(),
                progress.clone(),
            );
            tasks.spawn(async move {
                if store.has(&d) {
                    progress.set(idx, size, LayerState::Exists);
                    return Ok(false);
                }
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                fetch_blob(client, store, d, size, &settings, Some((&progress, idx))).await
            });
        }
        while let Some(r) = tasks.join_next().await {
            match r.expect("a download task panicked") {
                Ok(d) => downloaded |= d,
                Err(e) => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(e);
                }
            }
        }

        // Manifest (and index) last: whoever finds the manifest finds every blob it names.
        let (s, index, digest, body, cfg_d) = (
            self.store.clone(),
            res.index.clone(),
            res.digest.clone(),
            res.body.clone(),
            cfg_digest.clone(),
        );
        let name = r.to_string();
        let by_digest = r.with_digest(&res.digest.to_string());
        let newly = blocking(move || {
            let mut newly = !s.has(&digest) || !s.has(&cfg_d);
            s.put_verified(&cfg_d, &config)?;
            if let Some((d, b)) = &index {
                newly |= !s.has(d);
                s.put_verified(d, b)?;
            }
            s.put_verified(&digest, &body)?;
            s.set_ref(&name, &digest)?;
            s.set_ref(&by_digest, &digest)?;
            Ok(newly)
        })
        .await?;
        downloaded |= newly;
        Ok(PullReply {
            reference: r.to_string(),
            digest: res.digest.to_string(),
            config_digest: cfg_digest.to_string(),
            size: layers.iter().map(|(_, s)| s).sum(),
            layers: layers.iter().map(|(d, _)| d.to_string()).collect(),
            downloaded,
            index_digest: res.index.map(|(d, _)| d.to_string()),
            media_type: res.media_type,
            platform: plat,
        })
    }

    /// A pull by digest whose every blob is present already: no registry traffic.
    async fn pull_local(
        &self,
        r: &Reference,
        want: &Platform,
        explicit: Option<&Platform>,
        progress: &Arc<Progress>,
    ) -> Result<Option<PullReply>, PullError> {
        let Some(top) = r.digest().and_then(|d| d.parse::<Digest>().ok()) else {
            return Ok(None);
        };
        if !self.store.has(&top) {
            return Ok(None);
        }
        let name = r.to_string();
        let body = self.store.read(&top)?;
        let (parsed, mt) = manifest::parse(&name, &body, None)?;
        let (digest, m, media_type, index_digest, from_index) = match parsed {
            Parsed::Image(m) => (top, m, mt, None, None),
            Parsed::Index(idx) => {
                let desc = manifest::select(&name, &idx, want)?;
                let child = digest_of(&name, "index entry", desc.digest().as_ref())?;
                if !self.store.has(&child) {
                    return Ok(None);
                }
                let (p, cmt) = manifest::parse(&name, &self.store.read(&child)?, None)?;
                let Parsed::Image(m) = p else { return Ok(None) };
                let plat = desc
                    .platform()
                    .as_ref()
                    .map(|p| format!("{}/{}", p.os(), p.architecture()));
                (child, m, cmt, Some(top), plat)
            }
        };
        let cfg_digest = digest_of(&name, "config descriptor", m.config().digest().as_ref())?;
        let mut layers = Vec::new();
        for l in m.layers() {
            let d = digest_of(&name, "layer descriptor", l.digest().as_ref())?;
            if !self.store.has(&d) {
                return Ok(None);
            }
            if !layers.iter().any(|(x, _): &(Digest, u64)| x == &d) {
                layers.push((d, l.size()));
            }
        }
        if !self.store.has(&cfg_digest) {
            return Ok(None);
        }
        let config = self.store.read(&cfg_digest)?;
        let plat = self.check_platform(r, from_index.as_deref(), &config, explicit)?;
        progress.set_layers(
            &layers
                .iter()
                .map(|(d, s)| (d.to_string(), *s))
                .collect::<Vec<_>>(),
        );
        for (i, (_, s)) in layers.iter().enumerate() {
            progress.set(i, *s, LayerState::Exists);
        }
        self.store.set_ref(&name, &digest)?;
        self.store
            .set_ref(&r.with_digest(&digest.to_string()), &digest)?;
        Ok(Some(PullReply {
            reference: name,
            digest: digest.to_string(),
            config_digest: cfg_digest.to_string(),
            size: layers.iter().map(|(_, s)| s).sum(),
            layers: layers.iter().map(|(d, _)| d.to_string()).collect(),
            downloaded: false,
            index_digest: index_digest.map(|d| d.to_string()),
            media_type,
            platform: plat,
        }))
    }
}

/// Download one blob into the store (unless present), retrying transient failures and
/// resuming where the last attempt stopped. `Ok(true)` when this call stored it.
async fn fetch_blob(
    client: Arc<RegistryClient>,
    store: ContentStore,
    digest: Digest,
    size: u64,
    settings: &Settings,
    progress: Option<(&Arc<Progress>, usize)>,
) -> Result<bool, PullError> {
    let report = |done: u64, state: LayerState| {
        if let Some((p, i)) = progress {
            p.set(i, done, state);
        }
    };
    let verify_error = |reason: String| PullError::Verify {
        registry: client.host.clone(),
        repository: client.repository.clone(),
        digest: digest.to_string(),
        reason,
    };
    let mut fresh_retry_done = false;
    loop {
        report(0, LayerState::Waiting);
        let w = {
            let (s, d) = (store.clone(), digest.clone());
            blocking(move || s.writer(&d, Some(size))).await
        };
        let mut w = match w {
            Ok(w) => w,
            Err(StoreError::AlreadyExists { .. }) => {
                report(size, LayerState::Exists);
                return Ok(false);
            }
            Err(e) => return Err(e.into()),
        };
        let mut resumed = false;
        let mut attempts = Attempts::new(settings.retry_policy());
        let w = loop {
            report(w.offset(), LayerState::Downloading);
            if w.offset() == size {
                break w;
            }
            resumed |= w.offset() > 0;
            let (back, res) = download_once(&client, &digest, w, progress).await;
            w = back;
            match res {
                Ok(()) => break w,
                // On error, the partial download stays in ingest/ for the next pull to resume.
                Err(e) => {
                    let pause = attempts.next_pause(e)?;
                    tracing::info!(blob = %digest, attempt = attempts.failed(), offset = w.offset(), "resuming");
                    report(w.offset(), LayerState::Retrying);
                    tokio::time::sleep(pause).await;
                }
            }
        };
        report(size, LayerState::Verifying);
        match blocking(move || w.commit()).await {
            Ok(()) => {
                report(size, LayerState::Done);
                return Ok(true);
            }
            Err(e @ (StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. })) => {
                // A resumed download may have joined bytes of two different answers: try once
                // from the start before blaming the registry.
                if resumed && !fresh_retry_done {
                    tracing::info!(blob = %digest, error = %e, "resumed download failed verification; starting over");
                    fresh_retry_done = true;
                    continue;
                }
                return Err(verify_error(e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// One GET of a blob from the writer's offset, streamed into the writer on a blocking thread
/// (network, hashing and disk overlap). Returns the writer for the next attempt or the commit.
async fn download_once(
    client: &RegistryClient,
    digest: &Digest,
    w: IngestWriter,
    progress: Option<(&Arc<Progress>, usize)>,
) -> (IngestWriter, Result<(), PullError>) {
    let from = w.offset();
    let resp = match client.blob(&digest.to_string(), from).await {
        Ok(r) => r,
        Err(e) => return (w, Err(e)),
    };
    let url = crate::client::shown(resp.url());
    // A 200 to a range request: the registry sends the whole blob, so start over.
    let restart = from > 0
        && !(resp.status() == reqwest::StatusCode::PARTIAL_CONTENT
            && resp
                .headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(&format!("bytes {from}-"))));
    if restart {
        if let Some((p, i)) = progress {
            p.set(i, 0, LayerState::Downloading);
        }
    }
    let (tx, mut rx) = mpsc::channel::<Bytes>(64);
    let writer = tokio::task::spawn_blocking(move || {
        let mut w = w;
        if restart {
            if let Err(e) = w.restart() {
                return (w, Err(std::io::Error::other(e.to_string())));
            }
        }
        let mut buf = Vec::with_capacity(WRITE_BATCH);
        while let Some(chunk) = rx.blocking_recv() {
            buf.extend_from_slice(&chunk);
            if buf.len() >= WRITE_BATCH {
                if let Err(e) = w.write_all(&buf) {
                    return (w, Err(e));
                }
                buf.clear();
            }
        }
        let r = w.write_all(&buf);
        (w, r)
    });
    let mut stream = resp.bytes_stream();
    let mut net_err = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                let n = chunk.len() as u64;
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
                if let Some((p, i)) = progress {
                    p.add(i, n);
                }
            }
            Err(e) => {
                net_err = Some(PullError::Network {
                    registry: client.host.clone(),
                    step: format!("blob {digest}"),
                    reason: format!(
                        "reading the answer of {url}: {}",
                        crate::client::describe(&e)
                    ),
                });
                break;
            }
        }
    }
    drop(tx);
    let (w, written) = writer.await.expect("the blob writer panicked");
    if let Err(e) = written {
        let err = if e.kind() == std::io::ErrorKind::InvalidData {
            PullError::Verify {
                registry: client.host.clone(),
                repository: client.repository.clone(),
                digest: digest.to_string(),
                reason: e.to_string(),
            }
        } else {
            PullError::Store(StoreError::Io {
                op: "write",
                path: PathBuf::from(format!("ingest/{}", digest.hex())),
                source: e,
            })
        };
        return (w, Err(err));
    }
    if let Some(e) = net_err {
        return (w, Err(e));
    }
    if let Some(size) = w.expected_size() {
        if w.offset() < size {
            let err = PullError::Network {
                registry: client.host.clone(),
                step: format!("blob {digest}"),
                reason: format!(
                    "the answer of {url} ended after {} of {size} bytes",
                    w.offset()
                ),
            };
            return (w, Err(err));
        }
    }
    (w, Ok(()))
}

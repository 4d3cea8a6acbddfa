//! `load` and `save`: images in and out without a registry, as Docker archives (`docker
//! save`'s `manifest.json` + config + layer files) and OCI image layouts (a directory or a
//! tar of one). `save` writes one tar that is both, as Docker 25 does: an OCI layout
//! (`oci-layout`, `index.json`, `blobs/sha256/...`) plus `manifest.json` pointing into it.

use crate::core::{Image, LayerStore};
use crate::error::{io, LayerStoreError, Result};
use crate::lease::Lease;
use crate::unpack::Compression;
use berth_proto::layer_store::*;
use berth_proto::reference::Reference;
use berth_store::{Digest, StoreError};
use oci_spec::image::{Descriptor, ImageIndex, ImageIndexBuilder, ImageManifestBuilder, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

const MAX_JSON: u64 = 16 << 20;
const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Docker's `manifest.json` entry.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// Where a file of the archive is now.
#[derive(Debug, Clone)]
enum Loc {
    /// Extracted to a temp file.
    Temp(PathBuf),
    /// A `blobs/sha256/<hex>` entry, verified into the content store.
    Blob(Digest),
}

/// The files of an archive or layout, by cleaned name.
struct Source {
    files: HashMap<String, Loc>,
    links: HashMap<String, String>,
    what: String,
}

fn clean_name(name: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

impl Source {
    fn bad(&self, reason: impl Into<String>) -> LayerStoreError {
        LayerStoreError::BadArchive {
            path: self.what.clone(),
            reason: reason.into(),
        }
    }

    fn find(&self, name: &str) -> Option<&Loc> {
        let mut n = clean_name(name);
        for _ in 0..16 {
            if let Some(l) = self.files.get(&n) {
                return Some(l);
            }
            let t = self.links.get(&n)?;
            n = t.clone();
        }
        None
    }

    fn has(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    fn read(&self, ls: &LayerStore, name: &str) -> Result<Vec<u8>> {
        match self.find(name) {
            None => Err(self.bad(format!("it has no {name}"))),
            Some(Loc::Blob(d)) => Ok(ls.content.read(d)?),
            Some(Loc::Temp(p)) => {
                let f = File::open(p).map_err(io("open", p))?;
                let mut v = Vec::new();
                f.take(MAX_JSON)
                    .read_to_end(&mut v)
                    .map_err(io("read", p))?;
                Ok(v)
            }
        }
    }

    /// Put file `name` into the content store, checking it against `expected` when given.
    fn to_store(
        &self,
        ls: &LayerStore,
        name: &str,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64)> {
        match self.find(name) {
            None => Err(self.bad(format!("it has no {name}"))),
            Some(Loc::Blob(d)) => {
                if let Some(e) = expected {
                    if e != d {
                        return Err(self.bad(format!("{name} is {d}, expected {e}")));
                    }
                }
                Ok((d.clone(), ls.content.size(d)?))
            }
            Some(Loc::Temp(p)) => {
                let d = match expected {
                    Some(d) => d.clone(),
                    None => hash_file(p)?,
                };
                let size = std::fs::metadata(p).map_err(io("stat", p))?.len();
                if !ls.content.has(&d) {
                    let mut w = match ls.content.writer(&d, Some(size)) {
                        Ok(w) => w,
                        Err(StoreError::AlreadyExists { .. }) => return Ok((d, size)),
                        Err(e) => return Err(e.into()),
                    };
                    let mut f = File::open(p).map_err(io("open", p))?;
                    std::io::copy(&mut f, &mut w).map_err(io("copy into the store", p))?;
                    w.commit().map_err(|e| match e {
                        StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
                            self.bad(format!("{name}: {e}"))
                        }
                        e => e.into(),
                    })?;
                }
                Ok((d, size))
            }
        }
    }
}

fn hash_file(p: &Path) -> Result<Digest> {
    let mut f = BufReader::with_capacity(1 << 20, File::open(p).map_err(io("open", p))?);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io("read", p))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_sha256(&h.finalize()))
}

/// A temp dir under the layer-store's own tmp, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Read an archive: `blobs/sha256/<hex>` entries go straight into the content store
/// (verified), other regular files to temp files; symlinks are kept as name mappings.
/// Nothing in the archive names a path on disk.
fn read_archive(ls: &LayerStore, path: &Path, tmp: &Path) -> Result<Source> {
    let what = path.display().to_string();
    let bad = |reason: String| LayerStoreError::BadArchive {
        path: what.clone(),
        reason,
    };
    let f = File::open(path).map_err(io("open", path))?;
    let mut ar = tar::Archive::new(BufReader::with_capacity(1 << 20, f));
    let mut src = Source {
        files: HashMap::new(),
        links: HashMap::new(),
        what: what.clone(),
    };
    let entries = ar
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for (i, e) in entries.enumerate() {
        let mut e = e.map_err(|e| bad(format!("reading entry {i}: {e}")))?;
        let name = clean_name(&String::from_utf8_lossy(&e.path_bytes()));
        match e.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target =
                    String::from_utf8_lossy(&e.link_name_bytes().unwrap_or_default()).into_owned();
                let resolved = if e.header().entry_type() == tar::EntryType::Symlink
                    && !target.starts_with('/')
                {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    clean_name(&format!("{dir}/{target}"))
                } else {
                    clean_name(&target)
                };
                src.links.insert(name, resolved);
                continue;
            }
            _ => continue,
        }
        let blob = name.strip_prefix("blobs/sha256/").filter(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if let Some(hex) = blob {
            let d = Digest::from_hex(hex)?;
            if ls.content.has(&d) {
                std::io::copy(&mut e, &mut std::io::sink())
                    .map_err(|x| bad(format!("reading {name}: {x}")))?;
            } else {
                let size = e.size();
                match ls.content.writer(&d, Some(size)) {
                    Ok(mut w) => {
                        std::io::copy(&mut e, &mut w)
                            .map_err(|x| bad(format!("reading {name}: {x}")))?;
                        w.commit().map_err(|x| match x {
                            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
                                bad(format!("{name}: {x}"))
                            }
                            x => x.into(),
                        })?;
                    }
                    Err(StoreError::AlreadyExists { .. }) => {
                        std::io::copy(&mut e, &mut std::io::sink())
                            .map_err(|x| bad(format!("reading {name}: {x}")))?;
                    }
                    Err(x) => return Err(x.into()),
                }
            }
            src.files.insert(name, Loc::Blob(d));
        } else {
            let p = tmp.join(format!("f{i}"));
            let mut out = File::create(&p).map_err(io("create", &p))?;
            std::io::copy(&mut e, &mut out).map_err(|x| bad(format!("reading {name}: {x}")))?;
            src.files.insert(name, Loc::Temp(p));
        }
    }
    Ok(src)
}

/// A layout directory: files by name, read in place.
fn read_layout_dir(dir: &Path) -> Result<Source> {
    let mut src = Source {
        files: HashMap::new(),
        links: HashMap::new(),
        what: dir.display().to_string(),
    };
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for e in std::fs::read_dir(&abs).map_err(io("read", &abs))?.flatten() {
            let r = rel.join(e.file_name());
            let ft = e.file_type().map_err(io("stat", e.path()))?;
            if ft.is_dir() {
                stack.push(r);
            } else if ft.is_file() {
                src.files
                    .insert(r.to_string_lossy().into_owned(), Loc::Temp(e.path()));
            }
        }
    }
    Ok(src)
}

/// Load the images of an archive or layout at `req.path`.
pub fn load(ls: &LayerStore, req: &LoadRequest) -> Result<LoadReply> {
    let path = PathBuf::from(&req.path);
    if !path.is_absolute() {
        return Err(LayerStoreError::Invalid {
            what: "path",
            reason: format!(
                "{:?} is not absolute (the CLI sends absolute paths)",
                req.path
            ),
        });
    }
    let tag = match &req.tag {
        Some(t) => Some(
            Reference::parse(t)
                .map_err(|e| LayerStoreError::Invalid {
                    what: "tag",
                    reason: e.to_string(),
                })?
                .to_string(),
        ),
        None => None,
    };
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            LayerStoreError::NotFound(format!("{} does not exist", path.display()))
        }
        _ => io("stat", &path)(e),
    })?;
    // Keeps a concurrent gc from collecting blobs before their references exist.
    let _lease = Lease::acquire(
        &ls.data_root,
        &format!("load-{}", berth_bus::random_hex(6)),
        &[],
        Duration::from_secs(6 * 3600),
    )
    .map_err(io(
        "create lease in",
        ls.data_root.join(crate::lease::LEASES_DIR),
    ))?;
    let tmp = TempDir(
        ls.tmp_dir()?
            .join(format!("load-{}", berth_bus::random_hex(6))),
    );
    std::fs::create_dir_all(&tmp.0).map_err(io("create", &tmp.0))?;
    let (src, archive) = if meta.is_dir() {
        (read_layout_dir(&path)?, false)
    } else {
        (read_archive(ls, &path, &tmp.0)?, true)
    };
    let (format, images) = if src.has("oci-layout") && src.has("index.json") {
        let f = if archive { "oci-archive" } else { "oci-layout" };
        (f, load_oci(ls, &src, tag.as_deref())?)
    } else if src.has("manifest.json") {
        ("docker-archive", load_docker(ls, &src, tag.as_deref())?)
    } else {
        return Err(src.bad("it is neither a Docker archive (no manifest.json) nor an OCI layout (no oci-layout and index.json)"));
    };
    Ok(LoadReply {
        format: format.into(),
        images,
    })
}

fn set_refs(ls: &LayerStore, name: &Reference, manifest: &Digest) -> Result<String> {
    let full = name.to_string();
    ls.content.set_ref(&full, manifest)?;
    ls.content
        .set_ref(&name.with_digest(&manifest.to_string()), manifest)?;
    Ok(full)
}

fn loaded(ls: &LayerStore, reference: String, manifest: &Digest) -> Result<LoadedImage> {
    let img = ls.read_image(manifest)?;
    Ok(LoadedImage {
        reference,
        digest: manifest.to_string(),
        id: img.config_digest.to_string(),
    })
}

/// The image name an index entry carries: containerd's full-name annotation, or a
/// `ref.name` that is a whole reference (skopeo's `oci-archive:F:name:tag`).
fn entry_name(annotations: Option<&HashMap<String, String>>) -> Option<Reference> {
    let a = annotations?;
    if let Some(n) = a.get(NAME_ANNOTATION) {
        if let Ok(r) = Reference::parse(n) {
            return Some(r);
        }
    }
    let r = a.get(REF_ANNOTATION)?;
    if r.contains(':') || r.contains('/') {
        return Reference::parse(r).ok();
    }
    None
}

fn load_oci(ls: &LayerStore, src: &Source, tag: Option<&str>) -> Result<Vec<LoadedImage>> {
    let raw = src.read(ls, "index.json")?;
    let index =
        ImageIndex::from_reader(&raw[..]).map_err(|e| src.bad(format!("index.json: {e}")))?;
    let mut out = Vec::new();
    let mut untagged = Vec::new();
    for desc in index.manifests() {
        let d: Digest = desc.digest().to_string().parse()?;
        let manifest = copy_image(ls, src, &d, desc.media_type())?;
        match entry_name(desc.annotations().as_ref()) {
            Some(name) => {
                let full = set_refs(ls, &name, &manifest)?;
                out.push(loaded(ls, full, &manifest)?);
            }
            None => untagged.push((
                manifest,
                desc.annotations()
                    .as_ref()
                    .and_then(|a| a.get(REF_ANNOTATION).cloned()),
            )),
        }
    }
    name_untagged(ls, src, tag, untagged, &mut out)?;
    Ok(out)
}

/// Images without a name get `tag` (when it names one image), else the load fails.
fn name_untagged(
    ls: &LayerStore,
    src: &Source,
    tag: Option<&str>,
    untagged: Vec<(Digest, Option<String>)>,
    out: &mut Vec<LoadedImage>,
) -> Result<()> {
    if untagged.is_empty() {
        if let (Some(t), [one]) = (tag, out.as_slice()) {
            let d: Digest = one.digest.parse()?;
            let r = Reference::parse(t).expect("checked");
            let full = set_refs(ls, &r, &d)?;
            out.push(loaded(ls, full, &d)?);
        }
        return Ok(());
    }
    let distinct: HashSet<&Digest> = untagged.iter().map(|(d, _)| d).collect();
    match (tag, distinct.len()) {
        (Some(t), 1) => {
            let r = Reference::parse(t).expect("checked");
            let full = set_refs(ls, &r, &untagged[0].0)?;
            out.push(loaded(ls, full, &untagged[0].0)?);
            Ok(())
        }
        _ => Err(src.bad(format!(
            "{} image(s) in it carry no name ({}); load one at a time with a tag (berth load --tag NAME:TAG)",
            distinct.len(),
            untagged
                .iter()
                .map(|(d, r)| match r {
                    Some(r) => format!("{d} ref {r:?}"),
                    None => d.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Copy a manifest (following an index to this host's platform) and its blobs into the
/// store. Returns the image manifest's digest.
fn copy_image(ls: &LayerStore, src: &Source, d: &Digest, mt: &MediaType) -> Result<Digest> {
    let blob = |d: &Digest| format!("blobs/sha256/{}", d.hex());
    src.to_store(ls, &blob(d), Some(d))?;
    let raw = ls.content.read(d)?;
    let v: serde_json::Value =
        serde_json::from_slice(&raw).map_err(|e| src.bad(format!("{d}: {e}")))?;
    if v.get("manifests").is_some() || *mt == MediaType::ImageIndex {
        let idx = ImageIndex::from_reader(&raw[..]).map_err(|e| src.bad(format!("{d}: {e}")))?;
        let pick = crate::core::host_entry(&idx).ok_or_else(|| {
            src.bad(format!(
                "index {d} has no image for {}",
                berth_docker::platform::Platform::host()
            ))
        })?;
        let child: Digest = pick.digest().to_string().parse()?;
        return copy_image(ls, src, &child, pick.media_type());
    }
    let m = oci_spec::image::ImageManifest::from_reader(&raw[..])
        .map_err(|e| src.bad(format!("manifest {d}: {e}")))?;
    let c: Digest = m.config().digest().to_string().parse()?;
    src.to_store(ls, &blob(&c), Some(&c))?;
    for l in m.layers() {
        let ld: Digest = l.digest().to_string().parse()?;
        src.to_store(ls, &blob(&ld), Some(&ld))?;
    }
    // Check it reads as an image now (config parses, layer count matches).
    ls.read_image(d)?;
    Ok(d.clone())
}

fn layer_media_type(c: Compression) -> MediaType {
    match c {
        Compression::None => MediaType::ImageLayer,
        Compression::Gzip => MediaType::ImageLayerGzip,
        Compression::Zstd => MediaType::ImageLayerZstd,
    }
}

fn oci_digest(d: &Digest) -> Result<oci_spec::image::Digest> {
    oci_spec::image::Digest::from_str(&d.to_string()).map_err(|e| LayerStoreError::Invalid {
        what: "digest",
        reason: e.to_string(),
    })
}

fn load_docker(ls: &LayerStore, src: &Source, tag: Option<&str>) -> Result<Vec<LoadedImage>> {
    let raw = src.read(ls, "manifest.json")?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&raw).map_err(|e| src.bad(format!("manifest.json: {e}")))?;
    if entries.is_empty() {
        return Err(src.bad("manifest.json lists no image"));
    }
    let mut out = Vec::new();
    let mut untagged = Vec::new();
    for e in &entries {
        let (cd, csize) = src.to_store(ls, &e.config, None)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let (ld, lsize) = src.to_store(ls, l, None)?;
            let mut head = [0u8; 4];
            let n = ls.content.open_blob(&ld)?.read(&mut head).unwrap_or(0);
            let mt = layer_media_type(Compression::sniff(&head[..n]));
            layers.push(Descriptor::new(mt, lsize, oci_digest(&ld)?));
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                csize,
                oci_digest(&cd)?,
            ))
            .layers(layers)
            .build()
            .map_err(|e| src.bad(format!("building the manifest of {cd}: {e}")))?;
        let body = manifest
            .to_string()
            .map_err(|e| src.bad(format!("manifest of {cd}: {e}")))?;
        let md = ls.content.put_bytes(body.as_bytes())?;
        ls.read_image(&md)?;
        let tags = e.repo_tags.clone().unwrap_or_default();
        if tags.is_empty() {
            untagged.push((md.clone(), None));
        }
        for t in tags {
            let r = Reference::parse(&t).map_err(|x| src.bad(format!("RepoTags: {x}")))?;
            let full = set_refs(ls, &r, &md)?;
            out.push(loaded(ls, full, &md)?);
        }
    }
    name_untagged(ls, src, tag, untagged, &mut out)?;
    Ok(out)
}

/// What one saved image is called.
struct Named {
    img: Image,
    refs: Vec<Reference>,
}

/// Write the images to `req.path` as one tar that is both an OCI layout and a Docker archive.
pub fn save(ls: &LayerStore, req: &SaveRequest) -> Result<SaveReply> {
    let path = PathBuf::from(&req.path);
    if !path.is_absolute() {
        return Err(LayerStoreError::Invalid {
            what: "path",
            reason: format!(
                "{:?} is not absolute (the CLI sends absolute paths)",
                req.path
            ),
        });
    }
    if req.images.is_empty() {
        return Err(LayerStoreError::Invalid {
            what: "images",
            reason: "name at least one image".into(),
        });
    }
    if !path.parent().is_some_and(|p| p.is_dir()) {
        return Err(LayerStoreError::Invalid {
            what: "path",
            reason: format!("the directory of {} does not exist", path.display()),
        });
    }
    let refs = ls.content.refs()?;
    let mut named: Vec<Named> = Vec::new();
    for name in &req.images {
        let d = ls.resolve(name)?;
        let img = ls.read_image(&d)?;
        let want: Vec<Reference> = match Reference::parse(name)
            .ok()
            .filter(|r| refs.get(&r.to_string()) == Some(&d))
        {
            Some(r) if !name.starts_with("sha256:") => vec![r],
            _ => refs
                .iter()
                .filter(|(_, x)| **x == d)
                .filter_map(|(r, _)| Reference::parse(r).ok())
                .filter(|r| r.tag().is_some())
                .collect(),
        };
        match named.iter_mut().find(|n| n.img.digest == img.digest) {
            Some(n) => n.refs.extend(want),
            None => named.push(Named { img, refs: want }),
        }
    }
    let tmp = berth_files::temp_path(&path).map_err(io("name a file beside", &path))?;
    let r = write_archive(ls, &named, &tmp);
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, &path).map_err(io("rename to", &path))?;
    let size = std::fs::metadata(&path).map_err(io("stat", &path))?.len();
    let mut images = Vec::new();
    for n in &named {
        let rs: Vec<String> = if n.refs.is_empty() {
            vec!["<none>".into()]
        } else {
            n.refs.iter().map(|r| r.to_string()).collect()
        };
        for r in rs {
            images.push(LoadedImage {
                reference: r,
                digest: n.img.digest.to_string(),
                id: n.img.config_digest.to_string(),
            });
        }
    }
    Ok(SaveReply {
        path: path.display().to_string(),
        size,
        images,
    })
}

fn header(size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn write_archive(ls: &LayerStore, named: &[Named], tmp: &Path) -> Result<()> {
    let f = File::create(tmp).map_err(io("create", tmp))?;
    let mut b = tar::Builder::new(BufWriter::with_capacity(1 << 20, f));
    let werr = |e: std::io::Error| io("write", tmp)(e);
    let add = |b: &mut tar::Builder<BufWriter<File>>, name: &str, data: &[u8]| -> Result<()> {
        let mut h = header(data.len() as u64, 0o644, tar::EntryType::Regular);
        b.append_data(&mut h, name, data).map_err(werr)
    };
    for d in ["blobs/", "blobs/sha256/"] {
        let mut h = header(0, 0o755, tar::EntryType::Directory);
        b.append_data(&mut h, d, std::io::empty()).map_err(werr)?;
    }
    add(&mut b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut written: HashSet<Digest> = HashSet::new();
    let mut descs = Vec::new();
    let mut docker = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for n in named {
        for d in n.img.blobs() {
            if !written.insert(d.clone()) {
                continue;
            }
            let p = ls.content.blob_path(&d);
            let mut f = File::open(&p).map_err(io("open", &p))?;
            let size = f.metadata().map_err(io("stat", &p))?.len();
            let mut h = header(size, 0o644, tar::EntryType::Regular);
            b.append_data(&mut h, format!("blobs/sha256/{}", d.hex()), &mut f)
                .map_err(werr)?;
        }
        let mt = MediaType::from(n.img.media_type.as_str());
        let mut push_desc = |ann: Option<HashMap<String, String>>| -> Result<()> {
            let mut desc =
                Descriptor::new(mt.clone(), n.img.manifest_size, oci_digest(&n.img.digest)?);
            desc.set_annotations(ann);
            descs.push(desc);
            Ok(())
        };
        if n.refs.is_empty() {
            push_desc(None)?;
        }
        let mut tags = Vec::new();
        for r in &n.refs {
            let mut ann = HashMap::new();
            ann.insert(NAME_ANNOTATION.to_string(), r.to_string());
            if let Some(t) = r.tag() {
                ann.insert(REF_ANNOTATION.to_string(), t.to_string());
                tags.push(r.familiar());
                let repo = Reference::parse(&r.name()).expect("name parses").familiar();
                let repo = repo.strip_suffix(":latest").unwrap_or(&repo).to_string();
                repositories
                    .entry(repo)
                    .or_default()
                    .insert(t.to_string(), n.img.config_digest.hex().to_string());
            }
            push_desc(Some(ann))?;
        }
        docker.push(DockerEntry {
            config: format!("blobs/sha256/{}", n.img.config_digest.hex()),
            repo_tags: Some(tags),
            layers: n
                .img
                .layers
                .iter()
                .map(|l| format!("blobs/sha256/{}", l.digest.hex()))
                .collect(),
        });
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(descs)
        .build()
        .map_err(|e| io("build index.json for", tmp)(std::io::Error::other(e)))?;
    let index = index
        .to_string()
        .map_err(|e| io("write index.json into", tmp)(std::io::Error::other(e)))?;
    add(&mut b, "index.json", index.as_bytes())?;
    add(
        &mut b,
        "manifest.json",
        &serde_json::to_vec(&docker).expect("serializes"),
    )?;
    if !repositories.is_empty() {
        add(
            &mut b,
            "repositories",
            &serde_json::to_vec(&repositories).expect("serializes"),
        )?;
    }
    let mut w = b.into_inner().map_err(werr)?;
    w.flush().map_err(werr)?;
    w.into_inner()
        .map_err(|e| werr(e.into_error()))?
        .sync_all()
        .map_err(werr)
}

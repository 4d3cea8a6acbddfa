//! Crafted layers and trees for the layer-store's tests: tar streams written entry by entry
//! with raw names (so hostile ones can be expressed), images put straight into a content
//! store or imported from an OCI layout made by `umoci`, file trees described and compared,
//! and overlay mounts removed on drop.

use berth_proto::isolator::RootfsMount;
use berth_store::{ContentStore, Digest};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A tar stream built entry by entry. Names and link names are written as given (no
/// checks), longer names through PAX records.
#[derive(Default)]
pub struct LayerTar {
    buf: Vec<u8>,
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where len counts the whole record, itself included.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl LayerTar {
    pub fn new() -> LayerTar {
        LayerTar::default()
    }

    #[allow(clippy::too_many_arguments)] // one per tar header field
    fn raw(
        &mut self,
        kind: tar::EntryType,
        name: &[u8],
        link: &[u8],
        mode: u32,
        data: &[u8],
        owner: (u64, u64),
        dev: (u32, u32),
        pax: &[(&str, &[u8])],
    ) {
        let mut records = Vec::new();
        for (k, v) in pax {
            records.extend(pax_record(k, v));
        }
        if name.len() > 99 {
            records.extend(pax_record("path", name));
        }
        if link.len() > 99 {
            records.extend(pax_record("linkpath", link));
        }
        if !records.is_empty() {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(records.len() as u64);
            h.set_mode(0o644);
            h.as_old_mut().name[..9].copy_from_slice(b"PaxHeader");
            h.set_cksum();
            self.push(&h, &records);
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        let n = name.len().min(99);
        h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(99);
        h.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(dev.0).expect("ustar major");
            h.set_device_minor(dev.1).expect("ustar minor");
        }
        h.set_cksum();
        self.push(&h, data);
    }

    fn push(&mut self, h: &tar::Header, data: &[u8]) {
        self.buf.extend_from_slice(h.as_bytes());
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
    }

    pub fn dir(mut self, name: &str, mode: u32) -> Self {
        self.raw(
            tar::EntryType::Directory,
            name.as_bytes(),
            b"",
            mode,
            b"",
            (0, 0),
            (0, 0),
            &[],
        );
        self
    }

    pub fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.raw(
            tar::EntryType::Regular,
            name.as_bytes(),
            b"",
            mode,
            data,
            (0, 0),
            (0, 0),
            &[],
        );
        self
    }

    /// A file carrying one xattr (a `SCHILY.xattr.` PAX record).
    pub fn file_with_xattr(self, name: &str, xattr: &str, value: &[u8], data: &[u8]) -> Self {
        let key = format!("SCHILY.xattr.{xattr}");
        self.file_with(name, data, 0o644, 0, 0, &[(key.as_str(), value)])
    }

    /// A file with mode, owner and PAX records (`SCHILY.xattr.<name>` for xattrs).
    pub fn file_with(
        mut self,
        name: &str,
        data: &[u8],
        mode: u32,
        uid: u64,
        gid: u64,
        pax: &[(&str, &[u8])],
    ) -> Self {
        self.raw(
            tar::EntryType::Regular,
            name.as_bytes(),
            b"",
            mode,
            data,
            (uid, gid),
            (0, 0),
            pax,
        );
        self
    }

    pub fn symlink(mut self, name: &str, target: &str) -> Self {
        self.raw(
            tar::EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            0o777,
            b"",
            (0, 0),
            (0, 0),
            &[],
        );
        self
    }

    pub fn hardlink(mut self, name: &str, target: &str) -> Self {
        self.raw(
            tar::EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            0o644,
            b"",
            (0, 0),
            (0, 0),
            &[],
        );
        self
    }

    pub fn chardev(mut self, name: &str, major: u32, minor: u32) -> Self {
        self.raw(
            tar::EntryType::Char,
            name.as_bytes(),
            b"",
            0o666,
            b"",
            (0, 0),
            (major, minor),
            &[],
        );
        self
    }

    pub fn fifo(mut self, name: &str) -> Self {
        self.raw(
            tar::EntryType::Fifo,
            name.as_bytes(),
            b"",
            0o600,
            b"",
            (0, 0),
            (0, 0),
            &[],
        );
        self
    }

    /// The tar stream with its end-of-archive marker.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend(std::iter::repeat_n(0u8, 1024));
        self.buf
    }
}

/// `gzip -c` of `data` (by the real gzip).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("gzip output");
    w.join().expect("writer").expect("write to gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

pub fn sha256(data: &[u8]) -> String {
    Digest::of(data).to_string()
}

/// The platform architecture name of this host, as images write it.
pub fn host_arch() -> &'static str {
    berth_layer_store::core::host_arch()
}

/// Put an image made of the uncompressed tar `layers` into `store` under `reference` (and
/// `name@digest`). Returns the manifest digest and the layer digests.
pub fn store_image(
    store: &ContentStore,
    reference: &str,
    layers: &[Vec<u8>],
) -> (String, Vec<String>) {
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut digests = Vec::new();
    for tar in layers {
        let d = store.put_bytes(tar).expect("put layer");
        descs.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d.to_string(),
            "size": tar.len(),
        }));
        diff_ids.push(sha256(tar));
        digests.push(d.to_string());
    }
    let config = serde_json::json!({
        "architecture": host_arch(),
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let cb = serde_json::to_vec(&config).unwrap();
    let cd = store.put_bytes(&cb).expect("put config");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": cb.len()},
        "layers": descs,
    });
    let md = store
        .put_bytes(&serde_json::to_vec(&manifest).unwrap())
        .expect("put manifest");
    set_refs(store, reference, &md);
    (md.to_string(), digests)
}

fn set_refs(store: &ContentStore, reference: &str, md: &Digest) {
    let r = berth_proto::reference::Reference::parse(reference).expect("a valid reference");
    store.set_ref(&r.to_string(), md).expect("set ref");
    store
        .set_ref(&r.with_digest(&md.to_string()), md)
        .expect("set digest ref");
}

/// Copy image `tag` of the OCI layout at `layout` (every blob of the layout) into `store`
/// under `reference`, as a pull would leave it. Returns the manifest digest.
pub fn import_layout(store: &ContentStore, layout: &Path, tag: &str, reference: &str) -> String {
    for e in std::fs::read_dir(layout.join("blobs/sha256"))
        .expect("layout blobs")
        .flatten()
    {
        let hex = e.file_name().to_string_lossy().into_owned();
        let d = Digest::from_hex(&hex).expect("blob name is a digest");
        if !store.has(&d) {
            store
                .put_verified(&d, &std::fs::read(e.path()).unwrap())
                .expect("put blob");
        }
    }
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {}", layout.display()));
    let md: Digest = m["digest"].as_str().unwrap().parse().unwrap();
    set_refs(store, reference, &md);
    md.to_string()
}

/// Bytes allocated under `path` (hard links once), as `du` counts them.
pub fn disk_usage(path: &Path) -> u64 {
    berth_layer_store::core::du(path)
}

/// One node of a file tree, as compared between berth's overlay and `umoci unpack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size and content hash of regular files.
    pub size: u64,
    pub sha256: String,
    pub link: String,
    pub rdev: u64,
    /// Mtime of non-directories (directory mtimes change as overlay merges them).
    pub mtime: i64,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let mut names = vec![0u8; 64 * 1024];
    // SAFETY: valid path and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    let mut out = BTreeMap::new();
    if n <= 0 {
        return out;
    }
    for name in names[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
    {
        let s = String::from_utf8_lossy(name).into_owned();
        if s.starts_with("trusted.overlay.") || s == "security.selinux" {
            continue;
        }
        let cn = CString::new(name).unwrap();
        let mut val = vec![0u8; 64 * 1024];
        // SAFETY: valid path, name and buffer.
        let m =
            unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
        if m >= 0 {
            val.truncate(m as usize);
            out.insert(s, val);
        }
    }
    out
}

/// Every path under `root` (relative, root itself as `.`), described.
pub fn tree(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let p = root.join(&rel);
        let m =
            std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let mut n = Node {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: 0,
            sha256: String::new(),
            link: String::new(),
            rdev: if ft.is_char_device() || ft.is_block_device() {
                m.rdev()
            } else {
                0
            },
            mtime: if ft.is_dir() { 0 } else { m.mtime() },
            xattrs: xattrs(&p),
        };
        if ft.is_file() {
            let data = std::fs::read(&p).unwrap();
            n.size = data.len() as u64;
            n.sha256 = sha256(&data);
        }
        if ft.is_symlink() {
            n.link = std::fs::read_link(&p)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            n.mode = 0;
        }
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                stack.push(rel.join(e.file_name()));
            }
        }
        let key = if rel.as_os_str().is_empty() {
            ".".to_string()
        } else {
            rel.to_string_lossy().into_owned()
        };
        out.insert(key, n);
    }
    out
}

/// Differences between two trees, one line each (empty when equal). The root's own metadata
/// is left out (overlay shows the topmost layer's root).
pub fn diff_trees(want: &BTreeMap<String, Node>, got: &BTreeMap<String, Node>) -> Vec<String> {
    let mut d = Vec::new();
    for (k, w) in want {
        if k == "." {
            continue;
        }
        match got.get(k) {
            None => d.push(format!("missing: {k}")),
            Some(g) if g != w => d.push(format!("differs: {k}\n  want {w:?}\n  got  {g:?}")),
            _ => {}
        }
    }
    for k in got.keys() {
        if !want.contains_key(k) {
            d.push(format!("extra: {k}"));
        }
    }
    d
}

/// Panic with every difference when the trees at `got` and `want` differ.
pub fn assert_same_tree(got: &Path, want: &Path) {
    let d = diff_trees(&tree(want), &tree(got));
    assert!(
        d.is_empty(),
        "{} differs from {}:\n{}",
        got.display(),
        want.display(),
        d.join("\n")
    );
}

/// The overlay a prepared root filesystem describes, mounted at a fresh temp dir (as the
/// isolator mounts it), unmounted on drop.
pub struct OverlayMount {
    pub dir: tempfile::TempDir,
}

impl OverlayMount {
    pub fn mount(rootfs: &RootfsMount) -> OverlayMount {
        let dir = tempfile::Builder::new()
            .prefix("berth-ovl-")
            .tempdir()
            .expect("tempdir");
        let opts = format!(
            "lowerdir={},upperdir={},workdir={}",
            rootfs.lowerdirs.join(":"),
            rootfs.upperdir,
            rootfs.workdir
        );
        let target = dir.path().join("m");
        std::fs::create_dir(&target).unwrap();
        nix::mount::mount(
            Some("overlay"),
            &target,
            Some("overlay"),
            nix::mount::MsFlags::empty(),
            Some(opts.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount overlay {opts}: {e}"));
        OverlayMount { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("m")
    }
}

impl Drop for OverlayMount {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path(), nix::mount::MntFlags::MNT_DETACH);
    }
}

/// `umoci unpack` of `tag` of the layout at `layout` into a temp dir; the tree is its
/// `bundle/rootfs`.
pub fn umoci_unpack(layout: &Path, tag: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("berth-umoci-")
        .tempdir()
        .expect("tempdir");
    let bundle = dir.path().join("bundle");
    let image = format!("{}:{tag}", layout.display());
    let out = Command::new("umoci")
        .args(["unpack", "--image", &image])
        .arg(&bundle)
        .output()
        .expect("run umoci");
    assert!(
        out.status.success(),
        "umoci unpack {image}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir
}

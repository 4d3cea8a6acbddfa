//! Unpacking one layer (a gzip, zstd or plain tar stream) into a snapshot directory in the
//! overlayfs whiteout format, treating the layer as hostile input.
//!
//! Every entry is created relative to a directory file descriptor opened with `openat2` and
//! `RESOLVE_BENEATH`, so the kernel refuses any resolution (`..`, absolute or relative symlinks)
//! that would leave the snapshot; the final component is created with `*at` calls that never
//! follow it (`O_CREAT|O_EXCL|O_NOFOLLOW`, `symlinkat`, `mknodat`, `AT_SYMLINK_NOFOLLOW`).
//! Entry names are cleaned first: a leading `/` is dropped (absolute names land inside the
//! snapshot, as Docker does) and a `..` that would climb above the root refuses the layer.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid};
use sha2::{Digest as _, Sha256};
use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The xattr overlayfs reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// From the magic bytes at the start of a blob.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// From an OCI or Docker layer media type; `None` when the type does not say.
    pub fn from_media_type(mt: &str) -> Option<Compression> {
        if mt.ends_with("+gzip") || mt.ends_with(".tar.gzip") || mt.ends_with("tar.gzip") {
            Some(Compression::Gzip)
        } else if mt.ends_with("+zstd") {
            Some(Compression::Zstd)
        } else if mt.ends_with(".tar") || mt.ends_with("layer.v1.tar") {
            Some(Compression::None)
        } else {
            None
        }
    }
}

/// Limits applied while unpacking.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most uncompressed bytes one layer may expand to (tar stream, headers included).
    pub max_uncompressed: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_uncompressed: 64 << 30,
        }
    }
}

/// What one unpack did.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UnpackStats {
    pub entries: u64,
    /// Bytes of the uncompressed tar stream.
    pub uncompressed: u64,
    /// `sha256:` of the uncompressed stream (the layer's diff ID).
    pub diff_id: String,
}

/// Why a layer could not be unpacked. Every variant names the layer and, where there is one,
/// the entry.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer {layer}: entry {entry:?} refused: {reason}")]
    Refused {
        layer: String,
        entry: String,
        reason: String,
    },
    #[error("layer {layer}: entry {entry:?}: {op}: {source}")]
    Entry {
        layer: String,
        entry: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: {op} {}: {source}", path.display())]
    Io {
        layer: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: reading the archive: {source}")]
    Archive {
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error("layer {layer}: uncompressed content exceeds the limit of {limit} bytes")]
    TooLarge { layer: String, limit: u64 },
    #[error(
        "layer {layer}: uncompressed content is {actual}, but the image config says {expected}"
    )]
    DiffIdMismatch {
        layer: String,
        expected: String,
        actual: String,
    },
    #[error("layer {layer}: entry {entry:?} has unsupported type {kind}")]
    Unsupported {
        layer: String,
        entry: String,
        kind: String,
    },
}

/// Counts and hashes what passes through, and fails once more than `limit` bytes did.
struct Meter<R> {
    inner: R,
    hasher: Sha256,
    count: Arc<AtomicU64>,
    limit: u64,
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.count.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.limit {
            return Err(io::Error::other("uncompressed size limit exceeded"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Completes the last 512-byte block of a stream that ends inside it, with zeros. Some
/// producers (umoci 0.4) end a layer right after the last entry's data, without its padding
/// and without the end-of-archive blocks; the padding is not content (the diff ID covers only
/// the real bytes), and a file whose data is cut short is still refused (its size is checked).
struct PadToBlock<R> {
    inner: R,
    pos: u64,
    pad: Option<u64>,
}

impl<R: Read> Read for PadToBlock<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pad.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.pos += n as u64;
                return Ok(n);
            }
            self.pad = Some((512 - self.pos % 512) % 512);
        }
        let left = self.pad.as_mut().expect("set above");
        let n = (*left).min(buf.len() as u64) as usize;
        buf[..n].fill(0);
        *left -= n as u64;
        Ok(n)
    }
}

/// Open the decompressed stream of a layer blob: compression from the media type when it
/// says, else from the magic bytes.
fn decoder(file: File, media_type: &str) -> io::Result<Box<dyn Read + Send>> {
    let mut buf = BufReader::with_capacity(256 << 10, file);
    let head = {
        use std::io::BufRead;
        buf.fill_buf()?.to_vec()
    };
    let sniffed = Compression::sniff(&head);
    let c = match Compression::from_media_type(media_type) {
        // A type saying "tar" over gzip bytes happens with Docker archives: trust the bytes.
        Some(Compression::None) | None => sniffed,
        Some(c) => c,
    };
    Ok(match c {
        Compression::None => Box::new(buf),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buf)?),
    })
}

/// Unpack the layer blob at `blob` into the (existing, empty) directory `dest`.
/// `layer` is the layer's digest, used in errors. When `expected_diff_id` is given, the
/// uncompressed stream must hash to it.
pub fn unpack(
    blob: &Path,
    media_type: &str,
    layer: &str,
    dest: &Path,
    expected_diff_id: Option<&str>,
    limits: Limits,
) -> Result<UnpackStats, UnpackError> {
    let io_err = |op: &'static str, path: &Path| {
        let layer = layer.to_string();
        let path = path.to_path_buf();
        move |source| UnpackError::Io {
            layer,
            op,
            path,
            source,
        }
    };
    let file = File::open(blob).map_err(io_err("open blob", blob))?;
    let count = Arc::new(AtomicU64::new(0));
    let mut meter = Meter {
        inner: decoder(file, media_type).map_err(io_err("open decompressor for", blob))?,
        hasher: Sha256::new(),
        count: count.clone(),
        limit: limits.max_uncompressed,
    };
    let root: OwnedFd = nix::fcntl::open(
        dest,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open snapshot dir", dest)(e.into()))?;
    let mut u = Unpacker {
        layer: layer.to_string(),
        root,
        cache: None,
        dirs: Vec::new(),
        buf: vec![0u8; 256 << 10],
        entries: 0,
    };
    let too_large = |count: &AtomicU64| count.load(Ordering::Relaxed) > limits.max_uncompressed;
    let archive_err = |source: io::Error, count: &AtomicU64| {
        if too_large(count) {
            UnpackError::TooLarge {
                layer: layer.to_string(),
                limit: limits.max_uncompressed,
            }
        } else {
            UnpackError::Archive {
                layer: layer.to_string(),
                source,
            }
        }
    };
    {
        let mut archive = tar::Archive::new(PadToBlock {
            inner: &mut meter,
            pos: 0,
            pad: None,
        });
        let entries = archive.entries().map_err(|e| archive_err(e, &count))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| archive_err(e, &count))?;
            match u.entry(&mut entry) {
                Ok(()) => {}
                Err(e) if too_large(&count) => {
                    drop(e);
                    return Err(UnpackError::TooLarge {
                        layer: layer.to_string(),
                        limit: limits.max_uncompressed,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }
    // Read what follows the end-of-archive marker so the digest covers the whole stream.
    io::copy(&mut meter, &mut io::sink()).map_err(|e| archive_err(e, &count))?;
    u.finish_dirs()?;
    let diff_id = format!("sha256:{}", hex::encode(meter.hasher.finalize()));
    if let Some(expected) = expected_diff_id {
        if expected != diff_id {
            return Err(UnpackError::DiffIdMismatch {
                layer: layer.to_string(),
                expected: expected.to_string(),
                actual: diff_id,
            });
        }
    }
    Ok(UnpackStats {
        entries: u.entries,
        uncompressed: count.load(Ordering::Relaxed),
        diff_id,
    })
}

/// An entry name cleaned to components relative to the snapshot root.
fn clean(name: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in name.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err("its `..` leaves the snapshot root".into());
                }
            }
            c => {
                if c.contains(&0) {
                    return Err("the name contains a NUL byte".into());
                }
                out.push(c)
            }
        }
    }
    Ok(out)
}

fn join(comps: &[&[u8]]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&comps.join(&b'/')))
}

/// Where an entry goes: the parent directory (relative to the root) and the final name.
struct Target {
    parent: PathBuf,
    name: CString,
}

struct Unpacker {
    layer: String,
    root: OwnedFd,
    /// The most recently opened parent directory. Dropped whenever anything is removed.
    cache: Option<(PathBuf, OwnedFd)>,
    /// Directories whose mtime is set at the end (creating children changes it).
    dirs: Vec<(PathBuf, TimeSpec)>,
    buf: Vec<u8>,
    entries: u64,
}

fn errno_io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl Unpacker {
    fn refused(&self, entry: &str, reason: impl Into<String>) -> UnpackError {
        UnpackError::Refused {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            reason: reason.into(),
        }
    }

    fn failed(&self, entry: &str, op: &'static str, e: impl Into<io::Error>) -> UnpackError {
        UnpackError::Entry {
            layer: self.layer.clone(),
            entry: entry.to_string(),
            op,
            source: e.into(),
        }
    }

    /// Open directory `rel` beneath the root; the kernel refuses any resolution that leaves
    /// it. With `create`, missing directories are made (0755, owned by root).
    fn open_dir(&self, entry: &str, rel: &Path, create: bool) -> Result<OwnedFd, UnpackError> {
        if rel.as_os_str().is_empty() {
            return self
                .root
                .try_clone()
                .map_err(|e| self.failed(entry, "dup root", e));
        }
        let how = OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        let mut tries = 0;
        loop {
            match nix::fcntl::openat2(self.root.as_fd(), rel, how) {
                Ok(fd) => return Ok(fd),
                Err(Errno::EXDEV) => {
                    return Err(self.refused(
                        entry,
                        format!("{} resolves outside the snapshot", rel.display()),
                    ))
                }
                Err(Errno::ELOOP) => {
                    return Err(self.refused(
                        entry,
                        format!("{} resolves through too many symlinks", rel.display()),
                    ))
                }
                Err(Errno::ENOTDIR) => {
                    return Err(self.failed(
                        entry,
                        "open parent directory",
                        io::Error::other(format!("{} is not a directory", rel.display())),
                    ))
                }
                Err(Errno::EAGAIN) if tries < 8 => tries += 1,
                Err(Errno::ENOENT) if create && tries < 8 => {
                    tries += 1;
                    let parent = rel.parent().unwrap_or(Path::new(""));
                    let name = rel
                        .file_name()
                        .expect("a cleaned path has a last component");
                    let pfd = self.open_dir(entry, parent, true)?;
                    match nix::sys::stat::mkdirat(
                        pfd.as_fd(),
                        name,
                        Mode::from_bits_truncate(0o755),
                    ) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.failed(entry, "mkdir parent", e)),
                    }
                }
                Err(e) => return Err(self.failed(entry, "open parent directory", e)),
            }
        }
    }

    /// The parent directory fd of `t`, from the one-entry cache when it matches.
    fn parent(&mut self, entry: &str, t: &Target) -> Result<BorrowedFd<'_>, UnpackError> {
        let hit = matches!(&self.cache, Some((p, _)) if *p == t.parent);
        if !hit {
            let fd = self.open_dir(entry, &t.parent, true)?;
            self.cache = Some((t.parent.clone(), fd));
        }
        Ok(self.cache.as_ref().expect("cache filled").1.as_fd())
    }

    fn target(&self, entry: &str, comps: &[&[u8]]) -> Result<Target, UnpackError> {
        let (last, parent) = comps.split_last().expect("non-empty");
        Ok(Target {
            parent: join(parent),
            name: CString::new(*last).map_err(|_| self.refused(entry, "NUL in name"))?,
        })
    }

    /// Remove whatever is at `name` in `dir` (recursively for a directory), never following
    /// a symlink.
    fn remove_at(
        &mut self,
        entry: &str,
        dir: BorrowedFd<'_>,
        name: &CString,
    ) -> Result<(), UnpackError> {
        match nix::unistd::unlinkat(
            dir,
            name.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR) | Err(Errno::EPERM) => {
                remove_tree_at(dir, name).map_err(|e| self.failed(entry, "remove existing", e))
            }
            Err(e) => Err(self.failed(entry, "remove existing", e)),
        }
    }

    fn entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        use tar::EntryType as T;
        let raw = e.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = e.header().entry_type();
        if matches!(
            kind,
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink
        ) {
            return Ok(());
        }
        self.entries += 1;
        let comps = clean(&raw).map_err(|r| self.refused(&shown, r))?;
        let header = e.header().clone();
        let mode = header
            .mode()
            .map_err(|err| self.failed(&shown, "read mode", err))?
            & 0o7777;
        let mut uid = header
            .uid()
            .map_err(|err| self.failed(&shown, "read uid", err))?;
        let mut gid = header
            .gid()
            .map_err(|err| self.failed(&shown, "read gid", err))?;
        let (mut mtime, mut xattrs) = (
            TimeSpec::new(header.mtime().unwrap_or(0) as i64, 0),
            Vec::<(String, Vec<u8>)>::new(),
        );
        if let Some(pax) = e
            .pax_extensions()
            .map_err(|err| self.failed(&shown, "read pax header", err))?
        {
            for ext in pax {
                let ext = ext.map_err(|err| self.failed(&shown, "read pax header", err))?;
                let key = ext.key().unwrap_or("");
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
                } else if key == "mtime" {
                    if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                        mtime = t;
                    }
                } else if key == "uid" || key == "gid" {
                    // PAX carries ids too large for the header (GNU tar, Go's archive/tar).
                    let v = ext.value().ok().and_then(|v| v.parse::<u64>().ok());
                    let v = v.ok_or_else(|| {
                        self.refused(
                            &shown,
                            format!(
                                "its PAX {key} {:?} is not a number",
                                String::from_utf8_lossy(ext.value_bytes())
                            ),
                        )
                    })?;
                    if key == "uid" {
                        uid = v;
                    } else {
                        gid = v;
                    }
                }
            }
        }
        let uid = owner_id(uid).map_err(|r| self.refused(&shown, format!("uid {r}")))?;
        let gid = owner_id(gid).map_err(|r| self.refused(&shown, format!("gid {r}")))?;
        for (k, _) in &xattrs {
            if k.starts_with("trusted.overlay.") {
                return Err(self.refused(
                    &shown,
                    format!("it carries the overlayfs xattr {k}, which only berth may set"),
                ));
            }
        }
        let meta = Meta {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
        };

        if comps.is_empty() {
            // The snapshot root itself.
            if kind != T::Directory {
                return Err(self.refused(&shown, "a non-directory names the snapshot root"));
            }
            let root = self
                .root
                .try_clone()
                .map_err(|err| self.failed(&shown, "dup root", err))?;
            self.apply_fd(&shown, root.as_fd(), &meta)?;
            self.dirs.push((PathBuf::new(), mtime));
            return Ok(());
        }

        let last = *comps.last().expect("non-empty");
        if comps.iter().any(|c| *c == b".wh..wh.plnk") {
            // aufs hard-link directory: meaningless to overlayfs.
            return Ok(());
        }
        if last == OPAQUE_MARKER {
            let dir = self.open_dir(&shown, &join(&comps[..comps.len() - 1]), true)?;
            return fsetxattr(dir.as_fd(), OPAQUE_XATTR, b"y")
                .map_err(|err| self.failed(&shown, "set opaque xattr", err));
        }
        if let Some(hidden) = last.strip_prefix(WHITEOUT_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.refused(&shown, "the whiteout names no file inside its directory"));
            }
            let mut wc = comps.clone();
            *wc.last_mut().expect("non-empty") = hidden;
            let t = self.target(&shown, &wc)?;
            let pfd = self
                .parent(&shown, &t)?
                .try_clone_to_owned()
                .map_err(|err| self.failed(&shown, "dup", err))?;
            self.remove_at(&shown, pfd.as_fd(), &t.name)?;
            self.cache = None;
            return nix::sys::stat::mknodat(
                pfd.as_fd(),
                t.name.as_c_str(),
                SFlag::S_IFCHR,
                Mode::empty(),
                nix::sys::stat::makedev(0, 0),
            )
            .map_err(|err| self.failed(&shown, "create whiteout", err));
        }

        let t = self.target(&shown, &comps)?;
        match kind {
            T::Directory => self.dir(&shown, &t, &join(&comps), &meta),
            T::Regular | T::Continuous => self.file(&shown, &t, e, &meta),
            T::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| self.refused(&shown, "symlink without a target"))?
                    .into_owned();
                self.symlink(&shown, &t, &target, &meta)
            }
            T::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| self.refused(&shown, "hard link without a target"))?
                    .into_owned();
                self.hardlink(&shown, &t, &target)
            }
            T::Char | T::Block | T::Fifo => {
                let (sflag, dev) = match kind {
                    T::Char | T::Block => {
                        let major = header.device_major().ok().flatten().unwrap_or(0);
                        let minor = header.device_minor().ok().flatten().unwrap_or(0);
                        let f = if kind == T::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (f, nix::sys::stat::makedev(major as u64, minor as u64))
                    }
                    _ => (SFlag::S_IFIFO, 0),
                };
                self.node(&shown, &t, sflag, dev, &meta)
            }
            other => Err(UnpackError::Unsupported {
                layer: self.layer.clone(),
                entry: shown,
                kind: format!("{other:?}"),
            }),
        }
    }

    fn dir(&mut self, entry: &str, t: &Target, rel: &Path, meta: &Meta) -> Result<(), UnpackError> {
        let pfd = self
            .parent(entry, t)?
            .try_clone_to_owned()
            .map_err(|e| self.failed(entry, "dup", e))?;
        let open = |pfd: BorrowedFd<'_>| {
            nix::fcntl::openat(
                pfd,
                t.name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
        };
        match nix::sys::stat::mkdirat(
            pfd.as_fd(),
            t.name.as_c_str(),
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                // A directory stays (its content from earlier entries too); anything else is
                // replaced.
                if open(pfd.as_fd()).is_err() {
                    self.remove_at(entry, pfd.as_fd(), &t.name)?;
                    self.cache = None;
                    nix::sys::stat::mkdirat(
                        pfd.as_fd(),
                        t.name.as_c_str(),
                        Mode::from_bits_truncate(0o700),
                    )
                    .map_err(|e| self.failed(entry, "mkdir", e))?;
                }
            }
            Err(e) => return Err(self.failed(entry, "mkdir", e)),
        }
        let fd = open(pfd.as_fd()).map_err(|e| self.failed(entry, "open directory", e))?;
        self.apply_fd(entry, fd.as_fd(), meta)?;
        self.dirs.push((rel.to_path_buf(), meta.mtime));
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &str,
        t: &Target,
        e: &mut tar::Entry<'_, R>,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let pfd = self
            .parent(entry, t)?
            .try_clone_to_owned()
            .map_err(|err| self.failed(entry, "dup", err))?;
        let fd = match nix::fcntl::openat(
            pfd.as_fd(),
            t.name.as_c_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => {
                self.remove_at(entry, pfd.as_fd(), &t.name)?;
                self.cache = None;
                nix::fcntl::openat(
                    pfd.as_fd(),
                    t.name.as_c_str(),
                    flags,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|err| self.failed(entry, "create file", err))?
            }
            Err(err) => return Err(self.failed(entry, "create file", err)),
        };
        let mut f = File::from(fd);
        let want = e.size();
        let mut written = 0u64;
        loop {
            let n = match e.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(UnpackError::Archive {
                        layer: self.layer.clone(),
                        source: err,
                    })
                }
            };
            f.write_all(&self.buf[..n])
                .map_err(|err| self.failed(entry, "write file", err))?;
            written += n as u64;
        }
        if written != want {
            return Err(UnpackError::Archive {
                layer: self.layer.clone(),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{entry}: the layer ends after {written} of its {want} bytes"),
                ),
            });
        }
        self.apply_fd(entry, f.as_fd(), meta)?;
        nix::sys::stat::futimens(f.as_fd(), &meta.mtime, &meta.mtime)
            .map_err(|err| self.failed(entry, "set times", err))
    }

    fn symlink(
        &mut self,
        entry: &str,
        t: &Target,
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let pfd = self
            .parent(entry, t)?
            .try_clone_to_owned()
            .map_err(|e| self.failed(entry, "dup", e))?;
        let target =
            CString::new(target).map_err(|_| self.refused(entry, "NUL in symlink target"))?;
        match nix::unistd::symlinkat(target.as_c_str(), pfd.as_fd(), t.name.as_c_str()) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                self.remove_at(entry, pfd.as_fd(), &t.name)?;
                self.cache = None;
                nix::unistd::symlinkat(target.as_c_str(), pfd.as_fd(), t.name.as_c_str())
                    .map_err(|e| self.failed(entry, "create symlink", e))?;
            }
            Err(e) => return Err(self.failed(entry, "create symlink", e)),
        }
        self.apply_at(entry, pfd.as_fd(), t, meta, true)
    }

    fn hardlink(&mut self, entry: &str, t: &Target, target: &[u8]) -> Result<(), UnpackError> {
        let tcomps =
            clean(target).map_err(|r| self.refused(entry, format!("hard link target: {r}")))?;
        if tcomps.is_empty() {
            return Err(self.refused(entry, "hard link to the snapshot root"));
        }
        let tt = self.target(entry, &tcomps)?;
        let src_dir = self
            .open_dir(entry, &tt.parent, false)
            .map_err(|e| match e {
                UnpackError::Entry { source, .. }
                    if source.raw_os_error() == Some(libc::ENOENT) =>
                {
                    self.refused(entry, "hard link target is not in this layer")
                }
                other => other,
            })?;
        let pfd = self
            .parent(entry, t)?
            .try_clone_to_owned()
            .map_err(|e| self.failed(entry, "dup", e))?;
        let link = |pfd: BorrowedFd<'_>| {
            nix::unistd::linkat(
                src_dir.as_fd(),
                tt.name.as_c_str(),
                pfd,
                t.name.as_c_str(),
                AtFlags::empty(),
            )
        };
        match link(pfd.as_fd()) {
            Ok(()) => Ok(()),
            Err(Errno::ENOENT) => Err(self.refused(entry, "hard link target is not in this layer")),
            Err(Errno::EEXIST) => {
                if same_inode(src_dir.as_fd(), &tt.name, pfd.as_fd(), &t.name) {
                    return Ok(());
                }
                self.remove_at(entry, pfd.as_fd(), &t.name)?;
                self.cache = None;
                link(pfd.as_fd()).map_err(|e| self.failed(entry, "create hard link", e))
            }
            Err(e) => Err(self.failed(entry, "create hard link", e)),
        }
    }

    fn node(
        &mut self,
        entry: &str,
        t: &Target,
        kind: SFlag,
        dev: u64,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let pfd = self
            .parent(entry, t)?
            .try_clone_to_owned()
            .map_err(|e| self.failed(entry, "dup", e))?;
        let mk = |pfd: BorrowedFd<'_>| {
            nix::sys::stat::mknodat(pfd, t.name.as_c_str(), kind, Mode::empty(), dev)
        };
        match mk(pfd.as_fd()) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                self.remove_at(entry, pfd.as_fd(), &t.name)?;
                self.cache = None;
                mk(pfd.as_fd()).map_err(|e| self.failed(entry, "create node", e))?;
            }
            Err(e) => return Err(self.failed(entry, "create node", e)),
        }
        self.apply_at(entry, pfd.as_fd(), t, meta, false)
    }

    /// Owner, mode and xattrs of an open file or directory (mode after owner: chown clears
    /// setuid/setgid).
    fn apply_fd(&self, entry: &str, fd: BorrowedFd<'_>, meta: &Meta) -> Result<(), UnpackError> {
        nix::unistd::fchown(
            fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| self.failed(entry, "chown", e))?;
        nix::sys::stat::fchmod(fd, Mode::from_bits_truncate(meta.mode))
            .map_err(|e| self.failed(entry, "chmod", e))?;
        for (k, v) in &meta.xattrs {
            fsetxattr(fd, k, v).map_err(|e| self.failed(entry, "set xattr", e))?;
        }
        Ok(())
    }

    /// Owner, mode, xattrs and times of a symlink or node, by name in its parent, never
    /// following it.
    fn apply_at(
        &self,
        entry: &str,
        pfd: BorrowedFd<'_>,
        t: &Target,
        meta: &Meta,
        is_link: bool,
    ) -> Result<(), UnpackError> {
        nix::unistd::fchownat(
            pfd,
            t.name.as_c_str(),
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.failed(entry, "chown", e))?;
        if !is_link {
            // Just created by mknodat in this directory: not a symlink.
            nix::sys::stat::fchmodat(
                pfd,
                t.name.as_c_str(),
                Mode::from_bits_truncate(meta.mode),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(|e| self.failed(entry, "chmod", e))?;
        }
        if !meta.xattrs.is_empty() {
            let path = PathBuf::from(format!("/proc/self/fd/{}", pfd.as_raw_fd()))
                .join(OsStr::from_bytes(t.name.as_bytes()));
            for (k, v) in &meta.xattrs {
                lsetxattr(&path, k, v).map_err(|e| self.failed(entry, "set xattr", e))?;
            }
        }
        nix::sys::stat::utimensat(
            pfd,
            t.name.as_c_str(),
            &meta.mtime,
            &meta.mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| self.failed(entry, "set times", e))
    }

    /// Directory mtimes, deepest first, once every child exists.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        self.cache = None;
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, mtime) in dirs.iter().rev() {
            let shown = rel.display().to_string();
            let fd = self.open_dir(&shown, rel, false)?;
            nix::sys::stat::futimens(fd.as_fd(), mtime, mtime)
                .map_err(|e| self.failed(&shown, "set times", e))?;
        }
        Ok(())
    }
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// An owner id of an entry: at most 4294967294. 4294967295 is `(uid_t)-1`, which `chown`
/// takes as "leave unchanged": the file would stay owned by root, the unpacker (a setuid
/// file meant for nobody would become setuid root); above it, an id does not fit at all.
fn owner_id(id: u64) -> Result<u32, String> {
    match u32::try_from(id) {
        Ok(n) if n != u32::MAX => Ok(n),
        _ => Err(format!(
            "{id} is out of range (0 to {}; {} means \"unchanged\" to chown)",
            u32::MAX - 1,
            u32::MAX
        )),
    }
}

fn parse_pax_time(s: &str) -> Option<TimeSpec> {
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let secs: i64 = secs.parse().ok()?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        let n: i64 = digits.parse().ok()?;
        nanos = n * 10i64.pow(9 - digits.len() as u32);
    }
    if secs < 0 && nanos > 0 {
        return Some(TimeSpec::new(secs - 1, 1_000_000_000 - nanos));
    }
    Some(TimeSpec::new(secs, nanos))
}

fn same_inode(d1: BorrowedFd<'_>, n1: &CString, d2: BorrowedFd<'_>, n2: &CString) -> bool {
    let f = nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW;
    match (
        nix::sys::stat::fstatat(d1, n1.as_c_str(), f),
        nix::sys::stat::fstatat(d2, n2.as_c_str(), f),
    ) {
        (Ok(a), Ok(b)) => a.st_dev == b.st_dev && a.st_ino == b.st_ino,
        _ => false,
    }
}

/// Remove the tree `name` in `dir` without following any symlink.
pub(crate) fn remove_tree_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<()> {
    let fd = match nix::fcntl::openat(
        dir,
        name.as_c_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => {
            return nix::unistd::unlinkat(
                dir,
                name.as_c_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            )
            .map_err(errno_io)
        }
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(errno_io(e)),
    };
    let mut d = nix::dir::Dir::from_fd(fd).map_err(errno_io)?;
    let names: Vec<CString> = d
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_owned())
        .filter(|n| n.as_bytes() != b"." && n.as_bytes() != b"..")
        .collect();
    for n in names {
        match nix::unistd::unlinkat(
            d.as_fd(),
            n.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(Errno::EISDIR) | Err(Errno::EPERM) => remove_tree_at(d.as_fd(), &n)?,
            Err(e) => return Err(errno_io(e)),
        }
    }
    drop(d);
    nix::unistd::unlinkat(dir, name.as_c_str(), nix::unistd::UnlinkatFlags::RemoveDir)
        .map_err(errno_io)
}

fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    let n = CString::new(name)
        .map_err(|_| io::Error::other(format!("xattr name {name:?} has a NUL")))?;
    // SAFETY: valid fd, NUL-terminated name, value pointer/length from a slice.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{name}: {e}")));
    }
    Ok(())
}

fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("NUL in path"))?;
    let n = CString::new(name)
        .map_err(|_| io::Error::other(format!("xattr name {name:?} has a NUL")))?;
    // SAFETY: NUL-terminated path and name, value pointer/length from a slice.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{name}: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_keeps_names_inside() {
        assert_eq!(clean(b"/etc/x").unwrap(), vec![&b"etc"[..], b"x"]);
        assert_eq!(clean(b"./a/./b/../c").unwrap(), vec![&b"a"[..], b"c"]);
        assert!(clean(b"../escape").is_err());
        assert!(clean(b"a/../../b").is_err());
        assert!(clean(b"./").unwrap().is_empty());
    }

    #[test]
    fn compression_from_magic_and_type() {
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"etc/"), Compression::None);
        assert_eq!(
            Compression::from_media_type("application/vnd.oci.image.layer.v1.tar+zstd"),
            Some(Compression::Zstd)
        );
        assert_eq!(
            Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Some(Compression::Gzip)
        );
    }

    #[test]
    fn a_stream_ending_inside_a_block_is_completed_with_zeros() {
        let mut data = vec![1u8; 1539];
        let mut r = PadToBlock {
            inner: &data[..],
            pos: 0,
            pad: None,
        };
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1536 + 512);
        data.resize(2048, 0);
        assert_eq!(out, data);
        let mut whole = PadToBlock {
            inner: &[2u8; 1024][..],
            pos: 0,
            pad: None,
        };
        out.clear();
        whole.read_to_end(&mut out).unwrap();
        assert_eq!(out.len(), 1024, "a whole block gets no padding");
    }

    #[test]
    fn owner_ids_that_mean_unchanged_or_do_not_fit_are_refused() {
        assert_eq!(owner_id(0), Ok(0));
        assert_eq!(owner_id(4_294_967_294), Ok(4_294_967_294));
        for bad in [4_294_967_295, 4_294_967_296, u64::MAX] {
            let e = owner_id(bad).unwrap_err();
            assert!(e.starts_with(&format!("{bad} is out of range")), "{e}");
        }
    }

    #[test]
    fn pax_times() {
        let t = parse_pax_time("1700000000.5").unwrap();
        assert_eq!((t.tv_sec(), t.tv_nsec()), (1700000000, 500_000_000));
        assert!(parse_pax_time("x").is_none());
    }
}

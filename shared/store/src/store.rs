//! Blobs: ingest, verify, commit, read, delete.

use crate::{Digest, StoreError};
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The content store rooted at `<data_root>/content`.
#[derive(Debug, Clone)]
pub struct ContentStore {
    root: PathBuf,
}

impl ContentStore {
    /// Open (and create when missing) the store at `root`, with its `ingest/` and
    /// `blobs/sha256/` directories.
    pub fn open(root: impl Into<PathBuf>) -> Result<ContentStore, StoreError> {
        let root = root.into();
        let s = ContentStore { root };
        for d in [s.ingest_dir(), s.blobs_dir()] {
            fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    /// `<root>/blobs/sha256/<hex>` (whether or not the blob is present).
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs_dir().join(d.hex())
    }

    /// `<root>/ingest/<hex>`: where a download of `d` in progress lives.
    pub fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.ingest_dir().join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// The size of a committed blob.
    pub fn size(&self, d: &Digest) -> Result<u64, StoreError> {
        let p = self.blob_path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { digest: d.clone() })
            }
            Err(e) => Err(StoreError::io("stat", p)(e)),
        }
    }

    /// The whole content of a (small) blob: manifests, configs.
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        let mut f = self.open_blob(d)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v)
            .map_err(StoreError::io("read", self.blob_path(d)))?;
        Ok(v)
    }

    /// Open a committed blob for reading.
    pub fn open_blob(&self, d: &Digest) -> Result<File, StoreError> {
        let p = self.blob_path(d);
        match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::NotFound { digest: d.clone() })
            }
            Err(e) => Err(StoreError::io("open", p)(e)),
        }
    }

    /// A writer for the blob `expected` (of `size` bytes when known). It resumes a download
    /// left in `ingest/` by an earlier writer ([`IngestWriter::offset`] says where). Only one
    /// writer per digest exists at a time on the node: this call blocks while another holds it
    /// (call it from a blocking thread in async code), and returns
    /// [`StoreError::AlreadyExists`] when the blob is (or became, while waiting) committed.
    pub fn writer(&self, expected: &Digest, size: Option<u64>) -> Result<IngestWriter, StoreError> {
        let path = self.ingest_path(expected);
        loop {
            if self.has(expected) {
                return Err(StoreError::AlreadyExists {
                    digest: expected.clone(),
                });
            }
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(StoreError::io("open ingest file", &path))?;
            let file = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| {
                StoreError::io("lock ingest file", &path)(io::Error::from(errno))
            })?;
            // The previous holder may have committed (renamed) or discarded (unlinked) the file
            // we opened before we got the lock.
            let ours = file
                .metadata()
                .map_err(StoreError::io("stat ingest file", &path))?;
            let current = matches!(fs::metadata(&path),
                Ok(m) if m.ino() == ours.ino() && m.dev() == ours.dev());
            if self.has(expected) {
                // We may have created this ingest file just after the blob was committed:
                // it is of no use, and we hold its lock.
                if current {
                    let _ = fs::remove_file(&path);
                }
                return Err(StoreError::AlreadyExists {
                    digest: expected.clone(),
                });
            }
            if !current {
                continue;
            }
            return IngestWriter::resume(file, path, self.blob_path(expected), expected, size);
        }
    }

    /// Store `bytes` (verified against their own digest) and return the digest. Storing a blob
    /// that is present already is not an error.
    pub fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        if self.has(&d) {
            return Ok(d);
        }
        let mut w = match self.writer(&d, Some(bytes.len() as u64)) {
            Ok(w) => w,
            Err(StoreError::AlreadyExists { .. }) => return Ok(d),
            Err(e) => return Err(e),
        };
        w.restart()?;
        w.write_all(bytes)
            .map_err(StoreError::io("write ingest file", self.ingest_path(&d)))?;
        w.commit()?;
        Ok(d)
    }

    /// Verify bytes against `expected` and store them.
    pub fn put_verified(&self, expected: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        let actual = Digest::of(bytes);
        if &actual != expected {
            return Err(StoreError::DigestMismatch {
                expected: expected.clone(),
                actual,
                size: bytes.len() as u64,
            });
        }
        self.put_bytes(bytes).map(|_| ())
    }

    /// Remove a blob; `false` when it was not there.
    pub fn delete(&self, d: &Digest) -> Result<bool, StoreError> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("remove", p)(e)),
        }
    }

    /// Every committed blob, sorted.
    pub fn list(&self) -> Result<Vec<Digest>, StoreError> {
        let dir = self.blobs_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(StoreError::io("list", &dir))? {
            let e = e.map_err(StoreError::io("list", &dir))?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push(d);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Bytes used by committed blobs and downloads in progress.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let mut total = 0;
        for dir in [self.blobs_dir(), self.ingest_dir()] {
            for e in fs::read_dir(&dir).map_err(StoreError::io("list", &dir))? {
                let e = e.map_err(StoreError::io("list", &dir))?;
                if let Ok(m) = e.metadata() {
                    if m.is_file() {
                        total += m.len();
                    }
                }
            }
        }
        Ok(total)
    }

    /// Downloads in progress (or left by a crash): digest and bytes so far.
    pub fn ingests(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let dir = self.ingest_dir();
        let mut out = Vec::new();
        for e in fs::read_dir(&dir).map_err(StoreError::io("list", &dir))? {
            let e = e.map_err(StoreError::io("list", &dir))?;
            if let Some(d) = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
            {
                out.push((d, e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Writes one blob into `ingest/`, hashing as it goes; [`IngestWriter::commit`] verifies it and
/// makes it visible. Dropping the writer without committing keeps the partial download for a
/// later writer to resume; [`IngestWriter::abort`] discards it, and so does a write that finds
/// the file system full (the space goes back at once).
#[derive(Debug)]
pub struct IngestWriter {
    file: Flock<File>,
    path: PathBuf,
    target: PathBuf,
    expected: Digest,
    size: Option<u64>,
    hasher: Sha256,
    offset: u64,
}

impl IngestWriter {
    fn resume(
        file: Flock<File>,
        path: PathBuf,
        target: PathBuf,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<IngestWriter, StoreError> {
        let mut w = IngestWriter {
            file,
            path,
            target,
            expected: expected.clone(),
            size,
            hasher: Sha256::new(),
            offset: 0,
        };
        let len = w
            .file
            .metadata()
            .map_err(StoreError::io("stat ingest file", &w.path))?
            .len();
        if size.is_some_and(|s| len > s) {
            w.restart()?;
            return Ok(w);
        }
        // Re-hash what an earlier writer left, so the download continues where it stopped.
        let mut buf = vec![0u8; 256 * 1024];
        let mut f: &File = &w.file;
        f.seek(SeekFrom::Start(0))
            .map_err(StoreError::io("seek ingest file", &w.path))?;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(StoreError::io("read ingest file", &w.path))?;
            if n == 0 {
                break;
            }
            w.hasher.update(&buf[..n]);
            w.offset += n as u64;
        }
        Ok(w)
    }

    /// Bytes written so far (where a resumed download continues).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn digest(&self) -> &Digest {
        &self.expected
    }

    pub fn expected_size(&self) -> Option<u64> {
        self.size
    }

    /// Throw away what was written so far and start at offset 0 (e.g. when the server does not
    /// honour a range request).
    pub fn restart(&mut self) -> Result<(), StoreError> {
        self.file
            .set_len(0)
            .map_err(StoreError::io("truncate ingest file", &self.path))?;
        let mut f: &File = &self.file;
        f.seek(SeekFrom::Start(0))
            .map_err(StoreError::io("seek ingest file", &self.path))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Check size and digest, sync, and rename into `blobs/`. On a mismatch the ingest file is
    /// removed and the error names expected and actual values.
    pub fn commit(self) -> Result<(), StoreError> {
        if let Some(size) = self.size {
            if self.offset != size {
                let _ = fs::remove_file(&self.path);
                return Err(StoreError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: size,
                    actual: self.offset,
                });
            }
        }
        let actual = Digest::from_sha256(self.hasher.clone().finalize().as_slice());
        if actual != self.expected {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
                size: self.offset,
            });
        }
        self.file
            .sync_all()
            .map_err(StoreError::io("sync ingest file", &self.path))?;
        fs::rename(&self.path, &self.target)
            .map_err(StoreError::io("commit blob", &self.target))?;
        let dir = self.target.parent().expect("blob path has a parent");
        sync_dir(dir)?;
        Ok(())
    }

    /// Discard the partial download.
    pub fn abort(self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("remove ingest file", &self.path)(e)),
        }
    }
}

impl Write for IngestWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(size) = self.size {
            if self.offset + buf.len() as u64 > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is larger than its declared size of {size} bytes",
                        self.expected
                    ),
                ));
            }
        }
        let mut f: &File = &self.file;
        let n = match f.write(buf) {
            Ok(n) => n,
            Err(e) if is_out_of_space(&e) => {
                // The download cannot finish here, and what it wrote holds the space another
                // write needs: give the space back now (the file is unlinked, and emptied
                // because this writer still holds it open) rather than keep it for a resume.
                let _ = fs::remove_file(&self.path);
                let _ = self.file.set_len(0);
                self.hasher = Sha256::new();
                self.offset = 0;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        self.hasher.update(&buf[..n]);
        self.offset += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Whether a write failed for want of space: the file system is full (`ENOSPC`) or the
/// owner's quota is (`EDQUOT`).
fn is_out_of_space(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull || e.raw_os_error() == Some(nix::libc::EDQUOT)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    berth_files::sync_dir(dir).map_err(StoreError::io("sync directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path().join("content")).unwrap();
        (dir, s)
    }

    #[test]
    fn open_creates_layout() {
        let (dir, _s) = store();
        assert!(dir.path().join("content/ingest").is_dir());
        assert!(dir.path().join("content/blobs/sha256").is_dir());
    }

    #[test]
    fn put_read_list_delete() {
        let (_dir, s) = store();
        let d = s.put_bytes(b"hello").unwrap();
        assert_eq!(
            d.to_string(),
            "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        assert!(s.has(&d));
        assert_eq!(s.read(&d).unwrap(), b"hello");
        assert_eq!(s.size(&d).unwrap(), 5);
        assert_eq!(s.put_bytes(b"hello").unwrap(), d, "storing twice is fine");
        let e = s.put_bytes(b"world").unwrap();
        let mut want = vec![d.clone(), e.clone()];
        want.sort();
        assert_eq!(s.list().unwrap(), want);
        assert_eq!(s.size_on_disk().unwrap(), 10);
        assert!(s.delete(&d).unwrap());
        assert!(!s.delete(&d).unwrap());
        assert!(!s.has(&d));
        assert!(matches!(s.read(&d), Err(StoreError::NotFound { .. })));
        assert_eq!(s.list().unwrap(), vec![e]);
    }

    #[test]
    fn mismatched_digest_is_refused_and_leaves_nothing() {
        let (_dir, s) = store();
        let claimed = Digest::of(b"the real content");
        let mut w = s.writer(&claimed, None).unwrap();
        w.write_all(b"something else").unwrap();
        let err = w.commit().unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&claimed.to_string()), "{msg}");
        assert!(
            msg.contains(&Digest::of(b"something else").to_string()),
            "{msg}"
        );
        assert!(!s.has(&claimed));
        assert!(s.list().unwrap().is_empty());
        assert!(
            s.ingests().unwrap().is_empty(),
            "the ingest file is removed"
        );
    }

    #[test]
    fn wrong_size_is_refused() {
        let (_dir, s) = store();
        let d = Digest::of(b"abc");
        let mut w = s.writer(&d, Some(4)).unwrap();
        w.write_all(b"abc").unwrap();
        let e = w.commit().unwrap_err();
        assert!(
            matches!(
                e,
                StoreError::SizeMismatch {
                    expected: 4,
                    actual: 3,
                    ..
                }
            ),
            "{e}"
        );
        let mut w = s.writer(&d, Some(2)).unwrap();
        let e = w.write_all(b"abc").unwrap_err();
        assert!(
            e.to_string().contains("larger than its declared size"),
            "{e}"
        );
        drop(w);
        assert!(!s.has(&d));
    }

    #[test]
    fn interrupted_write_is_invisible_and_resumes() {
        let (_dir, s) = store();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let d = Digest::of(&data);
        let mut w = s.writer(&d, Some(data.len() as u64)).unwrap();
        w.write_all(&data[..100_000]).unwrap();
        drop(w); // as if the process died here
        assert!(!s.has(&d), "no half blob is visible");
        assert!(s.list().unwrap().is_empty());
        assert_eq!(s.ingests().unwrap(), vec![(d.clone(), 100_000)]);

        let mut w = s.writer(&d, Some(data.len() as u64)).unwrap();
        assert_eq!(w.offset(), 100_000);
        w.write_all(&data[100_000..]).unwrap();
        w.commit().unwrap();
        assert_eq!(s.read(&d).unwrap(), data);
        assert!(s.ingests().unwrap().is_empty());
    }

    #[test]
    fn oversized_leftover_is_discarded() {
        let (_dir, s) = store();
        let d = Digest::of(b"ab");
        let mut w = s.writer(&d, None).unwrap();
        w.write_all(b"abcdef").unwrap();
        drop(w);
        let mut w = s.writer(&d, Some(2)).unwrap();
        assert_eq!(w.offset(), 0);
        w.write_all(b"ab").unwrap();
        w.commit().unwrap();
        assert_eq!(s.read(&d).unwrap(), b"ab");
    }

    #[test]
    fn corrupt_leftover_fails_at_commit_and_is_cleared() {
        let (_dir, s) = store();
        let data = b"0123456789".to_vec();
        let d = Digest::of(&data);
        fs::write(s.ingest_path(&d), b"XXXXX").unwrap();
        let mut w = s.writer(&d, Some(10)).unwrap();
        assert_eq!(w.offset(), 5);
        w.write_all(&data[5..]).unwrap();
        assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
        let mut w = s.writer(&d, Some(10)).unwrap();
        assert_eq!(w.offset(), 0);
        w.write_all(&data).unwrap();
        w.commit().unwrap();
        assert!(s.has(&d));
    }

    #[test]
    fn one_writer_per_digest_the_second_finds_it_committed() {
        let (_dir, s) = store();
        let data = vec![7u8; 1 << 20];
        let d = Digest::of(&data);
        let w = s.writer(&d, Some(data.len() as u64)).unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let t = {
            let s = s.clone();
            let d = d.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                // Blocks until the first writer has committed.
                s.writer(&d, None)
            })
        };
        barrier.wait();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(!t.is_finished(), "the second writer waits for the first");
        let mut w = w;
        w.write_all(&data).unwrap();
        w.commit().unwrap();
        let second = t.join().unwrap();
        assert!(
            matches!(second, Err(StoreError::AlreadyExists { .. })),
            "{second:?}"
        );
    }

    #[test]
    fn waiting_writer_starts_over_after_a_discarded_download() {
        let (_dir, s) = store();
        let data = b"payload".to_vec();
        let d = Digest::of(&data);
        let mut w = s.writer(&d, None).unwrap();
        w.write_all(b"garbage").unwrap();
        let t = {
            let s = s.clone();
            let d = d.clone();
            std::thread::spawn(move || s.writer(&d, None).map(|w| w.offset()))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(w.commit().is_err());
        assert_eq!(
            t.join().unwrap().unwrap(),
            0,
            "a fresh ingest file, not the unlinked one"
        );
    }

    /// The child half of `killed_writer_leaves_no_blob`: write slowly until killed.
    #[test]
    fn killed_writer_child() {
        let Ok(root) = std::env::var("BERTH_STORE_KILL_CHILD") else {
            return;
        };
        let s = ContentStore::open(root).unwrap();
        let d = Digest::of(b"never written in full");
        let mut w = s.writer(&d, None).unwrap();
        loop {
            w.write_all(&[1u8; 4096]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn killed_writer_leaves_no_blob() {
        let (_dir, s) = store();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::killed_writer_child",
                "--nocapture",
            ])
            .env("BERTH_STORE_KILL_CHILD", s.root())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let d = Digest::of(b"never written in full");
        let t = std::time::Instant::now();
        while fs::metadata(s.ingest_path(&d))
            .map(|m| m.len())
            .unwrap_or(0)
            < 40_000
        {
            assert!(t.elapsed().as_secs() < 20, "the child never wrote");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        child.wait().unwrap();
        assert!(s.list().unwrap().is_empty(), "no blob is visible");
        // The lock died with the process: a new writer gets it at once and resumes.
        let w = s.writer(&d, None).unwrap();
        assert!(w.offset() >= 40_000);
        assert!(matches!(w.commit(), Err(StoreError::DigestMismatch { .. })));
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn abort_discards() {
        let (_dir, s) = store();
        let d = Digest::of(b"x");
        let mut w = s.writer(&d, None).unwrap();
        w.write_all(b"x").unwrap();
        w.abort().unwrap();
        assert!(s.ingests().unwrap().is_empty());
        assert!(!s.has(&d));
    }

    #[test]
    fn put_verified_checks() {
        let (_dir, s) = store();
        let e = s.put_verified(&Digest::of(b"a"), b"b").unwrap_err();
        assert!(matches!(e, StoreError::DigestMismatch { .. }));
        s.put_verified(&Digest::of(b"a"), b"a").unwrap();
        assert!(s.has(&Digest::of(b"a")));
    }
}

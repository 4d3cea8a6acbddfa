//! An in-memory content store for unit tests of code that stores and reads blobs: the same
//! contract as the disk store (it passes [`crate::conformance`]), no files. One writer per
//! digest at a time, as on disk; a second writer of a digest being written is refused here
//! (the disk store waits for the first) since a test has no other thread to wait for.

use crate::content::{Content, Ingest};
use crate::{Digest, StoreError};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Blobs {
    committed: BTreeMap<Digest, Arc<Vec<u8>>>,
    /// Partial writes left for a resume.
    partial: BTreeMap<Digest, Vec<u8>>,
    /// Digests with a writer now.
    writing: BTreeSet<Digest>,
}

/// Blobs in memory; clones share them.
#[derive(Clone, Default)]
pub struct MemoryStore {
    blobs: Arc<Mutex<Blobs>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Blobs> {
        self.blobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A write in progress into a [`MemoryStore`].
pub struct MemoryIngest {
    store: MemoryStore,
    expected: Digest,
    size: Option<u64>,
    /// `None` once committed or aborted (the drop then has nothing to keep).
    buf: Option<Vec<u8>>,
}

impl Content for MemoryStore {
    type Writer = MemoryIngest;

    fn has(&self, d: &Digest) -> bool {
        self.lock().committed.contains_key(d)
    }

    fn size(&self, d: &Digest) -> Result<u64, StoreError> {
        self.read(d).map(|b| b.len() as u64)
    }

    fn read(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        self.lock()
            .committed
            .get(d)
            .map(|b| b.to_vec())
            .ok_or_else(|| StoreError::NotFound { digest: d.clone() })
    }

    fn writer(&self, expected: &Digest, size: Option<u64>) -> Result<MemoryIngest, StoreError> {
        let mut b = self.lock();
        if b.committed.contains_key(expected) {
            return Err(StoreError::AlreadyExists {
                digest: expected.clone(),
            });
        }
        if !b.writing.insert(expected.clone()) {
            return Err(StoreError::Io {
                op: "open ingest",
                path: expected.hex().into(),
                source: io::Error::new(io::ErrorKind::WouldBlock, "another writer holds it"),
            });
        }
        let mut buf = b.partial.remove(expected).unwrap_or_default();
        if size.is_some_and(|s| buf.len() as u64 > s) {
            buf.clear();
        }
        Ok(MemoryIngest {
            store: self.clone(),
            expected: expected.clone(),
            size,
            buf: Some(buf),
        })
    }

    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        self.lock()
            .committed
            .entry(d.clone())
            .or_insert_with(|| Arc::new(bytes.to_vec()));
        Ok(d)
    }

    fn put_verified(&self, expected: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
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

    fn delete(&self, d: &Digest) -> Result<bool, StoreError> {
        Ok(self.lock().committed.remove(d).is_some())
    }

    fn list(&self) -> Result<Vec<Digest>, StoreError> {
        Ok(self.lock().committed.keys().cloned().collect())
    }

    fn ingests(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        let b = self.lock();
        Ok(b.partial
            .iter()
            .map(|(d, v)| (d.clone(), v.len() as u64))
            .collect())
    }
}

impl io::Write for MemoryIngest {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let buf = self.buf.as_mut().expect("a live writer has a buffer");
        if let Some(size) = self.size {
            if buf.len() as u64 + data.len() as u64 > size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "blob {} is larger than its declared size of {size} bytes",
                        self.expected
                    ),
                ));
            }
        }
        buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Ingest for MemoryIngest {
    fn offset(&self) -> u64 {
        self.buf.as_ref().map_or(0, |b| b.len() as u64)
    }

    fn restart(&mut self) -> Result<(), StoreError> {
        if let Some(b) = self.buf.as_mut() {
            b.clear();
        }
        Ok(())
    }

    fn commit(mut self) -> Result<(), StoreError> {
        let buf = self.buf.take().unwrap_or_default();
        if let Some(size) = self.size {
            if buf.len() as u64 != size {
                return Err(StoreError::SizeMismatch {
                    digest: self.expected.clone(),
                    expected: size,
                    actual: buf.len() as u64,
                });
            }
        }
        let actual = Digest::from_sha256(Sha256::digest(&buf).as_slice());
        if actual != self.expected {
            return Err(StoreError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
                size: buf.len() as u64,
            });
        }
        self.store
            .lock()
            .committed
            .insert(self.expected.clone(), Arc::new(buf));
        Ok(())
    }

    fn abort(mut self) -> Result<(), StoreError> {
        self.buf = None;
        Ok(())
    }
}

impl Drop for MemoryIngest {
    fn drop(&mut self) {
        let mut b = self.store.lock();
        b.writing.remove(&self.expected);
        if let Some(buf) = self.buf.take() {
            b.partial.insert(self.expected.clone(), buf);
        }
    }
}

//! The content store's contract as two small traits, so code that stores and reads blobs can
//! be given the disk store ([`ContentStore`]) or the in-memory one ([`MemoryStore`]) and both
//! are held to the same behaviour by one suite ([`crate::conformance`]), as containerd holds
//! its content stores to one test suite.
//!
//! [`MemoryStore`]: crate::MemoryStore

use crate::{ContentStore, Digest, IngestWriter, StoreError};

/// A blob being written: bytes go in with [`std::io::Write`], hashed as they go;
/// [`Ingest::commit`] checks the size and digest and makes the blob visible, or removes what
/// was written. Dropped without a commit, what was written stays for the next writer of the
/// same digest to resume.
pub trait Ingest: std::io::Write {
    /// Bytes written so far (where a resumed write continues).
    fn offset(&self) -> u64;
    /// Throw away what was written and start again at offset 0.
    fn restart(&mut self) -> Result<(), StoreError>;
    /// Verify and make visible; on a size or digest mismatch nothing is kept.
    fn commit(self) -> Result<(), StoreError>;
    /// Discard what was written.
    fn abort(self) -> Result<(), StoreError>;
}

/// Blobs addressed by their digest. A blob is visible only once verified.
pub trait Content: Send + Sync {
    type Writer: Ingest;
    fn has(&self, d: &Digest) -> bool;
    /// The size of a committed blob; [`StoreError::NotFound`] when absent.
    fn size(&self, d: &Digest) -> Result<u64, StoreError>;
    /// A committed blob's bytes; [`StoreError::NotFound`] when absent.
    fn read(&self, d: &Digest) -> Result<Vec<u8>, StoreError>;
    /// A writer for `expected` (of `size` bytes when known), resuming an earlier partial
    /// write; [`StoreError::AlreadyExists`] when the blob is committed.
    fn writer(&self, expected: &Digest, size: Option<u64>) -> Result<Self::Writer, StoreError>;
    /// Store `bytes` under their own digest (present already: not an error).
    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError>;
    /// Store `bytes` if they match `expected`; [`StoreError::DigestMismatch`] otherwise.
    fn put_verified(&self, expected: &Digest, bytes: &[u8]) -> Result<(), StoreError>;
    /// Remove a blob; `false` when it was not there.
    fn delete(&self, d: &Digest) -> Result<bool, StoreError>;
    /// Every committed blob, sorted.
    fn list(&self) -> Result<Vec<Digest>, StoreError>;
    /// Writes in progress (or left behind): digest and bytes so far, sorted.
    fn ingests(&self) -> Result<Vec<(Digest, u64)>, StoreError>;
}

impl Ingest for IngestWriter {
    fn offset(&self) -> u64 {
        IngestWriter::offset(self)
    }
    fn restart(&mut self) -> Result<(), StoreError> {
        IngestWriter::restart(self)
    }
    fn commit(self) -> Result<(), StoreError> {
        IngestWriter::commit(self)
    }
    fn abort(self) -> Result<(), StoreError> {
        IngestWriter::abort(self)
    }
}

impl Content for ContentStore {
    type Writer = IngestWriter;
    fn has(&self, d: &Digest) -> bool {
        ContentStore::has(self, d)
    }
    fn size(&self, d: &Digest) -> Result<u64, StoreError> {
        ContentStore::size(self, d)
    }
    fn read(&self, d: &Digest) -> Result<Vec<u8>, StoreError> {
        ContentStore::read(self, d)
    }
    fn writer(&self, expected: &Digest, size: Option<u64>) -> Result<IngestWriter, StoreError> {
        ContentStore::writer(self, expected, size)
    }
    fn put_bytes(&self, bytes: &[u8]) -> Result<Digest, StoreError> {
        ContentStore::put_bytes(self, bytes)
    }
    fn put_verified(&self, expected: &Digest, bytes: &[u8]) -> Result<(), StoreError> {
        ContentStore::put_verified(self, expected, bytes)
    }
    fn delete(&self, d: &Digest) -> Result<bool, StoreError> {
        ContentStore::delete(self, d)
    }
    fn list(&self) -> Result<Vec<Digest>, StoreError> {
        ContentStore::list(self)
    }
    fn ingests(&self) -> Result<Vec<(Digest, u64)>, StoreError> {
        ContentStore::ingests(self)
    }
}

//! The content store of a node: blobs addressed by digest under `<data_root>/content`.
//!
//! ```text
//! <root>/ingest/<hex>            a download in progress (resumable), locked by its writer
//! <root>/blobs/sha256/<hex>      verified blobs, made visible by atomic rename after fsync
//! <root>/refs.json               reference -> manifest digest (atomic rename, under refs.lock)
//! ```
//!
//! A blob becomes visible in `blobs/` only once its size and digest were checked and its bytes
//! synced to disk, so a crash or kill at any moment leaves no half blob there. Writers of one
//! digest are serialised by an exclusive `flock` on the ingest file: a second writer waits, then
//! finds the blob committed ([`StoreError::AlreadyExists`]) and downloads nothing.
//!
//! The contract is two traits ([`Content`], [`Ingest`]) with two implementations, the disk
//! store ([`ContentStore`]) and an in-memory one for unit tests ([`MemoryStore`]); both pass
//! one suite ([`conformance::run`]), which any new implementation must pass too.
//!
//! Leases ([`lease`]) keep the layer-store's `gc` from deleting what a writer (a pull, a load)
//! has stored but not referenced yet.

pub mod conformance;
pub mod content;
mod digest;
mod error;
pub mod lease;
mod memory;
mod refs;
mod store;

pub use content::{Content, Ingest};
pub use digest::Digest;
pub use error::StoreError;
pub use memory::{MemoryIngest, MemoryStore};
pub use store::{ContentStore, IngestWriter};

//! berth's wire format: subject names, the versioned envelope, typed errors, events, and the
//! request/reply types of every service. Plain data only: serde, no async runtime, no I/O, so
//! every service, the CLI and third-party tools can depend on it cheaply.

pub mod envelope;
pub mod error;
pub mod event;
pub mod info;
pub mod isolator;
pub mod layer_store;
pub mod network;
pub mod puller;
pub mod reconciler;
pub mod reference;
pub mod subjects;
pub mod supervisor;
pub mod validate;
pub mod verb;

pub use envelope::{Reply, Request, SCHEMA_VERSION};
pub use error::{BerthError, ErrorCode, ErrorReason};
pub use event::Event;
pub use subjects::Service;
pub use verb::{Empty, Verb};

//! What berth shares with Docker's own files and formats, so that a Docker user's setup and
//! habits work unchanged:
//!
//! - the Docker config file ([`config`]: `auths`, `credHelpers`, `credsStore`, written by
//!   `berth login`/`logout`, read by the puller) and the credential helper protocol
//!   ([`cred_helper`]);
//! - the value grammars Docker and Compose share, each in one place for `berth run`'s flags
//!   and the Compose file's keys alike: sizes and durations ([`units`]), published and exposed
//!   ports ([`ports`]), volumes and tmpfs mounts ([`volumes`]);
//! - platforms (`os/arch[/variant]`) and the choice of an image index's entry for one
//!   ([`platform`]), the same for the puller and the layer-store.
//!
//! No I/O beyond those files and helper programs; no berth dependency but the file helpers
//! and the wire types the parsers return (`berth-proto`), so the CLI can use it without the
//! puller's HTTP stack.

pub mod config;
pub mod cred_helper;
pub mod platform;
pub mod ports;
pub mod units;
pub mod volumes;

pub use config::{ConfigError, Credentials, Stored};

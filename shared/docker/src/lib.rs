//! What berth reads and writes in Docker's own files, so that a Docker user's setup works
//! unchanged: the Docker config file ([`config`]: `auths`, `credHelpers`, `credsStore`,
//! written by `berth login`/`logout`, read by the puller) and the credential helper protocol
//! ([`cred_helper`]). No I/O beyond those files and helper programs; no berth dependency but
//! the file helpers, so the CLI can use it without the puller's HTTP stack.

pub mod config;
pub mod cred_helper;

pub use config::{ConfigError, Credentials, Stored};

//! berth's per-container shim (`berth-shim`): synchronous, single-threaded and small. See
//! docs/isolator.md.
//!
//! - `berth-shim run --id ID --bundle DIR --run-dir DIR --volumes DIR`: create the container
//!   (cgroup, namespaces, root file system, process setup), report on fd 3, then stay its
//!   parent: log its output, record its exit, remove its cgroup.
//! - `berth-shim exec --id ID --bundle DIR --run-dir DIR --request JSON`: run another process
//!   in the running container; setup errors on fd 3.

pub mod caps;
pub mod devices;
pub mod error;
pub mod exec;
pub mod files;
pub mod fsutil;
pub mod log;
pub mod process;
pub mod reaper;
pub mod rootfs;
pub mod run;
pub mod seccomp;
pub mod standby;
pub mod user;
pub mod wire;

pub use error::ShimError;

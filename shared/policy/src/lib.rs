//! berth's container policy: what a container is given and refused, decided once for the
//! isolator (which checks a spec before a create and writes the OCI `config.json`) and the
//! shim (which builds the container from it). Decisions only: the shim makes the device nodes,
//! mounts the paths, sets the rlimits and capabilities and installs the seccomp filter.
//!
//! - [`devices`]: the default device allow-list, a `--device` resolved on the host, the
//!   cgroup rules of a container.
//! - [`caps`]: a container's capability set (Docker's default, `cap_add`/`cap_drop`).
//! - [`seccomp`]: which profile a container gets, resolved and compiled to BPF; checked
//!   before a create; its OCI form.
//! - [`process`]: the default `PATH`, the hostname, the rlimit names.
//! - [`rootfs`]: the masked and read-only paths, a named volume's host directory.
//!
//! Nothing here changes the host or the calling process: the only system calls are reads of
//! what a decision depends on (`stat` of a `--device` node, `uname` for the kernel's version).

pub mod caps;
pub mod devices;
pub mod process;
pub mod rootfs;
pub mod seccomp;

//! The container's file system as Docker lays it out: the paths masked and made read-only,
//! and where a named volume lives on the host. The shim mounts them (`berth-shim`'s
//! `rootfs.rs`); the isolator writes them into the OCI `config.json`.

use std::path::{Path, PathBuf};

/// Docker's masked paths: hidden behind `/dev/null` (files) or an empty read-only tmpfs.
pub const MASKED: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const READ_ONLY: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The host directory of volume `name`.
pub fn volume_dir(volumes: &Path, name: &str) -> PathBuf {
    volumes.join(name)
}

//! The process a container runs: its default `PATH`, its hostname, and the rlimits it may be
//! given (Docker's ulimit names). The shim applies them (`berth-shim`'s `process.rs`).

use berth_proto::isolator::ContainerSpec;

/// The `PATH` of a container whose environment sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's container hostname: the spec's, else the id's first 12 characters.
pub fn hostname(spec: &ContainerSpec) -> String {
    spec.hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| spec.id.chars().take(12).collect())
}

/// Map a Docker ulimit name to its resource.
pub fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "as" => libc::RLIMIT_AS,
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

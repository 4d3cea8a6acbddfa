//! The checks a container's settings must pass to be created and started, in one place: the
//! supervisor runs [`create_request`] on every `create`, the isolator the same field checks on
//! the spec it is given, and the spec loader (`berth-spec`) each field check on the value it
//! reads, so that `berth plan` and `berth apply` refuse, with the file position, everything a
//! create would refuse later. Each check returns one plain line naming the value.

use crate::isolator::{MountKind, MountSpec, NetworkMode, Resources};
use crate::reference::Reference;
use crate::supervisor::{CreateRequest, HealthCheck, RestartPolicy};

/// The smallest memory limit a container can start with (Docker's): below it the kernel's
/// OOM killer ends the init before it runs.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// The longest container name.
pub const NAME_MAX: usize = 128;

/// Linux capabilities, without the `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// The signals a container can be stopped or killed with, by name (without `SIG`).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// A check that failed: the field of the request and what is wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}

fn at(field: impl Into<String>) -> impl FnOnce(String) -> Invalid {
    let field = field.into();
    move |reason| Invalid { field, reason }
}

/// Docker's rule for container names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, here at most 128
/// characters.
pub fn container_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("a container name cannot be empty".into());
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!(
            "container name {name:?} must start with a letter or a digit"
        ));
    }
    if let Some(bad) = chars.find(|c| !(c.is_ascii_alphanumeric() || "_.-".contains(*c))) {
        return Err(format!(
            "container name {name:?} contains {bad:?}: only letters, digits, '_', '.' and '-' are allowed"
        ));
    }
    if name.len() > NAME_MAX {
        return Err(format!(
            "container name {name:?} is longer than {NAME_MAX} characters"
        ));
    }
    Ok(())
}

/// An image reference that a pull can use (the puller parses it with the same function).
pub fn image(reference: &str) -> Result<(), String> {
    Reference::parse(reference)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A signal by name (`SIGTERM`, `term`, `SIGRTMIN` is not one) or number; returns its number.
pub fn signal(s: &str) -> Result<i32, String> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i32>() {
        return if SIGNALS.iter().any(|(_, x)| *x == n) {
            Ok(n)
        } else {
            Err(format!("{n} is not a signal number"))
        };
    }
    let up = t.to_ascii_uppercase();
    let bare = up.strip_prefix("SIG").unwrap_or(&up);
    SIGNALS
        .iter()
        .find(|(name, _)| *name == bare)
        .map(|(_, n)| *n)
        .ok_or_else(|| format!("unknown signal {s:?} (e.g. SIGTERM, SIGINT, 15)"))
}

/// A host name the container's UTS namespace can take: at most 64 letters, digits, `-`, `.`.
pub fn hostname(h: &str) -> Result<(), String> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "hostname {h:?} is not a valid host name (at most 64 letters, digits, '-' and '.')"
        ))
    }
}

/// The highest uid or gid a container may use: 4294967295 is `(uid_t)-1`, which `setresuid`,
/// `setresgid` and `chown` take as "leave unchanged", so a container asking for it would keep
/// running as root (containerd's CVE-2024-40635).
pub const MAX_ID: u32 = u32::MAX - 1;

/// Parse a uid or gid: digits only, at most [`MAX_ID`]. `what` names the field in the error.
pub fn parse_id(what: &str, text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        let why = if text.starts_with('-') && text.len() > 1 {
            "is negative"
        } else {
            "is not a number"
        };
        return Err(format!("{what} {text:?} {why}"));
    }
    match text.parse::<u64>() {
        Ok(n) if n <= u64::from(MAX_ID) => Ok(n as u32),
        _ => Err(format!(
            "{what} {text} is out of range (0 to {MAX_ID}; {} means \"unchanged\" to the kernel)",
            u32::MAX
        )),
    }
}

/// Whether a part of a user spec is meant as a number (a name starts otherwise): digits,
/// with a sign or not.
pub fn numeric_id(part: &str) -> bool {
    let digits = part.strip_prefix(['-', '+']).unwrap_or(part);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `uid`, `uid:gid`, `name` or `name:group`: its form, and every part meant as a number (see
/// [`numeric_id`]) a plain id within 0..=[`MAX_ID`]. Names are looked up by the shim in the
/// container's own files.
pub fn user(u: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("user {u:?} {why}"));
    if u.contains(['\0', '\n']) {
        return bad("contains a NUL or a newline");
    }
    let parts: Vec<&str> = u.split(':').collect();
    if parts.len() > 2 {
        return bad("is not uid, uid:gid, name or name:group");
    }
    if parts.len() == 2 && parts.iter().any(|p| p.is_empty()) {
        return bad("has an empty user or group");
    }
    for (what, p) in ["uid", "gid"].iter().zip(&parts) {
        let p = p.trim();
        if numeric_id(p) {
            parse_id(what, p)?;
        }
    }
    Ok(())
}

/// An absolute path inside the container, without `..` or NUL.
pub fn container_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if p.contains('\0') {
        return Err(format!("{p:?} contains a NUL byte"));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(format!("{p:?} contains '..'"));
    }
    Ok(())
}

/// Where something is mounted: a [`container_path`] other than `/`.
pub fn mount_target(p: &str) -> Result<(), String> {
    container_path(p)?;
    if p.trim_end_matches('/').is_empty() {
        return Err("cannot mount over /".into());
    }
    Ok(())
}

/// A volume name: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 128 characters.
pub fn volume_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid volume name (1-128 of [A-Za-z0-9_.-], starting with a letter or digit)"
        ))
    }
}

/// A bridge network name: 1-64 letters, digits, `_`, `.`, `-`, starting with a letter or digit
/// (the kernel's interface names are derived from it).
pub fn network_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        ))
    }
}

/// A memory limit of at least [`MIN_MEMORY`].
pub fn memory_bytes(m: u64) -> Result<(), String> {
    if m < MIN_MEMORY {
        return Err(format!(
            "{m} bytes is below the minimum of 6 MiB ({MIN_MEMORY} bytes) a container can start with"
        ));
    }
    Ok(())
}

/// A capability name as Docker takes it (any case, with or without `CAP_`), or `ALL`.
pub fn capability(name: &str) -> Result<(), String> {
    let up = name.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    if bare == "ALL" || CAPABILITIES.contains(&bare) {
        Ok(())
    } else {
        Err(format!("{name:?} is not a Linux capability"))
    }
}

/// One `KEY=value` environment entry.
pub fn env_entry(e: &str) -> Result<(), String> {
    match e.split_once('=') {
        Some((k, _)) if !k.is_empty() && !e.contains('\0') => Ok(()),
        _ => Err(format!("{e:?} is not KEY=value")),
    }
}

/// An argument of the command (or entrypoint): no NUL byte.
pub fn arg(a: &str) -> Result<(), String> {
    if a.contains('\0') {
        return Err(format!("{a:?} contains a NUL byte"));
    }
    Ok(())
}

/// A health check's test: `["CMD", arg...]`, `["CMD-SHELL", command]` or `["NONE"]`.
pub fn healthcheck_test(test: &[String]) -> Result<(), String> {
    match test.first().map(String::as_str) {
        Some("NONE") => Ok(()),
        Some("CMD") if test.len() >= 2 => Ok(()),
        Some("CMD-SHELL") if test.len() == 2 => Ok(()),
        _ => Err(format!(
            "health check test {test:?} must be [\"CMD\", arg...], [\"CMD-SHELL\", \"command\"] or [\"NONE\"]"
        )),
    }
}

/// A health check: its test (an empty one is the image's) and intervals above 0.
pub fn healthcheck(h: &HealthCheck) -> Result<(), String> {
    if !h.test.is_empty() {
        healthcheck_test(&h.test)?;
    }
    if h.interval_ms == Some(0) || h.timeout_ms == Some(0) {
        return Err("health check interval and timeout must be above 0".into());
    }
    Ok(())
}

/// One mount: its target, and a volume's name or a tmpfs's size.
pub fn mount(m: &MountSpec) -> Result<(), Invalid> {
    mount_target(&m.target).map_err(at("target"))?;
    match m.kind {
        MountKind::Bind => {
            if !m.source.starts_with('/') {
                return Err(Invalid {
                    field: "source".into(),
                    reason: format!("{:?} is not an absolute host path", m.source),
                });
            }
        }
        MountKind::Volume => volume_name(&m.source).map_err(at("source"))?,
        MountKind::Tmpfs => {
            if m.size_bytes == Some(0) {
                return Err(Invalid {
                    field: "size_bytes".into(),
                    reason: "a tmpfs size must be above 0".into(),
                });
            }
        }
    }
    Ok(())
}

/// Resource limits: memory at least [`MIN_MEMORY`], CPUs above 0, CPU shares in 2..262144, a
/// pids limit other than 0.
pub fn resources(r: &Resources) -> Result<(), Invalid> {
    if let Some(m) = r.memory_bytes {
        memory_bytes(m).map_err(at("memory_bytes"))?;
    }
    if let Some(c) = r.cpus {
        if !(c > 0.0 && c.is_finite()) {
            return Err(at("cpus")(format!("{c} must be above 0")));
        }
    }
    if let Some(sh) = r.cpu_shares {
        if !(2..=262_144).contains(&sh) {
            return Err(at("cpu_shares")(format!("{sh} is outside 2..262144")));
        }
    }
    if r.pids_limit == Some(0) {
        return Err(at("pids_limit")(
            "0 would forbid the init itself; use -1 for unlimited".into(),
        ));
    }
    Ok(())
}

/// Everything in a create request that can be checked without the node: what the supervisor
/// refuses before it pulls or prepares anything, and the reconciler before it stores a spec.
/// The image's own settings (its command, user, stop signal) and the node's state (a bind
/// source, another container) are checked where they are known.
pub fn create_request(req: &CreateRequest) -> Result<(), Invalid> {
    if req.auto_remove && req.restart != RestartPolicy::No {
        return Err(at("restart")(format!(
            "{} cannot be combined with auto_remove (--rm)",
            req.restart
        )));
    }
    if let Some(n) = &req.name {
        container_name(n).map_err(at("name"))?;
    }
    if req.rootfs.is_none() {
        if req.image.is_empty() {
            return Err(at("image")("no image given".into()));
        }
        image(&req.image).map_err(at("image"))?;
    }
    let o = &req.options;
    for (field, list) in [("cmd", &o.cmd), ("entrypoint", &o.entrypoint)] {
        for a in list.iter().flatten() {
            arg(a).map_err(at(field))?;
        }
    }
    for e in &o.env {
        env_entry(e).map_err(at("env"))?;
    }
    if let Some(w) = o.working_dir.as_deref().filter(|w| !w.is_empty()) {
        container_path(w).map_err(at("working_dir"))?;
    }
    if let Some(u) = &o.user {
        user(u).map_err(at("user"))?;
    }
    if let Some(h) = &o.hostname {
        hostname(h).map_err(at("hostname"))?;
    }
    if let Some(s) = &o.stop_signal {
        signal(s).map_err(at("stop_signal"))?;
    }
    for (i, m) in o.mounts.iter().enumerate() {
        mount(m).map_err(|e| at(format!("mounts[{i}].{}", e.field))(e.reason))?;
    }
    resources(&o.resources).map_err(|e| at(format!("resources.{}", e.field))(e.reason))?;
    for (field, list) in [("cap_add", &o.cap_add), ("cap_drop", &o.cap_drop)] {
        for c in list {
            capability(c).map_err(at(field))?;
        }
    }
    match &o.network {
        NetworkMode::Bridge(b) => network_name(b).map_err(at("network"))?,
        _ if !o.ports.is_empty() => {
            return Err(at("ports")(
                "published ports need a bridge network (network mode is not bridge)".into(),
            ))
        }
        _ => {}
    }
    if let Some(h) = &req.healthcheck {
        healthcheck(h).map_err(at("healthcheck"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_checked_as_the_runtime_checks_them() {
        assert!(container_name("web-1.a_b").is_ok());
        assert!(container_name(&"a".repeat(129)).is_err());
        assert!(container_name("a/b").unwrap_err().contains("'/'"));
        assert_eq!(signal("term"), Ok(libc::SIGTERM));
        assert_eq!(signal("SIGKILL"), Ok(9));
        assert_eq!(signal("15"), Ok(15));
        assert!(signal("SIGRTMIN+3").is_err());
        assert!(signal("34").is_err());
        assert!(hostname("db.local").is_ok());
        assert!(hostname("a_b").is_err());
        assert!(user("1000:1000").is_ok() && user("www-data").is_ok());
        assert!(user("1:2:3").is_err());
        assert!(user("99999999999")
            .unwrap_err()
            .starts_with("uid 99999999999 is out of range"));
        assert_eq!(user("0:-1").unwrap_err(), "gid \"-1\" is negative");
        assert_eq!(user("+5").unwrap_err(), "uid \"+5\" is not a number");
        assert_eq!(parse_id("uid", &MAX_ID.to_string()), Ok(MAX_ID));
        assert!(user(":5").is_err());
        assert!(mount_target("/").is_err() && mount_target("/a/../b").is_err());
        assert!(memory_bytes(MIN_MEMORY).is_ok());
        assert!(memory_bytes(1024).unwrap_err().contains("6 MiB"));
        assert!(capability("net_admin").is_ok() && capability("CAP_ALL").is_ok());
        assert!(capability("CAP_NOPE").is_err());
        assert!(env_entry("=x").is_err() && env_entry("A=").is_ok());
        assert!(healthcheck_test(&["CMD-SHELL".into(), "a".into(), "b".into()]).is_err());
        assert!(image("Foo/Bar").unwrap_err().contains("\"Foo/Bar\""));
        assert!(network_name(&"n".repeat(65)).is_err());
        assert!(volume_name("../x").is_err());
    }

    #[test]
    fn a_create_request_names_the_bad_field() {
        let ok = CreateRequest {
            image: "busybox".into(),
            ..Default::default()
        };
        assert!(create_request(&ok).is_ok());
        let mut r = ok.clone();
        r.options.resources.memory_bytes = Some(1024);
        assert_eq!(
            create_request(&r).unwrap_err().field,
            "resources.memory_bytes"
        );
        let mut r = ok.clone();
        r.image = "x@sha256:123".into();
        assert_eq!(create_request(&r).unwrap_err().field, "image");
        let mut r = ok.clone();
        r.options.mounts.push(MountSpec {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: "/".into(),
            read_only: false,
            size_bytes: None,
        });
        assert_eq!(create_request(&r).unwrap_err().field, "mounts[0].target");
        let mut r = ok;
        r.options.stop_signal = Some("SIGNOPE".into());
        assert_eq!(create_request(&r).unwrap_err().field, "stop_signal");
    }
}

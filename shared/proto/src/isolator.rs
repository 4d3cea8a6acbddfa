//! Request and reply types of the isolator, and the on-disk contract between the isolator, the
//! per-container shim and the supervisor.
//!
//! Run directory of a container (`<run_dir>/<id>/`), written by the isolator and the shim, read
//! by the supervisor (which re-adopts shims from it after a restart):
//! - `shim.pid`   the shim's pid (decimal)
//! - `init.pid`   the container init's pid as seen from the host
//! - `start`      a FIFO: the shim holds the container before `exec` until a byte is written
//! - `exit.json`  [`ExitStatus`], written by the shim (fsync + atomic rename) before it exits
//!
//! The container's directory (`<data_root>/containers/<id>/`) holds `config.json` (the OCI
//! runtime bundle config), `spec.json` ([`ContainerSpec`]), `upper/`, `work/` and the log file
//! `log.jsonl`: one [`LogLine`] a line.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CREATE: &str = "create";
pub const EXEC: &str = "exec";

pub const SHIM_PID_FILE: &str = "shim.pid";
pub const INIT_PID_FILE: &str = "init.pid";

/// Whether `pid` is the shim of the container whose run directory is `run_dir` (not a
/// recycled pid): a `berth-shim` whose working directory is that run directory (a shim moves
/// there once it has its container; its command line names no container, as it was started
/// before there was one).
pub fn is_shim_of(pid: u32, run_dir: &std::path::Path) -> bool {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let is_shim = exe
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("berth-shim"));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
    let here = std::fs::canonicalize(run_dir).unwrap_or_else(|_| run_dir.to_path_buf());
    is_shim && cwd == here
}
pub const START_FIFO: &str = "start";

/// Let a created container's init `execve`: one byte into the `start` FIFO of its run
/// directory. Opened without blocking: with no reader (the init is gone) there is nothing to
/// release.
pub fn release_start(run_dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let p = run_dir.join(START_FIFO);
    match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&p)
    {
        Ok(mut f) => f.write_all(b"1"),
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
/// Whether a created container's init still waits on its `start` FIFO, never released: the
/// init holds the FIFO open (read and write) until it `exec`s, so only then can a writer open
/// it without blocking; a byte in the FIFO not read yet is a release on its way. The probe
/// writes nothing, so it releases nothing.
pub fn waiting_for_start(run_dir: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(run_dir.join(START_FIFO))
    else {
        return false;
    };
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD on an open FIFO writes one c_int into `pending`.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::FIONREAD, &mut pending) };
    r == 0 && pending == 0
}
pub const EXIT_FILE: &str = "exit.json";
pub const LOG_FILE: &str = "log.jsonl";
pub const SPEC_FILE: &str = "spec.json";
/// [`RootfsMount`] of the container, beside `spec.json`.
pub const ROOTFS_FILE: &str = "rootfs.json";
/// The OCI runtime bundle config.
pub const CONFIG_FILE: &str = "config.json";
/// Mount point of the overlay (mounted only inside the container's mount namespace).
pub const ROOTFS_DIR: &str = "rootfs";
/// Per-container files bind-mounted onto `/etc/hostname`, `/etc/hosts`, `/etc/resolv.conf`.
pub const HOSTNAME_FILE: &str = "hostname";
pub const HOSTS_FILE: &str = "hosts";
pub const RESOLV_FILE: &str = "resolv.conf";
/// The shim's own diagnostics.
pub const SHIM_LOG_FILE: &str = "shim.log";
/// Exit code of a container whose command could not be executed (Docker's convention).
pub const EXIT_NOT_FOUND: i32 = 127;
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// A setup failure as the shim reports it to the isolator (a create's `ERR` report line, an
/// exec's status pipe) and its init to the shim: one line of JSON, so that the code and the
/// reason (a command not found, not executable) reach the client typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShimFailure {
    pub message: String,
    pub code: crate::ErrorCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<crate::ErrorReason>,
}

impl ShimFailure {
    /// One line of JSON.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("plain data serializes")
    }
    /// The JSON of [`ShimFailure::encode`]; any other text (a shim of another version) is
    /// taken as the message of an `unavailable` failure.
    pub fn decode(text: &str) -> ShimFailure {
        serde_json::from_str(text.trim()).unwrap_or_else(|_| ShimFailure {
            message: text.trim().to_string(),
            code: crate::ErrorCode::Unavailable,
            reason: None,
        })
    }
}

/// What a shim reports to the isolator when a create is done, one line on its report fd:
/// `OK <shim pid> <init pid>` or `ERR <the failure as JSON>`. The shim writes it with
/// [`ShimReport::encode`] and the isolator reads it with [`ShimReport::decode`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShimReport {
    Started { shim_pid: u32, init_pid: u32 },
    Failed(ShimFailure),
}

impl ShimReport {
    /// The report line, with its newline.
    pub fn encode(&self) -> String {
        match self {
            ShimReport::Started { shim_pid, init_pid } => format!("OK {shim_pid} {init_pid}\n"),
            ShimReport::Failed(f) => format!("ERR {}\n", f.encode()),
        }
    }

    /// A report line; `Err` says what is wrong with one that is none.
    pub fn decode(line: &str) -> Result<ShimReport, String> {
        let line = line.trim_end();
        if let Some(rest) = line.strip_prefix("ERR ") {
            return Ok(ShimReport::Failed(ShimFailure::decode(rest)));
        }
        if let Some(rest) = line.strip_prefix("OK ") {
            let mut it = rest.split(' ').map(str::parse::<u32>);
            if let (Some(Ok(shim_pid)), Some(Ok(init_pid)), None) =
                (it.next(), it.next(), it.next())
            {
                return Ok(ShimReport::Started { shim_pid, init_pid });
            }
        }
        Err(format!("unexpected report {line:?}"))
    }
}

/// The container itself, sent to the shim along with [`RunArgs`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inline {
    pub spec: ContainerSpec,
    pub rootfs: RootfsMount,
    /// `spec.devices` resolved on the host by the isolator (type, numbers, mode, owner), so
    /// that the node and the cgroup rule come from one look at the host's node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<Device>,
}

/// The container a waiting shim is given: one JSON line from the isolator on the shim's
/// report fd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunArgs {
    pub id: String,
    pub bundle: std::path::PathBuf,
    pub run_dir: std::path::PathBuf,
    pub volumes: std::path::PathBuf,
    /// The shim's own log (its stdout and stderr from then on).
    pub log: std::path::PathBuf,
    /// The priority (nice value) the shim and the container run at: the isolator's. A
    /// waiting shim and its pre-init were made at the lowest, so that topping the standby
    /// shims up takes no processor time from the containers being started.
    #[serde(default)]
    pub nice: i32,
    /// The spec and root filesystem, so that neither the shim nor its pre-init reads and
    /// parses them from the bundle (where the isolator writes them meanwhile, for `exec` and
    /// other tools). `None`: read from the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Inline>,
}

/// The pids limit of a container whose spec gives none.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

pub const VOLUMES: &str = "volumes";
pub const VOLUME_REMOVE: &str = "volume-remove";

/// The overlay that becomes a container's root: lower dirs (topmost first, as overlayfs wants
/// them) plus this container's own upper and work dirs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsMount {
    pub lowerdirs: Vec<String>,
    pub upperdir: String,
    pub workdir: String,
    /// The container's writes never need to reach the disk: it is removed when it exits
    /// (`--rm`). Mounted with overlayfs's `volatile` option, its upper dir is not synced,
    /// neither on `fsync` inside nor at unmount. Without it, the last unmount, when the
    /// init exits, syncs the whole host filesystem under the upper dir (1-2 ms on the path
    /// of every exit). As Podman does for `--rm`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volatile: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// `source` is a host path.
    Bind,
    /// `source` is a volume name; created under `<data_root>/volumes/<name>` on first use.
    Volume,
    /// `source` is unused; `size_bytes` limits it.
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    pub kind: MountKind,
    #[serde(default)]
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// CPUs as a fraction (`1.5` = 150 ms of CPU per 100 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<u64>,
    /// `None` means berth's default limit; a negative value means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    /// Resource limits of the process (`nofile`, `nproc`, `core`, ...), as Docker keeps its
    /// `Ulimits` among the resources. Never raised above the host's hard limit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Rlimit>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "target")]
pub enum NetworkMode {
    /// A private network namespace with loopback only (until bridge networks exist).
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// Join the network namespace of another container (by id).
    Container(String),
    /// A bridge network by name.
    Bridge(String),
}

/// Everything needed to create a container, after the image's config and the user's
/// options are merged (the supervisor does the merge).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// 64 hex characters.
    pub id: String,
    pub name: String,
    /// The image reference as the user wrote it.
    pub image: String,
    /// The image's manifest digest.
    #[serde(default)]
    pub image_digest: String,
    /// Final argv: entrypoint + command.
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// `uid`, `uid:gid`, `name` or `name:group`, resolved in the container's `/etc/passwd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub mounts: Vec<MountSpec>,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    /// Confine the container's calls with seccomp (on unless turned off: `seccomp=unconfined`).
    #[serde(default = "yes")]
    pub seccomp: bool,
    /// The user's seccomp profile (Docker's format), used instead of berth's default when
    /// `seccomp` is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<SeccompProfile>,
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
    /// Run a tiny reaper as PID 1.
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub network: NetworkMode,
    /// Further names the container answers to on its bridge network (a Compose service name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Published ports (bridge networks only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::network::PortMapping>,
    /// Map container root to this host uid/gid range start (user namespace), if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_remap: Option<u32>,
    /// Host devices the container is given, beyond the default set (`/dev/null`, `zero`,
    /// `full`, `random`, `urandom`, `tty`, `console`, `ptmx`, the terminals of its devpts):
    /// every other device is refused to it, even as a node in its image or made with `mknod`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
}

/// A host device given to a container (`--device`, Compose `devices:`): its node is made at
/// `container_path` in the container with the host device's type, numbers, mode and owner,
/// and the container may use it as `permissions` say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceMapping {
    /// A character or block device node on the host (absolute).
    pub host_path: String,
    /// Where the node goes in the container (absolute).
    pub container_path: String,
    /// Letters from `rwm` (read, write, mknod), each at most once.
    #[serde(default = "all_device_permissions")]
    pub permissions: String,
}

/// A host device resolved for a container (a [`DeviceMapping`] looked up on the host): what
/// its node and its cgroup rule need. The isolator resolves it and sends it to the shim in
/// [`Inline`], so that the node and the rule come from one look at the host's node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub container_path: String,
    pub block: bool,
    pub major: u32,
    pub minor: u32,
    /// Permission bits of the host's node (`0o660`), given to the container's.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// `rwm` letters.
    pub permissions: String,
}

fn all_device_permissions() -> String {
    "rwm".into()
}

/// Whether `p` is a device permission set: letters from `rwm`, each once, at least one.
pub fn valid_device_permissions(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 3
        && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
        && !p
            .char_indices()
            .any(|(i, c)| p[i + c.len_utf8()..].contains(c))
}

impl DeviceMapping {
    /// Docker's `--device` syntax, also Compose's short `devices:` form:
    /// `HOST[:CONTAINER][:PERMISSIONS]`. With two parts the second is the permissions when
    /// it is one (`/dev/sda:r`), else the container path. The container path defaults to the
    /// host's, the permissions to `rwm`.
    pub fn parse(s: &str) -> Result<DeviceMapping, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (host, container, perms) = match parts.as_slice() {
            [h] => (*h, *h, "rwm"),
            [h, p] if valid_device_permissions(p) => (*h, *h, *p),
            [h, c] => (*h, *c, "rwm"),
            [h, c, p] => (*h, *c, *p),
            _ => {
                return Err(format!(
                    "device {s:?}: expected HOST[:CONTAINER][:PERMISSIONS]"
                ))
            }
        };
        let m = DeviceMapping {
            host_path: host.to_string(),
            container_path: container.to_string(),
            permissions: perms.to_string(),
        };
        m.check().map_err(|e| format!("device {s:?}: {e}"))?;
        Ok(m)
    }

    /// The checks that need no host: absolute paths, permissions from `rwm`.
    pub fn check(&self) -> Result<(), String> {
        if !self.host_path.starts_with('/') {
            return Err(format!(
                "the host path {:?} is not absolute",
                self.host_path
            ));
        }
        if !self.container_path.starts_with('/') || self.container_path.trim_matches('/').is_empty()
        {
            return Err(format!(
                "the container path {:?} is not an absolute path to a file",
                self.container_path
            ));
        }
        if !valid_device_permissions(&self.permissions) {
            return Err(format!(
                "the permissions {:?} are not letters from rwm (read, write, mknod), each once",
                self.permissions
            ));
        }
        Ok(())
    }
}

/// A seccomp profile in Docker's JSON format, as read by the CLI or the Compose loader; the
/// isolator checks it at create and the shim compiles it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeccompProfile {
    /// Where it was read from (the path as given), for messages.
    pub source: String,
    /// The file's content.
    pub json: String,
}

/// One rlimit: `name` as Docker's `--ulimit` names it (`nofile`, `nproc`, `core`, `memlock`,
/// `stack`, `cpu`, `fsize`, `data`, `as`, `locks`, `sigpending`, `msgqueue`, `nice`,
/// `rtprio`, `rttime`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rlimit {
    pub name: String,
    pub soft: u64,
    pub hard: u64,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    pub spec: ContainerSpec,
    pub rootfs: RootfsMount,
    /// Release the container (write its `start` FIFO) as soon as it is set up, before the
    /// reply: for a caller that has nothing to record first (a container removed at its
    /// exit). The container may have run and ended by the time the reply arrives.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateReply {
    pub id: String,
    pub shim_pid: u32,
    pub init_pid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecRequest {
    pub id: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Stream the process's output (and take its input) over the bus instead of returning
    /// it in the reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<ExecStream>,
    /// Kill the process, and every process it started, when it runs longer (a health
    /// probe's `timeout`); the reply then says so in `stderr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// A streamed `exec` (`berth exec`, `-i`, `-t`). With `subject` S:
/// - `S.started` (empty) is published once the process runs and `S.in` is subscribed;
/// - `S.out` / `S.err` carry the output as it comes (with `tty`, everything is on `S.out`);
/// - `S.in` carries input when `stdin` is set; an empty message closes it;
/// - the reply comes after the last output message, with `streamed_bytes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecStream {
    pub subject: String,
    #[serde(default)]
    pub stdin: bool,
    /// Run the process on a terminal of its own (in the container's devpts).
    #[serde(default)]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
}

/// `<prefix>.<node>.exec.<id>`: the subjects of one streamed exec start with this.
pub fn exec_subject(node: &str, id: &str) -> String {
    format!("{}.{node}.exec.{id}", crate::subjects::PREFIX)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecReply {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// With a stream: how many bytes were published on `S.out` and `S.err` together.
    #[serde(default)]
    pub streamed_bytes: u64,
}

/// Written by the shim to `exit.json` when the container's init ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// Docker's convention: the exit code, or 128 + signal number.
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// RFC 3339.
    pub finished_at: String,
}

/// One line of a container's log file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// RFC 3339 with nanoseconds.
    pub t: String,
    /// `stdout` or `stderr`.
    pub s: String,
    pub log: String,
}

/// `volumes`: the node's named volumes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VolumesRequest {}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub name: String,
    pub path: String,
    /// Ids of containers whose spec uses the volume and that have not exited.
    #[serde(default)]
    pub used_by: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumesReply {
    pub volumes: Vec<VolumeInfo>,
}

/// `volume-remove`: delete a named volume and its data; refused while a live container uses
/// it unless `force`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRemoveRequest {
    pub name: String,
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VolumeRemoveReply {
    pub name: String,
}

/// The isolator's verbs (see [`crate::verb`]), its networks' included.
pub mod verbs {
    use super::*;
    use crate::network::*;
    crate::verbs! { crate::Service::Isolator;
        Create = CREATE, CreateRequest => CreateReply;
        Exec = EXEC, ExecRequest => ExecReply;
        Volumes = VOLUMES, VolumesRequest => VolumesReply;
        VolumeRemove = VOLUME_REMOVE, VolumeRemoveRequest => VolumeRemoveReply;
        NetworkCreate = NETWORK_CREATE, NetworkCreateRequest => NetworkInfo;
        NetworkRemove = NETWORK_REMOVE, NetworkRemoveRequest => NetworkRemoveReply;
        Networks = NETWORKS, NetworksRequest => NetworksReply;
        NetworkInspect = NETWORK_INSPECT, NetworkInspectRequest => NetworkInfo;
        Ports = PORTS, PortsRequest => PortsReply;
    }
}
#[cfg(test)]
mod tests {
    #[test]
    fn a_shim_report_reads_back_as_written() {
        let failed = ShimReport::Failed(ShimFailure {
            message: "exec \"x\": no such file".into(),
            code: crate::ErrorCode::NotFound,
            reason: Some(crate::ErrorReason::CommandNotFound),
        });
        for r in [
            ShimReport::Started {
                shim_pid: 10,
                init_pid: 4_000_000,
            },
            failed,
        ] {
            let line = r.encode();
            assert!(
                line.ends_with('\n') && line.matches('\n').count() == 1,
                "{line:?}"
            );
            assert_eq!(ShimReport::decode(&line).unwrap(), r);
        }
        for bad in ["", "OK", "OK 1", "OK 1 2 3", "OK a 2", "started 1 2"] {
            assert!(ShimReport::decode(bad).is_err(), "{bad:?}");
        }
        // An older shim's plain-text failure still reads as a failure.
        match ShimReport::decode("ERR it broke").unwrap() {
            ShimReport::Failed(f) => assert_eq!(f.message, "it broke"),
            other => panic!("{other:?}"),
        }
    }

    use super::*;

    #[test]
    fn device_syntax_is_dockers() {
        let d = DeviceMapping::parse("/dev/sda").unwrap();
        assert_eq!(
            (
                d.host_path.as_str(),
                d.container_path.as_str(),
                d.permissions.as_str()
            ),
            ("/dev/sda", "/dev/sda", "rwm")
        );
        let d = DeviceMapping::parse("/dev/sda:r").unwrap();
        assert_eq!(
            (d.container_path.as_str(), d.permissions.as_str()),
            ("/dev/sda", "r")
        );
        let d = DeviceMapping::parse("/dev/sda:/dev/xvda").unwrap();
        assert_eq!(
            (d.container_path.as_str(), d.permissions.as_str()),
            ("/dev/xvda", "rwm")
        );
        let d = DeviceMapping::parse("/dev/sda:/dev/xvda:mw").unwrap();
        assert_eq!(d.permissions, "mw");
        for bad in [
            "/dev/sda:/dev/x:rx",
            "/dev/sda:/dev/x:rr",
            "/dev/sda:/dev/x:",
            "dev/sda",
            "/dev/sda:rel",
            "/dev/sda:/",
            "/a:/b:r:extra",
        ] {
            assert!(DeviceMapping::parse(bad).is_err(), "{bad} was taken");
        }
        assert!(DeviceMapping::parse("/dev/sda:/dev/x:rx")
            .unwrap_err()
            .contains("rwm"));
        // A spec written before devices existed still reads.
        let s: ContainerSpec =
            serde_json::from_str(r#"{"id":"a","name":"n","image":"i","args":["x"]}"#).unwrap();
        assert!(s.devices.is_empty());
    }
}

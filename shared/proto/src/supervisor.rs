//! Request and reply types of the supervisor: the life of created containers.
//!
//! Verbs on `berth.v1.<node>.supervisor.<verb>`: `create`, `start`, `stop`, `kill`, `restart`,
//! `remove`, `pause`, `unpause`, `list`, `inspect`, `logs`, `stats`, `exec`, `wait`.
//! A container is named in requests by its full id, a unique prefix of its id, or its name.
//!
//! Actual state: one [`ContainerState`] per container in the `berth_actual` bucket under
//! `<node>.<id>` (see [`crate::subjects::actual_key`]), deleted when the container is removed.
//!
//! Events (`berth.v1.events.<node>.container.<action>`, name = container name, attrs `id`,
//! `image`, and `exit_code` where there is one): see the `EV_*` constants.
//!
//! Live logs: while a container runs, every line the supervisor reads from its log file is
//! published on the core NATS subject [`logs_subject`] as a [`LogMessage`].
//!
//! History of any size: a `logs` request naming a [`logs_stream_subject`] gets its lines as
//! [`LogChunk`]s sent to that subject, each acknowledged by the reader, and then the reply,
//! which counts what was sent.

use crate::isolator::{DeviceMapping, MountSpec, NetworkMode, Resources};
use crate::subjects::PREFIX;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const CREATE: &str = "create";
pub const START: &str = "start";
pub const STOP: &str = "stop";
pub const KILL: &str = "kill";
pub const RESTART: &str = "restart";
pub const REMOVE: &str = "remove";
pub const PAUSE: &str = "pause";
pub const UNPAUSE: &str = "unpause";
pub const LIST: &str = "list";
pub const INSPECT: &str = "inspect";
pub const LOGS: &str = "logs";
pub const STATS: &str = "stats";
pub const EXEC: &str = "exec";
pub const WAIT: &str = "wait";

/// Event entity of every supervisor event.
pub const EV_ENTITY: &str = "container";
pub const EV_CREATED: &str = "created";
pub const EV_STARTED: &str = "started";
/// A signal was sent (attr `signal`).
pub const EV_KILLED: &str = "killed";
/// The container's init ended (attrs `exit_code`, `oom_killed`).
pub const EV_EXITED: &str = "exited";
/// A restart is scheduled (attrs `restart_count`, `delay_ms`).
pub const EV_RESTARTING: &str = "restarting";
pub const EV_PAUSED: &str = "paused";
pub const EV_UNPAUSED: &str = "unpaused";
pub const EV_REMOVED: &str = "removed";
/// The health status changed (attr `health`: starting, healthy, unhealthy).
pub const EV_HEALTH: &str = "health";

/// The core NATS subject live log lines of a container are published on:
/// `berth.v1.<node>.logs.<id>`.
pub fn logs_subject(node: &str, id: &str) -> String {
    format!("{PREFIX}.{node}.logs.{id}")
}

/// A subject a reader receives one history stream on: `berth.v1.<node>.logs.stream.<token>`
/// (`token`: random, the reader's own). Streams stay under the node's `logs.` subjects.
pub fn logs_stream_subject(node: &str, token: &str) -> String {
    format!("{PREFIX}.{node}.logs.stream.{token}")
}

/// Whether `subject` may carry a history stream of `node`: under [`logs_stream_subject`]'s
/// prefix, one more token, no wildcard.
pub fn is_logs_stream_subject(node: &str, subject: &str) -> bool {
    let prefix = format!("{PREFIX}.{node}.logs.stream.");
    subject.strip_prefix(&prefix).is_some_and(|token| {
        !token.is_empty() && !token.contains(['.', '*', '>', ' ', '\t', '\r', '\n'])
    })
}

/// What the user (or a spec) asks for beyond the image's own config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerOptions {
    /// Replaces the image's `Cmd` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    /// Replaces the image's `Entrypoint` when set (an empty list clears it, and then the
    /// image's `Cmd` is not used either, as in Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=value`, added to (and overriding by key) the image's environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
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
    #[serde(default)]
    pub init: bool,
    #[serde(default)]
    pub tty: bool,
    /// Overrides the image's `StopSignal` (default `SIGTERM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Time between the stop signal and SIGKILL (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_ms: Option<u64>,
    /// Confine the container's calls with seccomp (on unless turned off).
    #[serde(default = "yes")]
    pub seccomp: bool,
    /// The user's seccomp profile instead of berth's default (`--security-opt seccomp=FILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp_profile: Option<crate::isolator::SeccompProfile>,
    #[serde(default = "yes")]
    pub no_new_privileges: bool,
    #[serde(default)]
    pub network: NetworkMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_remap: Option<u32>,
    /// Further names on the container's bridge network (a Compose service name).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Published ports (`ports:`, `-p`), parsed by `berth_docker::ports::parse_ports`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::network::PortMapping>,
    /// Host devices given to the container (`--device`, Compose `devices:`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceMapping>,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            cmd: None,
            entrypoint: None,
            env: Vec::new(),
            working_dir: None,
            user: None,
            hostname: None,
            mounts: Vec::new(),
            resources: Resources::default(),
            read_only: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            init: false,
            tty: false,
            stop_signal: None,
            stop_grace_period_ms: None,
            seccomp: true,
            seccomp_profile: None,
            no_new_privileges: true,
            network: NetworkMode::default(),
            userns_remap: None,
            aliases: Vec::new(),
            ports: Vec::new(),
            devices: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// Docker's restart policies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "name")]
pub enum RestartPolicy {
    #[default]
    No,
    /// Restart when the exit code is not 0, at most `max_retries` times when set.
    OnFailure {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_retries: Option<u32>,
    },
    Always,
    /// Like `always`, except after an explicit stop (kept across supervisor restarts).
    UnlessStopped,
}

impl std::str::FromStr for RestartPolicy {
    type Err = String;
    /// `no`, `always`, `unless-stopped`, `on-failure` or `on-failure:<max>`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "no" | "" => Ok(RestartPolicy::No),
            "always" => Ok(RestartPolicy::Always),
            "unless-stopped" => Ok(RestartPolicy::UnlessStopped),
            "on-failure" => Ok(RestartPolicy::OnFailure { max_retries: None }),
            other => match other.strip_prefix("on-failure:") {
                Some(n) => n
                    .parse::<u32>()
                    .map(|m| RestartPolicy::OnFailure {
                        max_retries: Some(m),
                    })
                    .map_err(|_| {
                        format!("restart policy {s:?}: the maximum after on-failure: must be a number")
                    }),
                None => Err(format!(
                    "unknown restart policy {s:?}: expected no, always, unless-stopped, on-failure[:max]"
                )),
            },
        }
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestartPolicy::No => f.write_str("no"),
            RestartPolicy::Always => f.write_str("always"),
            RestartPolicy::UnlessStopped => f.write_str("unless-stopped"),
            RestartPolicy::OnFailure { max_retries: None } => f.write_str("on-failure"),
            RestartPolicy::OnFailure {
                max_retries: Some(n),
            } => write!(f, "on-failure:{n}"),
        }
    }
}

/// A health check, as in Docker's `HEALTHCHECK` / Compose's `healthcheck`. Unset durations and
/// retries take Docker's defaults (30 s interval, 30 s timeout, 3 retries, no start period).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// `["CMD", arg...]`, `["CMD-SHELL", "command line"]` or `["NONE"]` (disables the image's).
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Failures during this time after a start do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ms: Option<u64>,
}

/// What to do when a container turns unhealthy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthAction {
    #[default]
    None,
    /// Stop and start it again (counts as a restart).
    Restart,
    /// Stop it (stop signal, then SIGKILL after the grace period).
    Stop,
    /// SIGKILL it.
    Kill,
}

impl std::str::FromStr for HealthAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(HealthAction::None),
            "restart" => Ok(HealthAction::Restart),
            "stop" => Ok(HealthAction::Stop),
            "kill" => Ok(HealthAction::Kill),
            _ => Err(format!(
                "unknown health action {s:?}: expected none, restart, stop or kill"
            )),
        }
    }
}

/// Create a container (and start it when `start`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CreateRequest {
    /// The container's id (64 lowercase hex digits), chosen by the caller so that it can listen
    /// on the container's subjects (its output) before the container exists; random when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Unique per node; a random Docker-style name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An image reference or manifest digest; pulled when not present on the node. Empty
    /// when `rootfs` is given.
    #[serde(default)]
    pub image: String,
    /// A host directory to run instead of an image, as Podman's `--rootfs`: it is the
    /// read-only lower layer of the container's overlay (never written to); the container
    /// writes to its own upper dir. No image config applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    #[serde(default)]
    pub options: ContainerOptions,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Overrides the image's HEALTHCHECK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    #[serde(default)]
    pub health_on_failure: HealthAction,
    /// Remove the container once it has exited (and will not be restarted).
    #[serde(default)]
    pub auto_remove: bool,
    /// Start it right after creating it.
    #[serde(default)]
    pub start: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerStatus {
    Created,
    Running,
    Paused,
    /// Exited and waiting for its restart delay.
    Restarting,
    Exited,
    /// Its shim vanished without recording an exit, or a restart could not be done.
    Dead,
}

impl ContainerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerStatus::Created => "created",
            ContainerStatus::Running => "running",
            ContainerStatus::Paused => "paused",
            ContainerStatus::Restarting => "restarting",
            ContainerStatus::Exited => "exited",
            ContainerStatus::Dead => "dead",
        }
    }
    /// Running or paused: a process exists.
    pub fn is_alive(self) -> bool {
        matches!(self, ContainerStatus::Running | ContainerStatus::Paused)
    }
}

impl std::str::FromStr for ContainerStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            ContainerStatus::Created,
            ContainerStatus::Running,
            ContainerStatus::Paused,
            ContainerStatus::Restarting,
            ContainerStatus::Exited,
            ContainerStatus::Dead,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown status {s:?}: expected created, running, paused, restarting, exited or dead"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthStatus {
    Starting,
    Healthy,
    Unhealthy,
}

impl HealthStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Starting => "starting",
            HealthStatus::Healthy => "healthy",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }
}

/// One run of a health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthProbe {
    pub start: String,
    pub end: String,
    /// The check's exit code; -1 when it timed out or could not run.
    pub exit_code: i32,
    /// The end of its output (or why it could not run).
    pub output: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthState {
    pub status: HealthStatus,
    pub failing_streak: u32,
    /// The last few probes, oldest first.
    #[serde(default)]
    pub log: Vec<HealthProbe>,
}

/// The actual state of one container, as kept in `berth_actual` and returned by
/// `list`/`inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub name: String,
    pub node: String,
    pub image: String,
    #[serde(default)]
    pub image_digest: String,
    /// The final argv (entrypoint + command).
    #[serde(default)]
    pub args: Vec<String>,
    pub status: ContainerStatus,
    /// The init's pid on the host while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub oom_killed: bool,
    /// Restarts done by the restart policy or the health action.
    #[serde(default)]
    pub restart_count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthState>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Why the last start or restart failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Name a container: full id, unique id prefix, or name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub container: String,
}

pub type StartRequest = Target;
pub type PauseRequest = Target;
pub type InspectRequest = Target;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopRequest {
    pub container: String,
    /// Grace period before SIGKILL; the container's own (default 10 s) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

pub type RestartRequest = StopRequest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillRequest {
    pub container: String,
    /// A name (`SIGTERM`, `TERM`) or number; SIGKILL when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveRequest {
    pub container: String,
    /// Kill it first if it runs.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Include containers that are not running.
    #[serde(default)]
    pub all: bool,
    /// Only containers carrying all these labels with these values.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Only containers carrying these label keys (any value).
    #[serde(default)]
    pub label_keys: Vec<String>,
    /// Only containers whose name contains this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only containers in this status (implies `all`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ContainerStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListReply {
    pub containers: Vec<ContainerState>,
}

/// Everything known about a container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InspectReply {
    pub state: ContainerState,
    /// The merged spec handed to the isolator.
    pub spec: crate::isolator::ContainerSpec,
    /// The request it was created from.
    pub request: CreateRequest,
    /// The health check in effect (image's merged with the request's), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheck>,
    pub stop_signal: String,
    pub stop_grace_period_ms: u64,
    pub log_path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsRequest {
    pub container: String,
    /// Only lines at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only lines before this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Only the last N lines (after `since`/`until`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<usize>,
    /// Send the lines to this subject ([`logs_stream_subject`]) as [`LogChunk`]s instead of in
    /// the reply, which then has none and counts what was sent. Without it the history must
    /// fit in one reply ([`LOGS_REPLY_MAX_BYTES`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
}

/// The most bytes of log lines (as stored) a `logs` reply without a stream carries; a longer
/// history is refused with `failed_precondition`.
pub const LOGS_REPLY_MAX_BYTES: u64 = 512 << 10;

/// One chunk of a streamed history, sent with a reply subject: the reader acknowledges it by
/// publishing its `n` (JSON) there once it has written the lines. The supervisor sends a few
/// chunks ahead of the acknowledgements and no more, so a slow reader slows the stream instead
/// of making anyone buffer it. A `probe` (no lines) asks nothing: it is sent while the
/// supervisor waits, to learn whether the reader is still subscribed (no responders: it is
/// gone, and the stream ends).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// 1, 2, ... in order.
    pub n: u64,
    #[serde(default)]
    pub lines: Vec<crate::isolator::LogLine>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub probe: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsReply {
    pub id: String,
    pub lines: Vec<crate::isolator::LogLine>,
    /// Where live lines are published ([`logs_subject`]).
    pub subject: String,
    /// The live stream's epoch and the sequence number of the last line included here: a
    /// follower subscribed before asking drops live messages of the same epoch with `seq`
    /// at or below this one.
    pub epoch: String,
    pub seq: u64,
    /// Whether the container is running (a follower may stop at once when it is not).
    pub running: bool,
    /// With a stream: what was sent and acknowledged (chunks, lines, and bytes of the lines'
    /// `log` text), so the reader knows it has all.
    #[serde(default)]
    pub streamed: StreamedCount,
}

/// What a history stream carried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamedCount {
    pub chunks: u64,
    pub lines: u64,
    pub bytes: u64,
}

/// A message on [`logs_subject`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LogMessage {
    Line {
        epoch: String,
        seq: u64,
        line: crate::isolator::LogLine,
    },
    /// The container exited; every line it wrote before has been published.
    Exited {
        exit_code: i32,
        #[serde(default)]
        oom_killed: bool,
        /// A restart follows.
        #[serde(default)]
        restarting: bool,
        /// The container was removed at its exit (`auto_remove`) before this message: nothing
        /// is left to wait for. Without it, a follower of a container removed at its exit
        /// waits for the `removed` event (the removal failed, or a removal was already under
        /// way and announces itself).
        #[serde(default)]
        removed: bool,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsRequest {
    /// Containers to read; every running one when empty.
    #[serde(default)]
    pub containers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerStats {
    pub id: String,
    pub name: String,
    /// RFC 3339 time of the reading.
    pub read_at: String,
    pub memory_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_bytes: Option<u64>,
    /// Total CPU time used, in nanoseconds (two readings give a rate).
    pub cpu_usage_ns: u64,
    pub pids: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReply {
    pub stats: Vec<ContainerStats>,
    /// The host's CPU count, to turn CPU time into a percentage as Docker does.
    pub online_cpus: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecRequest {
    pub container: String,
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// See [`crate::isolator::ExecStream`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<crate::isolator::ExecStream>,
}

/// The reply of `exec` is the isolator's [`crate::isolator::ExecReply`].
pub type ExecReply = crate::isolator::ExecReply;

/// Wait until the container is not running (and no restart follows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitRequest {
    pub container: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitReply {
    pub exit_code: i32,
    #[serde(default)]
    pub oom_killed: bool,
}

/// The supervisor's verbs (see [`crate::verb`]).
pub mod verbs {
    use super::*;
    crate::verbs! { crate::Service::Supervisor;
        Create = CREATE, CreateRequest => ContainerState;
        Start = START, StartRequest => ContainerState;
        Stop = STOP, StopRequest => ContainerState;
        Restart = RESTART, RestartRequest => ContainerState;
        Kill = KILL, KillRequest => ContainerState;
        Remove = REMOVE, RemoveRequest => ContainerState;
        Pause = PAUSE, PauseRequest => ContainerState;
        Unpause = UNPAUSE, PauseRequest => ContainerState;
        List = LIST, ListRequest => ListReply;
        Inspect = INSPECT, InspectRequest => InspectReply;
        Logs = LOGS, LogsRequest => LogsReply;
        Stats = STATS, StatsRequest => StatsReply;
        Exec = EXEC, ExecRequest => ExecReply;
        Wait = WAIT, WaitRequest => WaitReply;
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policies_parse_and_print_as_docker_writes_them() {
        for s in [
            "no",
            "always",
            "unless-stopped",
            "on-failure",
            "on-failure:5",
        ] {
            let p: RestartPolicy = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
        }
        assert!("on-failure:x".parse::<RestartPolicy>().is_err());
        assert!("sometimes"
            .parse::<RestartPolicy>()
            .unwrap_err()
            .contains("sometimes"));
        let j = serde_json::to_string(&RestartPolicy::OnFailure {
            max_retries: Some(3),
        })
        .unwrap();
        assert_eq!(j, r#"{"name":"on-failure","max_retries":3}"#);
    }

    #[test]
    fn stream_subjects_stay_under_the_nodes_logs_subjects() {
        let s = logs_stream_subject("n1", "ab12");
        assert_eq!(s, "berth.v1.n1.logs.stream.ab12");
        assert!(is_logs_stream_subject("n1", &s));
        assert!(!is_logs_stream_subject("n2", &s));
        assert!(!is_logs_stream_subject("n1", "berth.v1.n1.logs.stream.>"));
        assert!(!is_logs_stream_subject("n1", "berth.v1.n1.logs.stream.a.b"));
        assert!(!is_logs_stream_subject("n1", "berth.v1.n1.logs.stream."));
        assert!(!is_logs_stream_subject(
            "n1",
            "berth.v1.n1.supervisor.create"
        ));
    }

    #[test]
    fn log_messages_are_tagged() {
        let m = LogMessage::Exited {
            exit_code: 3,
            oom_killed: false,
            restarting: false,
            removed: true,
        };
        let j = serde_json::to_string(&m).unwrap();
        assert!(j.contains(r#""kind":"exited""#), "{j}");
        assert_eq!(serde_json::from_str::<LogMessage>(&j).unwrap(), m);
        // From a supervisor that does not say: not removed.
        let old = r#"{"kind":"exited","exit_code":1}"#;
        assert!(matches!(
            serde_json::from_str::<LogMessage>(old).unwrap(),
            LogMessage::Exited { removed: false, .. }
        ));
    }
}

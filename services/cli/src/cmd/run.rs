//! `berth run [OPTIONS] IMAGE [COMMAND [ARG...]]`: create and start a container the way Docker
//! users type it. In the foreground it streams the container's output and exits with its exit
//! code; `-d` prints the id and returns; `--rm` removes the container once it has exited.

use crate::cmd::logs::print_line;
use crate::ctx::{exit, Ctx};
use anyhow::{anyhow, bail, Context};
use berth_docker::{ports, units, volumes};
use berth_proto::isolator::{DeviceMapping, MountKind, MountSpec, NetworkMode, Resources};
use berth_proto::supervisor::*;
use berth_proto::{subjects, Event};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Creating may pull the image first: allow an hour unless `--timeout` says more.
const CREATE_TIMEOUT: u64 = 3600;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    detach: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// IMAGE is a directory holding a root filesystem to run instead of an image (it is
    /// never written to), as Podman's --rootfs.
    #[arg(long)]
    rootfs: bool,
    #[command(flatten)]
    opts: CreateOpts,
    /// The image to run (a directory with --rootfs).
    image: String,
    /// The command and its arguments (replaces the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

// The options of a container, shared with commands that create one. (Not a doc comment: clap
// would make it the about text of every command that flattens these, subcommands being built
// only when chosen.)
#[derive(clap::Args, Debug, Default)]
pub struct CreateOpts {
    /// Name of the container (default: a random one).
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable: KEY=value, or KEY to take it from this shell.
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=value lines; # comments).
    #[arg(long = "env-file")]
    pub env_file: Vec<PathBuf>,
    /// Bind mount or named volume: /host/path:/ctr/path[:OPTIONS] or name:/ctr/path[:OPTIONS],
    /// options ro, rw, z, Z, nocopy, private, rprivate, cached, delegated, consistent.
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// A tmpfs mount: /ctr/path[:size=64m,ro,mode=1777,...].
    #[arg(long)]
    pub tmpfs: Vec<String>,
    /// User: uid, uid:gid, name or name:group.
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Host name of the container.
    #[arg(long)]
    pub hostname: Option<String>,
    /// Memory limit (e.g. 512m, 1g, 1.5GiB).
    #[arg(short = 'm', long)]
    pub memory: Option<String>,
    /// CPUs (e.g. 1.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// CPU shares (relative weight).
    #[arg(short = 'c', long = "cpu-shares")]
    pub cpu_shares: Option<u64>,
    /// Most processes the container may have (-1: unlimited).
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Restart policy: no, on-failure[:max], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Run a tiny init as PID 1 that forwards signals and reaps zombies.
    #[arg(long)]
    pub init: bool,
    /// Mount the root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// Add a capability (or ALL).
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop a capability (or ALL).
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give the container a host device: HOST[:CONTAINER][:PERMISSIONS], permissions
    /// letters from rwm (read, write, mknod; default rwm). Every other device is refused.
    #[arg(long = "device")]
    pub device: Vec<String>,
    /// Give the container a terminal.
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Replace the image's ENTRYPOINT.
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Signal that stops the container (default: the image's, else SIGTERM).
    #[arg(long = "stop-signal")]
    pub stop_signal: Option<String>,
    /// Seconds between the stop signal and SIGKILL (default 10).
    #[arg(long = "stop-timeout")]
    pub stop_timeout: Option<u64>,
    /// A label KEY=value.
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Network: none (loopback only, the default), host, container:NAME, bridge (the node's
    /// default bridge network) or the name of a network made by `berth network create`.
    #[arg(long)]
    pub network: Option<String>,
    /// Publish a port: [IP:][HOST:]CONTAINER[/udp], ranges too (implies --network bridge
    /// when no network is given).
    #[arg(short = 'p', long = "publish")]
    pub publish: Vec<String>,
    /// A further name the container answers to on its bridge network.
    #[arg(long = "network-alias")]
    pub network_alias: Vec<String>,
    /// seccomp=PROFILE.json (Docker's format), seccomp=unconfined, no-new-privileges=false.
    #[arg(long = "security-opt")]
    pub security_opt: Vec<String>,
    /// Health check command (run with /bin/sh -c inside the container).
    #[arg(long = "health-cmd")]
    pub health_cmd: Option<String>,
    /// Time between health checks (e.g. 30s, 1m30s, 500ms).
    #[arg(long = "health-interval")]
    pub health_interval: Option<String>,
    /// Longest a health check may run.
    #[arg(long = "health-timeout")]
    pub health_timeout: Option<String>,
    /// Failures in a row that make the container unhealthy.
    #[arg(long = "health-retries")]
    pub health_retries: Option<u32>,
    /// Time after start when failures do not count.
    #[arg(long = "health-start-period")]
    pub health_start_period: Option<String>,
    /// Disable the image's health check.
    #[arg(long = "no-healthcheck")]
    pub no_healthcheck: bool,
    /// What to do when it turns unhealthy: none, restart, stop, kill.
    #[arg(long = "health-on-failure")]
    pub health_on_failure: Option<String>,
}

/// `--security-opt seccomp=FILE`: the profile's content, sent in the container's spec (the
/// isolator checks it, the shim compiles it).
pub fn read_seccomp_profile(file: &str) -> anyhow::Result<berth_proto::isolator::SeccompProfile> {
    let json = std::fs::read_to_string(file)
        .with_context(|| format!("--security-opt seccomp={file}: cannot read the profile"))?;
    Ok(berth_proto::isolator::SeccompProfile {
        source: file.to_string(),
        json,
    })
}

/// `-v`/`--volume` in Docker's short form (`berth_docker::volumes`): a host path (absolute,
/// or relative to the current directory) or a named volume. Anonymous volumes and mount
/// propagation other than private are refused.
fn volume(v: &str, cwd: &Path) -> anyhow::Result<MountSpec> {
    let vol = volumes::parse_volume(v, cwd).map_err(|e| anyhow!("--volume {e}"))?;
    if let Some(e) = vol.unsupported() {
        bail!("--volume {v:?}: {e}");
    }
    let (kind, source) = match vol.source {
        volumes::Source::Bind(p) => (MountKind::Bind, p),
        volumes::Source::Named(n) => (MountKind::Volume, n),
        volumes::Source::Anonymous => bail!(
            "--volume {v:?}: anonymous volumes are not supported; give a name or a host path (name:{v})"
        ),
    };
    Ok(MountSpec {
        kind,
        source,
        target: vol.target,
        read_only: vol.read_only,
        size_bytes: None,
    })
}

/// `--tmpfs` in Docker's short form (`berth_docker::volumes`): `/path[:size=64m,ro,...]`.
fn tmpfs(v: &str) -> anyhow::Result<MountSpec> {
    let t = volumes::parse_tmpfs(v).map_err(|e| anyhow!("--tmpfs {e}"))?;
    if !t.ignored.is_empty() {
        let ignored = t.ignored.join(", ");
        eprintln!(
            "warning: --tmpfs {v:?}: {ignored} {}",
            volumes::TMPFS_IGNORED
        );
    }
    Ok(MountSpec {
        kind: MountKind::Tmpfs,
        source: String::new(),
        target: t.target,
        read_only: t.read_only,
        size_bytes: t.size_bytes,
    })
}

/// A duration flag in Go's format (`berth_docker::units`): `30s`, `1m30s`, `1.5s`.
fn duration_ms(flag: &str, s: &Option<String>) -> anyhow::Result<Option<u64>> {
    s.as_deref()
        .map(|s| units::parse_duration_ms(s).map_err(|e| anyhow!("{flag}: {e}")))
        .transpose()
}

/// Environment entries: `KEY=value` as is, `KEY` from this process's environment (dropped
/// when unset, as Docker does).
fn resolve_env(entries: &[String], out: &mut Vec<String>) {
    for e in entries {
        if e.contains('=') {
            out.push(e.clone());
        } else if let Ok(v) = std::env::var(e) {
            out.push(format!("{e}={v}"));
        }
    }
}

pub fn read_env_file(p: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(p).with_context(|| format!("--env-file {}", p.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('=') {
            bail!(
                "--env-file {} line {}: no variable name",
                p.display(),
                i + 1
            );
        }
        out.push(l.to_string());
    }
    Ok(out)
}

impl CreateOpts {
    /// The create request for `image` with `command` (empty: the image's).
    pub fn request(&self, image: &str, command: Vec<String>) -> anyhow::Result<CreateRequest> {
        let cwd = std::env::current_dir().context("current directory")?;
        let mut env = Vec::new();
        for f in &self.env_file {
            resolve_env(&read_env_file(f)?, &mut env);
        }
        resolve_env(&self.env, &mut env);
        let mut mounts = Vec::new();
        for v in &self.volumes {
            mounts.push(volume(v, &cwd)?);
        }
        for t in &self.tmpfs {
            mounts.push(tmpfs(t)?);
        }
        let devices = self
            .device
            .iter()
            .map(|d| DeviceMapping::parse(d).map_err(|e| anyhow!("--device: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut labels = BTreeMap::new();
        for l in &self.labels {
            let (k, v) = l.split_once('=').unwrap_or((l, ""));
            labels.insert(k.to_string(), v.to_string());
        }
        let mut ports = Vec::new();
        for p in &self.publish {
            ports.extend(ports::parse_ports(p).map_err(|e| anyhow!("--publish {e}"))?);
        }
        let network = match self.network.as_deref() {
            None if !ports.is_empty() => {
                NetworkMode::Bridge(berth_proto::network::DEFAULT_NETWORK.into())
            }
            None | Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            Some(n) => match n.strip_prefix("container:") {
                Some(c) => NetworkMode::Container(c.to_string()),
                None => NetworkMode::Bridge(n.to_string()),
            },
        };
        if !matches!(network, NetworkMode::Bridge(_)) {
            if !ports.is_empty() {
                bail!(
                    "--publish needs a bridge network, not --network {}",
                    self.network.as_deref().unwrap_or_default()
                );
            }
            if !self.network_alias.is_empty() {
                bail!("--network-alias needs a bridge network");
            }
        }
        let (mut seccomp, mut seccomp_profile, mut nnp) = (true, None, true);
        for o in &self.security_opt {
            match o.as_str() {
                "seccomp=unconfined" | "seccomp:unconfined" => {
                    (seccomp, seccomp_profile) = (false, None)
                }
                "no-new-privileges=false" | "no-new-privileges:false" => nnp = false,
                "no-new-privileges" | "no-new-privileges=true" | "no-new-privileges:true" => {
                    nnp = true
                }
                _ => match o
                    .strip_prefix("seccomp=")
                    .or_else(|| o.strip_prefix("seccomp:"))
                {
                    Some(file) => {
                        (seccomp, seccomp_profile) = (true, Some(read_seccomp_profile(file)?))
                    }
                    None => bail!("--security-opt {o:?}: supported are seccomp=PROFILE.json, seccomp=unconfined and no-new-privileges[=true|false]"),
                },
            }
        }
        if let Some(c) = self.cpus {
            if c <= 0.0 {
                bail!("--cpus {c}: must be above 0");
            }
        }
        let healthcheck = if self.no_healthcheck {
            Some(HealthCheck {
                test: vec!["NONE".into()],
                ..Default::default()
            })
        } else if self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
        {
            Some(HealthCheck {
                test: self
                    .health_cmd
                    .as_ref()
                    .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
                    .unwrap_or_default(),
                interval_ms: duration_ms("--health-interval", &self.health_interval)?,
                timeout_ms: duration_ms("--health-timeout", &self.health_timeout)?,
                retries: self.health_retries,
                start_period_ms: duration_ms("--health-start-period", &self.health_start_period)?,
            })
        } else {
            None
        };
        Ok(CreateRequest {
            id: None,
            name: self.name.clone(),
            image: image.to_string(),
            rootfs: None,
            options: ContainerOptions {
                cmd: (!command.is_empty()).then_some(command),
                entrypoint: self.entrypoint.as_ref().map(|e| {
                    if e.is_empty() {
                        vec![]
                    } else {
                        vec![e.clone()]
                    }
                }),
                env,
                working_dir: self.workdir.clone(),
                user: self.user.clone(),
                hostname: self.hostname.clone(),
                mounts,
                resources: Resources {
                    memory_bytes: self
                        .memory
                        .as_deref()
                        .map(|m| units::parse_size(m).map_err(|e| anyhow!("--memory: {e}")))
                        .transpose()?,
                    cpus: self.cpus,
                    cpu_shares: self.cpu_shares,
                    pids_limit: self.pids_limit,
                    ..Default::default()
                },
                read_only: self.read_only,
                cap_add: self.cap_add.clone(),
                cap_drop: self.cap_drop.clone(),
                init: self.init,
                tty: self.tty,
                stop_signal: self.stop_signal.clone(),
                stop_grace_period_ms: self.stop_timeout.map(|s| s * 1000),
                seccomp,
                seccomp_profile,
                no_new_privileges: nnp,
                network,
                aliases: self.network_alias.clone(),
                ports,
                userns_remap: None,
                devices,
            },
            labels,
            restart: match &self.restart {
                Some(r) => r.parse().map_err(|e: String| anyhow!("--restart: {e}"))?,
                None => RestartPolicy::No,
            },
            healthcheck,
            health_on_failure: match &self.health_on_failure {
                Some(a) => a
                    .parse()
                    .map_err(|e: String| anyhow!("--health-on-failure: {e}"))?,
                None => HealthAction::None,
            },
            auto_remove: false,
            start: false,
        })
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let mut req = a.opts.request(&a.image, a.command)?;
    if a.rootfs {
        let dir =
            std::fs::canonicalize(&a.image).with_context(|| format!("--rootfs {}", a.image))?;
        req.rootfs = Some(dir.display().to_string());
        req.image = String::new();
    }
    if a.rm && req.restart != RestartPolicy::No {
        bail!("--rm and --restart {} cannot be combined", req.restart);
    }
    req.auto_remove = a.rm;
    let node = ctx.node()?;
    let bus = ctx.bus().await?;
    let mut opts = ctx.request_options(true);
    opts.timeout = opts.timeout.max(Duration::from_secs(CREATE_TIMEOUT));
    if a.detach {
        req.start = true;
        let st: ContainerState = bus
            .ask::<berth_proto::supervisor::verbs::Create>(&node, &req, &opts)
            .await?;
        println!("{}", st.id);
        return Ok(());
    }
    // The id is ours to choose, so we listen to the container's output (and removal) before
    // it exists, and one request creates and starts it: no line and no exit is missed.
    let id = berth_bus::random_hex(64);
    req.id = Some(id.clone());
    req.start = true;
    let mut logs = bus
        .client()
        .subscribe(logs_subject(&node, &id))
        .await
        .context("subscribe to the container's output")?;
    let mut removed_events = if a.rm {
        Some(
            bus.client()
                .subscribe(subjects::event(&node, EV_ENTITY, EV_REMOVED))
                .await
                .context("subscribe to removal events")?,
        )
    } else {
        None
    };
    // A container that fails to start stays created (as with Docker), or is removed with --rm.
    let st: ContainerState = bus
        .ask::<berth_proto::supervisor::verbs::Create>(&node, &req, &opts)
        .await?;
    let (code, removed) = attach(ctx, &mut logs, &st).await?;
    if removed {
        removed_events = None;
    }
    // Removed before the exit was announced (the supervisor says so), or announced by an
    // event of its own.
    if let Some(sub) = removed_events.as_mut() {
        let wait = async {
            while let Some(m) = sub.next().await {
                if let Ok(ev) = serde_json::from_slice::<Event>(&m.payload) {
                    if ev.attrs.get("id").and_then(|v| v.as_str()) == Some(st.id.as_str()) {
                        return;
                    }
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(30), wait)
            .await
            .is_err()
        {
            eprintln!("berth: {} exited but was not removed within 30 s", st.name);
        }
    }
    if code == 0 {
        Ok(())
    } else {
        Err(exit(code))
    }
}

/// Print the output of `st` from `logs` (its log subject, subscribed before it started) until
/// it exits for good (no restart follows): its exit code, and whether the supervisor says it
/// was removed (`--rm`). Ctrl-C sends it SIGINT; a second one detaches (exit 130).
pub async fn attach(
    ctx: &Ctx,
    logs: &mut async_nats::Subscriber,
    st: &ContainerState,
) -> anyhow::Result<(i32, bool)> {
    let mut interrupts = 0;
    loop {
        tokio::select! {
            m = logs.next() => {
                let Some(m) = m else { bail!("the bus connection closed while following {}", st.name) };
                match serde_json::from_slice::<LogMessage>(&m.payload) {
                    Ok(LogMessage::Line { line, .. }) => print_line(&line, false),
                    Ok(LogMessage::Exited { exit_code, restarting: false, removed, .. }) => {
                        return Ok((exit_code, removed));
                    }
                    Ok(LogMessage::Exited { .. }) => {}
                    Err(_) => {}
                }
            }
            _ = tokio::signal::ctrl_c() => {
                interrupts += 1;
                if interrupts > 1 {
                    eprintln!("berth: detached; {} keeps running", st.name);
                    return Err(exit(130));
                }
                let _ = ctx.call_mut::<berth_proto::supervisor::verbs::Kill>(&KillRequest {
                    container: st.id.clone(),
                    signal: Some("SIGINT".into()),
                }).await;
            }
        }
    }
}

/// One plain line for an error (a remote error's message without its code).
pub fn describe(e: &anyhow::Error) -> String {
    if let Some(berth_bus::BusError::Remote(r)) = e.downcast_ref::<berth_bus::BusError>() {
        return r.message.clone();
    }
    format!("{e:#}")
}

/// Apply `f` to each named container, printing the name on success and one line per failure;
/// exit code 1 when any failed (as Docker's multi-container verbs do).
pub async fn each<F, Fut>(containers: &[String], f: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut failed = false;
    for c in containers {
        match f(c.clone()).await {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("berth: {c}: {}", describe(&e));
                failed = true;
            }
        }
    }
    if failed {
        Err(exit(1))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(o: CreateOpts) -> Result<CreateRequest, String> {
        o.request("img", vec![]).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn volumes_and_tmpfs_parse_like_docker() {
        let cwd = Path::new("/srv");
        let b = volume("/data:/d:ro", cwd).unwrap();
        assert_eq!((b.kind, b.read_only), (MountKind::Bind, true));
        let v = volume("cache:/c:nocopy", cwd).unwrap();
        assert_eq!((v.kind, v.source.as_str()), (MountKind::Volume, "cache"));
        assert_eq!(volume("./x:/x", cwd).unwrap().source, "/srv/x");
        assert_eq!(volume("/a:/b/:ro,z", cwd).unwrap().target, "/b");
        for (v, e) in [
            (
                "/only",
                "--volume \"/only\": anonymous volumes are not supported; give a name or a host path (name:/only)",
            ),
            (
                "/a:rel",
                "--volume \"/a:rel\": the target \"rel\" must be an absolute path",
            ),
            (
                "/a:/b:rshared",
                "--volume \"/a:/b:rshared\": mount propagation \"rshared\" is not supported by berth",
            ),
        ] {
            assert_eq!(volume(v, cwd).unwrap_err().to_string(), e);
        }
        assert!(volume("/a:/b:rx", cwd).is_err());
        let t = tmpfs("/tmp:size=64m,ro").unwrap();
        assert_eq!((t.size_bytes, t.read_only), (Some(64 << 20), true));
        assert_eq!(
            tmpfs("tmp").unwrap_err().to_string(),
            "--tmpfs \"tmp\": the target \"tmp\" must be an absolute path"
        );
    }

    #[test]
    fn errors_name_the_flag() {
        let opts = |f: fn(&mut CreateOpts)| {
            let mut o = CreateOpts::default();
            f(&mut o);
            o
        };
        for (o, e) in [
            (
                opts(|o| o.memory = Some("lots".into())),
                "--memory: invalid size \"lots\": expected a number with an optional unit like 512m, 1g or 1.5GB",
            ),
            (
                opts(|o| o.health_interval = Some("1min".into())),
                "--health-interval: invalid duration \"1min\": unknown unit \"min\" (ns, us, ms, s, m, h)",
            ),
            (
                opts(|o| o.publish = vec!["x:80".into()]),
                "--publish \"x:80\": host port \"x\" is not a port number (1-65535)",
            ),
            (
                opts(|o| o.device = vec!["/dev/loop0:/dev/disk:rx".into()]),
                "--device: device \"/dev/loop0:/dev/disk:rx\": the permissions \"rx\" are not letters from rwm",
            ),
        ] {
            let got = request(o).unwrap_err();
            assert!(got.starts_with(e), "{got}");
        }
        let r = request(opts(|o| o.device = vec!["/dev/loop0:/dev/disk:r".into()])).unwrap();
        assert_eq!(r.options.devices[0].container_path, "/dev/disk");
        assert_eq!(r.options.devices[0].permissions, "r");
    }

    /// The service `s` of a Compose file whose service has `keys` (YAML lines), or the error.
    fn compose(keys: &str) -> Result<berth_spec::Service, String> {
        let text = format!("services:\n  s:\n    image: img\n{keys}");
        let opts = berth_spec::LoadOptions {
            env: Some(Default::default()),
            ..Default::default()
        };
        let cwd = std::env::current_dir().unwrap();
        berth_spec::load_texts(vec![("compose.yaml".into(), text)], cwd, &opts)
            .map(|l| l.project.services["s"].clone())
            .map_err(|e| e.to_string())
    }

    /// Both entry points agree: the same value, or both refuse (the CLI naming its flag, the
    /// Compose file its place), and refuse exactly the values in `refused`.
    fn agree<T: PartialEq + std::fmt::Debug>(
        value: &str,
        refused: &[&str],
        flag: &str,
        cli: Result<T, String>,
        spec: Result<T, String>,
    ) {
        match (cli, spec) {
            (Ok(c), Ok(s)) => {
                assert_eq!(c, s, "{value}");
                assert!(!refused.contains(&value), "{value} is accepted: {c:?}");
            }
            (Err(c), Err(s)) => {
                assert!(c.starts_with(flag), "{value}: {c}");
                assert!(s.starts_with("compose.yaml:"), "{value}: {s}");
                assert!(refused.contains(&value), "{value} is refused: {c}");
            }
            (c, s) => panic!("{value}: the CLI says {c:?}, the Compose file {s:?}"),
        }
    }

    #[test]
    fn the_cli_and_compose_read_values_alike() {
        let refused_sizes = [
            "lots",
            "1ki",
            "1ib",
            "-1g",
            "5q",
            "1.5.5g",
            "1 k b",
            "99999999999p",
        ];
        let refused_durations = [
            "10", "1.5", "1m30", "soon", "10x", "1min", "2 hours", "1d", "-5s", "", "3000000h",
        ];
        let refused_ports = [
            "8080:0",
            "x:80",
            "80/sctp",
            "localhost:80:80",
            "1:2:3:4",
            "8000-8002:80",
            "8080: 80",
        ];
        let refused_volumes = ["/a:rel", "/a:/b:rx", "/a:/b:ro,rw", "/srv:/", ":/x"];
        let sizes = [
            "512m",
            "1g",
            "1G",
            "1.5GB",
            "512 MiB",
            "65536KiB",
            "64M",
            "1e3m",
            "0.5g",
            "16mb",
            "268435456",
            "268435456b",
        ];
        for size in sizes.into_iter().chain(refused_sizes) {
            let cli = request(CreateOpts {
                memory: Some(size.into()),
                ..Default::default()
            })
            .map(|r| r.options.resources.memory_bytes);
            let spec = compose(&format!(
                "    deploy: {{resources: {{limits: {{memory: \"{size}\"}}}}}}\n"
            ))
            .map(|s| s.limits.memory_bytes);
            agree(size, &refused_sizes, "--memory: ", cli, spec);
            let cli = request(CreateOpts {
                tmpfs: vec![format!("/t:size={size}")],
                ..Default::default()
            })
            .map(|r| r.options.mounts[0].size_bytes);
            let spec = compose(&format!("    tmpfs: [\"/t:size={size}\"]\n")).map(|s| {
                berth_docker::volumes::parse_tmpfs(&s.tmpfs[0])
                    .unwrap()
                    .size_bytes
            });
            agree(size, &refused_sizes, "--tmpfs ", cli, spec);
        }
        let durations = [
            "0", "10s", "1m30s", "1.5h", "2h45m", "1h2m3.5s", "500ms", "300us", "300µs", ".5s",
            "+10s",
        ];
        for d in durations.into_iter().chain(refused_durations) {
            let cli = request(CreateOpts {
                health_cmd: Some("true".into()),
                health_start_period: Some(d.into()),
                ..Default::default()
            })
            .map(|r| r.healthcheck.unwrap().start_period_ms);
            let spec = compose(&format!(
                "    healthcheck: {{test: [CMD, \"true\"], start_period: \"{d}\"}}\n"
            ))
            .map(|s| s.healthcheck.unwrap().start_period_ms);
            agree(d, &refused_durations, "--health-start-period: ", cli, spec);
        }
        let ports = [
            "80",
            "8080:80",
            "8080:80/udp",
            "8080:80/UDP",
            "127.0.0.1:8080:80",
            "127.0.0.1::53/udp",
            "[::1]:8443:443",
            "::1:8443:443",
            "8000-8001:80-81",
            "7000-7002",
        ];
        for p in ports.into_iter().chain(refused_ports) {
            let cli = request(CreateOpts {
                publish: vec![p.into()],
                ..Default::default()
            })
            .map(|r| {
                r.options
                    .ports
                    .iter()
                    .map(|m| {
                        let host_port = (m.host_port != 0).then_some(m.host_port);
                        let ip = m.host_ip.map(|i| i.to_string());
                        (ip, host_port, m.container_port, m.protocol.to_string())
                    })
                    .collect::<Vec<_>>()
            });
            let spec = compose(&format!("    ports: [\"{p}\"]\n")).map(|s| {
                s.ports
                    .iter()
                    .map(|m| {
                        let ip = m.host_ip.clone();
                        (ip, m.host_port, m.container_port, m.protocol.to_string())
                    })
                    .collect::<Vec<_>>()
            });
            agree(p, &refused_ports, "--publish ", cli, spec);
        }
        let cwd = std::env::current_dir().unwrap();
        let volumes = [
            "/data:/d",
            "/data:/d:ro",
            "./x:/x:ro,z",
            "../y:/y/",
            "/a:/b/../c:cached",
        ];
        for v in volumes.into_iter().chain(refused_volumes) {
            let cli = volume(v, &cwd)
                .map(|m| (m.source, m.target, m.read_only))
                .map_err(|e| e.to_string());
            let spec = compose(&format!("    volumes: [\"{v}\"]\n")).map(|s| {
                let m = &s.volumes[0];
                (m.source.clone(), m.target.clone(), m.read_only)
            });
            agree(v, &refused_volumes, "--volume ", cli, spec);
        }
    }
}

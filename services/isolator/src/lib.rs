//! The isolator service of berth: `create` turns a prepared rootfs and a `ContainerSpec` into
//! a container held before `exec` by its own `berth-shim`; `exec` runs a process in a
//! running container; `volumes` and `volume-remove` manage named volumes. See
//! docs/isolator.md.

pub mod bundle;
pub mod context;
pub mod error;
pub mod exec_stream;
pub mod init_layer;
pub mod network;
pub mod shim;
pub mod validate;
pub mod volumes;

pub use context::Isolator;

use berth_bus::{serve, NodeConfig, Router, ServiceContext};
use berth_proto::isolator::*;
use berth_proto::{BerthError, Service};
use error::{io, IsolatorError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long `create` waits for the shim's report.
pub const CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Serve the isolator's verbs until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let iso = Arc::new(Isolator::new(ctx.config.clone()));
    let c1 = iso.clone();
    let c_exec = ctx.clone();
    let c2 = ctx.config.clone();
    let c3 = ctx.config.clone();
    let c4 = ctx.config.clone();
    // Placeholder cgroups of standby shims killed while they waited; then shims that wait
    // for this isolator's containers.
    if let Ok(layout) = berth_cgroups::Layout::detect() {
        let n = berth_cgroups::sweep_standby(&layout);
        if n > 0 {
            tracing::info!(
                n,
                "removed the placeholder cgroups of standby shims that are gone"
            );
        }
    }
    iso.standby.refill();
    if let Err(e) = init_layer::ensure(&init_layer::dir(&ctx.config)) {
        tracing::warn!(%e, "the init layer is not there: containers make their mount points");
    }
    let router = Router::new()
        .verb::<berth_proto::isolator::verbs::Create, _, _>(move |req: CreateRequest| {
            // `container.created` is the supervisor's to announce (with the shim's and the
            // init's pids from this reply), once per container.
            let iso = c1.clone();
            async move {
                tokio::task::spawn_blocking(move || create(&iso, &req))
                    .await
                    .map_err(|e| BerthError::internal(format!("create task: {e}")))?
                    .map_err(BerthError::from)
            }
        })
        .verb::<berth_proto::isolator::verbs::Exec, _, _>(move |req: ExecRequest| {
            let cfg = c2.clone();
            let ctx = c_exec.clone();
            async move {
                if let Some(stream) = req.stream.clone() {
                    return exec_stream::exec(&ctx, req, stream)
                        .await
                        .map_err(BerthError::from);
                }
                tokio::task::spawn_blocking(move || exec(&cfg, &req))
                    .await
                    .map_err(|e| BerthError::internal(format!("exec task: {e}")))?
                    .map_err(BerthError::from)
            }
        })
        .verb::<berth_proto::isolator::verbs::Volumes, _, _>(move |_: VolumesRequest| {
            let cfg = c3.clone();
            async move {
                tokio::task::spawn_blocking(move || volumes::list(&cfg))
                    .await
                    .map_err(|e| BerthError::internal(e.to_string()))?
                    .map_err(BerthError::from)
            }
        })
        .verb::<berth_proto::isolator::verbs::VolumeRemove, _, _>(
            move |req: VolumeRemoveRequest| {
                let cfg = c4.clone();
                async move {
                    tokio::task::spawn_blocking(move || volumes::remove(&cfg, &req))
                        .await
                        .map_err(|e| BerthError::internal(e.to_string()))?
                        .map_err(BerthError::from)
                }
            },
        );
    network::start(&iso, &ctx).await;
    let router = network::routes(router, &iso);
    serve(&ctx, Service::Isolator, router).await?;
    Ok(())
}

/// Whether process `pid` exists.
pub fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn read_pid(p: &Path) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Whether the container's shim is still there (its run dir has a live `shim.pid` and no
/// `exit.json`).
pub fn is_live(run_dir: &Path) -> bool {
    !run_dir.join(EXIT_FILE).exists() && read_pid(&run_dir.join(SHIM_PID_FILE)).is_some_and(alive)
}

/// What a create has made so far; undone on drop unless disarmed.
#[derive(Default)]
struct Undo {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    cgroup_id: Option<String>,
    armed: bool,
}

impl Undo {
    fn mkdir(&mut self, d: &Path) -> Result<(), IsolatorError> {
        if d.is_dir() {
            return Ok(());
        }
        if let Some(p) = d.parent() {
            if !p.is_dir() {
                self.mkdir(p)?;
            }
        }
        match std::fs::create_dir(d) {
            Ok(()) => self.dirs.push(d.to_path_buf()),
            // A concurrent create made it first: it is not this create's to undo.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(io("mkdir", d)(e)),
        }
        Ok(())
    }

    fn write(&mut self, p: &Path, data: &[u8]) -> Result<(), IsolatorError> {
        std::fs::write(p, data).map_err(io("write", p))?;
        self.files.push(p.to_path_buf());
        Ok(())
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(id) = &self.cgroup_id {
            if let Ok(cg) =
                berth_cgroups::Layout::detect().and_then(|l| berth_cgroups::Cgroup::at(&l, id))
            {
                let _ = cg.remove(Duration::from_secs(5));
            }
        }
        for f in self.files.iter().rev() {
            let _ = std::fs::remove_file(f);
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Create a container (blocking): validate, write the bundle, start the shim, wait for its
/// report. On any failure nothing created here stays.
pub fn create(iso: &Isolator, req: &CreateRequest) -> Result<CreateReply, IsolatorError> {
    let cfg = &iso.cfg;
    let spec = &req.spec;
    validate::spec(spec)?;
    validate::rootfs(&req.rootfs)?;
    let devices = validate::devices(spec)?;
    // The mount points the init needs come from the init layer, not the upper dir.
    let rootfs = match spec.userns_remap {
        None => {
            let layer = init_layer::dir(cfg);
            init_layer::ensure(&layer)?;
            std::borrow::Cow::Owned(init_layer::over(&req.rootfs, &layer))
        }
        Some(_) => std::borrow::Cow::Borrowed(&req.rootfs),
    };
    let id = &spec.id;
    let bundle = cfg.container_dir(id);
    let run_dir = cfg.container_run_dir(id);
    if run_dir.exists() {
        if is_live(&run_dir) {
            return Err(IsolatorError::Conflict(id.clone()));
        }
        // A previous run of this container ended: its run files are stale.
        std::fs::remove_dir_all(&run_dir).map_err(io("remove stale run dir", &run_dir))?;
    }
    if let NetworkMode::Container(other) = &spec.network {
        if !is_live(&cfg.container_run_dir(other)) {
            return Err(IsolatorError::invalid(
                "network",
                format!("container {other} is not running"),
            ));
        }
    }
    let mut undo = Undo::default();
    undo.armed = true;
    undo.mkdir(&bundle)?;
    undo.mkdir(&run_dir)?;
    let hostname = berth_policy::process::hostname(spec);
    let volumes_dir = cfg.volumes_dir();
    for m in &spec.mounts {
        if m.kind == MountKind::Volume {
            let d = berth_policy::rootfs::volume_dir(&volumes_dir, &m.source);
            if !d.exists() {
                undo.mkdir(&d)?;
            }
        }
    }
    // The files the init mounts come first. The shim is sent the spec and root filesystem
    // along with the container: the bundle's copies (for `exec` and other tools), and the
    // OCI `config.json`, are written while it starts the container, before this returns.
    for (f, text) in [
        (HOSTNAME_FILE, format!("{hostname}\n")),
        (HOSTS_FILE, bundle::hosts(spec, &hostname)),
        (RESOLV_FILE, bundle::resolv_conf(spec)),
    ] {
        undo.write(&bundle.join(f), text.as_bytes())?;
    }
    let (spec_path, rootfs_path) = (bundle.join(SPEC_FILE), bundle.join(ROOTFS_FILE));
    let cfg_path = bundle.join(CONFIG_FILE);
    undo.files
        .extend([spec_path.clone(), rootfs_path.clone(), cfg_path.clone()]);
    undo.mkdir(&bundle.join(ROOTFS_DIR))?;
    let fifo = run_dir.join(START_FIFO);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| io("mkfifo", &fifo)(e.into()))?;
    undo.files.push(fifo);
    // Run files the shim writes; removed with the run dir on failure.
    for f in [SHIM_PID_FILE, INIT_PID_FILE, EXIT_FILE] {
        undo.files.push(run_dir.join(f));
    }
    undo.files.push(bundle.join(SHIM_LOG_FILE));
    undo.files.push(bundle.join(LOG_FILE));
    undo.cgroup_id = Some(id.clone());

    let (launched, saved) = std::thread::scope(|s| {
        let saved = s.spawn(|| {
            std::fs::write(&spec_path, json(spec)).map_err(io("write", &spec_path))?;
            std::fs::write(&rootfs_path, json(&*rootfs)).map_err(io("write", &rootfs_path))?;
            let oci = bundle::oci_config(spec, &devices, &hostname, &bundle, &volumes_dir)?;
            oci.save(&cfg_path)
                .map_err(|e| IsolatorError::Oci(format!("{}: {e}", cfg_path.display())))
        });
        let launched = shim::launch(
            &iso.standby,
            &shim::Launch {
                id,
                bundle: &bundle,
                run_dir: &run_dir,
                volumes: &volumes_dir,
                log: &bundle.join(SHIM_LOG_FILE),
                timeout: CREATE_TIMEOUT,
                spec,
                rootfs: &rootfs,
                devices: &devices,
            },
        );
        let saved = saved
            .join()
            .unwrap_or_else(|_| Err(IsolatorError::Oci("writing config.json panicked".into())));
        (launched, saved)
    });
    let (shim_pid, init_pid) = match launched {
        Ok(p) => {
            if let Some(d) = iso.create_delay {
                std::thread::sleep(d);
            }
            p
        }
        Err(e) => {
            if let IsolatorError::Timeout(_) = e {
                if let Some(pid) = read_pid(&run_dir.join(SHIM_PID_FILE)) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            return Err(e);
        }
    };
    if let Err(e) = saved.and_then(|_| network::attach(iso, spec, &hostname, init_pid, &bundle)) {
        // End the container before its files go: the shim records the exit and goes.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(init_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while alive(shim_pid as i32) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        return Err(e);
    }
    undo.armed = false;
    if req.release {
        // Nothing of the container is left to undo: a failed release leaves it created.
        if let Err(e) = berth_proto::isolator::release_start(&run_dir) {
            tracing::warn!(%e, id, "the container could not be released");
        }
    }
    tracing::info!(id, shim_pid, init_pid, "container created");
    Ok(CreateReply {
        id: id.clone(),
        shim_pid,
        init_pid,
    })
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec_pretty(v).expect("plain data serializes")
}

/// Run a process in a running container and collect its output (blocking).
/// The checks every `exec` starts with; the container's bundle and run directory.
pub fn exec_target(
    cfg: &NodeConfig,
    req: &ExecRequest,
) -> Result<(PathBuf, PathBuf), IsolatorError> {
    validate::id(&req.id)?;
    if req.args.is_empty() {
        return Err(IsolatorError::invalid("args", "no command given"));
    }
    if let Some(u) = req.user.as_deref().filter(|u| !u.trim().is_empty()) {
        validate::user("user", u)?;
    }
    let bundle = cfg.container_dir(&req.id);
    let run_dir = cfg.container_run_dir(&req.id);
    if !bundle.join(SPEC_FILE).exists() {
        return Err(IsolatorError::NotFound(format!("no container {}", req.id)));
    }
    if !is_live(&run_dir) {
        return Err(IsolatorError::Precondition(format!(
            "container {} is not running",
            req.id
        )));
    }
    Ok((bundle, run_dir))
}

pub fn exec(cfg: &NodeConfig, req: &ExecRequest) -> Result<ExecReply, IsolatorError> {
    let (bundle, run_dir) = exec_target(cfg, req)?;
    let body = serde_json::to_string(req).expect("plain data serializes");
    let out = shim::exec(
        &req.id,
        &bundle,
        &run_dir,
        &body,
        req.timeout_ms.map(Duration::from_millis),
    )?;
    if let Some(failure) = out.error {
        return Err(IsolatorError::Exec {
            id: req.id.clone(),
            failure,
        });
    }
    Ok(ExecReply {
        exit_code: out.code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        streamed_bytes: 0,
    })
}

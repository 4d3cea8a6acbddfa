//! Starting `berth-shim`: `run` detached (own session; the shim forks once more so it is
//! reparented away from the isolator), reporting on fd 3; `exec` as a child whose output is
//! collected.

use crate::error::{io, IsolatorError};
use berth_proto::isolator::{ContainerSpec, Inline, RootfsMount, RunArgs, ShimFailure, ShimReport};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::unistd::pipe2;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The shim binary: `BERTH_SHIM_BIN`, else `berth-shim` beside the running executable (or
/// one directory up, where cargo puts binaries next to test executables), else `PATH`.
pub fn shim_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BERTH_SHIM_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let mut dir = exe.parent();
        for _ in 0..2 {
            let Some(d) = dir else { break };
            let c = d.join("berth-shim");
            if c.is_file() {
                return c;
            }
            dir = d.parent();
        }
    }
    PathBuf::from("berth-shim")
}

/// Put `fd` on fd 3 of the child, without close-on-exec.
fn pass_as_fd3(cmd: &mut Command, fd: &OwnedFd) {
    let raw = fd.as_raw_fd();
    // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if raw == 3 {
                if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

pub struct Launch<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub run_dir: &'a Path,
    pub volumes: &'a Path,
    pub log: &'a Path,
    pub timeout: Duration,
    /// The container, sent to the shim along with where it lives.
    pub spec: &'a ContainerSpec,
    pub rootfs: &'a RootfsMount,
    /// `spec.devices`, resolved on this host.
    pub devices: &'a [berth_proto::isolator::Device],
}

/// A shim waiting for its container (see the shim's `standby.rs`): its first process has
/// been reaped; the shim itself waits on the other end of `sock`.
struct Standby {
    sock: OwnedFd,
    pid: u32,
}

/// How many shims wait ready at most: a burst of four creates (a `compose up`, a script
/// starting containers four at a time) finds each one waiting. A waiting shim and its pre-init
/// cost about 0.4 MiB of memory of their own (proportional set size), and a network namespace.
pub const STANDBY_SHIMS: usize = 4;

/// Start a shim that waits for its container. Blocking (a few milliseconds).
fn spawn_standby() -> Result<Standby, IsolatorError> {
    let bin = shim_bin();
    let (mine, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| io("socketpair", "")(e.into()))?;
    // No `pre_exec`: std then starts the shim with posix_spawn (a vfork), which costs the
    // same however large the isolator's address space is. The socket goes as stdin (the shim
    // moves it to fd 3); the shim's own process group keeps the isolator's signals away until
    // it makes its own session. Its stderr is the isolator's until it has a container.
    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .process_group(0);
    let spawned = cmd.spawn();
    drop(cmd);
    let mut child = spawned.map_err(|source| IsolatorError::ShimSpawn {
        path: bin.clone(),
        source,
    })?;
    // The first process forks the shim and exits at once; the shim says its pid once it has
    // prepared.
    let _ = child.wait();
    let hello = read_report(&mine, Duration::from_secs(10))?;
    let pid = hello
        .trim_end()
        .strip_prefix('S')
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| {
            shim_failed(format!(
                "the standby shim {} said {hello:?} instead of its pid",
                bin.display()
            ))
        })?;
    Ok(Standby { sock: mine, pid })
}

/// The shims waiting for a container, at most [`STANDBY_SHIMS`]; one pool per isolator
/// ([`crate::Isolator`]). Dropping a waiting shim's socket dismisses it.
#[derive(Default)]
pub struct StandbyPool {
    waiting: Mutex<Vec<Standby>>,
    /// Whether a thread is topping the pool up.
    refilling: AtomicBool,
}

impl StandbyPool {
    /// The pids of the shims waiting for a container.
    pub fn pids(&self) -> Vec<u32> {
        self.waiting.lock().unwrap().iter().map(|s| s.pid).collect()
    }

    /// Top the standby shims up, in the background.
    pub fn refill(self: &Arc<Self>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        std::thread::spawn(move || {
            // At the lowest priority (this thread, and the shims it starts, until they get
            // their container and take the isolator's): a shim starting in the background
            // must not slow the container that was just started, whose exit is being waited
            // for. Only when the shim may raise it again (CAP_SYS_NICE).
            if caps::has_cap(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_NICE,
            )
            .unwrap_or(false)
            {
                // SAFETY: setpriority of this thread; no memory is passed.
                let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
            }
            loop {
                if pool.waiting.lock().unwrap().len() >= STANDBY_SHIMS {
                    break;
                }
                match spawn_standby() {
                    Ok(s) => pool.waiting.lock().unwrap().push(s),
                    Err(e) => {
                        tracing::warn!(%e, "no standby shim");
                        break;
                    }
                }
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }

    /// Dismiss the waiting shims (they exit, removing what they prepared).
    pub fn dismiss(&self) {
        self.waiting.lock().unwrap().clear();
    }

    /// A waiting shim, if there is one.
    fn take(&self) -> Option<Standby> {
        self.waiting.lock().unwrap().pop()
    }
}

/// Start the shim for a container (a waiting one of `pool` if there is one) and wait for its
/// report. Blocking.
pub fn launch(pool: &Arc<StandbyPool>, l: &Launch) -> Result<(u32, u32), IsolatorError> {
    let args = RunArgs {
        id: l.id.to_string(),
        bundle: l.bundle.to_path_buf(),
        run_dir: l.run_dir.to_path_buf(),
        volumes: l.volumes.to_path_buf(),
        log: l.log.to_path_buf(),
        // SAFETY: getpriority of this process; no memory is passed.
        nice: unsafe { libc::getpriority(libc::PRIO_PROCESS, std::process::id()) },
        container: Some(Inline {
            spec: l.spec.clone(),
            rootfs: l.rootfs.clone(),
            devices: l.devices.to_vec(),
        }),
    };
    let mut line = serde_json::to_vec(&args).expect("run arguments serialize");
    line.push(b'\n');
    // A waiting shim if there is one (one that died meanwhile refuses the write), else a
    // new one.
    let waiting = pool.take();
    // A waiting shim runs at the lowest priority (`refill`) until it has its container.
    let shim = match waiting.filter(|s| {
        // SAFETY: setpriority of the waiting shim; no memory is passed.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, s.pid, args.nice) };
        send(&s.sock, &line).is_ok()
    }) {
        Some(s) => s,
        None => {
            let s = spawn_standby()?;
            send(&s.sock, &line).map_err(|e| io("send the container to the shim", "")(e.into()))?;
            s
        }
    };
    let msg = read_report(&shim.sock, l.timeout);
    // Replace the shim once this container is up, so that starting the next one does not
    // compete with starting this one.
    pool.refill();
    let msg = msg?;
    if msg.trim().is_empty() {
        return Err(shim_failed(format!(
            "the shim exited without a report (see {})",
            l.log.display()
        )));
    }
    match ShimReport::decode(&msg) {
        Ok(ShimReport::Started { shim_pid, init_pid }) => Ok((shim_pid, init_pid)),
        Ok(ShimReport::Failed(f)) => Err(IsolatorError::Shim(f)),
        Err(unexpected) => Err(shim_failed(unexpected)),
    }
}

/// The shim failed in a way it did not report itself.
fn shim_failed(message: String) -> IsolatorError {
    IsolatorError::Shim(ShimFailure {
        message,
        code: berth_proto::ErrorCode::Unavailable,
        reason: None,
    })
}

/// Write all of `buf`; MSG_NOSIGNAL: a dead shim is an error, not a SIGPIPE.
fn send(sock: &OwnedFd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::sys::socket::send(sock.as_raw_fd(), buf, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_report(r: &OwnedFd, timeout: Duration) -> Result<String, IsolatorError> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(IsolatorError::Timeout(timeout));
        }
        let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
        let ms = left.as_millis().min(u16::MAX as u128) as u16;
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io("poll", "")(e.into())),
        }
        match nix::unistd::read(r.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.contains(&b'\n') {
                    break;
                }
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(io("read the shim's report", "")(e.into())),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

pub struct ExecOutput {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// A setup error reported by the helper.
    pub error: Option<ShimFailure>,
}

/// Run `berth-shim exec` and collect its output. Blocking.
/// The `berth-shim exec` command for a request (setup errors come back on `status_w`, passed
/// as fd 3); stdio is the caller's to set.
pub fn exec_command(
    id: &str,
    bundle: &Path,
    run_dir: &Path,
    request_json: &str,
    status_w: &OwnedFd,
) -> Command {
    let mut cmd = Command::new(shim_bin());
    cmd.arg("exec")
        .arg("--id")
        .arg(id)
        .arg("--bundle")
        .arg(bundle)
        .arg("--run-dir")
        .arg(run_dir)
        .arg("--request")
        .arg(request_json);
    pass_as_fd3(&mut cmd, status_w);
    cmd
}

/// Stop an `exec` at its timeout: on SIGTERM the shim's exec helper kills the process's
/// whole group, then exits with its status.
pub fn stop_exec(helper_pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// Docker's convention: the exit code, or 128 + the signal that ended the process.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// What the shim wrote on its status pipe (the read end; the writer has exited).
pub fn read_status(r: &OwnedFd) -> Option<ShimFailure> {
    let mut err = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = nix::unistd::read(r.as_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        err.extend_from_slice(&buf[..n]);
    }
    (!err.is_empty()).then(|| ShimFailure::decode(&String::from_utf8_lossy(&err)))
}

pub fn exec(
    id: &str,
    bundle: &Path,
    run_dir: &Path,
    request_json: &str,
    timeout: Option<Duration>,
) -> Result<ExecOutput, IsolatorError> {
    let bin = shim_bin();
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io("pipe", "")(e.into()))?;
    let mut cmd = exec_command(id, bundle, run_dir, request_json, &w);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|source| IsolatorError::ShimSpawn {
        path: bin.clone(),
        source,
    })?;
    drop(w);
    // On the deadline the shim is asked to stop (SIGTERM: it kills the command and reports).
    let ran = berth_files::wait_collect(child, timeout, stop_exec, None)
        .map_err(io("wait for", bin.clone()))?;
    let error = read_status(&r);
    let mut stderr = ran.stderr;
    if ran.timed_out {
        stderr.extend_from_slice(
            format!(
                "berth: the command ran longer than {:?} and was killed\n",
                timeout.unwrap_or_default()
            )
            .as_bytes(),
        );
    }
    Ok(ExecOutput {
        code: exit_code(ran.status),
        stdout: ran.stdout,
        stderr,
        error,
    })
}

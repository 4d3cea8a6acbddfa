//! Starting `berth-shim`: `run` detached (own session; the shim forks once more so it is
//! reparented away from the isolator), reporting on fd 3; `exec` as a child whose output is
//! collected.

use crate::error::{io, IsolatorError};
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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
}

/// Start the shim for a container and wait for its report. Blocking.
pub fn launch(l: &Launch) -> Result<(u32, u32), IsolatorError> {
    let bin = shim_bin();
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io("pipe", "")(e.into()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(l.log)
        .map_err(io("open", l.log))?;
    let log2 = log.try_clone().map_err(io("open", l.log))?;
    // No `pre_exec`: std then starts the shim with posix_spawn (a vfork), which costs the
    // same however large the isolator's address space is. The report pipe goes as stdin (the
    // shim moves it to fd 3), the shim's own process group keeps the isolator's signals away
    // until the shim makes its own session.
    let mut cmd = Command::new(&bin);
    cmd.arg("run")
        .arg("--id")
        .arg(l.id)
        .arg("--bundle")
        .arg(l.bundle)
        .arg("--run-dir")
        .arg(l.run_dir)
        .arg("--volumes")
        .arg(l.volumes)
        .stdin(Stdio::from(w))
        .stdout(log)
        .stderr(log2)
        .process_group(0);
    let spawned = cmd.spawn();
    // The command holds the pipe's write end: drop it so the report reads end of file if the
    // shim dies without one.
    drop(cmd);
    let mut child = spawned.map_err(|source| IsolatorError::ShimSpawn {
        path: bin.clone(),
        source,
    })?;
    // The first process forks the shim and exits at once.
    let _ = child.wait();
    let msg = read_report(&r, l.timeout)?;
    let msg = msg.trim_end();
    if let Some(rest) = msg.strip_prefix("OK ") {
        let mut it = rest.split_whitespace().map(|n| n.parse::<u32>());
        if let (Some(Ok(shim)), Some(Ok(init))) = (it.next(), it.next()) {
            return Ok((shim, init));
        }
    }
    if let Some(rest) = msg.strip_prefix("ERR ") {
        return Err(IsolatorError::Shim(rest.to_string()));
    }
    if msg.is_empty() {
        return Err(IsolatorError::Shim(format!(
            "the shim exited without a report (see {})",
            l.log.display()
        )));
    }
    Err(IsolatorError::Shim(format!("unexpected report {msg:?}")))
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
    pub error: Option<String>,
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
pub fn read_status(r: &OwnedFd) -> Option<String> {
    let mut err = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = nix::unistd::read(r.as_fd(), &mut buf) {
        if n == 0 {
            break;
        }
        err.extend_from_slice(&buf[..n]);
    }
    (!err.is_empty()).then(|| String::from_utf8_lossy(&err).into_owned())
}

pub fn exec(
    id: &str,
    bundle: &Path,
    run_dir: &Path,
    request_json: &str,
    timeout: Option<Duration>,
) -> Result<ExecOutput, IsolatorError> {
    use std::io::Read;
    let bin = shim_bin();
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io("pipe", "")(e.into()))?;
    let mut cmd = exec_command(id, bundle, run_dir, request_json, &w);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| IsolatorError::ShimSpawn {
        path: bin.clone(),
        source,
    })?;
    drop(w);
    let pid = child.id();
    let reader = |p: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut p) = p {
                let _ = p.read_to_end(&mut v);
            }
            v
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = match timeout.map(|t| rx.recv_timeout(t)) {
        Some(Ok(s)) => s,
        waited => {
            if waited.is_some() {
                timed_out = true;
                stop_exec(pid);
            }
            rx.recv().map_err(|_| {
                io("wait for", bin.clone())(std::io::Error::other("the waiter went away"))
            })?
        }
    }
    .map_err(io("wait for", bin.clone()))?;
    let error = read_status(&r);
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(
            format!(
                "berth: the command ran longer than {:?} and was killed\n",
                timeout.unwrap_or_default()
            )
            .as_bytes(),
        );
    }
    Ok(ExecOutput {
        code: exit_code(status),
        stdout,
        stderr,
        error,
    })
}

//! `berth-shim exec`: run another process in a running container: join its cgroup and
//! namespaces (`setns`), fork into its pid namespace, and set the process up exactly as the
//! init was (user, capabilities, no_new_privs, seccomp). Setup errors go to the status fd
//! (as a [`berth_proto::isolator::ShimFailure`]);
//! the helper exits with the process's status.

use crate::error::{ShimError, Step};
use crate::files::read_json;
use crate::process::{self, ProcessSpec};
use berth_cgroups::{Cgroup, Layout};
use berth_proto::isolator::{ContainerSpec, ExecRequest, INIT_PID_FILE, SPEC_FILE};
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, write, ForkResult, Pid};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::path::PathBuf;

/// Where setup errors are written (closed on exec).
pub const STATUS_FD: i32 = 3;

pub struct ExecArgs {
    pub id: String,
    pub bundle: PathBuf,
    pub run_dir: PathBuf,
    pub request: ExecRequest,
}

pub fn run(a: ExecArgs) -> i32 {
    // SAFETY: STATUS_FD was set up by the isolator for us alone.
    let status = unsafe { OwnedFd::from_raw_fd(STATUS_FD) };
    match enter(&a) {
        Ok(code) => code,
        Err(e) => {
            let _ = write(&status, e.failure().encode().as_bytes());
            125
        }
    }
}

fn enter(a: &ExecArgs) -> Result<i32, ShimError> {
    process::non_dumpable()?;
    let spec: ContainerSpec = read_json(&a.bundle.join(SPEC_FILE))?;
    let pid_s = std::fs::read_to_string(a.run_dir.join(INIT_PID_FILE))
        .map_err(|e| ShimError::invalid("exec", format!("container {} has no init: {e}", a.id)))?;
    let pid: i32 = pid_s
        .trim()
        .parse()
        .map_err(|_| ShimError::invalid("exec", format!("bad init.pid {pid_s:?}")))?;
    let cg = Cgroup::at(&Layout::detect()?, &a.id)?;
    // The pid must still be this container's init (not a reused pid).
    let procs = cg
        .procs()
        .map_err(|_| ShimError::invalid("exec", format!("container {} is not running", a.id)))?;
    if !procs.contains(&pid) {
        return Err(ShimError::invalid(
            "exec",
            format!("container {} is not running", a.id),
        ));
    }
    // Namespaces first (the fds), then the cgroup, then setns: mnt last so the /proc paths
    // above are the host's.
    let mut fds = Vec::new();
    for (ns, flag) in [
        ("cgroup", CloneFlags::CLONE_NEWCGROUP),
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let p = format!("/proc/{pid}/ns/{ns}");
        let fd = open(
            p.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .step(|| format!("open {p}"))?;
        fds.push((ns, flag, fd));
    }
    // The user namespace last: once in it, the others (owned by the host's) are out of reach.
    if spec.userns_remap.is_some() {
        let p = format!("/proc/{pid}/ns/user");
        let fd = open(
            p.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .step(|| format!("open {p}"))?;
        fds.push(("user", CloneFlags::CLONE_NEWUSER, fd));
    }
    cg.add(std::process::id() as i32)?;
    for (ns, flag, fd) in &fds {
        setns(fd.as_fd(), *flag).step(|| format!("join the {ns} namespace"))?;
    }
    drop(fds);
    let host = berth_policy::process::hostname(&spec);
    let mut env = spec.env.clone();
    for e in &a.request.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    // A terminal of the container's own (its devpts: the mount namespace is joined).
    let tty = match &a.request.stream {
        Some(s) if s.tty => Some(open_pty(s.rows, s.cols)?),
        _ => None,
    };
    // SAFETY: the helper is single-threaded.
    match unsafe { fork() }.step(|| "fork into the pid namespace".into())? {
        ForkResult::Child => {
            let r = match &tty {
                Some((_, slave)) => on_terminal(slave),
                // A process group of its own: the helper can stop all it started at once.
                None => nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))
                    .step(|| "setpgid".into()),
            };
            let r = r
                .and_then(|()| {
                    process::prepare(
                        &spec,
                        &ProcessSpec {
                            args: &a.request.args,
                            env,
                            user: a.request.user.as_deref().or(spec.user.as_deref()),
                            working_dir: a
                                .request
                                .working_dir
                                .as_deref()
                                .or(spec.working_dir.as_deref()),
                            hostname: &host,
                        },
                    )
                })
                .and_then(|p| {
                    process::cloexec_from_3()?;
                    process::finish(&p)?;
                    Ok(p)
                });
            match r {
                Ok(p) => process::exec(&p),
                Err(e) => {
                    let m = e.failure().encode();
                    // SAFETY: report and leave the forked child.
                    unsafe {
                        libc::write(STATUS_FD, m.as_ptr().cast(), m.len());
                        libc::_exit(125)
                    }
                }
            }
        }
        ForkResult::Parent { child } if tty.is_some() => {
            stop_group_on_sigterm(child);
            let (master, slave) = tty.expect("checked");
            drop(slave);
            let input = a.request.stream.as_ref().is_some_and(|s| s.stdin);
            relay(master, child, input)
        }
        ForkResult::Parent { child } => {
            stop_group_on_sigterm(child);
            wait_exit(child)
        }
    }
}

static GROUP: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn kill_group(_: libc::c_int) {
    let g = GROUP.load(std::sync::atomic::Ordering::Relaxed);
    if g > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(-g, libc::SIGKILL) };
    }
}

/// SIGTERM to this helper (the isolator's exec timeout) kills the process and everything it
/// started in its group; the helper then reports the exit as usual.
fn stop_group_on_sigterm(child: Pid) {
    GROUP.store(child.as_raw(), std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the handler only calls kill(2).
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::SigHandler::Handler(kill_group),
        );
    }
}

/// Wait for the process to end: its exit code, or 128 + the signal that killed it.
fn wait_exit(child: Pid) -> Result<i32, ShimError> {
    loop {
        match waitpid(child, None) {
            Ok(st) => {
                if let Some(c) = ended(st) {
                    return Ok(c);
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).step(|| "wait for the process".into()),
        }
    }
}

/// The exit code of a process that ended (128 + the signal that killed it).
fn ended(st: WaitStatus) -> Option<i32> {
    match st {
        WaitStatus::Exited(_, c) => Some(c),
        WaitStatus::Signaled(_, s, _) => Some(128 + s as i32),
        _ => None,
    }
}

/// A new terminal: its master and slave (both close-on-exec), sized `rows` x `cols`.
fn open_pty(rows: Option<u16>, cols: Option<u16>) -> Result<(OwnedFd, OwnedFd), ShimError> {
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .step(|| "open /dev/ptmx".into())?;
    nix::pty::grantpt(&master).step(|| "grantpt".into())?;
    nix::pty::unlockpt(&master).step(|| "unlockpt".into())?;
    let name = nix::pty::ptsname_r(&master).step(|| "ptsname".into())?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .step(|| format!("open {name}"))?;
    let ws = libc::winsize {
        ws_row: rows.unwrap_or(24),
        ws_col: cols.unwrap_or(80),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a pointer to a local winsize.
    unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    // SAFETY: the master fd is ours; the file takes it over.
    let master = unsafe { OwnedFd::from_raw_fd(master.into_raw_fd()) };
    Ok((master, slave))
}

/// In the forked child: a session of its own whose controlling terminal is `slave`, on
/// stdin, stdout and stderr.
fn on_terminal(slave: &OwnedFd) -> Result<(), ShimError> {
    nix::unistd::setsid().step(|| "setsid".into())?;
    // SAFETY: TIOCSCTTY on a terminal fd we own, as session leader.
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(std::io::Error::last_os_error()).step(|| "TIOCSCTTY".into());
    }
    for n in 0..3 {
        // SAFETY: dup2 onto the stdio numbers, which this process owns.
        if unsafe { libc::dup2(slave.as_raw_fd(), n) } < 0 {
            return Err(std::io::Error::last_os_error()).step(|| format!("dup2 onto fd {n}"));
        }
    }
    Ok(())
}

/// Copy this helper's stdin to the terminal and the terminal to its stdout until the process
/// ends (stdin only with `input`); returns its exit status. End of input becomes ^D (a
/// terminal cannot be closed). One thread: after joining the pid namespace, this process may not start threads.
fn relay(master: OwnedFd, child: Pid, input: bool) -> Result<i32, ShimError> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut buf = [0u8; 32 << 10];
    let stdin = std::io::stdin();
    let out = std::io::stdout();
    let mut input_open = input;
    let mut code: Option<i32> = None;
    loop {
        let mut fds = vec![PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if input_open {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
        }
        let ready = poll(&mut fds, PollTimeout::from(100u16)).unwrap_or(0);
        let from_terminal = fds[0].revents().unwrap_or(PollFlags::empty());
        let from_input = fds
            .get(1)
            .and_then(|f| f.revents())
            .unwrap_or(PollFlags::empty());
        if ready > 0 && !from_input.is_empty() {
            match nix::unistd::read(stdin.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    let _ = write(&master, &buf[..n]);
                }
                _ => {
                    let _ = write(&master, &[4u8]);
                    input_open = false;
                }
            }
        }
        if ready > 0 && !from_terminal.is_empty() {
            match nix::unistd::read(master.as_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    if write(out.as_fd(), &buf[..n]).is_err() {
                        break;
                    }
                    continue;
                }
                // EIO: every holder of the terminal is gone.
                _ => break,
            }
        }
        if ready > 0 && !from_input.is_empty() {
            continue;
        }
        if let Some(c) = code {
            // Exited, and nothing more came within a poll interval.
            return Ok(c);
        }
        if let Ok(st) = waitpid(child, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            code = ended(st);
        }
    }
    match code {
        Some(c) => Ok(c),
        None => wait_exit(child),
    }
}

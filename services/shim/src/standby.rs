//! A shim started before its container is known. The isolator keeps a few waiting, so a
//! create pays neither for starting a process nor for the slowest step of cgroup v1: moving
//! a process into a memory cgroup waits for an RCU grace period (6 to 15 ms on this kind of
//! host).
//!
//! While it waits, the shim has already
//! - detected the cgroup layout and made the pipes the container's init will use;
//! - forked a *pre-init*: a copy of itself which, on cgroup v1, moved itself into a
//!   placeholder cgroup `berth/standby-<shim pid>` (the grace period is paid here, idle),
//!   which already has the default device rules (`devices.rs`).
//!
//! When the isolator sends the container (one JSON line on the report socket), the shim
//! forwards it to the pre-init, which clones the container's init with `CLONE_PARENT` (so the
//! init is the shim's child, born inside the placeholder cgroup) and exits; meanwhile the shim
//! renames the placeholder to `berth/<id>` and writes the limits. No process migrates on the
//! way. On cgroup v2 (no rename there) the pre-init stays where the shim is, and the shim
//! moves the init into the container's cgroup as before.
//!
//! End of file on the socket (the isolator went away) dismisses a waiting shim: the pre-init
//! exits, the placeholder is removed, the shim exits. A placeholder left by a shim killed
//! while it waited is removed by the isolator's sweep (`berth_cgroups::sweep_standby`).

use crate::error::{ShimError, Step};
use crate::wire::{read_line, REPORT_FD};
use berth_cgroups::{Cgroup, Layout, Limits, STANDBY_PREFIX};
use berth_proto::isolator::RunArgs;
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, getpid, pipe2, read, write, ForkResult, Pid};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

/// The pipes between the shim and the container's init, made before the container is known.
pub struct Pipes {
    pub out_r: OwnedFd,
    pub out_w: OwnedFd,
    pub err_r: OwnedFd,
    pub err_w: OwnedFd,
    pub go_r: OwnedFd,
    pub go_w: OwnedFd,
    pub ready_r: OwnedFd,
    pub ready_w: OwnedFd,
    /// The shim's end and the init's end of the socket the terminal's master comes through
    /// (used with `tty` only).
    pub tty_shim: OwnedFd,
    pub tty_init: OwnedFd,
}

impl Pipes {
    fn new() -> Result<Pipes, ShimError> {
        let p = || pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into());
        let (out_r, out_w) = p()?;
        let (err_r, err_w) = p()?;
        let (go_r, go_w) = p()?;
        let (ready_r, ready_w) = p()?;
        let (tty_shim, tty_init) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .step(|| "socketpair for the terminal".into())?;
        Ok(Pipes {
            out_r,
            out_w,
            err_r,
            err_w,
            go_r,
            go_w,
            ready_r,
            ready_w,
            tty_shim,
            tty_init,
        })
    }
}

/// What a waiting shim has prepared.
pub struct Standby {
    pub layout: Layout,
    /// v1: the placeholder cgroup the pre-init waits in.
    pub placeholder: Option<Cgroup>,
    /// The shim's ends (out_r, err_r, go_w, ready_r, tty_shim); the init's ends are the
    /// pre-init's alone once it is forked.
    pub out_r: OwnedFd,
    pub err_r: OwnedFd,
    pub go_w: OwnedFd,
    pub ready_r: OwnedFd,
    pub tty_shim: OwnedFd,
    pub preinit: Pid,
    /// The container goes to the pre-init on this pipe ...
    cmd_w: Option<OwnedFd>,
    /// ... and the init's pid (`P<pid>`) or an error (`E<message>`) comes back on this one.
    pid_r: OwnedFd,
}

/// The pre-init's own setup: what it needs to clone the init.
pub struct PreInit<'a> {
    pub pipes: &'a Pipes,
    /// v1: the placeholder cgroup to join.
    pub placeholder: Option<&'a Cgroup>,
    pub cmd_r: &'a OwnedFd,
    pub pid_w: &'a OwnedFd,
    /// Every fd of the shim's side, closed in the init at once.
    pub shim_fds: [RawFd; 8],
}

/// Prepare everything that does not depend on the container, forking the pre-init, which
/// runs `preinit` with its setup and never returns.
pub fn prepare(preinit: fn(&PreInit) -> i32) -> Result<Standby, ShimError> {
    let layout = Layout::detect().map_err(|e| ShimError::invalid("cgroups", e.to_string()))?;
    let placeholder = if layout.is_v2() {
        None
    } else {
        let name = format!("{STANDBY_PREFIX}{}", getpid().as_raw());
        let cg = Cgroup::create(&layout, &name, &Limits::default())
            .map_err(|e| ShimError::invalid("standby cgroup", e.to_string()))?;
        // The default device rules, before the pre-init joins: the container's init is born
        // under them and they never change while it runs (its own devices are added).
        if let Err(e) = cg.set_devices(&berth_policy::devices::default_rules()) {
            let _ = cg.remove(std::time::Duration::from_secs(1));
            return Err(ShimError::invalid("standby cgroup", e.to_string()));
        }
        Some(cg)
    };
    let pipes = Pipes::new()?;
    let (cmd_r, cmd_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    let (pid_r, pid_w) = pipe2(nix::fcntl::OFlag::O_CLOEXEC).step(|| "pipe".into())?;
    let shim_fds = [
        pipes.out_r.as_raw_fd(),
        pipes.err_r.as_raw_fd(),
        pipes.go_w.as_raw_fd(),
        pipes.ready_r.as_raw_fd(),
        pipes.tty_shim.as_raw_fd(),
        REPORT_FD,
        cmd_w.as_raw_fd(),
        pid_r.as_raw_fd(),
    ];
    // SAFETY: the shim is single-threaded; the child only runs `preinit` and exits.
    match unsafe { fork() }.step(|| "fork the pre-init".into()) {
        Err(e) => {
            if let Some(cg) = &placeholder {
                let _ = cg.remove(std::time::Duration::from_secs(1));
            }
            Err(e)
        }
        Ok(ForkResult::Child) => {
            let code = preinit(&PreInit {
                pipes: &pipes,
                placeholder: placeholder.as_ref(),
                cmd_r: &cmd_r,
                pid_w: &pid_w,
                shim_fds,
            });
            // SAFETY: leaving the forked pre-init without running the shim's exit handlers.
            unsafe { libc::_exit(code) }
        }
        Ok(ForkResult::Parent { child }) => {
            // The init's ends belong to the pre-init (and the init) now: dropping them here
            // lets the shim see end of file once the init's side is gone.
            let Pipes {
                out_r,
                err_r,
                go_w,
                ready_r,
                tty_shim,
                ..
            } = pipes;
            drop((cmd_r, pid_w));
            Ok(Standby {
                layout,
                placeholder,
                out_r,
                err_r,
                go_w,
                ready_r,
                tty_shim,
                preinit: child,
                cmd_w: Some(cmd_w),
                pid_r,
            })
        }
    }
}

/// In the pre-init: join the placeholder cgroup, run `ready` (what else can be made before
/// the container is known) and say so (`J`, or `E<message>`), then wait for the container
/// (`None`: dismissed).
pub fn preinit_wait<T>(
    pre: &PreInit,
    ready: impl FnOnce() -> Result<T, String>,
) -> Option<(RunArgs, T)> {
    for fd in pre.shim_fds {
        // SAFETY: the shim's fds; this copy of the fd table does not use them.
        unsafe { libc::close(fd) };
    }
    let joined = match pre.placeholder {
        Some(cg) => cg.add(getpid().as_raw()).map_err(|e| e.to_string()),
        None => Ok(()),
    }
    .and_then(|_| ready());
    let msg = match &joined {
        Ok(_) => "J\n".to_string(),
        Err(e) => format!("E{e}\n"),
    };
    let _ = write(pre.pid_w, msg.as_bytes());
    let line = read_line(pre.cmd_r)?;
    let made = joined.ok()?;
    match serde_json::from_slice::<RunArgs>(&line) {
        Ok(a) => Some((a, made)),
        Err(e) => {
            preinit_report(pre, Err(format!("the container: {e}")));
            None
        }
    }
}

/// In the pre-init: tell the shim the init's pid, or why there is none.
pub fn preinit_report(pre: &PreInit, r: Result<Pid, String>) {
    let msg = match r {
        Ok(p) => format!("P{}\n", p.as_raw()),
        Err(e) => format!("E{e}\n"),
    };
    let _ = write(pre.pid_w, msg.as_bytes());
}

/// Read one short line a byte at a time, leaving what follows it in the pipe (`None` at end
/// of file before a newline).
fn read_short_line(fd: &OwnedFd) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut b = [0u8; 1];
    loop {
        match read(fd.as_fd(), &mut b) {
            Ok(0) => return None,
            Ok(_) if b[0] == b'\n' => return Some(out),
            Ok(_) => out.push(b[0]),
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return None,
        }
    }
}

impl Standby {
    /// Hand the container to the pre-init, which starts cloning the init at once.
    pub fn release(&mut self, args: &RunArgs) -> Result<(), ShimError> {
        let mut line = serde_json::to_vec(args).expect("run arguments serialize");
        line.push(b'\n');
        // It waited at the lowest priority; the init inherits the container's.
        if let Err(e) = crate::process::set_nice(self.preinit.as_raw() as u32, args.nice) {
            eprintln!("berth-shim: setpriority {} of the pre-init: {e}", args.nice);
        }
        let w = self.cmd_w.take().expect("released once");
        write(&w, &line).step(|| "hand the container to the pre-init".into())?;
        Ok(())
    }

    /// Wait until the pre-init is in the placeholder cgroup (it must be before the placeholder
    /// is renamed).
    pub fn joined(&self) -> Result<(), ShimError> {
        match read_short_line(&self.pid_r).as_deref() {
            Some(b"J") => Ok(()),
            Some(l) if l.first() == Some(&b'E') => Err(ShimError::invalid(
                "standby cgroup",
                String::from_utf8_lossy(&l[1..]).into_owned(),
            )),
            _ => Err(ShimError::invalid(
                "pre-init",
                "it exited before it joined its cgroup",
            )),
        }
    }

    /// The init's pid from the pre-init, which is reaped.
    pub fn init_pid(&self) -> Result<Pid, ShimError> {
        let line = read_short_line(&self.pid_r);
        let _ = waitpid(self.preinit, None);
        let line = line.ok_or_else(|| {
            ShimError::invalid("container init", "the pre-init exited without a report")
        })?;
        let text = String::from_utf8_lossy(&line);
        match text.split_at_checked(1) {
            Some(("P", n)) => n
                .parse::<i32>()
                .map(Pid::from_raw)
                .map_err(|_| ShimError::invalid("pre-init", format!("bad report {text:?}"))),
            Some(("E", e)) => Err(ShimError::invalid("container init", e.to_string())),
            _ => Err(ShimError::invalid(
                "pre-init",
                format!("bad report {text:?}"),
            )),
        }
    }

    /// Dismissed before any container: end the pre-init, remove the placeholder.
    pub fn dismiss(mut self) {
        drop(self.cmd_w.take());
        let _ = waitpid(self.preinit, None);
        if let Some(cg) = &self.placeholder {
            let _ = cg.remove(std::time::Duration::from_secs(5));
        }
    }
}

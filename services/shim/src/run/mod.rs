//! `berth-shim run`: the life of one container. The shim waits as a standby (see
//! `standby.rs`) until the isolator sends the container, has its pre-init clone the
//! container's init into new namespaces inside the cgroup, reports to the isolator once the
//! init is set up and blocked on the start FIFO, then copies the init's output into the log,
//! waits for it to end, records the exit status and removes the cgroup.
//!
//! Here: the shim's flow from standby to exit. `preinit.rs` (the pre-init: the network
//! namespace, the init cloned), `init.rs` (the init's setup in its new namespaces),
//! `start.rs` (the shim's side of the start: the cgroup, the init's handshake) and
//! `supervise.rs` (the parent's loop: the log, the exit, the cleanup).

mod init;
mod preinit;
mod start;
mod supervise;

use crate::error::ShimError;
use crate::files::{read_json, write_replace};
use crate::standby;
use crate::wire::{read_line, report, report_error, report_started, REPORT_FD};
use berth_proto::isolator::{
    ContainerSpec, Device, RootfsMount, RunArgs, ROOTFS_FILE, SHIM_PID_FILE, SPEC_FILE,
};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::getpid;
use std::borrow::Cow;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

/// What a [`RunArgs`] says of its container: what the isolator sent, else read from the
/// bundle.
trait Container {
    fn spec(&self) -> Result<Cow<'_, ContainerSpec>, ShimError>;
    /// The spec's devices, resolved (by the isolator, else here).
    fn devices(&self) -> Result<Cow<'_, [Device]>, ShimError>;
    fn rootfs(&self) -> Result<Cow<'_, RootfsMount>, ShimError>;
}

impl Container for RunArgs {
    fn spec(&self) -> Result<Cow<'_, ContainerSpec>, ShimError> {
        match &self.container {
            Some(c) => Ok(Cow::Borrowed(&c.spec)),
            None => read_json(&self.bundle.join(SPEC_FILE)).map(Cow::Owned),
        }
    }
    fn devices(&self) -> Result<Cow<'_, [Device]>, ShimError> {
        match &self.container {
            Some(c) if c.devices.len() == c.spec.devices.len() => Ok(Cow::Borrowed(&c.devices)),
            _ => crate::devices::resolve_all(&self.spec()?.devices).map(Cow::Owned),
        }
    }
    fn rootfs(&self) -> Result<Cow<'_, RootfsMount>, ShimError> {
        match &self.container {
            Some(c) => Ok(Cow::Borrowed(&c.rootfs)),
            None => read_json(&self.bundle.join(ROOTFS_FILE)).map(Cow::Owned),
        }
    }
}

/// Run the shim: prepare as a standby, wait for the container on `REPORT_FD`, start it,
/// then supervise it. Returns the shim's exit code.
pub fn run() -> i32 {
    // SAFETY: REPORT_FD was set up by the isolator for us alone.
    let report_fd = unsafe { OwnedFd::from_raw_fd(REPORT_FD) };
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: setting a disposition to SIG_IGN installs no handler code.
        let _ = unsafe { signal(s, SigHandler::SigIgn) };
    }
    let prepared = standby::prepare(preinit::preinit_main);
    // Tell the isolator who waits: `S<shim pid>`.
    report(&report_fd, &format!("S{}\n", getpid().as_raw()));
    supervise::trim_resident();
    let Some(line) = read_line(&report_fd) else {
        // The isolator went away before it had a container for us.
        if let Ok(sb) = prepared {
            sb.dismiss();
        }
        return 0;
    };
    let args: RunArgs = match serde_json::from_slice(&line) {
        Ok(a) => a,
        Err(e) => {
            if let Ok(sb) = prepared {
                sb.dismiss();
            }
            report_error(
                &report_fd,
                &ShimError::invalid("the container sent to the shim", e.to_string()),
            );
            return 1;
        }
    };
    redirect_output(&args.log);
    // Our identity from now on (`berth_proto::isolator::is_shim_of`): the command line names
    // no container, the working directory does.
    if let Err(e) = std::env::set_current_dir(&args.run_dir) {
        eprintln!("berth-shim: chdir {}: {e}", args.run_dir.display());
    }
    let shim_pid = getpid().as_raw();
    let pid_file = args.run_dir.join(SHIM_PID_FILE);
    if let Err(e) = write_replace(&pid_file, shim_pid.to_string().as_bytes(), false) {
        if let Ok(sb) = prepared {
            sb.dismiss();
        }
        report_error(
            &report_fd,
            &ShimError::Sys {
                step: format!("write {}", pid_file.display()),
                source: e,
            },
        );
        return 1;
    }
    let mut cgroup = None;
    match prepared.and_then(|sb| start::start(&args, sb, &mut cgroup)) {
        Ok(started) => {
            report_started(&report_fd, shim_pid as u32, started.init.as_raw() as u32);
            drop(report_fd);
            supervise::supervise(&args, started, cgroup);
            0
        }
        Err(e) => {
            if let Some(cg) = cgroup {
                if let Err(e) = cg.remove(Duration::from_secs(5)) {
                    eprintln!("berth-shim: {e}");
                }
            }
            report_error(&report_fd, &e);
            1
        }
    }
}

/// From now on the shim's own messages go to the container's shim log.
fn redirect_output(log: &Path) {
    if let Ok(f) = OpenOptions::new().create(true).append(true).open(log) {
        // SAFETY: dup2 onto this process's own stdout and stderr.
        unsafe {
            libc::dup2(f.as_raw_fd(), 1);
            libc::dup2(f.as_raw_fd(), 2);
        }
    }
}

//! `init: true`: the container's PID 1 is this tiny reaper. It forwards every catchable
//! signal to the command, reaps orphans, and exits with the command's status.

use crate::process::{self, Prepared};
use nix::sys::signal::{
    kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, SigmaskHow, Signal,
};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

extern "C" fn noop(_: libc::c_int) {}

/// Signals the reaper handles: all but SIGKILL and SIGSTOP (which it cannot catch).
fn catchable() -> impl Iterator<Item = Signal> {
    Signal::iterator().filter(|s| !matches!(s, Signal::SIGKILL | Signal::SIGSTOP))
}

pub fn run(p: &Prepared) -> ! {
    // PID 1 of a pid namespace gets signals from outside only for signals it handles: install
    // a handler for each, block them all, and take them with sigwait.
    let act = SigAction::new(
        SigHandler::Handler(noop),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for s in catchable() {
        // SAFETY: a handler that does nothing is async-signal-safe.
        let _ = unsafe { sigaction(s, &act) };
    }
    let all = SigSet::all();
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&all), None);
    // SAFETY: the process is single-threaded.
    let child = match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            let dfl = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
            for s in catchable() {
                // SAFETY: restoring default dispositions.
                let _ = unsafe { sigaction(s, &dfl) };
            }
            let _ = nix::sys::signal::sigprocmask(
                SigmaskHow::SIG_SETMASK,
                Some(&SigSet::empty()),
                None,
            );
            process::exec(p)
        }
        Ok(ForkResult::Parent { child }) => child,
        Err(e) => {
            eprintln!("berth-init: fork: {e}");
            // SAFETY: exiting PID 1.
            unsafe { libc::_exit(1) }
        }
    };
    loop {
        let sig = match all.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != Signal::SIGCHLD {
            let _ = kill(child, sig);
            continue;
        }
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == child => exit(code),
                Ok(WaitStatus::Signaled(pid, s, _)) if pid == child => exit(128 + s as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: PID 1 leaving; the kernel kills what is left of the namespace.
    unsafe { libc::_exit(code) }
}

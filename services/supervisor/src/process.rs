//! Processes the supervisor does not own (shims and container inits are not its children):
//! watched and signalled through pidfds, so a recycled pid is never signalled by mistake.

use nix::sys::signal::Signal;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use tokio::io::unix::AsyncFd;

/// A pidfd of a process.
pub struct PidFd {
    fd: OwnedFd,
    pub pid: u32,
}

impl PidFd {
    /// Open a pidfd of `pid`; `ESRCH` when it does not exist (any more).
    pub fn open(pid: u32) -> io::Result<PidFd> {
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: r is a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(r as i32) };
        Ok(PidFd { fd, pid })
    }

    /// Send `sig`; Ok when the process has already ended (nothing left to signal).
    pub fn signal(&self, sig: Signal) -> io::Result<()> {
        // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0).
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig as i32,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ESRCH) {
                return Ok(());
            }
            return Err(e);
        }
        Ok(())
    }

    /// Whether the process has ended (without waiting).
    pub fn exited(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        r > 0 && p.revents & libc::POLLIN != 0
    }

    /// Wait until the process ends.
    pub async fn wait(self) -> io::Result<()> {
        // SAFETY: the OwnedFd is moved into the AsyncFd, which owns it until dropped.
        let afd =
            unsafe { AsyncFd::register_with_interest(self.fd, tokio::io::Interest::READABLE)? };
        let _guard = afd.readable().await?;
        Ok(())
    }
}

/// Whether a process exists at all (kill 0).
pub fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// `SIGTERM`, `TERM`, `term` or a number.
pub fn parse_signal(s: &str) -> Result<Signal, String> {
    let n = berth_proto::validate::signal(s)?;
    Signal::try_from(n).map_err(|_| format!("{n} is not a signal number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_or_number() {
        assert_eq!(parse_signal("SIGTERM").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("kill").unwrap(), Signal::SIGKILL);
        assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("9").unwrap(), Signal::SIGKILL);
        assert!(parse_signal("SIGNOPE").unwrap_err().contains("SIGNOPE"));
        assert!(parse_signal("999").is_err());
    }

    #[tokio::test]
    async fn a_pidfd_sees_a_process_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pfd = PidFd::open(child.id()).unwrap();
        assert!(!pfd.exited());
        pfd.signal(Signal::SIGKILL).unwrap();
        let _ = child.wait();
        pfd.wait().await.unwrap();
    }
}

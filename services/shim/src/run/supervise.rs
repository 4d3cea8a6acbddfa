//! The shim as the container's parent: its output copied into the log until the init ends,
//! the exit recorded, the cgroup removed (by a child left behind).

use super::start::Started;
use crate::error::{ShimError, Step};
use crate::files::write_replace;
use crate::log::{now_rfc3339, LogWriter};
use berth_cgroups::Cgroup;
use berth_proto::isolator::{ExitStatus, RunArgs, EXIT_FILE, LOG_FILE};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{read, Pid};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Copy output into the log until the init ends; then record the exit and clean up.
pub(super) fn supervise(args: &RunArgs, st: Started, cgroup: Option<Cgroup>) {
    trim_resident();
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let log_path = args.bundle.join(LOG_FILE);
    let log = match OpenOptions::new().create(true).append(true).open(&log_path) {
        Ok(f) => Some(LogWriter::new(f)),
        Err(e) => {
            eprintln!("berth-shim: open {}: {e}", log_path.display());
            None
        }
    };
    let mut log = log;
    let pidfd = pidfd_open(st.init).ok();
    // With a terminal, everything the container writes comes through its master.
    let out = st.master.as_ref().unwrap_or(&st.out_r);
    let mut open = [true, true];
    let mut status: Option<WaitStatus> = None;
    let mut drain_until: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if status.is_some() && (!open[0] && !open[1]) {
            break;
        }
        if drain_until.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        // Only open streams are polled: a closed pipe would report POLLHUP forever.
        let streams = [out, &st.err_r];
        let mut polled: Vec<usize> = Vec::with_capacity(3);
        let mut fds: Vec<PollFd> = Vec::with_capacity(3);
        for (i, fd) in streams.iter().enumerate() {
            if open[i] {
                polled.push(i);
                fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        let pid_slot = match (&pidfd, &status) {
            (Some(p), None) => {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let timeout = if status.is_some() || pidfd.is_none() {
            PollTimeout::from(100u16)
        } else {
            PollTimeout::NONE
        };
        match poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                eprintln!("berth-shim: poll: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let revents: Vec<PollFlags> = fds
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        for (slot, &i) in polled.iter().enumerate() {
            if revents[slot].is_empty() {
                continue;
            }
            match read(streams[i].as_fd(), &mut buf) {
                Ok(0) => {
                    open[i] = false;
                    if let Some(l) = log.as_mut() {
                        l.finish(i);
                    }
                }
                Ok(n) => {
                    if let Some(l) = log.as_mut() {
                        l.feed(i, &buf[..n]);
                    }
                }
                Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
                // EIO: the terminal's last slave is closed.
                Err(_) => open[i] = false,
            }
        }
        if status.is_none() {
            let exited = match pid_slot {
                Some(k) => !revents[k].is_empty(),
                None => true,
            };
            if exited {
                match waitpid(st.init, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(s) => {
                        status = Some(s);
                        // Output still buffered in the pipes is read for a short while; the
                        // rest of the container died with its init.
                        drain_until = Some(Instant::now() + Duration::from_secs(2));
                    }
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("berth-shim: waitpid: {e}");
                        status = Some(WaitStatus::Exited(st.init, 255));
                        drain_until = Some(Instant::now());
                    }
                }
            }
        }
    }
    for i in 0..2 {
        if let Some(l) = log.as_mut() {
            l.finish(i);
        }
    }
    let (exit_code, signal) = match status {
        Some(WaitStatus::Exited(_, c)) => (c, None),
        Some(WaitStatus::Signaled(_, s, _)) => (128 + s as i32, Some(s as i32)),
        _ => (255, None),
    };
    let mut oom_killed = false;
    if let Some(cg) = &cgroup {
        match cg.oom_kills() {
            Ok(n) => oom_killed = n > 0,
            Err(e) => eprintln!("berth-shim: {e}"),
        }
    }
    let ex = ExitStatus {
        exit_code,
        signal,
        oom_killed,
        finished_at: now_rfc3339(),
    };
    // Known before the exit is recorded: after that the next instance may take the name.
    let cgroup = cgroup.map(|cg| {
        let ids = cg.identify();
        (cg, ids)
    });
    let p = args.run_dir.join(EXIT_FILE);
    let body = serde_json::to_vec(&ex).unwrap_or_default();
    // Renamed into place, not synced: the supervisor reads it from the page cache, the run dir
    // is a tmpfs normally, and after a power loss no container runs anyway.
    if let Err(e) = write_replace(&p, &body, false) {
        eprintln!("berth-shim: write {}: {e}", p.display());
    }
    // The exit is recorded: the shim's own exit announces it. A child left behind removes the
    // empty cgroup, as removing a cgroup can wait a whole RCU grace period behind another
    // process's cgroup move (a standby shim's); the next start of this container removes it
    // first if it is still there (`claim_cgroup`). Then it drops a volatile container's
    // mounts.
    let mounts = st.mounts;
    if cgroup.is_some() || mounts.is_some() {
        // SAFETY: single-threaded; the child only removes the cgroup, drops the mounts and
        // exits.
        if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
            if let Some((cg, ids)) = cgroup {
                if let Err(e) = cg.remove_ended(&ids, Duration::from_secs(10)) {
                    eprintln!("berth-shim: {e}");
                }
            }
            drop(mounts);
            // SAFETY: leaving the child without the shim's exit handlers.
            unsafe { libc::_exit(0) }
        }
    }
}

fn pidfd_open(pid: Pid) -> Result<OwnedFd, ShimError> {
    // SAFETY: pidfd_open returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).step(|| "pidfd_open".into());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Drop the page-table entries of the executable file mappings (code of the shim and of the
/// C library) that the setup touched. Code pages are never written, so the kernel simply
/// faults back in, from the page cache, the few that the log loop uses; the rest stop
/// counting in this process's resident set.
pub(super) fn trim_resident() {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return;
    };
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(perms)) = (f.next(), f.next()) else {
            continue;
        };
        let path = f.nth(3).unwrap_or("");
        if perms != "r-xp" || !path.starts_with('/') {
            continue;
        }
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)) else {
            continue;
        };
        // SAFETY: an executable, never-written file mapping of this process; dropping its
        // pages only makes the next access fault them in again.
        unsafe {
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_RANDOM);
            libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_DONTNEED);
        }
    }
}

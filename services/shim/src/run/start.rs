//! The shim's side of a start: the standby's placeholder becomes the container's cgroup,
//! the init is released and answers (`U`: map my user namespace, `R`: ready, `E`: failed),
//! and with a terminal its master comes back.

use super::Container;
use crate::error::{ShimError, Step};
use crate::files::write_replace;
use crate::standby::Standby;
use berth_cgroups::{Cgroup, Limits};
use berth_proto::isolator::{
    ContainerSpec, RunArgs, ShimFailure, DEFAULT_PIDS_LIMIT, INIT_PID_FILE,
};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{read, write, Pid};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

pub(super) struct Started {
    pub(super) init: Pid,
    pub(super) out_r: OwnedFd,
    pub(super) err_r: OwnedFd,
    /// The terminal's master, with `tty`: the container's output.
    pub(super) master: Option<OwnedFd>,
    /// A volatile container's mount namespace, held so that the init's exit does not tear it
    /// down (the unmounts wait for RCU grace periods: about 0.5 ms on the path of the exit).
    /// The child left behind after the exit is recorded drops it. Only for a container removed
    /// at its exit: one that starts again mounts the same upper dir, which must not be in
    /// use by the old mount then.
    pub(super) mounts: Option<OwnedFd>,
}

pub(super) fn start(
    args: &RunArgs,
    mut sb: Standby,
    cgroup: &mut Option<Cgroup>,
) -> Result<Started, ShimError> {
    sb.release(args)?;
    // While the pre-init clones the init, the placeholder becomes the container's cgroup.
    let made = (|| {
        let spec = args.spec()?;
        sb.joined()?;
        let devices = args.devices()?;
        let cg = claim_cgroup(&sb.layout, &args.id, || match &sb.placeholder {
            Some(ph) => ph.rename(&args.id),
            None => Cgroup::create(&sb.layout, &args.id, &limits(&spec)),
        })?;
        *cgroup = Some(cg.clone());
        if sb.placeholder.is_some() {
            cg.apply(&limits(&spec))?;
            // The placeholder has the default device rules already (the init, born inside,
            // may be opening /dev/null now: they are never denied meanwhile); the
            // container's own devices are added.
            let own: Vec<_> = devices.iter().map(berth_policy::devices::rule).collect();
            cg.allow_devices(&own)?;
        } else {
            // A new cgroup, the init not in it yet.
            cg.set_devices(&berth_policy::devices::rules(&devices))?;
        }
        Ok::<_, ShimError>((spec, cg))
    })();
    let init = sb.init_pid();
    let (spec, cg, init) = match (made, init) {
        (Ok((spec, cg)), Ok(init)) => (spec, cg, init),
        (made, init) => {
            if let Ok(init) = init {
                let _ = kill(init, Signal::SIGKILL);
                let _ = waitpid(init, None);
            }
            if cgroup.is_none() {
                if let Some(ph) = &sb.placeholder {
                    let _ = ph.remove(Duration::from_secs(5));
                }
            }
            return Err(made.err().or(init.err()).expect("one failed"));
        }
    };
    let fail = |e: ShimError| -> ShimError {
        let _ = kill(init, Signal::SIGKILL);
        let _ = waitpid(init, None);
        e
    };
    if sb.placeholder.is_none() {
        if let Err(e) = cg.add(init.as_raw()) {
            return Err(fail(e.into()));
        }
    }
    let init_file = args.run_dir.join(INIT_PID_FILE);
    if let Err(e) = write_replace(&init_file, init.as_raw().to_string().as_bytes(), false)
        .step(|| format!("write {}", init_file.display()))
    {
        return Err(fail(e));
    }
    let Standby {
        out_r,
        err_r,
        go_w,
        ready_r,
        tty_shim,
        ..
    } = sb;
    // If the init failed during its setup, the pipe is broken: its report below says why.
    let released = write(&go_w, b"G").step(|| "release the init".into());
    let mut msg = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(ready_r.as_fd(), &mut buf) {
            Ok(0) => break,
            Ok(n) => {
                msg.extend_from_slice(&buf[..n]);
                if msg.first() == Some(&b'U') {
                    // The init has made its user namespace: map it, then let it go on.
                    msg.remove(0);
                    let mapped = match spec.userns_remap {
                        Some(base) => map_user_ns(init, base),
                        None => Err(ShimError::invalid("user namespace", "not asked for")),
                    };
                    if let Err(e) = mapped.and_then(|_| {
                        write(&go_w, b"M")
                            .map(drop)
                            .step(|| "release the init".into())
                    }) {
                        return Err(fail(e));
                    }
                }
                if msg.first() == Some(&b'R') {
                    break;
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                return Err(fail(ShimError::Sys {
                    step: "read the init's report".into(),
                    source: e.into(),
                }))
            }
        }
    }
    match msg.first() {
        Some(b'R') if released.is_ok() => {
            let master = if spec.tty {
                match recv_fd(&tty_shim) {
                    Ok(fd) => Some(fd),
                    Err(e) => return Err(fail(e)),
                }
            } else {
                None
            };
            let volatile = args.rootfs().is_ok_and(|r| r.volatile);
            let mounts = volatile
                .then(|| {
                    nix::fcntl::open(
                        format!("/proc/{}/ns/mnt", init.as_raw()).as_str(),
                        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                        nix::sys::stat::Mode::empty(),
                    )
                    .ok()
                })
                .flatten();
            Ok(Started {
                init,
                out_r,
                err_r,
                master,
                mounts,
            })
        }
        Some(b'R') => Err(fail(released.unwrap_err())),
        Some(b'E') => Err(fail(ShimError::Reported {
            step: "container init".into(),
            failure: ShimFailure::decode(&String::from_utf8_lossy(&msg[1..])),
        })),
        _ => Err(fail(ShimError::invalid(
            "container init",
            "it exited before it was set up",
        ))),
    }
}

/// Make the container's cgroup with `make`; when a cgroup of that id is still there (the
/// previous instance's shim is removing it), remove it first.
fn claim_cgroup(
    layout: &berth_cgroups::Layout,
    id: &str,
    make: impl Fn() -> Result<Cgroup, berth_cgroups::CgroupError>,
) -> Result<Cgroup, ShimError> {
    match make() {
        Ok(cg) => Ok(cg),
        Err(berth_cgroups::CgroupError::Io { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EEXIST) | Some(libc::ENOTEMPTY)
            ) =>
        {
            Cgroup::at(layout, id)?.remove(Duration::from_secs(10))?;
            Ok(make()?)
        }
        Err(e) => Err(e.into()),
    }
}

fn limits(spec: &ContainerSpec) -> Limits {
    let r = &spec.resources;
    let pids = r.pids_limit.unwrap_or(DEFAULT_PIDS_LIMIT);
    Limits {
        memory_bytes: r.memory_bytes,
        cpus: r.cpus,
        cpu_shares: r.cpu_shares,
        pids_max: (pids > 0).then_some(pids as u64),
    }
}

/// Receive the terminal's master from the init.
fn recv_fd(sock: &OwnedFd) -> Result<OwnedFd, ShimError> {
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = nix::sys::socket::recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .step(|| "receive the terminal".into())?;
    for c in msg.cmsgs().step(|| "receive the terminal".into())? {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: a fresh fd received from the init, now ours.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(ShimError::invalid("terminal", "the init sent no terminal"))
}

/// Map container ids 0..65536 to host ids `base..base+65536` in `pid`'s user namespace.
fn map_user_ns(pid: Pid, base: u32) -> Result<(), ShimError> {
    let line = format!("0 {base} 65536\n");
    for f in ["uid_map", "gid_map"] {
        let p = format!("/proc/{}/{f}", pid.as_raw());
        std::fs::write(&p, &line).step(|| format!("write {p}"))?;
    }
    Ok(())
}

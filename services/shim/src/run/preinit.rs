//! The pre-init (a fork of the waiting shim): while it waits, the container's network
//! namespace; once the container comes, its init cloned as the shim's child.

use super::init::{init_main, InitCtx};
use super::Container;
use crate::error::{ShimError, Step};
use crate::standby::{self, PreInit};
use berth_proto::isolator::{ContainerSpec, NetworkMode, RunArgs, INIT_PID_FILE};
use nix::sched::{clone, unshare, CloneFlags};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The pre-init (a fork of the waiting shim): wait for the container, then clone its init
/// as the shim's child and exit.
pub(super) fn preinit_main(pre: &PreInit) -> i32 {
    // While it waits, the pre-init makes the container's network namespace (the costliest
    // namespace to make: about 0.5 ms) and brings its loopback up; it keeps the host's, for
    // `network: host`.
    let netns = || -> Result<OwnedFd, ShimError> {
        let host = nix::fcntl::open(
            "/proc/self/ns/net",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .step(|| "open the host's network namespace".into())?;
        unshare(CloneFlags::CLONE_NEWNET).step(|| "make the network namespace".into())?;
        loopback_up()?;
        Ok(host)
    };
    let Some((args, host_net)) = standby::preinit_wait(pre, || netns().map_err(|e| e.to_string()))
    else {
        return 0;
    };
    let r = clone_init(&args, pre, host_net).map_err(|e| e.to_string());
    standby::preinit_report(pre, r);
    0
}

/// The network namespace the container's init joins, if not the pre-init's own new one
/// (`none`, and `bridge`, whose veth the isolator adds once the init exists).
fn network_to_join(
    spec: &ContainerSpec,
    args: &RunArgs,
    host_net: OwnedFd,
) -> Result<Option<OwnedFd>, ShimError> {
    let mut join_net = None;
    match &spec.network {
        NetworkMode::None | NetworkMode::Bridge(_) => {}
        NetworkMode::Host => join_net = Some(host_net),
        NetworkMode::Container(other) => {
            let p = args
                .run_dir
                .parent()
                .unwrap_or(Path::new("/"))
                .join(other)
                .join(INIT_PID_FILE);
            let pid = std::fs::read_to_string(&p).map_err(|e| {
                ShimError::invalid(
                    "network",
                    format!("container {other}: {}: {e}", p.display()),
                )
            })?;
            let ns = format!("/proc/{}/ns/net", pid.trim());
            let fd = nix::fcntl::open(
                ns.as_str(),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .step(|| format!("open the network namespace of container {other}"))?;
            join_net = Some(fd);
        }
    }
    Ok(join_net)
}

/// In the pre-init: clone the container's init with `CLONE_PARENT`, so that its parent is the
/// shim, and it is born in the pre-init's cgroup.
fn clone_init(args: &RunArgs, pre: &PreInit, host_net: OwnedFd) -> Result<Pid, ShimError> {
    let spec = args.spec()?;
    let rootfs = args.rootfs()?;
    let devices = args.devices()?;
    let join_net = network_to_join(&spec, args, host_net)?;
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWPID;
    let p = pre.pipes;
    // The pre-init closed the shim's fds already (their numbers may be reused since, by the
    // network namespace's fd for one): the init closes the pre-init's own pipes only.
    let mut parent_fds = [-1; 8];
    parent_fds[0] = pre.cmd_r.as_raw_fd();
    parent_fds[1] = pre.pid_w.as_raw_fd();
    let ctx = InitCtx {
        spec: &spec,
        rootfs: &rootfs,
        devices: &devices,
        args,
        out_w: &p.out_w,
        err_w: &p.err_w,
        go_r: &p.go_r,
        ready_w: &p.ready_w,
        join_net: join_net.as_ref(),
        parent_fds,
        tty_w: spec.tty.then_some(&p.tty_init),
        userns: spec.userns_remap.is_some(),
    };
    let mut stack = vec![0u8; 1 << 20];
    // SAFETY: the pre-init is single-threaded; the child gets a copy of the address space
    // (no CLONE_VM) and runs `init` on its own stack.
    unsafe {
        clone(
            Box::new(|| init_main(&ctx)),
            &mut stack,
            flags | CloneFlags::CLONE_PARENT,
            Some(libc::SIGCHLD),
        )
    }
    .step(|| "clone the container's init".into())
}

/// Bring `lo` up in this (new) network namespace.
fn loopback_up() -> Result<(), ShimError> {
    // SAFETY: a plain socket for the interface ioctls, closed by OwnedFd.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).step(|| "socket to bring lo up".into());
    }
    // SAFETY: raw is a fresh fd we own.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS with a pointer to a local ifreq naming `lo`.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).step(|| "read the flags of lo".into());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error()).step(|| "bring lo up".into());
        }
    }
    Ok(())
}

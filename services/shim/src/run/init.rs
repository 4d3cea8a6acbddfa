//! The container's init, in its new namespaces: hostname, root filesystem, stdio (or a
//! terminal), the cgroup and user namespaces, then blocked on the start FIFO until `execve`.

use crate::error::{ShimError, Step};
use crate::process::{self, ProcessSpec};
use crate::rootfs::{self, Paths};
use berth_proto::isolator::{ContainerSpec, Device, RootfsMount, RunArgs, ROOTFS_DIR, START_FIFO};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{signal, SigHandler, Signal};
use nix::unistd::{dup2, read, sethostname, write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Everything the init needs, prepared by the shim before `clone`.
pub(super) struct InitCtx<'a> {
    pub(super) spec: &'a ContainerSpec,
    pub(super) rootfs: &'a RootfsMount,
    pub(super) devices: &'a [Device],
    pub(super) args: &'a RunArgs,
    pub(super) out_w: &'a OwnedFd,
    pub(super) err_w: &'a OwnedFd,
    pub(super) go_r: &'a OwnedFd,
    pub(super) ready_w: &'a OwnedFd,
    pub(super) join_net: Option<&'a OwnedFd>,
    /// The shim's ends of the pipes and its report fd: closed in the init at once.
    pub(super) parent_fds: [RawFd; 8],
    /// With `tty`, the init sends the terminal's master over this socket.
    pub(super) tty_w: Option<&'a OwnedFd>,
    /// With `userns_remap`, the init enters a user namespace after its setup.
    pub(super) userns: bool,
}

/// The container's init, in its new namespaces. Returns only on failure.
pub(super) fn init_main(ctx: &InitCtx) -> isize {
    if let Err(e) = init_setup(ctx) {
        let m = format!("E{}", e.failure().encode());
        let _ = write(ctx.ready_w, m.as_bytes());
    }
    1
}

fn init_setup(ctx: &InitCtx) -> Result<(), ShimError> {
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        // SAFETY: restoring the default disposition.
        let _ = unsafe { signal(s, SigHandler::SigDfl) };
    }
    for fd in ctx.parent_fds {
        // SAFETY: these fds belong to the shim; this copy of the fd table no longer needs them.
        unsafe { libc::close(fd) };
    }
    // Until it reports ready, the init dies with the shim.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).step(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    process::non_dumpable()?;
    if let Some(fd) = ctx.join_net {
        setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).step(|| "join the network namespace".into())?;
    }
    let spec = ctx.spec;
    let host = berth_policy::process::hostname(spec);
    sethostname(&host).step(|| format!("sethostname {host}"))?;

    let root = rootfs::mount_overlay(ctx.rootfs, &ctx.args.bundle.join(ROOTFS_DIR))?;
    rootfs::populate(
        &root,
        spec,
        &Paths {
            bundle: &ctx.args.bundle,
            volumes: &ctx.args.volumes,
        },
        ctx.devices,
    )?;
    let fifo_path = ctx.args.run_dir.join(START_FIFO);
    let fifo = nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| format!("open {}", fifo_path.display()))?;
    rootfs::pivot(&root, spec.read_only)?;
    drop(root);

    let null = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| "open /dev/null".into())?;
    let stdio = |fd: BorrowedFd, n: i32| -> Result<(), ShimError> {
        // SAFETY: dup2 onto the stdio numbers, which this process owns.
        let mut target = unsafe { OwnedFd::from_raw_fd(n) };
        let r = dup2(fd, &mut target).step(|| format!("dup2 onto fd {n}"));
        std::mem::forget(target);
        r.map(drop)
    };
    // Its own session: the container is cut off from the shim's, and with a terminal the
    // init can make it its controlling terminal.
    nix::unistd::setsid().step(|| "setsid".into())?;
    match ctx.tty_w {
        None => {
            stdio(null.as_fd(), 0)?;
            stdio(ctx.out_w.as_fd(), 1)?;
            stdio(ctx.err_w.as_fd(), 2)?;
        }
        Some(sock) => {
            let slave = open_terminal(sock)?;
            // SAFETY: TIOCSCTTY on a terminal fd we own, as session leader.
            if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
                return Err(std::io::Error::last_os_error()).step(|| "TIOCSCTTY".into());
            }
            for n in 0..3 {
                stdio(slave.as_fd(), n)?;
            }
        }
    }
    drop(null);

    let prepared = process::prepare(
        spec,
        &ProcessSpec {
            args: &spec.args,
            env: spec.env.clone(),
            user: spec.user.as_deref(),
            working_dir: spec.working_dir.as_deref(),
            hostname: &host,
        },
    )?;
    // Wait until the shim has moved us into the container's cgroup, then make the cgroup
    // namespace, so the container sees its own cgroup as the root.
    let mut one = [0u8; 1];
    match read(ctx.go_r.as_fd(), &mut one) {
        Ok(1) => {}
        _ => return Err(ShimError::invalid("container init", "the shim went away")),
    }
    unshare(CloneFlags::CLONE_NEWCGROUP).step(|| "unshare the cgroup namespace".into())?;
    if ctx.userns {
        // Everything was mounted by the host's root; the user namespace comes last, so its
        // root owns no mount, pid, network or ipc namespace of the container.
        unshare(CloneFlags::CLONE_NEWUSER).step(|| "unshare the user namespace".into())?;
        write(ctx.ready_w, b"U").step(|| "ask for the uid map".into())?;
        match read(ctx.go_r.as_fd(), &mut one) {
            Ok(1) if one[0] == b'M' => {}
            _ => {
                return Err(ShimError::invalid(
                    "user namespace",
                    "the shim did not map it",
                ))
            }
        }
    }
    process::cloexec_from_3()?;
    process::finish(&prepared)?;
    nix::sys::prctl::set_pdeathsig(None).step(|| "prctl(PR_SET_PDEATHSIG)".into())?;
    write(ctx.ready_w, b"R").step(|| "report ready".into())?;

    // Blocked here until the supervisor writes a byte into the FIFO.
    loop {
        match read(fifo.as_fd(), &mut one) {
            Ok(1) => break,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // SAFETY: exiting the init on an unreadable start FIFO.
                eprintln!("berth: reading the start FIFO: {e}");
                unsafe { libc::_exit(1) }
            }
        }
    }
    drop(fifo);
    if spec.init {
        crate::reaper::run(&prepared)
    }
    process::exec(&prepared)
}

/// Open a terminal in the container's own devpts, bind its slave on `/dev/console`, send
/// the master to the shim and return the slave.
fn open_terminal(sock: &OwnedFd) -> Result<OwnedFd, ShimError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .step(|| "open /dev/ptmx".into())?;
    nix::pty::grantpt(&master).step(|| "grantpt".into())?;
    nix::pty::unlockpt(&master).step(|| "unlockpt".into())?;
    let name = nix::pty::ptsname_r(&master).step(|| "ptsname".into())?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .step(|| format!("open {name}"))?;
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a pointer to a local winsize.
    unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    let console = "/dev/console";
    drop(
        nix::fcntl::open(
            console,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .step(|| "create /dev/console".into())?,
    );
    nix::mount::mount(
        Some(name.as_str()),
        console,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .step(|| "bind the terminal on /dev/console".into())?;
    let raw = [master.as_raw_fd()];
    nix::sys::socket::sendmsg::<()>(
        sock.as_raw_fd(),
        &[std::io::IoSlice::new(b"T")],
        &[nix::sys::socket::ControlMessage::ScmRights(&raw)],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .step(|| "send the terminal to the shim".into())?;
    Ok(slave)
}

//! `berth-shim run`: the life of one container. The shim waits as a standby (see
//! `standby.rs`) until the isolator sends the container, has its pre-init clone the
//! container's init into new namespaces inside the cgroup, reports to the isolator once the
//! init is set up and blocked on the start FIFO, then copies the init's output into the log,
//! waits for it to end, records the exit status and removes the cgroup.

use crate::error::{ShimError, Step};
use crate::log::{now_rfc3339, LogWriter};
use crate::process::{self, ProcessSpec};
use crate::rootfs::{self, Paths};
use crate::standby::{self, PreInit, Standby};
use berth_cgroups::{Cgroup, Limits};
use berth_proto::isolator::{
    ContainerSpec, Device, ExitStatus, NetworkMode, RootfsMount, RunArgs, ShimFailure,
    DEFAULT_PIDS_LIMIT, EXIT_FILE, INIT_PID_FILE, LOG_FILE, ROOTFS_DIR, ROOTFS_FILE, SHIM_PID_FILE,
    SPEC_FILE, START_FIFO,
};
use nix::sched::{clone, setns, unshare, CloneFlags};
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{dup2, getpid, read, sethostname, write, Pid};
use std::borrow::Cow;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// The fd on which the shim reads its container (one JSON line of `RunArgs`) and answers
/// `OK <shim_pid> <init_pid>` or `ERR <message>`: a socket whose other end is the isolator's.
pub const REPORT_FD: i32 = 3;

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

/// Make process `pid` (0: the calling thread) run at `nice` from now on.
pub fn set_nice(pid: u32, nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority of one process; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Read a JSON file of the bundle.
pub fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<T, ShimError> {
    let b = std::fs::read(p).step(|| format!("read {}", p.display()))?;
    serde_json::from_slice(&b)
        .map_err(|e| ShimError::invalid(format!("parse {}", p.display()), e.to_string()))
}

/// Write `data` to `path` by rename, so readers see all or nothing; with `durable`, fsync
/// the file and the directory too. Pid files skip the fsyncs: the run dir is on tmpfs
/// normally, and a pid means nothing after a reboot anyway.
pub fn write_replace(path: &Path, data: &[u8], durable: bool) -> std::io::Result<()> {
    let durability = if durable {
        berth_files::Durability::PowerLoss
    } else {
        berth_files::Durability::Process
    };
    berth_files::atomic_write(path, data, durability)
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

fn report(fd: &OwnedFd, msg: &str) {
    let _ = write(fd, msg.as_bytes());
}

/// Report a failed create: `ERR ` and the failure as JSON ([`ShimFailure`]), one line.
fn report_error(fd: &OwnedFd, e: &ShimError) {
    report(fd, &format!("ERR {}\n", e.failure().encode()));
}

/// Everything the init needs, prepared by the shim before `clone`.
struct InitCtx<'a> {
    spec: &'a ContainerSpec,
    rootfs: &'a RootfsMount,
    devices: &'a [Device],
    args: &'a RunArgs,
    out_w: &'a OwnedFd,
    err_w: &'a OwnedFd,
    go_r: &'a OwnedFd,
    ready_w: &'a OwnedFd,
    join_net: Option<&'a OwnedFd>,
    /// The shim's ends of the pipes and its report fd: closed in the init at once.
    parent_fds: [RawFd; 8],
    /// With `tty`, the init sends the terminal's master over this socket.
    tty_w: Option<&'a OwnedFd>,
    /// With `userns_remap`, the init enters a user namespace after its setup.
    userns: bool,
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
    let prepared = standby::prepare(preinit_main);
    // Tell the isolator who waits: `S<shim pid>`.
    report(&report_fd, &format!("S{}\n", getpid().as_raw()));
    trim_resident();
    let Some(line) = standby::read_line(&report_fd) else {
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
    match prepared.and_then(|sb| start(&args, sb, &mut cgroup)) {
        Ok(started) => {
            report(
                &report_fd,
                &format!("OK {shim_pid} {}\n", started.init.as_raw()),
            );
            drop(report_fd);
            supervise(&args, started, cgroup);
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

struct Started {
    init: Pid,
    out_r: OwnedFd,
    err_r: OwnedFd,
    /// The terminal's master, with `tty`: the container's output.
    master: Option<OwnedFd>,
    /// A volatile container's mount namespace, held so that the init's exit does not tear it
    /// down (the unmounts wait for RCU grace periods: about 0.5 ms on the path of the exit).
    /// The child left behind after the exit is recorded drops it. Only for a container removed
    /// at its exit: one that starts again mounts the same upper dir, which must not be in
    /// use by the old mount then.
    mounts: Option<OwnedFd>,
}

/// The pre-init (a fork of the waiting shim): wait for the container, then clone its init
/// as the shim's child and exit.
fn preinit_main(pre: &PreInit) -> i32 {
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

fn start(
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

/// The container's init, in its new namespaces. Returns only on failure.
fn init_main(ctx: &InitCtx) -> isize {
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
fn trim_resident() {
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

/// Copy output into the log until the init ends; then record the exit and clean up.
fn supervise(args: &RunArgs, st: Started, cgroup: Option<Cgroup>) {
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

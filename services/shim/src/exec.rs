//! `berth-shim exec`: run another process in a running container: join its cgroup and
//! namespaces (`setns`), fork into its pid namespace, and set the process up exactly as the
//! init was (user, capabilities, no_new_privs, seccomp). Setup errors go to the status fd;
//! the helper exits with the process's status.

use crate::error::{ShimError, Step};
use crate::process::{self, ProcessSpec};
use crate::run::read_json;
use berth_cgroups::{Cgroup, Layout};
use berth_proto::isolator::{ContainerSpec, ExecRequest, INIT_PID_FILE, SPEC_FILE};
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, CloneFlags};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, write, ForkResult};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
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
            let _ = write(&status, e.to_string().as_bytes());
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
    let host = process::hostname(&spec);
    let mut env = spec.env.clone();
    for e in &a.request.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    // SAFETY: the helper is single-threaded.
    match unsafe { fork() }.step(|| "fork into the pid namespace".into())? {
        ForkResult::Child => {
            let r = process::prepare(
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
            .and_then(|p| {
                process::cloexec_from_3()?;
                process::finish(&p)?;
                Ok(p)
            });
            match r {
                Ok(p) => process::exec(&p),
                Err(e) => {
                    let m = e.to_string();
                    // SAFETY: report and leave the forked child.
                    unsafe {
                        libc::write(STATUS_FD, m.as_ptr().cast(), m.len());
                        libc::_exit(125)
                    }
                }
            }
        }
        ForkResult::Parent { child } => loop {
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, c)) => return Ok(c),
                Ok(WaitStatus::Signaled(_, s, _)) => return Ok(128 + s as i32),
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).step(|| "wait for the process".into()),
            }
        },
    }
}

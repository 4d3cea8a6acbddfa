//! The last steps before `execve`, shared by a container's init and `exec`: user lookup,
//! working directory, command lookup, environment, rlimits, capabilities, no_new_privs and
//! seccomp.

use crate::caps as capset;
use crate::error::{ShimError, Step};
use crate::fsutil::{ensure_in, Kind};
use crate::seccomp;
use crate::user::{self, User};
use berth_policy::process::{rlimit_resource, DEFAULT_PATH};
use berth_proto::isolator::{ContainerSpec, Rlimit, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND};
use berth_proto::ErrorReason;
use caps::CapsHashSet;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{fchdir, setgroups, setresgid, setresuid, Gid, Uid};
use std::ffi::CString;
use std::os::fd::AsFd;

/// What the process will be, resolved inside the container (after `pivot_root` or `setns`).
pub struct Prepared {
    pub path: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub user: User,
    pub caps: CapsHashSet,
    pub seccomp: Option<berth_policy::seccomp::Program>,
    pub no_new_privs: bool,
    pub rlimits: Vec<Rlimit>,
}

/// The parts of a process description that `prepare` needs (the spec's, or an exec's
/// overrides on top of it).
pub struct ProcessSpec<'a> {
    pub args: &'a [String],
    pub env: Vec<String>,
    pub user: Option<&'a str>,
    pub working_dir: Option<&'a str>,
    pub hostname: &'a str,
}

fn cstr(s: &str, what: &str) -> Result<CString, ShimError> {
    CString::new(s).map_err(|_| ShimError::refused(what, format!("{s:?} contains a NUL byte")))
}

/// Set `key=value` in `env` unless the key is there already.
fn default_env(env: &mut Vec<String>, key: &str, value: &str) {
    let p = format!("{key}=");
    if !env.iter().any(|e| e.starts_with(&p)) {
        env.push(format!("{p}{value}"));
    }
}

fn env_get<'a>(env: &'a [String], key: &str) -> Option<&'a str> {
    let p = format!("{key}=");
    env.iter().rev().find_map(|e| e.strip_prefix(p.as_str()))
}

/// Find `arg0` in `PATH` as execvp would, inside the current root.
fn lookup(arg0: &str, env: &[String]) -> Result<String, ShimError> {
    let is_exec = |p: &str| -> Option<bool> {
        let md = std::fs::metadata(p).ok()?;
        use std::os::unix::fs::PermissionsExt;
        Some(md.is_file() && md.permissions().mode() & 0o111 != 0)
    };
    let failed = |reason, message: String| ShimError::Command { reason, message };
    if arg0.contains('/') {
        return match is_exec(arg0) {
            Some(true) => Ok(arg0.to_string()),
            Some(false) if std::path::Path::new(arg0).is_dir() => Err(failed(
                ErrorReason::CommandNotExecutable,
                format!("{arg0}: is a directory"),
            )),
            Some(false) => Err(failed(
                ErrorReason::CommandNotExecutable,
                format!("{arg0}: permission denied (not an executable file)"),
            )),
            None => Err(failed(
                ErrorReason::CommandNotFound,
                format!("{arg0}: no such file or directory"),
            )),
        };
    }
    let path = env_get(env, "PATH").unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let cand = format!("{}/{arg0}", dir.trim_end_matches('/'));
        if is_exec(&cand) == Some(true) {
            return Ok(cand);
        }
    }
    Err(failed(
        ErrorReason::CommandNotFound,
        format!("{arg0:?}: executable file not found in $PATH"),
    ))
}

/// Resolve user, working directory, command and environment; chdir into the working dir.
pub fn prepare(spec: &ContainerSpec, p: &ProcessSpec) -> Result<Prepared, ShimError> {
    if p.args.is_empty() {
        return Err(ShimError::refused("command", "no command given"));
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = user::resolve(p.user, &passwd, &group).map_err(|e| ShimError::refused("user", e))?;

    let root = open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .step(|| "open /".into())?;
    let cwd = p.working_dir.filter(|w| !w.is_empty()).unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(ShimError::refused(
            "working directory",
            format!("{cwd:?} is not an absolute path"),
        ));
    }
    let dir = ensure_in(&root, cwd, Kind::Dir)
        .map_err(|e| ShimError::refused("working directory", format!("{cwd}: {e}")))?;
    fchdir(dir.as_fd()).step(|| format!("chdir {cwd}"))?;

    let mut env = p.env.clone();
    default_env(&mut env, "PATH", DEFAULT_PATH);
    default_env(&mut env, "HOSTNAME", p.hostname);
    default_env(&mut env, "HOME", &user.home);
    if spec.tty {
        default_env(&mut env, "TERM", "xterm");
    }
    let path = lookup(&p.args[0], &env)?;
    let caps = berth_policy::caps::resolve(&spec.cap_add, &spec.cap_drop)
        .map_err(|e| ShimError::refused("capabilities", e))?;
    let seccomp = berth_policy::seccomp::program(spec, &caps)
        .map_err(|e| ShimError::invalid("seccomp", e))?;
    Ok(Prepared {
        path: cstr(&path, "command")?,
        argv: p
            .args
            .iter()
            .map(|a| cstr(a, "command"))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|e| cstr(e, "environment"))
            .collect::<Result<_, _>>()?,
        user,
        caps,
        seccomp,
        no_new_privs: spec.no_new_privileges,
        rlimits: spec.resources.ulimits.clone(),
    })
}

fn set_rlimits(limits: &[Rlimit]) -> Result<(), ShimError> {
    for l in limits {
        let res = rlimit_resource(&l.name)
            .ok_or_else(|| ShimError::refused("rlimits", format!("unknown ulimit {:?}", l.name)))?;
        let mut cur = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local.
        if unsafe { libc::getrlimit(res, &mut cur) } != 0 {
            return Err(std::io::Error::last_os_error()).step(|| format!("getrlimit {}", l.name));
        }
        // Never above the current hard limit: raising it needs CAP_SYS_RESOURCE.
        let hard = l.hard.min(cur.rlim_max);
        let new = libc::rlimit {
            rlim_cur: l.soft.min(hard),
            rlim_max: hard,
        };
        if unsafe { libc::setrlimit(res, &new) } != 0 {
            return Err(std::io::Error::last_os_error()).step(|| format!("setrlimit {}", l.name));
        }
    }
    Ok(())
}

/// rlimits, bounding set, ids, capabilities, no_new_privs and seccomp, in the order that
/// keeps each step permitted.
pub fn finish(p: &Prepared) -> Result<(), ShimError> {
    set_rlimits(&p.rlimits)?;
    capset::limit_bounding(&p.caps)?;
    // Without no_new_privs, installing a filter needs CAP_SYS_ADMIN: do it while we have it.
    if !p.no_new_privs {
        if let Some(prog) = &p.seccomp {
            seccomp::install(prog)?;
        }
    }
    capset::keep_across_setuid(true)?;
    let groups: Vec<Gid> = p.user.groups.iter().map(|&g| Gid::from_raw(g)).collect();
    setgroups(&groups).step(|| "setgroups".into())?;
    let gid = Gid::from_raw(p.user.gid);
    setresgid(gid, gid, gid).step(|| format!("setgid {}", p.user.gid))?;
    let uid = Uid::from_raw(p.user.uid);
    setresuid(uid, uid, uid).step(|| format!("setuid {}", p.user.uid))?;
    capset::keep_across_setuid(false)?;
    capset::apply(&p.caps)?;
    if p.no_new_privs {
        nix::sys::prctl::set_no_new_privs().step(|| "prctl(PR_SET_NO_NEW_PRIVS)".into())?;
        if let Some(prog) = &p.seccomp {
            seccomp::install(prog)?;
        }
    }
    Ok(())
}

/// `execve`; on failure print why on stderr and exit 126/127 as Docker does.
pub fn exec(p: &Prepared) -> ! {
    let e = nix::unistd::execve(&p.path, &p.argv, &p.envp).unwrap_err();
    let code = if e == nix::errno::Errno::ENOENT {
        EXIT_NOT_FOUND
    } else {
        EXIT_NOT_EXECUTABLE
    };
    let msg = format!("berth: exec {}: {e}\n", p.path.to_string_lossy());
    // SAFETY: write to fd 2 and _exit, nothing else.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(code)
    }
}

/// Mark every fd from 3 up close-on-exec, so only stdio crosses `execve`.
pub fn cloexec_from_3() -> Result<(), ShimError> {
    // SAFETY: close_range on a range of our own fds with CLOEXEC only marks them.
    let rc = unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).step(|| "close_range(CLOEXEC)".into());
    }
    Ok(())
}

/// Close every fd from `first` up. Only for the start of `main`, while the process is
/// single-threaded and nothing of its own is open above stdio: what the shim inherited beyond
/// what it was deliberately given must stay neither in the shim nor in what it forks.
pub fn close_from(first: u32) -> Result<(), ShimError> {
    // SAFETY: at the start of main no Rust object owns an fd from `first` up.
    let rc = unsafe { libc::close_range(first, u32::MAX, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .step(|| format!("close inherited fds from {first} (close_range)"));
    }
    Ok(())
}

/// Make the process non-dumpable: processes of the container cannot then open its
/// `/proc/<pid>/exe` (or mem, fds) without CAP_SYS_PTRACE.
pub fn non_dumpable() -> Result<(), ShimError> {
    nix::sys::prctl::set_dumpable(false).step(|| "prctl(PR_SET_DUMPABLE)".into())
}

/// Make process `pid` (0: the calling thread) run at `nice` from now on.
pub fn set_nice(pid: u32, nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority of one process; no memory is passed.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, pid, nice) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

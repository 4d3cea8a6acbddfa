//! berth's default seccomp profile: an allow-list, the same as Docker's current default
//! profile (moby's `profiles/seccomp`), written as groups of calls, each with the reason it
//! gets its answer.
//!
//! A call no group names fails with `EPERM`; a call numbered above every call named here
//! fails with `ENOSYS` (so a libc newer than the profile falls back to older calls), as
//! Docker's profile does under runc. Capability-gated groups are evaluated against the
//! container's capabilities (`cap_add: [SYS_ADMIN]` lets `mount` through, ...).

use super::profile::{Action, Arg, Entry, Filter, Op, Profile};
use std::borrow::Cow;

/// Who a group applies to.
enum When {
    Everyone,
    /// Containers holding this capability.
    Cap(&'static str),
    /// Containers not holding this capability.
    WithoutCap(&'static str),
    /// These architectures only (Docker's names: `amd64`, `arm64`).
    Arch(&'static [&'static str]),
    /// Kernels at or above this version.
    MinKernel(u32, u32),
}

struct Group {
    /// Why these calls get this answer.
    why: &'static str,
    calls: &'static [&'static str],
    when: When,
    action: Action,
    /// Any one of these conditions lets the call through (one entry each, as in Docker's).
    any_arg: &'static [Arg],
}

const fn allow(why: &'static str, calls: &'static [&'static str]) -> Group {
    Group {
        why,
        calls,
        when: When::Everyone,
        action: Action::Allow,
        any_arg: &[],
    }
}

const fn with_cap(cap: &'static str, why: &'static str, calls: &'static [&'static str]) -> Group {
    Group {
        why,
        calls,
        when: When::Cap(cap),
        action: Action::Allow,
        any_arg: &[],
    }
}

const fn arg0(op: Op, value: u64) -> Arg {
    Arg {
        index: 0,
        value,
        value_two: 0,
        op,
    }
}

/// Namespace flags `clone` may carry only with CAP_SYS_ADMIN: NEWNS, NEWCGROUP, NEWUTS,
/// NEWIPC, NEWUSER, NEWPID, NEWNET.
pub const CLONE_NAMESPACES: u64 = 0x7E02_0000;

/// Address families `socket` may not open: AF_ALG (38, the kernel's crypto API) and AF_VSOCK
/// (40, sockets to the hypervisor or host).
pub const AF_ALG: u64 = 38;
pub const AF_VSOCK: u64 = 40;

const GROUPS: &[Group] = &[
    allow(
        "files: open, read, write, seek, stat, sync, splice, ioctl",
        &[
            "access", "close", "close_range", "copy_file_range", "creat", "dup", "dup2", "dup3",
            "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate", "fcntl",
            "fcntl64", "fdatasync", "flock", "fstat", "fstat64", "fstatat64", "fstatfs",
            "fstatfs64", "fsync", "ftruncate", "ftruncate64", "ioctl", "_llseek", "lseek",
            "lstat", "lstat64", "name_to_handle_at", "newfstatat", "open", "openat", "openat2",
            "pread64", "preadv", "preadv2", "pwrite64", "pwritev", "pwritev2", "read",
            "readahead", "readv", "sendfile", "sendfile64", "splice", "stat", "stat64",
            "statfs", "statfs64", "statx", "sync", "sync_file_range", "syncfs", "tee",
            "truncate", "truncate64", "vmsplice", "write", "writev",
        ],
    ),
    allow(
        "directories, links and names; reading the mount table",
        &[
            "chdir", "fchdir", "getcwd", "getdents", "getdents64", "link", "linkat",
            "listmount", "mkdir", "mkdirat", "mknod", "mknodat", "readlink", "readlinkat",
            "rename", "renameat", "renameat2", "rmdir", "statmount", "symlink", "symlinkat",
            "umask", "unlink", "unlinkat",
        ],
    ),
    allow(
        "owners, modes and times of files (the kernel checks the permissions)",
        &[
            "chmod", "chown", "chown32", "fchmod", "fchmodat", "fchmodat2", "fchown",
            "fchown32", "fchownat", "futimesat", "lchown", "lchown32", "utime", "utimensat",
            "utimensat_time64", "utimes",
        ],
    ),
    allow(
        "extended attributes",
        &[
            "fgetxattr", "flistxattr", "fremovexattr", "fsetxattr", "getxattr", "getxattrat",
            "lgetxattr", "listxattr", "listxattrat", "llistxattr", "lremovexattr", "lsetxattr",
            "removexattr", "removexattrat", "setxattr", "setxattrat",
        ],
    ),
    allow(
        "pipes and waiting on descriptors: poll, select, epoll, eventfd, inotify, fanotify marks",
        &[
            "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
            "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2",
            "fanotify_mark", "inotify_add_watch", "inotify_init", "inotify_init1",
            "inotify_rm_watch", "_newselect", "pipe", "pipe2", "poll", "ppoll", "ppoll_time64",
            "pselect6", "pselect6_time64", "select", "signalfd", "signalfd4",
        ],
    ),
    allow(
        "asynchronous I/O and I/O priorities (io_uring is not here: it bypasses this filter)",
        &[
            "io_cancel", "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64",
            "io_setup", "io_submit", "ioprio_get", "ioprio_set",
        ],
    ),
    allow(
        "memory of the process",
        &[
            "brk", "cachestat", "madvise", "map_shadow_stack", "membarrier", "memfd_create",
            "memfd_secret", "mincore", "mlock", "mlock2", "mlockall", "mmap", "mmap2",
            "mprotect", "mremap", "mseal", "msync", "munlock", "munlockall", "munmap",
            "pkey_alloc", "pkey_free", "pkey_mprotect", "remap_file_pages",
        ],
    ),
    allow(
        "processes: exec, exit, fork (clone is filtered below), wait, pidfds",
        &[
            "execve", "execveat", "exit", "exit_group", "fork", "pidfd_open",
            "pidfd_send_signal", "process_mrelease", "vfork", "wait4", "waitid", "waitpid",
        ],
    ),
    allow(
        "threads: futexes, robust lists, restartable sequences, thread areas",
        &[
            "futex", "futex_requeue", "futex_time64", "futex_wait", "futex_waitv", "futex_wake",
            "get_robust_list", "get_thread_area", "gettid", "restart_syscall", "rseq",
            "set_robust_list", "set_thread_area", "set_tid_address",
        ],
    ),
    allow(
        "process ids, groups and sessions",
        &[
            "getpgid", "getpgrp", "getpid", "getppid", "getsid", "setpgid", "setsid",
        ],
    ),
    allow(
        "user and group ids (changing them needs CAP_SETUID/CAP_SETGID, checked by the kernel)",
        &[
            "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
            "getgroups32", "getresgid", "getresgid32", "getresuid", "getresuid32", "getuid",
            "getuid32", "setfsgid", "setfsgid32", "setfsuid", "setfsuid32", "setgid", "setgid32",
            "setgroups", "setgroups32", "setregid", "setregid32", "setresgid", "setresgid32",
            "setresuid", "setresuid32", "setreuid", "setreuid32", "setuid", "setuid32",
        ],
    ),
    allow(
        "limits, usage, capabilities and restricting oneself further (prctl, seccomp, landlock)",
        &[
            "capget", "capset", "getrlimit", "getrusage", "landlock_add_rule",
            "landlock_create_ruleset", "landlock_restrict_self", "prctl", "prlimit64",
            "seccomp", "setrlimit", "times", "ugetrlimit",
        ],
    ),
    allow(
        "signals",
        &[
            "alarm", "kill", "pause", "rt_sigaction", "rt_sigpending", "rt_sigprocmask",
            "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
            "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sigaltstack", "sigprocmask",
            "sigreturn", "tgkill", "tkill",
        ],
    ),
    allow(
        "clocks and timers (adjusting the clock still needs CAP_SYS_TIME, checked by the kernel)",
        &[
            "adjtimex", "clock_adjtime", "clock_adjtime64", "clock_getres",
            "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
            "clock_nanosleep_time64", "getitimer", "gettimeofday", "nanosleep", "setitimer",
            "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
            "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create",
            "timerfd_gettime", "timerfd_gettime64", "timerfd_settime", "timerfd_settime64",
        ],
    ),
    allow(
        "scheduling of the container's own processes",
        &[
            "getcpu", "getpriority", "sched_get_priority_max", "sched_get_priority_min",
            "sched_getaffinity", "sched_getattr", "sched_getparam", "sched_getscheduler",
            "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
            "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield",
            "setpriority",
        ],
    ),
    allow(
        "sockets once open (opening one is filtered by family below)",
        &[
            "accept", "accept4", "bind", "connect", "getpeername", "getsockname", "getsockopt",
            "listen", "recv", "recvfrom", "recvmmsg", "recvmmsg_time64", "recvmsg", "send",
            "sendmmsg", "sendmsg", "sendto", "setsockopt", "shutdown", "socketcall",
            "socketpair",
        ],
    ),
    allow(
        "System V and POSIX IPC (private to the container's IPC namespace)",
        &[
            "ipc", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
            "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink",
            "msgctl", "msgget", "msgrcv", "msgsnd", "semctl", "semget", "semop", "semtimedop",
            "semtimedop_time64", "shmat", "shmctl", "shmdt", "shmget",
        ],
    ),
    allow(
        "the host's name, memory and randomness as the container may see them",
        &["getrandom", "riscv_hwprobe", "sysinfo", "uname", "uretprobe"],
    ),
    Group {
        why: "ptrace and cross-process memory: since Linux 4.8 they cannot be used to get past seccomp",
        calls: &["process_vm_readv", "process_vm_writev", "ptrace"],
        when: When::MinKernel(4, 8),
        action: Action::Allow,
        any_arg: &[],
    },
    Group {
        why: "every address family but AF_ALG (kernel crypto) and AF_VSOCK (the host's sockets)",
        calls: &["socket"],
        when: When::Everyone,
        action: Action::Allow,
        any_arg: &[
            arg0(Op::Lt, AF_ALG),
            arg0(Op::Eq, AF_ALG + 1),
            arg0(Op::Gt, AF_VSOCK),
        ],
    },
    Group {
        why: "personality: Linux, PER_LINUX32, UNAME26 and the query; not READ_IMPLIES_EXEC nor ADDR_NO_RANDOMIZE",
        calls: &["personality"],
        when: When::Everyone,
        action: Action::Allow,
        any_arg: &[
            arg0(Op::Eq, 0),
            arg0(Op::Eq, 0x0008),
            arg0(Op::Eq, 0x0002_0000),
            arg0(Op::Eq, 0x0002_0008),
            arg0(Op::Eq, 0xffff_ffff),
        ],
    },
    Group {
        why: "x86-64 thread-local storage and descriptor tables",
        calls: &["arch_prctl", "modify_ldt"],
        when: When::Arch(&["amd64"]),
        action: Action::Allow,
        any_arg: &[],
    },
    Group {
        why: "ARM cache and TLS calls",
        calls: &[
            "arm_fadvise64_64", "arm_sync_file_range", "breakpoint", "cacheflush", "set_tls",
            "sync_file_range2",
        ],
        when: When::Arch(&["arm64"]),
        action: Action::Allow,
        any_arg: &[],
    },
    Group {
        why: "clone without namespace flags (new namespaces need CAP_SYS_ADMIN)",
        calls: &["clone"],
        when: When::WithoutCap("CAP_SYS_ADMIN"),
        action: Action::Allow,
        any_arg: &[Arg {
            index: 0,
            value: CLONE_NAMESPACES,
            value_two: 0,
            op: Op::MaskedEq,
        }],
    },
    Group {
        why: "clone3's flags sit in memory a filter cannot read: ENOSYS makes libc fall back to clone",
        calls: &["clone3"],
        when: When::WithoutCap("CAP_SYS_ADMIN"),
        action: Action::Errno(libc::ENOSYS as u16),
        any_arg: &[],
    },
    with_cap(
        "CAP_SYS_ADMIN",
        "mounts, namespaces, host name, BPF, perf, quotas and the kernel log: the admin's calls",
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "lsm_get_self_attr", "lsm_list_modules", "lsm_set_self_attr",
            "mount", "mount_setattr", "move_mount", "open_tree", "perf_event_open", "quotactl",
            "quotactl_fd", "setdomainname", "sethostname", "setns", "syslog", "umount",
            "umount2", "unshare",
        ],
    ),
    with_cap(
        "CAP_DAC_READ_SEARCH",
        "opening files by handle walks around directory permissions",
        &["open_by_handle_at"],
    ),
    with_cap("CAP_SYS_BOOT", "rebooting", &["reboot"]),
    with_cap("CAP_SYS_CHROOT", "chroot", &["chroot"]),
    with_cap(
        "CAP_SYS_MODULE",
        "loading and removing kernel modules",
        &["delete_module", "finit_module", "init_module"],
    ),
    with_cap("CAP_SYS_PACCT", "process accounting", &["acct"]),
    with_cap(
        "CAP_SYS_PTRACE",
        "reaching into other processes",
        &[
            "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
            "ptrace",
        ],
    ),
    with_cap("CAP_SYS_RAWIO", "I/O ports", &["ioperm", "iopl"]),
    with_cap(
        "CAP_SYS_TIME",
        "setting the system clock",
        &["clock_settime", "clock_settime64", "settimeofday", "stime"],
    ),
    with_cap("CAP_SYS_TTY_CONFIG", "hanging up the terminal", &["vhangup"]),
    with_cap(
        "CAP_SYS_NICE",
        "NUMA memory policies",
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    with_cap("CAP_SYSLOG", "the kernel log", &["syslog"]),
    with_cap("CAP_BPF", "BPF programs", &["bpf"]),
    with_cap("CAP_PERFMON", "performance monitoring", &["perf_event_open"]),
];

fn names(calls: &'static [&'static str]) -> Vec<Cow<'static, str>> {
    calls.iter().map(|c| Cow::Borrowed(*c)).collect()
}

/// berth's default profile (one entry per group, or per argument alternative).
pub fn profile() -> Profile {
    let mut syscalls = Vec::with_capacity(GROUPS.len() + 8);
    for g in GROUPS {
        let mut includes = Filter::default();
        let mut excludes = Filter::default();
        match g.when {
            When::Everyone => {}
            When::Cap(c) => includes.caps = vec![Cow::Borrowed(c)],
            When::WithoutCap(c) => excludes.caps = vec![Cow::Borrowed(c)],
            When::Arch(a) => includes.arches = a.iter().map(|a| Cow::Borrowed(*a)).collect(),
            When::MinKernel(major, minor) => includes.min_kernel = Some((major, minor, 0)),
        }
        let entry = |args: Vec<Arg>| Entry {
            names: names(g.calls),
            action: g.action,
            args,
            includes: includes.clone(),
            excludes: excludes.clone(),
        };
        if g.any_arg.is_empty() {
            syscalls.push(entry(vec![]));
        } else {
            syscalls.extend(g.any_arg.iter().map(|a| entry(vec![*a])));
        }
        debug_assert!(!g.why.is_empty());
    }
    Profile {
        default_action: Action::Errno(libc::EPERM as u16),
        flags: 0,
        syscalls,
    }
}

//! berth's default seccomp filter, compiled with `seccompiler`.
//!
//! Everything is allowed except what Docker's default profile refuses: those calls fail with
//! `EPERM` unless the container holds the capability that Docker's profile ties them to
//! (`cap_add: [SYS_ADMIN]` re-allows `mount`, ...). Syscall numbers above the highest this
//! build knows, and `clone3` (whose flags a filter cannot inspect), fail with `ENOSYS`, so a
//! newer libc falls back to the calls it had before instead of failing hard.

use crate::error::ShimError;
use caps::{Capability, CapsHashSet};
use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

/// The highest syscall number this build knows (`file_setattr`, Linux 6.17; numbers from 424
/// on are the same on every architecture).
pub const HIGHEST_KNOWN_SYSCALL: u32 = 469;

/// Named syscalls (name, number).
type Calls = Vec<(&'static str, i64)>;

/// Syscalls refused unless the container holds `cap` (`None`: always refused).
fn blocked() -> Vec<(Option<Capability>, Calls)> {
    use libc::*;
    let mut always = vec![
        ("keyctl", SYS_keyctl),
        ("add_key", SYS_add_key),
        ("request_key", SYS_request_key),
        ("userfaultfd", SYS_userfaultfd),
        ("io_uring_setup", SYS_io_uring_setup),
        ("io_uring_enter", SYS_io_uring_enter),
        ("io_uring_register", SYS_io_uring_register),
    ];
    #[cfg(target_arch = "x86_64")]
    always.extend([
        ("uselib", SYS_uselib),
        ("ustat", SYS_ustat),
        ("sysfs", SYS_sysfs),
        ("_sysctl", SYS__sysctl),
        ("nfsservctl", SYS_nfsservctl),
    ]);
    let mut rawio = vec![];
    #[cfg(target_arch = "x86_64")]
    rawio.extend([("iopl", SYS_iopl), ("ioperm", SYS_ioperm)]);
    vec![
        (None, always),
        (
            Some(Capability::CAP_SYS_ADMIN),
            vec![
                ("mount", SYS_mount),
                ("umount2", SYS_umount2),
                ("unshare", SYS_unshare),
                ("setns", SYS_setns),
                ("pivot_root", SYS_pivot_root),
                ("fsopen", SYS_fsopen),
                ("fsconfig", SYS_fsconfig),
                ("fsmount", SYS_fsmount),
                ("fspick", SYS_fspick),
                ("move_mount", SYS_move_mount),
                ("open_tree", SYS_open_tree),
                ("mount_setattr", SYS_mount_setattr),
                ("swapon", SYS_swapon),
                ("swapoff", SYS_swapoff),
                ("quotactl", SYS_quotactl),
                ("lookup_dcookie", SYS_lookup_dcookie),
                ("bpf", SYS_bpf),
                ("perf_event_open", SYS_perf_event_open),
                ("name_to_handle_at", SYS_name_to_handle_at),
                ("syslog", SYS_syslog),
                ("fanotify_init", SYS_fanotify_init),
            ],
        ),
        (
            Some(Capability::CAP_SYS_MODULE),
            vec![
                ("init_module", SYS_init_module),
                ("finit_module", SYS_finit_module),
                ("delete_module", SYS_delete_module),
            ],
        ),
        (
            Some(Capability::CAP_SYS_BOOT),
            vec![
                ("reboot", SYS_reboot),
                ("kexec_load", SYS_kexec_load),
                ("kexec_file_load", SYS_kexec_file_load),
            ],
        ),
        (
            Some(Capability::CAP_SYS_TIME),
            vec![
                ("settimeofday", SYS_settimeofday),
                ("clock_settime", SYS_clock_settime),
                ("clock_adjtime", SYS_clock_adjtime),
            ],
        ),
        (Some(Capability::CAP_SYS_PACCT), vec![("acct", SYS_acct)]),
        (Some(Capability::CAP_SYS_RAWIO), rawio),
        (
            Some(Capability::CAP_SYS_PTRACE),
            vec![
                ("process_vm_readv", SYS_process_vm_readv),
                ("process_vm_writev", SYS_process_vm_writev),
                ("kcmp", SYS_kcmp),
            ],
        ),
        (
            Some(Capability::CAP_SYS_NICE),
            vec![
                ("mbind", SYS_mbind),
                ("set_mempolicy", SYS_set_mempolicy),
                ("migrate_pages", SYS_migrate_pages),
                ("move_pages", SYS_move_pages),
            ],
        ),
        (
            Some(Capability::CAP_DAC_READ_SEARCH),
            vec![("open_by_handle_at", SYS_open_by_handle_at)],
        ),
        (
            Some(Capability::CAP_SYS_TTY_CONFIG),
            vec![("vhangup", SYS_vhangup)],
        ),
    ]
}

/// Namespace flags `clone` may not carry without CAP_SYS_ADMIN.
const CLONE_NS_FLAGS: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// Names of the syscalls the filter refuses for a container holding `caps`.
pub fn refused(caps: &CapsHashSet) -> Vec<&'static str> {
    blocked()
        .into_iter()
        .filter(|(cap, _)| cap.is_none_or(|c| !caps.contains(&c)))
        .flat_map(|(_, calls)| calls.into_iter().map(|(n, _)| n))
        .collect()
}

fn target_arch() -> Result<TargetArch, ShimError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| {
        ShimError::invalid(
            "seccomp",
            format!("no filter for architecture {}: {e}", std::env::consts::ARCH),
        )
    })
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JGT_K: u16 = 0x25;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Compile the filter for a container holding `caps`.
pub fn program(caps: &CapsHashSet) -> Result<BpfProgram, ShimError> {
    let err = |e: seccompiler::BackendError| ShimError::invalid("seccomp compile", e.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for (cap, calls) in blocked() {
        if cap.is_some_and(|c| caps.contains(&c)) {
            continue;
        }
        for (_, nr) in calls {
            rules.insert(nr, vec![]);
        }
    }
    if !caps.contains(&Capability::CAP_SYS_ADMIN) {
        let clone_rules = CLONE_NS_FLAGS
            .iter()
            .map(|&f| {
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(f as u64),
                    f as u64,
                )
                .and_then(|c| SeccompRule::new(vec![c]))
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        rules.insert(libc::SYS_clone, clone_rules);
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(err)?;
    let mut prog: BpfProgram = filter.try_into().map_err(err)?;
    // seccompiler's program: [0..3) architecture check, [3] load the syscall number, then one
    // chain per syscall. Insert the ENOSYS answers right after the load: nothing jumps over
    // this point, so the relative jumps of the chains stay valid.
    if prog.len() < 4 || prog[3] != stmt(BPF_LD_W_ABS, 0) {
        return Err(ShimError::invalid(
            "seccomp compile",
            "unexpected program layout from seccompiler",
        ));
    }
    let enosys = u32::from(SeccompAction::Errno(libc::ENOSYS as u32));
    let prefix = [
        jump(BPF_JMP_JGT_K, HIGHEST_KNOWN_SYSCALL, 0, 1),
        stmt(BPF_RET_K, enosys),
        jump(BPF_JMP_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(BPF_RET_K, enosys),
    ];
    prog.splice(4..4, prefix);
    Ok(prog)
}

/// Install `prog` on the calling thread. Without no_new_privs this needs CAP_SYS_ADMIN.
pub fn install(prog: &BpfProgram) -> Result<(), ShimError> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const sock_filter,
    }
    let fprog = SockFprog {
        len: prog.len() as u16,
        filter: prog.as_ptr(),
    };
    // SAFETY: the kernel copies the program; `fprog` and `prog` outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(ShimError::Sys {
            step: "install the seccomp filter".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_set_refuses_mount_and_keeps_enosys_prefix() {
        let caps: CapsHashSet = crate::caps::DEFAULT.iter().copied().collect();
        let r = refused(&caps);
        for n in [
            "mount",
            "unshare",
            "setns",
            "keyctl",
            "bpf",
            "io_uring_setup",
            "reboot",
        ] {
            assert!(r.contains(&n), "{n} should be refused");
        }
        let p = program(&caps).unwrap();
        assert_eq!(p[4].k, HIGHEST_KNOWN_SYSCALL);
        assert!(p.len() < 4096);
        let mut admin = caps.clone();
        admin.insert(Capability::CAP_SYS_ADMIN);
        let r = refused(&admin);
        assert!(!r.contains(&"mount") && r.contains(&"keyctl"));
    }
}

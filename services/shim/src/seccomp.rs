//! Seccomp in the shim: installing the filter `berth_policy::seccomp` resolved and compiled
//! for the container (which profile, against which capabilities, is decided there).

use crate::error::ShimError;
use berth_policy::seccomp::bpf::Insn;
use berth_policy::seccomp::Program;

/// Install `prog` on the calling thread. Without no_new_privs this needs CAP_SYS_ADMIN.
pub fn install(prog: &Program) -> Result<(), ShimError> {
    #[repr(C)]
    struct SockFprog {
        len: u16,
        filter: *const Insn,
    }
    let fprog = SockFprog {
        len: prog.insns.len() as u16,
        filter: prog.insns.as_ptr(),
    };
    // SAFETY: the kernel copies the program; `fprog` and `prog` outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            prog.flags,
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

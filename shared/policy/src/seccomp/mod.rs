//! Seccomp: which profile a container gets, resolved against its capabilities, the
//! architecture and the kernel, and compiled to BPF (the shim installs it: `berth-shim`'s
//! `seccomp.rs`).
//!
//! - berth's default profile ([`default`]): Docker's default allow-list as a Rust table.
//! - A user's profile in Docker's JSON format ([`profile`]), from `--security-opt
//!   seccomp=FILE` or Compose's `security_opt`.
//! - `seccomp=unconfined`: no filter.
//!
//! Resolution follows Docker and runc: an entry applies when the container holds all of its
//! `includes.caps`, none of its `excludes.caps`, and the architecture and kernel fit; names
//! the architecture lacks are skipped; an entry with the default action is dropped; two
//! conditions on the same argument make one rule each (either lets the call through). The
//! first rule whose conditions hold decides. Unless the default action allows, calls numbered
//! above every call the profile names fail with ENOSYS (runc's rule), so a libc newer than
//! the profile falls back to older calls. Only the native ABI is filtered: a call of another
//! (i386 or x32 on x86-64) kills the process.

pub mod bpf;
pub mod default;
pub mod profile;
pub mod syscalls;

use berth_proto::isolator::ContainerSpec;
use bpf::{Insn, Resolved, Rule};
use caps::{Capability, CapsHashSet};
use profile::{Action, Entry, Profile, ProfileError};
use serde_json::{json, Value};
use std::str::FromStr;

/// An architecture berth filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// The architecture this build runs on.
    pub fn native() -> Result<Arch, String> {
        match std::env::consts::ARCH {
            "x86_64" => Ok(Arch::X86_64),
            "aarch64" => Ok(Arch::Aarch64),
            other => Err(format!("no seccomp filter for architecture {other}")),
        }
    }
    /// Docker's (Go's) name, as in `includes.arches`.
    pub fn docker_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }
    /// libseccomp's name, as in `architectures`.
    pub fn scmp_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::Aarch64 => "SCMP_ARCH_AARCH64",
        }
    }
    fn audit(self) -> u32 {
        match self {
            Arch::X86_64 => 0xC000_003E,
            Arch::Aarch64 => 0xC000_00B7,
        }
    }
    /// Syscall numbers by name.
    pub fn table(self) -> &'static [(&'static str, u32)] {
        match self {
            Arch::X86_64 => syscalls::X86_64,
            Arch::Aarch64 => syscalls::AARCH64,
        }
    }
}

/// The running kernel's version (major, minor, patch).
pub fn kernel() -> (u32, u32, u32) {
    static K: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    *K.get_or_init(|| {
        nix::sys::utsname::uname()
            .ok()
            .and_then(|u| profile::kernel_version(&u.release().to_string_lossy()))
            .unwrap_or((0, 0, 0))
    })
}

/// The profile `spec` asks for: `None` when unconfined, berth's default, or the user's
/// (checked; a bad one is refused with the source, field and entry).
pub fn profile_of(spec: &ContainerSpec) -> Result<Option<Profile>, String> {
    if !spec.seccomp {
        return Ok(None);
    }
    match &spec.seccomp_profile {
        None => Ok(Some(default::profile())),
        Some(p) => profile::parse(&p.json)
            .map(Some)
            .map_err(|e: ProfileError| format!("{}: {e}", p.source)),
    }
}

/// Whether the container holds every capability named (names it does not know: not held).
fn holds_all(caps: &CapsHashSet, names: &[std::borrow::Cow<'static, str>]) -> bool {
    names
        .iter()
        .all(|n| Capability::from_str(&n.to_ascii_uppercase()).is_ok_and(|c| caps.contains(&c)))
}

fn holds_any(caps: &CapsHashSet, names: &[std::borrow::Cow<'static, str>]) -> bool {
    names
        .iter()
        .any(|n| Capability::from_str(&n.to_ascii_uppercase()).is_ok_and(|c| caps.contains(&c)))
}

/// Whether entry `e` applies to a container holding `caps` on `arch` and `kernel`.
pub fn applies(e: &Entry, caps: &CapsHashSet, arch: Arch, kernel: (u32, u32, u32)) -> bool {
    let arch_in = |a: &[std::borrow::Cow<'static, str>]| a.iter().any(|n| n == arch.docker_name());
    let i = &e.includes;
    let x = &e.excludes;
    holds_all(caps, &i.caps)
        && (i.arches.is_empty() || arch_in(&i.arches))
        && i.min_kernel.is_none_or(|m| kernel >= m)
        && (x.caps.is_empty() || !holds_any(caps, &x.caps))
        && !arch_in(&x.arches)
        && x.min_kernel.is_none_or(|m| kernel < m)
}

/// Resolve `p` for a container holding `caps`.
pub fn resolve(p: &Profile, caps: &CapsHashSet, arch: Arch, kernel: (u32, u32, u32)) -> Resolved {
    let table = arch.table();
    let mut rules = Vec::new();
    let mut highest = None;
    for e in p.syscalls.iter().filter(|e| applies(e, caps, arch, kernel)) {
        let same_index = (0..6).any(|i| e.args.iter().filter(|a| a.index == i).count() > 1);
        for name in &e.names {
            let Some(nr) = syscalls::number(table, name) else {
                continue;
            };
            highest = highest.max(Some(nr));
            if e.action == p.default_action {
                continue;
            }
            if same_index {
                rules.extend(e.args.iter().map(|a| Rule {
                    nr,
                    action: e.action,
                    args: vec![*a],
                }));
            } else {
                rules.push(Rule {
                    nr,
                    action: e.action,
                    args: e.args.clone(),
                });
            }
        }
    }
    let allows = matches!(p.default_action, Action::Allow | Action::Log);
    Resolved {
        audit_arch: arch.audit(),
        default: p.default_action,
        rules,
        enosys_above: if allows { None } else { highest },
    }
}

/// A compiled filter and the seccomp(2) flags to install it with.
#[derive(Debug, Clone)]
pub struct Program {
    pub insns: Vec<Insn>,
    pub flags: u32,
}

/// The filter for `spec` and a container holding `caps` (`None`: unconfined).
pub fn program(spec: &ContainerSpec, caps: &CapsHashSet) -> Result<Option<Program>, String> {
    let Some(p) = profile_of(spec)? else {
        return Ok(None);
    };
    let arch = Arch::native()?;
    let insns = bpf::compile(&resolve(&p, caps, arch, kernel()))?;
    Ok(Some(Program {
        insns,
        flags: p.flags,
    }))
}

/// Check `spec`'s profile as the shim will use it: one line naming the file, field and
/// entry when it is wrong.
pub fn check(spec: &ContainerSpec, caps: &CapsHashSet) -> Result<(), String> {
    let Some(p) = profile_of(spec)? else {
        return Ok(());
    };
    let arch = Arch::native()?;
    bpf::compile(&resolve(&p, caps, arch, kernel()))
        .map(|_| ())
        .map_err(|e| {
            let source = spec
                .seccomp_profile
                .as_ref()
                .map_or("berth's default", |p| p.source.as_str());
            format!("{source}: {e}")
        })
}

fn action_name(a: Action) -> (&'static str, Option<u16>) {
    match a {
        Action::Allow => ("SCMP_ACT_ALLOW", None),
        Action::Errno(e) => ("SCMP_ACT_ERRNO", Some(e)),
        Action::KillThread => ("SCMP_ACT_KILL_THREAD", None),
        Action::KillProcess => ("SCMP_ACT_KILL_PROCESS", None),
        Action::Trap => ("SCMP_ACT_TRAP", None),
        Action::Log => ("SCMP_ACT_LOG", None),
        Action::Trace(d) => ("SCMP_ACT_TRACE", Some(d)),
    }
}

fn op_name(o: profile::Op) -> &'static str {
    use profile::Op::*;
    match o {
        Eq => "SCMP_CMP_EQ",
        Ne => "SCMP_CMP_NE",
        Lt => "SCMP_CMP_LT",
        Le => "SCMP_CMP_LE",
        Gt => "SCMP_CMP_GT",
        Ge => "SCMP_CMP_GE",
        MaskedEq => "SCMP_CMP_MASKED_EQ",
    }
}

/// `linux.seccomp` of the OCI `config.json` for `spec` (`None`: unconfined): the profile
/// resolved for the container's capabilities, so runc applies the same rules.
pub fn oci(spec: &ContainerSpec, caps: &CapsHashSet) -> Result<Option<Value>, String> {
    let Some(p) = profile_of(spec)? else {
        return Ok(None);
    };
    let arch = Arch::native()?;
    let kernel = kernel();
    let table = arch.table();
    let (default, default_errno) = action_name(p.default_action);
    let mut syscalls = Vec::new();
    for e in p.syscalls.iter().filter(|e| applies(e, caps, arch, kernel)) {
        let names: Vec<&str> = e
            .names
            .iter()
            .map(|n| n.as_ref())
            .filter(|n| syscalls::number(table, n).is_some())
            .collect();
        if names.is_empty() || e.action == p.default_action {
            continue;
        }
        let (action, errno) = action_name(e.action);
        let mut s = json!({"names": names, "action": action});
        if let Some(errno) = errno {
            s["errnoRet"] = json!(errno);
        }
        if !e.args.is_empty() {
            s["args"] = e
                .args
                .iter()
                .map(|a| {
                    json!({"index": a.index, "value": a.value, "valueTwo": a.value_two,
                           "op": op_name(a.op)})
                })
                .collect();
        }
        syscalls.push(s);
    }
    let mut v = json!({
        "defaultAction": default,
        "architectures": [arch.scmp_name()],
        "syscalls": syscalls,
    });
    if let Some(errno) = default_errno {
        v["defaultErrnoRet"] = json!(errno);
    }
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(extra: &[Capability]) -> CapsHashSet {
        let mut c: CapsHashSet = crate::caps::DEFAULT.iter().copied().collect();
        c.extend(extra.iter().copied());
        c
    }

    fn nr(name: &str) -> u32 {
        syscalls::number(syscalls::X86_64, name).unwrap()
    }

    const EPERM: u32 = 0x0005_0001;
    const ENOSYS: u32 = 0x0005_0026;
    const ALLOW: u32 = 0x7fff_0000;
    const X86: u32 = 0xC000_003E;

    /// The default profile, compiled for x86-64 and run on one call.
    fn default_says(caps: &CapsHashSet, call: &str, args: [u64; 6]) -> u32 {
        let r = resolve(&default::profile(), caps, Arch::X86_64, (6, 1, 0));
        let prog = bpf::compile(&r).unwrap();
        let got = bpf::run(&prog, X86, nr(call), args);
        assert_eq!(got, bpf::reference(&r, X86, nr(call), args), "{call}");
        got
    }

    #[test]
    fn default_profile_is_an_allow_list_with_docker_argument_filters() {
        let c = caps(&[]);
        let a = |x: u64| [x, 0, 0, 0, 0, 0];
        assert_eq!(default_says(&c, "read", a(0)), ALLOW);
        assert_eq!(default_says(&c, "mount", a(0)), EPERM);
        assert_eq!(default_says(&c, "keyctl", a(0)), EPERM);
        assert_eq!(default_says(&c, "io_uring_setup", a(0)), EPERM);
        assert_eq!(default_says(&c, "pidfd_getfd", a(0)), EPERM);
        assert_eq!(default_says(&c, "process_madvise", a(0)), EPERM);
        assert_eq!(default_says(&c, "ptrace", a(0)), ALLOW);
        assert_eq!(default_says(&c, "personality", a(0xffff_ffff)), ALLOW);
        assert_eq!(default_says(&c, "personality", a(0x0040_0000)), EPERM);
        assert_eq!(default_says(&c, "personality", a(0x1_0000_0000)), EPERM);
        assert_eq!(default_says(&c, "socket", a(2)), ALLOW);
        assert_eq!(default_says(&c, "socket", a(default::AF_ALG)), EPERM);
        assert_eq!(default_says(&c, "socket", a(39)), ALLOW);
        assert_eq!(default_says(&c, "socket", a(default::AF_VSOCK)), EPERM);
        assert_eq!(default_says(&c, "socket", a(44)), ALLOW);
        assert_eq!(default_says(&c, "clone", a(0x0001_1200)), ALLOW);
        assert_eq!(default_says(&c, "clone", a(0x1000_0000)), EPERM);
        assert_eq!(default_says(&c, "clone3", a(0)), ENOSYS);
        // Above every call the profile names: ENOSYS.
        assert_eq!(default_says(&c, "file_setattr", a(0)), ENOSYS);

        let admin = caps(&[Capability::CAP_SYS_ADMIN]);
        assert_eq!(default_says(&admin, "mount", a(0)), ALLOW);
        assert_eq!(default_says(&admin, "clone", a(0x1000_0000)), ALLOW);
        assert_eq!(default_says(&admin, "clone3", a(0)), ALLOW);
        assert_eq!(default_says(&admin, "keyctl", a(0)), EPERM);
        let ptrace = caps(&[Capability::CAP_SYS_PTRACE]);
        assert_eq!(default_says(&ptrace, "pidfd_getfd", a(0)), ALLOW);
        let time = caps(&[Capability::CAP_SYS_TIME]);
        assert_eq!(default_says(&c, "settimeofday", a(0)), EPERM);
        assert_eq!(default_says(&time, "settimeofday", a(0)), ALLOW);
    }

    #[test]
    fn every_call_compiles_as_resolved() {
        let r = resolve(&default::profile(), &caps(&[]), Arch::X86_64, (6, 1, 0));
        let prog = bpf::compile(&r).unwrap();
        assert!(prog.len() < 600, "{} instructions", prog.len());
        for nr in 0..600 {
            for a0 in [0, 1, 38, 40, 0x7E02_0000, 0xffff_ffff] {
                let args = [a0, 0, 0, 0, 0, 0];
                assert_eq!(
                    bpf::run(&prog, X86, nr, args),
                    bpf::reference(&r, X86, nr, args),
                    "nr {nr} arg {a0}"
                );
            }
        }
    }

    #[test]
    fn user_profiles_resolve_like_runc() {
        let p = profile::parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["mkdir","no_such_call"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
                {"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
                {"names":["kill"],"action":"SCMP_ACT_ERRNO",
                 "args":[{"index":1,"value":9,"op":"SCMP_CMP_EQ"},{"index":1,"value":15,"op":"SCMP_CMP_EQ"}]},
                {"names":["chroot"],"action":"SCMP_ACT_KILL","excludes":{"caps":["CAP_SYS_CHROOT"]}}]}"#,
        )
        .unwrap();
        let r = resolve(&p, &caps(&[]), Arch::X86_64, (6, 1, 0));
        assert_eq!(r.enosys_above, None);
        let prog = bpf::compile(&r).unwrap();
        let run = |call: &str, a1: u64| bpf::run(&prog, X86, nr(call), [0, a1, 0, 0, 0, 0]);
        assert_eq!(run("mkdir", 0), 0x0005_000d);
        assert_eq!(run("getpid", 0), ALLOW);
        assert_eq!(run("kill", 9), EPERM);
        assert_eq!(run("kill", 15), EPERM);
        assert_eq!(run("kill", 1), ALLOW);
        assert_eq!(run("chroot", 0), ALLOW);
        // The container's default capabilities include CAP_SYS_CHROOT.
        assert!(caps(&[]).contains(&Capability::CAP_SYS_CHROOT));
    }

    #[test]
    fn oci_config_lists_what_applies() {
        let spec = ContainerSpec {
            seccomp: true,
            ..Default::default()
        };
        let v = oci(&spec, &caps(&[])).unwrap().unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["defaultErrnoRet"], 1);
        let all: Vec<&str> = v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["names"].as_array().unwrap())
            .map(|n| n.as_str().unwrap())
            .collect();
        assert!(all.contains(&"read") && all.contains(&"clone3"));
        assert!(!all.contains(&"mount") && !all.contains(&"_llseek"));
        let unconfined = ContainerSpec::default();
        assert!(oci(&unconfined, &caps(&[])).unwrap().is_none());
    }
}

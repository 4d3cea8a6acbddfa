//! Which device nodes a container's processes may create (`mknod`), read and write.
//!
//! A rule allows one access set on one device, a whole major (`c 136:*`) or every device of
//! a type (`c *:* m`); everything no rule allows is refused with `EPERM`, whatever the file
//! permissions of the node say. The kernel enforces it:
//! - cgroup v1: the `devices` controller, `a` written to `devices.deny` then one line per rule
//!   to `devices.allow` ([`DeviceRule::v1_line`]);
//! - cgroup v2: a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup's directory
//!   ([`attach_program`]), hand-assembled from the rules ([`program`]) and loaded with raw
//!   `bpf(2)` calls.

use crate::CgroupError;
use std::fmt;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Which devices a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceType {
    /// Both character and block devices (v1 `a`).
    All,
    Char,
    Block,
}

impl DeviceType {
    fn letter(self) -> char {
        match self {
            DeviceType::All => 'a',
            DeviceType::Char => 'c',
            DeviceType::Block => 'b',
        }
    }
}

/// A set of accesses: `m` (mknod), `r` (open for reading), `w` (open for writing). The bits
/// are the kernel's `BPF_DEVCG_ACC_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access(u8);

impl Access {
    pub const MKNOD: Access = Access(1);
    pub const READ: Access = Access(2);
    pub const WRITE: Access = Access(4);
    pub const ALL: Access = Access(7);

    /// `rwm`, `r`, `mw`, ...: each letter once, nothing else, at least one.
    pub fn parse(s: &str) -> Option<Access> {
        let mut bits = 0u8;
        for c in s.chars() {
            let b = match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => return None,
            };
            if bits & b != 0 {
                return None;
            }
            bits |= b;
        }
        (bits != 0).then_some(Access(bits))
    }

    pub fn bits(self) -> u8 {
        self.0
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (b, c) in [(2, 'r'), (4, 'w'), (1, 'm')] {
            if self.0 & b != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// One allow rule. `None` for a major or minor number means any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    pub kind: DeviceType,
    pub major: Option<u32>,
    pub minor: Option<u32>,
    pub access: Access,
}

impl DeviceRule {
    /// A rule for one character device.
    pub const fn char(major: u32, minor: u32, access: Access) -> DeviceRule {
        DeviceRule {
            kind: DeviceType::Char,
            major: Some(major),
            minor: Some(minor),
            access,
        }
    }

    /// The rule as cgroup v1's `devices.allow` takes it: `c 1:3 rwm`, `c 136:* rwm`.
    pub fn v1_line(&self) -> String {
        let n = |x: Option<u32>| x.map_or("*".to_string(), |v| v.to_string());
        format!(
            "{} {}:{} {}",
            self.kind.letter(),
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// `dst_reg:4, src_reg:4`, in the bit order of the target.
    regs: u8,
    off: i16,
    imm: i32,
}

// Registers.
const R0: u8 = 0;
const R1: u8 = 1;
const R2: u8 = 2;
const R3: u8 = 3;
const R4: u8 = 4;
const R5: u8 = 5;

// Opcodes: class | operation | source (linux/bpf_common.h, linux/bpf.h).
/// `BPF_LDX | BPF_MEM | BPF_W`: dst = *(u32 *)(src + off).
const LDX_W: u8 = 0x61;
/// `BPF_ALU64 | BPF_AND | BPF_K`: dst &= imm.
const AND_K: u8 = 0x57;
/// `BPF_ALU64 | BPF_RSH | BPF_K`: dst >>= imm.
const RSH_K: u8 = 0x77;
/// `BPF_ALU64 | BPF_MOV | BPF_K`: dst = imm.
const MOV_K: u8 = 0xb7;
/// `BPF_ALU64 | BPF_MOV | BPF_X`: dst = src.
const MOV_X: u8 = 0xbf;
/// `BPF_JMP | BPF_JNE | BPF_K`: if dst != imm, skip `off` instructions.
const JNE_K: u8 = 0x55;
/// `BPF_JMP | BPF_JNE | BPF_X`: if dst != src, skip `off` instructions.
const JNE_X: u8 = 0x5d;
/// `BPF_JMP | BPF_EXIT`: return r0.
const EXIT: u8 = 0x95;

/// `BPF_DEVCG_DEV_BLOCK`, `BPF_DEVCG_DEV_CHAR`: the device type in the low 16 bits of the
/// context's `access_type`.
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    #[cfg(target_endian = "little")]
    let regs = dst | (src << 4);
    #[cfg(target_endian = "big")]
    let regs = (dst << 4) | src;
    Insn {
        code,
        regs,
        off,
        imm,
    }
}

/// The device program for `rules`: 1 (allow) for the first rule that matches the access
/// asked for, 0 (refuse) when none does. Its context (`struct bpf_cgroup_dev_ctx`) is three
/// u32s: `access_type` (access bits << 16 | device type), `major`, `minor`.
pub fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        // r2 = the device type (low 16 bits of access_type).
        insn(LDX_W, R2, R1, 0, 0),
        insn(AND_K, R2, 0, 0, 0xffff),
        // r3 = the access asked for (high 16 bits of access_type).
        insn(LDX_W, R3, R1, 0, 0),
        insn(RSH_K, R3, 0, 0, 16),
        // r4 = major, r5 = minor.
        insn(LDX_W, R4, R1, 4, 0),
        insn(LDX_W, R5, R1, 8, 0),
    ];
    for r in rules {
        // Each check jumps past the rest of this rule's block when it does not match; the
        // offsets are filled in once the block's length is known.
        let mut block: Vec<Insn> = Vec::new();
        match r.kind {
            DeviceType::All => {}
            DeviceType::Char => block.push(insn(JNE_K, R2, 0, 0, DEV_CHAR)),
            DeviceType::Block => block.push(insn(JNE_K, R2, 0, 0, DEV_BLOCK)),
        }
        if r.access != Access::ALL {
            // The access asked for must be within the rule's: (r3 & rule) == r3. r1 (the
            // context) is free: everything was read from it above.
            block.push(insn(MOV_X, R1, R3, 0, 0));
            block.push(insn(AND_K, R1, 0, 0, i32::from(r.access.bits())));
            block.push(insn(JNE_X, R1, R3, 0, 0));
        }
        if let Some(m) = r.major {
            block.push(insn(JNE_K, R4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            block.push(insn(JNE_K, R5, 0, 0, m as i32));
        }
        // Matched: allow.
        block.push(insn(MOV_K, R0, 0, 0, 1));
        block.push(insn(EXIT, 0, 0, 0, 0));
        let n = block.len();
        for (i, ins) in block.iter_mut().enumerate() {
            if ins.code == JNE_K || ins.code == JNE_X {
                // Relative to the next instruction: past the rest of the block.
                ins.off = (n - 1 - i) as i16;
            }
        }
        p.extend(block);
    }
    // No rule matched: refuse.
    p.push(insn(MOV_K, R0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    p
}

// bpf(2) commands, program and attach types, flags (linux/bpf.h).
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
/// Other programs may be attached to the same cgroup and its ancestors (systemd attaches its
/// own to the units it delegates); a device access must pass all of them.
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<i64> {
    // SAFETY: `attr` is a live, initialised `repr(C)` prefix of `union bpf_attr` for `cmd`,
    // and its size is passed with it; the kernel reads at most that many bytes and writes
    // nothing into it for the two commands used here.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r)
}

const LICENSE: &[u8] = b"Apache-2.0\0";

/// Load `prog` as a cgroup device program. On a refusal by the verifier, load it again with
/// its log, so the error says why.
pub fn load(prog: &[Insn]) -> Result<OwnedFd, CgroupError> {
    let mut name = [0u8; 16];
    name[..12].copy_from_slice(b"berth_device");
    let attr = |log: &mut [u8]| ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: prog.len() as u32,
        insns: prog.as_ptr() as u64,
        license: LICENSE.as_ptr() as u64,
        log_level: u32::from(!log.is_empty()),
        log_size: log.len() as u32,
        log_buf: if log.is_empty() {
            0
        } else {
            log.as_mut_ptr() as u64
        },
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let err = |source: std::io::Error| CgroupError::Bpf {
        step: "load the device program (BPF_PROG_LOAD)",
        source,
    };
    match bpf(BPF_PROG_LOAD, &mut attr(&mut [])) {
        // SAFETY: a new fd returned by the kernel, owned by nobody else.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EACCES)) => {
            let mut log = vec![0u8; 16 * 1024];
            let again = bpf(BPF_PROG_LOAD, &mut attr(&mut log));
            if let Ok(fd) = again {
                // SAFETY: as above.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            Err(err(std::io::Error::new(
                e.kind(),
                format!("{e}; verifier: {}", text.trim()),
            )))
        }
        Err(e) => Err(err(e)),
    }
}

/// Attach a device program allowing only `rules` to the cgroup v2 directory `dir`. The
/// kernel holds the program from then on; it goes with the cgroup.
pub fn attach_program(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    let prog = load(&program(rules))?;
    let cg = std::fs::File::open(dir).map_err(|source| CgroupError::Io {
        step: "open",
        path: dir.to_path_buf(),
        source,
    })?;
    let mut attr = ProgAttachAttr {
        target_fd: cg.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..ProgAttachAttr::default()
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map_err(|source| CgroupError::Io {
        step: "attach the device program to",
        path: dir.to_path_buf(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_parses_only_rwm_once_each() {
        assert_eq!(Access::parse("rwm"), Some(Access::ALL));
        assert_eq!(Access::parse("mr").unwrap().to_string(), "rm");
        assert_eq!(Access::parse("r"), Some(Access::READ));
        assert_eq!(Access::parse(""), None);
        assert_eq!(Access::parse("rr"), None);
        assert_eq!(Access::parse("rx"), None);
    }

    #[test]
    fn v1_lines() {
        assert_eq!(DeviceRule::char(1, 3, Access::ALL).v1_line(), "c 1:3 rwm");
        let pts = DeviceRule {
            kind: DeviceType::Char,
            major: Some(136),
            minor: None,
            access: Access::ALL,
        };
        assert_eq!(pts.v1_line(), "c 136:* rwm");
        let mknod = DeviceRule {
            kind: DeviceType::Block,
            major: None,
            minor: None,
            access: Access::MKNOD,
        };
        assert_eq!(mknod.v1_line(), "b *:* m");
    }

    /// Run `prog` on a context the way the kernel would, to check the jumps.
    fn interpret(prog: &[Insn], kind: i32, access: u8, major: u32, minor: u32) -> u64 {
        let ctx = [((access as u32) << 16) | kind as u32, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            #[cfg(target_endian = "little")]
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            #[cfg(target_endian = "big")]
            let (dst, src) = ((i.regs >> 4) as usize, (i.regs & 0xf) as usize);
            pc += 1;
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1, "loads only from the context");
                    r[dst] = u64::from(ctx[i.off as usize / 4]);
                }
                AND_K => r[dst] &= i.imm as i64 as u64,
                RSH_K => r[dst] >>= i.imm,
                MOV_K => r[dst] = i.imm as i64 as u64,
                MOV_X => r[dst] = r[src],
                JNE_K if r[dst] != i.imm as i64 as u64 => pc += i.off as usize,
                JNE_X if r[dst] != r[src] => pc += i.off as usize,
                JNE_K | JNE_X => {}
                EXIT => return r[0],
                c => panic!("unknown opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn program_allows_what_a_rule_allows_and_nothing_else() {
        let rules = [
            DeviceRule {
                kind: DeviceType::Char,
                major: None,
                minor: None,
                access: Access::MKNOD,
            },
            DeviceRule::char(1, 3, Access::ALL),
            DeviceRule {
                kind: DeviceType::Char,
                major: Some(136),
                minor: None,
                access: Access::ALL,
            },
            DeviceRule {
                kind: DeviceType::Block,
                major: Some(7),
                minor: Some(0),
                access: Access::READ,
            },
        ];
        let p = program(&rules);
        let (c, b) = (DEV_CHAR, DEV_BLOCK);
        assert_eq!(interpret(&p, c, 2 | 4, 1, 3), 1, "/dev/null rw");
        assert_eq!(
            interpret(&p, c, 2, 1, 5),
            0,
            "/dev/zero is not in the rules"
        );
        assert_eq!(interpret(&p, c, 1, 10, 200), 1, "mknod of any char device");
        assert_eq!(
            interpret(&p, b, 1, 8, 0),
            0,
            "no mknod rule for block devices"
        );
        assert_eq!(interpret(&p, c, 2, 136, 7), 1, "any pts");
        assert_eq!(interpret(&p, b, 2, 7, 0), 1, "loop0 read");
        assert_eq!(interpret(&p, b, 4, 7, 0), 0, "loop0 write");
        assert_eq!(interpret(&p, b, 2, 7, 1), 0, "loop1");
        assert_eq!(
            interpret(&p, c, 2, 7, 0),
            0,
            "a char device 7:0 is not the block one"
        );
        assert_eq!(interpret(&program(&[]), c, 2, 1, 3), 0, "no rules: nothing");
    }
}

//! Compiles a resolved filter (rules per syscall number) to a classic BPF program for
//! seccomp(2).
//!
//! Layout: check the architecture (another one kills the process); with an ENOSYS limit,
//! any number above it fails with ENOSYS; then a binary search over ranges of syscall
//! numbers (about nine comparisons for a profile of 370 calls, where a chain of one test per
//! call would make the last ones pay hundreds); a range either returns at once or enters the
//! rules of one call, whose argument conditions compare full 64-bit values as libseccomp
//! does.

use super::profile::{Action, Arg, Op};

/// One instruction, as the kernel reads it (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The kernel's limit on a program's length (BPF_MAXINSNS).
pub const MAX_INSNS: usize = 4096;

/// All conditions must hold for `action` to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub nr: u32,
    pub action: Action,
    pub args: Vec<Arg>,
}

/// What the program decides, before compilation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `AUDIT_ARCH_*` of the only ABI allowed.
    pub audit_arch: u32,
    pub default: Action,
    /// In the order they are tried; the first whose conditions hold decides.
    pub rules: Vec<Rule>,
    /// Calls numbered above this fail with ENOSYS.
    pub enosys_above: Option<u32>,
}

// Opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20;
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JGE_K: u16 = 0x35;
const ALU_AND_K: u16 = 0x54;
const RET_K: u16 = 0x06;

// Offsets in `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARGS: u32 = 16;

/// The return value of an action (linux/seccomp.h).
pub fn ret(a: Action) -> u32 {
    match a {
        Action::KillProcess => 0x8000_0000,
        Action::KillThread => 0,
        Action::Trap => 0x0003_0000,
        Action::Errno(e) => 0x0005_0000 | u32::from(e),
        Action::Trace(d) => 0x7ff0_0000 | u32::from(d),
        Action::Log => 0x7ffc_0000,
        Action::Allow => 0x7fff_0000,
    }
}

type Label = usize;

enum Item {
    Stmt(u16, u32),
    /// Go to `to` when the comparison holds (`when` true) or fails (`when` false).
    Jump {
        code: u16,
        k: u32,
        to: Label,
        when: bool,
    },
    Ja(Label),
    Here(Label),
}

#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: usize,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        self.labels - 1
    }
    fn stmt(&mut self, code: u16, k: u32) {
        self.items.push(Item::Stmt(code, k));
    }
    fn ret(&mut self, a: Action) {
        self.stmt(RET_K, ret(a));
    }
    fn jump(&mut self, code: u16, k: u32, to: Label, when: bool) {
        self.items.push(Item::Jump { code, k, to, when });
    }
    fn here(&mut self, l: Label) {
        self.items.push(Item::Here(l));
    }

    /// Lay the items out. A conditional jump reaches 255 instructions; a farther one becomes
    /// a short jump around a `ja`, found by growing jumps until none is too short.
    fn finish(self) -> Result<Vec<Insn>, String> {
        let mut long = vec![false; self.items.len()];
        loop {
            let (pos, at) = self.layout(&long);
            let mut changed = false;
            for (i, it) in self.items.iter().enumerate() {
                if let Item::Jump { to, .. } = it {
                    if !long[i] && at[*to] - (pos[i] + 1) > 255 {
                        long[i] = true;
                        changed = true;
                    }
                }
            }
            if changed {
                continue;
            }
            let mut out = Vec::with_capacity(pos.last().copied().unwrap_or(0) + 2);
            for (i, it) in self.items.iter().enumerate() {
                match *it {
                    Item::Stmt(code, k) => out.push(insn(code, k, 0, 0)),
                    Item::Ja(to) => out.push(insn(JMP_JA, (at[to] - pos[i] - 1) as u32, 0, 0)),
                    Item::Jump { code, k, to, when } => {
                        if long[i] {
                            let (jt, jf) = if when { (0, 1) } else { (1, 0) };
                            out.push(insn(code, k, jt, jf));
                            out.push(insn(JMP_JA, (at[to] - pos[i] - 2) as u32, 0, 0));
                        } else {
                            let off = (at[to] - pos[i] - 1) as u8;
                            let (jt, jf) = if when { (off, 0) } else { (0, off) };
                            out.push(insn(code, k, jt, jf));
                        }
                    }
                    Item::Here(_) => {}
                }
            }
            if out.len() > MAX_INSNS {
                return Err(format!(
                    "the filter needs {} instructions, more than the kernel's {MAX_INSNS}",
                    out.len()
                ));
            }
            return Ok(out);
        }
    }

    /// Position of each item, and of each label.
    fn layout(&self, long: &[bool]) -> (Vec<usize>, Vec<usize>) {
        let mut pos = Vec::with_capacity(self.items.len());
        let mut at = vec![0; self.labels];
        let mut p = 0;
        for (i, it) in self.items.iter().enumerate() {
            pos.push(p);
            p += match it {
                Item::Here(l) => {
                    at[*l] = p;
                    0
                }
                Item::Jump { .. } if long[i] => 2,
                _ => 1,
            };
        }
        (pos, at)
    }
}

fn insn(code: u16, k: u32, jt: u8, jf: u8) -> Insn {
    Insn { code, jt, jf, k }
}

/// Where a range of syscall numbers goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Ret(Action),
    /// The rules of one call.
    Block(u32),
}

/// Compile `r`.
pub fn compile(r: &Resolved) -> Result<Vec<Insn>, String> {
    use std::collections::BTreeMap;
    let mut per_call: BTreeMap<u32, Vec<&Rule>> = BTreeMap::new();
    for rule in &r.rules {
        per_call.entry(rule.nr).or_default().push(rule);
    }
    // A call's rules up to the first without conditions (later ones are never reached).
    let mut blocks: BTreeMap<u32, Vec<&Rule>> = BTreeMap::new();
    let mut ranges: Vec<(u32, Target)> = vec![(0, Target::Ret(r.default))];
    for (&nr, rules) in &per_call {
        let cut = rules
            .iter()
            .position(|x| x.args.is_empty())
            .map_or(rules.len(), |i| i + 1);
        let rules = &rules[..cut];
        let target = match rules {
            [only] if only.args.is_empty() => Target::Ret(only.action),
            _ => {
                blocks.insert(nr, rules.to_vec());
                Target::Block(nr)
            }
        };
        push(&mut ranges, nr, target);
        if let Some(next) = nr.checked_add(1) {
            push(&mut ranges, next, Target::Ret(r.default));
        }
    }

    let mut a = Asm::default();
    let kill = a.label();
    a.stmt(LD_W_ABS, ARCH);
    a.jump(JMP_JEQ_K, r.audit_arch, kill, false);
    a.stmt(LD_W_ABS, NR);
    if let Some(max) = r.enosys_above {
        let lookup = a.label();
        a.jump(JMP_JGT_K, max, lookup, false);
        a.ret(Action::Errno(libc::ENOSYS as u16));
        a.here(lookup);
    }
    let block_labels: BTreeMap<u32, Label> = blocks.keys().map(|&nr| (nr, a.label())).collect();
    search(&mut a, &ranges, &block_labels);
    for (nr, rules) in &blocks {
        a.here(block_labels[nr]);
        for rule in rules {
            let next = a.label();
            for c in &rule.args {
                condition(&mut a, c, next);
            }
            a.ret(rule.action);
            a.here(next);
        }
        a.ret(r.default);
    }
    a.here(kill);
    a.ret(Action::KillProcess);
    a.finish()
}

/// Add the range starting at `start` to `ranges` (sorted, the first at 0), merging it with
/// the one before when they go to the same place, replacing a range that started there.
fn push(ranges: &mut Vec<(u32, Target)>, start: u32, t: Target) {
    if ranges.last().is_some_and(|(_, last)| *last == t) {
        return;
    }
    if ranges.last().is_some_and(|(s, _)| *s == start) {
        ranges.pop();
        if ranges.last().is_some_and(|(_, last)| *last == t) {
            return;
        }
    }
    ranges.push((start, t));
}

/// Binary search over `ranges` (sorted starts, the first at 0); the syscall number is in A.
fn search(a: &mut Asm, ranges: &[(u32, Target)], blocks: &std::collections::BTreeMap<u32, Label>) {
    if let [(_, t)] = ranges {
        match t {
            Target::Ret(action) => a.ret(*action),
            Target::Block(nr) => a.items.push(Item::Ja(blocks[nr])),
        }
        return;
    }
    let mid = ranges.len() / 2;
    let right = a.label();
    a.jump(JMP_JGE_K, ranges[mid].0, right, true);
    search(a, &ranges[..mid], blocks);
    a.here(right);
    search(a, &ranges[mid..], blocks);
}

/// Code that goes to `fail` unless condition `c` holds of its argument. Clobbers A.
fn condition(a: &mut Asm, c: &Arg, fail: Label) {
    let lo_off = ARGS + 8 * u32::from(c.index);
    let hi_off = lo_off + 4;
    let (hi, lo) = ((c.value >> 32) as u32, c.value as u32);
    let pass = a.label();
    match c.op {
        Op::Eq => {
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JEQ_K, hi, fail, false);
            a.stmt(LD_W_ABS, lo_off);
            a.jump(JMP_JEQ_K, lo, fail, false);
        }
        Op::Ne => {
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JEQ_K, hi, pass, false);
            a.stmt(LD_W_ABS, lo_off);
            a.jump(JMP_JEQ_K, lo, fail, true);
        }
        Op::Gt | Op::Ge => {
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JGT_K, hi, pass, true);
            a.jump(JMP_JEQ_K, hi, fail, false);
            a.stmt(LD_W_ABS, lo_off);
            let code = if c.op == Op::Gt { JMP_JGT_K } else { JMP_JGE_K };
            a.jump(code, lo, fail, false);
        }
        Op::Lt | Op::Le => {
            a.stmt(LD_W_ABS, hi_off);
            a.jump(JMP_JGT_K, hi, fail, true);
            a.jump(JMP_JEQ_K, hi, pass, false);
            a.stmt(LD_W_ABS, lo_off);
            // Lt fails when lo >= value, Le when lo > value.
            let code = if c.op == Op::Lt { JMP_JGE_K } else { JMP_JGT_K };
            a.jump(code, lo, fail, true);
        }
        Op::MaskedEq => {
            let (mhi, mlo) = ((c.value >> 32) as u32, c.value as u32);
            let (vhi, vlo) = ((c.value_two >> 32) as u32, c.value_two as u32);
            a.stmt(LD_W_ABS, hi_off);
            a.stmt(ALU_AND_K, mhi);
            a.jump(JMP_JEQ_K, vhi, fail, false);
            a.stmt(LD_W_ABS, lo_off);
            a.stmt(ALU_AND_K, mlo);
            a.jump(JMP_JEQ_K, vlo, fail, false);
        }
    }
    a.here(pass);
}

/// Run `prog` on one call as the kernel would (the instructions `compile` emits only).
#[cfg(test)]
pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    let word = |off: u32| -> u32 {
        match off {
            NR => nr,
            ARCH => arch,
            o if o >= ARGS => {
                let i = ((o - ARGS) / 8) as usize;
                if (o - ARGS).is_multiple_of(8) {
                    args[i] as u32
                } else {
                    (args[i] >> 32) as u32
                }
            }
            o => panic!("load of offset {o}"),
        }
    };
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = prog[pc];
        pc += 1;
        match i.code {
            LD_W_ABS => acc = word(i.k),
            ALU_AND_K => acc &= i.k,
            RET_K => return i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K => {
                let t = match i.code {
                    JMP_JEQ_K => acc == i.k,
                    JMP_JGT_K => acc > i.k,
                    _ => acc >= i.k,
                };
                pc += usize::from(if t { i.jt } else { i.jf });
            }
            c => panic!("opcode {c:#x}"),
        }
    }
}

/// What `r` means, evaluated directly: the reference the compiled program must agree with.
#[cfg(test)]
pub fn reference(r: &Resolved, arch: u32, nr: u32, args: [u64; 6]) -> u32 {
    if arch != r.audit_arch {
        return ret(Action::KillProcess);
    }
    if r.enosys_above.is_some_and(|m| nr > m) {
        return ret(Action::Errno(libc::ENOSYS as u16));
    }
    r.rules
        .iter()
        .filter(|x| x.nr == nr)
        .find(|x| x.args.iter().all(|c| c.holds(args[c.index as usize])))
        .map_or(ret(r.default), |x| ret(x.action))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARCH_X: u32 = 0xC000_003E;

    fn check(r: &Resolved, values: &[u64]) {
        let prog = compile(r).unwrap();
        for nr in (0..520).chain([0x4000_0000, u32::MAX]) {
            for &v in values {
                for idx in 0..3 {
                    let mut args = [0u64; 6];
                    args[idx] = v;
                    assert_eq!(
                        run(&prog, ARCH_X, nr, args),
                        reference(r, ARCH_X, nr, args),
                        "nr {nr} args {args:?}"
                    );
                }
            }
        }
        assert_eq!(run(&prog, 0x4000_0003, 0, [0; 6]), ret(Action::KillProcess));
    }

    #[test]
    fn every_operator_on_64_bit_values_agrees_with_the_reference() {
        let values = [
            0,
            1,
            7,
            8,
            9,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0008,
            0x7E02_0000,
            0x0002_0000,
            u64::MAX,
        ];
        let ops = [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::MaskedEq];
        let mut rules = vec![];
        for (i, op) in ops.iter().enumerate() {
            for (j, v) in [8u64, 0x1_0000_0008, 0xffff_ffff].iter().enumerate() {
                rules.push(Rule {
                    nr: (10 * i + j) as u32,
                    action: Action::Errno(i as u16 + 1),
                    args: vec![Arg {
                        index: (j % 3) as u8,
                        value: *v,
                        value_two: if *op == Op::MaskedEq { 8 } else { 0 },
                        op: *op,
                    }],
                });
            }
        }
        // Two conditions (AND), a fallback rule, and an unconditional call.
        rules.push(Rule {
            nr: 100,
            action: Action::Trap,
            args: vec![
                Arg {
                    index: 0,
                    value: 7,
                    value_two: 0,
                    op: Op::Gt,
                },
                Arg {
                    index: 1,
                    value: 0,
                    value_two: 0,
                    op: Op::Eq,
                },
            ],
        });
        rules.push(Rule {
            nr: 100,
            action: Action::Log,
            args: vec![],
        });
        rules.push(Rule {
            nr: 101,
            action: Action::Allow,
            args: vec![],
        });
        for enosys_above in [None, Some(300)] {
            let r = Resolved {
                audit_arch: ARCH_X,
                default: Action::Errno(1),
                rules: rules.clone(),
                enosys_above,
            };
            check(&r, &values);
        }
    }

    #[test]
    fn long_jumps_are_laid_out_right() {
        // Many conditional rules make blocks far beyond a short jump's reach.
        let rules = |calls: u32| -> Vec<Rule> {
            (0..calls)
                .flat_map(|nr| {
                    (0..3).map(move |k| Rule {
                        nr,
                        action: if k == 2 {
                            Action::Allow
                        } else {
                            Action::Errno(k + 1)
                        },
                        args: vec![Arg {
                            index: 0,
                            value: u64::from(nr + u32::from(k)),
                            value_two: 0,
                            op: Op::Eq,
                        }],
                    })
                })
                .collect()
        };
        let mut r = Resolved {
            audit_arch: ARCH_X,
            default: Action::Errno(1),
            rules: rules(150),
            enosys_above: Some(450),
        };
        let prog = compile(&r).unwrap();
        assert!(prog.len() > 1000);
        check(&r, &[0, 1, 5, 149, 150, 151]);
        r.rules = rules(400);
        let err = compile(&r).unwrap_err();
        assert!(err.contains("more than the kernel's 4096"), "{err}");
    }
}

//! Seccomp profiles in Docker's JSON format: parsed and checked field by field, so a bad
//! profile is refused with one line naming the field and entry
//! (`syscalls[3].args[0].op: unknown operator "SCMP_CMP_FOO"`).
//!
//! Read: `defaultAction`, `defaultErrnoRet`, `architectures`, `archMap`, `flags`, and
//! `syscalls[]` entries with `names` (or the older `name`), `action`, `errnoRet`,
//! `args[]{index, value, valueTwo, op}`, `includes{caps, arches, minKernel}` and
//! `excludes{caps, arches, minKernel}`. Other keys (`comment`, ...) are ignored, as Docker
//! ignores them.

use serde_json::{Map, Value};
use std::borrow::Cow;

/// What the filter answers for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Fail with this errno.
    Errno(u16),
    KillThread,
    KillProcess,
    /// SIGSYS to the caller.
    Trap,
    /// Allowed and logged by the kernel.
    Log,
    /// Hand the call to a ptrace tracer (fails with ENOSYS when there is none).
    Trace(u16),
}

/// How an argument is compared (libseccomp's operators, on 64-bit values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `(arg & value) == value_two`.
    MaskedEq,
}

/// One argument condition of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    /// 0..=5.
    pub index: u8,
    pub value: u64,
    pub value_two: u64,
    pub op: Op,
}

impl Arg {
    /// Whether `arg` satisfies the condition.
    pub fn holds(&self, arg: u64) -> bool {
        match self.op {
            Op::Eq => arg == self.value,
            Op::Ne => arg != self.value,
            Op::Lt => arg < self.value,
            Op::Le => arg <= self.value,
            Op::Gt => arg > self.value,
            Op::Ge => arg >= self.value,
            Op::MaskedEq => arg & self.value == self.value_two,
        }
    }
}

/// An entry's `includes` or `excludes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Capability names (`CAP_SYS_ADMIN`).
    pub caps: Vec<Cow<'static, str>>,
    /// Docker's architecture names (`amd64`, `arm64`, ...).
    pub arches: Vec<Cow<'static, str>>,
    /// (major, minor, patch).
    pub min_kernel: Option<(u32, u32, u32)>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.caps.is_empty() && self.arches.is_empty() && self.min_kernel.is_none()
    }
}

/// One `syscalls[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub names: Vec<Cow<'static, str>>,
    pub action: Action,
    /// All must hold (or, when two name the same index, any one: runc's rule).
    pub args: Vec<Arg>,
    pub includes: Filter,
    pub excludes: Filter,
}

/// A whole profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    pub default_action: Action,
    /// `SECCOMP_FILTER_FLAG_*` bits for seccomp(2).
    pub flags: u32,
    pub syscalls: Vec<Entry>,
}

/// A field of a profile that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ProfileError {
    /// Where: `syscalls[3].args[0].op`, or `line 4 column 2` for JSON syntax.
    pub field: String,
    pub message: String,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> ProfileError {
    ProfileError {
        field: field.into(),
        message: message.into(),
    }
}

/// libseccomp's architecture names a profile may list.
const ARCHES: &[&str] = &[
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
];

/// seccomp(2) filter flags a profile may ask for.
const FLAGS: &[(&str, u32)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", 1),
    ("SECCOMP_FILTER_FLAG_LOG", 2),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", 4),
];

/// The errno of `SCMP_ACT_ERRNO` without `errnoRet` (libseccomp's default, as Docker's).
const DEFAULT_ERRNO: u16 = libc::EPERM as u16;

/// Parse and check a profile in Docker's format.
pub fn parse(json: &str) -> Result<Profile, ProfileError> {
    let v: Value = serde_json::from_str(json).map_err(|e| {
        bad(
            format!("line {} column {}", e.line(), e.column()),
            format!("not valid JSON: {e}"),
        )
    })?;
    let top = object(&v, "the profile")?;
    let default_errno = opt_errno(top, "defaultErrnoRet", "defaultErrnoRet")?;
    let default_action = action(
        top.get("defaultAction")
            .ok_or_else(|| bad("defaultAction", "missing"))?,
        "defaultAction",
        default_errno,
    )?;
    for (i, a) in list(top, "architectures", "architectures")?
        .iter()
        .enumerate()
    {
        arch_name(a, &format!("architectures[{i}]"))?;
    }
    for (i, m) in list(top, "archMap", "archMap")?.iter().enumerate() {
        let f = format!("archMap[{i}]");
        let m = object(m, &f)?;
        let a = m
            .get("architecture")
            .ok_or_else(|| bad(format!("{f}.architecture"), "missing"))?;
        arch_name(a, &format!("{f}.architecture"))?;
        for (j, s) in list(m, "subArchitectures", &format!("{f}.subArchitectures"))?
            .iter()
            .enumerate()
        {
            arch_name(s, &format!("{f}.subArchitectures[{j}]"))?;
        }
    }
    let mut flags = 0;
    for (i, f) in list(top, "flags", "flags")?.iter().enumerate() {
        let field = format!("flags[{i}]");
        let s = string(f, &field)?;
        flags |= FLAGS
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, b)| *b)
            .ok_or_else(|| bad(field, format!("unknown flag {s:?}")))?;
    }
    if top.get("listenerPath").is_some_and(|p| !p.is_null()) {
        return Err(bad(
            "listenerPath",
            "seccomp notification listeners are not supported by berth",
        ));
    }
    let mut syscalls = Vec::new();
    for (i, e) in list(top, "syscalls", "syscalls")?.iter().enumerate() {
        syscalls.push(entry(e, &format!("syscalls[{i}]"))?);
    }
    Ok(Profile {
        default_action,
        flags,
        syscalls,
    })
}

fn entry(v: &Value, f: &str) -> Result<Entry, ProfileError> {
    let m = object(v, f)?;
    let mut names: Vec<Cow<'static, str>> = Vec::new();
    if let Some(n) = m.get("name").filter(|n| !n.is_null()) {
        names.push(string(n, &format!("{f}.name"))?.to_string().into());
    }
    for (i, n) in list(m, "names", &format!("{f}.names"))?.iter().enumerate() {
        let s = string(n, &format!("{f}.names[{i}]"))?;
        if s.is_empty() {
            return Err(bad(format!("{f}.names[{i}]"), "empty syscall name"));
        }
        names.push(s.to_string().into());
    }
    if names.is_empty() {
        return Err(bad(format!("{f}.names"), "no syscall named"));
    }
    let errno = opt_errno(m, "errnoRet", &format!("{f}.errnoRet"))?;
    let action = action(
        m.get("action")
            .ok_or_else(|| bad(format!("{f}.action"), "missing"))?,
        &format!("{f}.action"),
        errno,
    )?;
    let mut args = Vec::new();
    for (i, a) in list(m, "args", &format!("{f}.args"))?.iter().enumerate() {
        args.push(arg(a, &format!("{f}.args[{i}]"))?);
    }
    Ok(Entry {
        names,
        action,
        args,
        includes: filter(m.get("includes"), &format!("{f}.includes"))?,
        excludes: filter(m.get("excludes"), &format!("{f}.excludes"))?,
    })
}

fn arg(v: &Value, f: &str) -> Result<Arg, ProfileError> {
    let m = object(v, f)?;
    let index = match m.get("index") {
        None => return Err(bad(format!("{f}.index"), "missing")),
        Some(i) => i
            .as_u64()
            .filter(|i| *i <= 5)
            .ok_or_else(|| bad(format!("{f}.index"), format!("{i} is not 0 to 5")))?,
    };
    let number = |key: &str, required: bool| -> Result<u64, ProfileError> {
        match m.get(key) {
            None | Some(Value::Null) if !required => Ok(0),
            None => Err(bad(format!("{f}.{key}"), "missing")),
            Some(x) => x.as_u64().ok_or_else(|| {
                bad(
                    format!("{f}.{key}"),
                    format!("{x} is not an unsigned 64-bit number"),
                )
            }),
        }
    };
    let value = number("value", true)?;
    let value_two = number("valueTwo", false)?;
    let op_field = format!("{f}.op");
    let op = match string(
        m.get("op")
            .ok_or_else(|| bad(op_field.clone(), "missing"))?,
        &op_field,
    )? {
        "SCMP_CMP_EQ" => Op::Eq,
        "SCMP_CMP_NE" => Op::Ne,
        "SCMP_CMP_LT" => Op::Lt,
        "SCMP_CMP_LE" => Op::Le,
        "SCMP_CMP_GT" => Op::Gt,
        "SCMP_CMP_GE" => Op::Ge,
        "SCMP_CMP_MASKED_EQ" => Op::MaskedEq,
        other => return Err(bad(op_field, format!("unknown operator {other:?}"))),
    };
    Ok(Arg {
        index: index as u8,
        value,
        value_two,
        op,
    })
}

fn filter(v: Option<&Value>, f: &str) -> Result<Filter, ProfileError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(Filter::default());
    };
    let m = object(v, f)?;
    let strings = |key: &str| -> Result<Vec<Cow<'static, str>>, ProfileError> {
        list(m, key, &format!("{f}.{key}"))?
            .iter()
            .enumerate()
            .map(|(i, s)| string(s, &format!("{f}.{key}[{i}]")).map(|s| Cow::Owned(s.to_string())))
            .collect()
    };
    let min_kernel = match m.get("minKernel").filter(|k| !k.is_null()) {
        None => None,
        Some(k) => {
            let field = format!("{f}.minKernel");
            let s = string(k, &field)?;
            Some(kernel_version(s).ok_or_else(|| {
                bad(
                    field,
                    format!("{s:?} is not a kernel version (e.g. \"4.8\")"),
                )
            })?)
        }
    };
    Ok(Filter {
        caps: strings("caps")?,
        arches: strings("arches")?,
        min_kernel,
    })
}

/// `major.minor[.patch]` with anything after the numbers ignored (`6.1.0-18-amd64`).
pub fn kernel_version(s: &str) -> Option<(u32, u32, u32)> {
    let mut parts = s.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

fn action(v: &Value, f: &str, errno: Option<u16>) -> Result<Action, ProfileError> {
    Ok(match string(v, f)? {
        "SCMP_ACT_ALLOW" => Action::Allow,
        "SCMP_ACT_ERRNO" => Action::Errno(errno.unwrap_or(DEFAULT_ERRNO)),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => Action::KillThread,
        "SCMP_ACT_KILL_PROCESS" => Action::KillProcess,
        "SCMP_ACT_TRAP" => Action::Trap,
        "SCMP_ACT_LOG" => Action::Log,
        "SCMP_ACT_TRACE" => Action::Trace(errno.unwrap_or(DEFAULT_ERRNO)),
        "SCMP_ACT_NOTIFY" => {
            return Err(bad(
                f,
                "SCMP_ACT_NOTIFY (a user-space listener) is not supported by berth",
            ))
        }
        other => return Err(bad(f, format!("unknown action {other:?}"))),
    })
}

fn opt_errno(m: &Map<String, Value>, key: &str, f: &str) -> Result<Option<u16>, ProfileError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .filter(|n| *n <= 4095)
            .map(|n| Some(n as u16))
            .ok_or_else(|| bad(f, format!("{x} is not an errno (0 to 4095)"))),
    }
}

fn arch_name(v: &Value, f: &str) -> Result<(), ProfileError> {
    let s = string(v, f)?;
    if ARCHES.contains(&s) {
        Ok(())
    } else {
        Err(bad(f, format!("unknown architecture {s:?}")))
    }
}

fn object<'a>(v: &'a Value, f: &str) -> Result<&'a Map<String, Value>, ProfileError> {
    v.as_object()
        .ok_or_else(|| bad(f, format!("must be an object, not {}", kind(v))))
}

fn string<'a>(v: &'a Value, f: &str) -> Result<&'a str, ProfileError> {
    v.as_str()
        .ok_or_else(|| bad(f, format!("must be a string, not {}", kind(v))))
}

/// `m[key]` as a list; missing or null is empty.
fn list<'a>(m: &'a Map<String, Value>, key: &str, f: &str) -> Result<&'a [Value], ProfileError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(bad(f, format!("must be a list, not {}", kind(other)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_docker_format() {
        let p = parse(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":38,
                "architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[
                  {"names":["read","write"],"action":"SCMP_ACT_ALLOW","comment":"x","args":null},
                  {"name":"personality","action":"SCMP_ACT_ALLOW",
                   "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                  {"names":["clone"],"action":"SCMP_ACT_ERRNO","errnoRet":1,
                   "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}],
                   "includes":{"minKernel":"4.8","caps":["CAP_SYS_ADMIN"]},
                   "excludes":{"arches":["s390x"]}}]}"#,
        )
        .unwrap();
        assert_eq!(p.default_action, Action::Errno(38));
        assert_eq!(p.syscalls.len(), 3);
        assert_eq!(p.syscalls[1].names, vec!["personality"]);
        assert_eq!(p.syscalls[2].action, Action::Errno(1));
        assert_eq!(p.syscalls[2].args[0].op, Op::MaskedEq);
        assert_eq!(p.syscalls[2].includes.min_kernel, Some((4, 8, 0)));
        assert_eq!(p.syscalls[2].excludes.arches, vec!["s390x"]);
    }

    #[test]
    fn names_the_bad_field() {
        let err = |j: &str| parse(j).unwrap_err().to_string();
        let base = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW"},
            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"OP"}]}]}"#;
        assert_eq!(
            err(&base.replace("OP", "SCMP_CMP_FOO")),
            r#"syscalls[1].args[0].op: unknown operator "SCMP_CMP_FOO""#
        );
        assert!(parse(&base.replace("OP", "SCMP_CMP_NE")).is_ok());
        assert_eq!(
            err(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#),
            r#"defaultAction: unknown action "SCMP_ACT_NOPE""#
        );
        assert_eq!(err(r#"{"syscalls":[]}"#), "defaultAction: missing");
        assert_eq!(
            err(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#
            ),
            "syscalls[0].args[0].index: 6 is not 0 to 5"
        );
        assert_eq!(
            err(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_Z80"]}"#),
            r#"architectures[0]: unknown architecture "SCMP_ARCH_Z80""#
        );
        assert!(err("{\"defaultAction\":\n  ").starts_with("line 2 column 2: not valid JSON"));
        assert_eq!(
            err(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["x"],"action":"SCMP_ACT_ERRNO","includes":{"minKernel":"four"}}]}"#
            ),
            r#"syscalls[0].includes.minKernel: "four" is not a kernel version (e.g. "4.8")"#
        );
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.18.44-fc-v1147"), Some((6, 18, 44)));
        assert_eq!(kernel_version("4.8"), Some((4, 8, 0)));
        assert_eq!(kernel_version("4"), None);
    }
}

//! The validation context: where each path is in which file (for `file:line:column`
//! errors), the variables, the warnings, and typed readers of JSON values that fail with a
//! located error.

use crate::error::SpecError;
use crate::tree::Positions;
use berth_docker::units::{parse_duration_ms, parse_size};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A path in the merged document: keys and list indices from the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Path(pub Vec<String>);

impl Path {
    pub fn root() -> Path {
        Path(Vec::new())
    }
    /// This path with one more key (or index).
    pub fn k(&self, key: impl ToString) -> Path {
        let mut p = self.0.clone();
        p.push(key.to_string());
        Path(p)
    }
    /// `service NAME: ` for a path inside a service, else nothing: the start of a message.
    pub fn subject(&self) -> String {
        match self.0.as_slice() {
            [s, name, _, ..] if s == "services" => format!("service {name}: "),
            _ => String::new(),
        }
    }
    /// The key this path ends with.
    pub fn last(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or("")
    }
    /// `deploy.resources.limits.memory` for a path inside a service (the service part left out).
    pub fn key_name(&self) -> String {
        let skip = if self.0.first().map(String::as_str) == Some("services") {
            2
        } else {
            0
        };
        self.0
            .iter()
            .skip(skip)
            .filter(|s| s.parse::<usize>().is_err())
            .cloned()
            .collect::<Vec<_>>()
            .join(".")
    }
}

pub(crate) struct Source {
    pub name: String,
    pub positions: Positions,
}

pub(crate) struct Ctx {
    pub sources: Vec<Source>,
    pub base_dir: PathBuf,
    /// Variables for interpolation and for `environment` entries without a value.
    pub vars: BTreeMap<String, String>,
    pub allow_unsupported: bool,
    pub warnings: Vec<String>,
}

impl Ctx {
    /// The file and position of `path`: the deepest prefix of it that some file has, from the
    /// last file that has it (the one whose value won the merge).
    pub fn locate(&self, path: &Path) -> (String, Option<(u32, u32)>) {
        let refs: Vec<&str> = path.0.iter().map(String::as_str).collect();
        for depth in (0..=refs.len()).rev() {
            for s in self.sources.iter().rev() {
                if let Some(pos) = s.positions.get(&refs[..depth]) {
                    return (s.name.clone(), Some(pos));
                }
            }
        }
        (
            self.sources
                .last()
                .map(|s| s.name.clone())
                .unwrap_or_else(|| "spec".into()),
            None,
        )
    }

    /// An error at `path`; inside a service, the message starts with `service NAME: `.
    pub fn err(&self, path: &Path, msg: impl Into<String>) -> SpecError {
        let (file, pos) = self.locate(path);
        SpecError::new(&file, pos, with_subject(path, msg.into()))
    }

    pub fn warn(&mut self, path: &Path, msg: impl Into<String>) {
        let e = self.err(path, msg);
        self.warnings.push(e.to_string());
    }

    /// A Compose key berth does not support: an error, or a warning when allowed.
    pub fn unsupported(&mut self, path: &Path, msg: impl Into<String>) -> Result<(), SpecError> {
        let e = self.err(path, msg);
        if self.allow_unsupported {
            self.warnings.push(format!("{e} (ignored)"));
            Ok(())
        } else {
            Err(e)
        }
    }

    /// Check the keys of a mapping: `supported` ones and `x-*` pass, `known` ones (Compose
    /// keys berth does not support) are [`Ctx::unsupported`], anything else is unknown.
    pub fn check_keys(
        &mut self,
        m: &Map<String, Value>,
        path: &Path,
        what: &str,
        supported: &[&str],
        known: &[&str],
    ) -> Result<(), SpecError> {
        for k in m.keys() {
            if k.starts_with("x-") || supported.contains(&k.as_str()) {
                continue;
            }
            if known.contains(&k.as_str()) {
                self.unsupported(
                    &path.k(k),
                    format!("{what}: `{k}` is not supported by berth"),
                )?;
            } else {
                let hint = closest(k, supported)
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(self.err(&path.k(k), format!("{what}: unknown key `{k}`{hint}")));
            }
        }
        Ok(())
    }

    pub fn map<'a>(
        &self,
        v: &'a Value,
        path: &Path,
    ) -> Result<Option<&'a Map<String, Value>>, SpecError> {
        match v {
            Value::Object(m) => Ok(Some(m)),
            Value::Null => Ok(None),
            other => Err(self.err(
                path,
                format!(
                    "`{}` must be a mapping, not {}",
                    path.key_name(),
                    kind(other)
                ),
            )),
        }
    }

    /// A string; numbers and booleans are taken as their text (as Compose does).
    pub fn string(&self, v: &Value, path: &Path) -> Result<String, SpecError> {
        scalar_string(v).ok_or_else(|| {
            self.err(
                path,
                format!("`{}` must be a string, not {}", path.key_name(), kind(v)),
            )
        })
    }

    /// A boolean; after interpolation it may be a string (`true`, `false`, `yes`, `no`, `on`,
    /// `off`, `y`, `n`), as Compose accepts.
    pub fn boolean(&self, v: &Value, path: &Path) -> Result<bool, SpecError> {
        let fail = || {
            self.err(
                path,
                format!(
                    "`{}` must be true or false, not {}",
                    path.key_name(),
                    show(v)
                ),
            )
        };
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match s.to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "on" => Ok(true),
                "false" | "no" | "n" | "off" => Ok(false),
                _ => Err(fail()),
            },
            _ => Err(fail()),
        }
    }

    /// A whole number in `0..=max`; a string of digits (from interpolation) counts.
    pub fn uint(&self, v: &Value, path: &Path, max: u64) -> Result<u64, SpecError> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match n {
            Some(n) if n <= max => Ok(n),
            _ => Err(self.err(
                path,
                format!(
                    "`{}` must be a whole number from 0 to {max}, not {}",
                    path.key_name(),
                    show(v)
                ),
            )),
        }
    }

    pub fn duration_ms(&self, v: &Value, path: &Path) -> Result<u64, SpecError> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(self.err(
                    path,
                    format!(
                        "`{}` must be a duration like 10s or 1m30s, not {}",
                        path.key_name(),
                        kind(other)
                    ),
                ))
            }
        };
        parse_duration_ms(&s).map_err(|e| self.err(path, format!("{}: {e}", path.key_name())))
    }

    pub fn size(&self, v: &Value, path: &Path) -> Result<u64, SpecError> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) if n.is_u64() => n.to_string(),
            other => {
                return Err(self.err(
                    path,
                    format!(
                        "`{}` must be a size like 512m or 1g, not {}",
                        path.key_name(),
                        show(other)
                    ),
                ))
            }
        };
        parse_size(&s).map_err(|e| self.err(path, format!("{}: {e}", path.key_name())))
    }

    /// A list of strings; a single string is a list of one.
    pub fn strings(&self, v: &Value, path: &Path) -> Result<Vec<String>, SpecError> {
        match v {
            Value::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, x)| self.string(x, &path.k(i)))
                .collect(),
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Null => Ok(vec![]),
            other => Err(self.err(
                path,
                format!(
                    "`{}` must be a list of strings, not {}",
                    path.key_name(),
                    kind(other)
                ),
            )),
        }
    }

    /// `KEY=value` list or mapping (labels, environment): a map of optional values (`None`:
    /// the key has no value).
    pub fn kv(
        &self,
        v: &Value,
        path: &Path,
    ) -> Result<BTreeMap<String, Option<String>>, SpecError> {
        let mut out = BTreeMap::new();
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let val = match x {
                        Value::Null => None,
                        other => Some(scalar_string(other).ok_or_else(|| {
                            self.err(
                                &path.k(k),
                                format!(
                                    "`{}.{k}` must be a string, number or boolean, not {}",
                                    path.key_name(),
                                    kind(other)
                                ),
                            )
                        })?),
                    };
                    out.insert(k.clone(), val);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    let s = match x {
                        Value::String(s) => s,
                        other => {
                            return Err(self.err(
                                &path.k(i),
                                format!(
                                    "`{}` entries must be strings like KEY=value, not {}",
                                    path.key_name(),
                                    kind(other)
                                ),
                            ))
                        }
                    };
                    let (k, val) = match s.split_once('=') {
                        Some((k, v)) => (k, Some(v.to_string())),
                        None => (s.as_str(), None),
                    };
                    if k.is_empty() {
                        return Err(self.err(
                            &path.k(i),
                            format!("`{}` entry {s:?} has no key", path.key_name()),
                        ));
                    }
                    out.insert(k.to_string(), val);
                }
            }
            Value::Null => {}
            other => {
                return Err(self.err(
                    path,
                    format!(
                        "`{}` must be a list or a mapping, not {}",
                        path.key_name(),
                        kind(other)
                    ),
                ))
            }
        }
        Ok(out)
    }
}

/// `msg`, starting with `service NAME: ` when `path` is inside a service and it does not
/// already name it.
pub fn with_subject(path: &Path, msg: String) -> String {
    let subject = path.subject();
    if subject.is_empty() || msg.starts_with("service ") {
        msg
    } else {
        format!("{subject}{msg}")
    }
}

pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What kind of YAML value `v` is, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A short rendering of a value for messages.
pub fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => kind(other).to_string(),
    }
}

/// The candidate closest to `k` by edit distance, when it is close (a likely typo).
fn closest<'a>(k: &str, candidates: &[&'a str]) -> Option<&'a str> {
    fn dist(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for j in 0..b.len() {
                let cur = row[j + 1];
                row[j + 1] = (prev + usize::from(ca != b[j]))
                    .min(row[j] + 1)
                    .min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    candidates
        .iter()
        .map(|c| (dist(k, c), *c))
        .filter(|(d, c)| *d <= 2 && *d < c.len() / 2 + 1)
        .min()
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typos_find_their_key() {
        assert_eq!(closest("imgae", &["image", "command"]), Some("image"));
        assert_eq!(closest("enviroment", &["environment"]), Some("environment"));
        assert_eq!(closest("zzz", &["image", "init"]), None);
    }
}

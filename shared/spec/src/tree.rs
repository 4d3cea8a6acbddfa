//! Parsing one YAML text into a JSON value plus the position of every node, so that errors
//! found after parsing (unknown keys, bad values, unknown services...) point at the exact
//! `line:column` of the key or list item, in block or flow style, through anchors and merge
//! keys alike.
//!
//! The YAML is read once by `serde-saphyr` into a tree of [`Spanned`] nodes (merge keys
//! expanded, duplicate keys refused, alias and size budgets enforced), then flattened into a
//! [`serde_json::Value`] and a [`Positions`] map keyed by path.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::fmt;

/// `path → (line, column)`, 1-based. A path is the keys (and list indices, as decimal strings)
/// from the document root. A map entry is located at its key; a list item at the item. A
/// string item of a list is also reachable by its text and, for `KEY=value` items, by `KEY`
/// (so `depends_on: [db]` or `environment: [A=1]` locate `db` and `A` like map keys do).
/// For values that come from an anchor (an alias or a `<<:` merge), the position is where the
/// value is written, inside the anchored node.
#[derive(Debug, Default, Clone)]
pub struct Positions(HashMap<Vec<String>, (u32, u32)>);

impl Positions {
    pub fn get(&self, path: &[&str]) -> Option<(u32, u32)> {
        let key: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        self.0.get(&key).copied()
    }
}

/// A parse failure: the position when the parser knows it, and a one-line message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub pos: Option<(u32, u32)>,
    pub message: String,
}

/// At most this many nodes in a file (a compose file of a thousand services has some 30,000).
pub const MAX_NODES: usize = 100_000;
/// At most this many nodes replayed through aliases (`*a`, `<<: *a`) in a file.
pub const MAX_ALIAS_REPLAY: usize = 50_000;

/// Parser limits for spec files, well above any real compose file and far below what an alias
/// bomb expands to.
pub fn options() -> serde_saphyr::Options {
    let mut o = serde_saphyr::Options::default();
    o.with_snippet = false;
    // YAML 1.2 booleans only, as Compose reads them: `no`, `yes`, `on`, `y` stay strings.
    o.strict_booleans = true;
    o.duplicate_keys = serde_saphyr::DuplicateKeyPolicy::Error;
    o.merge_keys = serde_saphyr::MergeKeyPolicy::Merge;
    let mut budget = serde_saphyr::Budget::default();
    budget.max_events = 4 * MAX_NODES;
    budget.max_nodes = MAX_NODES;
    budget.max_aliases = 10_000;
    budget.max_anchors = 10_000;
    budget.max_depth = 64;
    // One anchor merged into every service is the common case; the replay limit is what
    // stops a bomb.
    budget.enforce_alias_anchor_ratio = false;
    o.budget = Some(budget);
    o.alias_limits.max_total_replayed_events = MAX_ALIAS_REPLAY;
    o.alias_limits.max_replay_stack_depth = 32;
    o
}

/// Parse `text` into a JSON value and the positions of its nodes. An empty document is `null`.
pub fn parse(text: &str) -> Result<(Value, Positions), ParseError> {
    if text.trim().is_empty() {
        return Ok((Value::Null, Positions::default()));
    }
    let root: Spanned<Raw> = serde_saphyr::from_str_with_options(text, options()).map_err(|e| {
        let pos = e
            .location()
            .map(|l| (l.line() as u32, l.column() as u32))
            .filter(|p| p.0 > 0);
        ParseError {
            pos,
            message: clean_message(&e.to_string()),
        }
    })?;
    let mut positions = Positions::default();
    positions.0.insert(Vec::new(), at(&root).unwrap_or((1, 1)));
    let mut path = Vec::new();
    let value = flatten(root.value, &mut path, &mut positions)?;
    Ok((value, positions))
}

/// The parser's message on one line, without the position it repeats and without advice
/// meant for programmers.
fn clean_message(msg: &str) -> String {
    if msg.contains("alias replay limit exceeded") || msg.contains("AliasReplay") {
        return format!(
            "refused: aliases expand to more than {MAX_ALIAS_REPLAY} nodes (an alias bomb?)"
        );
    }
    if let Some(i) = msg.find("budget breached: ") {
        let what = &msg[i + "budget breached: ".len()..];
        let what = what.split_whitespace().next().unwrap_or("");
        return match what {
            "Nodes" | "Events" => format!("refused: more than {MAX_NODES} YAML nodes"),
            "Aliases" | "Anchors" => "refused: too many anchors or aliases".to_string(),
            "Depth" => "refused: nested too deeply".to_string(),
            other => format!("refused: the file exceeds berth's parser limits ({other})"),
        };
    }
    let mut m = msg
        .lines()
        .next()
        .unwrap_or("invalid YAML")
        .trim()
        .to_string();
    if let Some(i) = m.rfind(" at line ") {
        if m[i..].contains(", column ") {
            m.truncate(i);
        }
    }
    if let Some(rest) = m.strip_prefix("duplicate mapping key: ") {
        let key = rest
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(rest);
        return format!("duplicate key `{key}`");
    }
    m
}

fn at<T>(s: &Spanned<T>) -> Option<(u32, u32)> {
    let l = if s.defined.line() > 0 {
        s.defined
    } else {
        s.referenced
    };
    (l.line() > 0).then(|| (l.line() as u32, l.column() as u32))
}

fn flatten(raw: Raw, path: &mut Vec<String>, pos: &mut Positions) -> Result<Value, ParseError> {
    Ok(match raw {
        Raw::Null => Value::Null,
        Raw::Bool(b) => Value::Bool(b),
        Raw::Int(i) => Value::Number(i.into()),
        Raw::UInt(u) => Value::Number(u.into()),
        Raw::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Raw::Str(s) => Value::String(s),
        Raw::Seq(items) => {
            let mut out = Vec::with_capacity(items.len());
            let mut aliases = Vec::new();
            for (i, item) in items.into_iter().enumerate() {
                let p = at(&item);
                path.push(i.to_string());
                if let Some(p) = p {
                    pos.0.insert(path.clone(), p);
                }
                path.pop();
                if let (Raw::Str(s), Some(p)) = (&item.value, p) {
                    aliases.push((s.clone(), p));
                    if let Some((k, _)) = s.split_once('=') {
                        aliases.push((k.to_string(), p));
                    }
                }
                path.push(i.to_string());
                out.push(flatten(item.value, path, pos)?);
                path.pop();
            }
            // After every index is in, so that an item's text never shadows an index.
            for (name, p) in aliases {
                path.push(name);
                pos.0.entry(path.clone()).or_insert(p);
                path.pop();
            }
            Value::Array(out)
        }
        Raw::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let kp = at(&k);
                let key = match k.value {
                    Raw::Str(s) => s,
                    Raw::Int(i) => i.to_string(),
                    Raw::UInt(u) => u.to_string(),
                    Raw::Float(f) => f.to_string(),
                    Raw::Bool(b) => b.to_string(),
                    Raw::Null => {
                        return Err(ParseError {
                            pos: kp,
                            message: "a mapping key must not be empty".into(),
                        })
                    }
                    Raw::Seq(_) | Raw::Map(_) => {
                        return Err(ParseError {
                            pos: kp,
                            message: "a mapping key must be a scalar".into(),
                        })
                    }
                };
                if out.contains_key(&key) {
                    return Err(ParseError {
                        pos: kp,
                        message: format!("duplicate mapping key {key:?}"),
                    });
                }
                path.push(key.clone());
                if let Some(p) = kp {
                    pos.0.insert(path.clone(), p);
                }
                let value = flatten(v.value, path, pos)?;
                path.pop();
                out.insert(key, value);
            }
            Value::Object(out)
        }
    })
}

/// One YAML node as read, children with their spans.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<Raw>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        Raw::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(v))
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Raw, E> {
        Ok(Raw::Str(String::from_utf8_lossy(v).into_owned()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut out = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            out.push(item);
        }
        Ok(Raw::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut out = Vec::new();
        while let Some(k) = map.next_key::<Spanned<Raw>>()? {
            let v = map.next_value::<Spanned<Raw>>()?;
            out.push((k, v));
        }
        Ok(Raw::Map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_in_block_and_flow_style() {
        let y = "services:\n  web:\n    image: x\n    ports: [\"80:80\", 90]\n    deploy: {resources: {limits: {memory: 1g}}}\n    depends_on:\n      - db\n    environment:\n      - A=1\n";
        let (v, p) = parse(y).unwrap();
        assert_eq!(v["services"]["web"]["ports"][1], 90);
        assert_eq!(p.get(&["services", "web", "image"]), Some((3, 5)));
        assert_eq!(p.get(&["services", "web", "ports", "0"]), Some((4, 13)));
        assert_eq!(p.get(&["services", "web", "ports", "1"]), Some((4, 22)));
        assert_eq!(
            p.get(&["services", "web", "deploy", "resources", "limits", "memory"]),
            Some((5, 35))
        );
        assert_eq!(
            p.get(&["services", "web", "depends_on", "db"]),
            Some((7, 9))
        );
        assert_eq!(
            p.get(&["services", "web", "environment", "A"]),
            Some((9, 9))
        );
        assert_eq!(p.get(&["services", "nope"]), None);
    }

    #[test]
    fn merged_values_point_into_the_anchor() {
        let y = "x-l: &l\n  memory: 1g\n  cpus: 2\nservices:\n  w:\n    limits:\n      <<: *l\n      cpus: 1\n";
        let (v, p) = parse(y).unwrap();
        assert_eq!(v["services"]["w"]["limits"]["memory"], "1g");
        assert_eq!(v["services"]["w"]["limits"]["cpus"], 1);
        assert_eq!(
            p.get(&["services", "w", "limits", "memory"]),
            Some((2, 3)),
            "{p:?}"
        );
        assert_eq!(p.get(&["services", "w", "limits", "cpus"]), Some((8, 7)));
    }

    #[test]
    fn duplicate_keys_and_syntax_errors_have_positions() {
        let e = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(e.pos.map(|p| p.0), Some(3), "{e:?}");
        assert!(e.message.to_lowercase().contains("duplicate"), "{e:?}");
        let e = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(e.pos.is_some(), "{e:?}");
    }
}

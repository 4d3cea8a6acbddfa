//! Variable interpolation as Compose does it: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`, `${VAR:+alt}`, `${VAR+alt}`, `$$` for a
//! literal `$`; defaults may themselves contain variables.

/// Interpolate `s`. `lookup` gives a variable's value (None = unset). Unset variables used
/// without a default are collected in `unset` (Compose warns and uses an empty string).
pub fn interpolate(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    if !s.contains('$') {
        return Ok(s.to_string());
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            let ch = s[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => {
                // Find the matching brace.
                let mut depth = 1;
                let mut j = i + 2;
                while j < b.len() && depth > 0 {
                    match b[j] {
                        b'{' => depth += 1,
                        b'}' => depth -= 1,
                        _ => {}
                    }
                    j += 1;
                }
                if depth != 0 {
                    return Err(format!("unclosed ${{ in {s:?}"));
                }
                out.push_str(&expand(&s[i + 2..j - 1], lookup, unset)?);
                i = j;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                let name = &s[i + 1..j];
                match lookup(name) {
                    Some(v) => out.push_str(&v),
                    None => unset.push(name.to_string()),
                }
                i = j;
            }
            _ => {
                return Err(format!(
                    "invalid interpolation in {s:?}: a lone $ (write $$ for a literal $)"
                ))
            }
        }
    }
    Ok(out)
}

fn expand(
    inner: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: &mut Vec<String>,
) -> Result<String, String> {
    let name_end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(format!("invalid variable name in ${{{inner}}}"));
    }
    let rest = &inner[name_end..];
    let val = lookup(name);
    let set_nonempty = val.as_deref().map(|v| !v.is_empty()).unwrap_or(false);
    let (op, arg) = if let Some(a) = rest.strip_prefix(":-") {
        (":-", a)
    } else if let Some(a) = rest.strip_prefix(":?") {
        (":?", a)
    } else if let Some(a) = rest.strip_prefix(":+") {
        (":+", a)
    } else if let Some(a) = rest.strip_prefix('-') {
        ("-", a)
    } else if let Some(a) = rest.strip_prefix('?') {
        ("?", a)
    } else if let Some(a) = rest.strip_prefix('+') {
        ("+", a)
    } else if rest.is_empty() {
        ("", "")
    } else {
        return Err(format!("invalid interpolation ${{{inner}}}"));
    };
    let arg_value = |unset: &mut Vec<String>| interpolate(arg, lookup, unset);
    Ok(match op {
        "" => match val {
            Some(v) => v,
            None => {
                unset.push(name.to_string());
                String::new()
            }
        },
        ":-" => {
            if set_nonempty {
                val.unwrap()
            } else {
                arg_value(unset)?
            }
        }
        "-" => match val {
            Some(v) => v,
            None => arg_value(unset)?,
        },
        ":?" => {
            if set_nonempty {
                val.unwrap()
            } else {
                return Err(format!(
                    "required variable {name} is missing a value: {}",
                    arg_value(unset)?
                ));
            }
        }
        "?" => match val {
            Some(v) => v,
            None => {
                return Err(format!(
                    "required variable {name} is missing a value: {}",
                    arg_value(unset)?
                ))
            }
        },
        ":+" => {
            if set_nonempty {
                arg_value(unset)?
            } else {
                String::new()
            }
        }
        "+" => {
            if val.is_some() {
                arg_value(unset)?
            } else {
                String::new()
            }
        }
        _ => unreachable!("ops listed above"),
    })
}

/// Parse an env file (`.env`, `env_file:`) as Compose does: `KEY=value` lines, `#` comments,
/// an optional `export `, values in single quotes taken literally, values in double quotes with
/// `\n`, `\t`, `\"`, `\\` escapes, unquoted values ending at ` #`; variables (`${VAR}`...) in
/// unquoted and double-quoted values are interpolated with `lookup`, then with the entries
/// above them. A line with a bare `KEY` takes the value from `lookup` (left out when unset).
/// Errors carry the 1-based line.
pub fn parse_env_file(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let t = t.strip_prefix("export ").map(str::trim_start).unwrap_or(t);
        let (k, v) = match t.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (t, None),
        };
        if k.is_empty()
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err((n + 1, format!("invalid variable name {k:?}")));
        }
        let Some(v) = v else {
            if let Some(val) = lookup(k) {
                out.push((k.to_string(), val));
            }
            continue;
        };
        let (raw, expand) = if let Some(inner) = v.strip_prefix('\'') {
            let body = inner
                .strip_suffix('\'')
                .ok_or_else(|| (n + 1, format!("{k}: unterminated ' quote")))?;
            (body.to_string(), false)
        } else if let Some(inner) = v.strip_prefix('"') {
            let body = inner
                .strip_suffix('"')
                .ok_or_else(|| (n + 1, format!("{k}: unterminated \" quote")))?;
            let mut s = String::with_capacity(body.len());
            let mut chars = body.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some(x @ ('"' | '\\' | '\'')) => s.push(x),
                        Some(x) => {
                            s.push('\\');
                            s.push(x);
                        }
                        None => s.push('\\'),
                    }
                } else {
                    s.push(c);
                }
            }
            (s, true)
        } else {
            // An unquoted value ends at an inline comment.
            let v = match v.find(" #") {
                Some(p) => v[..p].trim_end(),
                None => v,
            };
            (v.to_string(), true)
        };
        let value = if expand {
            let earlier = |name: &str| {
                lookup(name).or_else(|| {
                    out.iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                })
            };
            let mut unset = Vec::new();
            interpolate(&raw, &earlier, &mut unset).map_err(|e| (n + 1, format!("{k}: {e}")))?
        } else {
            raw
        };
        out.push((k.to_string(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: &str) -> Result<(String, Vec<String>), String> {
        let lookup = |k: &str| match k {
            "SET" => Some("v".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let mut unset = Vec::new();
        interpolate(s, &lookup, &mut unset).map(|r| (r, unset))
    }

    #[test]
    fn compose_forms() {
        assert_eq!(run("a $SET b").unwrap().0, "a v b");
        assert_eq!(run("${SET}x").unwrap().0, "vx");
        assert_eq!(run("${NOPE:-d}").unwrap().0, "d");
        assert_eq!(run("${EMPTY:-d}").unwrap().0, "d");
        assert_eq!(run("${EMPTY-d}").unwrap().0, "");
        assert_eq!(run("${NOPE-d}").unwrap().0, "d");
        assert_eq!(run("${SET:+alt}").unwrap().0, "alt");
        assert_eq!(run("${EMPTY:+alt}").unwrap().0, "");
        assert_eq!(run("${EMPTY+alt}").unwrap().0, "alt");
        assert_eq!(run("$$SET").unwrap().0, "$SET");
        assert_eq!(run("${NOPE:-${SET}}").unwrap().0, "v");
        assert_eq!(run("${NOPE:-8080}:80").unwrap().0, "8080:80");
        let (r, unset) = run("x${NOPE}y").unwrap();
        assert_eq!(r, "xy");
        assert_eq!(unset, vec!["NOPE".to_string()]);
        let e = run("${NOPE:?set NOPE please}").unwrap_err();
        assert!(e.contains("NOPE") && e.contains("set NOPE please"), "{e}");
        assert!(run("${EMPTY?x}").is_ok());
        assert!(run("${EMPTY:?x}").is_err());
        assert!(run("${oops").unwrap_err().contains("unclosed"));
        assert!(run("cost $5").is_err());
    }

    #[test]
    fn env_files() {
        let lookup = |k: &str| (k == "HOME").then(|| "/root".to_string());
        let v = parse_env_file(
            "# c\nA=1\nexport B=\"two words\"\nC='x $A' \nD=y # note\nE=${A}-$HOME\nF=\"l1\\nl2\"\nHOME\nNOPE\n",
            &lookup,
        )
        .unwrap();
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x $A".into()),
                ("D".into(), "y".into()),
                ("E".into(), "1-/root".into()),
                ("F".into(), "l1\nl2".into()),
                ("HOME".into(), "/root".into()),
            ]
        );
        assert_eq!(
            parse_env_file("A=1\nnot valid\n", &lookup).unwrap_err().0,
            2
        );
        assert_eq!(parse_env_file("A=\"open\n", &lookup).unwrap_err().0, 1);
    }
}

//! Image references as Docker users write them, parsed and normalized with Docker's rules:
//! `busybox` → `docker.io/library/busybox:latest`, `localhost:5000/a/b:t`,
//! `registry.example/team/app@sha256:<hex>`, `name:tag@sha256:<hex>`.
//!
//! ```text
//! reference   := name [ ":" tag ] [ "@" digest ]
//! name        := [ domain "/" ] path-component [ "/" path-component ]*
//! domain      := host [ ":" port ]      (a first component with "." or ":", or "localhost",
//!                                        or with upper case letters; docker.io otherwise)
//! path-comp.  := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
//! digest      := "sha256:" 64 lowercase hex
//! ```

use std::fmt;
use std::str::FromStr;

pub const DEFAULT_DOMAIN: &str = "docker.io";
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
pub const DEFAULT_TAG: &str = "latest";
const NAME_MAX: usize = 255;

/// A parsed, normalized image reference. Without tag or digest the tag is `latest`; with a
/// digest the digest decides what is pulled (a tag beside it is kept for display only).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// A malformed reference: the input and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceError {
    pub input: String,
    pub reason: String,
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid reference {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for ReferenceError {}

impl Reference {
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let bad = |reason: String| ReferenceError {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(bad("it is empty".into()));
        }
        if let Some(c) = input.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(format!("it contains {c:?}")));
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                check_digest(d).map_err(&bad)?;
                (r, Some(d.to_string()))
            }
            None => (input, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => {
                let t = &rest[i + 1..];
                check_tag(t).map_err(&bad)?;
                (&rest[..i], Some(t.to_string()))
            }
            _ => (rest, None),
        };
        if name.is_empty() {
            return Err(bad("the repository name is empty".into()));
        }
        let (mut domain, mut path) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.chars().any(|c| c.is_ascii_uppercase()) =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        check_domain(&domain).map_err(&bad)?;
        if domain == LEGACY_DEFAULT_DOMAIN {
            domain = DEFAULT_DOMAIN.to_string();
        }
        if domain == DEFAULT_DOMAIN && !path.contains('/') {
            path = format!("{OFFICIAL_REPO_PREFIX}{path}");
        }
        check_path(&path).map_err(&bad)?;
        if domain.len() + 1 + path.len() > NAME_MAX {
            return Err(bad(format!(
                "the repository name is longer than {NAME_MAX} characters"
            )));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// The registry host (and port): `docker.io`, `localhost:5000`.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository inside the registry: `library/busybox`, `team/app`.
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// `domain/path`: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// What to ask the registry's manifest endpoint for: the digest when there is one, else
    /// the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }

    /// `name@digest` for `digest`: the immutable form of this reference.
    pub fn with_digest(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }

    /// The short form people type: `busybox:latest`, `team/app:1`, `localhost:5000/x:t`.
    pub fn familiar(&self) -> String {
        let name = if self.domain == DEFAULT_DOMAIN {
            self.path
                .strip_prefix(OFFICIAL_REPO_PREFIX)
                .unwrap_or(&self.path)
                .to_string()
        } else {
            self.name()
        };
        let mut s = name;
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(s)
    }
}

fn check_digest(d: &str) -> Result<(), String> {
    let Some((alg, hex)) = d.split_once(':') else {
        return Err(format!(
            "digest {d:?} is not of the form sha256:<64 hex characters>"
        ));
    };
    if alg != "sha256" {
        return Err(format!(
            "digest algorithm {alg:?} is not supported (only sha256)"
        ));
    }
    if hex.len() != 64 || !hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(format!(
            "digest {d:?} must have 64 lowercase hex characters after \"sha256:\""
        ));
    }
    Ok(())
}

fn check_tag(t: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.starts_with(word)
        && t.chars().all(|c| word(c) || c == '.' || c == '-');
    if ok {
        Ok(())
    } else if t.is_empty() {
        Err("the tag after ':' is empty".into())
    } else {
        Err(format!(
            "tag {t:?} is invalid (letters, digits, '_', '.', '-', not starting with '.' or '-', at most 128)"
        ))
    }
}

fn check_domain(d: &str) -> Result<(), String> {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return Err(format!("registry {d:?} has an unclosed '['"));
        };
        if v6.is_empty() || !v6.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err(format!("registry {d:?} has an invalid IPv6 address"));
        }
        match after.strip_prefix(':') {
            Some(p) => (None, Some(p)),
            None if after.is_empty() => (None, None),
            None => return Err(format!("registry {d:?} has junk after ']'")),
        }
    } else {
        match d.split_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(h) = host {
        let comp_ok = |c: &str| {
            !c.is_empty()
                && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !c.starts_with('-')
                && !c.ends_with('-')
        };
        if !h.split('.').all(comp_ok) {
            return Err(format!("registry host {h:?} is not a valid host name"));
        }
    }
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(format!("registry {d:?} has an invalid port {p:?}"));
        }
    }
    Ok(())
}

fn check_path(path: &str) -> Result<(), String> {
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository name {path:?} must be lowercase"));
    }
    for comp in path.split('/') {
        if !path_component_ok(comp) {
            return Err(if comp.is_empty() {
                format!("repository name {path:?} has an empty component")
            } else {
                format!(
                    "repository name component {comp:?} is invalid (lowercase letters and digits, \
                     separated by '.', '_', '__' or dashes)"
                )
            });
        }
    }
    Ok(())
}

fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_defaults() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(
            norm("library/busybox:1.36"),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(norm("team/app"), "docker.io/team/app:latest");
        assert_eq!(
            norm("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(norm("a/b/c/d"), "docker.io/a/b/c/d:latest");
    }

    #[test]
    fn registries_ports_and_digests() {
        assert_eq!(norm("localhost:5000/a/b:t"), "localhost:5000/a/b:t");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("127.0.0.1:5000/x"), "127.0.0.1:5000/x:latest");
        assert_eq!(norm("[::1]:5000/x:y"), "[::1]:5000/x:y");
        assert_eq!(norm("Registry/x"), "Registry/x:latest");
        let r = Reference::parse(&format!("registry.example:5000/team/app@{D}")).unwrap();
        assert_eq!(r.domain(), "registry.example:5000");
        assert_eq!(r.path(), "team/app");
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        assert_eq!(r.manifest_reference(), D);
        assert_eq!(r.to_string(), format!("registry.example:5000/team/app@{D}"));
        let r = Reference::parse(&format!("busybox:1.36@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1.36"));
        assert_eq!(r.manifest_reference(), D, "the digest decides");
        assert_eq!(r.with_digest(D), format!("docker.io/library/busybox@{D}"));
    }

    #[test]
    fn familiar_form() {
        assert_eq!(
            Reference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(
            Reference::parse("team/app:1").unwrap().familiar(),
            "team/app:1"
        );
        assert_eq!(
            Reference::parse("localhost:5000/x:t").unwrap().familiar(),
            "localhost:5000/x:t"
        );
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        for (input, want) in [
            ("", "empty"),
            ("busy box", "contains ' '"),
            ("Busybox", "must be lowercase"),
            ("docker.io/Library/busybox", "must be lowercase"),
            ("busybox:", "tag after ':' is empty"),
            ("busybox:-x", "tag \"-x\" is invalid"),
            ("busybox:a+b", "is invalid"),
            ("busybox@sha256:abc", "64 lowercase hex"),
            ("busybox@md5:abc", "only sha256"),
            ("busybox@latest", "not of the form"),
            ("a//b", "empty component"),
            ("a/b-", "component \"b-\" is invalid"),
            ("a/.b", "is invalid"),
            ("a/b___c", "is invalid"),
            ("localhost:99999/x", "invalid port"),
            ("local_host.x/y", "not a valid host name"),
            (":tag", "repository name is empty"),
            ("[::1/x", "unclosed"),
        ] {
            let e = Reference::parse(input).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains(want), "{input:?}: {msg}");
            assert!(msg.contains(&format!("{input:?}")), "{msg}");
        }
        let long = format!("x/{}", "a".repeat(300));
        assert!(Reference::parse(&long)
            .unwrap_err()
            .reason
            .contains("longer than 255"));
        assert!(Reference::parse(&format!("busybox:{}", "a".repeat(129))).is_err());
    }

    #[test]
    fn separators() {
        for ok in ["a.b", "a_b", "a__b", "a-b", "a---b", "a1.b2_c3"] {
            assert!(path_component_ok(ok), "{ok}");
        }
        for bad in ["a..b", "a._b", "a___b", "_a", "a_", "-a", "A"] {
            assert!(!path_component_ok(bad), "{bad}");
        }
    }
}

//! Docker's mounts in their short forms: a volume (`docker run -v`, a Compose short
//! `volumes:` entry) `[SOURCE:]TARGET[:OPTIONS]`, and a tmpfs (`--tmpfs`, `tmpfs:`)
//! `TARGET[:OPTIONS]`.
//!
//! - A source starting with `/`, `.` or `~` is a host path (a bind mount), made absolute
//!   against a base directory with `.` and `..` resolved lexically and `~` the home
//!   directory, as Compose does (and the Docker CLI for `./`); any other source names a
//!   volume; no source at all is an anonymous volume.
//! - Volume options, comma-separated, at most one of each kind (Docker's rule): `ro` or `rw`;
//!   `z` or `Z`; a propagation (`private`, `rprivate`, `shared`, `rshared`, `slave`,
//!   `rslave`); `nocopy`; a consistency (`consistent`, `cached`, `delegated`).
//! - tmpfs options: `size=` (a [size](crate::units::parse_size) above 0), `mode=` (octal),
//!   `uid=`, `gid=`, `nr_inodes=`, and the flags `ro`, `rw`, `exec`, `noexec`, `suid`,
//!   `nosuid`, `dev`, `nodev`.
//! - A target is an absolute path, cleaned (`/data/` is `/data`), and is checked as every
//!   mount target is checked at create ([`berth_proto::validate::mount_target`]).
//!
//! What berth does not honour is for the caller to refuse or warn about
//! ([`Volume::unsupported`]). Errors are one line starting with the quoted value.

use crate::units::parse_size;
use berth_proto::validate;
use std::path::{Component, Path, PathBuf};

/// Where a volume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No source: a volume made for the container.
    Anonymous,
    /// A host path, absolute.
    Bind(String),
    /// A named volume.
    Named(String),
}

/// A volume's short form, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Volume {
    pub source: Source,
    /// Absolute and cleaned.
    pub target: String,
    pub read_only: bool,
    /// The propagation option, when one was given.
    pub propagation: Option<String>,
}

impl Volume {
    /// What berth cannot do of what this volume asks: a mount propagation other than private.
    pub fn unsupported(&self) -> Option<String> {
        self.propagation
            .as_deref()
            .and_then(unsupported_propagation)
    }
}

/// Why berth cannot mount with propagation `p` (any but `private`, `rprivate`), if it cannot.
pub fn unsupported_propagation(p: &str) -> Option<String> {
    match p {
        "private" | "rprivate" => None,
        _ => Some(format!("mount propagation {p:?} is not supported by berth")),
    }
}

/// A tmpfs's short form, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tmpfs {
    /// Absolute and cleaned.
    pub target: String,
    pub size_bytes: Option<u64>,
    pub read_only: bool,
    /// The options given that berth does not apply (checked, for the caller to warn about):
    /// berth mounts every tmpfs `nosuid,nodev,mode=1777`, so `noexec`, `suid`, `dev`, another
    /// `mode`, `uid`, `gid` and `nr_inodes` have no effect.
    pub ignored: Vec<String>,
}

/// What a caller says of a tmpfs's [ignored](Tmpfs::ignored) options.
pub const TMPFS_IGNORED: &str = "not applied by berth (a tmpfs is mounted nosuid,nodev,mode=1777)";

/// Compose's rule, and the Docker CLI's: a source that is a path (starting with `/`, `.` or
/// `~`) is a bind mount; anything else names a volume.
pub fn is_path(s: &str) -> bool {
    s.starts_with('/') || s.starts_with('.') || s.starts_with('~')
}

/// `p` made absolute against `base` (`~` and `~/` are the home directory), `.` and `..`
/// resolved lexically, as Compose resolves bind sources.
pub fn absolute(base: &Path, p: &str) -> String {
    let home = || PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()));
    let joined = if let Some(rest) = p.strip_prefix("~/") {
        home().join(rest)
    } else if p == "~" {
        home()
    } else {
        base.join(p)
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out.display().to_string()
}

/// A mount target: absolute, cleaned, and one a container may have.
pub fn mount_target(t: &str) -> Result<String, String> {
    if !t.starts_with('/') {
        return Err(format!("the target {t:?} must be an absolute path"));
    }
    let clean = absolute(Path::new("/"), t);
    validate::mount_target(&clean)?;
    Ok(clean)
}

/// A volume's short form (see the module); a host path is made absolute against `base`.
pub fn parse_volume(spec: &str, base: &Path) -> Result<Volume, String> {
    let fail = |e: String| format!("{spec:?}: {e}");
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, dst, options) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, options] => (*src, *dst, *options),
        _ => return Err(fail("expected [SOURCE:]TARGET[:OPTIONS]".into())),
    };
    if parts.len() > 1 && src.is_empty() {
        return Err(fail("empty source".into()));
    }
    let target = mount_target(dst).map_err(fail)?;
    let mut v = Volume {
        source: if src.is_empty() {
            Source::Anonymous
        } else if is_path(src) {
            Source::Bind(absolute(base, src))
        } else {
            Source::Named(src.to_string())
        },
        target,
        read_only: false,
        propagation: None,
    };
    // Docker's kinds of option: at most one of each.
    let mut seen: Vec<&str> = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        let kind = match o {
            "ro" | "rw" => "access",
            "z" | "Z" => "label",
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => "propagation",
            "nocopy" => "copy",
            "consistent" | "cached" | "delegated" => "consistency",
            _ => {
                return Err(fail(format!(
                    "unknown option {o:?} (ro, rw, z, Z, nocopy, a propagation or a consistency)"
                )))
            }
        };
        if seen.contains(&kind) {
            return Err(fail(format!("more than one {kind} option")));
        }
        seen.push(kind);
        match kind {
            "access" => v.read_only = o == "ro",
            "propagation" => v.propagation = Some(o.to_string()),
            _ => {}
        }
    }
    Ok(v)
}

/// A tmpfs's short form (see the module).
pub fn parse_tmpfs(spec: &str) -> Result<Tmpfs, String> {
    let fail = |e: String| format!("{spec:?}: {e}");
    let (target, options) = spec.split_once(':').unwrap_or((spec, ""));
    let mut t = Tmpfs {
        target: mount_target(target).map_err(fail)?,
        size_bytes: None,
        read_only: false,
        ignored: Vec::new(),
    };
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o.split_once('=') {
            Some(("size", sz)) => {
                let n = parse_size(sz).map_err(fail)?;
                if n == 0 {
                    return Err(fail("a tmpfs size must be above 0".into()));
                }
                t.size_bytes = Some(n);
            }
            Some(("mode", md)) => {
                let mode = u32::from_str_radix(md, 8)
                    .map_err(|_| fail(format!("mode {md:?} is not an octal mode")))?;
                if mode != 0o1777 {
                    t.ignored.push(o.to_string());
                }
            }
            Some(("uid" | "gid" | "nr_inodes", n)) => {
                n.parse::<u64>()
                    .map_err(|_| fail(format!("{o:?} must be a number")))?;
                t.ignored.push(o.to_string());
            }
            None if matches!(o, "ro" | "rw") => t.read_only = o == "ro",
            None if matches!(o, "exec" | "nosuid" | "nodev") => {}
            None if matches!(o, "noexec" | "suid" | "dev") => t.ignored.push(o.to_string()),
            _ => {
                return Err(fail(format!(
                    "unknown option {o:?} (size, mode, uid, gid, nr_inodes, ro, rw, exec, noexec, suid, nosuid, dev, nodev)"
                )))
            }
        }
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(s: &str) -> Volume {
        parse_volume(s, Path::new("/srv/app")).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn volume_forms() {
        let bind = |p: &str| Source::Bind(p.into());
        let named = |n: &str| Source::Named(n.into());
        for (s, source, target, ro) in [
            ("/data:/d", bind("/data"), "/d", false),
            ("/data:/d:ro", bind("/data"), "/d", true),
            ("/data:/d:rw", bind("/data"), "/d", false),
            ("./site:/www:ro,z", bind("/srv/app/site"), "/www", true),
            ("../x/./y:/y", bind("/srv/x/y"), "/y", false),
            ("cache:/c", named("cache"), "/c", false),
            ("cache:/c:nocopy", named("cache"), "/c", false),
            ("cache:/c/:ro,cached", named("cache"), "/c", true),
            ("/only", Source::Anonymous, "/only", false),
            ("/a:/b/../c", bind("/a"), "/c", false),
            ("/a:/b:ro,", bind("/a"), "/b", true),
        ] {
            let v = vol(s);
            assert_eq!(
                (v.source, v.target.as_str(), v.read_only),
                (source, target, ro),
                "{s}"
            );
        }
        assert!(vol("/a:/b:rprivate").unsupported().is_none());
        assert_eq!(
            vol("/a:/b:rshared").unsupported().unwrap(),
            "mount propagation \"rshared\" is not supported by berth"
        );
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        assert_eq!(vol("~/x:/x").source, Source::Bind(format!("{home}/x")));
    }

    #[test]
    fn bad_volumes_name_the_value() {
        let base = Path::new("/srv/app");
        for (s, e) in [
            (
                "/a:rel",
                "\"/a:rel\": the target \"rel\" must be an absolute path",
            ),
            ("/srv:/", "\"/srv:/\": cannot mount over /"),
            (":/x", "\":/x\": empty source"),
            (
                "/a:/b:rx",
                "\"/a:/b:rx\": unknown option \"rx\" (ro, rw, z, Z, nocopy, a propagation or a consistency)",
            ),
            ("/a:/b:ro,rw", "\"/a:/b:ro,rw\": more than one access option"),
            (
                "/a:/b:shared,private",
                "\"/a:/b:shared,private\": more than one propagation option",
            ),
            (
                "/a:/b:ro:x",
                "\"/a:/b:ro:x\": expected [SOURCE:]TARGET[:OPTIONS]",
            ),
        ] {
            assert_eq!(parse_volume(s, base).unwrap_err(), e, "{s}");
        }
    }

    #[test]
    fn tmpfs_options_berth_does_not_apply_are_listed() {
        let t = parse_tmpfs("/x:rw,noexec,nosuid,mode=1777,mode=700,uid=1000,size=1m").unwrap();
        assert_eq!(t.ignored, ["noexec", "mode=700", "uid=1000"]);
        assert!(parse_tmpfs("/x:exec,nodev,mode=1777,size=1m")
            .unwrap()
            .ignored
            .is_empty());
    }

    #[test]
    fn tmpfs_forms() {
        for (s, target, size, ro) in [
            ("/tmp", "/tmp", None, false),
            ("/run:size=64m", "/run", Some(64 << 20), false),
            (
                "/run/:rw,noexec,nosuid,size=65536k",
                "/run",
                Some(64 << 20),
                false,
            ),
            ("/x:ro,mode=1777,uid=1000", "/x", None, true),
        ] {
            let t = parse_tmpfs(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(
                (t.target.as_str(), t.size_bytes, t.read_only),
                (target, size, ro),
                "{s}"
            );
        }
        for (s, e) in [
            ("tmp", "\"tmp\": the target \"tmp\" must be an absolute path"),
            (
                "/run:size=0",
                "\"/run:size=0\": a tmpfs size must be above 0",
            ),
            (
                "/run:size=lots",
                "\"/run:size=lots\": invalid size \"lots\": expected a number with an optional unit like 512m, 1g or 1.5GB",
            ),
            ("/run:mode=9", "\"/run:mode=9\": mode \"9\" is not an octal mode"),
            ("/run:uid=x", "\"/run:uid=x\": \"uid=x\" must be a number"),
            ("/:size=1m", "\"/:size=1m\": cannot mount over /"),
        ] {
            assert_eq!(parse_tmpfs(s).unwrap_err(), e, "{s}");
        }
        assert!(parse_tmpfs("/run:bogus")
            .unwrap_err()
            .contains("unknown option \"bogus\""));
    }

    #[test]
    fn paths_resolve_like_compose() {
        let b = Path::new("/srv/app");
        assert_eq!(absolute(b, "./html"), "/srv/app/html");
        assert_eq!(absolute(b, "../x/./y"), "/srv/x/y");
        assert_eq!(absolute(b, "/abs/../p"), "/p");
        assert_eq!(absolute(b, "."), "/srv/app");
        assert_eq!(mount_target("/data/").unwrap(), "/data");
    }
}

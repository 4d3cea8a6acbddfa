//! Platforms as `os/arch[/variant]`, normalized the way Docker does (`x86_64` → `amd64`,
//! `aarch64` → `arm64`, `arm64` means `arm64/v8`, `arm` means `arm/v7`), and the choice of one
//! entry of an image index for a platform ([`Platform::pick`]): one rule for the puller (which
//! pulls the entry) and the layer-store (which reads or loads an index), variants included.

use std::fmt;

/// A platform string that is not `os/arch[/variant]`: the input and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {input:?}: {reason}")]
pub struct PlatformError {
    pub input: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

fn norm_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" => "arm",
        "i386" | "i686" => "386",
        a => a,
    }
}

fn default_variant(arch: &str) -> Option<&'static str> {
    match arch {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

impl Platform {
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let bad = |reason: &str| PlatformError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let parts: Vec<&str> = s.split('/').collect();
        if parts.len() < 2 || parts.len() > 3 {
            return Err(bad("expected os/arch or os/arch/variant, e.g. linux/amd64"));
        }
        if parts.iter().any(|p| {
            p.is_empty()
                || !p
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        }) {
            return Err(bad(
                "each part must be a non-empty word of letters, digits, '_', '-', '.'",
            ));
        }
        let arch = norm_arch(&parts[1].to_ascii_lowercase()).to_string();
        let variant = parts
            .get(2)
            .map(|v| v.to_ascii_lowercase())
            .or_else(|| (parts[1] == "armhf").then(|| "v7".into()));
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            arch,
            variant,
        })
    }

    /// The platform of this machine (Linux and its CPU architecture).
    pub fn host() -> Platform {
        let arch = norm_arch(std::env::consts::ARCH).to_string();
        Platform {
            os: "linux".into(),
            variant: default_variant(&arch).map(str::to_string),
            arch,
        }
    }

    /// How well a candidate matches (higher is better), `None` when it does not.
    pub fn score(&self, os: &str, arch: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || norm_arch(arch) != self.arch {
            return None;
        }
        let cand = variant.or(default_variant(&self.arch));
        let want = self.variant.as_deref().or(default_variant(&self.arch));
        match (want, cand) {
            (Some(w), Some(c)) if w == c => Some(2),
            (Some(_), Some(_)) if self.variant.is_some() => None,
            (Some(_), Some(_)) => Some(0),
            (None, None) => Some(2),
            (None, Some(_)) => Some(1),
            (Some(_), None) => Some(1),
        }
    }
}

impl Platform {
    /// The best match for this platform among index entries given as `(os, arch, variant,
    /// entry)`: an exact variant before a default one; `None` when none matches.
    pub fn pick<'a, T>(
        &self,
        entries: impl IntoIterator<Item = (String, String, Option<String>, T)> + 'a,
    ) -> Option<T> {
        let mut best: Option<(u8, T)> = None;
        for (os, arch, variant, entry) in entries {
            if let Some(s) = self.score(&os, &arch, variant.as_deref()) {
                if best.as_ref().is_none_or(|(b, _)| s > *b) {
                    best = Some((s, entry));
                }
            }
        }
        best.map(|(_, e)| e)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p = Platform::parse("linux/amd64").unwrap();
        assert_eq!(p.to_string(), "linux/amd64");
        assert_eq!(Platform::parse("linux/x86_64").unwrap(), p);
        assert!(p.score("linux", "amd64", None).is_some());
        assert!(p.score("linux", "arm64", None).is_none());
        assert!(p.score("windows", "amd64", None).is_none());
        let arm = Platform::parse("linux/arm64").unwrap();
        assert!(arm.score("linux", "arm64", Some("v8")).is_some());
        assert!(arm.score("linux", "arm64", None).is_some());
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(v6.score("linux", "arm", Some("v7")).is_none());
        assert!(v6.score("linux", "arm", Some("v6")).is_some());
        for bad in ["linux", "linux/", "a/b/c/d", "linux/am d64"] {
            let e = Platform::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(Platform::host().os, "linux");
    }

    #[test]
    fn pick_prefers_the_exact_variant_and_keeps_index_order_on_ties() {
        let e = |os: &str, arch: &str, v: Option<&str>, n: u8| {
            (os.to_string(), arch.to_string(), v.map(str::to_string), n)
        };
        let index = || {
            vec![
                e("linux", "arm", Some("v6"), 0),
                e("linux", "arm", Some("v7"), 1),
                e("linux", "arm64", None, 2),
                e("linux", "amd64", None, 3),
                e("linux", "amd64", None, 4),
                e("windows", "amd64", None, 5),
            ]
        };
        let pick = |p: &str| Platform::parse(p).unwrap().pick(index());
        assert_eq!(pick("linux/arm"), Some(1), "arm means arm/v7");
        assert_eq!(pick("linux/arm/v6"), Some(0));
        assert_eq!(pick("linux/arm/v5"), None, "an asked variant must match");
        assert_eq!(
            pick("linux/arm64"),
            Some(2),
            "no variant in the index reads as v8"
        );
        assert_eq!(pick("linux/amd64"), Some(3), "the first of equals");
        assert_eq!(pick("windows/amd64"), Some(5));
        assert_eq!(pick("linux/s390x"), None);
    }
}

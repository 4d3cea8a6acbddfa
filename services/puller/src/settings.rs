//! Registry settings, read from `<data_root>/registries.toml` at the start of every pull so a
//! change applies without a restart:
//!
//! ```toml
//! max_concurrent_downloads = 3     # layers downloaded at once per pull
//! max_attempts = 5                 # tries per registry request on network errors, 5xx, 408, 429
//! retry_backoff_ms = 250           # first pause; doubles each time
//! docker_config = "/root/.docker/config.json"  # credentials (default: $DOCKER_CONFIG or ~/.docker)
//!
//! [registry."registry.example:5000"]
//! insecure = true                  # plain HTTP allowed (also after a redirect), TLS not verified
//! ca_file = "/etc/berth/registry-ca.pem"
//! mirrors = ["mirror.example", "http://127.0.0.1:5001"]   # tried in order, then the origin
//! ```
//!
//! Registries on loopback addresses (`localhost`, `127.0.0.0/8`, `::1`) are insecure by
//! default, as in Docker, unless their entry says `insecure = false`.

use crate::error::PullError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "registries.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default = "default_concurrency")]
    pub max_concurrent_downloads: usize,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub retry_backoff_ms: u64,
    #[serde(default)]
    pub docker_config: Option<PathBuf>,
    #[serde(default)]
    pub registry: BTreeMap<String, RegistryEntry>,
}

/// A `[registry."host[:port]"]` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// Unset: insecure only when the host is a loopback address.
    #[serde(default)]
    pub insecure: Option<bool>,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub mirrors: Vec<String>,
}

/// The settings that apply to one registry host (its entry, with the defaults filled in).
#[derive(Debug, Clone, Default)]
pub struct RegistrySettings {
    /// Plain HTTP allowed (first contact and redirects), TLS certificates not verified.
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
    pub mirrors: Vec<String>,
}

fn default_concurrency() -> usize {
    3
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    250
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_concurrent_downloads: default_concurrency(),
            max_attempts: default_attempts(),
            retry_backoff_ms: default_backoff(),
            docker_config: None,
            registry: BTreeMap::new(),
        }
    }
}

impl Settings {
    /// Read `<data_root>/registries.toml`; the defaults when it does not exist.
    pub fn load(data_root: &Path) -> Result<Settings, PullError> {
        let path = data_root.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => {
                return Err(PullError::Settings {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Settings::parse(&text).map_err(|reason| PullError::Settings { path, reason })
    }

    pub fn parse(text: &str) -> Result<Settings, String> {
        let s: Settings = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        if s.max_concurrent_downloads == 0 || s.max_concurrent_downloads > 64 {
            return Err(format!(
                "max_concurrent_downloads must be between 1 and 64, not {}",
                s.max_concurrent_downloads
            ));
        }
        if s.max_attempts == 0 {
            return Err("max_attempts must be at least 1".into());
        }
        for (host, r) in &s.registry {
            for m in &r.mirrors {
                if m.trim().is_empty() {
                    return Err(format!("registry.{host:?}: a mirror is empty"));
                }
            }
        }
        Ok(s)
    }

    /// The settings of one registry host (`host[:port]`).
    pub fn for_host(&self, host: &str) -> RegistrySettings {
        let e = self.registry.get(host).cloned().unwrap_or_default();
        RegistrySettings {
            insecure: e.insecure.unwrap_or_else(|| is_loopback(host)),
            ca_file: e.ca_file,
            mirrors: e.mirrors,
        }
    }

    /// How registry requests are retried.
    pub fn retry_policy(&self) -> crate::retry::RetryPolicy {
        crate::retry::RetryPolicy {
            max_attempts: self.max_attempts,
            backoff_ms: self.retry_backoff_ms,
        }
    }
}

/// Whether `host[:port]` names the local machine (insecure by default, as in Docker).
pub fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    if h == "localhost" {
        return true;
    }
    h.parse::<std::net::IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_registry_entries() {
        let s = Settings::parse("").unwrap();
        assert_eq!(s.max_concurrent_downloads, 3);
        let s = Settings::parse(
            r#"
max_concurrent_downloads = 5
[registry."reg.example:5000"]
insecure = true
mirrors = ["http://127.0.0.1:5001"]
"#,
        )
        .unwrap();
        assert_eq!(s.max_concurrent_downloads, 5);
        let r = s.for_host("reg.example:5000");
        assert!(r.insecure);
        assert_eq!(r.mirrors, vec!["http://127.0.0.1:5001"]);
        assert!(!s.for_host("other.example").insecure);
        assert!(s.for_host("localhost:5000").insecure);
        assert!(s.for_host("127.0.0.1:5000").insecure);
        assert!(s.for_host("[::1]:5000").insecure);
        // A loopback registry can be made to use verified TLS only.
        let s = Settings::parse("[registry.\"127.0.0.1:5443\"]\ninsecure = false\n").unwrap();
        assert!(!s.for_host("127.0.0.1:5443").insecure);
        assert!(s.for_host("127.0.0.1:5000").insecure);
    }

    #[test]
    fn mistakes_are_named() {
        let e = Settings::parse("[registry.\"x\"]\ninsecur = true\n").unwrap_err();
        assert!(e.contains("insecur"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = Settings::parse("max_concurrent_downloads = 0").unwrap_err();
        assert!(e.contains("between 1 and 64"), "{e}");
    }

    #[test]
    fn loopback() {
        assert!(is_loopback("localhost"));
        assert!(is_loopback("127.0.0.5:80"));
        assert!(!is_loopback("example.com:5000"));
        assert!(!is_loopback("10.0.0.1"));
    }
}

//! Node configuration: defaults, then a TOML file, then `BERTH_*` environment variables, then
//! command-line flags (each later source wins), read through the `config` crate.
//!
//! | key | env | default |
//! |---|---|---|
//! | `node` | `BERTH_NODE` | the host name (made a valid subject token) |
//! | `data_root` | `BERTH_DATA_ROOT` | `/var/lib/berth` |
//! | `run_dir` | `BERTH_RUN_DIR` | `/run/berth` |
//! | `nats_url` | `BERTH_NATS_URL` | unset: `berthd` starts its own `nats-server` |
//! | `nats_creds` | `BERTH_NATS_CREDS` | unset: the identity `berthd` generates for the role, `<data_root>/auth/<role>.json` (the CLI's: `cli.json`) |
//! | `nats_ca` | `BERTH_NATS_CA` | unset (a CA file to verify the server's TLS certificate) |
//! | `nats_port` | `BERTH_NATS_PORT` | `4299` (the local server's port on 127.0.0.1) |
//! | `nats_server_bin` | `BERTH_NATS_SERVER_BIN` | `nats-server` (looked up in `PATH`) |

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/berth.toml";
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_RUN_DIR: &str = "/run/berth";
pub const DEFAULT_NATS_PORT: u16 = 4299;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeConfig {
    pub node: String,
    pub data_root: PathBuf,
    pub run_dir: PathBuf,
    #[serde(default)]
    pub nats_url: Option<String>,
    #[serde(default)]
    pub nats_creds: Option<PathBuf>,
    #[serde(default)]
    pub nats_ca: Option<PathBuf>,
    pub nats_port: u16,
    pub nats_server_bin: String,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(String);

impl NodeConfig {
    /// A node without a bus of its own whose data root and run dir are `data` and `run`
    /// below `root`: for calling a service's library in-process (tests, the bench).
    pub fn local(node: &str, root: &Path) -> NodeConfig {
        NodeConfig {
            node: node.into(),
            data_root: root.join("data"),
            run_dir: root.join("run"),
            nats_url: None,
            nats_creds: None,
            nats_ca: None,
            nats_port: 0,
            nats_server_bin: String::new(),
        }
    }

    /// Load defaults ← file (`path`, or `/etc/berth/berth.toml` when it exists) ← `BERTH_*`
    /// environment ← `overrides` (flag values, `None` for flags not given).
    pub fn load(
        path: Option<&Path>,
        overrides: &[(&str, Option<String>)],
    ) -> Result<NodeConfig, ConfigError> {
        let mut b = config::Config::builder()
            .set_default("node", default_node_name())
            .and_then(|b| b.set_default("data_root", DEFAULT_DATA_ROOT))
            .and_then(|b| b.set_default("run_dir", DEFAULT_RUN_DIR))
            .and_then(|b| b.set_default("nats_port", DEFAULT_NATS_PORT as i64))
            .and_then(|b| b.set_default("nats_server_bin", "nats-server"))
            .map_err(|e| ConfigError(e.to_string()))?;
        match path {
            Some(p) => {
                if !p.exists() {
                    return Err(ConfigError(format!("file {} does not exist", p.display())));
                }
                b = b.add_source(config::File::from(p).format(config::FileFormat::Toml));
            }
            None => {
                if Path::new(DEFAULT_CONFIG_FILE).exists() {
                    b = b.add_source(
                        config::File::from(Path::new(DEFAULT_CONFIG_FILE))
                            .format(config::FileFormat::Toml),
                    );
                }
            }
        }
        b = b.add_source(
            config::Environment::with_prefix("BERTH")
                .prefix_separator("_")
                .try_parsing(true),
        );
        for (k, v) in overrides {
            if let Some(v) = v {
                b = b
                    .set_override(*k, v.clone())
                    .map_err(|e| ConfigError(e.to_string()))?;
            }
        }
        let cfg: NodeConfig = b
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| ConfigError(e.to_string()))?;
        if !berth_proto::subjects::valid_token(&cfg.node) {
            return Err(ConfigError(format!(
                "node name {:?} must be letters, digits, '-' or '_'",
                cfg.node
            )));
        }
        Ok(cfg)
    }

    /// The directory of the identities `berthd` generates (0700).
    pub fn auth_dir(&self) -> PathBuf {
        self.data_root.join("auth")
    }
    /// Where `berthd` writes the identity of `role`.
    pub fn creds_path(&self, role: crate::Identity) -> PathBuf {
        self.auth_dir().join(role.file_name())
    }
    /// The operator's identity (everything; used by no tool by default).
    pub fn admin_creds_path(&self) -> PathBuf {
        self.creds_path(crate::Identity::Admin)
    }
    pub fn monitor_creds_path(&self) -> PathBuf {
        self.creds_path(crate::Identity::Monitor)
    }
    /// The identity the CLI reads by default.
    pub fn cli_creds_path(&self) -> PathBuf {
        self.creds_path(crate::Identity::Cli)
    }
    pub fn containers_dir(&self) -> PathBuf {
        self.data_root.join("containers")
    }
    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.containers_dir().join(id)
    }
    pub fn container_run_dir(&self, id: &str) -> PathBuf {
        self.run_dir.join(id)
    }
    pub fn volumes_dir(&self) -> PathBuf {
        self.data_root.join("volumes")
    }
    pub fn content_dir(&self) -> PathBuf {
        self.data_root.join("content")
    }
    pub fn snapshots_dir(&self) -> PathBuf {
        self.data_root.join("snapshots")
    }
}

/// The host name, made into a valid subject token.
pub fn default_node_name() -> String {
    let raw = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "local".to_string());
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "local".into()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_defaults() {
        let dir = std::env::temp_dir().join(format!("berth-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("berth.toml");
        std::fs::write(&f, "node = \"from-file\"\ndata_root = \"/srv/berth\"\n").unwrap();
        let c = NodeConfig::load(Some(&f), &[("node", Some("from-flag".into()))]).unwrap();
        assert_eq!(c.node, "from-flag");
        assert_eq!(c.data_root, PathBuf::from("/srv/berth"));
        assert_eq!(c.run_dir, PathBuf::from(DEFAULT_RUN_DIR));
        assert_eq!(c.nats_port, DEFAULT_NATS_PORT);
        let bad = NodeConfig::load(Some(&f), &[("node", Some("a.b".into()))]).unwrap_err();
        assert!(bad.to_string().contains("a.b"), "{bad}");
        let missing = NodeConfig::load(Some(&dir.join("nope.toml")), &[]).unwrap_err();
        assert!(missing.to_string().contains("nope.toml"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The validated, normalised project: what the reconciler stores and converges toward.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Project {
    pub name: String,
    pub services: BTreeMap<String, Service>,
    #[serde(default)]
    pub volumes: BTreeMap<String, VolumeDef>,
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkDef>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeDef {
    #[serde(default)]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetworkDef {
    #[serde(default)]
    pub external: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A port's protocol: the wire type (`tcp`, `udp`), one enum for the spec and the engine.
pub use berth_proto::network::Protocol;

/// One published port (ranges are expanded, one entry a port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    /// None: an ephemeral host port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountType {
    Bind,
    Volume,
    Tmpfs,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    #[serde(rename = "type")]
    pub kind: MountType,
    /// Host path (bind, made absolute), volume name (volume; empty for anonymous), unused (tmpfs).
    #[serde(default)]
    pub source: String,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    /// `["CMD", ...]`, `["CMD-SHELL", "..."]` or `["NONE"]`.
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DependsOn {
    pub condition: Condition,
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(default)]
    pub restart: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicySpec {
    /// `none`, `on-failure` or `any`.
    pub condition: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceNetwork {
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Service {
    /// Empty when `rootfs` is given.
    #[serde(default)]
    pub image: String,
    /// `x-berth: {rootfs: DIR}`: run a host directory instead of an image (as Podman's
    /// `--rootfs`), made absolute against the first file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// env_file entries first, then `environment` (which wins).
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub expose: Vec<String>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Docker's policy string: `no`, `always`, `unless-stopped`, `on-failure[:max]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default)]
    pub depends_on: BTreeMap<String, DependsOn>,
    #[serde(default = "one")]
    pub replicas: u32,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    #[serde(default)]
    pub networks: BTreeMap<String, ServiceNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default)]
    pub read_only: bool,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub tmpfs: Vec<String>,
    /// Host devices (`devices:`, short syntax `HOST[:CONTAINER[:PERMISSIONS]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<berth_proto::isolator::DeviceMapping>,
    #[serde(default)]
    pub init: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_ms: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub profiles: Vec<String>,
    /// `security_opt: [seccomp:...]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<Seccomp>,
    /// `security_opt: [no-new-privileges:...]` (berth's default: on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_new_privileges: Option<bool>,
}

/// A service's seccomp setting from `security_opt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Seccomp {
    /// No filter.
    Unconfined,
    /// A profile in Docker's format, read from `source` (absolute) when the file was loaded;
    /// a change to the file changes the service's configuration hash.
    Profile { source: String, json: String },
}

fn one() -> u32 {
    1
}

impl Service {
    /// A hash of the service's effective configuration (canonical JSON: maps are ordered).
    /// The replica count is not part of it: scaling never recreates existing replicas.
    pub fn config_hash(&self) -> String {
        let mut s = self.clone();
        s.replicas = 0;
        let json = serde_json::to_vec(&s).expect("services serialize");
        hex::encode(Sha256::digest(&json))[..16].to_string()
    }
}

/// How Compose names a project's network or volume on the node: its `name:`, the key itself
/// when external, else `<project>_<key>`.
pub fn node_name(project: &str, key: &str, name: Option<&String>, external: bool) -> String {
    match name {
        Some(n) => n.clone(),
        None if external => key.to_string(),
        None => format!("{project}_{key}"),
    }
}

/// An anonymous volume belongs to the service (kept across replacements):
/// `<project>_<service><target with '_' for every other character>`.
pub fn anonymous_volume(project: &str, service: &str, target: &str) -> String {
    let t: String = target
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{project}_{service}{t}")
}

/// The name of replica `n` (from 1) of a service without `container_name`, as Compose names
/// it: `<project>-<service>-<n>`.
pub fn replica_name(project: &str, service: &str, n: u32) -> String {
    format!("{project}-{service}-{n}")
}

impl Project {
    /// The project's volume `key` on the node.
    pub fn volume_on_node(&self, key: &str) -> String {
        let d = self.volumes.get(key);
        node_name(
            &self.name,
            key,
            d.and_then(|d| d.name.as_ref()),
            d.is_some_and(|d| d.external),
        )
    }

    /// The project's network `key` on the node (`<project>_default` for the implicit one).
    pub fn network_on_node(&self, key: &str) -> String {
        let d = self.networks.get(key);
        node_name(
            &self.name,
            key,
            d.and_then(|d| d.name.as_ref()),
            d.is_some_and(|d| d.external),
        )
    }

    /// Service names in an order that starts every dependency before its dependants
    /// (alphabetical among equals, so the order is stable).
    pub fn start_order(&self) -> Vec<String> {
        let mut done: Vec<String> = Vec::new();
        let mut left: Vec<&String> = self.services.keys().collect();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|name| {
                let ready = self.services[*name]
                    .depends_on
                    .keys()
                    .all(|d| done.contains(d) || !self.services.contains_key(d));
                if ready {
                    done.push((*name).clone());
                }
                !ready
            });
            if left.len() == before {
                // A cycle (refused at load): keep the rest in name order.
                done.extend(left.drain(..).cloned());
            }
        }
        done
    }
}

//! Bridge networks and published ports: the types of the isolator's network verbs
//! (`network-create`, `network-remove`, `networks`, `network-inspect`, `ports`). Docker's
//! port forms (`8080:80`, `127.0.0.1:8080:80`) are read into [`PortMapping`]s by
//! `berth_docker::ports::parse_ports`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;

pub const NETWORK_CREATE: &str = "network-create";
pub const NETWORK_REMOVE: &str = "network-remove";
pub const NETWORKS: &str = "networks";
pub const NETWORK_INSPECT: &str = "network-inspect";
pub const PORTS: &str = "ports";

/// The node's default bridge network (`berth run -p ...`, `--network bridge`,
/// `network_mode: bridge`), made by the isolator for the first container that asks for it
/// and never removed by a project.
pub const DEFAULT_NETWORK: &str = "bridge";

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        })
    }
}

/// One published port: `host_ip:host_port` on the host forwards to `container_port` of the
/// container's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; `None` means every address (`0.0.0.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    /// `0` means a free port chosen when the container is attached.
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl fmt::Display for PortMapping {
    /// `80/tcp -> 0.0.0.0:8080`, as `docker port` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = self
            .host_ip
            .map(|i| match i {
                IpAddr::V6(v6) => format!("[{v6}]"),
                IpAddr::V4(v4) => v4.to_string(),
            })
            .unwrap_or_else(|| "0.0.0.0".into());
        write!(
            f,
            "{}/{} -> {ip}:{}",
            self.container_port, self.protocol, self.host_port
        )
    }
}

/// One container attached to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub container_id: String,
    pub container_name: String,
    /// Further names it answers to (a Compose service name, `--network-alias`).
    #[serde(default)]
    pub aliases: Vec<String>,
    pub address: String,
    /// The host end of the container's veth pair.
    pub veth: String,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    /// The Linux bridge on the host.
    pub bridge: String,
    /// CIDR, e.g. `10.89.0.0/24`.
    pub subnet: String,
    /// The bridge's address: the containers' default route and name server.
    pub gateway: String,
    /// RFC 3339.
    pub created: String,
    #[serde(default)]
    pub endpoints: Vec<EndpointInfo>,
}

/// `network-create`: a bridge network; the subnet is chosen from the node's pool when absent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkCreateRequest {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
}

/// `network-remove`: refused while containers are attached.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRemoveRequest {
    pub name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkRemoveReply {
    pub name: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NetworksRequest {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworksReply {
    pub networks: Vec<NetworkInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkInspectRequest {
    pub name: String,
}

/// `ports`: the published ports of a container (by id or name), as bound on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortsRequest {
    pub container: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PortsReply {
    pub ports: Vec<PortMapping>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_print_as_docker_port_does() {
        let m = |ip: Option<&str>, host_port, container_port, protocol| PortMapping {
            host_ip: ip.map(|i| i.parse().unwrap()),
            host_port,
            container_port,
            protocol,
        };
        assert_eq!(
            m(None, 8080, 80, Protocol::Tcp).to_string(),
            "80/tcp -> 0.0.0.0:8080"
        );
        assert_eq!(
            m(Some("::1"), 9000, 90, Protocol::Tcp).to_string(),
            "90/tcp -> [::1]:9000"
        );
        assert_eq!(
            m(Some("127.0.0.1"), 5353, 53, Protocol::Udp).to_string(),
            "53/udp -> 127.0.0.1:5353"
        );
    }
}

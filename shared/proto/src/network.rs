//! Bridge networks and published ports: the types of the isolator's network verbs
//! (`network-create`, `network-remove`, `networks`, `network-inspect`, `ports`) and the
//! parser of Docker's port forms (`8080:80`, `127.0.0.1:8080:80`, `8080:80/udp`,
//! `8000-8001:80-81`).

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

fn port(s: &str, what: &str, whole: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!(
            "port {whole:?}: {what} {s:?} is not a port number (1-65535)"
        )),
    }
}

/// `a` or `a-b` (inclusive, `a <= b`).
fn range(s: &str, what: &str, whole: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        None => {
            let p = port(s, what, whole)?;
            Ok((p, p))
        }
        Some((a, b)) => {
            let (a, b) = (port(a, what, whole)?, port(b, what, whole)?);
            if a > b {
                return Err(format!(
                    "port {whole:?}: {what} range {s:?} ends before it starts"
                ));
            }
            Ok((a, b))
        }
    }
}

/// Parse one of Docker's port forms into one mapping per port:
/// `80` (any free host port), `8080:80`, `127.0.0.1:8080:80`, `127.0.0.1::80`,
/// `[::1]:8080:80`, with an optional `/tcp` or `/udp`, and ranges of equal length
/// (`8000-8001:80-81`).
pub fn parse_ports(spec: &str) -> Result<Vec<PortMapping>, String> {
    let whole = spec;
    let s = spec.trim();
    if s.is_empty() {
        return Err("port \"\": empty".into());
    }
    let (s, protocol) = match s.rsplit_once('/') {
        Some((rest, "tcp")) => (rest, Protocol::Tcp),
        Some((rest, "udp")) => (rest, Protocol::Udp),
        Some((_, p)) => return Err(format!("port {whole:?}: protocol {p:?} is not tcp or udp")),
        None => (s, Protocol::Tcp),
    };
    // Split off a host address: `[v6]:...` or `a.b.c.d:...` (three parts).
    let (host_ip, rest) = if let Some(r) = s.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| format!("port {whole:?}: unterminated [address]"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("port {whole:?}: {ip:?} is not an IP address"))?;
        (Some(ip), rest)
    } else {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.len() {
            1 | 2 => (None, s),
            3 => {
                let ip: IpAddr = parts[0]
                    .parse()
                    .map_err(|_| format!("port {whole:?}: {:?} is not an IP address", parts[0]))?;
                (Some(ip), &s[parts[0].len() + 1..])
            }
            _ => return Err(format!("port {whole:?}: too many ':'")),
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    let (c0, c1) = range(container, "container port", whole)?;
    let hosts: Option<(u16, u16)> = if host.is_empty() {
        None
    } else {
        Some(range(host, "host port", whole)?)
    };
    if let Some((h0, h1)) = hosts {
        if h1 - h0 != c1 - c0 {
            return Err(format!(
                "port {whole:?}: host range {host} and container range {container} differ in length"
            ));
        }
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, cp)| PortMapping {
            host_ip,
            host_port: hosts.map(|(h0, _)| h0 + i as u16).unwrap_or(0),
            container_port: cp,
            protocol,
        })
        .collect())
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

    fn one(s: &str) -> PortMapping {
        let v = parse_ports(s).unwrap();
        assert_eq!(v.len(), 1, "{s}");
        v.into_iter().next().unwrap()
    }

    #[test]
    fn docker_forms() {
        let m = one("8080:80");
        assert_eq!((m.host_ip, m.host_port, m.container_port), (None, 8080, 80));
        assert_eq!(m.protocol, Protocol::Tcp);
        let m = one("127.0.0.1:8080:80");
        assert_eq!(m.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((m.host_port, m.container_port), (8080, 80));
        let m = one("8080:80/udp");
        assert_eq!(m.protocol, Protocol::Udp);
        let m = one("80");
        assert_eq!((m.host_port, m.container_port), (0, 80));
        let m = one("127.0.0.1::53/udp");
        assert_eq!((m.host_port, m.container_port), (0, 53));
        assert_eq!(m.protocol, Protocol::Udp);
        let m = one("[::1]:9000:90");
        assert_eq!(m.host_ip, Some("::1".parse().unwrap()));
        assert_eq!(m.to_string(), "90/tcp -> [::1]:9000");
        assert_eq!(one("8080:80").to_string(), "80/tcp -> 0.0.0.0:8080");
    }

    #[test]
    fn ranges() {
        let v = parse_ports("8000-8001:80-81").unwrap();
        assert_eq!(
            v.iter()
                .map(|m| (m.host_port, m.container_port))
                .collect::<Vec<_>>(),
            vec![(8000, 80), (8001, 81)]
        );
        let v = parse_ports("7000-7002").unwrap();
        assert_eq!(v.len(), 3);
        assert!(v.iter().all(|m| m.host_port == 0));
    }

    #[test]
    fn bad_forms_name_the_part() {
        let e = parse_ports("8000-8002:80-81").unwrap_err();
        assert!(e.contains("differ in length"), "{e}");
        let e = parse_ports("8080:80/sctp").unwrap_err();
        assert!(e.contains("\"sctp\""), "{e}");
        let e = parse_ports("x:80").unwrap_err();
        assert!(e.contains("host port \"x\""), "{e}");
        let e = parse_ports("8080:0").unwrap_err();
        assert!(e.contains("container port \"0\""), "{e}");
        let e = parse_ports("300.1.1.1:80:80").unwrap_err();
        assert!(e.contains("not an IP address"), "{e}");
        let e = parse_ports("1:2:3:4").unwrap_err();
        assert!(e.contains("too many"), "{e}");
        let e = parse_ports("90-80:90-80").unwrap_err();
        assert!(e.contains("ends before it starts"), "{e}");
        assert!(parse_ports("").is_err());
        assert!(parse_ports("70000:80").is_err());
    }
}

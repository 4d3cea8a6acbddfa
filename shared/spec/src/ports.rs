//! Published ports (`ports:`, short and long syntax) and `expose:` entries. The short forms
//! are Docker's, read by `berth_docker::ports` (as `berth run -p` reads them); the long
//! syntax is Compose's own and uses the same pieces.

use crate::model::{PortSpec, Protocol};
use berth_docker::ports::{host_ip, mappings, port_range, protocol};
use berth_proto::network::PortMapping;
use serde_json::{Map, Value};

/// The spec's form of a mapping: the address as text, no host port as `None`.
fn spec(m: PortMapping) -> PortSpec {
    PortSpec {
        host_ip: m.host_ip.map(|i| i.to_string()),
        host_port: (m.host_port != 0).then_some(m.host_port),
        container_port: m.container_port,
        protocol: m.protocol,
    }
}

/// A short-syntax entry (`[[HOST_IP:][HOST_PORT[-END]]:]CONTAINER_PORT[-END][/PROTO]`), one
/// entry a port.
pub fn parse_port(s: &str) -> Result<Vec<PortSpec>, String> {
    Ok(berth_docker::ports::parse_ports(s)?
        .into_iter()
        .map(spec)
        .collect())
}

/// The long syntax: `{target, published, host_ip, protocol, mode, name, app_protocol}`.
/// Returns the ports and the keys berth does not know (for the caller to report).
pub fn long_port(o: &Map<String, Value>) -> Result<Vec<PortSpec>, String> {
    for k in o.keys() {
        if !k.starts_with("x-")
            && !matches!(
                k.as_str(),
                "target" | "published" | "host_ip" | "protocol" | "mode" | "name" | "app_protocol"
            )
        {
            return Err(format!("unknown key `{k}` in a long-syntax port"));
        }
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let target = o
        .get("target")
        .and_then(text)
        .ok_or("a long-syntax port needs a `target` port")?;
    let c = port_range(&target, "target")?;
    let host = match o.get("published").filter(|p| !p.is_null()) {
        Some(p) => {
            let s = text(p).ok_or("`published` must be a port or a range")?;
            if s.is_empty() {
                None
            } else {
                Some(port_range(&s, "published port")?)
            }
        }
        None => None,
    };
    let proto = match o.get("protocol") {
        None | Some(Value::Null) => Protocol::Tcp,
        Some(Value::String(p)) => protocol(p)?,
        Some(_) => return Err("`protocol` must be tcp or udp".into()),
    };
    match o.get("mode") {
        None | Some(Value::Null) => {}
        Some(Value::String(m)) if m == "host" || m == "ingress" => {}
        Some(m) => return Err(format!("mode {m}: expected host or ingress")),
    }
    let host_ip = match o.get("host_ip") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(host_ip(s)?),
        Some(_) => return Err("`host_ip` must be an IP address".into()),
    };
    Ok(mappings(host_ip, host, c, proto)?
        .into_iter()
        .map(spec)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_forms() {
        let o = |j: serde_json::Value| j.as_object().unwrap().clone();
        let p = long_port(&o(serde_json::json!({"target": 80, "published": "8000", "host_ip": "127.0.0.1", "protocol": "udp", "mode": "host"}))).unwrap();
        assert_eq!(p[0].host_port, Some(8000));
        assert_eq!(p[0].protocol, Protocol::Udp);
        let p = long_port(&o(
            serde_json::json!({"target": "80-81", "published": "8080-8081"}),
        ))
        .unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(
            long_port(&o(serde_json::json!({"target": 70000}))).unwrap_err(),
            "target \"70000\" is not a port number (1-65535)"
        );
        assert_eq!(
            long_port(&o(serde_json::json!({"target": 80, "hostip": "1.2.3.4"}))).unwrap_err(),
            "unknown key `hostip` in a long-syntax port"
        );
        assert!(long_port(&o(serde_json::json!({"published": 80}))).is_err());
        assert!(long_port(&o(serde_json::json!({"target": 80, "host_ip": "x"}))).is_err());
    }
}

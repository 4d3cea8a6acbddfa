//! Published ports (`ports:`, short and long syntax) and `expose:` entries.

use crate::model::{PortSpec, Protocol};
use serde_json::{Map, Value};
use std::net::IpAddr;

/// `80` or `8000-8010`.
fn port_range(s: &str, what: &str) -> Result<(u16, u16), String> {
    let one = |p: &str| match p.trim().parse::<u32>() {
        Ok(n) if (1..=65535).contains(&n) => Ok(n as u16),
        _ => Err(format!("{what} {p:?} is not a port number (1-65535)")),
    };
    match s.split_once('-') {
        None => one(s).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if b < a {
                return Err(format!("{what} range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

fn protocol(p: &str) -> Result<Protocol, String> {
    match p {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        other => Err(format!("protocol {other:?} is not tcp or udp")),
    }
}

fn ip(s: &str) -> Result<String, String> {
    s.parse::<IpAddr>()
        .map(|a| a.to_string())
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// One port per entry of a host range and a container range of the same length; a host range
/// with a single container port is refused (Docker would pick one port of the range).
fn expand(
    host_ip: Option<String>,
    host: Option<(u16, u16)>,
    (c0, c1): (u16, u16),
    protocol: Protocol,
) -> Result<Vec<PortSpec>, String> {
    if let Some((h0, h1)) = host {
        if h1 - h0 != c1 - c0 {
            return Err(format!(
                "the host range has {} ports and the container range {}",
                h1 - h0 + 1,
                c1 - c0 + 1
            ));
        }
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, cp)| PortSpec {
            host_ip: host_ip.clone(),
            host_port: host.map(|(h0, _)| h0 + i as u16),
            container_port: cp,
            protocol,
        })
        .collect())
}

/// Docker's short port syntax: `[[HOST_IP:][HOST_PORT[-END]]:]CONTAINER_PORT[-END][/PROTO]`,
/// an IPv6 host address in brackets (`[::1]:8080:80`). Ranges are expanded, one entry a port.
pub fn parse_port(spec: &str) -> Result<Vec<PortSpec>, String> {
    let fail = |e: String| format!("{spec:?}: {e}");
    let s = spec.trim();
    if s.is_empty() {
        return Err("an empty port".into());
    }
    let (body, proto) = match s.rsplit_once('/') {
        Some((b, p)) => (b, protocol(p).map_err(fail)?),
        None => (s, Protocol::Tcp),
    };
    let (host_ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (addr, after) = r
            .split_once("]:")
            .ok_or_else(|| fail("expected [ADDRESS]:PORT".into()))?;
        (Some(ip(addr).map_err(fail)?), after)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body),
            3 => (
                Some(ip(parts[0]).map_err(fail)?),
                &body[parts[0].len() + 1..],
            ),
            _ => {
                return Err(fail(
                    "expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT (put an IPv6 address in [])"
                        .into(),
                ))
            }
        }
    };
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (
            if h.is_empty() {
                None
            } else {
                Some(port_range(h, "host port").map_err(fail)?)
            },
            c,
        ),
        None => (None, rest),
    };
    let c = port_range(container, "container port").map_err(fail)?;
    expand(host_ip, host, c, proto).map_err(fail)
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
        Some(Value::String(s)) => Some(ip(s)?),
        Some(_) => return Err("`host_ip` must be an IP address".into()),
    };
    expand(host_ip, host, c, proto)
}

/// An `expose:` entry: `3000`, `3000-3005`, `3000/udp`.
pub fn check_expose(spec: &str) -> Result<(), String> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, Some(p)),
        None => (spec, None),
    };
    if let Some(p) = proto {
        protocol(p).map_err(|e| format!("{spec:?}: {e}"))?;
    }
    port_range(body, "port").map_err(|e| format!("{spec:?}: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_forms() {
        let p = parse_port("8080:80").unwrap();
        assert_eq!((p[0].host_port, p[0].container_port), (Some(8080), 80));
        let p = parse_port("80").unwrap();
        assert_eq!((p[0].host_port, p[0].container_port), (None, 80));
        let p = parse_port("127.0.0.1::53/udp").unwrap();
        assert_eq!(p[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(p[0].host_port, None);
        assert_eq!(p[0].protocol, Protocol::Udp);
        let p = parse_port("[::1]:8443:443").unwrap();
        assert_eq!(p[0].host_ip.as_deref(), Some("::1"));
        let p = parse_port("9000-9002:8000-8002").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!((p[2].host_port, p[2].container_port), (Some(9002), 8002));
        let p = parse_port("7000-7001").unwrap();
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn bad_short_forms() {
        assert_eq!(
            parse_port("8080:0").unwrap_err(),
            "\"8080:0\": container port \"0\" is not a port number (1-65535)"
        );
        assert_eq!(
            parse_port("80/sctp").unwrap_err(),
            "\"80/sctp\": protocol \"sctp\" is not tcp or udp"
        );
        assert_eq!(
            parse_port("localhost:80:80").unwrap_err(),
            "\"localhost:80:80\": \"localhost\" is not an IP address"
        );
        assert_eq!(
            parse_port("81-80:81-80").unwrap_err(),
            "\"81-80:81-80\": host port range \"81-80\" ends before it starts"
        );
        assert_eq!(
            parse_port("8000-8002:80").unwrap_err(),
            "\"8000-8002:80\": the host range has 3 ports and the container range 1"
        );
        assert!(parse_port("1:2:3:4").is_err());
        assert!(parse_port("").is_err());
    }

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

    #[test]
    fn expose_entries() {
        assert!(check_expose("3000").is_ok());
        assert!(check_expose("3000-3005/udp").is_ok());
        assert!(check_expose("http").is_err());
    }
}

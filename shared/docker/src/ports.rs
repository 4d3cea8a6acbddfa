//! Docker's published ports (`docker run -p`, a Compose short `ports:` entry) and exposed
//! ports (`--expose`, `expose:`), read as Docker's `nat.ParsePortSpec` reads them:
//! `[[HOST_IP:][HOST_PORT[-END]]:]CONTAINER_PORT[-END][/PROTOCOL]`.
//!
//! - The host address may be IPv6, bare (`::1:8080:80`) or in brackets (`[::1]:8080:80`).
//! - The protocol is `tcp` (the default, also for a bare `/`) or `udp`, in any case; Docker's
//!   `sctp` is refused, as berth does not publish it.
//! - Ranges are expanded into one mapping a port. A host range must be as long as the
//!   container range: Docker's "a host range with one container port" (pick a free port of
//!   the range) is refused.
//! - A port is 1-65535 (Docker's `0` for a container port means nothing to berth; a free
//!   host port is asked for by leaving the host port out).
//!
//! Errors are one line starting with the quoted value: the caller puts the flag or key in
//! front (`--publish "x:80": host port "x" is not a port number (1-65535)`).

use berth_proto::network::{PortMapping, Protocol};
use std::net::IpAddr;

/// A port number, `1`-`65535`, digits only.
fn port(p: &str, what: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|c| c.is_ascii_digit()) => Ok(n),
        _ => Err(format!("{what} {p:?} is not a port number (1-65535)")),
    }
}

/// `80` or `8000-8010` (inclusive): the first and last port; `what` names it in errors
/// (`host port`, `container port`, `published port`).
pub fn port_range(s: &str, what: &str) -> Result<(u16, u16), String> {
    match s.split_once('-') {
        None => port(s, what).map(|p| (p, p)),
        Some((a, b)) => {
            let (a, b) = (port(a, what)?, port(b, what)?);
            if b < a {
                return Err(format!("{what} range {s:?} ends before it starts"));
            }
            Ok((a, b))
        }
    }
}

/// `tcp` or `udp`, in any case; empty is `tcp`.
pub fn protocol(p: &str) -> Result<Protocol, String> {
    match p.to_ascii_lowercase().as_str() {
        "" | "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!("protocol {p:?} is not tcp or udp")),
    }
}

/// A host address, IPv4 or IPv6, the latter optionally in brackets.
pub fn host_ip(s: &str) -> Result<IpAddr, String> {
    let bare = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(s);
    bare.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// One mapping per port of the container range `c0..=c1`, each to the matching port of the
/// host range (or to a free host port, `0`, without one).
pub fn mappings(
    host_ip: Option<IpAddr>,
    host: Option<(u16, u16)>,
    (c0, c1): (u16, u16),
    protocol: Protocol,
) -> Result<Vec<PortMapping>, String> {
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
        .map(|(i, cp)| PortMapping {
            host_ip,
            host_port: host.map_or(0, |(h0, _)| h0 + i as u16),
            container_port: cp,
            protocol,
        })
        .collect())
}

/// A published port, one mapping per port: `80` (a free host port), `8080:80`,
/// `127.0.0.1:8080:80`, `127.0.0.1::80`, `[::1]:8080:80`, `8080:80/udp`,
/// `8000-8001:80-81`, `7000-7002`.
pub fn parse_ports(spec: &str) -> Result<Vec<PortMapping>, String> {
    let fail = |e: String| format!("{spec:?}: {e}");
    let s = spec.trim();
    if s.is_empty() {
        return Err(fail("no port given".into()));
    }
    // Docker's split: the last part is the container's, the one before it the host's, and
    // everything before those the address (which may hold colons itself: IPv6).
    let parts: Vec<&str> = s.split(':').collect();
    let n = parts.len();
    let ip = if n > 2 {
        parts[..n - 2].join(":")
    } else {
        String::new()
    };
    let host = if n > 1 { parts[n - 2] } else { "" };
    let (container, proto) = parts[n - 1].split_once('/').unwrap_or((parts[n - 1], ""));
    let protocol = protocol(proto).map_err(fail)?;
    if container.is_empty() {
        return Err(fail("no container port given".into()));
    }
    let host_ip = if ip.is_empty() {
        None
    } else {
        Some(host_ip(&ip).map_err(fail)?)
    };
    let c = port_range(container, "container port").map_err(fail)?;
    let h = if host.is_empty() {
        None
    } else {
        Some(port_range(host, "host port").map_err(fail)?)
    };
    mappings(host_ip, h, c, protocol).map_err(fail)
}

/// An exposed port: `3000`, `3000-3005`, `3000/udp`: the range and its protocol.
pub fn parse_expose(spec: &str) -> Result<((u16, u16), Protocol), String> {
    let fail = |e: String| format!("{spec:?}: {e}");
    let (range, proto) = spec.trim().split_once('/').unwrap_or((spec.trim(), ""));
    let protocol = protocol(proto).map_err(fail)?;
    Ok((port_range(range, "port").map_err(fail)?, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    /// (host address, host port, container port, protocol) of each mapping.
    fn read(s: &str) -> Vec<(Option<IpAddr>, u16, u16, Protocol)> {
        parse_ports(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .into_iter()
            .map(|m| (m.host_ip, m.host_port, m.container_port, m.protocol))
            .collect()
    }

    #[test]
    fn docker_forms() {
        use Protocol::{Tcp, Udp};
        for (s, want) in [
            ("80", vec![(None, 0, 80, Tcp)]),
            ("8080:80", vec![(None, 8080, 80, Tcp)]),
            ("8080:80/udp", vec![(None, 8080, 80, Udp)]),
            ("8080:80/UDP", vec![(None, 8080, 80, Udp)]),
            ("8080:80/tcp", vec![(None, 8080, 80, Tcp)]),
            ("8080:80/", vec![(None, 8080, 80, Tcp)]),
            ("127.0.0.1:8080:80", vec![(ip("127.0.0.1"), 8080, 80, Tcp)]),
            ("127.0.0.1::53/udp", vec![(ip("127.0.0.1"), 0, 53, Udp)]),
            (":8080:80", vec![(None, 8080, 80, Tcp)]),
            ("[::1]:8443:443", vec![(ip("::1"), 8443, 443, Tcp)]),
            ("[::1]::443", vec![(ip("::1"), 0, 443, Tcp)]),
            ("::1:8443:443", vec![(ip("::1"), 8443, 443, Tcp)]),
            ("fe80::2:9000:90", vec![(ip("fe80::2"), 9000, 90, Tcp)]),
            (
                "8000-8001:80-81",
                vec![(None, 8000, 80, Tcp), (None, 8001, 81, Tcp)],
            ),
            (
                "7000-7002",
                vec![
                    (None, 0, 7000, Tcp),
                    (None, 0, 7001, Tcp),
                    (None, 0, 7002, Tcp),
                ],
            ),
            (" 8080:80 ", vec![(None, 8080, 80, Tcp)]),
        ] {
            assert_eq!(read(s), want, "{s}");
        }
    }

    #[test]
    fn bad_forms_name_the_value_and_the_part() {
        for (s, e) in [
            ("", "\"\": no port given"),
            ("8080:", "\"8080:\": no container port given"),
            (
                "8080:0",
                "\"8080:0\": container port \"0\" is not a port number (1-65535)",
            ),
            (
                "x:80",
                "\"x:80\": host port \"x\" is not a port number (1-65535)",
            ),
            (
                "70000:80",
                "\"70000:80\": host port \"70000\" is not a port number (1-65535)",
            ),
            (
                "+80",
                "\"+80\": container port \"+80\" is not a port number (1-65535)",
            ),
            (
                "8080: 80",
                "\"8080: 80\": container port \" 80\" is not a port number (1-65535)",
            ),
            (
                "80/sctp",
                "\"80/sctp\": protocol \"sctp\" is not tcp or udp",
            ),
            (
                "localhost:80:80",
                "\"localhost:80:80\": \"localhost\" is not an IP address",
            ),
            (
                "300.1.1.1:80:80",
                "\"300.1.1.1:80:80\": \"300.1.1.1\" is not an IP address",
            ),
            ("1:2:3:4", "\"1:2:3:4\": \"1:2\" is not an IP address"),
            (
                "81-80:80",
                "\"81-80:80\": host port range \"81-80\" ends before it starts",
            ),
            (
                "90-80",
                "\"90-80\": container port range \"90-80\" ends before it starts",
            ),
            (
                "8000-8002:80",
                "\"8000-8002:80\": the host range has 3 ports and the container range 1",
            ),
            (
                "8000-8002:80-81",
                "\"8000-8002:80-81\": the host range has 3 ports and the container range 2",
            ),
        ] {
            assert_eq!(parse_ports(s).unwrap_err(), e, "{s}");
        }
    }

    #[test]
    fn exposed_ports() {
        assert_eq!(parse_expose("3000"), Ok(((3000, 3000), Protocol::Tcp)));
        assert_eq!(
            parse_expose("3000-3005/udp"),
            Ok(((3000, 3005), Protocol::Udp))
        );
        assert_eq!(
            parse_expose("http").unwrap_err(),
            "\"http\": port \"http\" is not a port number (1-65535)"
        );
        assert!(parse_expose("80/sctp").is_err());
    }
}

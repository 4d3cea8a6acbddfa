//! Published ports: a userspace proxy per port. Sockets are bound synchronously when the
//! container is attached (so a port taken on the host is reported at once, naming the port
//! and the container), then served by tokio tasks that forward to the container's address.
//! Aborting the task closes the listener and every connection it carries.

use crate::error::NetError;
use berth_proto::network::{PortMapping, Protocol};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How long a UDP client's session lasts without traffic.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// A bound host socket for one mapping (`mapping.host_port` is the real port).
pub struct Bound {
    pub mapping: PortMapping,
    socket: Socket,
}

enum Socket {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

fn host_addr(m: &PortMapping) -> SocketAddr {
    SocketAddr::new(
        m.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        m.host_port,
    )
}

/// Bind every mapping's host socket; the first that fails is an error naming the address,
/// the protocol and `container`, and nothing stays bound.
pub fn bind(mappings: &[PortMapping], container: &str) -> Result<Vec<Bound>, NetError> {
    let mut out = Vec::new();
    for m in mappings {
        let addr = host_addr(m);
        let err = |e: std::io::Error| NetError::Port {
            addr: addr.to_string(),
            proto: m.protocol,
            container: container.to_string(),
            reason: if e.kind() == std::io::ErrorKind::AddrInUse {
                "already in use on the host".to_string()
            } else {
                e.to_string()
            },
        };
        let (socket, port) = match m.protocol {
            Protocol::Tcp => {
                let l = std::net::TcpListener::bind(addr).map_err(err)?;
                l.set_nonblocking(true).map_err(err)?;
                let port = l.local_addr().map_err(err)?.port();
                (Socket::Tcp(l), port)
            }
            Protocol::Udp => {
                let s = std::net::UdpSocket::bind(addr).map_err(err)?;
                s.set_nonblocking(true).map_err(err)?;
                let port = s.local_addr().map_err(err)?.port();
                (Socket::Udp(s), port)
            }
        };
        let mut mapping = m.clone();
        mapping.host_port = port;
        out.push(Bound { mapping, socket });
    }
    Ok(out)
}

/// Serve a bound socket on the current tokio runtime, forwarding to `target:container_port`.
pub fn spawn(b: Bound, target: Ipv4Addr) -> tokio::task::JoinHandle<()> {
    let to = SocketAddr::new(IpAddr::V4(target), b.mapping.container_port);
    match b.socket {
        Socket::Tcp(l) => tokio::spawn(async move {
            match tokio::net::TcpListener::from_std(l) {
                Ok(l) => tcp(l, to).await,
                Err(e) => tracing::error!("proxy to {to}: {e}"),
            }
        }),
        Socket::Udp(s) => tokio::spawn(async move {
            match tokio::net::UdpSocket::from_std(s) {
                Ok(s) => udp(Arc::new(s), to).await,
                Err(e) => tracing::error!("proxy to {to}: {e}"),
            }
        }),
    }
}

async fn tcp(l: tokio::net::TcpListener, to: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (mut client, _) = match l.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("proxy to {to}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        conns.spawn(async move {
            let _ = client.set_nodelay(true);
            match tokio::net::TcpStream::connect(to).await {
                Ok(mut up) => {
                    let _ = up.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
                Err(e) => tracing::debug!("proxy to {to}: connect: {e}"),
            }
        });
    }
}

async fn udp(s: Arc<tokio::net::UdpSocket>, to: SocketAddr) {
    let mut sessions: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<SocketAddr>();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            Some(gone) = done_rx.recv() => {
                sessions.remove(&gone);
                while tasks.try_join_next().is_some() {}
            }
            r = s.recv_from(&mut buf) => {
                let Ok((n, client)) = r else { continue };
                let up = match sessions.get(&client) {
                    Some(u) => u.clone(),
                    None => {
                        let Ok(u) = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await else { continue };
                        if u.connect(to).await.is_err() {
                            continue;
                        }
                        let u = Arc::new(u);
                        sessions.insert(client, u.clone());
                        let (down, up2, done) = (s.clone(), u.clone(), done_tx.clone());
                        tasks.spawn(async move {
                            let mut b = vec![0u8; 65536];
                            while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, up2.recv(&mut b)).await {
                                let _ = down.send_to(&b[..n], client).await;
                            }
                            let _ = done.send(client);
                        });
                        u
                    }
                };
                let _ = up.send(&buf[..n]).await;
            }
        }
    }
}

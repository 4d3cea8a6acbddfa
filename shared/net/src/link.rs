//! Links, addresses and routes through rtnetlink: the bridge of a network on the host, and a
//! container's veth pair whose inner end is configured from inside the container's network
//! namespace (a netlink socket opened by a thread that has joined it).

use crate::error::NetError;
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{
    new_connection, Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// The name of the container's end of its veth pair.
pub const CONTAINER_IFACE: &str = "eth0";

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

/// A netlink connection in the calling thread's network namespace.
pub fn connect() -> Result<Handle, NetError> {
    let (conn, handle, _) =
        new_connection().map_err(|e| NetError::netlink("open a netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// A netlink connection inside the network namespace `ns` (an open `/proc/<pid>/ns/net`):
/// a short-lived thread joins the namespace and opens the socket there; the socket stays
/// bound to that namespace wherever it is used afterwards.
pub fn connect_in(ns: &OwnedFd) -> Result<Handle, NetError> {
    let fd = ns
        .try_clone()
        .map_err(|e| NetError::netlink("dup the namespace fd", e))?;
    let rt = tokio::runtime::Handle::current();
    let (conn, handle) = std::thread::spawn(move || {
        nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
            NetError::Sys {
                step: "join the container's network namespace".into(),
                source: e,
            }
        })?;
        let _g = rt.enter();
        let (conn, handle, _) = new_connection()
            .map_err(|e| NetError::netlink("open a netlink socket in the container", e))?;
        Ok::<_, NetError>((conn, handle))
    })
    .join()
    .map_err(|_| NetError::netlink("netns thread", "panicked"))??;
    tokio::spawn(conn);
    Ok(handle)
}

/// The index of link `name`, if it exists.
pub async fn index(h: &Handle, name: &str) -> Result<Option<u32>, NetError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(l)) => Ok(Some(l.header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(NetError::netlink(format!("look up link {name}"), e)),
    }
}

/// A locally administered unicast MAC derived from the bridge's name.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    use sha2::{Digest, Sha256};
    let h = Sha256::digest(name.as_bytes());
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

/// The MAC of a container's `eth0`, derived from its address as Docker does
/// (`02:42:a:b:c:d`): when an address is handed out again, its MAC is the same, so the
/// neighbours' ARP entries for it stay right.
pub fn container_mac(address: Ipv4Addr) -> [u8; 6] {
    let o = address.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

/// Make sure bridge `name` exists, has `gateway/prefix` and is up; returns its index.
pub async fn ensure_bridge(
    h: &Handle,
    name: &str,
    gateway: Ipv4Addr,
    subnet: Ipv4Net,
) -> Result<u32, NetError> {
    let idx = match index(h, name).await? {
        Some(i) => i,
        None => {
            // A fixed MAC: otherwise the bridge takes the lowest MAC of its ports and changes
            // it as containers come and go, and the containers' ARP entries for the gateway
            // go stale.
            let msg = LinkBridge::new(name)
                .address(bridge_mac(name).to_vec())
                .build();
            match h.link().add(msg).execute().await {
                Ok(()) => {}
                Err(e) if errno(&e) == Some(libc::EEXIST) => {}
                Err(e) => return Err(NetError::netlink(format!("create bridge {name}"), e)),
            }
            index(h, name).await?.ok_or_else(|| {
                NetError::netlink(format!("create bridge {name}"), "missing after creation")
            })?
        }
    };
    match h
        .address()
        .add(idx, IpAddr::V4(gateway), subnet.prefix_len())
        .execute()
        .await
    {
        Ok(()) => {}
        Err(e) if errno(&e) == Some(libc::EEXIST) => {}
        Err(e) => {
            return Err(NetError::netlink(
                format!("add {gateway}/{} to bridge {name}", subnet.prefix_len()),
                e,
            ))
        }
    }
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(|e| NetError::netlink(format!("bring bridge {name} up"), e))?;
    Ok(idx)
}

/// Delete link `name`; a missing link is not an error.
pub async fn delete(h: &Handle, name: &str) -> Result<(), NetError> {
    let Some(idx) = index(h, name).await? else {
        return Ok(());
    };
    match h.link().del(idx).execute().await {
        Ok(()) => Ok(()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
        Err(e) => Err(NetError::netlink(format!("delete link {name}"), e)),
    }
}

/// Create the veth pair `host_end` (on bridge `bridge_idx`, up) and `eth0` directly inside
/// the namespace `ns`, then, inside it: bring `lo` and `eth0` up, give `eth0`
/// `address/prefix`, and route everything via `gateway`. On failure the pair is deleted.
pub async fn attach_veth(
    h: &Handle,
    ns: &OwnedFd,
    bridge_idx: u32,
    host_end: &str,
    address: Ipv4Addr,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(CONTAINER_IFACE.to_string())
        .address(container_mac(address).to_vec())
        .setns_by_fd(ns.as_raw_fd())
        .build();
    let msg = LinkVeth::new(host_end, CONTAINER_IFACE)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .controller(bridge_idx)
        .up()
        .build();
    h.link().add(msg).execute().await.map_err(|e| {
        NetError::netlink(format!("create veth pair {host_end}/{CONTAINER_IFACE}"), e)
    })?;
    let inner = configure_inside(ns, address, subnet, gateway).await;
    if inner.is_err() {
        let _ = delete(h, host_end).await;
    }
    inner
}

async fn configure_inside(
    ns: &OwnedFd,
    address: Ipv4Addr,
    subnet: Ipv4Net,
    gateway: Ipv4Addr,
) -> Result<(), NetError> {
    let c = connect_in(ns)?;
    if let Some(lo) = index(&c, "lo").await? {
        c.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(|e| NetError::netlink("bring lo up in the container", e))?;
    }
    let eth = index(&c, CONTAINER_IFACE).await?.ok_or_else(|| {
        NetError::netlink(
            "configure the container",
            format!("{CONTAINER_IFACE} is missing"),
        )
    })?;
    c.address()
        .add(eth, IpAddr::V4(address), subnet.prefix_len())
        .execute()
        .await
        .map_err(|e| {
            NetError::netlink(
                format!(
                    "add {address}/{} to {CONTAINER_IFACE} in the container",
                    subnet.prefix_len()
                ),
                e,
            )
        })?;
    c.link()
        .set(LinkUnspec::new_with_index(eth).up().build())
        .execute()
        .await
        .map_err(|e| {
            NetError::netlink(format!("bring {CONTAINER_IFACE} up in the container"), e)
        })?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(eth)
        .build();
    c.route().add(route).execute().await.map_err(|e| {
        NetError::netlink(format!("default route via {gateway} in the container"), e)
    })?;
    Ok(())
}

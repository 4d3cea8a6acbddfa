//! berth's bridge networks (see docs/network.md): durable network records with address
//! allocation, a Linux bridge per network with its iptables rules, veth pairs into the
//! containers' network namespaces, an embedded DNS server per network, and userspace
//! proxies for published ports.
//!
//! [`Net`] is used by the isolator service: `attach` after the shim reports the container's
//! init pid (its network namespace exists, the container has not started), `detach` when the
//! container goes away, `restore` when the service starts. It needs a tokio runtime: its DNS
//! servers and port proxies are tasks of the runtime it was created on.

pub mod dns;
pub mod error;
pub mod iptables;
pub mod link;
pub mod proxy;
pub mod store;

pub use error::NetError;

use berth_proto::network::{NetworkInfo, PortMapping};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{Endpoint, NetworkRecord, Store, StoreLock};
use tokio::task::JoinHandle;

/// Settings of a node's networking.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Records live under `<data_root>/networks/`.
    pub data_root: PathBuf,
    /// Subnets for networks created without one are cut from this pool...
    pub pool: Ipv4Net,
    /// ...in blocks of this prefix length.
    pub subnet_prefix: u8,
    /// A host-wide lock held while a subnet is chosen and its bridge made, so that two
    /// berth instances on one host never pick the same subnet.
    pub host_lock: PathBuf,
    /// Port of each network's DNS server on its gateway address.
    pub dns_port: u16,
}

impl NetConfig {
    /// Defaults: pool `10.89.0.0/16` in `/24`s, DNS on port 53, host lock
    /// `/run/berth-net.lock`.
    pub fn new(data_root: &Path) -> NetConfig {
        NetConfig {
            data_root: data_root.to_path_buf(),
            pool: "10.89.0.0/16".parse().expect("valid pool"),
            subnet_prefix: 24,
            host_lock: PathBuf::from("/run/berth-net.lock"),
            dns_port: 53,
        }
    }
}

/// A container to attach to a network.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub network: String,
    pub container_id: String,
    pub container_name: String,
    pub aliases: Vec<String>,
    /// The container's init, as seen from the host: its network namespace is joined.
    pub pid: u32,
    pub ports: Vec<PortMapping>,
}

/// What `attach` made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network: String,
    pub bridge: String,
    pub veth: String,
    pub address: Ipv4Addr,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// The published ports as bound (ports requested as 0 have their real number).
    pub ports: Vec<PortMapping>,
}

#[derive(Default)]
struct Tasks {
    dns: HashMap<String, JoinHandle<()>>,
    /// Proxies by (network, container id).
    proxies: HashMap<(String, String), Vec<JoinHandle<()>>>,
}

/// A node's networks.
pub struct Net {
    cfg: NetConfig,
    store: Store,
    rt: tokio::runtime::Handle,
    ops: tokio::sync::Mutex<()>,
    tasks: std::sync::Mutex<Tasks>,
}

impl Drop for Net {
    fn drop(&mut self) {
        let t = self.tasks.get_mut().unwrap_or_else(|e| e.into_inner());
        for h in t.dns.values() {
            h.abort();
        }
        for hs in t.proxies.values() {
            hs.iter().for_each(|h| h.abort());
        }
    }
}

/// The content of `/etc/resolv.conf` for a container on a network whose gateway is
/// `gateway`: the network's DNS server first, then the host's name servers that a container
/// can reach (loopback ones are left out) and the host's `search` and `options` lines.
pub fn resolv_conf(gateway: Ipv4Addr, host_resolv_conf: &str) -> String {
    let mut out = format!("nameserver {gateway}\n");
    for l in host_resolv_conf.lines() {
        let mut w = l.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(a) = w.next() {
                    let loopback = a
                        .parse::<IpAddr>()
                        .map(|ip| ip.is_loopback())
                        .unwrap_or(true);
                    if !loopback && a != gateway.to_string() {
                        out.push_str(&format!("nameserver {a}\n"));
                    }
                }
            }
            Some("search") | Some("options") | Some("domain") => {
                out.push_str(l.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// The `/etc/hosts` lines naming the container itself on its network: `<address>` followed
/// by its host name, container name and aliases.
pub fn hosts_entries(
    address: Ipv4Addr,
    hostname: &str,
    container_name: &str,
    aliases: &[String],
) -> String {
    let mut names: Vec<&str> = vec![hostname];
    for n in std::iter::once(container_name).chain(aliases.iter().map(|s| s.as_str())) {
        if !n.is_empty() && !names.contains(&n) {
            names.push(n);
        }
    }
    format!("{address}\t{}\n", names.join(" "))
}

fn open_netns(pid: u32) -> Result<OwnedFd, NetError> {
    let p = format!("/proc/{pid}/ns/net");
    nix::fcntl::open(
        p.as_str(),
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| NetError::Sys {
        step: format!("open the network namespace of pid {pid} ({p})"),
        source: e,
    })
}

impl Net {
    /// Networking for `cfg.data_root`; must be called within a tokio runtime, which runs
    /// the DNS servers and proxies.
    pub fn new(cfg: NetConfig) -> Arc<Net> {
        Arc::new(Net {
            store: Store::new(&cfg.data_root),
            cfg,
            rt: tokio::runtime::Handle::current(),
            ops: tokio::sync::Mutex::new(()),
            tasks: Default::default(),
        })
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn lock(&self) -> Result<(tokio::sync::MutexGuard<'_, ()>, StoreLock), NetError> {
        let g = self.ops.lock().await;
        let store = self.store.clone();
        let l = tokio::task::spawn_blocking(move || store.lock())
            .await
            .map_err(|e| NetError::netlink("lock task", e))??;
        Ok((g, l))
    }

    /// Every network.
    pub fn list(&self) -> Result<Vec<NetworkInfo>, NetError> {
        Ok(self.store.list()?.iter().map(|r| r.info()).collect())
    }

    pub fn inspect(&self, name: &str) -> Result<NetworkInfo, NetError> {
        store::check_name(name)?;
        Ok(self.store.load(name)?.info())
    }

    fn pick_subnet(
        &self,
        others: &[NetworkRecord],
        wanted: Option<&str>,
    ) -> Result<Ipv4Net, NetError> {
        let routes = store::host_routes()?;
        let clash = |s: &Ipv4Net| -> Option<String> {
            for r in others {
                if r.subnet.contains(s) || s.contains(&r.subnet) {
                    return Some(format!("network {:?} ({})", r.name, r.subnet));
                }
            }
            for (dev, net) in &routes {
                if net.contains(s) || s.contains(net) {
                    return Some(format!("the host's route {net} on {dev}"));
                }
            }
            None
        };
        if let Some(w) = wanted {
            let s: Ipv4Net = w.parse().map_err(|_| {
                NetError::invalid(
                    "subnet",
                    format!("{w:?} is not an IPv4 CIDR like 10.90.0.0/24"),
                )
            })?;
            if s.trunc() != s {
                return Err(NetError::invalid(
                    "subnet",
                    format!("{w}: host bits are set (did you mean {}?)", s.trunc()),
                ));
            }
            if s.prefix_len() > 29 {
                return Err(NetError::invalid(
                    "subnet",
                    format!("{w}: too small, /29 at most"),
                ));
            }
            if let Some(what) = clash(&s) {
                return Err(NetError::Overlap {
                    subnet: s.to_string(),
                    what,
                });
            }
            return Ok(s);
        }
        let subnets = self.cfg.pool.subnets(self.cfg.subnet_prefix).map_err(|e| {
            NetError::invalid(
                "pool",
                format!("{} in /{}: {e}", self.cfg.pool, self.cfg.subnet_prefix),
            )
        })?;
        for s in subnets {
            if clash(&s).is_none() {
                return Ok(s);
            }
        }
        Err(NetError::NoSubnet {
            pool: self.cfg.pool.to_string(),
            prefix: self.cfg.subnet_prefix,
        })
    }

    /// Create a network: choose (or check) its subnet, make its bridge with the gateway
    /// address, its iptables rules, enable forwarding, record it and start its DNS server.
    /// Nothing stays if a step fails.
    pub async fn create(&self, name: &str, subnet: Option<&str>) -> Result<NetworkInfo, NetError> {
        store::check_name(name)?;
        let (_g, l) = self.lock().await?;
        if self.store.exists(name) {
            return Err(NetError::Exists(name.to_string()));
        }
        let host_lock = self.cfg.host_lock.clone();
        let _host = tokio::task::spawn_blocking(move || store::lock_file(&host_lock))
            .await
            .map_err(|e| NetError::netlink("lock task", e))??;
        let others = self.store.list()?;
        let subnet = self.pick_subnet(&others, subnet)?;
        let gateway = subnet
            .hosts()
            .next()
            .ok_or_else(|| NetError::invalid("subnet", format!("{subnet} has no host address")))?;
        let bridge = store::bridge_name(&self.cfg.data_root, name);
        let rec = NetworkRecord {
            name: name.to_string(),
            bridge: bridge.clone(),
            subnet,
            gateway,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            endpoints: Vec::new(),
            last_address: None,
        };
        let made = self.make(&rec, &l).await;
        if let Err(e) = made {
            self.unmake(&rec).await;
            return Err(e);
        }
        tracing::info!(network = name, %subnet, bridge, "network created");
        Ok(rec.info())
    }

    async fn make(&self, rec: &NetworkRecord, l: &StoreLock) -> Result<(), NetError> {
        let h = link::connect()?;
        link::ensure_bridge(&h, &rec.bridge, rec.gateway, rec.subnet).await?;
        let (b, s) = (rec.bridge.clone(), rec.subnet);
        tokio::task::spawn_blocking(move || {
            iptables::ensure(&b, s)?;
            iptables::enable_forwarding()
        })
        .await
        .map_err(|e| NetError::netlink("iptables task", e))??;
        self.start_dns(rec).await?;
        self.store.save(l, rec)
    }

    async fn unmake(&self, rec: &NetworkRecord) {
        self.stop_dns(&rec.name).await;
        if let Ok(h) = link::connect() {
            if let Err(e) = link::delete(&h, &rec.bridge).await {
                tracing::warn!(network = rec.name, "{e}");
            }
        }
        let b = rec.bridge.clone();
        match tokio::task::spawn_blocking(move || iptables::remove(&b)).await {
            Ok(Err(e)) => tracing::warn!(network = rec.name, "{e}"),
            Err(e) => tracing::warn!(network = rec.name, "{e}"),
            Ok(Ok(())) => {}
        }
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, Tasks> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stop a network's DNS server and wait until its socket is closed.
    async fn stop_dns(&self, network: &str) {
        let h = self.tasks().dns.remove(network);
        if let Some(h) = h {
            h.abort();
            let _ = h.await;
        }
    }

    async fn start_dns(&self, rec: &NetworkRecord) -> Result<(), NetError> {
        if self
            .tasks()
            .dns
            .get(&rec.name)
            .is_some_and(|h| !h.is_finished())
        {
            return Ok(());
        }
        let addr = std::net::SocketAddr::new(IpAddr::V4(rec.gateway), self.cfg.dns_port);
        // The address may still be held for a moment by the server of a network with the
        // same subnet that was just removed (an aborted task closes its socket when the
        // runtime drops it): retry briefly.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        let sock = loop {
            match tokio::net::UdpSocket::bind(addr).await {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => {
                    return Err(NetError::Port {
                        addr: addr.to_string(),
                        proto: berth_proto::network::Protocol::Udp,
                        container: format!("the DNS server of network {:?}", rec.name),
                        reason: e.to_string(),
                    })
                }
            }
        };
        let r = Arc::new(dns::Resolver::new(self.store.clone(), &rec.name));
        let h = self.rt.spawn(dns::serve(sock, r));
        self.tasks().dns.insert(rec.name.clone(), h);
        Ok(())
    }

    /// Create the network unless it exists (Compose's per-project default network).
    pub async fn ensure(&self, name: &str) -> Result<NetworkInfo, NetError> {
        match self.create(name, None).await {
            Err(NetError::Exists(_)) => self.inspect(name),
            r => r,
        }
    }

    /// Remove a network: its DNS server, bridge, rules and record. Refused while a live
    /// container is attached; endpoints of containers that are gone are released first.
    pub async fn remove(&self, name: &str) -> Result<(), NetError> {
        store::check_name(name)?;
        let (_g, l) = self.lock().await?;
        let mut rec = self.store.load(name)?;
        self.reap(&mut rec).await;
        if !rec.endpoints.is_empty() {
            self.store.save(&l, &rec)?;
            return Err(NetError::InUse {
                network: name.to_string(),
                containers: rec
                    .endpoints
                    .iter()
                    .map(|e| e.container_name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        self.stop_dns(name).await;
        let h = link::connect()?;
        link::delete(&h, &rec.bridge).await?;
        let b = rec.bridge.clone();
        tokio::task::spawn_blocking(move || iptables::remove(&b))
            .await
            .map_err(|e| NetError::netlink("iptables task", e))??;
        self.store.delete(&l, name)?;
        tracing::info!(network = name, "network removed");
        Ok(())
    }

    /// Stop a container's proxies and wait until their sockets are closed.
    async fn stop_proxies(&self, network: &str, container_id: &str) {
        let hs = self
            .tasks()
            .proxies
            .remove(&(network.to_string(), container_id.to_string()));
        for h in hs.unwrap_or_default() {
            h.abort();
            let _ = h.await;
        }
    }

    /// Drop the endpoints of `rec` whose network namespace is gone (their veth went with
    /// it), stopping their proxies. Returns whether anything changed.
    async fn reap(&self, rec: &mut NetworkRecord) -> bool {
        let (live, dead): (Vec<Endpoint>, Vec<Endpoint>) =
            rec.endpoints.drain(..).partition(|e| e.alive());
        rec.endpoints = live;
        for e in &dead {
            self.stop_proxies(&rec.name, &e.container_id).await;
            tracing::info!(
                network = rec.name,
                container = e.container_name,
                "released the address of a container that is gone"
            );
        }
        !dead.is_empty()
    }

    /// Attach a container (its init must exist, not yet started) to a network: a veth pair
    /// on the bridge with `eth0` in the container, an address from the subnet, the default
    /// route via the gateway, and the published ports. If any step fails, nothing stays
    /// (no veth, no address, no bound port) and the error names the step.
    pub async fn attach(&self, req: &AttachRequest) -> Result<Attachment, NetError> {
        store::check_name(&req.network)?;
        if req.container_id.is_empty() {
            return Err(NetError::invalid("container id", "empty"));
        }
        let who = if req.container_name.is_empty() {
            req.container_id.clone()
        } else {
            req.container_name.clone()
        };
        let (_g, l) = self.lock().await?;
        let mut rec = self.store.load(&req.network)?;
        self.reap(&mut rec).await;
        let h = link::connect()?;
        // The same container attached again (re-created after an exit): replace its endpoint.
        if let Some(i) = rec
            .endpoints
            .iter()
            .position(|e| e.container_id == req.container_id)
        {
            let old = rec.endpoints.remove(i);
            self.stop_proxies(&rec.name, &old.container_id).await;
            link::delete(&h, &old.veth).await?;
        }
        let address = rec
            .free_address()
            .ok_or_else(|| NetError::Exhausted(rec.name.clone()))?;
        let ns = open_netns(req.pid)?;
        let ino = store::netns_ino(req.pid).ok_or_else(|| NetError::Sys {
            step: format!("stat the network namespace of pid {}", req.pid),
            source: nix::Error::ESRCH,
        })?;
        let bound = proxy::bind(&req.ports, &who)?;
        let bridge_idx = match link::index(&h, &rec.bridge).await? {
            Some(i) => i,
            None => link::ensure_bridge(&h, &rec.bridge, rec.gateway, rec.subnet).await?,
        };
        let veth = store::veth_name(&rec.bridge, &req.container_id);
        link::delete(&h, &veth).await?;
        link::attach_veth(&h, &ns, bridge_idx, &veth, address, rec.subnet, rec.gateway).await?;
        let ports: Vec<PortMapping> = bound.iter().map(|b| b.mapping.clone()).collect();
        rec.last_address = Some(address);
        rec.endpoints.push(Endpoint {
            container_id: req.container_id.clone(),
            container_name: req.container_name.clone(),
            aliases: req.aliases.clone(),
            address,
            veth: veth.clone(),
            pid: req.pid,
            netns_ino: ino,
            ports: ports.clone(),
        });
        if let Err(e) = self.store.save(&l, &rec) {
            let _ = link::delete(&h, &veth).await;
            return Err(e);
        }
        let handles: Vec<JoinHandle<()>> = {
            let _e = self.rt.enter();
            bound
                .into_iter()
                .map(|b| proxy::spawn(b, address))
                .collect()
        };
        if !handles.is_empty() {
            self.tasks()
                .proxies
                .insert((rec.name.clone(), req.container_id.clone()), handles);
        }
        if let Err(e) = self.start_dns(&rec).await {
            tracing::warn!(network = rec.name, "{e}");
        }
        Ok(Attachment {
            network: rec.name.clone(),
            bridge: rec.bridge.clone(),
            veth,
            address,
            subnet: rec.subnet,
            gateway: rec.gateway,
            ports,
        })
    }

    /// Detach a container from a network: its veth, address and proxies. Detaching a
    /// container that is not attached does nothing.
    pub async fn detach(&self, network: &str, container_id: &str) -> Result<(), NetError> {
        store::check_name(network)?;
        let (_g, l) = self.lock().await?;
        let mut rec = self.store.load(network)?;
        let changed = self.reap(&mut rec).await;
        if let Some(i) = rec
            .endpoints
            .iter()
            .position(|e| e.container_id == container_id)
        {
            let e = rec.endpoints.remove(i);
            self.stop_proxies(network, container_id).await;
            let h = link::connect()?;
            link::delete(&h, &e.veth).await?;
        } else if !changed {
            return Ok(());
        }
        self.store.save(&l, &rec)
    }

    /// Detach a container from every network it is attached to.
    pub async fn detach_all(&self, container_id: &str) -> Result<(), NetError> {
        for r in self.store.list()? {
            if r.endpoints.iter().any(|e| e.container_id == container_id) {
                self.detach(&r.name, container_id).await?;
            }
        }
        Ok(())
    }

    /// Release the endpoints of every container that is gone (their veth went with their
    /// network namespace): their addresses, records and published ports.
    pub async fn sweep(&self) -> Result<(), NetError> {
        let (_g, l) = self.lock().await?;
        for mut r in self.store.list()? {
            if self.reap(&mut r).await {
                self.store.save(&l, &r)?;
            }
        }
        Ok(())
    }

    /// After a restart of the service (or of the host): make sure every network's bridge
    /// and rules exist, start its DNS server, release the endpoints of containers that are
    /// gone and serve the published ports of the live ones again.
    pub async fn restore(&self) -> Result<(), NetError> {
        let (_g, l) = self.lock().await?;
        let h = link::connect()?;
        for mut r in self.store.list()? {
            link::ensure_bridge(&h, &r.bridge, r.gateway, r.subnet).await?;
            let (b, s) = (r.bridge.clone(), r.subnet);
            tokio::task::spawn_blocking(move || {
                iptables::ensure(&b, s)?;
                iptables::enable_forwarding()
            })
            .await
            .map_err(|e| NetError::netlink("iptables task", e))??;
            if self.reap(&mut r).await {
                self.store.save(&l, &r)?;
            }
            self.start_dns(&r).await?;
            for e in &r.endpoints {
                let key = (r.name.clone(), e.container_id.clone());
                if self.tasks().proxies.contains_key(&key) || e.ports.is_empty() {
                    continue;
                }
                match proxy::bind(&e.ports, &e.container_name) {
                    Ok(bound) => {
                        let _e = self.rt.enter();
                        let hs = bound
                            .into_iter()
                            .map(|b| proxy::spawn(b, e.address))
                            .collect();
                        self.tasks().proxies.insert(key, hs);
                    }
                    Err(err) => tracing::warn!(network = r.name, "{err}"),
                }
            }
        }
        Ok(())
    }

    /// The published ports of a container (by id, short id or name) on any network.
    pub fn ports(&self, container: &str) -> Result<Option<Vec<PortMapping>>, NetError> {
        for r in self.store.list()? {
            for e in &r.endpoints {
                if e.container_id == container
                    || e.container_name == container
                    || (container.len() >= 12 && e.container_id.starts_with(container))
                {
                    return Ok(Some(e.ports.clone()));
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_puts_the_gateway_first() {
        let host = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.org\noptions edns0\n";
        let r = resolv_conf("10.89.0.1".parse().unwrap(), host);
        assert_eq!(
            r,
            "nameserver 10.89.0.1\nnameserver 192.0.2.53\nsearch example.org\noptions edns0\n"
        );
    }

    #[test]
    fn hosts_entry_names_each_once() {
        let h = hosts_entries(
            "10.89.0.2".parse().unwrap(),
            "web-1",
            "web-1",
            &["web".into()],
        );
        assert_eq!(h, "10.89.0.2\tweb-1 web\n");
    }
}

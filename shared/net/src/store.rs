//! Durable network records: `<data_root>/networks/<name>.json`, one per network, written by
//! atomic rename after fsync. Every read-modify-write happens under `networks/.lock` (an
//! exclusive `flock`), so concurrent allocations, in this process or another, never collide.

use crate::error::{io, NetError};
use berth_proto::network::{EndpointInfo, NetworkInfo, PortMapping};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One container attached to a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_id: String,
    pub container_name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub address: Ipv4Addr,
    /// The host end of the veth pair (on the bridge).
    pub veth: String,
    /// The container's init, and the inode of its network namespace: together they tell
    /// whether the namespace still exists (a reused pid has another namespace).
    pub pid: u32,
    pub netns_ino: u64,
    /// Published ports as bound (a requested port 0 is replaced by the port chosen).
    #[serde(default)]
    pub ports: Vec<PortMapping>,
}

impl Endpoint {
    /// Whether the container's network namespace still exists.
    pub fn alive(&self) -> bool {
        netns_ino(self.pid).is_some_and(|i| i == self.netns_ino)
    }

    /// Every name the endpoint answers to in the network's DNS (lower case).
    pub fn names(&self) -> Vec<String> {
        let mut v = vec![self.container_name.to_ascii_lowercase()];
        v.extend(self.aliases.iter().map(|a| a.to_ascii_lowercase()));
        if self.container_id.len() >= 12 {
            v.push(self.container_id[..12].to_ascii_lowercase());
        }
        v.push(self.container_id.to_ascii_lowercase());
        v.dedup();
        v
    }
}

/// The inode of `/proc/<pid>/ns/net`, if the process exists.
pub fn netns_ino(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/net"))
        .ok()
        .map(|m| m.ino())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub name: String,
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub created: String,
    #[serde(default)]
    pub endpoints: Vec<Endpoint>,
    /// The address handed out last: the next search starts after it, so a released
    /// address is not reused at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_address: Option<Ipv4Addr>,
}

impl NetworkRecord {
    pub fn info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            bridge: self.bridge.clone(),
            subnet: self.subnet.to_string(),
            gateway: self.gateway.to_string(),
            created: self.created.clone(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| EndpointInfo {
                    container_id: e.container_id.clone(),
                    container_name: e.container_name.clone(),
                    aliases: e.aliases.clone(),
                    address: format!("{}/{}", e.address, self.subnet.prefix_len()),
                    veth: e.veth.clone(),
                    ports: e.ports.clone(),
                })
                .collect(),
        }
    }

    /// The next free address of the subnet after the last one handed out, wrapping around
    /// (the gateway and the addresses of `endpoints` are taken; network and broadcast
    /// addresses are never handed out).
    pub fn free_address(&self) -> Option<Ipv4Addr> {
        let free =
            |a: &Ipv4Addr| *a != self.gateway && !self.endpoints.iter().any(|e| e.address == *a);
        let after = self.last_address;
        self.subnet
            .hosts()
            .filter(|a| after.is_some_and(|l| *a > l))
            .find(free)
            .or_else(|| self.subnet.hosts().find(free))
    }
}

/// A network name: 1-64 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn check_name(name: &str) -> Result<(), NetError> {
    // The same check the spec loader runs on a project's network names.
    berth_proto::validate::network_name(name).map_err(|e| NetError::invalid("network name", e))
}

fn short_hash(parts: &[&str], n: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..n].to_string()
}

/// The bridge of a network: `berth-` and 8 hex digits of a hash of the data root and the
/// name (14 characters; Linux allows 15), so two data roots on one host never share one.
pub fn bridge_name(data_root: &Path, network: &str) -> String {
    format!(
        "berth-{}",
        short_hash(&[&data_root.to_string_lossy(), network], 8)
    )
}

/// The host end of a container's veth pair: `vb-` and 12 hex digits.
pub fn veth_name(bridge: &str, container_id: &str) -> String {
    format!("vb-{}", short_hash(&[bridge, container_id], 12))
}

/// The records of one data root.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// Held while a read-modify-write of the records is in progress.
pub struct StoreLock {
    _lock: nix::fcntl::Flock<File>,
}

impl Store {
    pub fn new(data_root: &Path) -> Store {
        Store {
            dir: data_root.join("networks"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }

    /// Take the exclusive lock of the records (blocking).
    pub fn lock(&self) -> Result<StoreLock, NetError> {
        lock_file(&self.dir.join(".lock")).map(|l| StoreLock { _lock: l })
    }

    pub fn load(&self, name: &str) -> Result<NetworkRecord, NetError> {
        let p = self.path(name);
        let data = match std::fs::read(&p) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(NetError::NotFound(name.to_string()))
            }
            Err(e) => return Err(io("read network record", &p)(e)),
        };
        serde_json::from_slice(&data).map_err(|source| NetError::Json {
            step: "parse network record",
            path: p,
            source,
        })
    }

    pub fn exists(&self, name: &str) -> bool {
        self.path(name).exists()
    }

    /// Write a record atomically, surviving a power loss.
    pub fn save(&self, _lock: &StoreLock, rec: &NetworkRecord) -> Result<(), NetError> {
        let p = self.path(&rec.name);
        let data = serde_json::to_vec_pretty(rec).expect("plain data serializes");
        berth_files::atomic_write(&p, &data, berth_files::Durability::PowerLoss)
            .map_err(io("write", &p))
    }

    pub fn delete(&self, _lock: &StoreLock, name: &str) -> Result<(), NetError> {
        let p = self.path(name);
        match std::fs::remove_file(&p) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove network record", &p)(e)),
        }
    }

    /// Every network record, by name.
    pub fn list(&self) -> Result<Vec<NetworkRecord>, NetError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("list networks", &self.dir)(e)),
        };
        let mut v = Vec::new();
        for ent in rd {
            let ent = ent.map_err(io("list networks", &self.dir))?;
            let n = ent.file_name().to_string_lossy().into_owned();
            if let Some(name) = n.strip_suffix(".json") {
                if !name.starts_with('.') {
                    match self.load(name) {
                        Ok(r) => v.push(r),
                        Err(NetError::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }
}

/// An exclusive `flock` on `path` (created, with its parent, if missing).
pub fn lock_file(path: &Path) -> Result<nix::fcntl::Flock<File>, NetError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io("create directory", d))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(io("open lock file", path))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
        NetError::Sys {
            step: format!("lock {}", path.display()),
            source: e,
        }
    })
}

fn sync_dir(d: &Path) -> Result<(), NetError> {
    berth_files::sync_dir(d).map_err(io("fsync directory", d))
}

/// IPv4 routes of the host (from `/proc/net/route`) other than default routes.
pub fn host_routes() -> Result<Vec<(String, Ipv4Net)>, NetError> {
    let p = Path::new("/proc/net/route");
    let text = std::fs::read_to_string(p).map_err(io("read host routes", p))?;
    Ok(parse_routes(&text))
}

/// Parse `/proc/net/route`: `Iface Destination Gateway Flags RefCnt Use Metric Mask ...`,
/// addresses in little-endian hex. Default routes (mask 0) are left out.
pub fn parse_routes(text: &str) -> Vec<(String, Ipv4Net)> {
    let mut v = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Ok(dst), Ok(mask)) = (u32::from_str_radix(f[1], 16), u32::from_str_radix(f[7], 16))
        else {
            continue;
        };
        // The kernel prints the address's bytes (network order) as a native-endian integer.
        let dst = Ipv4Addr::from(dst.to_ne_bytes());
        let mask = u32::from_be_bytes(mask.to_ne_bytes());
        if mask == 0 {
            continue;
        }
        if let Ok(net) = Ipv4Net::new(dst, mask.leading_ones() as u8) {
            v.push((f[0].to_string(), net.trunc()));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_little_endian_hex() {
        let text =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
br0\t0000590A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_routes(text);
        assert_eq!(
            r,
            vec![
                ("eth0".to_string(), "192.0.2.0/24".parse().unwrap()),
                ("br0".to_string(), "10.89.0.0/16".parse().unwrap()),
            ]
        );
    }

    #[test]
    fn names_fit_linux_limits() {
        let b = bridge_name(Path::new("/var/lib/berth"), "web_default");
        assert!(b.len() <= 15 && b.starts_with("berth-"), "{b}");
        assert_ne!(b, bridge_name(Path::new("/other"), "web_default"));
        let v = veth_name(&b, &"a".repeat(64));
        assert!(v.len() <= 15, "{v}");
        assert!(check_name("web_default").is_ok());
        assert!(check_name("-x").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn free_address_skips_gateway_and_taken() {
        let mut r = NetworkRecord {
            name: "n".into(),
            bridge: "b".into(),
            subnet: "10.89.3.0/30".parse().unwrap(),
            gateway: "10.89.3.1".parse().unwrap(),
            created: String::new(),
            endpoints: vec![],
            last_address: None,
        };
        assert_eq!(r.free_address(), Some("10.89.3.2".parse().unwrap()));
        r.endpoints.push(Endpoint {
            container_id: "c".into(),
            container_name: "c".into(),
            aliases: vec![],
            address: "10.89.3.2".parse().unwrap(),
            veth: "v".into(),
            pid: 1,
            netns_ino: 1,
            ports: vec![],
        });
        assert_eq!(r.free_address(), None);
    }

    #[test]
    fn free_address_does_not_reuse_a_released_one_at_once() {
        let mut r = NetworkRecord {
            name: "n".into(),
            bridge: "b".into(),
            subnet: "10.89.3.0/29".parse().unwrap(),
            gateway: "10.89.3.1".parse().unwrap(),
            created: String::new(),
            endpoints: vec![],
            last_address: Some("10.89.3.3".parse().unwrap()),
        };
        assert_eq!(r.free_address(), Some("10.89.3.4".parse().unwrap()));
        r.last_address = Some("10.89.3.6".parse().unwrap());
        // Past the end: wraps to the lowest free one.
        assert_eq!(r.free_address(), Some("10.89.3.2".parse().unwrap()));
    }
}

//! The harness of berth's integration tests: it starts real peers (a `nats-server` on a free
//! loopback port, and more in the other modules) for one test and stops them, by pid, when the
//! test ends, pass or fail.

pub mod daemon;
pub mod images;
pub mod layers;
pub mod nats;
pub mod puller;
pub mod registry;
pub mod rootfs;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Remove what the networks of a data root hold on the host (veths, bridges, iptables
/// rules), whatever state a test left them in. Run by the guards of tests that make networks.
pub fn remove_networks(root: &Path) {
    let store = berth_net::store::Store::new(root);
    for r in store.list().unwrap_or_default() {
        for e in &r.endpoints {
            let _ = Command::new("ip")
                .args(["link", "del", &e.veth])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &r.bridge])
            .stderr(Stdio::null())
            .status();
        let _ = berth_net::iptables::remove(&r.bridge);
    }
}

/// A free TCP port on 127.0.0.1, taken below the kernel's ephemeral range where it can: a port
/// from that range, once released, may become the source port of any outgoing connection (the
/// suite's own wget or NATS clients), and then a server cannot bind it. Each port is handed out
/// once per test process.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    if low > 12_000 {
        let span = u64::from(low - 10_000);
        for _ in 0..200 {
            let r = u64::from_str_radix(&berth_bus::random_hex(4), 16).unwrap_or(0);
            let port = 10_000 + (r % span) as u16;
            if !given.contains(&port)
                && TcpListener::bind(("127.0.0.1", port)).is_ok()
                && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
            {
                given.insert(port);
                return port;
            }
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port");
    given.insert(port);
    port
}

/// Where cargo put this workspace's binaries (`target/debug` or `target/release`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary>
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

/// Path of one of berth's binaries (`berth`, `berthd`, `berth-shim`, ...). Tests that run a
/// binary need it built first: `cargo build --workspace --bins` (the test command does that).
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

/// Skip (return early from) a test that needs root, with a note, when not root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A unique short name for this test's kernel objects (cgroups, netns, bridges, ...).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        berth_bus::random_hex(6)
    )
}

/// Wait until `service` of the bus's node answers its `info` verb (started in this process or
/// another), panicking after `within`.
pub async fn wait_for_service(
    bus: &berth_bus::Bus,
    service: berth_proto::Service,
    within: std::time::Duration,
) {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + within;
    loop {
        let r: Result<serde_json::Value, _> = bus
            .call(
                service,
                berth_proto::info::VERB,
                &serde_json::json!({}),
                &berth_bus::RequestOptions::timeout(Duration::from_millis(500)),
            )
            .await;
        if r.is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not come up",
            service.name()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

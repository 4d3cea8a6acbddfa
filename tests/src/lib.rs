//! The harness of berth's integration tests: it starts real peers (a `nats-server` on a free
//! loopback port, and more in the other modules) for one test and stops them, by pid, when the
//! test ends, pass or fail.

pub mod daemon;
pub mod images;
pub mod layers;
pub mod nats;
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

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
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

//! A real `nats-server` with JetStream, on a free loopback port, for one test.

use berth_bus::{Bus, ConnectOptions, NodeConfig, ServiceContext};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The `nats-server` binary: `BERTH_NATS_SERVER_BIN`, else `nats-server` in `PATH`.
pub fn server_bin() -> String {
    std::env::var("BERTH_NATS_SERVER_BIN").unwrap_or_else(|_| "nats-server".to_string())
}

pub struct NatsServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    conf: PathBuf,
}

impl NatsServer {
    /// Start a server with JetStream and no authentication.
    pub fn start() -> NatsServer {
        Self::start_with("")
    }

    /// Start a server whose config file has `extra` appended (e.g. an `authorization` block).
    pub fn start_with(extra: &str) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("berth-nats-")
            .tempdir()
            .expect("tempdir");
        let port = crate::free_port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: {:?}, max_memory_store: 64MB, max_file_store: 1GB }}\n{extra}\n",
                dir.path().join("js")
            ),
        )
        .expect("write nats.conf");
        let mut s = NatsServer {
            port,
            dir,
            child: None,
            conf,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("nats.log")).expect("log");
        let child = Command::new(server_bin())
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_bin()));
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(10));
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill the server (SIGKILL, by pid) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A long-lived client (reconnecting) for `node`, with the stream and buckets created.
    pub async fn bus(&self, node: &str) -> Bus {
        let bus = Bus::connect(&ConnectOptions {
            url: self.url(),
            creds: None,
            ca: None,
            name: format!("test@{node}"),
            node: node.to_string(),
            persistent: true,
        })
        .await
        .expect("connect to test nats");
        berth_bus::infra::ensure(&bus)
            .await
            .expect("stream and buckets");
        bus
    }

    /// A service context for `node` with its data root and run dir under `root`.
    pub async fn context(&self, node: &str, root: &Path) -> ServiceContext {
        let mut config = NodeConfig::load(None, &[]).expect("default config");
        config.node = node.to_string();
        config.data_root = root.join("data");
        config.run_dir = root.join("run");
        config.nats_url = Some(self.url());
        ServiceContext {
            bus: self.bus(node).await,
            config,
            shutdown: CancellationToken::new(),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Wait until something accepts on 127.0.0.1:`port`.
pub fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on 127.0.0.1:{port} after {within:?}");
}

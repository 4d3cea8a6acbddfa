//! What every command shares: global options, the node configuration, a lazily opened bus
//! connection, and how errors become one plain line and an exit code.

use berth_bus::{Bus, BusError, ConnectOptions, NodeConfig, RequestOptions};
use berth_proto::Service;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(clap::Args, Debug, Clone)]
pub struct GlobalOpts {
    /// NATS URL of the bus. Default: the credentials file's URL, else nats://127.0.0.1:4299.
    #[arg(long, global = true, env = "BERTH_NATS_URL")]
    pub nats: Option<String>,
    /// Credentials file. Default: <data_root>/auth/admin.json (written by berthd).
    #[arg(long, global = true, env = "BERTH_NATS_CREDS")]
    pub creds: Option<PathBuf>,
    /// The node to address. Default: this host's node name.
    #[arg(long, global = true, env = "BERTH_NODE")]
    pub node: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for a reply.
    #[arg(long, global = true, default_value_t = 60)]
    pub timeout: u64,
}

/// An error that carries an exit code and has already been reported (or needs no message).
#[derive(Debug)]
pub struct Exit(pub i32);
impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}", self.0)
    }
}
impl std::error::Error for Exit {}

/// Exit with `code` without printing anything more.
pub fn exit(code: i32) -> anyhow::Error {
    Exit(code).into()
}

/// Print an error as one plain line and pick the exit code.
pub fn exit_code(r: anyhow::Result<()>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => {
            if let Some(Exit(c)) = e.downcast_ref::<Exit>() {
                return *c;
            }
            eprintln!("berth: {}", one_line(&e));
            1
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    if let Some(b) = e.downcast_ref::<BusError>() {
        if let BusError::Remote(r) = b {
            let mut s = r.message.clone();
            if let Some(d) = &r.detail {
                s.push_str(": ");
                s.push_str(d);
            }
            return s;
        }
        return b.to_string();
    }
    format!("{e:#}")
}

pub struct Ctx {
    pub global: GlobalOpts,
    config: OnceCell<NodeConfig>,
    bus: OnceCell<Bus>,
}

impl Ctx {
    pub fn new(global: GlobalOpts) -> Ctx {
        Ctx {
            global,
            config: OnceCell::new(),
            bus: OnceCell::new(),
        }
    }

    pub fn json(&self) -> bool {
        self.global.json
    }

    /// The node configuration (file, environment), with `--node` applied.
    pub fn config(&self) -> anyhow::Result<&NodeConfig> {
        if let Some(c) = self.config.get() {
            return Ok(c);
        }
        let c = NodeConfig::load(None, &[("node", self.global.node.clone())])?;
        let _ = self.config.set(c);
        Ok(self.config.get().expect("just set"))
    }

    /// The node commands go to.
    pub fn node(&self) -> anyhow::Result<String> {
        Ok(self.config()?.node.clone())
    }

    /// Connect on first use. When nothing answers, one line says which URL was tried.
    pub async fn bus(&self) -> anyhow::Result<&Bus> {
        self.bus
            .get_or_try_init(|| async {
                let cfg = self.config()?;
                let creds_path = self
                    .global
                    .creds
                    .clone()
                    .or_else(|| cfg.nats_creds.clone())
                    .unwrap_or_else(|| cfg.admin_creds_path());
                let creds_url = berth_bus::Credentials::read(&creds_path)
                    .ok()
                    .and_then(|c| c.url);
                let explicit_creds = self.global.creds.is_some() || cfg.nats_creds.is_some();
                let url = self
                    .global
                    .nats
                    .clone()
                    .or_else(|| cfg.nats_url.clone())
                    .or(creds_url)
                    .unwrap_or_else(|| format!("nats://127.0.0.1:{}", cfg.nats_port));
                let creds = if explicit_creds || creds_path.exists() {
                    Some(creds_path)
                } else {
                    None
                };
                let opts = ConnectOptions {
                    url: url.clone(),
                    creds,
                    ca: cfg.nats_ca.clone(),
                    name: "berth-cli".into(),
                    node: cfg.node.clone(),
                    persistent: false,
                };
                Bus::connect(&opts).await.map_err(|e| match e {
                    BusError::Connect { url, reason } => anyhow::anyhow!(
                        "cannot reach the bus at {url} ({reason}); berthd may not be running"
                    ),
                    other => other.into(),
                })
            })
            .await
    }

    /// A request to `service` on the addressed node, with the global timeout.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: Service,
        verb: &str,
        body: &Req,
    ) -> anyhow::Result<Resp> {
        let node = self.node()?;
        let bus = self.bus().await?;
        Ok(bus
            .request(&node, service, verb, body, &self.request_options(false))
            .await?)
    }

    /// A state-changing request: carries an idempotency key.
    pub async fn call_mut<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: Service,
        verb: &str,
        body: &Req,
    ) -> anyhow::Result<Resp> {
        let node = self.node()?;
        let bus = self.bus().await?;
        Ok(bus
            .request(&node, service, verb, body, &self.request_options(true))
            .await?)
    }

    pub fn request_options(&self, mutating: bool) -> RequestOptions {
        let t = Duration::from_secs(self.global.timeout);
        if mutating {
            RequestOptions::mutating(t)
        } else {
            RequestOptions::timeout(t)
        }
    }
}

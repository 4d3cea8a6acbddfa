//! What every command shares: global options, the node configuration, a lazily opened bus
//! connection, and how errors become one plain line and an exit code.

use berth_bus::{Bus, BusError, ConnectOptions, NodeConfig, RequestOptions};
use berth_proto::Verb;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::OnceCell;

#[derive(clap::Args, Debug, Clone)]
pub struct GlobalOpts {
    /// NATS URL of the bus. Default: the credentials file's URL, else nats://127.0.0.1:4299.
    #[arg(long, global = true, env = "BERTH_NATS_URL")]
    pub nats: Option<String>,
    /// Credentials file. Default: <data_root>/auth/cli.json (written by berthd; it may call
    /// every service and read state and events, but write no state directly). Refused when
    /// others may read it.
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

/// Docker's exit codes for the commands that run a container's command (`run`, `exec`): an
/// error of berth or of the request is reported here and becomes 125; a command that cannot
/// be invoked 126, one not found 127 (the reason the reply carries). The container's own exit
/// code ([`Exit`]) passes through.
pub fn engine_error(e: anyhow::Error) -> anyhow::Error {
    if e.downcast_ref::<Exit>().is_some() {
        return e;
    }
    eprintln!("berth: {}", one_line(&e));
    let reason = e
        .downcast_ref::<BusError>()
        .and_then(|b| b.remote())
        .and_then(|r| r.reason);
    exit(reason.map_or(EXIT_ENGINE, |r| r.exit_code()))
}

/// Exit code of `run`/`exec` when berth itself or the request failed (Docker's).
pub const EXIT_ENGINE: i32 = 125;

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
    early: std::sync::Mutex<Option<Early>>,
}

/// A connection opened while the arguments are parsed (half a millisecond of clap, beside the
/// runtime's start and the connect's round trips), with the bus, credentials and node that a
/// first look at the command line and the environment finds. [`Ctx::bus`] takes it only when
/// the parsed options lead to the same place; otherwise it is dropped unused.
pub struct Early {
    opts: ConnectOptions,
    bus: tokio::task::JoinHandle<Result<Bus, BusError>>,
}

impl Early {
    pub fn start(rt: &tokio::runtime::Runtime) -> Option<Early> {
        let args: Vec<String> = std::env::args_os()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let global = GlobalOpts {
            nats: early_value(&args, "--nats", "BERTH_NATS_URL"),
            creds: early_value(&args, "--creds", "BERTH_NATS_CREDS").map(PathBuf::from),
            node: early_value(&args, "--node", "BERTH_NODE"),
            json: false,
            timeout: 0,
        };
        let cfg = NodeConfig::load(None, &[("node", global.node.clone())]).ok()?;
        let opts = connect_options(&global, &cfg);
        let o = opts.clone();
        let bus = rt.spawn(async move { Bus::connect(&o).await });
        Some(Early { opts, bus })
    }
}

/// The value of the global option `name` (`--name value` or `--name=value`, the last one
/// given), else the environment variable's. A guess: clap has the last word.
fn early_value(args: &[String], name: &str, var: &str) -> Option<String> {
    let mut found = None;
    for (i, a) in args.iter().enumerate() {
        if a == name {
            found = args.get(i + 1).cloned();
        } else if let Some(v) = a.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_string());
        }
    }
    found.or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
}

/// Where the bus is and how to log in: `--nats`, else the node configuration's URL, else the
/// credentials file's, else the local default port.
fn connect_options(global: &GlobalOpts, cfg: &NodeConfig) -> ConnectOptions {
    let creds_path = global
        .creds
        .clone()
        .or_else(|| cfg.nats_creds.clone())
        .unwrap_or_else(|| cfg.cli_creds_path());
    let creds_url = berth_bus::Credentials::read(&creds_path)
        .ok()
        .and_then(|c| c.url);
    let explicit_creds = global.creds.is_some() || cfg.nats_creds.is_some();
    let url = global
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
    ConnectOptions {
        url,
        creds,
        ca: cfg.nats_ca.clone(),
        name: "berth-cli".into(),
        node: cfg.node.clone(),
        persistent: false,
    }
}

impl Ctx {
    pub fn new(global: GlobalOpts, early: Option<Early>) -> Ctx {
        Ctx {
            global,
            config: OnceCell::new(),
            bus: OnceCell::new(),
            early: std::sync::Mutex::new(early),
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

    /// Connect on first use, or take the connection [`Early`] opened while the arguments
    /// were parsed when it went to the same place. When nothing answers, one line says which
    /// URL was tried.
    pub async fn bus(&self) -> anyhow::Result<&Bus> {
        self.bus
            .get_or_try_init(|| async {
                let opts = connect_options(&self.global, self.config()?);
                let early = self.early.lock().expect("not poisoned").take();
                // The early attempt's outcome stands, failure included (no second wait).
                let connected = match early.filter(|e| e.opts == opts) {
                    Some(e) => match e.bus.await {
                        Ok(r) => r,
                        Err(_) => Bus::connect(&opts).await,
                    },
                    None => Bus::connect(&opts).await,
                };
                connected.map_err(|e| match e {
                    BusError::Connect { url, reason } => anyhow::anyhow!(
                        "cannot reach the bus at {url} ({reason}); berthd may not be running"
                    ),
                    other => other.into(),
                })
            })
            .await
    }

    /// The declared verb `V` on the addressed node, with the global timeout.
    pub async fn call<V: Verb>(&self, body: &V::Request) -> anyhow::Result<V::Reply> {
        let node = self.node()?;
        let bus = self.bus().await?;
        Ok(bus
            .ask::<V>(&node, body, &self.request_options(false))
            .await?)
    }

    /// A state-changing verb: carries an idempotency key.
    pub async fn call_mut<V: Verb>(&self, body: &V::Request) -> anyhow::Result<V::Reply> {
        let node = self.node()?;
        let bus = self.bus().await?;
        Ok(bus
            .ask::<V>(&node, body, &self.request_options(true))
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

#[cfg(test)]
mod tests {
    use super::early_value;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn early_values_come_from_either_form_the_last_one_winning() {
        let a = args(&[
            "--nats",
            "nats://a:1",
            "run",
            "--nats=nats://b:2",
            "busybox",
        ]);
        assert_eq!(
            early_value(&a, "--nats", "BERTH_TEST_UNSET_1").as_deref(),
            Some("nats://b:2")
        );
        let a = args(&["--node", "n1", "ps"]);
        assert_eq!(
            early_value(&a, "--node", "BERTH_TEST_UNSET_2").as_deref(),
            Some("n1")
        );
        // `--nodes` is not `--node`; nothing given and no variable: no value.
        let a = args(&["--nodes=x", "ps"]);
        assert_eq!(early_value(&a, "--node", "BERTH_TEST_UNSET_3"), None);
    }
}

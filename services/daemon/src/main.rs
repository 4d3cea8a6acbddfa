//! `berthd`: config → build → wait for a signal → drain.

use anyhow::Context;
use berth_bus::infra::{self, Part};
use berth_bus::{host, NodeConfig, ServiceContext};
use berthd::LocalNats;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// berth's daemon: runs every service of one node in one process. With no NATS URL configured
/// it starts its own nats-server on 127.0.0.1 and generates its credentials.
#[derive(Parser)]
#[command(name = "berthd", version)]
struct Args {
    /// Configuration file (TOML). Default: /etc/berth/berth.toml when it exists.
    #[arg(long, env = "BERTH_CONFIG")]
    config: Option<PathBuf>,
    /// This node's name (a NATS subject token). Default: the host name.
    #[arg(long)]
    node: Option<String>,
    /// Data root. Default: /var/lib/berth.
    #[arg(long)]
    data_root: Option<PathBuf>,
    /// Run directory. Default: /run/berth.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Connect to this NATS server or cluster instead of starting a local one.
    #[arg(long)]
    nats_url: Option<String>,
    /// Credentials file ({"user","password"}) for --nats-url.
    #[arg(long)]
    nats_creds: Option<PathBuf>,
    /// CA file to verify the NATS server's TLS certificate.
    #[arg(long)]
    nats_ca: Option<PathBuf>,
    /// Port of the local nats-server on 127.0.0.1. Default: 4299.
    #[arg(long)]
    nats_port: Option<u16>,
}

/// berthd is idle most of the time after bursts of work (a pull, an apply of many
/// services): every 10 s, hand the heap's free pages back to the kernel (glibc keeps them
/// otherwise), so an idle daemon stays small.
fn give_back_memory(shutdown: CancellationToken) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {
                    // SAFETY: malloc_trim only returns free memory of the allocator's arenas.
                    #[cfg(target_env = "gnu")]
                    unsafe {
                        libc::malloc_trim(0);
                    }
                }
            }
        }
    });
}

fn main() {
    // Before any thread or child exists: nothing berthd inherited reaches what it starts.
    if let Err(e) = host::cloexec_inherited() {
        eprintln!("berthd: {e}");
        std::process::exit(1);
    }
    // Two malloc arenas: with one per thread that ever allocated (glibc's default), the
    // blocking pool's threads each keep their own free pages.
    #[cfg(target_env = "gnu")]
    // SAFETY: called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime")
        .block_on(async_main());
}

async fn async_main() {
    host::init_tracing();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("berthd: {e:#}");
        std::process::exit(1);
    }
}

async fn run(a: Args) -> anyhow::Result<()> {
    let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let cfg = NodeConfig::load(
        a.config.as_deref(),
        &[
            ("node", a.node.clone()),
            ("data_root", path_str(&a.data_root)),
            ("run_dir", path_str(&a.run_dir)),
            ("nats_url", a.nats_url.clone()),
            ("nats_creds", path_str(&a.nats_creds)),
            ("nats_ca", path_str(&a.nats_ca)),
            ("nats_port", a.nats_port.map(|p| p.to_string())),
        ],
    )?;
    for d in [&cfg.data_root, &cfg.run_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let pid_file = cfg.run_dir.join("berthd.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))
        .with_context(|| format!("writing {}", pid_file.display()))?;

    let shutdown = CancellationToken::new();
    host::cancel_on_signal(shutdown.clone());
    give_back_memory(shutdown.clone());

    // The bus: a local server unless a URL is configured.
    let mut cfg = cfg;
    let local = if cfg.nats_url.is_none() {
        let local = Arc::new(LocalNats::prepare(&cfg)?);
        let l = local.clone();
        let keeper = tokio::task::spawn_blocking(move || l.run_supervised()).await??;
        cfg.nats_url = Some(local.url());
        Some((local, keeper))
    } else {
        None
    };

    // Two connections: berthd's services', and the reconciler's (the only writer of desired
    // state). Each creates the stream and buckets it owns, retried while a fresh server is
    // still settling, and keeps them while berthd runs.
    let bus = host::connect_service(&cfg, "berthd").await?;
    let reconciler_bus = host::connect_service(&cfg, "reconciler").await?;
    let owned = [
        (&bus, vec![Part::Events, Part::Actual, Part::Idempotency]),
        (&reconciler_bus, vec![Part::Desired]),
    ];
    for (b, parts) in &owned {
        let mut tries = 0;
        loop {
            match infra::ensure_parts(b, parts).await {
                Ok(()) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(%e, "stream/buckets not ready yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    for (b, parts) in owned {
        infra::keep(b, parts, shutdown.clone());
    }
    tracing::info!(node = %cfg.node, url = bus.url(), "berthd ready");

    let ctx = ServiceContext {
        bus: bus.clone(),
        config: cfg.clone(),
        shutdown: shutdown.clone(),
    };
    berthd::services::host_all(ctx, reconciler_bus.clone()).await;

    // Drain: services have stopped taking work and finished their replies.
    let _ = bus.client().flush().await;
    let _ = reconciler_bus.client().flush().await;
    if let Some((local, keeper)) = local {
        tokio::task::spawn_blocking(move || {
            local.stop(Duration::from_secs(5));
            let _ = keeper.join();
        })
        .await?;
    }
    let _ = std::fs::remove_file(&pid_file);
    tracing::info!("berthd stopped; containers are left running");
    Ok(())
}

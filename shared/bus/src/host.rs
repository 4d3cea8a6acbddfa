//! Running services: the shared `main` of a service's standalone binary, and signal handling.

use crate::{Bus, ConnectOptions, Identity, NodeConfig, ServiceContext};
use std::future::Future;
use tokio_util::sync::CancellationToken;

/// Cancel `token` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: draining"),
            _ = int.recv() => tracing::info!("SIGINT: draining"),
        }
        token.cancel();
    });
}

/// Mark every descriptor from 3 up close-on-exec. Call first thing in a `main`: whatever the
/// process inherited from whoever started it (a shell's, a service manager's, a test's open
/// files) must not reach the programs it starts (the nats-server, shims and, through them,
/// containers). Descriptors berth opens itself are close-on-exec already, so marking them too
/// changes nothing.
pub fn cloexec_inherited() -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors of this
    // process; none is closed, so no owner loses its descriptor.
    let rc = unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(
            e.kind(),
            format!("marking inherited descriptors close-on-exec (close_range, Linux 5.11): {e}"),
        ));
    }
    Ok(())
}

/// Log to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let _ = tracing_subscriber_init();
}

fn tracing_subscriber_init() -> Option<()> {
    use tracing_subscriber::EnvFilter;
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .try_init()
        .ok()
}

/// The identity a service (or `berthd` itself) uses on the local bus: the reconciler its own,
/// as the only writer of desired state; every other one berthd's `services`.
pub fn identity_of(name: &str) -> Identity {
    if name == "reconciler" {
        Identity::Reconciler
    } else {
        Identity::Services
    }
}

/// Connect a long-lived service client for `cfg` (URL and credentials from the config, else
/// the local server `berthd` runs and the identity it generated for the service's role,
/// [`identity_of`]).
pub async fn connect_service(cfg: &NodeConfig, name: &str) -> Result<Bus, crate::BusError> {
    let opts = ConnectOptions {
        url: cfg
            .nats_url
            .clone()
            .unwrap_or_else(|| format!("nats://127.0.0.1:{}", cfg.nats_port)),
        creds: Some(
            cfg.nats_creds
                .clone()
                .unwrap_or_else(|| cfg.creds_path(identity_of(name))),
        ),
        ca: cfg.nats_ca.clone(),
        name: format!("berth-{name}@{}", cfg.node),
        node: cfg.node.clone(),
        persistent: true,
    };
    Bus::connect(&opts).await
}

/// The `main` of a service run on its own: read the config (file from `--config` or
/// `BERTH_CONFIG`), connect, make sure the stream and buckets it owns exist (and keep them,
/// [`crate::infra::keep`]), run until a signal.
pub async fn run_standalone<F, Fut>(name: &str, run: F) -> Result<(), Box<dyn std::error::Error>>
where
    F: FnOnce(ServiceContext) -> Fut,
    Fut: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>>,
{
    cloexec_inherited()?;
    init_tracing();
    let mut args = std::env::args().skip(1);
    let mut path = std::env::var_os("BERTH_CONFIG").map(std::path::PathBuf::from);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => path = args.next().map(Into::into),
            "--help" | "-h" => {
                println!("berth-{name} [--config FILE]: the {name} service of berth on its own (see docs/architecture.md)");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?}; try --help").into()),
        }
    }
    let cfg = NodeConfig::load(path.as_deref(), &[])?;
    let bus = connect_service(&cfg, name).await?;
    let parts = crate::infra::parts_of(name);
    crate::infra::ensure_parts(&bus, &parts).await?;
    let shutdown = CancellationToken::new();
    cancel_on_signal(shutdown.clone());
    crate::infra::keep(&bus, parts, shutdown.clone());
    run(ServiceContext {
        bus,
        config: cfg,
        shutdown,
    })
    .await
    .map_err(|e| e as Box<dyn std::error::Error>)
}

//! The puller in-process on a real bus, with its own data root, settings and Docker config:
//! the one harness of the puller's tests and the registry fault tests.

use crate::nats::NatsServer;
use berth_bus::{Bus, BusError, RequestOptions, ServiceContext};
use berth_proto::puller::{verbs as pv, PullReply, PullRequest};
use berth_proto::{BerthError, Service};
use berth_store::{ContentStore, Digest};
use std::path::PathBuf;
use std::time::Duration;

pub struct PullerEnv {
    _nats: NatsServer,
    pub dir: tempfile::TempDir,
    pub ctx: ServiceContext,
    pub bus: Bus,
    pub store: ContentStore,
    /// Settings every `registries.toml` of this environment starts with.
    base: String,
}

impl PullerEnv {
    /// Start the puller in a fresh data root named after `prefix`; every settings file it is
    /// given holds `base` and then `settings` (and a private Docker config path, so the
    /// machine's own credentials are never read).
    pub async fn start(prefix: &str, base: &str, settings: &str) -> PullerEnv {
        let nats = NatsServer::start();
        let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
        let ctx = nats.context("n1", dir.path()).await;
        std::fs::create_dir_all(&ctx.config.data_root).unwrap();
        let env = PullerEnv {
            bus: nats.bus("n1").await,
            store: ContentStore::open(ctx.config.content_dir()).unwrap(),
            _nats: nats,
            dir,
            ctx,
            base: base.to_string(),
        };
        env.settings(settings);
        let c = env.ctx.clone();
        tokio::spawn(async move { berth_puller::run(c).await.unwrap() });
        crate::wait_for_service(&env.bus, Service::Puller, Duration::from_secs(10)).await;
        env
    }

    /// The Docker config file the puller reads.
    pub fn docker_config(&self) -> PathBuf {
        self.dir.path().join("docker").join("config.json")
    }

    /// Replace registries.toml (read again by every pull).
    pub fn settings(&self, extra: &str) {
        std::fs::write(
            self.ctx.config.data_root.join("registries.toml"),
            format!(
                "docker_config = {:?}\n{}{extra}",
                self.docker_config(),
                self.base
            ),
        )
        .unwrap();
    }

    /// Record credentials for `host` in the Docker config, as `berth login` does.
    pub fn login(&self, host: &str, user: &str, password: &str) {
        berth_docker::config::store(
            &self.docker_config(),
            host,
            &berth_docker::config::Credentials {
                username: user.into(),
                password: password.into(),
            },
        )
        .unwrap();
    }

    pub async fn pull_with(
        &self,
        reference: &str,
        platform: Option<&str>,
        pull_id: Option<&str>,
    ) -> Result<PullReply, BusError> {
        self.bus
            .ask_local::<pv::Pull>(
                &PullRequest {
                    reference: reference.into(),
                    platform: platform.map(str::to_string),
                    pull_id: pull_id.map(str::to_string),
                },
                &RequestOptions::timeout(Duration::from_secs(120)),
            )
            .await
    }

    pub async fn pull(&self, reference: &str) -> PullReply {
        self.pull_with(reference, None, None)
            .await
            .unwrap_or_else(|e| panic!("pull {reference}: {e}"))
    }

    /// The typed error of a pull that must fail.
    pub async fn pull_err(&self, reference: &str, platform: Option<&str>) -> BerthError {
        match self.pull_with(reference, platform, None).await {
            Ok(r) => panic!("pull {reference} succeeded: {r:?}"),
            Err(e) => e
                .remote()
                .cloned()
                .unwrap_or_else(|| panic!("not a typed error: {e}")),
        }
    }

    /// A stored manifest as JSON.
    pub fn manifest(&self, digest: &str) -> serde_json::Value {
        serde_json::from_slice(&self.store.read(&digest.parse().unwrap()).unwrap()).unwrap()
    }

    /// Nothing was stored: no blob, no partial download, no reference.
    pub fn assert_empty(&self) {
        assert!(self.store.list().unwrap().is_empty(), "no blob stored");
        assert!(
            self.store.ingests().unwrap().is_empty(),
            "no partial download"
        );
        assert!(self.store.refs().unwrap().is_empty(), "no reference");
    }

    /// Every blob a pulled manifest names is in the store (its bytes checked by `sha256sum`,
    /// an independent tool), and the reference is recorded by tag and by digest.
    pub fn assert_complete(&self, reply: &PullReply) {
        let d: Digest = reply.digest.parse().unwrap();
        assert!(self.store.has(&d), "manifest stored");
        assert!(
            self.store.has(&reply.config_digest.parse().unwrap()),
            "config stored"
        );
        for l in &reply.layers {
            let ld: Digest = l.parse().unwrap();
            assert!(self.store.has(&ld), "layer {l} stored");
            let out = std::process::Command::new("sha256sum")
                .arg(self.store.blob_path(&ld))
                .output()
                .unwrap();
            assert!(String::from_utf8_lossy(&out.stdout).starts_with(ld.hex()));
        }
        assert_eq!(
            self.store.get_ref(&reply.reference).unwrap(),
            Some(d.clone())
        );
        let name = reply.reference.split('@').next().unwrap();
        let name = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => n,
            _ => name,
        };
        assert_eq!(
            self.store
                .get_ref(&format!("{name}@{}", reply.digest))
                .unwrap(),
            Some(d)
        );
    }
}

impl Drop for PullerEnv {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
    }
}

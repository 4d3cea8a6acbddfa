//! The isolator service's own state, one per service (not per process): the node's
//! configuration, its standby shims, its networking and the test hook's delay. Made when the
//! service starts ([`crate::run`]), or by a caller of [`crate::create`] in-process (tests,
//! bench); passed to what needs it.

use crate::shim::StandbyPool;
use berth_bus::NodeConfig;
use berth_net::{Net, NetConfig};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub struct Isolator {
    pub cfg: NodeConfig,
    /// Shims waiting for a container (see the shim's `standby.rs`).
    pub standby: Arc<StandbyPool>,
    /// The networking of the node's data root, made on first use (on the runtime current
    /// then): a create of a container on no bridge network never needs one.
    net: OnceLock<Arc<Net>>,
    /// Test hook: `BERTH_TEST_CREATE_DELAY_MS`, read when the isolator is made, holds every
    /// `create` this long after the shim reported its container set up (its init waiting
    /// before `exec`), before anything else: the window in which the tests stop `berthd` in
    /// the middle of a create.
    pub(crate) create_delay: Option<Duration>,
}

impl Isolator {
    pub fn new(cfg: NodeConfig) -> Isolator {
        Isolator {
            cfg,
            standby: Arc::new(StandbyPool::default()),
            net: OnceLock::new(),
            create_delay: std::env::var("BERTH_TEST_CREATE_DELAY_MS")
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
        }
    }

    /// The networking of the node's data root (made on first use, on the current runtime).
    pub fn net(&self) -> Arc<Net> {
        self.net
            .get_or_init(|| Net::new(NetConfig::new(&self.cfg.data_root)))
            .clone()
    }
}

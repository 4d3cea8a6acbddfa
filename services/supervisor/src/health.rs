//! Health checks: run the check inside the container through the isolator's `exec` every
//! interval, keep `starting`/`healthy`/`unhealthy` in the state, announce changes, and apply
//! the container's action when it turns unhealthy.

use crate::error::Result;
use crate::merge;
use berth_bus::now_rfc3339;
use berth_proto::isolator::ExecReply;
use berth_proto::supervisor::{ExecRequest, HealthAction, HealthCheck, HealthProbe, HealthStatus};
use futures::future::BoxFuture;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Docker's defaults.
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_RETRIES: u32 = 3;
/// Output kept per probe.
const OUTPUT_MAX: usize = 4096;

/// The outcome of one probe on the health state; returns whether the status changed.
pub fn apply_probe(
    h: &mut berth_proto::supervisor::HealthState,
    probe: HealthProbe,
    in_start_period: bool,
    retries: u32,
    keep: usize,
) -> bool {
    let before = h.status;
    if probe.exit_code == 0 {
        h.failing_streak = 0;
        h.status = HealthStatus::Healthy;
    } else if !(in_start_period && h.status == HealthStatus::Starting) {
        h.failing_streak += 1;
        if h.failing_streak >= retries {
            h.status = HealthStatus::Unhealthy;
        }
    }
    h.log.push(probe);
    let extra = h.log.len().saturating_sub(keep.max(1));
    h.log.drain(..extra);
    h.status != before
}

fn tail(s: &str) -> String {
    if s.len() <= OUTPUT_MAX {
        return s.to_string();
    }
    let mut i = s.len() - OUTPUT_MAX;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    s[i..].to_string()
}

/// What a checker sees of its container: the supervisor's core gives it one (the core calls
/// health; health never names the core).
pub trait Target: Send + Sync + 'static {
    /// The container's id, for the log.
    fn id(&self) -> &str;
    /// Whether the container is running now.
    fn running(&self) -> bool;
    /// Run `req` in the container; a probe that outlives `timeout` is killed with all it
    /// started, as Docker does.
    fn exec(
        &self,
        req: ExecRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<ExecReply>> + Send;
    /// With the container locked, unless the checker's instance has ended (its token is
    /// cancelled, or the container runs another instance now): apply `probe` to its health
    /// state ([`apply_probe`] by `rules`), record and announce a change of status. `None`: the
    /// checker ends; else the container's action when it turned unhealthy now, or
    /// [`HealthAction::None`].
    fn record(
        &self,
        probe: HealthProbe,
        rules: &Rules,
    ) -> impl Future<Output = Option<HealthAction>> + Send;
    /// Apply the action of a container turned unhealthy (not [`HealthAction::None`]).
    fn act(&self, action: HealthAction) -> impl Future<Output = Result<()>> + Send;
}

/// How probes count: a failure counts once the start period is over, `retries` failures in a
/// row make the container unhealthy.
pub struct Rules {
    pub retries: u32,
    began: Instant,
    start_period: Duration,
}

impl Rules {
    /// Whether the start period (from when the checker began) still runs.
    pub fn in_start_period(&self) -> bool {
        self.began.elapsed() < self.start_period
    }
}

/// Probe `target` (one instance of a container) every interval of `hc` until `run` is
/// cancelled, the instance is gone, or an action was applied.
pub fn checker<T: Target>(
    target: T,
    hc: HealthCheck,
    run: CancellationToken,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let interval = Duration::from_millis(hc.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS));
        let timeout = Duration::from_millis(hc.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let rules = Rules {
            retries: hc.retries.unwrap_or(DEFAULT_RETRIES).max(1),
            began: Instant::now(),
            start_period: Duration::from_millis(hc.start_period_ms.unwrap_or(0)),
        };
        let argv = merge::health_argv(&hc);
        loop {
            tokio::select! {
                _ = run.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if !target.running() {
                continue;
            }
            let start = now_rfc3339();
            let req = ExecRequest {
                container: target.id().to_string(),
                args: argv.clone(),
                ..Default::default()
            };
            let r = tokio::select! {
                _ = run.cancelled() => return,
                r = target.exec(req, timeout) => r,
            };
            let (exit_code, output) = match r {
                Ok(rep) => (
                    rep.exit_code,
                    tail(&format!("{}{}", rep.stdout, rep.stderr)),
                ),
                Err(e) => (-1, e.to_string()),
            };
            let probe = HealthProbe {
                start,
                end: now_rfc3339(),
                exit_code,
                output,
            };
            let Some(action) = target.record(probe, &rules).await else {
                return;
            };
            if action == HealthAction::None {
                continue;
            }
            if let Err(e) = target.act(action).await {
                tracing::warn!(%e, id = %target.id(), ?action, "health action failed");
            }
            return;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::supervisor::HealthState;

    fn probe(code: i32) -> HealthProbe {
        HealthProbe {
            start: String::new(),
            end: String::new(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn retries_and_start_period() {
        let mut h = HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: vec![],
        };
        assert!(!apply_probe(&mut h, probe(1), true, 2, 3));
        assert_eq!(h.failing_streak, 0);
        assert!(!apply_probe(&mut h, probe(1), false, 2, 3));
        assert!(apply_probe(&mut h, probe(1), false, 2, 3));
        assert_eq!(h.status, HealthStatus::Unhealthy);
        assert!(apply_probe(&mut h, probe(0), false, 2, 3));
        assert_eq!(h.status, HealthStatus::Healthy);
        assert_eq!(h.failing_streak, 0);
        assert_eq!(h.log.len(), 3);
    }
}

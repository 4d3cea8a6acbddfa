//! Health checks: run the check inside the container through the isolator's `exec` every
//! interval, keep `starting`/`healthy`/`unhealthy` in the state, announce changes, and apply
//! the container's action when it turns unhealthy.

use crate::core::{Container, Supervisor};
use crate::merge;
use berth_bus::now_rfc3339;
use berth_proto::supervisor::{
    ContainerStatus, ExecRequest, HealthAction, HealthCheck, HealthProbe, HealthStatus,
};
use futures::future::BoxFuture;
use std::sync::Arc;
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

pub fn checker(
    sup: Arc<Supervisor>,
    c: Arc<Container>,
    hc: HealthCheck,
    gen: u64,
    run: CancellationToken,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let interval = Duration::from_millis(hc.interval_ms.unwrap_or(DEFAULT_INTERVAL_MS));
        let timeout = Duration::from_millis(hc.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS));
        let retries = hc.retries.unwrap_or(DEFAULT_RETRIES).max(1);
        let start_period = Duration::from_millis(hc.start_period_ms.unwrap_or(0));
        let argv = merge::health_argv(&hc);
        let began = Instant::now();
        loop {
            tokio::select! {
                _ = run.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if Supervisor::view(&c).state.status != ContainerStatus::Running {
                continue;
            }
            let start = now_rfc3339();
            let req = ExecRequest {
                container: c.id.clone(),
                args: argv.clone(),
                ..Default::default()
            };
            let r = tokio::select! {
                _ = run.cancelled() => return,
                // A probe that outlives `timeout` is killed with all it started, as Docker does.
                r = sup.exec(&c, req, timeout, Some(timeout)) => r,
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
            let action = {
                let mut inner = c.inner.lock().await;
                if run.is_cancelled() || inner.gen != gen {
                    return;
                }
                let keep = sup.settings.health_log_len;
                let in_start = began.elapsed() < start_period;
                let Some(h) = inner.rec.state.health.as_mut() else {
                    return;
                };
                if apply_probe(h, probe, in_start, retries, keep) {
                    let unhealthy = h.status == HealthStatus::Unhealthy;
                    sup.health_changed(&c, &inner).await;
                    if unhealthy {
                        inner.rec.request.health_on_failure
                    } else {
                        HealthAction::None
                    }
                } else {
                    sup.refresh_view(&c, &inner);
                    HealthAction::None
                }
            };
            let r = match action {
                HealthAction::None => continue,
                HealthAction::Restart => sup.restart_counted(&c).await,
                HealthAction::Stop => sup.stop(&c, None, true).await.map(|_| ()),
                HealthAction::Kill => sup.kill(&c, None).await,
            };
            if let Err(e) = r {
                tracing::warn!(%e, id = %c.id, ?action, "health action failed");
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

//! What happens at a container's exit under its restart policy, and how long the supervisor
//! waits before the restart: pure functions of the policy, the exit and the settings, so the
//! rules are tested by tables here and the lifecycle code only applies the [`Decision`].
//!
//! - `no`: never restarted; `always` and `unless-stopped`: always, `on-failure[:N]`: when the
//!   exit code is not 0 (and fewer than N restarts were made). Never after an explicit stop or
//!   during a removal.
//! - The delay doubles with each consecutive restart from `restart_backoff_ms` up to
//!   `restart_backoff_max_ms`; a run of at least `restart_backoff_reset_ms` starts it again
//!   from the first step.

use crate::settings::Settings;
use berth_proto::supervisor::RestartPolicy;
use std::time::Duration;

/// The facts of one exit the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Exit<'a> {
    pub policy: &'a RestartPolicy,
    pub exit_code: i32,
    /// How long the run lasted (0 when unknown).
    pub ran: Duration,
    /// Restarts made so far by the policy.
    pub restart_count: u32,
    /// Consecutive restarts so far without a run long enough to reset the backoff.
    pub backoff_step: u32,
    /// Stopped by a user (`stop`, `kill`): no policy restarts it.
    pub manually_stopped: bool,
    /// Being removed.
    pub removing: bool,
}

/// What the supervisor does after an exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub restart: bool,
    /// How long to wait before starting it again (meaningful when `restart`).
    pub delay: Duration,
    /// The backoff step to record.
    pub backoff_step: u32,
}

/// Whether `policy` restarts a container that exited with `exit_code` after
/// `restart_count` restarts.
pub fn policy_restarts(policy: &RestartPolicy, exit_code: i32, restart_count: u32) -> bool {
    match policy {
        RestartPolicy::No => false,
        RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
        RestartPolicy::OnFailure { max_retries } => {
            exit_code != 0 && max_retries.is_none_or(|m| restart_count < m)
        }
    }
}

/// The decision for one exit under `settings`.
pub fn decide(e: &Exit, settings: &Settings) -> Decision {
    let step = if e.ran.as_millis() >= u128::from(settings.restart_backoff_reset_ms) {
        0
    } else {
        e.backoff_step
    };
    let restart = !e.removing
        && !e.manually_stopped
        && policy_restarts(e.policy, e.exit_code, e.restart_count);
    Decision {
        restart,
        delay: settings.backoff(step),
        backoff_step: if restart {
            step.saturating_add(1)
        } else {
            step
        },
    }
}

/// How long a run lasted, from its RFC 3339 start and finish; zero when either is unknown or
/// the clock went back.
pub fn run_length(started_at: Option<&str>, finished_at: &str) -> Duration {
    started_at
        .and_then(crate::logs::parse_time)
        .zip(crate::logs::parse_time(finished_at))
        .map(|(a, b)| (b - a).num_milliseconds().max(0) as u64)
        .map(Duration::from_millis)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            restart_backoff_ms: 100,
            restart_backoff_max_ms: 1_000,
            restart_backoff_reset_ms: 10_000,
            ..Default::default()
        }
    }

    #[test]
    fn the_policy_decides_by_exit_code_and_count() {
        let on_failure = |m| RestartPolicy::OnFailure { max_retries: m };
        // (policy, exit code, restarts so far, restarts?)
        let table = [
            (RestartPolicy::No, 0, 0, false),
            (RestartPolicy::No, 1, 0, false),
            (RestartPolicy::Always, 0, 0, true),
            (RestartPolicy::Always, 137, 1000, true),
            (RestartPolicy::UnlessStopped, 0, 5, true),
            (on_failure(None), 0, 0, false),
            (on_failure(None), 1, 99, true),
            (on_failure(None), -1, 0, true),
            (on_failure(Some(3)), 1, 2, true),
            (on_failure(Some(3)), 1, 3, false),
            (on_failure(Some(3)), 0, 0, false),
            (on_failure(Some(0)), 1, 0, false),
        ];
        for (p, code, count, want) in table {
            assert_eq!(
                policy_restarts(&p, code, count),
                want,
                "{p:?} code {code} count {count}"
            );
        }
    }

    #[test]
    fn a_stop_or_a_removal_overrides_the_policy() {
        let base = Exit {
            policy: &RestartPolicy::Always,
            exit_code: 1,
            ran: Duration::ZERO,
            restart_count: 0,
            backoff_step: 0,
            manually_stopped: false,
            removing: false,
        };
        // (manually stopped, removing, restarts?)
        for (stopped, removing, want) in [
            (false, false, true),
            (true, false, false),
            (false, true, false),
            (true, true, false),
        ] {
            let e = Exit {
                manually_stopped: stopped,
                removing,
                ..base
            };
            assert_eq!(
                decide(&e, &settings()).restart,
                want,
                "{stopped} {removing}"
            );
        }
    }

    #[test]
    fn the_delay_doubles_to_its_cap_and_a_long_run_resets_it() {
        let s = settings();
        // (step before, ran ms, restart?, delay ms, step after)
        let table = [
            (0, 0, true, 100, 1),
            (1, 50, true, 200, 2),
            (3, 9_999, true, 800, 4),
            (4, 0, true, 1_000, 5),
            (40, 0, true, 1_000, 41),
            (u32::MAX, 0, true, 1_000, u32::MAX),
            (7, 10_000, true, 100, 1),
            (7, 3_600_000, true, 100, 1),
            // No restart: the step is kept (reset by a long run all the same).
            (5, 0, false, 1_000, 5),
            (5, 10_000, false, 100, 0),
        ];
        for (step, ran, restart, delay, after) in table {
            let policy = if restart {
                RestartPolicy::Always
            } else {
                RestartPolicy::No
            };
            let e = Exit {
                policy: &policy,
                exit_code: 1,
                ran: Duration::from_millis(ran),
                restart_count: 0,
                backoff_step: step,
                manually_stopped: false,
                removing: false,
            };
            let d = decide(&e, &s);
            assert_eq!(
                (d.restart, d.delay.as_millis() as u64, d.backoff_step),
                (restart, delay, after),
                "step {step} ran {ran}"
            );
        }
    }

    #[test]
    fn run_length_reads_rfc3339_and_never_goes_negative() {
        let t = |a: Option<&str>, b: &str| run_length(a, b).as_millis() as u64;
        assert_eq!(
            t(Some("2026-01-01T00:00:00Z"), "2026-01-01T00:00:01.5Z"),
            1_500
        );
        assert_eq!(
            t(Some("2026-01-01T01:00:00+01:00"), "2026-01-01T00:00:02Z"),
            2_000
        );
        assert_eq!(t(Some("2026-01-01T00:00:05Z"), "2026-01-01T00:00:00Z"), 0);
        assert_eq!(t(None, "2026-01-01T00:00:00Z"), 0);
        assert_eq!(t(Some("yesterday"), "2026-01-01T00:00:00Z"), 0);
    }
}

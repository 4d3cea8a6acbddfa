//! Retries of registry requests, one policy for all of them (the `/v2/` probe, token, manifest,
//! config, blob): network errors, truncated answers, 5xx, 408 and 429 are tried again up to
//! `max_attempts` times with exponential backoff and jitter (`retry_backoff_ms`, doubled each
//! time, capped at [`BACKOFF_CAP`]); a `Retry-After` of a 429 or 503 is waited for when it is
//! within [`RETRY_AFTER_CAP`]. A final answer (401 after authenticating, 403, 404, a digest
//! that does not match) is reported at once. The error after the last attempt says how many
//! there were.

use crate::error::PullError;
use std::future::Future;
use std::time::Duration;

/// The longest pause of the backoff.
pub const BACKOFF_CAP: Duration = Duration::from_secs(10);
/// The longest `Retry-After` waited for; a registry asking for more is given up on at once.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// `max_attempts` and `retry_backoff_ms` of the settings.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_ms: u64,
}

impl RetryPolicy {
    /// The pause after failed attempt number `attempt` (1 for the first): the first pause,
    /// doubled per attempt, plus up to half the first pause of jitter, at most [`BACKOFF_CAP`].
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .backoff_ms
            .saturating_mul(1 << attempt.saturating_sub(1).min(20));
        let jitter = rand::random::<u64>() % (self.backoff_ms / 2 + 1);
        Duration::from_millis(base.saturating_add(jitter)).min(BACKOFF_CAP)
    }
}

/// The attempts at one request: after each failure, [`Attempts::next_pause`] says how long to
/// wait before the next one, or gives the error to report.
#[derive(Debug)]
pub struct Attempts {
    policy: RetryPolicy,
    failed: u32,
}

impl Attempts {
    pub fn new(policy: RetryPolicy) -> Attempts {
        Attempts { policy, failed: 0 }
    }

    /// Attempts that failed so far.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// An attempt failed with `e`. `Ok(pause)` when another attempt is due after `pause`;
    /// `Err` with the error to report otherwise: `e` itself when it is final, or `e` with the
    /// number of attempts made when they are used up (or the registry asks to wait too long).
    pub fn next_pause(&mut self, e: PullError) -> Result<Duration, PullError> {
        self.failed += 1;
        if !e.is_transient() {
            return Err(e);
        }
        let gave_up = |e: PullError, attempts: u32, note: String| PullError::GaveUp {
            attempts,
            last: Box::new(e),
            note,
        };
        if self.failed >= self.policy.max_attempts {
            return Err(gave_up(e, self.failed, String::new()));
        }
        let mut pause = self.policy.backoff(self.failed);
        if let Some(wait) = e.retry_after() {
            if wait > RETRY_AFTER_CAP {
                let note = format!(
                    " (it asks to retry after {} s, more than the {} s berth waits)",
                    wait.as_secs(),
                    RETRY_AFTER_CAP.as_secs()
                );
                return Err(gave_up(e, self.failed, note));
            }
            pause = pause.max(wait);
        }
        tracing::info!(attempt = self.failed, error = %e, pause_ms = pause.as_millis() as u64, "retrying a registry request");
        Ok(pause)
    }
}

/// Run `op` until it succeeds, fails for good, or the attempts are used up.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut op: F) -> Result<T, PullError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PullError>>,
{
    let mut attempts = Attempts::new(policy);
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) => tokio::time::sleep(attempts.next_pause(e)?).await,
        }
    }
}

/// The pause a `Retry-After` value asks for: delay seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let secs = (when.timestamp() - chrono::Utc::now().timestamp()).max(0);
    Some(Duration::from_secs(secs as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16, retry_after: Option<Duration>) -> PullError {
        PullError::Status {
            registry: "r".into(),
            step: "manifest latest".into(),
            url: "https://r/v2/x/manifests/latest".into(),
            status: code,
            detail: None,
            retry_after,
        }
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff_ms: 100,
        };
        for (attempt, low) in [(1, 100), (2, 200), (3, 400), (4, 800)] {
            let d = p.backoff(attempt).as_millis() as u64;
            assert!((low..=low + 50).contains(&d), "attempt {attempt}: {d} ms");
        }
        assert_eq!(p.backoff(30), BACKOFF_CAP);
    }

    #[test]
    fn attempts_give_up_with_their_count() {
        let p = RetryPolicy {
            max_attempts: 3,
            backoff_ms: 1,
        };
        let mut a = Attempts::new(p);
        assert!(a.next_pause(status(503, None)).is_ok());
        assert!(a.next_pause(status(500, None)).is_ok());
        let e = a.next_pause(status(502, None)).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("502") && msg.contains("3 attempts"), "{msg}");
        assert!(msg.contains("https://r/v2/x/manifests/latest"), "{msg}");
        assert_eq!(a.failed(), 3);
    }

    #[test]
    fn final_answers_are_not_retried() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff_ms: 1,
        };
        for code in [401, 403, 404] {
            let mut a = Attempts::new(p);
            let e = a.next_pause(status(code, None)).unwrap_err();
            assert!(e.to_string().contains("not retried"), "{e}");
            assert_eq!(a.failed(), 1);
        }
    }

    #[test]
    fn retry_after_is_honoured_within_the_cap() {
        let p = RetryPolicy {
            max_attempts: 5,
            backoff_ms: 1,
        };
        let mut a = Attempts::new(p);
        let pause = a
            .next_pause(status(429, Some(Duration::from_secs(2))))
            .unwrap();
        assert!(pause >= Duration::from_secs(2), "{pause:?}");
        let e = a
            .next_pause(status(503, Some(Duration::from_secs(3600))))
            .unwrap_err();
        assert!(e.to_string().contains("3600 s"), "{e}");
    }

    #[test]
    fn retry_after_values() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d >= Duration::from_secs(28) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[tokio::test]
    async fn retry_runs_until_success() {
        let p = RetryPolicy {
            max_attempts: 4,
            backoff_ms: 1,
        };
        let mut n = 0;
        let v = retry(p, || {
            n += 1;
            let k = n;
            async move {
                if k < 3 {
                    Err(status(500, None))
                } else {
                    Ok(k)
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }
}

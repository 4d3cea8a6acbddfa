//! Supervisor settings, read once at start from `<data_root>/supervisor.toml` (every key is
//! optional):
//!
//! ```toml
//! restart_backoff_ms = 10000        # first delay before a policy restart; doubles each time
//! restart_backoff_max_ms = 300000   # the delay never grows beyond this (5 min)
//! restart_backoff_reset_ms = 600000 # a run this long without exiting resets the delay (10 min)
//! stop_grace_period_ms = 10000      # default time between the stop signal and SIGKILL
//! log_max_bytes = 10485760          # rotate a container's log.jsonl beyond this size (0: never)
//! log_max_files = 3                 # files kept per container, the live one included
//! log_poll_ms = 100                 # how often running containers' logs are read for followers
//! health_log_len = 5                # health probes kept in the state
//! ```

use crate::error::SupervisorError;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

pub const FILE_NAME: &str = "supervisor.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub restart_backoff_ms: u64,
    pub restart_backoff_max_ms: u64,
    pub restart_backoff_reset_ms: u64,
    pub stop_grace_period_ms: u64,
    pub log_max_bytes: u64,
    pub log_max_files: u32,
    pub log_poll_ms: u64,
    pub health_log_len: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            restart_backoff_ms: 10_000,
            restart_backoff_max_ms: 300_000,
            restart_backoff_reset_ms: 600_000,
            stop_grace_period_ms: 10_000,
            log_max_bytes: 10 * 1024 * 1024,
            log_max_files: 3,
            log_poll_ms: 100,
            health_log_len: 5,
        }
    }
}

impl Settings {
    /// Read `<data_root>/supervisor.toml`; the defaults when it does not exist.
    pub fn load(data_root: &Path) -> Result<Settings, SupervisorError> {
        let path = data_root.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(e) => return Err(SupervisorError::io("read settings", &path, e)),
        };
        let s: Settings = toml::from_str(&text)
            .map_err(|e| SupervisorError::invalid(path.display().to_string(), e.to_string()))?;
        if s.log_max_files == 0 {
            return Err(SupervisorError::invalid(
                path.display().to_string(),
                "log_max_files must be at least 1",
            ));
        }
        if s.restart_backoff_ms == 0 || s.restart_backoff_max_ms < s.restart_backoff_ms {
            return Err(SupervisorError::invalid(
                path.display().to_string(),
                "restart_backoff_ms must be above 0 and at most restart_backoff_max_ms",
            ));
        }
        Ok(s)
    }

    /// The delay before the restart that follows `step` consecutive restarts.
    pub fn backoff(&self, step: u32) -> Duration {
        let base = self.restart_backoff_ms;
        let ms = base.saturating_mul(1u64 << step.min(40));
        Duration::from_millis(ms.min(self.restart_backoff_max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let s = Settings {
            restart_backoff_ms: 100,
            restart_backoff_max_ms: 1000,
            ..Default::default()
        };
        let d: Vec<u64> = (0..6).map(|i| s.backoff(i).as_millis() as u64).collect();
        assert_eq!(d, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(s.backoff(200).as_millis(), 1000);
        let k = Settings::default();
        assert_eq!(k.backoff(0), Duration::from_secs(10));
        assert_eq!(k.backoff(5), Duration::from_secs(300));
    }

    #[test]
    fn settings_file_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap().log_max_files, 3);
        std::fs::write(dir.path().join(FILE_NAME), "restart_backoff_ms = 100\n").unwrap();
        assert_eq!(Settings::load(dir.path()).unwrap().restart_backoff_ms, 100);
        std::fs::write(dir.path().join(FILE_NAME), "restart_backof = 100\n").unwrap();
        let e = Settings::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("restart_backof"), "{e}");
    }
}

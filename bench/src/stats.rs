//! Samples and their summary.

use std::time::Duration;

/// What one subject (berth or a peer) measured in one scenario.
#[derive(Debug, Clone)]
pub struct Series {
    pub subject: String,
    /// Seconds for timings, MiB for memory.
    pub samples: Vec<f64>,
    /// The command that was measured, for the report.
    pub command: String,
}

impl Series {
    pub fn new(subject: &str, command: &str) -> Series {
        Series {
            subject: subject.to_string(),
            samples: Vec::new(),
            command: command.to_string(),
        }
    }
    pub fn push(&mut self, d: Duration) {
        self.samples.push(d.as_secs_f64());
    }
    pub fn push_value(&mut self, v: f64) {
        self.samples.push(v);
    }
    pub fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        match s.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => s[n / 2],
            n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
        }
    }
    pub fn min(&self) -> f64 {
        self.samples.iter().cloned().fold(f64::INFINITY, f64::min)
    }
    pub fn max(&self) -> f64 {
        self.samples
            .iter()
            .cloned()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    Seconds,
    MiB,
    /// Throughput, MiB/s (higher is better).
    MiBps,
}

impl Unit {
    pub fn fmt(self, v: f64) -> String {
        if v.is_nan() {
            return "-".into();
        }
        match self {
            Unit::Seconds if v < 1.0 => format!("{:.1} ms", v * 1000.0),
            Unit::Seconds => format!("{v:.2} s"),
            Unit::MiB => format!("{v:.1} MiB"),
            Unit::MiBps => format!("{v:.0} MiB/s"),
        }
    }
}

/// One scenario's outcome: berth first, then each peer; notes for skipped peers.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub unit: Unit,
    /// The target from the issues, in the scenario's unit, if there is one.
    pub target: Option<f64>,
    pub series: Vec<Series>,
    pub notes: Vec<String>,
}

impl Outcome {
    pub fn new(name: &str, unit: Unit, target: Option<f64>) -> Outcome {
        Outcome {
            name: name.to_string(),
            unit,
            target,
            series: Vec::new(),
            notes: Vec::new(),
        }
    }
    pub fn berth(&self) -> Option<&Series> {
        self.series.iter().find(|s| s.subject == "berth")
    }
    /// berth against a peer, below 1 when berth does better: berth/peer for times and sizes,
    /// peer/berth for throughput.
    pub fn ratio(&self, berth: f64, peer: f64) -> f64 {
        match self.unit {
            Unit::MiBps => peer / berth,
            _ => berth / peer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let mut s = Series::new("x", "");
        for ms in [30, 10, 20, 40] {
            s.push(Duration::from_millis(ms));
        }
        assert!((s.median() - 0.025).abs() < 1e-9);
        assert!((s.min() - 0.010).abs() < 1e-9);
        assert!((s.max() - 0.040).abs() < 1e-9);
        assert_eq!(Unit::Seconds.fmt(0.0123), "12.3 ms");
    }
}

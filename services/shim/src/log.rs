//! The container's log: one `LogLine` JSON per line, with stream and time; lines longer than
//! 16 KiB are split as Docker does.

use berth_proto::isolator::LogLine;
use std::fs::File;
use std::io::Write;

pub const MAX_LINE: usize = 16 * 1024;

/// RFC 3339 UTC with nanoseconds, from the real-time clock.
pub fn now_rfc3339() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a local timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    format_rfc3339(ts.tv_sec, ts.tv_nsec as u32)
}

/// Format seconds since the epoch (UTC) and nanoseconds.
pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Splits the output of stdout and stderr into lines and appends them to the log file.
pub struct LogWriter {
    file: File,
    partial: [Vec<u8>; 2],
}

const STREAMS: [&str; 2] = ["stdout", "stderr"];

impl LogWriter {
    pub fn new(file: File) -> LogWriter {
        LogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
        }
    }

    /// Feed bytes read from stream `s` (0 stdout, 1 stderr).
    pub fn feed(&mut self, s: usize, data: &[u8]) {
        let mut out = Vec::new();
        let t = now_rfc3339();
        let mut rest = data;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.partial[s].extend_from_slice(&rest[..=i]);
                    rest = &rest[i + 1..];
                    let line = std::mem::take(&mut self.partial[s]);
                    encode(&mut out, &t, s, &line);
                }
                None => {
                    self.partial[s].extend_from_slice(rest);
                    rest = &[];
                }
            }
            while self.partial[s].len() >= MAX_LINE {
                let tail = self.partial[s].split_off(MAX_LINE);
                let line = std::mem::replace(&mut self.partial[s], tail);
                encode(&mut out, &t, s, &line);
            }
        }
        self.write(&out);
    }

    /// Write what is left of stream `s` without a newline (at its end).
    pub fn finish(&mut self, s: usize) {
        if !self.partial[s].is_empty() {
            let mut out = Vec::new();
            let line = std::mem::take(&mut self.partial[s]);
            encode(&mut out, &now_rfc3339(), s, &line);
            self.write(&out);
        }
    }

    /// Append under an exclusive `flock`: the supervisor takes the same lock to copy and
    /// truncate the file when it rotates it, so no line falls between its copy and its
    /// truncation.
    fn write(&mut self, out: &[u8]) {
        if !out.is_empty() {
            use std::os::fd::AsRawFd;
            let fd = self.file.as_raw_fd();
            // SAFETY: flock on a descriptor this writer owns.
            let locked = unsafe { libc::flock(fd, libc::LOCK_EX) } == 0;
            if let Err(e) = self.file.write_all(out) {
                eprintln!("berth-shim: writing the log: {e}");
            }
            if locked {
                // SAFETY: as above.
                unsafe { libc::flock(fd, libc::LOCK_UN) };
            }
        }
    }
}

fn encode(out: &mut Vec<u8>, t: &str, s: usize, line: &[u8]) {
    let l = LogLine {
        t: t.to_string(),
        s: STREAMS[s].to_string(),
        log: String::from_utf8_lossy(line).into_owned(),
    };
    if serde_json::to_writer(&mut *out, &l).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(1_709_210_096, 5),
            "2024-02-29T12:34:56.000000005Z"
        );
    }

    #[test]
    fn lines_split_and_long_lines_cut() {
        let dir = std::env::temp_dir().join(format!("berth-shim-log-{}", std::process::id()));
        let f = File::create(&dir).unwrap();
        let mut w = LogWriter::new(f);
        w.feed(0, b"hello\nwor");
        w.feed(1, b"err\n");
        w.feed(0, b"ld\n");
        w.feed(0, &vec![b'x'; MAX_LINE + 10]);
        w.finish(0);
        let text = std::fs::read_to_string(&dir).unwrap();
        std::fs::remove_file(&dir).unwrap();
        let lines: Vec<LogLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0].log, "hello\n");
        assert_eq!(
            (lines[1].s.as_str(), lines[1].log.as_str()),
            ("stderr", "err\n")
        );
        assert_eq!(lines[2].log, "world\n");
        assert_eq!(lines[3].log.len(), MAX_LINE);
        assert_eq!(lines[4].log.len(), 10);
    }
}

//! Container logs: the shim appends [`LogLine`]s to `<container dir>/log.jsonl`; the supervisor
//! reads them for `logs`, publishes new ones live while the container runs, and rotates the
//! file (copy then truncate) beyond a size, keeping `log.jsonl.1` (newest) .. `log.jsonl.<N-1>`.
//! The shim appends under an exclusive `flock` of the file and the rotation holds the same lock
//! from its last read to the truncation, so no line is lost between copy and truncate.

use berth_proto::isolator::{LogLine, LOG_FILE};
use berth_proto::supervisor::LogMessage;
use chrono::{DateTime, Utc};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

pub fn live_path(container_dir: &Path) -> PathBuf {
    container_dir.join(LOG_FILE)
}

fn rotated_path(container_dir: &Path, n: u32) -> PathBuf {
    container_dir.join(format!("{LOG_FILE}.{n}"))
}

pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn parse_lines(bytes: &[u8], out: &mut Vec<LogLine>) {
    for raw in bytes.split(|b| *b == b'\n') {
        // A writer that does not append may leave zeros where a truncated file had data.
        let raw = match raw.iter().position(|b| *b != 0) {
            Some(i) => &raw[i..],
            None => continue,
        };
        if let Ok(l) = serde_json::from_slice::<LogLine>(raw) {
            out.push(l);
        }
    }
}

/// Filters of a history read.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub tail: Option<usize>,
}

/// Read the log history, oldest first: the rotated files, then the live one up to `limit`
/// bytes (everything when `None`).
pub fn read_history(
    container_dir: &Path,
    max_files: u32,
    limit: Option<u64>,
    q: &Query,
) -> std::io::Result<Vec<LogLine>> {
    let mut lines = Vec::new();
    for n in (1..max_files.max(1) + 8).rev() {
        match std::fs::read(rotated_path(container_dir, n)) {
            Ok(b) => parse_lines(&b, &mut lines),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    match std::fs::File::open(live_path(container_dir)) {
        Ok(f) => {
            let mut b = Vec::new();
            match limit {
                Some(l) => f.take(l).read_to_end(&mut b)?,
                None => (&f).read_to_end(&mut b)?,
            };
            // Only whole lines.
            if let Some(end) = b.iter().rposition(|c| *c == b'\n') {
                b.truncate(end + 1);
            } else {
                b.clear();
            }
            parse_lines(&b, &mut lines);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if q.since.is_some() || q.until.is_some() {
        lines.retain(|l| match parse_time(&l.t) {
            Some(t) => q.since.is_none_or(|s| t >= s) && q.until.is_none_or(|u| t < u),
            None => false,
        });
    }
    if let Some(n) = q.tail {
        let skip = lines.len().saturating_sub(n);
        lines.drain(..skip);
    }
    Ok(lines)
}

/// Reads what a running container appends to its log, publishes it on the live subject, and
/// rotates the file.
pub struct Tailer {
    dir: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    pub epoch: String,
    pub seq: u64,
    subject: String,
    max_bytes: u64,
    max_files: u32,
}

/// The length of a container's live log file (0 when there is none yet).
pub fn log_end(dir: &Path) -> u64 {
    std::fs::metadata(live_path(dir))
        .map(|m| m.len())
        .unwrap_or(0)
}

impl Tailer {
    /// Start at the current end of the file: lines already there are history.
    pub fn new(dir: &Path, subject: String, max_bytes: u64, max_files: u32) -> Tailer {
        Self::starting_at(dir, subject, max_bytes, max_files, log_end(dir))
    }

    /// Start at `offset` of the live file (its end when this instance was started: what the
    /// instance wrote before the tailer existed is published too).
    pub fn starting_at(
        dir: &Path,
        subject: String,
        max_bytes: u64,
        max_files: u32,
        offset: u64,
    ) -> Tailer {
        Tailer {
            dir: dir.to_path_buf(),
            offset,
            partial: Vec::new(),
            epoch: berth_bus::random_hex(8),
            seq: 0,
            subject,
            max_bytes,
            max_files,
        }
    }

    /// Bytes of the live file already read (whole lines up to here are published).
    pub fn offset(&self) -> u64 {
        self.offset - self.partial.len() as u64
    }

    /// Read and publish what was appended since the last call; rotate when the file is big.
    pub async fn poll(&mut self, client: &async_nats::Client) {
        let path = live_path(&self.dir);
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(_) => return,
        };
        self.publish(&mut f, client).await;
        if self.max_bytes > 0 && self.offset >= self.max_bytes && self.partial.is_empty() {
            // Hold the writer's lock from the last read to the truncation.
            let lock = match FileLock::exclusive(&f).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(%e, dir = %self.dir.display(), "log lock failed");
                    return;
                }
            };
            self.publish(&mut f, client).await;
            if let Err(e) = self.rotate() {
                tracing::warn!(%e, dir = %self.dir.display(), "log rotation failed");
            }
            drop(lock);
        }
    }

    /// Publish the whole lines appended to `f` since the last read.
    async fn publish(&mut self, f: &mut std::fs::File, client: &async_nats::Client) {
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            // Truncated by someone else: start again from the top.
            self.offset = 0;
            self.partial.clear();
        }
        if len <= self.offset {
            return;
        }
        let mut buf = Vec::with_capacity((len - self.offset) as usize);
        if f.seek(SeekFrom::Start(self.offset)).is_err()
            || (&mut *f)
                .take(len - self.offset)
                .read_to_end(&mut buf)
                .is_err()
        {
            return;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|c| *c == b'\n') else {
            return;
        };
        let rest = self.partial.split_off(end + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        let mut lines = Vec::new();
        parse_lines(&whole, &mut lines);
        for line in lines {
            self.seq += 1;
            let m = LogMessage::Line {
                epoch: self.epoch.clone(),
                seq: self.seq,
                line,
            };
            let payload = serde_json::to_vec(&m).expect("log messages serialize");
            if let Err(e) = client.publish(self.subject.clone(), payload.into()).await {
                tracing::debug!(%e, "live log line not published");
            }
        }
    }

    /// Shift the rotated files, copy the live one to `.1` and truncate it.
    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.max_files.saturating_sub(1);
        let live = live_path(&self.dir);
        if keep == 0 {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&live)?
                .set_len(0)?;
            self.offset = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(rotated_path(&self.dir, keep));
        for n in (1..keep).rev() {
            let from = rotated_path(&self.dir, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.dir, n + 1))?;
            }
        }
        let tmp = self.dir.join(format!("{LOG_FILE}.rotating"));
        std::fs::copy(&live, &tmp)?;
        std::fs::OpenOptions::new()
            .write(true)
            .open(&live)?
            .set_len(0)?;
        std::fs::rename(&tmp, rotated_path(&self.dir, 1))?;
        self.offset = 0;
        Ok(())
    }
}

/// An exclusive `flock` of a log file, released when dropped. The shim holds it only for
/// the length of one append, so waiting for it is short; it is taken by polling so that no
/// runtime thread blocks.
struct FileLock(std::os::fd::RawFd);

impl FileLock {
    async fn exclusive(f: &std::fs::File) -> std::io::Result<FileLock> {
        use std::os::fd::AsRawFd;
        let fd = f.as_raw_fd();
        loop {
            // SAFETY: flock on a descriptor that outlives the lock (the caller keeps `f`).
            if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(FileLock(fd));
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(e);
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlock of the descriptor locked in `exclusive`.
        unsafe { libc::flock(self.0, libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(t: &str, s: &str) -> String {
        serde_json::to_string(&LogLine {
            t: t.into(),
            s: "stdout".into(),
            log: s.into(),
        })
        .unwrap()
            + "\n"
    }

    #[test]
    fn history_spans_rotated_files_and_filters() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(rotated_path(d.path(), 2), line("2024-01-01T00:00:01Z", "a")).unwrap();
        std::fs::write(rotated_path(d.path(), 1), line("2024-01-01T00:00:02Z", "b")).unwrap();
        let mut f = std::fs::File::create(live_path(d.path())).unwrap();
        f.write_all(line("2024-01-01T00:00:03Z", "c").as_bytes())
            .unwrap();
        f.write_all(b"{\"t\":\"2024").unwrap();
        let all = read_history(d.path(), 3, None, &Query::default()).unwrap();
        let text: Vec<&str> = all.iter().map(|l| l.log.as_str()).collect();
        assert_eq!(text, ["a", "b", "c"]);
        let q = Query {
            since: parse_time("2024-01-01T00:00:02Z"),
            ..Default::default()
        };
        assert_eq!(read_history(d.path(), 3, None, &q).unwrap().len(), 2);
        let q = Query {
            tail: Some(1),
            ..Default::default()
        };
        assert_eq!(read_history(d.path(), 3, None, &q).unwrap()[0].log, "c");
        assert_eq!(
            read_history(d.path(), 3, Some(0), &Query::default())
                .unwrap()
                .len(),
            2
        );
    }
}

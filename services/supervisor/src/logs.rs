//! Container logs: the shim appends [`LogLine`]s to `<container dir>/log.jsonl`; the supervisor
//! reads them for `logs`, publishes new ones live while the container runs, and rotates the
//! file (copy then truncate) beyond a size, keeping `log.jsonl.1` (newest) .. `log.jsonl.<N-1>`.
//! The shim appends under an exclusive `flock` of the file and the rotation holds the same lock
//! from its last read to the truncation, so no line is lost between copy and truncate.
//!
//! A history read ([`History`]) opens every file at one moment (under the tailer's lock) and
//! then reads without it, in blocks, whatever the size: forward from a [`Cursor`], or backward
//! from the end to find where the last N lines (or the lines since a time) start. A rotation
//! during the read hands the reader the rotated copy of the live file ([`LiveReaders`]), so it
//! never sees the file truncated under it. [`stream`] sends what it reads in acknowledged
//! chunks to the reader's subject.

use berth_proto::isolator::{LogLine, LOG_FILE};
use berth_proto::supervisor::{LogChunk, LogMessage, StreamedCount};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// One stored line (without its newline) as a [`LogLine`], if it is one.
fn parse_line(raw: &[u8]) -> Option<LogLine> {
    // A writer that does not append may leave zeros where a truncated file had data.
    let raw = &raw[raw.iter().position(|b| *b != 0)?..];
    serde_json::from_slice::<LogLine>(raw).ok()
}

fn parse_lines(bytes: &[u8], out: &mut Vec<LogLine>) {
    out.extend(bytes.split(|b| *b == b'\n').filter_map(parse_line));
}

/// Filters of a history read.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub tail: Option<usize>,
}

impl Query {
    /// Whether a line written at `t` passes the time filters (a line without a readable time
    /// passes only when there are none).
    fn admits(&self, line: &LogLine) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        match parse_time(&line.t) {
            Some(t) => self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u),
            None => false,
        }
    }
}

/// The readers of a container's live log file. The rotation truncates that file; before it
/// does, it hands every registered reader an open copy of what it held, and the reader reads
/// on from the copy at the same offsets.
#[derive(Default)]
pub struct LiveReaders(Mutex<ReadersInner>);

#[derive(Default)]
struct ReadersInner {
    next: u64,
    readers: HashMap<u64, Handoff>,
}

enum Handoff {
    /// Still reading the live file.
    Live,
    /// The live file was rotated: its bytes are in this copy.
    Copy(Arc<File>),
    /// The live file was truncated without a copy (`log_max_files` 1): nothing more to read.
    Gone,
}

impl LiveReaders {
    fn register(self: &Arc<Self>, file: File) -> LiveFile {
        let mut g = self.0.lock().expect("not poisoned");
        g.next += 1;
        let id = g.next;
        g.readers.insert(id, Handoff::Live);
        LiveFile {
            readers: self.clone(),
            id,
            file,
        }
    }

    /// Truncate the live file `live` (held under the writer's lock by the caller), handing
    /// `copy` (the rotated bytes, if kept) to every reader still on the live file.
    fn truncate(&self, live: &Path, copy: Option<File>) -> std::io::Result<()> {
        let copy = copy.map(Arc::new);
        let mut g = self.0.lock().expect("not poisoned");
        std::fs::OpenOptions::new()
            .write(true)
            .open(live)?
            .set_len(0)?;
        for h in g.readers.values_mut() {
            if matches!(h, Handoff::Live) {
                *h = match &copy {
                    Some(f) => Handoff::Copy(f.clone()),
                    None => Handoff::Gone,
                };
            }
        }
        Ok(())
    }

    /// Readers registered now (for tests and diagnostics).
    pub fn count(&self) -> usize {
        self.0.lock().expect("not poisoned").readers.len()
    }
}

/// The live log file as one reader sees it (see [`LiveReaders`]).
struct LiveFile {
    readers: Arc<LiveReaders>,
    id: u64,
    file: File,
}

impl LiveFile {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        // Under the lock: the truncation cannot come between the choice of file and the read.
        let g = self.readers.0.lock().expect("not poisoned");
        match g.readers.get(&self.id) {
            Some(Handoff::Copy(f)) => f.read_at(buf, off),
            Some(Handoff::Gone) => Ok(0),
            _ => self.file.read_at(buf, off),
        }
    }
}

impl Drop for LiveFile {
    fn drop(&mut self) {
        if let Ok(mut g) = self.readers.0.lock() {
            g.readers.remove(&self.id);
        }
    }
}

enum Source {
    Rotated(File),
    Live(LiveFile),
}

impl Source {
    fn read_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        match self {
            Source::Rotated(f) => f.read_at(buf, off),
            Source::Live(l) => l.read_at(buf, off),
        }
    }

    /// Fill `buf` from `off` (short only at the end of the data).
    fn read_exact_at(&self, buf: &mut [u8], off: u64) -> std::io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.read_at(&mut buf[done..], off + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

/// One file of a history: bytes `[0, end)` are its part.
struct Part {
    src: Source,
    end: u64,
}

/// A place in a [`History`]: byte `off` of part `part` (0 = the oldest file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub part: usize,
    pub off: u64,
}

/// How much is read at once.
const BLOCK: usize = 64 << 10;
/// A line longer than this (the shim writes at most 16 KiB of text a line) is not a line of
/// ours: it is skipped rather than buffered.
const MAX_STORED_LINE: usize = 1 << 20;

/// The log files of a container opened at one moment, oldest first: the rotated ones, then
/// the live one up to where its whole lines ended then.
pub struct History {
    parts: Vec<Part>,
}

impl History {
    /// Open the history of `container_dir`: the rotated files and the live file up to
    /// `live_end` (its current length when `None`).
    pub fn open(
        container_dir: &Path,
        max_files: u32,
        live_end: Option<u64>,
        readers: &Arc<LiveReaders>,
    ) -> std::io::Result<History> {
        let mut parts = Vec::new();
        for n in (1..max_files.max(1) + 8).rev() {
            match File::open(rotated_path(container_dir, n)) {
                Ok(f) => {
                    let end = f.metadata()?.len();
                    parts.push(Part {
                        src: Source::Rotated(f),
                        end,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        match File::open(live_path(container_dir)) {
            Ok(f) => {
                let len = f.metadata()?.len();
                let end = live_end.map_or(len, |e| e.min(len));
                parts.push(Part {
                    src: Source::Live(readers.register(f)),
                    end,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(History { parts })
    }

    /// The whole lines of one part from `off`, in order, with their offsets.
    fn forward(
        &self,
        part: usize,
        off: u64,
        f: &mut impl FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> std::io::Result<ControlFlow<()>> {
        let p = &self.parts[part];
        let mut pos = off;
        let mut line_start = off;
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; BLOCK];
        while pos < p.end {
            let want = BLOCK.min((p.end - pos) as usize);
            let n = p.src.read_exact_at(&mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            let block = &buf[..n];
            let mut from = 0;
            while let Some(i) = block[from..].iter().position(|b| *b == b'\n') {
                let piece = &block[from..from + i];
                let flow = if pending.is_empty() {
                    f(line_start, piece)
                } else {
                    pending.extend_from_slice(piece);
                    let flow = f(line_start, &pending);
                    pending.clear();
                    flow
                };
                if flow.is_break() {
                    return Ok(ControlFlow::Break(()));
                }
                from += i + 1;
                line_start = pos + from as u64;
            }
            if pending.len() + (n - from) <= MAX_STORED_LINE {
                pending.extend_from_slice(&block[from..]);
            } else {
                pending.clear();
            }
            pos += n as u64;
        }
        // What follows the last newline is a line still being written: not history.
        Ok(ControlFlow::Continue(()))
    }

    /// The whole lines of one part, newest first, with their offsets.
    fn backward(
        &self,
        part: usize,
        f: &mut impl FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> std::io::Result<ControlFlow<()>> {
        let p = &self.parts[part];
        // `buf` holds the bytes [pos, lim): whole lines, each ending with a newline, not yet
        // given to `f`, preceded by the part of a line whose start is before `pos`.
        let mut pos = p.end;
        let mut buf: Vec<u8> = Vec::new();
        let mut lim_found = false;
        let mut block = vec![0u8; BLOCK];
        loop {
            if lim_found {
                while buf.len() > 1 {
                    let body = &buf[..buf.len() - 1];
                    match body.iter().rposition(|b| *b == b'\n') {
                        Some(i) => {
                            if f(pos + i as u64 + 1, &body[i + 1..]).is_break() {
                                return Ok(ControlFlow::Break(()));
                            }
                            buf.truncate(i + 1);
                        }
                        None if pos == 0 => {
                            if f(0, body).is_break() {
                                return Ok(ControlFlow::Break(()));
                            }
                            buf.clear();
                        }
                        None => break,
                    }
                }
                if buf.len() == 1 && pos == 0 {
                    // An empty first line.
                    if f(0, &[]).is_break() {
                        return Ok(ControlFlow::Break(()));
                    }
                    buf.clear();
                }
            }
            if pos == 0 {
                return Ok(ControlFlow::Continue(()));
            }
            let start = pos.saturating_sub(BLOCK as u64);
            let want = (pos - start) as usize;
            let n = p.src.read_exact_at(&mut block[..want], start)?;
            if n < want {
                // The file is shorter than it was (it cannot be, but be safe): stop here.
                return Ok(ControlFlow::Continue(()));
            }
            if lim_found {
                if buf.len() > MAX_STORED_LINE {
                    // Not a line of ours; drop what is buffered of it.
                    buf.clear();
                    buf.push(b'\n');
                }
                let mut joined = Vec::with_capacity(want + buf.len());
                joined.extend_from_slice(&block[..want]);
                joined.extend_from_slice(&buf);
                buf = joined;
            } else if let Some(i) = block[..want].iter().rposition(|b| *b == b'\n') {
                // The end of the last whole line: what follows it is still being written.
                lim_found = true;
                buf = block[..=i].to_vec();
            }
            pos = start;
        }
    }

    /// Where the lines to send start: the oldest when neither `tail` nor `since` is given;
    /// else found from the end, reading only what it must: the last `tail` lines that pass
    /// the filters, and no line older than `since` (lines are in the order they were
    /// written).
    pub fn start(&self, q: &Query) -> std::io::Result<Cursor> {
        if q.tail.is_none() && q.since.is_none() {
            return Ok(Cursor { part: 0, off: 0 });
        }
        let end = Cursor {
            part: self.parts.len(),
            off: 0,
        };
        let want = q.tail.unwrap_or(usize::MAX);
        if want == 0 {
            return Ok(end);
        }
        let mut found = 0usize;
        let mut at = None;
        for part in (0..self.parts.len()).rev() {
            let flow = self.backward(part, &mut |off, raw| {
                let Some(line) = parse_line(raw) else {
                    return ControlFlow::Continue(());
                };
                if let Some(since) = q.since {
                    if parse_time(&line.t).is_some_and(|t| t < since) {
                        return ControlFlow::Break(());
                    }
                }
                at = Some(Cursor { part, off });
                if q.admits(&line) {
                    found += 1;
                    if found >= want {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
            if flow.is_break() {
                return Ok(at.unwrap_or(end));
            }
        }
        Ok(Cursor { part: 0, off: 0 })
    }

    /// Every line from `from` that passes the filters, in order, with the length it had in
    /// its file; `f` may stop the read.
    pub fn read(
        &self,
        from: Cursor,
        q: &Query,
        mut f: impl FnMut(LogLine, usize) -> ControlFlow<()>,
    ) -> std::io::Result<()> {
        for part in from.part..self.parts.len() {
            let off = if part == from.part { from.off } else { 0 };
            let flow = self.forward(part, off, &mut |_, raw| match parse_line(raw) {
                Some(l) if q.admits(&l) => f(l, raw.len() + 1),
                _ => ControlFlow::Continue(()),
            })?;
            if flow.is_break() {
                break;
            }
        }
        Ok(())
    }

    /// The lines `q` selects, if their stored size is at most `max_bytes` (`None` when more).
    pub fn collect(&self, q: &Query, max_bytes: u64) -> std::io::Result<Option<Vec<LogLine>>> {
        let start = self.start(q)?;
        let (mut lines, mut bytes, mut over) = (Vec::new(), 0u64, false);
        self.read(start, q, |l, n| {
            bytes += n as u64;
            if bytes > max_bytes {
                over = true;
                return ControlFlow::Break(());
            }
            lines.push(l);
            ControlFlow::Continue(())
        })?;
        Ok((!over).then_some(lines))
    }
}

/// Read the log history, oldest first: the rotated files, then the live one up to `limit`
/// bytes (everything when `None`). Everything in memory: for tests and small histories.
pub fn read_history(
    container_dir: &Path,
    max_files: u32,
    limit: Option<u64>,
    q: &Query,
) -> std::io::Result<Vec<LogLine>> {
    let h = History::open(
        container_dir,
        max_files,
        limit,
        &Arc::new(LiveReaders::default()),
    )?;
    Ok(h.collect(q, u64::MAX)?.unwrap_or_default())
}

/// Bytes of stored lines per chunk of a stream (a chunk goes over the bus as one message,
/// whose limit is 1 MiB by default; a line is at most 16 KiB of text, ~100 KiB escaped).
pub const CHUNK_BYTES: usize = 128 << 10;
/// Chunks sent ahead of the reader's acknowledgements.
pub const WINDOW: u64 = 4;
/// How often, while it waits for an acknowledgement, the sender asks whether the reader is
/// still subscribed.
const PROBE_EVERY: Duration = Duration::from_secs(5);
/// A reader that acknowledges nothing for this long (a pager left open) ends the stream.
pub const STALL_LIMIT: Duration = Duration::from_secs(600);

/// Why a stream ended before its end.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("reading the log: {0}")]
    Io(#[from] std::io::Error),
    #[error("the reader of {0} is gone")]
    ReaderGone(String),
    #[error("the reader of {subject} acknowledged nothing for {after:?}")]
    Stalled { subject: String, after: Duration },
    #[error("the bus: {0}")]
    Bus(String),
}

/// Send the lines of `history` that `q` selects to `subject` in chunks of about
/// [`CHUNK_BYTES`], at most [`WINDOW`] of them not yet acknowledged, and return what was sent
/// once every chunk is acknowledged. The files are read on a blocking thread, a chunk or two
/// ahead of the sending: memory stays a few chunks whatever the size.
pub async fn stream(
    client: &async_nats::Client,
    subject: &str,
    history: History,
    q: Query,
) -> Result<StreamedCount, StreamError> {
    let bus = |e: &dyn std::fmt::Display| StreamError::Bus(e.to_string());
    // One reply subject per chunk and probe (`<inbox>.<k>`): a reader with response
    // permissions may answer each message it receives once.
    let inbox = client.new_inbox();
    let mut acks = client
        .subscribe(format!("{inbox}.*"))
        .await
        .map_err(|e| bus(&e))?;
    let mut replies = 0u64;
    let mut reply_to = || {
        replies += 1;
        format!("{inbox}.{replies}")
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<LogLine>>>(2);
    let reader = tokio::task::spawn_blocking(move || {
        let read = || -> std::io::Result<()> {
            let start = history.start(&q)?;
            let mut chunk = Vec::new();
            let mut size = 0;
            let mut gone = false;
            history.read(start, &q, |l, n| {
                chunk.push(l);
                size += n;
                if size >= CHUNK_BYTES {
                    size = 0;
                    if tx.blocking_send(Ok(std::mem::take(&mut chunk))).is_err() {
                        gone = true;
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            })?;
            if !gone && !chunk.is_empty() {
                let _ = tx.blocking_send(Ok(chunk));
            }
            Ok(())
        };
        if let Err(e) = read() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    let mut count = StreamedCount::default();
    let mut acked = 0u64;
    let mut reading = true;
    let mut quiet = Duration::ZERO;
    let on_ack = |m: Option<async_nats::Message>, acked: &mut u64| -> Result<(), StreamError> {
        let m = m.ok_or_else(|| StreamError::Bus("the connection closed".into()))?;
        if m.status == Some(async_nats::StatusCode::NO_RESPONDERS) {
            return Err(StreamError::ReaderGone(subject.to_string()));
        }
        if let Ok(n) = serde_json::from_slice::<u64>(&m.payload) {
            *acked = (*acked).max(n);
        }
        Ok(())
    };
    let result = loop {
        if reading && count.chunks.saturating_sub(acked) < WINDOW {
            tokio::select! {
                biased;
                m = acks.next() => {
                    if let Err(e) = on_ack(m, &mut acked) {
                        break Err(e);
                    }
                }
                c = rx.recv() => match c {
                    Some(Ok(lines)) => {
                        count.chunks += 1;
                        count.lines += lines.len() as u64;
                        count.bytes += lines.iter().map(|l| l.log.len() as u64).sum::<u64>();
                        let chunk = LogChunk { n: count.chunks, lines, probe: false };
                        let payload = serde_json::to_vec(&chunk).expect("chunks serialize");
                        if let Err(e) = client
                            .publish_with_reply(subject.to_string(), reply_to(), payload.into())
                            .await
                        {
                            break Err(bus(&e));
                        }
                    }
                    Some(Err(e)) => break Err(e.into()),
                    None => reading = false,
                },
            }
            continue;
        }
        if !reading && acked >= count.chunks {
            break Ok(count);
        }
        let before = acked;
        match tokio::time::timeout(PROBE_EVERY, acks.next()).await {
            Ok(m) => {
                if let Err(e) = on_ack(m, &mut acked) {
                    break Err(e);
                }
                if acked > before {
                    quiet = Duration::ZERO;
                }
            }
            Err(_) => {
                quiet += PROBE_EVERY;
                if quiet >= STALL_LIMIT {
                    break Err(StreamError::Stalled {
                        subject: subject.to_string(),
                        after: quiet,
                    });
                }
                let probe = LogChunk {
                    n: count.chunks,
                    lines: Vec::new(),
                    probe: true,
                };
                let payload = serde_json::to_vec(&probe).expect("chunks serialize");
                if let Err(e) = client
                    .publish_with_reply(subject.to_string(), reply_to(), payload.into())
                    .await
                {
                    break Err(bus(&e));
                }
            }
        }
    };
    // The reader thread ends at its next chunk once `rx` is gone.
    drop(rx);
    let _ = acks.unsubscribe().await;
    if result.is_ok() {
        let _ = reader.await;
    }
    result
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
    /// Readers of the history, handed the rotated copy when the file is truncated.
    readers: Arc<LiveReaders>,
}

/// The length of a container's live log file (0 when there is none yet).
pub fn log_end(dir: &Path) -> u64 {
    std::fs::metadata(live_path(dir))
        .map(|m| m.len())
        .unwrap_or(0)
}

impl Tailer {
    /// Start at the current end of the file: lines already there are history.
    pub fn new(
        dir: &Path,
        subject: String,
        (max_bytes, max_files): (u64, u32),
        readers: Arc<LiveReaders>,
    ) -> Tailer {
        Self::starting_at(dir, subject, (max_bytes, max_files), readers, log_end(dir))
    }

    /// Start at `offset` of the live file (its end when this instance was started: what the
    /// instance wrote before the tailer existed is published too).
    pub fn starting_at(
        dir: &Path,
        subject: String,
        (max_bytes, max_files): (u64, u32),
        readers: Arc<LiveReaders>,
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
            readers,
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
            self.readers.truncate(&live, None)?;
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
        self.readers.truncate(&live, Some(File::open(&tmp)?))?;
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

    /// `n` lines of varied length (so they straddle the read blocks), one a millisecond.
    fn numbered(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                let t = chrono::DateTime::from_timestamp(
                    1_700_000_000 + (i / 1000) as i64,
                    (i % 1000) as u32 * 1_000_000,
                )
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
                line(&t, &format!("{i} {}\n", "y".repeat(i % 300)))
            })
            .collect()
    }

    fn texts(lines: &[LogLine]) -> Vec<usize> {
        lines
            .iter()
            .map(|l| l.log.split(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn tail_and_since_are_found_from_the_end_across_files_and_blocks() {
        let d = tempfile::tempdir().unwrap();
        let all = numbered(6000);
        // Three files: .2, .1 and the live one, each several read blocks long.
        std::fs::write(rotated_path(d.path(), 2), all[..2000].concat()).unwrap();
        std::fs::write(rotated_path(d.path(), 1), all[2000..4000].concat()).unwrap();
        std::fs::write(live_path(d.path()), all[4000..].concat()).unwrap();
        let read = |q: Query| texts(&read_history(d.path(), 3, None, &q).unwrap());
        assert_eq!(read(Query::default()), (0..6000).collect::<Vec<_>>());
        for n in [0, 1, 5, 1999, 2000, 2001, 4500, 6000, 7000] {
            let q = Query {
                tail: Some(n),
                ..Default::default()
            };
            assert_eq!(
                read(q),
                (6000 - n.min(6000)..6000).collect::<Vec<_>>(),
                "tail {n}"
            );
        }
        // Line i is at 1_700_000_000 s + i ms.
        let at = |i: i64| chrono::DateTime::from_timestamp_millis(1_700_000_000_000 + i);
        let q = Query {
            since: at(3500),
            ..Default::default()
        };
        assert_eq!(read(q), (3500..6000).collect::<Vec<_>>());
        let q = Query {
            since: at(100),
            until: at(200),
            tail: Some(10),
        };
        assert_eq!(read(q), (190..200).collect::<Vec<_>>());
        let q = Query {
            until: at(4001),
            tail: Some(3),
            ..Default::default()
        };
        assert_eq!(read(q), vec![3998, 3999, 4000]);
        let q = Query {
            since: at(7000),
            ..Default::default()
        };
        assert!(read(q).is_empty());
    }

    #[test]
    fn a_rotation_during_a_read_hands_the_reader_the_copy() {
        let d = tempfile::tempdir().unwrap();
        let all = numbered(3000);
        std::fs::write(live_path(d.path()), all[..2000].concat()).unwrap();
        let readers = Arc::new(LiveReaders::default());
        let mut t = Tailer::new(d.path(), "unused".into(), (1, 3), readers.clone());
        let h = History::open(d.path(), 3, None, &readers).unwrap();
        assert_eq!(readers.count(), 1);
        // Rotated (copied, truncated), then written to again: the reader reads on from the
        // copy, exactly what it opened.
        t.rotate().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(live_path(d.path()))
            .unwrap();
        f.write_all(all[2000..].concat().as_bytes()).unwrap();
        let got = h.collect(&Query::default(), u64::MAX).unwrap().unwrap();
        assert_eq!(texts(&got), (0..2000).collect::<Vec<_>>());
        drop(h);
        assert_eq!(readers.count(), 0);
        // A new read sees the rotated file and the new lines.
        let got = read_history(d.path(), 3, None, &Query::default()).unwrap();
        assert_eq!(texts(&got), (0..3000).collect::<Vec<_>>());
    }

    #[test]
    fn a_history_over_the_budget_is_refused_not_cut() {
        let d = tempfile::tempdir().unwrap();
        let all = numbered(100);
        let size: usize = all.iter().map(|l| l.len()).sum();
        std::fs::write(live_path(d.path()), all.concat()).unwrap();
        let h = History::open(d.path(), 3, None, &Arc::default()).unwrap();
        assert!(h
            .collect(&Query::default(), size as u64 - 1)
            .unwrap()
            .is_none());
        assert_eq!(
            h.collect(&Query::default(), size as u64)
                .unwrap()
                .unwrap()
                .len(),
            100
        );
    }
}

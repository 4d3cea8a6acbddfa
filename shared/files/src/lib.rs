//! The file helpers every berth crate uses, tested once here: a file replaced whole or not at
//! all ([`atomic_write`]) with a durability the caller chooses, a directory's entries synced
//! ([`sync_dir`]), a child process run with a deadline ([`run_with_timeout`]), and deletion
//! deferred to a low-priority thread ([`janitor`]).
//!
//! Temporary files are named `.<name>.tmp-<pid>-<n>` beside their target, so a reader that
//! lists a directory skips them with the other dot files, and two writers (threads or
//! processes) never share one.

pub mod janitor;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// What a write must survive once [`atomic_write`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The writer's own crash: readers see the old or the new content, whole. The data may
    /// still be in the page cache; after a power loss the file may hold either version, or
    /// be empty. For what means nothing after a reboot (pids, leases of a running process,
    /// state re-derived at start).
    Process,
    /// A power loss too: the file's data is synced before the rename, and the directory's
    /// entry after it.
    PowerLoss,
}

/// Replace `path` with `bytes`, mode 0644 (before the umask): see [`atomic_write_mode`].
pub fn atomic_write(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    atomic_write_mode(path, bytes, 0o644, durability)
}

/// Replace `path` with `bytes` by writing a temporary file beside it (created with `mode`,
/// never an existing one) and renaming it over `path`, so a reader sees the old content or the
/// new, never a part. With [`Durability::PowerLoss`] the data is synced before the rename and
/// the directory after it. On an error nothing is left but what was there before.
pub fn atomic_write_mode(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let tmp = temp_path(path)?;
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if durability == Durability::PowerLoss {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durability == Durability::PowerLoss {
        sync_dir(parent(path))?;
    }
    Ok(())
}

/// A fresh temporary path beside `path`: `.<name>.tmp-<pid>-<n>`.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(parent(path).join(format!(
        ".{}.tmp-{}-{n}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Make the entries of `dir` (files created, renamed or removed in it) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How a child run with [`run_with_timeout`] ended.
#[derive(Debug)]
pub enum Finished {
    /// It exited (or was killed by a signal other than ours): its status and what it wrote.
    Exited(Output),
    /// It was still running at the deadline and was killed (by its pid) and reaped.
    TimedOut,
}

/// Run `cmd` with `input` on its standard input and its output collected, killing it
/// (SIGKILL) if it has not exited within `timeout`. A grandchild that keeps the pipes open
/// does not hold the caller beyond two more seconds once the child has exited.
pub fn run_with_timeout(
    cmd: &mut Command,
    input: &[u8],
    timeout: Duration,
) -> io::Result<Finished> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // The input is small (a URL, one JSON object): it fits the pipe. A child that exits without
    // reading it makes this fail; its status tells what happened.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let kill = |pid: u32| {
        // Our own child, by its pid, not yet reaped (see `wait_collect`).
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    };
    let c = wait_collect(child, Some(timeout), kill, Some(Duration::from_secs(2)))?;
    Ok(if c.timed_out {
        Finished::TimedOut
    } else {
        Finished::Exited(Output {
            status: c.status,
            stdout: c.stdout,
            stderr: c.stderr,
        })
    })
}

/// What [`wait_collect`] gathered from a child.
#[derive(Debug)]
pub struct Collected {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The deadline passed and `on_deadline` was called before the child exited.
    pub timed_out: bool,
}

/// Wait for a spawned `child`, reading its piped stdout and stderr (if they are pipes) to
/// their end on threads. If `deadline` passes first, `on_deadline(pid)` is called once (to
/// signal the child: it is not reaped until it exits, so the pid is still its own unless the
/// exit and the deadline meet within microseconds) and the wait goes on. Once the child has
/// exited, its output is waited for at most `drain_grace` (a grandchild may hold the pipes
/// open), or until the pipes close if `None`.
pub fn wait_collect(
    mut child: Child,
    deadline: Option<Duration>,
    on_deadline: impl FnOnce(u32),
    drain_grace: Option<Duration>,
) -> io::Result<Collected> {
    let pid = child.id();
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    // The waiter thread blocks in wait(2): the caller wakes the moment the child exits.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    let gone = || io::Error::other("the waiter thread went away");
    let mut timed_out = false;
    let status = match deadline.map(|t| rx.recv_timeout(t)) {
        Some(Ok(s)) => s,
        Some(Err(RecvTimeoutError::Disconnected)) => return Err(gone()),
        waited => {
            if waited.is_some() {
                timed_out = true;
                on_deadline(pid);
            }
            rx.recv().map_err(|_| gone())?
        }
    }?;
    let collect = |rx: Receiver<Vec<u8>>| match drain_grace {
        Some(g) => rx.recv_timeout(g).unwrap_or_default(),
        None => rx.recv().unwrap_or_default(),
    };
    Ok(Collected {
        status,
        stdout: collect(out),
        stderr: collect(err),
        timed_out,
    })
}

/// Read a pipe to its end on a thread; the bytes arrive on the receiver.
fn drain(pipe: Option<Box<dyn Read + Send>>) -> Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("rec.json");
        for d in [Durability::Process, Durability::PowerLoss] {
            atomic_write(&p, b"first", d).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"first");
            atomic_write(&p, b"second, longer", d).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), b"second, longer");
        }
        assert_eq!(listing(t.path()), ["rec.json"]);
    }

    #[test]
    fn the_mode_is_the_callers_and_an_existing_file_does_not_lend_its_own() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("secret.json");
        std::fs::write(&p, b"old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
        atomic_write_mode(&p, b"new", 0o600, Durability::PowerLoss).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_failed_write_keeps_the_old_content_and_no_temporary() {
        let t = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the data is written.
        let p = t.path().join("taken");
        std::fs::create_dir_all(p.join("inside")).unwrap();
        assert!(atomic_write(&p, b"x", Durability::Process).is_err());
        assert_eq!(listing(t.path()), ["taken"]);
        assert!(atomic_write(&t.path().join("no/such/dir/f"), b"x", Durability::Process).is_err());
    }

    #[test]
    fn temporaries_are_hidden_and_never_shared() {
        let p = Path::new("/d/state.json");
        let (a, b) = (temp_path(p).unwrap(), temp_path(p).unwrap());
        assert_ne!(a, b);
        assert!(a.starts_with("/d"));
        assert!(a
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".state.json.tmp-"));
        assert_eq!(
            temp_path(Path::new("f")).unwrap().parent(),
            Some(Path::new("."))
        );
        assert!(temp_path(Path::new("/")).is_err());
    }

    #[test]
    fn concurrent_writers_leave_one_whole_version() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        atomic_write(p, &[i; 4096], Durability::Process).unwrap();
                    }
                });
            }
        });
        let got = std::fs::read(&p).unwrap();
        assert_eq!(got.len(), 4096);
        assert!(got.iter().all(|&b| b == got[0]));
        assert_eq!(listing(t.path()), ["x"]);
    }

    #[test]
    fn a_child_answers_or_is_killed_at_its_deadline() {
        let mut cat = Command::new("cat");
        match run_with_timeout(&mut cat, b"echoed", Duration::from_secs(10)).unwrap() {
            Finished::Exited(o) => {
                assert!(o.status.success());
                assert_eq!(o.stdout, b"echoed");
            }
            Finished::TimedOut => panic!("cat timed out"),
        }
        let mut fail = Command::new("sh");
        fail.args(["-c", "echo oops >&2; exit 3"]);
        match run_with_timeout(&mut fail, b"", Duration::from_secs(10)).unwrap() {
            Finished::Exited(o) => {
                assert_eq!(o.status.code(), Some(3));
                assert_eq!(o.stderr, b"oops\n");
            }
            Finished::TimedOut => panic!("sh timed out"),
        }
        let mut slow = Command::new("sleep");
        slow.arg("30");
        assert!(matches!(
            run_with_timeout(&mut slow, b"", Duration::from_millis(200)).unwrap(),
            Finished::TimedOut
        ));
        assert!(run_with_timeout(
            &mut Command::new("/no/such/program"),
            b"",
            Duration::from_secs(1)
        )
        .is_err());
    }

    #[test]
    fn at_the_deadline_the_caller_chooses_the_signal_and_keeps_the_output() {
        let mut sh = Command::new("sh");
        sh.args([
            "-c",
            "echo started; trap 'echo stopping; exit 7' TERM; while :; do sleep 0.05; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let child = sh.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let term = |pid: u32| {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGTERM,
            )
            .unwrap()
        };
        let c = wait_collect(child, Some(Duration::from_millis(100)), term, None).unwrap();
        assert!(c.timed_out);
        assert_eq!(c.status.code(), Some(7));
        assert_eq!(c.stdout, b"started\nstopping\n");
        // No deadline: the child runs to its end and nothing is called.
        let mut quick = Command::new("sh");
        quick.args(["-c", "echo done"]).stdout(Stdio::piped());
        let c = wait_collect(
            quick.spawn().unwrap(),
            None,
            |_| panic!("no deadline"),
            None,
        )
        .unwrap();
        assert!(!c.timed_out && c.status.success());
        assert_eq!(c.stdout, b"done\n");
    }
}

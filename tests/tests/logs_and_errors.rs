//! `berth logs` of any size and the errors and exit codes users see, through the real CLI and
//! berthd. Logs: a container writes 300 MB and `berth logs` returns all of it (every line, in
//! order), `--tail` and `--since` from the end of it, `--since`/`--until` in every form Docker
//! takes, and `-f` joins the history without gap or repeat. Errors: `run` and `exec` exit as
//! Docker's do (125 berth or the request, 126 a command that cannot be invoked, 127 one not
//! found, else the command's own code), and a user's mistake reads as one plain line. As root.

use berth_tests::daemon::{stderr, stdout, Berthd};
use std::io::{BufRead, BufReader, Read};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

/// A daemon and a busybox root filesystem; the containers named through it are removed before
/// the daemon stops, pass or fail.
struct Env {
    d: Berthd,
    dir: tempfile::TempDir,
    names: std::cell::RefCell<Vec<String>>,
}

impl Env {
    fn start() -> Option<Env> {
        if !berth_tests::is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        let d = Berthd::start();
        let dir = tempfile::tempdir().unwrap();
        berth_tests::images::container_rootfs(&dir.path().join("rootfs"));
        Some(Env {
            d,
            dir,
            names: Default::default(),
        })
    }

    /// Restart the daemon with these supervisor settings.
    fn with_settings(mut self, toml: &str) -> Env {
        self.d.terminate(Duration::from_secs(10));
        std::fs::write(self.d.data_root().join("supervisor.toml"), toml).unwrap();
        self.d.spawn();
        self
    }

    fn root(&self) -> String {
        self.dir.path().join("rootfs").display().to_string()
    }

    fn berth(&self, args: &[&str]) -> Output {
        self.d.berth(args)
    }

    /// `berth run -d --name NAME --rootfs ROOT COMMAND...`, which must succeed.
    fn run_detached(&self, name: &str, command: &[&str]) {
        self.names.borrow_mut().push(name.to_string());
        let root = self.root();
        let mut args = vec!["run", "-d", "--name", name, "--rootfs", &root];
        args.extend_from_slice(command);
        let o = self.berth(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    }

    /// `berth run [OPTIONS] --rootfs ROOT COMMAND...` in the foreground, removed after.
    fn run(&self, options: &[&str], command: &[&str]) -> Output {
        let name = berth_tests::unique("r");
        self.names.borrow_mut().push(name.clone());
        let root = self.root();
        let mut args = vec!["run", "--name", &name];
        args.extend_from_slice(options);
        args.extend_from_slice(&["--rootfs", &root]);
        args.extend_from_slice(command);
        self.berth(&args)
    }

    fn status(&self, name: &str) -> String {
        let o = self.berth(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v[0]["state"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn wait_exited(&self, name: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.status(name) != "exited" {
            assert!(
                Instant::now() < deadline,
                "{name} still {} after {within:?}",
                self.status(name)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `berth logs ARGS...`, which must succeed: its stdout.
    fn logs(&self, args: &[&str]) -> String {
        let mut all = vec!["logs"];
        all.extend_from_slice(args);
        let o = self.berth(&all);
        assert!(o.status.success(), "logs {args:?}: {}", stderr(&o));
        stdout(&o)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for n in self.names.borrow().iter() {
            let _ = self.d.berth(&["rm", "-f", n]);
        }
    }
}

/// The line number `i` of the big log: 10 digits, a space, 89 `x`: 101 bytes with the newline.
fn big_line(i: u64) -> String {
    format!("{i:010} {}\n", "x".repeat(89))
}

const BIG_LINES: u64 = 3_000_000;

/// The numbers of lines shaped like [`big_line`] (checked), in order.
fn numbers(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let (n, pad) = l.split_at(10);
            assert_eq!(pad.len(), 90, "{l:?}");
            n.parse().unwrap()
        })
        .collect()
}

/// `2024-01-02T03:04:05.123456789Z rest` → (time, rest).
fn stamped(line: &str) -> (chrono::DateTime<chrono::Utc>, &str) {
    let (t, rest) = line.split_once(' ').unwrap();
    (
        chrono::DateTime::parse_from_rfc3339(t)
            .unwrap()
            .with_timezone(&chrono::Utc),
        rest,
    )
}

#[test]
fn a_log_of_300_mb_is_read_whole_and_from_its_end() {
    // Room for the whole log (about 470 MB stored), over several rotated files.
    let Some(e) = Env::start() else { return };
    let e = e.with_settings("log_max_bytes = 104857600\nlog_max_files = 8\n");
    let awk = format!(
        "busybox awk 'BEGIN {{ p = sprintf(\"%89s\", \"\"); gsub(/ /, \"x\", p); \
         for (i = 1; i <= {BIG_LINES}; i++) printf \"%010d %s\\n\", i, p }}'"
    );
    let t = Instant::now();
    e.run_detached("big", &["sh", "-c", &awk]);
    e.wait_exited("big", Duration::from_secs(600));
    eprintln!("300 MB written in {:?}", t.elapsed());

    // Everything, in order, read through a pipe that is left unread for a while first: the
    // stream waits for the reader (and asks whether it is still there) instead of buffering.
    let t = Instant::now();
    let mut child =
        e.d.command(&e.d.admin_creds(), &["logs", "big"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    let mut out = BufReader::with_capacity(1 << 20, child.stdout.take().unwrap());
    let (mut n, mut bytes, mut line) = (0u64, 0u64, String::new());
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        n += 1;
        bytes += line.len() as u64;
        if line != big_line(n) {
            panic!("line {n} is {line:?}");
        }
    }
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "{err}");
    assert_eq!((n, bytes), (BIG_LINES, BIG_LINES * 101), "{err}");
    eprintln!("read whole in {:?}", t.elapsed());

    // The last 5, found from the end.
    let t = Instant::now();
    let last = e.logs(&["--tail", "5", "big"]);
    assert_eq!(
        numbers(&last),
        (BIG_LINES - 4..=BIG_LINES).collect::<Vec<_>>()
    );
    eprintln!("--tail 5 in {:?}", t.elapsed());

    // Since the time of the 5th line from the end: from there (lines written at the same
    // instant included) to the last, every one stamped at or after it.
    let stamps = e.logs(&["-t", "-n", "5", "big"]);
    let (since, first) = stamped(stamps.lines().next().unwrap());
    assert_eq!(first, big_line(BIG_LINES - 4).trim_end());
    let since_s = since.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let got = e.logs(&["-t", "--since", &since_s, "big"]);
    let mut nums = Vec::new();
    for l in got.lines() {
        let (t, rest) = stamped(l);
        assert!(t >= since, "{l} is before {since_s}");
        nums.push(numbers(rest)[0]);
    }
    let from = nums[0];
    assert!(from <= BIG_LINES - 4, "{from}");
    assert_eq!(nums, (from..=BIG_LINES).collect::<Vec<_>>());
    // The same instant as a Unix timestamp.
    let unix = format!(
        "{}.{:09}",
        since.timestamp(),
        since.timestamp_subsec_nanos()
    );
    let same = e.logs(&["-t", "--since", &unix, "big"]);
    assert_eq!(same, got);

    // Until that time, the last 3: before it, in order.
    let before = e.logs(&["-t", "--until", &since_s, "--tail", "3", "big"]);
    let mut nums = Vec::new();
    for l in before.lines() {
        let (t, rest) = stamped(l);
        assert!(t < since, "{l} is not before {since_s}");
        nums.push(numbers(rest)[0]);
    }
    assert_eq!(nums.len(), 3, "{before}");
    assert_eq!(nums, (nums[0]..nums[0] + 3).collect::<Vec<_>>());
    assert!(nums[2] < from, "{nums:?} reach {from}");
}

#[test]
fn since_and_until_take_every_form_docker_takes() {
    let Some(e) = Env::start() else { return };
    e.run_detached(
        "times",
        &["sh", "-c", "echo a; sleep 2; echo b; sleep 2; echo c"],
    );
    e.wait_exited("times", Duration::from_secs(30));
    let all = e.logs(&["-t", "times"]);
    let stamps: Vec<_> = all.lines().map(stamped).collect();
    let texts: Vec<&str> = stamps.iter().map(|(_, s)| *s).collect();
    assert_eq!(texts, ["a", "b", "c"]);
    let tb = stamps[1].0;
    let tc = stamps[2].0;
    let rfc =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let unix = |t: chrono::DateTime<chrono::Utc>| {
        format!("{}.{:09}", t.timestamp(), t.timestamp_subsec_nanos())
    };

    assert_eq!(e.logs(&["--since", &rfc(tb), "times"]), "b\nc\n");
    assert_eq!(e.logs(&["--since", &unix(tb), "times"]), "b\nc\n");
    assert_eq!(e.logs(&["--until", &rfc(tb), "times"]), "a\n");
    assert_eq!(e.logs(&["--until", &unix(tb), "times"]), "a\n");
    assert_eq!(
        e.logs(&["--since", &rfc(tb), "--until", &rfc(tc), "times"]),
        "b\n"
    );
    // Durations ago.
    assert_eq!(e.logs(&["--since", "1h", "times"]), "a\nb\nc\n");
    assert_eq!(e.logs(&["--until", "1h", "times"]), "");
    // With --tail: the last lines of those selected.
    assert_eq!(
        e.logs(&["--until", &rfc(tc), "--tail", "1", "times"]),
        "b\n"
    );
    assert_eq!(e.logs(&["--tail", "0", "times"]), "");
    // A time it cannot read: one line naming it.
    let o = e.berth(&["logs", "--since", "yesterday", "times"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("\"yesterday\""), "{}", stderr(&o));
}

#[test]
fn follow_joins_a_large_history_without_gap_or_repeat() {
    let Some(e) = Env::start() else { return };
    // 200000 lines at once (more than a bus message holds), then 100 a second for 5 s.
    e.run_detached(
        "counter",
        &[
            "sh",
            "-c",
            "busybox seq 1 200000; i=200001; while [ $i -le 200500 ]; do \
             busybox seq $i $((i + 99)); i=$((i + 100)); sleep 1; done",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = e.logs(&["--tail", "1", "counter"]);
        if last.trim().parse::<u64>().is_ok_and(|n| n >= 200000) {
            break;
        }
        assert!(Instant::now() < deadline, "the burst never ended: {last:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = e.berth(&["logs", "-f", "counter"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<u64> = stdout(&o).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got.len(), 200500, "lines missing or repeated");
    assert!(
        got.iter().copied().eq(1..=200500),
        "not 1..=200500 in order"
    );
}

/// The message of a failed CLI run: one line, without a code in parentheses.
fn plain_error(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(err.lines().count(), 1, "{err}");
    for code in [
        "(unavailable)",
        "(not_found)",
        "(invalid_argument)",
        "(internal)",
        "(failed_precondition)",
    ] {
        assert!(!err.contains(code), "{err}");
    }
    err
}

#[test]
fn run_exits_with_dockers_codes() {
    let Some(e) = Env::start() else { return };
    // The command's own code.
    assert_eq!(e.run(&[], &["sh", "-c", "exit 3"]).status.code(), Some(3));
    assert_eq!(e.run(&[], &["true"]).status.code(), Some(0));
    // 127: not found, in $PATH or by path.
    let o = e.run(&[], &["no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    let msg = plain_error(&o);
    assert!(
        msg.contains("\"no-such-command\": executable file not found in $PATH"),
        "{msg}"
    );
    let o = e.run(&[], &["/bin/no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    // 126: cannot be invoked (a directory, a file that is not executable).
    let o = e.run(&[], &["/bin"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(plain_error(&o).contains("is a directory"));
    let o = e.run(&[], &["/etc/hostname"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(plain_error(&o).contains("permission denied"));
    // 125: berth or the request: a bad flag, a bad flag value, a user that is not there, an
    // image that cannot be had.
    let o = e.berth(&["run", "--no-such-flag", "busybox"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let o = e.run(&["--memory", "lots"], &["true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(plain_error(&o).contains("\"lots\""));
    let o = e.run(&["--user", "nobody-here"], &["true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(plain_error(&o).contains("nobody-here"));
    let dead = format!("127.0.0.1:{}/none:1", berth_tests::free_port());
    let o = e.berth(&["run", "--rm", &dead, "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
}

#[test]
fn exec_exits_with_dockers_codes() {
    let Some(e) = Env::start() else { return };
    e.run_detached("box", &["sleep", "3600"]);
    let exec = |args: &[&str]| {
        let mut all = vec!["exec"];
        all.extend_from_slice(args);
        e.berth(&all)
    };
    assert_eq!(exec(&["box", "sh", "-c", "exit 4"]).status.code(), Some(4));
    let o = exec(&["box", "no-such-command"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(plain_error(&o).contains("no-such-command"));
    let o = exec(&["box", "/bin"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(plain_error(&o).contains("is a directory"));
    let o = exec(&["box", "/etc/hostname"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    // 125: no such container, a bad flag, a user that is not there.
    let o = exec(&["nobox", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(plain_error(&o).contains("no such container: \"nobox\""));
    let o = exec(&["--no-such-flag", "box", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    let o = exec(&["-u", "nobody-here", "box", "true"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(plain_error(&o).contains("nobody-here"));
}

#[test]
fn start_attached_exits_with_dockers_codes() {
    let Some(e) = Env::start() else { return };
    // The command's output and code.
    e.run_detached("five", &["sh", "-c", "echo hello-five; exit 5"]);
    e.wait_exited("five", Duration::from_secs(30));
    let o = e.berth(&["start", "-a", "five"]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello-five\n");
    // A run whose command is not there exits 127 and leaves no container (a failed create
    // leaves nothing).
    e.names.borrow_mut().push("bad".into());
    let root = e.root();
    let o = e.berth(&["run", "-d", "--name", "bad", "--rootfs", &root, "nope"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(plain_error(&o).contains("\"nope\""), "{}", stderr(&o));
    assert_eq!(e.status("bad"), "", "a failed run leaves no container");
    // A container whose command has gone since (it removed itself in its own layer): its
    // `start -a` exits 127 too.
    let script = std::path::Path::new(&root).join("selfdel");
    std::fs::write(&script, "#!/bin/sh\nrm -f /selfdel\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    e.run_detached("bad", &["/selfdel"]);
    e.wait_exited("bad", Duration::from_secs(30));
    let o = e.berth(&["start", "-a", "bad"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
    assert!(plain_error(&o).contains("/selfdel"), "{}", stderr(&o));
    // 125: no such container; -a with two.
    let o = e.berth(&["start", "-a", "nobox"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(plain_error(&o).contains("nobox"));
    let o = e.berth(&["start", "-a", "five", "bad"]);
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
}

#[test]
fn a_users_mistake_reads_as_one_plain_line() {
    let Some(e) = Env::start() else { return };
    for args in [
        &["stop", "nobox"][..],
        &["logs", "nobox"],
        &["inspect", "nobox"],
        &["logs", "--tail", "many", "nobox"],
        &["run", "--restart", "sometimes", "busybox"],
    ] {
        let o = e.berth(args);
        assert!(!o.status.success(), "{args:?}");
        let msg = plain_error(&o);
        assert!(
            msg.contains("nobox") || msg.contains("many") || msg.contains("sometimes"),
            "{args:?}: {msg}"
        );
    }
}

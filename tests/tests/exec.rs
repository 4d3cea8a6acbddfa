//! `berth exec` through the real daemon: output streamed while the command runs, `-i` input,
//! `-t` a terminal of the container's own, exit codes, and setup errors. As root.

use berth_tests::daemon::{stderr, stdout, Berthd};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

fn setup() -> Option<(Berthd, tempfile::TempDir)> {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    berth_tests::images::container_rootfs(&root);
    let o = d.berth(&[
        "run",
        "-d",
        "--name",
        "box",
        "--rootfs",
        root.to_str().unwrap(),
        "sleep",
        "3600",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    Some((d, dir))
}

#[test]
fn exec_streams_output_takes_input_and_gives_a_terminal() {
    let Some((d, _dir)) = setup() else { return };

    // Output arrives while the command still runs.
    let mut child = d
        .command(
            &d.cli_creds(),
            &[
                "exec",
                "box",
                "sh",
                "-c",
                "echo first; sleep 3; echo second",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let t = Instant::now();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    assert!(
        child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(3),
        "the first line came before the command ended"
    );
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());

    // stdout and stderr apart, and the exit code.
    let o = d.berth(&["exec", "box", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "out\n");
    assert_eq!(stderr(&o), "err\n");

    // A large output arrives whole.
    let o = d.berth(&[
        "exec",
        "box",
        "sh",
        "-c",
        "i=0; while [ $i -lt 20000 ]; do echo line-$i; i=$((i+1)); done",
    ]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert_eq!(out.lines().count(), 20000);
    assert!(out.ends_with("line-19999\n"));

    // -i: berth's stdin is the command's input, and its end closes it.
    let o = d.berth_with_input(
        &[
            "exec",
            "-i",
            "box",
            "sh",
            "-c",
            "read a; read b; echo got $a $b; cat",
        ],
        b"one\ntwo\nrest\n",
    );
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got one two\nrest\n");

    // -t: a terminal of the container's own devpts, sized as asked (80x24 without one here).
    let o = d.berth(&[
        "exec",
        "-t",
        "box",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo on-a-tty; tty",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("on-a-tty"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    // Without -t, no terminal.
    let o = d.berth(&["exec", "box", "sh", "-c", "test -t 1 || echo no-tty"]);
    assert_eq!(stdout(&o), "no-tty\n");

    // -it with piped input: a shell reads commands from the terminal; the end of input ends it.
    let o = d.berth_with_input(
        &["exec", "-it", "box", "sh"],
        b"echo hello-$((6*7))\nexit 3\n",
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello-42"));

    // Setup errors are one clear line.
    let o = d.berth(&["exec", "box", "no-such-command"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no-such-command"), "{}", stderr(&o));
    let o = d.berth(&["exec", "nobox", "true"]);
    assert!(
        !o.status.success() && stderr(&o).contains("nobox"),
        "{}",
        stderr(&o)
    );
}

/// Processes on the host whose cgroup names container `id` and whose command line is `argv`.
fn processes_of(id: &str, argv: &[&str]) -> usize {
    let want: Vec<u8> = argv.iter().flat_map(|a| a.bytes().chain([0u8])).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cgroup")).is_ok_and(|c| c.contains(id))
                && std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want)
        })
        .count()
}

#[test]
fn a_health_probe_that_times_out_is_killed() {
    let Some((d, dir)) = setup() else { return };
    let root = dir.path().join("rootfs");
    let o = d.berth(&[
        "run",
        "-d",
        "--name",
        "hc",
        "--health-cmd",
        "sleep 30",
        "--health-interval",
        "300ms",
        "--health-timeout",
        "200ms",
        "--health-retries",
        "1",
        "--rootfs",
        root.to_str().unwrap(),
        "sleep",
        "3600",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&d.berth(&["inspect", "hc"]))).unwrap();
        if v[0]["state"]["health"]["status"] == "unhealthy" {
            break v;
        }
        assert!(Instant::now() < deadline, "never unhealthy: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = v[0]["state"]["health"]["log"].to_string();
    assert!(log.contains("was killed"), "{log}");
    // Probes keep coming every 300 ms; each is killed at 200 ms, so at most one lives.
    std::thread::sleep(Duration::from_secs(3));
    let n = processes_of(&id, &["sleep", "30"]);
    assert!(n <= 1, "{n} probes still running in the container");
}

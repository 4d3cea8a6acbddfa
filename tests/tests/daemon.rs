//! `berthd` and the CLI as users run them: the binaries, a real local nats-server with
//! generated credentials and per-subject permissions.

use berth_tests::daemon::{stderr, stdout, Berthd};
use std::time::{Duration, Instant};

const SERVICES: [&str; 5] = [
    "puller",
    "layer-store",
    "isolator",
    "supervisor",
    "reconciler",
];

#[test]
fn system_info_lists_every_service_and_events_replay_their_start() {
    let d = Berthd::start();
    let out = d.berth(&["system", "info"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for s in SERVICES {
        let line = text
            .lines()
            .find(|l| l.starts_with(s))
            .unwrap_or_else(|| panic!("{s} missing from:\n{text}"));
        assert!(line.contains("running"), "{line}");
    }

    let out = d.berth(&[
        "events", "--since", "1m", "--until", "0s", "--format", "json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    for s in SERVICES {
        assert!(
            events
                .iter()
                .any(|e| e["entity"] == "service" && e["action"] == "started" && e["name"] == s),
            "no service.started for {s} in {events:?}"
        );
    }

    // Filters: only the puller's start.
    let out = d.berth(&[
        "events",
        "--since",
        "1m",
        "--until",
        "0s",
        "--filter",
        "name=puller",
        "--filter",
        "action=started",
        "--format",
        "json",
    ]);
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"puller\""));

    // A window in the future is empty; a bad time is one clear line.
    let out = d.berth(&["events", "--since", "0s", "--until", "0s"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    let out = d.berth(&["events", "--since", "yesterday-ish"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("yesterday-ish"), "{}", stderr(&out));
}

#[test]
fn services_reconnect_after_the_local_nats_server_is_killed() {
    let d = Berthd::start();
    let before = d.nats_pid().expect("nats pid file");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = d.berth(&["system", "info"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "system info never worked again: {}\n{}",
            stderr(&out),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let after = d.nats_pid().expect("nats pid file");
    assert_ne!(before, after, "berthd started a new nats-server");
}

#[test]
fn sigterm_drains_and_stops_the_nats_child() {
    let mut d = Berthd::start();
    let nats = d.nats_pid().unwrap();
    // The server stays up while berthd runs (it must not die with an idle thread of berthd's:
    // blocking-pool threads exit after 10 s).
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        d.nats_pid(),
        Some(nats),
        "the local nats-server was restarted:\n{}",
        d.log()
    );
    assert!(!d.log().contains("nats-server is gone"), "{}", d.log());
    let st = d
        .terminate(Duration::from_secs(15))
        .expect("berthd exit status");
    assert!(st.success(), "berthd exited with {st}: {}", d.log());
    assert!(
        !std::path::Path::new(&format!("/proc/{nats}")).exists(),
        "nats-server {nats} still running after berthd stopped"
    );
    assert!(d.log().contains("containers are left running"));
}

#[test]
fn cli_says_plainly_when_the_daemon_is_not_running() {
    let port = berth_tests::free_port();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(berth_tests::bin("berth"))
        .args(["--nats", &format!("nats://127.0.0.1:{port}"), "--creds"])
        .arg(dir.path().join("none.json"))
        .args(["system", "info"])
        .env("BERTH_DATA_ROOT", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    // The credentials file is missing: that is said first. With no credentials file at all,
    // the URL and the hint are given.
    let out = std::process::Command::new(berth_tests::bin("berth"))
        .args([
            "--nats",
            &format!("nats://127.0.0.1:{port}"),
            "system",
            "info",
        ])
        .env("BERTH_DATA_ROOT", dir.path())
        .env_remove("BERTH_NATS_CREDS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.contains("berthd may not be running"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test]
async fn identities_and_permissions() {
    let d = Berthd::start();
    let node = d.node.clone();

    // No credentials: refused at connect.
    assert!(
        async_nats::connect(d.url()).await.is_err(),
        "a client without credentials must be refused"
    );
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("berth-admin".into(), "wrong".into())
        .connect(d.url())
        .await;
    assert!(wrong.is_err(), "a wrong password must be refused");

    let creds = |p: &std::path::Path| -> berth_bus::Credentials {
        berth_bus::Credentials::read(p).unwrap()
    };
    let (admin, monitor) = (creds(&d.admin_creds()), creds(&d.monitor_creds()));
    use std::os::unix::fs::PermissionsExt;
    for p in [d.admin_creds(), d.monitor_creds()] {
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
    }
    let admin_c = async_nats::ConnectOptions::new()
        .user_and_password(admin.user, admin.password)
        .connect(d.url())
        .await
        .unwrap();
    let mon_c = async_nats::ConnectOptions::new()
        .user_and_password(monitor.user, monitor.password)
        .custom_inbox_prefix(monitor.inbox_prefix.expect("the monitor's own replies"))
        .connect(d.url())
        .await
        .unwrap();

    // The monitor can follow events.
    let out = d.berth_as(
        &d.monitor_creds(),
        &["events", "--since", "1m", "--until", "0s"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("service.started"), "{}", stdout(&out));

    // ... but a command it publishes never arrives.
    use futures::StreamExt;
    let cmd_subject = format!("berth.v1.{node}.supervisor.probe");
    let mut sub = admin_c.subscribe(cmd_subject.clone()).await.unwrap();
    admin_c.flush().await.unwrap();
    mon_c
        .publish(cmd_subject.clone(), "x".into())
        .await
        .unwrap();
    mon_c.flush().await.unwrap();
    admin_c
        .publish(cmd_subject.clone(), "from-admin".into())
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .expect("the admin's own publish arrives")
        .unwrap();
    assert_eq!(
        &first.payload[..],
        b"from-admin",
        "the monitor's command got through"
    );

    // The monitor cannot write desired state ...
    let mon_js = async_nats::jetstream::new(mon_c.clone());
    if let Ok(kv) = mon_js.get_key_value("berth_desired").await {
        let _ = tokio::time::timeout(Duration::from_secs(3), kv.put("intruder", "x".into())).await;
    }
    let admin_js = async_nats::jetstream::new(admin_c.clone());
    let kv = admin_js.get_key_value("berth_desired").await.unwrap();
    assert!(
        kv.get("intruder").await.unwrap().is_none(),
        "monitor wrote desired state"
    );

    // It can read actual state.
    let actual = admin_js.get_key_value("berth_actual").await.unwrap();
    actual
        .put("n.c1", "{\"status\":\"running\"}".into())
        .await
        .unwrap();
    let mon_actual = mon_js.get_key_value("berth_actual").await.unwrap();
    let got = mon_actual.get("n.c1").await.expect("monitor reads state");
    assert_eq!(got.as_deref(), Some(&b"{\"status\":\"running\"}"[..]));

    // ... nor delete the event stream.
    let _ =
        tokio::time::timeout(Duration::from_secs(3), mon_js.delete_stream("BERTH_EVENTS")).await;
    assert!(
        admin_js.get_stream("BERTH_EVENTS").await.is_ok(),
        "monitor deleted the event stream"
    );
}

#[test]
fn a_container_directory_without_a_record_is_removed_at_the_next_start() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Berthd::start();
    let st = d
        .terminate(Duration::from_secs(15))
        .expect("berthd exit status");
    assert!(st.success(), "{}", d.log());
    // What a power loss can leave of a container removed at its exit (its record was never
    // synced), or a create cut short before its record was saved: its root filesystem and
    // bundle files, no record.
    let orphan = d.data_root().join("containers").join("ab".repeat(32));
    for sub in ["upper/etc", "work"] {
        std::fs::create_dir_all(orphan.join(sub)).unwrap();
    }
    std::fs::write(orphan.join("upper/etc/written"), b"gone").unwrap();
    std::fs::write(orphan.join("spec.json"), b"{}").unwrap();
    // Not a container's: left alone.
    let other = d.data_root().join("containers").join("not-an-id");
    std::fs::create_dir_all(&other).unwrap();
    d.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while orphan.exists() {
        assert!(
            Instant::now() < deadline,
            "orphan still there:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(other.is_dir());
    assert!(d
        .log()
        .contains("removed a container directory without a record"));
}

//! The identities on the bus, against a real berthd and its nats-server: what each may not do
//! is refused by the server (nothing is created or changed, read back as the admin, and the
//! server logs the violation), what each must do still works; identity files that others may
//! read are refused; a stream or bucket deleted under a running berthd comes back.

use berth_tests::daemon::{stderr, stdout, Berthd};
use futures::StreamExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A raw client with the identity in `creds` (and its own reply prefix, as berth's clients).
async fn connect(d: &Berthd, creds: &Path) -> async_nats::Client {
    let c = berth_bus::Credentials::read(creds).expect("identity file");
    let mut o = async_nats::ConnectOptions::new().user_and_password(c.user, c.password);
    if let Some(p) = c.inbox_prefix {
        o = o.custom_inbox_prefix(p);
    }
    o.connect(d.url()).await.expect("connect")
}

/// Wait until the server's log shows `user`'s `kind` violation ("Publish" or "Subscription")
/// on `subject`.
fn violation_logged(d: &Berthd, user: &str, kind: &str, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = d.nats_log();
        let found = log.lines().any(|l| {
            l.contains(&format!("user:{user}"))
                && l.contains(&format!("{kind} Violation"))
                && l.contains(&format!("Subject \"{subject}\""))
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} violation of {user} on {subject} in the server's log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request the server must drop: it is never answered.
async fn refused_request(c: &async_nats::Client, subject: &str, body: &str) {
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        c.request(subject.to_string(), body.to_string().into()),
    )
    .await;
    match r {
        Err(_) | Ok(Err(_)) => {}
        Ok(Ok(m)) => panic!(
            "{subject} was answered: {}",
            String::from_utf8_lossy(&m.payload)
        ),
    }
}

/// A Compose project the reconciler stores (its image is on a registry that is not there, so
/// nothing is pulled from anywhere).
fn project_file(dir: &Path, name: &str) -> String {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!("name: {name}\nservices:\n  a:\n    image: 127.0.0.1:9/berth-none:1\n"),
    )
    .unwrap();
    p.display().to_string()
}

fn ok(d: &Berthd, args: &[&str]) -> String {
    let o = d.berth(args);
    assert!(
        o.status.success(),
        "berth {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

#[tokio::test]
async fn forged_events_are_refused_for_the_cli_and_the_monitor() {
    let d = Berthd::start();
    let node = d.node().to_string();
    let forged = berth_bus::attrs! {"forged" => true};
    for (who, creds) in [
        ("berth-cli", d.cli_creds()),
        ("berth-monitor", d.monitor_creds()),
    ] {
        let c = connect(&d, &creds).await;
        let ev = berth_proto::Event {
            v: berth_proto::SCHEMA_VERSION,
            id: berth_bus::random_hex(24),
            time: berth_bus::now_rfc3339(),
            node: node.clone(),
            entity: "container".into(),
            action: "die".into(),
            name: format!("forged-by-{who}"),
            attrs: forged.clone(),
        };
        let subject = berth_proto::subjects::event(&node, "container", "die");
        c.publish(subject.clone(), serde_json::to_vec(&ev).unwrap().into())
            .await
            .unwrap();
        // Five tokens also match the stream's subjects, and the CLI's verb pattern's shape.
        let short = format!("berth.v1.events.{node}.supervisor");
        c.publish(short.clone(), "{}".into()).await.unwrap();
        c.flush().await.unwrap();
        violation_logged(&d, who, "Publish", &subject);
        violation_logged(&d, who, "Publish", &short);
    }
    // Nothing reached the stream: as the admin, and as `berth events` shows.
    let admin = connect(&d, &d.admin_creds()).await;
    let js = async_nats::jetstream::new(admin);
    let mut stream = js.get_stream("BERTH_EVENTS").await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    for subject in [
        berth_proto::subjects::event(&node, "container", "die"),
        format!("berth.v1.events.{node}.supervisor"),
    ] {
        assert!(
            stream
                .get_last_raw_message_by_subject(&subject)
                .await
                .is_err(),
            "a forged event on {subject} was stored ({messages} messages)"
        );
    }
    let shown = ok(&d, &["events", "--since", "5m", "--until", "0s"]);
    assert!(shown.contains("service.started"), "{shown}");
    assert!(!shown.contains("forged"), "{shown}");
}

#[tokio::test]
async fn only_the_reconciler_writes_desired_state() {
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let project = berth_tests::unique("idp").replace('-', "_");
    // Through the reconciler, the CLI's apply is stored (validated, with history).
    ok(&d, &["apply", "-f", &project_file(dir.path(), &project)]);
    let admin = async_nats::jetstream::new(connect(&d, &d.admin_creds()).await);
    let kv = admin.get_key_value("berth_desired").await.unwrap();
    let before = kv.entry(&project).await.unwrap().expect("applied");

    let services = d.data_root().join("auth/services.json");
    for (who, creds) in [
        ("berth-cli", d.cli_creds()),
        ("berth-monitor", d.monitor_creds()),
        ("berth-services", services),
    ] {
        let c = connect(&d, &creds).await;
        let put = format!("$KV.berth_desired.{project}");
        let intruder = format!("$KV.berth_desired.intruder_{}", who.replace('-', "_"));
        refused_request(&c, &put, "{\"spec\":\"forged\"}").await;
        refused_request(&c, &intruder, "{}").await;
        for api in [
            "$JS.API.STREAM.PURGE.KV_berth_desired",
            "$JS.API.STREAM.DELETE.KV_berth_desired",
        ] {
            refused_request(&c, api, "").await;
            violation_logged(&d, who, "Publish", api);
        }
        violation_logged(&d, who, "Publish", &put);
        violation_logged(&d, who, "Publish", &intruder);
    }
    // Read back as the admin: the same revision, nothing added, the bucket still there.
    let after = kv.entry(&project).await.unwrap().expect("still applied");
    assert_eq!(after.revision, before.revision, "desired state was written");
    assert_eq!(after.value, before.value);
    let mut keys = kv.keys().await.unwrap();
    while let Some(k) = keys.next().await {
        let k = k.unwrap();
        assert!(!k.starts_with("intruder"), "{k} was written");
    }
    // The CLI still reads it through the reconciler.
    assert!(ok(&d, &["ls"]).contains(&project));
}

#[tokio::test]
async fn the_cli_deletes_no_stream_and_takes_over_no_consumer() {
    let d = Berthd::start();
    let admin = async_nats::jetstream::new(connect(&d, &d.admin_creds()).await);
    // Another reader's consumer, with a name the CLI knows.
    let stream = admin.get_stream("BERTH_EVENTS").await.unwrap();
    let audit = format!("audit_{}", berth_bus::random_hex(6));
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some(audit.clone()),
            filter_subject: "berth.v1.events.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let c = connect(&d, &d.cli_creds()).await;
    let hijack = serde_json::json!({
        "stream_name": "BERTH_EVENTS",
        "config": {"name": audit, "durable_name": audit, "filter_subject": "berth.v1.events.none"},
    })
    .to_string();
    let unnamed = serde_json::json!({
        "stream_name": "BERTH_EVENTS",
        "config": {"name": audit, "filter_subject": "berth.v1.events.none"},
    })
    .to_string();
    let attempts = [
        (
            "$JS.API.STREAM.DELETE.BERTH_EVENTS".to_string(),
            String::new(),
        ),
        (
            "$JS.API.STREAM.PURGE.BERTH_EVENTS".to_string(),
            String::new(),
        ),
        (
            "$JS.API.STREAM.MSG.DELETE.BERTH_EVENTS".to_string(),
            "{\"seq\":1}".to_string(),
        ),
        ("$JS.API.CONSUMER.CREATE.BERTH_EVENTS".to_string(), unnamed),
        (
            format!("$JS.API.CONSUMER.CREATE.BERTH_EVENTS.{audit}.berth.v1.events.none"),
            hijack.clone(),
        ),
        (
            format!("$JS.API.CONSUMER.DURABLE.CREATE.BERTH_EVENTS.{audit}"),
            hijack,
        ),
        (
            format!("$JS.API.CONSUMER.DELETE.BERTH_EVENTS.{audit}"),
            String::new(),
        ),
        (
            "$JS.API.CONSUMER.LIST.BERTH_EVENTS".to_string(),
            String::new(),
        ),
        (
            "$JS.API.STREAM.CREATE.berth_intruder".to_string(),
            "{\"name\":\"berth_intruder\",\"subjects\":[\"intruder.>\"]}".to_string(),
        ),
    ];
    for (subject, body) in &attempts {
        refused_request(&c, subject, body).await;
        violation_logged(&d, "berth-cli", "Publish", subject);
    }
    // Read back as the admin: the stream, its first event and the consumer as they were.
    let mut stream = admin.get_stream("BERTH_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert!(info.state.messages > 0, "the stream was purged");
    assert_eq!(info.state.first_sequence, 1, "an event was deleted");
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&audit)
        .await
        .expect("the consumer is still there");
    let ci = consumer.info().await.unwrap();
    assert_eq!(ci.config.filter_subject, "berth.v1.events.>");
    assert_eq!(ci.config.durable_name.as_deref(), Some(audit.as_str()));
    assert!(admin.get_stream("berth_intruder").await.is_err());
    // What the CLI does with the stream still works: replay and follow.
    let shown = ok(&d, &["events", "--since", "5m", "--until", "0s"]);
    assert!(shown.contains("service.started"), "{shown}");
}

#[tokio::test]
async fn the_monitor_reads_no_one_elses_replies() {
    let d = Berthd::start();
    let mon = connect(&d, &d.monitor_creds()).await;
    let mut snoop = Vec::new();
    for s in ["_INBOX.>", "_INBOX_cli.>", "_INBOX_services.>", ">"] {
        snoop.push(mon.subscribe(s.to_string()).await.unwrap());
    }
    mon.flush().await.unwrap();
    for s in ["_INBOX.>", "_INBOX_cli.>", "_INBOX_services.>", ">"] {
        violation_logged(&d, "berth-monitor", "Subscription", s);
    }
    // Replies flow to the CLI, and to the admin, while the monitor listens.
    ok(&d, &["system", "info"]);
    let o = d.berth_as(&d.admin_creds(), &["system", "info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for mut sub in snoop {
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), sub.next()).await {
            panic!(
                "the monitor read {} on {}",
                String::from_utf8_lossy(&m.payload),
                m.subject
            );
        }
    }
    // It may still follow events and read state, on its own reply subjects.
    let o = d.berth_as(
        &d.monitor_creds(),
        &["events", "--since", "5m", "--until", "0s"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("service.started"), "{}", stdout(&o));
    let js = async_nats::jetstream::new(mon.clone());
    let kv = js.get_key_value("berth_actual").await.expect("reads state");
    assert!(kv.get("none").await.unwrap().is_none());
    // ... but not the services' idempotency records, nor call a verb.
    refused_request(&mon, "$JS.API.STREAM.INFO.KV_berth_idem", "").await;
    violation_logged(
        &d,
        "berth-monitor",
        "Publish",
        "$JS.API.STREAM.INFO.KV_berth_idem",
    );
    let o = d.berth_as(&d.monitor_creds(), &["--timeout", "2", "ps"]);
    assert!(!o.status.success(), "the monitor listed containers");
}

#[test]
fn every_identity_file_is_private_and_the_cli_uses_its_own_by_default() {
    use std::os::unix::fs::PermissionsExt;
    let d = Berthd::start();
    for id in berth_bus::Identity::ALL {
        let p = d.data_root().join("auth").join(id.file_name());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", p.display());
    }
    let auth = d.data_root().join("auth");
    let mode = std::fs::metadata(&auth).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", auth.display());

    // With no --creds, `berth` reads auth/cli.json under the data root ...
    let berth = |args: &[&str]| {
        Command::new(berth_tests::bin("berth"))
            .args(["--nats", &d.url(), "--node", d.node()])
            .args(args)
            .env_remove("BERTH_CONFIG")
            .env_remove("BERTH_NATS_CREDS")
            .env("BERTH_DATA_ROOT", d.data_root())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = berth(&["system", "info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // ... and refuses it once others may read it, in one line naming the file and the fix.
    let cli = d.cli_creds();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = berth(&["system", "info"]);
    assert!(!o.status.success(), "a loose credentials file was used");
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("chmod 600 {}", cli.display())),
        "{err}"
    );
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o600)).unwrap();
    ok(&d, &["system", "info"]);
}

/// Start berthd on `d`'s data root (stopped) and expect it to refuse, naming `fix`.
fn berthd_refuses(d: &Berthd, fix: &str) {
    let mut child = Command::new(berth_tests::bin("berthd"))
        .arg("--data-root")
        .arg(d.data_root())
        .arg("--run-dir")
        .arg(d.run_dir())
        .arg("--node")
        .arg(d.node())
        .arg("--nats-port")
        .arg(d.port.to_string())
        .env_remove("BERTH_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("berthd started with a loose identity ({fix})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(fix),
        "berthd's error does not say `{fix}`: {err}"
    );
    assert!(d
        .nats_pid()
        .is_none_or(|p| !Path::new(&format!("/proc/{p}")).exists()));
}

#[test]
fn berthd_refuses_an_identity_file_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Berthd::start();
    assert!(d
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    let monitor = d.monitor_creds();
    let before = std::fs::read(&monitor).unwrap();
    std::fs::set_permissions(&monitor, std::fs::Permissions::from_mode(0o644)).unwrap();
    berthd_refuses(&d, &format!("chmod 600 {}", monitor.display()));
    // Refused, not rewritten: the operator decides.
    assert_eq!(std::fs::read(&monitor).unwrap(), before);
    std::fs::set_permissions(&monitor, std::fs::Permissions::from_mode(0o600)).unwrap();
    d.spawn();
    ok(&d, &["system", "info"]);
}

#[test]
fn berthd_refuses_an_identity_directory_others_may_read() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Berthd::start();
    assert!(d
        .terminate(Duration::from_secs(15))
        .is_some_and(|s| s.success()));
    let auth = d.data_root().join("auth");
    for mode in [0o755, 0o770] {
        std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(mode)).unwrap();
        berthd_refuses(&d, &format!("chmod 700 {}", auth.display()));
    }
    std::fs::set_permissions(&auth, std::fs::Permissions::from_mode(0o700)).unwrap();
    d.spawn();
    ok(&d, &["system", "info"]);
}

#[tokio::test]
async fn a_deleted_stream_and_bucket_come_back_under_a_running_berthd() {
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let project = berth_tests::unique("idr").replace('-', "_");
    ok(&d, &["apply", "-f", &project_file(dir.path(), &project)]);
    let admin = async_nats::jetstream::new(connect(&d, &d.admin_creds()).await);
    admin.delete_stream("KV_berth_desired").await.unwrap();
    admin.delete_stream("BERTH_EVENTS").await.unwrap();

    // Within a few seconds the CLI's reads and writes work again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let again = format!("{project}_again");
    let file = project_file(dir.path(), &again);
    loop {
        let ls = d.berth(&["ls"]);
        let apply = d.berth(&["apply", "-f", &file]);
        let events = d.berth(&["events", "--since", "1m", "--until", "0s"]);
        if ls.status.success()
            && apply.status.success()
            && events.status.success()
            && stdout(&d.berth(&["ls"])).contains(&again)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not back after 10s: ls: {} apply: {} events: {}\n{}",
            stderr(&ls),
            stderr(&apply),
            stderr(&events),
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A project applied now has its event in the new stream; the log says what happened.
    let after = format!("{project}_after");
    ok(&d, &["apply", "-f", &project_file(dir.path(), &after)]);
    let shown = ok(&d, &["events", "--since", "1m", "--until", "0s"]);
    assert!(shown.contains(&after), "{shown}");
    let log = d.log();
    for what in ["stream BERTH_EVENTS", "bucket berth_desired"] {
        let n = log
            .lines()
            .filter(|l| l.contains(what) && l.contains("re-created"))
            .count();
        assert_eq!(
            n, 1,
            "the log says {n} times that the {what} was re-created:\n{log}"
        );
    }
}

/// The server lets a connection answer a request it received for two minutes only; a reply
/// that comes later (a long `stop`, `pull`, `apply --wait` or `logs`) must still reach the CLI.
#[test]
fn a_reply_after_more_than_two_minutes_reaches_the_cli() {
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    berth_tests::images::container_rootfs(&root);
    let name = berth_tests::unique("slowstop");
    let o = d.berth(&[
        "run",
        "-d",
        "--name",
        &name,
        "--rootfs",
        root.to_str().unwrap(),
        "sh",
        "-c",
        "trap '' TERM; while true; do sleep 1; done",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let began = Instant::now();
    let o = d.berth(&["stop", "-t", "130", &name]);
    let took = began.elapsed();
    let _ = d.berth_as(&d.admin_creds(), &["rm", "-f", &name]);
    assert!(o.status.success(), "after {took:?}: {}", stderr(&o));
    assert!(took >= Duration::from_secs(125), "stopped after {took:?}");
    let log = d.nats_log();
    assert!(
        !log.lines()
            .any(|l| l.contains("Publish Violation") && l.contains("_INBOX")),
        "{log}"
    );
}

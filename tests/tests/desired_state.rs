//! Desired state through the real daemon and CLI: a spec that a create would refuse is refused
//! by `plan` and `apply` first (with its file position; nothing stored, the running project
//! untouched), and concurrent applies of one project are compare-and-set on the revision they
//! were planned against (one stored per base revision, the others told both revisions). As
//! root for the first (containers on the real kernel).

use berth_bus::{Bus, ConnectOptions, RequestOptions};
use berth_proto::reconciler::{
    self as rp, ApplyReply, ApplyRequest, BaseRevision, RollbackRequest, StaleBase,
};
use berth_proto::{BerthError, ErrorCode, Service};
use berth_tests::daemon::{stderr, stdout, Berthd};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};

macro_rules! need_root {
    () => {
        if !berth_tests::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

fn ok(d: &Berthd, args: &[&str]) -> String {
    let o = d.berth(args);
    assert!(
        o.status.success(),
        "berth {args:?} failed: {}{}",
        stdout(&o),
        stderr(&o)
    );
    format!("{}{}", stdout(&o), stderr(&o))
}

/// stdout of a successful CLI run, as JSON.
fn json(d: &Berthd, args: &[&str]) -> Value {
    let o = d.berth(args);
    assert!(o.status.success(), "berth {args:?}: {}", stderr(&o));
    serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)))
}

/// The project's revisions (`berth history --json`).
fn revisions(d: &Berthd, project: &str) -> Vec<u64> {
    json(d, &["--json", "history", project])["revisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["revision"].as_u64().unwrap())
        .collect()
}

/// (id, status) of a container by name.
fn container(d: &Berthd, name: &str) -> Option<(String, String)> {
    json(d, &["ps", "-a", "--json"])
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
}

async fn bus(d: &Berthd) -> Bus {
    Bus::connect(&ConnectOptions {
        url: d.url(),
        creds: Some(d.admin_creds()),
        ca: None,
        name: "desired-state-test".into(),
        node: d.node().to_string(),
        persistent: false,
    })
    .await
    .expect("connect to berthd's nats-server")
}

async fn call<Req: serde::Serialize>(
    bus: &Bus,
    verb: &str,
    req: &Req,
) -> Result<ApplyReply, BerthError> {
    bus.call(
        Service::Reconciler,
        verb,
        req,
        &RequestOptions::timeout(Duration::from_secs(10)),
    )
    .await
    .map_err(|e| {
        e.remote()
            .cloned()
            .unwrap_or_else(|| panic!("bus error: {e}"))
    })
}

/// A spec that would only fail at create time, applied over a good running project: `plan`
/// and `apply` refuse it with the position of the bad value, nothing is stored, the running
/// container is the same and still running. A hand-made request that skips the CLI's loader
/// (an older client) is refused by the reconciler with the same check.
#[test]
fn a_bad_spec_over_a_running_project_is_refused_and_stores_nothing() {
    need_root!();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    berth_tests::images::container_rootfs(&root);
    let d = Berthd::start();
    let project = berth_tests::unique("bad");
    let good = format!(
        "name: {project}\nservices:\n  web:\n    x-berth: {{rootfs: {}}}\n    command: [sleep, '3600']\n",
        root.display()
    );
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let f = write("good.yaml", &good);
    ok(&d, &["apply", "-f", &f, "--wait", "--wait-timeout", "60s"]);
    let web = format!("{project}-web-1");
    let (id, status) = container(&d, &web).expect("the web container");
    assert_eq!(status, "running");
    let before = revisions(&d, &project);
    assert_eq!(before.len(), 1);

    // (file, the line:column and message it must fail with)
    let bad = [
        (
            "memory.yaml",
            format!("{good}    deploy: {{resources: {{limits: {{memory: 1k}}}}}}\n"),
            "6:35: service web: deploy.resources.limits.memory: 1024 bytes is below the minimum of 6 MiB (6291456 bytes) a container can start with".to_string(),
        ),
        (
            "image.yaml",
            format!("{good}  api:\n    image: Foo/Bar\n"),
            "7:5: service api: image: invalid reference \"Foo/Bar\": repository name \"Bar\" must be lowercase".to_string(),
        ),
        (
            "signal.yaml",
            format!("{good}    stop_signal: SIGRTMIN+3\n"),
            "6:5: service web: stop_signal: unknown signal \"SIGRTMIN+3\" (e.g. SIGTERM, SIGINT, 15)".to_string(),
        ),
    ];
    for (name, text, want) in &bad {
        let f = write(name, text);
        for verb in ["plan", "apply"] {
            let o = d.berth(&[verb, "-f", &f]);
            assert_eq!(o.status.code(), Some(1), "{verb} {name}: {}", stderr(&o));
            assert_eq!(
                stderr(&o).trim(),
                format!("berth: {f}:{want}"),
                "{verb} {name}"
            );
        }
        assert_eq!(revisions(&d, &project), before, "{name}: nothing stored");
    }

    // A request that skipped the loader: the reconciler's own check (the supervisor's).
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = bus(&d).await;
        let spec = serde_json::json!({
            "name": project,
            "services": {"web": {
                "rootfs": root.display().to_string(),
                "command": ["sleep", "3600"],
                "limits": {"memory_bytes": 1024},
            }},
        });
        for verb in [rp::PLAN, rp::APPLY] {
            let r: Result<Value, _> = bus
                .call(
                    Service::Reconciler,
                    verb,
                    &ApplyRequest {
                        project: project.clone(),
                        spec: spec.clone(),
                        files: vec![],
                        base: None,
                    },
                    &RequestOptions::timeout(Duration::from_secs(10)),
                )
                .await;
            let e = r.unwrap_err();
            let e = e.remote().expect("a refusal");
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{verb}: {e:?}");
            assert!(
                e.message.starts_with(
                    "service web: resources.memory_bytes: 1024 bytes is below the minimum of 6 MiB"
                ),
                "{verb}: {e:?}"
            );
        }
    });
    assert_eq!(revisions(&d, &project), before, "nothing stored");

    // The running service was never touched.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(container(&d, &web), Some((id, "running".to_string())));
    ok(&d, &["down", &project]);
}

/// The spec of version `v` of a project: no containers (replicas 0), so that only what is
/// stored is at stake.
fn version(project: &str, v: usize) -> String {
    format!(
        "name: {project}\nservices:\n  s{v}:\n    image: busybox:latest\n    environment: {{V: '{v}'}}\n    deploy: {{replicas: 0}}\n"
    )
}

/// Run `berth apply` for each file at once; the outputs in the files' order.
fn apply_all(d: &Berthd, files: &[String], base: Option<&str>) -> Vec<Output> {
    std::thread::scope(|s| {
        let hs: Vec<_> = files
            .iter()
            .map(|f| {
                s.spawn(move || {
                    let mut args = vec!["apply", "-f", f.as_str()];
                    if let Some(b) = base {
                        args.extend(["--base", b]);
                    }
                    d.berth(&args)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// The revision a successful `apply` printed (`project P: applied as revision N`).
fn applied_revision(o: &Output) -> u64 {
    let e = stderr(o);
    e.trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {e:?}"))
}

/// Split the outcomes of a round of concurrent applies: the winners' revisions, and each
/// loser's (expected, now) from its one-line conflict.
fn outcomes(project: &str, outs: &[Output]) -> (Vec<u64>, Vec<(String, String)>) {
    let mut won = Vec::new();
    let mut lost = Vec::new();
    let prefix = format!(
        "berth: another apply of {project} was stored first, nothing was changed (plan and apply again): expected revision "
    );
    for o in outs {
        if o.status.success() {
            won.push(applied_revision(o));
            continue;
        }
        assert_eq!(o.status.code(), Some(1));
        let e = stderr(o);
        assert_eq!(e.trim().lines().count(), 1, "one line: {e:?}");
        let rest = e
            .trim()
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("not the conflict: {e:?}"));
        let (expected, now) = rest.split_once(", now ").expect("both revisions");
        lost.push((expected.to_string(), now.to_string()));
    }
    (won, lost)
}

/// 8 concurrent applies of different versions of one project from the same base revision
/// (`--base`): exactly one is stored, the 7 others fail with the conflict naming the base and
/// the winner's revision, and the history has exactly one new revision; first for a new
/// project (`--base none`), then on top of it. Without `--base` (each apply reads the revision
/// itself) no change is lost either: one stored per base revision. `rollback` on a stale base
/// is the same conflict; a request without a base (an older client) still stores.
#[test]
fn concurrent_applies_from_one_base_store_exactly_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = Berthd::start();
    let project = berth_tests::unique("race");
    let files = |round: usize| -> Vec<String> {
        (0..8)
            .map(|i| {
                let p = dir.path().join(format!("r{round}-v{i}.yaml"));
                std::fs::write(&p, version(&project, round * 10 + i)).unwrap();
                p.display().to_string()
            })
            .collect()
    };

    // A new project: all from "none".
    let (won, lost) = outcomes(&project, &apply_all(&d, &files(0), Some("none")));
    assert_eq!(won.len(), 1, "exactly one stored: {won:?} {lost:?}");
    let r1 = won[0];
    assert_eq!(lost.len(), 7);
    for l in &lost {
        assert_eq!(l, &("none".to_string(), r1.to_string()));
    }
    assert_eq!(revisions(&d, &project), [r1]);

    // On top of r1.
    let base = r1.to_string();
    let (won, lost) = outcomes(&project, &apply_all(&d, &files(1), Some(&base)));
    assert_eq!(won.len(), 1, "exactly one stored: {won:?} {lost:?}");
    let r2 = won[0];
    assert_eq!(lost.len(), 7);
    for l in &lost {
        assert_eq!(l, &(r1.to_string(), r2.to_string()));
    }
    assert_eq!(revisions(&d, &project), [r1, r2]);
    // `plan` says what it planned against.
    let o = d.berth(&["plan", "-f", &files(1)[0]]);
    assert!(
        stderr(&o).contains(&format!("planned against revision {r2}")),
        "{}",
        stderr(&o)
    );

    // Each apply reads its own base: every stored revision built on the one before, every
    // loser names a base that was current and a later revision.
    let (won, lost) = outcomes(&project, &apply_all(&d, &files(2), None));
    assert!(!won.is_empty());
    assert_eq!(won.len() + lost.len(), 8);
    let h = revisions(&d, &project);
    assert_eq!(
        h.len(),
        2 + won.len(),
        "one revision per stored apply: {h:?}"
    );
    let mut sorted = won.clone();
    sorted.sort();
    assert_eq!(&h[2..], &sorted[..]);
    for (expected, now) in &lost {
        let (e, n): (u64, u64) = (expected.parse().unwrap(), now.parse().unwrap());
        assert!(
            h.contains(&e) && h.contains(&n) && n > e,
            "{e} -> {n} in {h:?}"
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = bus(&d).await;
        let last = *h.last().unwrap();
        // rollback from a revision that is no longer the last: the conflict, nothing stored.
        let e = call(
            &bus,
            rp::ROLLBACK,
            &RollbackRequest {
                project: project.clone(),
                to: Some(r1),
                base: Some(BaseRevision::At(r2)),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(
            StaleBase::from_error(&e),
            Some(StaleBase {
                expected: BaseRevision::At(r2),
                now: BaseRevision::At(last)
            }),
            "{e:?}"
        );
        // An apply without a base (an older client) builds on the last revision.
        let a = call(
            &bus,
            rp::APPLY,
            &serde_json::json!({"project": project, "spec": {"name": project, "services": {"old": {"image": "busybox:latest", "replicas": 0}}}}),
        )
        .await
        .unwrap();
        assert!(a.changed && a.revision > last);
    });
    assert_eq!(revisions(&d, &project).len(), h.len() + 1);
    // rollback through the CLI reads the base itself.
    let out = ok(&d, &["rollback", &project, "--to", &r1.to_string()]);
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(revisions(&d, &project).len(), h.len() + 2);
    let t = Instant::now();
    ok(&d, &["down", &project]);
    assert!(t.elapsed() < Duration::from_secs(30));
}

//! Desired state against a real nats-server: the reconciler service in-process (no supervisor,
//! so no containers: only what it stores), driven over the bus. apply stores whole revisions
//! by compare-and-set, history lists them, rollback re-applies one, and concurrent writers get
//! a clear conflict and never mix their specs.

use berth_bus::{RequestOptions, ServiceContext};
use berth_proto::reconciler::{
    ApplyReply, ApplyRequest, BaseRevision, DesiredRecord, HistoryReply, ProjectRequest,
    RollbackRequest, StaleBase,
};
use berth_proto::{BerthError, ErrorCode, Service};
use berth_reconciler::desired::{Base, Desired};
use berth_tests::nats::NatsServer;
use serde_json::{json, Value};
use std::time::Duration;

/// A validated project as the CLI sends it (`berth_spec::Project` as JSON): one service per
/// name, each running `sleep` in busybox with `V` in its environment.
fn spec(project: &str, services: &[&str], v: &str) -> Value {
    let services: serde_json::Map<String, Value> = services
        .iter()
        .map(|s| {
            (
                s.to_string(),
                json!({"image": "busybox:latest", "command": ["sleep", "3600"], "environment": {"V": v}}),
            )
        })
        .collect();
    json!({"name": project, "services": services})
}

struct Reconciler {
    ctx: ServiceContext,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.ctx.shutdown.cancel();
        self.task.abort();
    }
}

async fn reconciler(nats: &NatsServer, dir: &std::path::Path) -> Reconciler {
    let ctx = nats.context("n1", dir).await;
    let task = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            berth_reconciler::run(ctx).await.expect("reconciler runs");
        })
    };
    // Wait until it answers.
    let bus = nats.bus("n1").await;
    for _ in 0..100 {
        let r: Result<Value, _> = bus
            .call(
                Service::Reconciler,
                "info",
                &json!({}),
                &RequestOptions::timeout(Duration::from_secs(1)),
            )
            .await;
        if r.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Reconciler { ctx, task }
}

fn opts() -> RequestOptions {
    RequestOptions::timeout(Duration::from_secs(10))
}

async fn apply(bus: &berth_bus::Bus, project: &str, spec: Value) -> Result<ApplyReply, BerthError> {
    bus.ask_local::<berth_proto::reconciler::verbs::Apply>(
        &ApplyRequest {
            project: project.into(),
            spec,
            files: vec!["compose.yaml".into()],
            base: None,
        },
        &opts(),
    )
    .await
    .map_err(|e| {
        e.remote()
            .cloned()
            .unwrap_or_else(|| panic!("bus error: {e}"))
    })
}

async fn history(bus: &berth_bus::Bus, project: &str) -> Result<HistoryReply, BerthError> {
    bus.ask_local::<berth_proto::reconciler::verbs::History>(
        &ProjectRequest {
            project: project.into(),
        },
        &opts(),
    )
    .await
    .map_err(|e| {
        e.remote()
            .cloned()
            .unwrap_or_else(|| panic!("bus error: {e}"))
    })
}

async fn rollback(
    bus: &berth_bus::Bus,
    project: &str,
    to: Option<u64>,
) -> Result<ApplyReply, BerthError> {
    bus.ask_local::<berth_proto::reconciler::verbs::Rollback>(
        &RollbackRequest {
            project: project.into(),
            to,
            base: None,
        },
        &opts(),
    )
    .await
    .map_err(|e| {
        e.remote()
            .cloned()
            .unwrap_or_else(|| panic!("bus error: {e}"))
    })
}

/// The record stored at the project's current revision.
async fn stored(bus: &berth_bus::Bus, project: &str) -> (u64, DesiredRecord) {
    let kv = berth_bus::infra::desired(bus).await.unwrap();
    let e = kv.entry(project).await.unwrap().expect("a stored revision");
    (e.revision, serde_json::from_slice(&e.value).unwrap())
}

#[tokio::test]
async fn apply_history_and_rollback_store_whole_revisions() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let _r = reconciler(&nats, dir.path()).await;
    let bus = nats.bus("n1").await;

    let v1 = spec("demo", &["web", "db"], "1");
    let a = apply(&bus, "demo", v1.clone()).await.unwrap();
    assert!(a.changed);
    let r1 = a.revision;
    // The same spec again: nothing stored.
    let again = apply(&bus, "demo", v1.clone()).await.unwrap();
    assert_eq!((again.revision, again.changed), (r1, false));

    let v2 = spec("demo", &["web"], "2");
    let r2 = apply(&bus, "demo", v2.clone()).await.unwrap().revision;
    assert!(r2 > r1);
    let (rev, rec) = stored(&bus, "demo").await;
    assert_eq!((rev, &rec.spec), (r2, &v2));
    assert_eq!(rec.files, ["compose.yaml"]);

    let h = history(&bus, "demo").await.unwrap();
    let revs: Vec<(u64, Vec<String>)> = h
        .revisions
        .iter()
        .map(|r| (r.revision, r.services.clone()))
        .collect();
    assert_eq!(
        revs,
        [
            (r1, vec!["db".to_string(), "web".to_string()]),
            (r2, vec!["web".to_string()])
        ]
    );

    // rollback: the revision before the current one, stored as a new revision.
    let rb = rollback(&bus, "demo", None).await.unwrap();
    assert!(rb.changed && rb.revision > r2);
    let (_, rec) = stored(&bus, "demo").await;
    assert_eq!(rec.spec, v1);
    assert_eq!(rec.rollback_of, Some(r1));
    // rollback --to a given revision.
    let rb2 = rollback(&bus, "demo", Some(r2)).await.unwrap();
    let (_, rec) = stored(&bus, "demo").await;
    assert_eq!(rec.spec, v2);
    assert_eq!(rec.rollback_of, Some(r2));
    let h = history(&bus, "demo").await.unwrap();
    assert_eq!(h.revisions.len(), 4);
    assert_eq!(h.revisions[3].revision, rb2.revision);
    assert_eq!(h.revisions[3].rollback_of, Some(r2));

    // Clear refusals.
    let e = rollback(&bus, "demo", Some(9999)).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(
        e.message
            .contains("project demo has no applied revision 9999"),
        "{e:?}"
    );
    let e = history(&bus, "nope").await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(
        e.message.contains("project nope has no desired state"),
        "{e:?}"
    );
    let e = rollback(&bus, "nope", None).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::NotFound);

    // A spec that is not a berth project is refused before anything is stored.
    let e = apply(&bus, "demo", json!({"services": {"web": {"image": 5}}}))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("is not a berth project"), "{e:?}");
    assert_eq!(stored(&bus, "demo").await.0, rb2.revision);
}

/// Two writers that read the same revision: the first write wins, the second gets a clear
/// conflict and stores nothing (deterministic: both reads happen before either write).
#[tokio::test]
async fn the_second_of_two_writers_from_one_revision_gets_a_conflict() {
    let nats = NatsServer::start();
    let a = Desired::new(
        berth_bus::infra::desired(&nats.bus("a").await)
            .await
            .unwrap(),
    );
    let b = Desired::new(
        berth_bus::infra::desired(&nats.bus("b").await)
            .await
            .unwrap(),
    );
    let record = |v: &str| DesiredRecord {
        project: "race".into(),
        spec: spec("race", &["s"], v),
        applied_at: berth_bus::now_rfc3339(),
        files: vec![],
        rollback_of: None,
    };

    // A new project: both see no key; only one create succeeds.
    let (ba, bb) = (a.base("race").await.unwrap(), b.base("race").await.unwrap());
    assert!(matches!(ba, Base::New) && matches!(bb, Base::New));
    let r1 = a.write(&record("a1"), &ba).await.unwrap();
    let e = b.write(&record("b1"), &bb).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(
        e.to_string(),
        format!("another apply of race was stored first, nothing was changed (plan and apply again) (conflict): expected revision none, now {r1}")
    );

    // An existing project: both read revision r1; the second update is refused.
    let (ba, bb) = (a.base("race").await.unwrap(), b.base("race").await.unwrap());
    assert_eq!((ba.revision(), bb.revision()), (Some(r1), Some(r1)));
    let r2 = b.write(&record("b2"), &bb).await.unwrap();
    let e = a.write(&record("a2"), &ba).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert_eq!(
        StaleBase::from_error(&e),
        Some(StaleBase {
            expected: BaseRevision::At(r1),
            now: BaseRevision::At(r2)
        }),
        "{e:?}"
    );

    let cur = a.current("race").await.unwrap().unwrap();
    assert_eq!(cur.revision, r2);
    assert_eq!(cur.record.spec, spec("race", &["s"], "b2"));
    let h = a.history("race").await.unwrap();
    let values: Vec<Value> = h
        .iter()
        .map(|(_, r)| r.as_ref().unwrap().spec["services"]["s"]["environment"]["V"].clone())
        .collect();
    assert_eq!(values, [json!("a1"), json!("b2")]);

    // After a take-down (a delete marker), a write must still build on the marker.
    assert!(a.delete("race").await.unwrap());
    let base = b.base("race").await.unwrap();
    assert!(matches!(base, Base::Deleted(_)));
    let r = b.write(&record("b3"), &base).await.unwrap();
    assert_eq!(b.current("race").await.unwrap().unwrap().revision, r);
}

/// Many applies of different specs at once over the bus: each one either stores one whole
/// revision or gets the conflict error; every stored revision is exactly one of the specs.
#[tokio::test]
async fn concurrent_applies_never_mix() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let _r = reconciler(&nats, dir.path()).await;
    let mut buses = Vec::new();
    for i in 0..8 {
        buses.push(nats.bus(&format!("c{i}")).await);
    }
    let specs: Vec<Value> = (0..8)
        .map(|i| spec("race", &[&format!("s{i}"), "common"], &i.to_string()))
        .collect();
    let results = futures::future::join_all(buses.iter().zip(&specs).map(|(bus, s)| async move {
        bus.ask::<berth_proto::reconciler::verbs::Apply>(
            "_",
            &ApplyRequest {
                project: "race".into(),
                spec: s.clone(),
                files: vec![],
                base: None,
            },
            &opts(),
        )
        .await
    }))
    .await;
    let mut ok = 0;
    for r in &results {
        match r {
            Ok(a) => {
                assert!(a.changed);
                ok += 1;
            }
            Err(e) => {
                let e = e.remote().unwrap_or_else(|| panic!("bus error: {e}"));
                assert_eq!(e.code, ErrorCode::Conflict, "{e:?}");
                assert!(e.message.contains("another apply of race was stored first"));
            }
        }
    }
    assert!(ok >= 1);
    let h = history(&buses[0], "race").await.unwrap();
    assert_eq!(h.revisions.len(), ok, "one revision per successful apply");
    for r in &h.revisions {
        assert_eq!(
            r.services.len(),
            2,
            "a revision holds one whole spec: {r:?}"
        );
    }
    let d = Desired::new(berth_bus::infra::desired(&buses[0]).await.unwrap());
    for (info, rec) in d.history("race").await.unwrap() {
        let rec = rec.expect("applied, not deleted");
        assert!(
            specs.contains(&rec.spec),
            "revision {} is exactly one of the applied specs: {}",
            info.revision,
            rec.spec
        );
    }
    eprintln!("{ok} of 8 concurrent applies stored, the others got a conflict");
}

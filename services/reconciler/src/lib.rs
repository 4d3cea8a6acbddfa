//! The reconciler service of berth: desired state per project (Compose specs, stored with
//! history in the `berth_desired` bucket) and the loop that converges the node's containers
//! toward it. See docs/reconciler.md.
//!
//! - `desired`: the bucket (apply by compare-and-set, history, delete).
//! - `translate`: a validated Compose project → the containers it means ([`plan::DesiredProject`]).
//! - `plan`: desired vs actual → steps (pure logic; also the `plan` verb's dry run).
//! - `converge`: carrying out steps through the supervisor, with backoff and events.

pub mod converge;
pub mod desired;
pub mod plan;
pub mod translate;

use berth_bus::{attrs, serve, Router, ServiceContext};
use berth_proto::reconciler::{
    ApplyReply, ApplyRequest, BaseRevision, DesiredRecord, DownReply, DownRequest, HistoryReply,
    LsReply, PlanReply, PlanRequest, PlanStep, ProjectRequest, ProjectStatus, RollbackRequest,
};
use berth_proto::{BerthError, Service};
use converge::Converger;
use desired::Desired;
use futures::StreamExt;
use plan::DesiredProject;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};

/// How often the loop looks for drift when nothing wakes it.
const TICK: Duration = Duration::from_secs(2);

struct State {
    ctx: ServiceContext,
    desired: Desired,
    converger: Mutex<Converger>,
    wake: Notify,
    last_error: Mutex<HashMap<String, String>>,
}

/// Serve the reconciler's verbs and run its loop until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let kv = berth_bus::infra::desired(&ctx.bus).await?;
    let st = Arc::new(State {
        desired: Desired::new(kv),
        converger: Mutex::new(Converger::new(ctx.bus.clone(), ctx.bus.node().to_string())),
        wake: Notify::new(),
        last_error: Mutex::new(HashMap::new()),
        ctx: ctx.clone(),
    });

    let router = Router::new()
        .verb::<berth_proto::reconciler::verbs::Apply, _, _>({
            let st = st.clone();
            move |r: ApplyRequest| {
                let st = st.clone();
                async move { apply(&st, r.project, r.spec, r.files, None, r.base).await }
            }
        })
        .verb::<berth_proto::reconciler::verbs::Plan, _, _>({
            let st = st.clone();
            move |r: PlanRequest| {
                let st = st.clone();
                async move { dry_run(&st, r).await }
            }
        })
        .verb::<berth_proto::reconciler::verbs::Down, _, _>({
            let st = st.clone();
            move |r: DownRequest| {
                let st = st.clone();
                async move { down(&st, r.project, r.volumes).await }
            }
        })
        .verb::<berth_proto::reconciler::verbs::History, _, _>({
            let st = st.clone();
            move |r: ProjectRequest| {
                let st = st.clone();
                async move {
                    let revisions = st.desired.history(&r.project).await?;
                    Ok(HistoryReply {
                        project: r.project,
                        revisions: revisions.into_iter().map(|(i, _)| i).collect(),
                    })
                }
            }
        })
        .verb::<berth_proto::reconciler::verbs::Rollback, _, _>({
            let st = st.clone();
            move |r: RollbackRequest| {
                let st = st.clone();
                async move { rollback(&st, r).await }
            }
        })
        .verb::<berth_proto::reconciler::verbs::Ls, _, _>({
            let st = st.clone();
            move |_r: berth_proto::Empty| {
                let st = st.clone();
                async move { ls(&st).await }
            }
        });

    let looper = tokio::spawn(run_loop(st.clone()));
    let r = serve(&ctx, Service::Reconciler, router).await;
    looper.abort();
    let _ = looper.await;
    r?;
    Ok(())
}

async fn apply(
    st: &State,
    project: String,
    spec: serde_json::Value,
    files: Vec<String>,
    rollback_of: Option<u64>,
    base: Option<BaseRevision>,
) -> Result<ApplyReply, BerthError> {
    // Refuse what the loop could not carry out, before storing anything.
    translate::check(&project, &translate::desired(&project, 0, &spec)?)?;
    let record = DesiredRecord {
        project: project.clone(),
        spec,
        applied_at: berth_bus::now_rfc3339(),
        files,
        rollback_of,
    };
    let (revision, changed) = st.desired.apply(&record, base).await?;
    if changed {
        st.ctx
            .bus
            .emit(
                "spec",
                "applied",
                &project,
                attrs! {"project" => project, "revision" => revision},
            )
            .await;
    }
    st.wake.notify_one();
    Ok(ApplyReply {
        project,
        revision,
        changed,
    })
}

async fn dry_run(st: &State, r: PlanRequest) -> Result<PlanReply, BerthError> {
    let d = translate::desired(&r.project, 0, &r.spec)?;
    translate::check(&r.project, &d)?;
    let base = st.desired.base(&r.project).await?.as_base();
    let actual = st
        .converger
        .lock()
        .await
        .actual(&r.project)
        .await
        .map_err(|e| BerthError::unavailable(format!("asking the supervisor: {e}")))?;
    let p = plan::plan(&d, &actual, false);
    Ok(PlanReply {
        project: r.project,
        steps: p
            .steps
            .iter()
            .map(|a| PlanStep {
                action: a.kind().to_string(),
                container: a.name().to_string(),
                reason: match a {
                    plan::Action::Create { .. } => "missing".to_string(),
                    plan::Action::Replace { reason, .. }
                    | plan::Action::Remove { reason, .. }
                    | plan::Action::Start { reason, .. } => reason.clone(),
                },
            })
            .collect(),
        base: Some(base),
    })
}

/// The containers, networks and volumes of the last spec applied to `project` (taken down
/// or not), if any.
async fn last_desired(st: &State, project: &str) -> Option<DesiredProject> {
    let h = st.desired.history(project).await.ok()?;
    let (info, rec) = h.into_iter().rev().find(|(_, r)| r.is_some())?;
    translate::desired(project, info.revision, &rec?.spec).ok()
}

async fn down(st: &State, project: String, volumes: bool) -> Result<DownReply, BerthError> {
    st.desired.delete(&project).await?;
    let last = last_desired(st, &project).await;
    let removed = st
        .converger
        .lock()
        .await
        .remove_project(&project, last.as_ref(), volumes)
        .await
        .map_err(|e| BerthError::unavailable(format!("taking {project} down: {e}")))?;
    st.ctx
        .bus
        .emit(
            "spec",
            "removed",
            &project,
            attrs! {"project" => project, "removed" => removed},
        )
        .await;
    Ok(DownReply { project, removed })
}

async fn rollback(st: &State, r: RollbackRequest) -> Result<ApplyReply, BerthError> {
    let history = st.desired.history(&r.project).await?;
    let current = st.desired.current(&r.project).await?.map(|c| c.revision);
    let target = match r.to {
        Some(rev) => history
            .iter()
            .find(|(i, rec)| i.revision == rev && rec.is_some())
            .ok_or_else(|| {
                BerthError::not_found(format!(
                    "project {} has no applied revision {rev} (see berth history {})",
                    r.project, r.project
                ))
            })?,
        None => history
            .iter()
            .rev()
            .filter(|(i, rec)| rec.is_some() && Some(i.revision) != current)
            .find(|(i, _)| current.map(|c| i.revision < c).unwrap_or(true))
            .ok_or_else(|| {
                BerthError::precondition(format!("project {} has no earlier revision", r.project))
            })?,
    };
    let rec = target.1.clone().expect("filtered on Some");
    apply(
        st,
        r.project,
        rec.spec,
        rec.files,
        Some(target.0.revision),
        r.base,
    )
    .await
}

async fn ls(st: &State) -> Result<LsReply, BerthError> {
    let mut projects = Vec::new();
    let errors = st.last_error.lock().await.clone();
    for (name, revision, rec) in st.desired.all().await? {
        let Some(rec) = rec else { continue };
        let d = translate::desired(&name, revision, &rec.spec)?;
        let actual = st
            .converger
            .lock()
            .await
            .actual(&name)
            .await
            .map_err(|e| BerthError::unavailable(format!("asking the supervisor: {e}")))?;
        let p = plan::plan(&d, &actual, true);
        projects.push(ProjectStatus {
            project: name.clone(),
            revision,
            services: d.services.len(),
            desired_containers: d.services.iter().map(|s| s.replicas as usize).sum(),
            running_containers: actual
                .iter()
                .filter(|c| c.status == berth_proto::supervisor::ContainerStatus::Running)
                .count(),
            converged: p.is_converged(),
            last_error: errors.get(&name).cloned(),
        });
    }
    Ok(LsReply { projects })
}

/// Whether a container event is about a container of a project (labelled `berth.project`, as
/// every container the reconciler makes is).
fn of_a_project(payload: &[u8]) -> bool {
    serde_json::from_slice::<berth_proto::Event>(payload).is_ok_and(|ev| {
        ev.attrs
            .get("labels")
            .and_then(|l| l.get(plan::LABEL_PROJECT))
            .is_some()
    })
}

/// Wake on desired-state changes, project containers' events, or the tick; then one pass per
/// project.
async fn run_loop(st: Arc<State>) {
    // Desired-state changes.
    {
        let st = st.clone();
        tokio::spawn(async move {
            loop {
                match st.desired.store().watch_all().await {
                    Ok(mut w) => {
                        while let Some(e) = w.next().await {
                            if e.is_err() {
                                break;
                            }
                            st.wake.notify_one();
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%e, "watching desired state");
                        // The bucket may be gone: the keeper looks and re-creates it.
                        st.ctx.bus.report_missing();
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    // Events of a project's containers anywhere: drift is corrected at once, not at the next
    // tick. Those of other containers (a `berth run`) wake nothing: a pass reads the whole
    // desired state.
    {
        let st = st.clone();
        tokio::spawn(async move {
            let subject = format!("{}.*.container.>", berth_proto::subjects::EVENTS_PREFIX);
            loop {
                match st.ctx.bus.client().subscribe(subject.clone()).await {
                    Ok(mut sub) => {
                        while let Some(m) = sub.next().await {
                            if of_a_project(&m.payload) {
                                st.wake.notify_one();
                            }
                        }
                    }
                    Err(e) => tracing::warn!(%e, "subscribing to container events"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
    let mut gone: std::collections::HashSet<String> = Default::default();
    loop {
        tokio::select! {
            _ = st.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        // Let a burst of wake-ups settle into one pass.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let projects = match st.desired.all().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%e, "reading desired state");
                st.ctx.bus.report_missing();
                continue;
            }
        };
        for (name, revision, rec) in projects {
            let mut conv = st.converger.lock().await;
            match rec {
                None => {
                    // Taken down: make sure nothing of it is left (once).
                    if gone.insert(name.clone()) {
                        let last = last_desired(&st, &name).await;
                        if let Err(e) = conv.remove_project(&name, last.as_ref(), false).await {
                            tracing::warn!(project = %name, %e, "removing a deleted project");
                            gone.remove(&name);
                        }
                    }
                }
                Some(rec) => {
                    gone.remove(&name);
                    let d = match translate::desired(&name, revision, &rec.spec) {
                        Ok(d) => d,
                        Err(e) => {
                            st.last_error
                                .lock()
                                .await
                                .insert(name.clone(), e.message.clone());
                            continue;
                        }
                    };
                    match conv.pass(&d).await {
                        Ok(out) => {
                            let mut errs = st.last_error.lock().await;
                            match out.failed.first() {
                                Some((c, e)) => {
                                    errs.insert(name.clone(), format!("{c}: {e}"));
                                }
                                None if out.converged() => {
                                    errs.remove(&name);
                                }
                                None => {}
                            }
                            if out.done > 0 {
                                // Something changed: look again soon (dependencies may be met).
                                st.wake.notify_one();
                            }
                        }
                        Err(e) => {
                            st.last_error
                                .lock()
                                .await
                                .insert(name.clone(), format!("asking the supervisor: {e}"));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::of_a_project;

    #[test]
    fn only_project_containers_events_wake_the_loop() {
        let ev = |attrs: &str| {
            format!(
                r#"{{"v":1,"id":"x","time":"t","node":"n","entity":"container","action":"removed","name":"c","attrs":{attrs}}}"#
            )
        };
        assert!(of_a_project(
            ev(r#"{"id":"a","labels":{"berth.project":"shop","berth.service":"web"}}"#).as_bytes()
        ));
        assert!(!of_a_project(
            ev(r#"{"id":"a","labels":{"team":"x"}}"#).as_bytes()
        ));
        assert!(!of_a_project(ev(r#"{"id":"a"}"#).as_bytes()));
        assert!(!of_a_project(b"not json"));
    }
}

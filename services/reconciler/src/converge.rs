//! Carrying out plans: one pass compares a project's desired containers with what the
//! supervisor reports and performs the steps, concurrently where they are independent. Failing
//! steps are retried with backoff (1 s doubling to 60 s), never spun on, and reported as
//! `reconcile.failed`; reaching the desired state is announced once per revision as
//! `reconcile.converged`.

use crate::plan::{plan, Action, DesiredProject, Plan, LABEL_PROJECT};
use berth_bus::{attrs, Bus, BusError, RequestOptions};
use berth_proto::isolator::{self, verbs as iv};
use berth_proto::network::{
    NetworkCreateRequest, NetworkInspectRequest, NetworkRemoveRequest, DEFAULT_NETWORK,
};
use berth_proto::supervisor::{
    self, verbs as sv, ContainerState, ListReply, ListRequest, RemoveRequest, Target,
};
use berth_proto::{ErrorCode, Verb};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

pub const EV_ENTITY: &str = "reconcile";
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
const PARALLEL: usize = 8;

struct Failure {
    count: u32,
    next_at: Instant,
}

/// A step's call that failed: the serving service's error code when it answered with one
/// (compared as a code, never as text), and the message. Shown as `<code>: <message>`.
#[derive(Debug)]
struct StepError {
    code: Option<ErrorCode>,
    message: String,
}

impl StepError {
    fn is(&self, code: ErrorCode) -> bool {
        self.code == Some(code)
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.code {
            Some(c) => write!(f, "{}: {}", c.as_str(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl From<BusError> for StepError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Remote(r) => StepError {
                code: Some(r.code),
                message: r.message,
            },
            other => StepError {
                code: None,
                message: other.to_string(),
            },
        }
    }
}

impl From<StepError> for String {
    fn from(e: StepError) -> String {
        e.to_string()
    }
}

/// Removing what is already gone is not a failure.
fn gone_is_fine<T>(r: Result<T, StepError>) -> Result<(), StepError> {
    match r {
        Err(e) if !e.is(ErrorCode::NotFound) => Err(e),
        _ => Ok(()),
    }
}

/// 1 s, 2 s, 4 s, ... up to 60 s for the `n`-th attempt.
fn backoff(n: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(1 << n.saturating_sub(1).min(10))
        .min(BACKOFF_MAX)
}

/// What a pass found and did.
#[derive(Debug, Default)]
pub struct PassOutcome {
    pub plan: Plan,
    pub done: usize,
    pub failed: Vec<(String, String)>,
    /// Steps not tried because they are backing off.
    pub deferred: usize,
}

impl PassOutcome {
    pub fn converged(&self) -> bool {
        self.plan.is_converged()
    }
}

pub struct Converger {
    bus: Bus,
    /// The node whose supervisor runs the containers.
    node: String,
    timeout: Duration,
    failures: HashMap<(String, String), Failure>,
    /// Containers brought back by a `start` step: repeated ones back off like failures, so a
    /// container that keeps dying is not restarted in a hot loop.
    starts: HashMap<(String, String), Failure>,
    announced: HashMap<String, u64>,
}

impl Converger {
    pub fn new(bus: Bus, node: String) -> Converger {
        Converger {
            bus,
            node,
            timeout: Duration::from_secs(120),
            failures: HashMap::new(),
            starts: HashMap::new(),
            announced: HashMap::new(),
        }
    }

    /// Every container of `project` on the node, in any status.
    pub async fn actual(&self, project: &str) -> Result<Vec<ContainerState>, BusError> {
        let req = ListRequest {
            all: true,
            labels: BTreeMap::from([(LABEL_PROJECT.to_string(), project.to_string())]),
            ..Default::default()
        };
        let r: ListReply = self
            .bus
            .ask::<sv::List>(
                &self.node,
                &req,
                &RequestOptions::timeout(Duration::from_secs(10)),
            )
            .await?;
        Ok(r.containers)
    }

    /// One pass over one project.
    pub async fn pass(&mut self, d: &DesiredProject) -> Result<PassOutcome, BusError> {
        let actual = self.actual(&d.name).await?;
        let plan = plan(d, &actual, true);
        let mut out = PassOutcome {
            plan: plan.clone(),
            ..Default::default()
        };
        if plan.is_converged() {
            if self.announced.get(&d.name) != Some(&d.revision) {
                self.announced.insert(d.name.clone(), d.revision);
                self.bus
                    .emit(
                        EV_ENTITY,
                        "converged",
                        &d.name,
                        attrs! {"project" => d.name, "revision" => d.revision, "containers" => actual.len()},
                    )
                    .await;
            }
            return Ok(out);
        }
        self.announced.remove(&d.name);
        if plan
            .steps
            .iter()
            .any(|a| matches!(a, Action::Create { .. } | Action::Replace { .. }))
        {
            // Networks first, with the same backoff as a failing step.
            let key = (d.name.clone(), "networks".to_string());
            if let Some(f) = self.failures.get(&key) {
                if f.next_at > Instant::now() {
                    out.deferred += plan.steps.len();
                    return Ok(out);
                }
            }
            match self.ensure_networks(d).await {
                Ok(()) => {
                    self.failures.remove(&key);
                }
                Err(e) => {
                    let (attempt, delay) = self.failed(key);
                    tracing::warn!(project = %d.name, error = %e, "networks");
                    self.bus
                        .emit(
                            EV_ENTITY,
                            "failed",
                            &d.name,
                            attrs! {"project" => d.name, "revision" => d.revision, "action" => "network", "container" => "networks", "error" => e, "attempt" => attempt, "retry_in_ms" => delay.as_millis() as u64},
                        )
                        .await;
                    out.failed.push(("networks".into(), e));
                    return Ok(out);
                }
            }
        }
        let now = Instant::now();
        let mut todo = Vec::new();
        for a in plan.steps {
            let key = (d.name.clone(), a.name().to_string());
            let backing_off = |m: &HashMap<(String, String), Failure>| {
                m.get(&key).map(|f| f.next_at > now).unwrap_or(false)
            };
            if backing_off(&self.failures)
                || (matches!(a, Action::Start { .. }) && backing_off(&self.starts))
            {
                out.deferred += 1;
                continue;
            }
            todo.push(a);
        }
        // Removals first (a replacement reuses the name), then the rest, PARALLEL at a time.
        for chunk in todo.chunks(PARALLEL) {
            let results = futures::future::join_all(chunk.iter().map(|a| self.execute(d, a))).await;
            for (a, r) in chunk.iter().zip(results) {
                let key = (d.name.clone(), a.name().to_string());
                match r {
                    Ok(()) => {
                        out.done += 1;
                        self.failures.remove(&key);
                        if matches!(a, Action::Start { .. }) {
                            let s = self.starts.entry(key.clone()).or_insert(Failure {
                                count: 0,
                                next_at: now,
                            });
                            // Ten quiet minutes forgive earlier starts.
                            if now.saturating_duration_since(s.next_at) > Duration::from_secs(600) {
                                s.count = 0;
                            }
                            s.count += 1;
                            s.next_at = now + backoff(s.count);
                        }
                        self.bus
                            .emit(
                                EV_ENTITY,
                                "step",
                                &d.name,
                                attrs! {"project" => d.name, "revision" => d.revision, "action" => a.kind(), "container" => a.name(), "step" => a.describe()},
                            )
                            .await;
                    }
                    Err(e) => {
                        let (attempt, delay) = self.failed(key);
                        tracing::warn!(project = %d.name, step = %a.describe(), error = %e, "step failed");
                        self.bus
                            .emit(
                                EV_ENTITY,
                                "failed",
                                &d.name,
                                attrs! {"project" => d.name, "revision" => d.revision, "action" => a.kind(), "container" => a.name(), "error" => e, "attempt" => attempt, "retry_in_ms" => delay.as_millis() as u64},
                            )
                            .await;
                        out.failed.push((a.name().to_string(), e));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn execute(&self, d: &DesiredProject, a: &Action) -> Result<(), String> {
        let service_of = |name: &str| d.services.iter().find(|s| s.name == name);
        match a {
            Action::Create {
                service, replica, ..
            } => {
                let s = service_of(service).ok_or("service vanished from the plan")?;
                self.create(s.request_for(&d.name, *replica)).await
            }
            Action::Replace {
                service,
                replica,
                old_id,
                ..
            } => {
                let s = service_of(service).ok_or("service vanished from the plan")?;
                self.remove(old_id).await?;
                self.create(s.request_for(&d.name, *replica)).await
            }
            Action::Remove { id, .. } => self.remove(id).await,
            Action::Start { id, .. } => self
                .call::<sv::Start>(&Target {
                    container: id.clone(),
                })
                .await
                .map(|_| ())
                .map_err(String::from),
        }
    }

    async fn create(&self, req: supervisor::CreateRequest) -> Result<(), String> {
        match self.call::<sv::Create>(&req).await {
            Ok(_) => Ok(()),
            // Created meanwhile (a restarted reconciler, a concurrent pass): the next pass sees
            // it. Any other conflict (a host port taken) failed the create, which left nothing.
            Err(e) if e.is(ErrorCode::Conflict) && self.exists(req.name.as_deref()).await => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether a container of this name exists on the node (false when it cannot be told).
    async fn exists(&self, name: Option<&str>) -> bool {
        let Some(name) = name else { return false };
        let req = ListRequest {
            all: true,
            name: Some(name.to_string()),
            ..Default::default()
        };
        self.bus
            .ask::<sv::List>(
                &self.node,
                &req,
                &RequestOptions::timeout(Duration::from_secs(10)),
            )
            .await
            .map(|r| r.containers.iter().any(|c| c.name == name))
            .unwrap_or(false)
    }

    /// Count one more failure of `key` and set when it may be tried again: the attempt
    /// number and the delay.
    fn failed(&mut self, key: (String, String)) -> (u32, Duration) {
        let f = self.failures.entry(key).or_insert(Failure {
            count: 0,
            next_at: Instant::now(),
        });
        f.count += 1;
        let delay = backoff(f.count);
        f.next_at = Instant::now() + delay;
        (f.count, delay)
    }

    async fn remove(&self, id: &str) -> Result<(), String> {
        gone_is_fine(
            self.call::<sv::Remove>(&RemoveRequest {
                container: id.to_string(),
                force: true,
            })
            .await,
        )
        .map_err(String::from)
    }

    /// Make the project's own bridge networks (a network that exists is left as it is);
    /// an external one must exist.
    async fn ensure_networks(&self, d: &DesiredProject) -> Result<(), String> {
        for n in &d.networks {
            if n.external {
                // The node's default network is made by the isolator on first use.
                if n.name == DEFAULT_NETWORK {
                    continue;
                }
                self.call::<iv::NetworkInspect>(&NetworkInspectRequest {
                    name: n.name.clone(),
                })
                .await
                .map_err(|e| format!("external network {}: {e}", n.name))?;
                continue;
            }
            match self
                .call::<iv::NetworkCreate>(&NetworkCreateRequest {
                    name: n.name.clone(),
                    subnet: None,
                })
                .await
            {
                Ok(_) => {
                    self.bus
                        .emit(
                            EV_ENTITY,
                            "step",
                            &d.name,
                            attrs! {"project" => d.name, "revision" => d.revision, "action" => "network-create", "network" => n.name, "step" => format!("create network {}", n.name)},
                        )
                        .await;
                }
                Err(e) if e.is(ErrorCode::Conflict) => {}
                Err(e) => return Err(format!("creating network {}: {e}", n.name)),
            }
        }
        Ok(())
    }

    /// Remove every container of a project (`down`, or a project whose desired state was
    /// deleted), then, when its last spec is known, its own networks and (with `volumes`)
    /// its volumes. Returns how many containers were removed.
    pub async fn remove_project(
        &mut self,
        project: &str,
        last: Option<&DesiredProject>,
        volumes: bool,
    ) -> Result<usize, String> {
        let actual = self.actual(project).await.map_err(|e| e.to_string())?;
        let results = futures::future::join_all(actual.iter().map(|c| self.remove(&c.id))).await;
        let mut n = 0;
        for (c, r) in actual.iter().zip(results) {
            r.map_err(|e| format!("removing {}: {e}", c.name))?;
            n += 1;
        }
        self.announced.remove(project);
        self.failures.retain(|(p, _), _| p != project);
        self.starts.retain(|(p, _), _| p != project);
        let Some(d) = last else { return Ok(n) };
        for net in d.networks.iter().filter(|n| !n.external) {
            let req = NetworkRemoveRequest {
                name: net.name.clone(),
            };
            gone_is_fine(self.call::<iv::NetworkRemove>(&req).await)
                .map_err(|e| format!("removing network {}: {e}", net.name))?;
        }
        for v in d.volumes.iter().filter(|_| volumes) {
            let req = isolator::VolumeRemoveRequest {
                name: v.clone(),
                force: false,
            };
            gone_is_fine(self.call::<iv::VolumeRemove>(&req).await)
                .map_err(|e| format!("removing volume {v}: {e}"))?;
        }
        Ok(n)
    }

    /// A declared verb on this node, as a state-changing request; the error keeps its code.
    async fn call<V: Verb>(&self, body: &V::Request) -> Result<V::Reply, StepError> {
        Ok(self
            .bus
            .ask::<V>(&self.node, body, &RequestOptions::mutating(self.timeout))
            .await?)
    }
}

//! Planning: what must happen for the actual containers of a project to match its desired
//! state. Pure logic (no I/O): the loop and the `plan` verb (a dry run) both call [`plan`].
//!
//! Rules:
//! - each desired replica is a container named `<project>-<service>-<n>` (or the service's
//!   `container_name`) labelled with project, service, replica and the service's
//!   configuration hash;
//! - a missing replica is created; one whose hash (or image digest) differs is replaced;
//! - a container of the project whose service is gone, whose replica number is beyond the
//!   count, or that duplicates a replica, is removed (orphans are removed, unlike Compose);
//! - a container that is not running and that its restart policy will not bring back (stopped
//!   or killed by hand, dead, created but never started) is started again, except a one-shot
//!   container that exited 0 with restart policy `no` (it completed);
//! - creates and starts wait for the service's `depends_on` conditions.

use berth_proto::supervisor::{
    ContainerState, ContainerStatus, CreateRequest, HealthStatus, RestartPolicy,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const LABEL_PROJECT: &str = "berth.project";
pub const LABEL_SERVICE: &str = "berth.service";
pub const LABEL_REPLICA: &str = "berth.replica";
pub const LABEL_HASH: &str = "berth.config-hash";

/// A `depends_on` condition, as Compose names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    ServiceStarted,
    ServiceHealthy,
    ServiceCompletedSuccessfully,
}

/// One service as the loop needs it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredService {
    pub name: String,
    pub replicas: u32,
    /// `container_name`: only with one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// What each replica is created from (name and the project labels are filled per replica).
    pub request: CreateRequest,
    pub config_hash: String,
    /// The image's manifest digest when known (a changed digest is a change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    #[serde(default)]
    pub depends_on: Vec<(String, Condition)>,
}

/// A project's desired containers, services in start order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredProject {
    pub name: String,
    pub revision: u64,
    pub services: Vec<DesiredService>,
    /// The bridge networks the project's containers attach to: made before the first
    /// container is created; the project's own ones are removed by `down`.
    #[serde(default)]
    pub networks: Vec<ProjectNetwork>,
    /// The named volumes the project owns (`down -v` removes them); external ones are not
    /// listed.
    #[serde(default)]
    pub volumes: Vec<String>,
}

/// A network a project uses, by its name on the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectNetwork {
    pub name: String,
    /// Declared `external: true`: it must exist already, and is never removed by the project.
    #[serde(default)]
    pub external: bool,
}

impl DesiredService {
    pub fn replica_name(&self, project: &str, n: u32) -> String {
        match &self.container_name {
            Some(c) if self.replicas <= 1 => c.clone(),
            _ => berth_spec::replica_name(project, &self.name, n),
        }
    }

    /// The create request of replica `n`: its name and the project's labels.
    pub fn request_for(&self, project: &str, n: u32) -> CreateRequest {
        let mut r = self.request.clone();
        r.name = Some(self.replica_name(project, n));
        r.labels.insert(LABEL_PROJECT.into(), project.into());
        r.labels.insert(LABEL_SERVICE.into(), self.name.clone());
        r.labels.insert(LABEL_REPLICA.into(), n.to_string());
        r.labels.insert(LABEL_HASH.into(), self.config_hash.clone());
        r.start = true;
        r
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Create {
        service: String,
        replica: u32,
        name: String,
    },
    Replace {
        service: String,
        replica: u32,
        name: String,
        old_id: String,
        reason: String,
    },
    Remove {
        id: String,
        name: String,
        reason: String,
    },
    Start {
        service: String,
        id: String,
        name: String,
        reason: String,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::Replace { .. } => "replace",
            Action::Remove { .. } => "remove",
            Action::Start { .. } => "start",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Action::Create { name, .. }
            | Action::Replace { name, .. }
            | Action::Remove { name, .. }
            | Action::Start { name, .. } => name,
        }
    }
    /// The service whose dependencies gate this step (removals are never gated).
    pub fn gated_service(&self) -> Option<&str> {
        match self {
            Action::Create { service, .. }
            | Action::Replace { service, .. }
            | Action::Start { service, .. } => Some(service),
            Action::Remove { .. } => None,
        }
    }
    pub fn describe(&self) -> String {
        match self {
            Action::Create { name, .. } => format!("create {name}"),
            Action::Replace { name, reason, .. } => format!("replace {name} ({reason})"),
            Action::Remove { name, reason, .. } => format!("remove {name} ({reason})"),
            Action::Start { name, reason, .. } => format!("start {name} ({reason})"),
        }
    }
}

/// Steps in order (removals first, then by the services' start order), and the services
/// still waiting for their dependencies with the reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<Action>,
    #[serde(default)]
    pub waiting: BTreeMap<String, String>,
}

impl Plan {
    pub fn is_converged(&self) -> bool {
        self.steps.is_empty() && self.waiting.is_empty()
    }
}

/// Whether a container that is not running should be left alone.
fn left_alone(c: &ContainerState) -> bool {
    match c.status {
        ContainerStatus::Running | ContainerStatus::Paused | ContainerStatus::Restarting => true,
        // Completed one-shot.
        ContainerStatus::Exited => {
            c.exit_code == Some(0)
                && matches!(
                    c.restart,
                    RestartPolicy::No | RestartPolicy::OnFailure { .. }
                )
        }
        ContainerStatus::Created | ContainerStatus::Dead => false,
    }
}

fn condition_met(cond: Condition, members: &[&ContainerState], want: u32) -> Result<(), String> {
    if (members.len() as u32) < want.max(1) {
        return Err("not created yet".into());
    }
    for c in members {
        let ok = match cond {
            Condition::ServiceStarted => {
                c.status == ContainerStatus::Running
                    || (c.status == ContainerStatus::Exited && c.started_at.is_some())
            }
            Condition::ServiceHealthy => {
                c.status == ContainerStatus::Running
                    && match &c.health {
                        Some(h) => h.status == HealthStatus::Healthy,
                        // No health check: running is as healthy as it gets.
                        None => true,
                    }
            }
            Condition::ServiceCompletedSuccessfully => {
                c.status == ContainerStatus::Exited && c.exit_code == Some(0)
            }
        };
        if !ok {
            let what = match cond {
                Condition::ServiceStarted => "to start",
                Condition::ServiceHealthy => "to be healthy",
                Condition::ServiceCompletedSuccessfully => "to complete successfully",
            };
            return Err(format!("waiting for {} {what}", c.name));
        }
    }
    Ok(())
}

/// Compare desired with actual (`actual`: every container labelled with this project, in any
/// status). With `gate`, steps of services whose dependencies are not met are held back and
/// listed in `waiting`; without it (a dry run), every step is listed.
pub fn plan(desired: &DesiredProject, actual: &[ContainerState], gate: bool) -> Plan {
    let project = desired.name.as_str();
    let mut p = Plan::default();
    let by_service: BTreeMap<&str, &DesiredService> = desired
        .services
        .iter()
        .map(|s| (s.name.as_str(), s))
        .collect();
    let mut removals = Vec::new();

    // Group actual containers by (service, replica).
    let mut slots: BTreeMap<(String, u32), Vec<&ContainerState>> = BTreeMap::new();
    for c in actual {
        let service = c.labels.get(LABEL_SERVICE).cloned().unwrap_or_default();
        let replica = c
            .labels
            .get(LABEL_REPLICA)
            .and_then(|r| r.parse::<u32>().ok());
        match (by_service.get(service.as_str()), replica) {
            (Some(s), Some(n)) if (1..=s.replicas).contains(&n) => {
                slots.entry((service, n)).or_default().push(c);
            }
            (Some(s), Some(_)) => removals.push(Action::Remove {
                id: c.id.clone(),
                name: c.name.clone(),
                reason: format!("scaled down to {}", s.replicas),
            }),
            (Some(_), None) => removals.push(Action::Remove {
                id: c.id.clone(),
                name: c.name.clone(),
                reason: "not a replica of the spec".into(),
            }),
            (None, _) => removals.push(Action::Remove {
                id: c.id.clone(),
                name: c.name.clone(),
                reason: if service.is_empty() {
                    "not part of the spec".into()
                } else {
                    format!("service {service} is no longer in the spec")
                },
            }),
        }
    }

    let mut steps = Vec::new();
    for s in &desired.services {
        let mut service_steps = Vec::new();
        for n in 1..=s.replicas {
            let name = s.replica_name(project, n);
            let mut members = slots.remove(&(s.name.clone(), n)).unwrap_or_default();
            // Prefer the one carrying the right name; extra ones are duplicates.
            members.sort_by_key(|c| (c.name != name, c.created_at.clone()));
            let mut it = members.into_iter();
            let current = it.next();
            for dup in it {
                removals.push(Action::Remove {
                    id: dup.id.clone(),
                    name: dup.name.clone(),
                    reason: format!("duplicate of {name}"),
                });
            }
            match current {
                None => service_steps.push(Action::Create {
                    service: s.name.clone(),
                    replica: n,
                    name,
                }),
                Some(c) => {
                    let hash = c.labels.get(LABEL_HASH).map(String::as_str).unwrap_or("");
                    let digest_changed = match (&s.image_digest, c.image_digest.as_str()) {
                        (Some(want), have) if !have.is_empty() => want != have,
                        _ => false,
                    };
                    if hash != s.config_hash {
                        service_steps.push(Action::Replace {
                            service: s.name.clone(),
                            replica: n,
                            name,
                            old_id: c.id.clone(),
                            reason: "configuration changed".into(),
                        });
                    } else if digest_changed {
                        service_steps.push(Action::Replace {
                            service: s.name.clone(),
                            replica: n,
                            name,
                            old_id: c.id.clone(),
                            reason: "image changed".into(),
                        });
                    } else if !left_alone(c) {
                        service_steps.push(Action::Start {
                            service: s.name.clone(),
                            id: c.id.clone(),
                            name: c.name.clone(),
                            reason: format!("{} outside its restart policy", c.status.as_str()),
                        });
                    }
                }
            }
        }
        if service_steps.is_empty() {
            continue;
        }
        if gate {
            let mut blocked = None;
            for (dep, cond) in &s.depends_on {
                let want = by_service
                    .get(dep.as_str())
                    .map(|d| d.replicas)
                    .unwrap_or(1);
                let members: Vec<&ContainerState> = actual
                    .iter()
                    .filter(|c| {
                        c.labels.get(LABEL_SERVICE).map(String::as_str) == Some(dep.as_str())
                    })
                    .filter(|c| {
                        c.labels
                            .get(LABEL_HASH)
                            .zip(by_service.get(dep.as_str()))
                            .map(|(h, d)| *h == d.config_hash)
                            .unwrap_or(false)
                    })
                    .collect();
                if let Err(why) = condition_met(*cond, &members, want) {
                    blocked = Some(format!("{dep}: {why}"));
                    break;
                }
            }
            if let Some(why) = blocked {
                p.waiting.insert(s.name.clone(), why);
                continue;
            }
        }
        steps.extend(service_steps);
    }
    // Whatever slot was not visited belongs to no desired replica.
    for ((_, _), cs) in slots {
        for c in cs {
            removals.push(Action::Remove {
                id: c.id.clone(),
                name: c.name.clone(),
                reason: "not a replica of the spec".into(),
            });
        }
    }
    p.steps = removals.into_iter().chain(steps).collect();
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::supervisor::HealthState;
    use std::collections::BTreeSet;

    fn svc(name: &str, replicas: u32, hash: &str) -> DesiredService {
        DesiredService {
            name: name.into(),
            replicas,
            container_name: None,
            request: CreateRequest {
                image: "busybox".into(),
                ..Default::default()
            },
            config_hash: hash.into(),
            image_digest: None,
            depends_on: vec![],
        }
    }

    fn state(
        name: &str,
        service: &str,
        replica: u32,
        hash: &str,
        status: ContainerStatus,
    ) -> ContainerState {
        let mut labels = BTreeMap::new();
        labels.insert(LABEL_PROJECT.into(), "p".into());
        labels.insert(LABEL_SERVICE.into(), service.into());
        labels.insert(LABEL_REPLICA.into(), replica.to_string());
        labels.insert(LABEL_HASH.into(), hash.into());
        ContainerState {
            id: format!("id-{name}"),
            name: name.into(),
            node: "n".into(),
            image: "busybox".into(),
            image_digest: String::new(),
            args: vec![],
            status,
            pid: None,
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            restart_count: 0,
            health: None,
            labels,
            restart: RestartPolicy::No,
            error: None,
        }
    }

    fn project(services: Vec<DesiredService>) -> DesiredProject {
        DesiredProject {
            networks: Vec::new(),
            volumes: Vec::new(),
            name: "p".into(),
            revision: 1,
            services,
        }
    }

    #[test]
    fn creates_missing_replicas_and_nothing_when_converged() {
        let d = project(vec![svc("web", 2, "h1")]);
        let p = plan(&d, &[], true);
        let names: Vec<&str> = p.steps.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["p-web-1", "p-web-2"]);
        let actual = [
            state("p-web-1", "web", 1, "h1", ContainerStatus::Running),
            state("p-web-2", "web", 2, "h1", ContainerStatus::Running),
        ];
        assert!(plan(&d, &actual, true).is_converged());
    }

    #[test]
    fn replaces_only_changed_services_and_removes_orphans_and_extra_replicas() {
        let d = project(vec![svc("web", 1, "h2"), svc("db", 1, "d1")]);
        let actual = [
            state("p-web-1", "web", 1, "h1", ContainerStatus::Running),
            state("p-web-2", "web", 2, "h1", ContainerStatus::Running),
            state("p-db-1", "db", 1, "d1", ContainerStatus::Running),
            state("p-old-1", "old", 1, "x", ContainerStatus::Running),
        ];
        let p = plan(&d, &actual, true);
        let kinds: Vec<String> = p.steps.iter().map(|a| a.describe()).collect();
        assert!(
            kinds.contains(&"remove p-web-2 (scaled down to 1)".to_string()),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&"remove p-old-1 (service old is no longer in the spec)".to_string()),
            "{kinds:?}"
        );
        assert!(
            kinds.contains(&"replace p-web-1 (configuration changed)".to_string()),
            "{kinds:?}"
        );
        assert_eq!(p.steps.len(), 3, "{kinds:?}");
    }

    #[test]
    fn stopped_by_hand_comes_back_but_completed_one_shots_stay() {
        let d = project(vec![svc("web", 1, "h"), svc("job", 1, "j")]);
        let mut web = state("p-web-1", "web", 1, "h", ContainerStatus::Exited);
        web.exit_code = Some(137);
        let mut job = state("p-job-1", "job", 1, "j", ContainerStatus::Exited);
        job.exit_code = Some(0);
        let p = plan(&d, &[web, job], true);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].kind(), "start");
        assert_eq!(p.steps[0].name(), "p-web-1");
    }

    #[test]
    fn depends_on_conditions_gate_creation() {
        let mut app = svc("app", 1, "a");
        app.depends_on = vec![("db".into(), Condition::ServiceHealthy)];
        let d = project(vec![svc("db", 1, "d"), app]);
        // Nothing yet: db is created, app waits.
        let p = plan(&d, &[], true);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].name(), "p-db-1");
        assert!(p.waiting["app"].contains("db"), "{:?}", p.waiting);
        // A dry run lists both.
        assert_eq!(plan(&d, &[], false).steps.len(), 2);
        // db running but starting: still waiting.
        let mut db = state("p-db-1", "db", 1, "d", ContainerStatus::Running);
        db.health = Some(HealthState {
            status: HealthStatus::Starting,
            failing_streak: 0,
            log: vec![],
        });
        let p = plan(&d, &[db.clone()], true);
        assert!(p.steps.is_empty());
        assert!(p.waiting["app"].contains("healthy"), "{:?}", p.waiting);
        // Healthy: app is created.
        db.health.as_mut().unwrap().status = HealthStatus::Healthy;
        let p = plan(&d, &[db], true);
        assert_eq!(p.steps.len(), 1);
        assert_eq!(p.steps[0].name(), "p-app-1");
    }

    #[test]
    fn duplicates_and_unlabelled_members_are_removed() {
        let d = project(vec![svc("web", 1, "h")]);
        let a = state("p-web-1", "web", 1, "h", ContainerStatus::Running);
        let mut b = state("stray", "web", 1, "h", ContainerStatus::Running);
        b.id = "id-stray".into();
        let mut c = state("p-web-x", "web", 1, "h", ContainerStatus::Running);
        c.labels.remove(LABEL_REPLICA);
        c.id = "id-x".into();
        let p = plan(&d, &[a, b, c], true);
        let names: BTreeSet<&str> = p.steps.iter().map(|s| s.name()).collect();
        assert_eq!(names, BTreeSet::from(["stray", "p-web-x"]));
        assert!(p.steps.iter().all(|s| s.kind() == "remove"));
    }

    #[test]
    fn a_changed_image_digest_is_a_change() {
        let mut s = svc("web", 1, "h");
        s.image_digest = Some("sha256:new".into());
        let d = project(vec![s]);
        let mut c = state("p-web-1", "web", 1, "h", ContainerStatus::Running);
        c.image_digest = "sha256:old".into();
        let p = plan(&d, &[c], true);
        assert_eq!(p.steps[0].describe(), "replace p-web-1 (image changed)");
    }
}

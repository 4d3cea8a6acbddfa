//! A validated Compose project (as stored: `berth_spec::Project` in JSON) → the containers it
//! means, as the planner wants them.

use crate::plan::{Condition, DesiredProject, DesiredService};
use berth_proto::isolator::{MountKind, MountSpec, NetworkMode, Resources};
use berth_proto::supervisor::{ContainerOptions, CreateRequest, HealthCheck, RestartPolicy};
use berth_proto::BerthError;
use berth_spec::{MountType, Project, Service};

/// Decode a stored spec and translate it. Refuses what berth could not run.
pub fn desired(
    project: &str,
    revision: u64,
    spec: &serde_json::Value,
) -> Result<DesiredProject, BerthError> {
    let p: Project = serde_json::from_value(spec.clone()).map_err(|e| {
        BerthError::invalid(format!("the spec of {project} is not a berth project: {e}"))
    })?;
    translate(project, revision, &p)
}

pub fn translate(project: &str, revision: u64, p: &Project) -> Result<DesiredProject, BerthError> {
    let mut services = Vec::new();
    for name in p.start_order() {
        let s = &p.services[&name];
        services.push(DesiredService {
            name: name.clone(),
            replicas: s.replicas,
            container_name: s.container_name.clone(),
            request: request(project, p, &name, s)?,
            config_hash: s.config_hash(),
            image_digest: None,
            depends_on: s
                .depends_on
                .iter()
                .map(|(d, dep)| {
                    (
                        d.clone(),
                        match dep.condition {
                            berth_spec::Condition::ServiceStarted => Condition::ServiceStarted,
                            berth_spec::Condition::ServiceHealthy => Condition::ServiceHealthy,
                            berth_spec::Condition::ServiceCompletedSuccessfully => {
                                Condition::ServiceCompletedSuccessfully
                            }
                        },
                    )
                })
                .collect(),
        });
    }
    Ok(DesiredProject {
        name: project.to_string(),
        revision,
        services,
    })
}

/// Compose names a project's volume `<project>_<volume>` unless it is external or named.
pub fn volume_name(project: &str, p: &Project, v: &str) -> String {
    match p.volumes.get(v) {
        Some(d) if d.name.is_some() => d.name.clone().unwrap(),
        Some(d) if d.external => v.to_string(),
        _ => format!("{project}_{v}"),
    }
}

fn request(
    project: &str,
    p: &Project,
    name: &str,
    s: &Service,
) -> Result<CreateRequest, BerthError> {
    let mut mounts = Vec::new();
    for v in &s.volumes {
        mounts.push(match v.kind {
            MountType::Bind => MountSpec {
                kind: MountKind::Bind,
                source: v.source.clone(),
                target: v.target.clone(),
                read_only: v.read_only,
                size_bytes: None,
            },
            MountType::Volume => MountSpec {
                kind: MountKind::Volume,
                // An anonymous volume belongs to the service (kept across replacements).
                source: if v.source.is_empty() {
                    let t: String = v
                        .target
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    format!("{project}_{name}{t}")
                } else {
                    volume_name(project, p, &v.source)
                },
                target: v.target.clone(),
                read_only: v.read_only,
                size_bytes: None,
            },
            MountType::Tmpfs => MountSpec {
                kind: MountKind::Tmpfs,
                source: String::new(),
                target: v.target.clone(),
                read_only: v.read_only,
                size_bytes: v.tmpfs_size,
            },
        });
    }
    for t in &s.tmpfs {
        let (target, size) = match t.split_once(':') {
            Some((t, opts)) => (
                t.to_string(),
                opts.split(',')
                    .find_map(|o| o.strip_prefix("size="))
                    .and_then(|sz| berth_spec::units::parse_size(sz).ok()),
            ),
            None => (t.clone(), None),
        };
        mounts.push(MountSpec {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target,
            read_only: false,
            size_bytes: size,
        });
    }
    let network = match s.network_mode.as_deref() {
        Some("host") => NetworkMode::Host,
        // Bridge networks come with berth's networking; until then a service has loopback.
        _ => NetworkMode::None,
    };
    let restart = match (&s.restart, &s.restart_policy) {
        (Some(r), _) => r
            .parse::<RestartPolicy>()
            .map_err(|e| BerthError::invalid(format!("service {name}: {e}")))?,
        (None, Some(rp)) => match rp.condition.as_str() {
            "none" => RestartPolicy::No,
            "on-failure" => RestartPolicy::OnFailure {
                max_retries: rp.max_attempts,
            },
            _ => RestartPolicy::Always,
        },
        (None, None) => RestartPolicy::No,
    };
    Ok(CreateRequest {
        name: None,
        image: s.image.clone(),
        rootfs: s.rootfs.clone(),
        options: ContainerOptions {
            cmd: s.command.clone(),
            entrypoint: s.entrypoint.clone(),
            env: s
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            working_dir: s.working_dir.clone(),
            user: s.user.clone(),
            hostname: s.hostname.clone(),
            mounts,
            resources: Resources {
                memory_bytes: s.limits.memory_bytes,
                cpus: s.limits.cpus,
                cpu_shares: None,
                pids_limit: s.limits.pids,
                ..Default::default()
            },
            read_only: s.read_only,
            cap_add: s.cap_add.clone(),
            cap_drop: s.cap_drop.clone(),
            init: s.init,
            stop_signal: s.stop_signal.clone(),
            stop_grace_period_ms: s.stop_grace_period_ms,
            network,
            ..Default::default()
        },
        labels: s.labels.clone(),
        restart,
        healthcheck: s.healthcheck.as_ref().map(|h| HealthCheck {
            test: h.test.clone(),
            interval_ms: h.interval_ms,
            timeout_ms: h.timeout_ms,
            retries: h.retries,
            start_period_ms: h.start_period_ms,
        }),
        start: true,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(yaml: &str) -> Project {
        berth_spec::load_texts(
            vec![("c.yaml".into(), yaml.into())],
            "/p".into(),
            &berth_spec::LoadOptions {
                env: Some(Default::default()),
                ..Default::default()
            },
        )
        .unwrap()
        .project
    }

    #[test]
    fn services_become_requests_in_start_order() {
        let p = project(
            "services:\n  web:\n    image: busybox\n    command: [httpd, -f]\n    depends_on:\n      db: {condition: service_healthy}\n    volumes: ['data:/d:ro', '/host:/h']\n    tmpfs: ['/run:size=1m']\n    restart: on-failure:3\n    deploy: {replicas: 2, resources: {limits: {memory: 32m, pids: 50}}}\n  db:\n    image: busybox\n    network_mode: host\nvolumes:\n  data:\n",
        );
        let d = translate("proj", 7, &p).unwrap();
        assert_eq!(d.revision, 7);
        let names: Vec<&str> = d.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = &d.services[1];
        assert_eq!(web.replicas, 2);
        assert_eq!(
            web.depends_on,
            vec![("db".to_string(), Condition::ServiceHealthy)]
        );
        let r = &web.request;
        assert_eq!(
            r.options.cmd.as_deref(),
            Some(&["httpd".to_string(), "-f".into()][..])
        );
        assert_eq!(
            r.restart,
            RestartPolicy::OnFailure {
                max_retries: Some(3)
            }
        );
        assert_eq!(r.options.resources.memory_bytes, Some(32 << 20));
        assert_eq!(r.options.resources.pids_limit, Some(50));
        assert_eq!(r.options.mounts[0].source, "proj_data");
        assert!(r.options.mounts[0].read_only);
        assert_eq!(r.options.mounts[1].kind, MountKind::Bind);
        assert_eq!(r.options.mounts[2].size_bytes, Some(1 << 20));
        assert_eq!(d.services[0].request.options.network, NetworkMode::Host);
        let named = web.request_for("proj", 1);
        assert_eq!(named.name.as_deref(), Some("proj-web-1"));
        assert_eq!(named.labels[crate::plan::LABEL_SERVICE], "web");
    }
}

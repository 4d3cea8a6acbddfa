//! A validated Compose project (as stored: `berth_spec::Project` in JSON) → the containers it
//! means, as the planner wants them.

use crate::plan::{Condition, DesiredProject, DesiredService, ProjectNetwork};
use berth_proto::isolator::{MountKind, MountSpec, NetworkMode, Resources};
use berth_proto::network::{PortMapping, DEFAULT_NETWORK};
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

/// Refuse what the supervisor would refuse at create (the same checks,
/// `berth_proto::validate::create_request`), on the request of each service's last replica
/// (the longest name). For a spec that did not come through the CLI's loader (an older
/// client, a hand-made request): the loader already refused all of it with its position.
pub fn check(project: &str, d: &DesiredProject) -> Result<(), BerthError> {
    for s in &d.services {
        let r = s.request_for(project, s.replicas.max(1));
        berth_proto::validate::create_request(&r)
            .map_err(|e| BerthError::invalid(format!("service {}: {e}", s.name)))?;
    }
    Ok(())
}

pub fn translate(project: &str, revision: u64, p: &Project) -> Result<DesiredProject, BerthError> {
    let mut services = Vec::new();
    let mut networks: Vec<ProjectNetwork> = Vec::new();
    let mut volumes: Vec<String> = p
        .volumes
        .iter()
        .filter(|(_, d)| !d.external)
        .map(|(v, _)| volume_name(project, p, v))
        .collect();
    for name in p.start_order() {
        let s = &p.services[&name];
        let request = request(project, p, &name, s)?;
        if let NetworkMode::Bridge(n) = &request.options.network {
            if !networks.iter().any(|x| &x.name == n) {
                networks.push(ProjectNetwork {
                    name: n.clone(),
                    external: is_external_network(project, p, n),
                });
            }
        }
        for v in &s.volumes {
            if v.kind == MountType::Volume && v.source.is_empty() {
                let anon = anonymous_volume(project, &name, &v.target);
                if !volumes.contains(&anon) {
                    volumes.push(anon);
                }
            }
        }
        let mut depends_on: Vec<(String, Condition)> = s
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
            .collect();
        // `network_mode: service:X` joins X's namespace: X must be running first (as in Compose).
        if let Some(other) = s
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("service:"))
        {
            if !depends_on.iter().any(|(d, _)| d == other) {
                depends_on.push((other.to_string(), Condition::ServiceStarted));
            }
        }
        services.push(DesiredService {
            name: name.clone(),
            replicas: s.replicas,
            container_name: s.container_name.clone(),
            request,
            config_hash: s.config_hash(),
            image_digest: None,
            depends_on,
        });
    }
    Ok(DesiredProject {
        name: project.to_string(),
        revision,
        services,
        networks,
        volumes,
    })
}

use berth_spec::{anonymous_volume, node_name};

/// A project's network on the node (`<project>_default` for the implicit one).
pub fn network_name(project: &str, p: &Project, n: &str) -> String {
    let d = p.networks.get(n);
    node_name(
        project,
        n,
        d.and_then(|d| d.name.as_ref()),
        d.is_some_and(|d| d.external),
    )
}

/// Whether the network a service joins is not the project's own to make and remove: the
/// node's default network, or one declared `external: true`.
fn is_external_network(project: &str, p: &Project, on_node: &str) -> bool {
    on_node == DEFAULT_NETWORK
        || p.networks
            .iter()
            .any(|(k, d)| d.external && network_name(project, p, k) == on_node)
}

/// The network a service's containers join, and the names they answer to on it.
/// A service on several networks joins the first by name (berth attaches a container to one
/// bridge network; see docs/network.md).
fn network_of(
    project: &str,
    p: &Project,
    name: &str,
    s: &Service,
) -> Result<(NetworkMode, Vec<String>), BerthError> {
    let mode = match s.network_mode.as_deref() {
        Some("host") => return Ok((NetworkMode::Host, Vec::new())),
        Some("none") => return Ok((NetworkMode::None, Vec::new())),
        Some("bridge") => return Ok((NetworkMode::Bridge(DEFAULT_NETWORK.into()), Vec::new())),
        Some(m) => {
            if let Some(other) = m.strip_prefix("service:") {
                let o = p.services.get(other).ok_or_else(|| {
                    BerthError::invalid(format!(
                        "service {name}: network_mode {m:?} names an unknown service"
                    ))
                })?;
                let target = match &o.container_name {
                    Some(c) if o.replicas <= 1 => c.clone(),
                    _ => format!("{project}-{other}-1"),
                };
                return Ok((NetworkMode::Container(target), Vec::new()));
            }
            if let Some(c) = m.strip_prefix("container:") {
                return Ok((NetworkMode::Container(c.to_string()), Vec::new()));
            }
            return Err(BerthError::invalid(format!(
                "service {name}: network_mode {m:?} is not one berth knows"
            )));
        }
        None => s.networks.iter().next(),
    };
    let (key, aliases) = match mode {
        Some((k, sn)) => (k.as_str(), sn.aliases.clone()),
        None => ("default", Vec::new()),
    };
    let mut names = vec![name.to_string()];
    names.extend(aliases.into_iter().filter(|a| a != name));
    Ok((NetworkMode::Bridge(network_name(project, p, key)), names))
}

/// A project's volume on the node.
pub fn volume_name(project: &str, p: &Project, v: &str) -> String {
    let d = p.volumes.get(v);
    node_name(
        project,
        v,
        d.and_then(|d| d.name.as_ref()),
        d.is_some_and(|d| d.external),
    )
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
                source: if v.source.is_empty() {
                    anonymous_volume(project, name, &v.target)
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
        // Checked when the spec was loaded; Docker's short form, as `berth run --tmpfs`.
        let t = berth_docker::volumes::parse_tmpfs(t)
            .map_err(|e| BerthError::invalid(format!("service {name}: tmpfs: {e}")))?;
        mounts.push(MountSpec {
            kind: MountKind::Tmpfs,
            source: String::new(),
            target: t.target,
            read_only: t.read_only,
            size_bytes: t.size_bytes,
        });
    }
    let (network, aliases) = network_of(project, p, name, s)?;
    let mut ports = Vec::new();
    for ps in &s.ports {
        if !matches!(network, NetworkMode::Bridge(_)) {
            return Err(BerthError::invalid(format!(
                "service {name}: ports are published from a bridge network, not with network_mode {:?}",
                s.network_mode.as_deref().unwrap_or_default()
            )));
        }
        ports.push(PortMapping {
            host_ip: match &ps.host_ip {
                None => None,
                Some(ip) => Some(ip.parse().map_err(|_| {
                    BerthError::invalid(format!(
                        "service {name}: ports: {ip:?} is not an IP address"
                    ))
                })?),
            },
            host_port: ps.host_port.unwrap_or(0),
            container_port: ps.container_port,
            protocol: ps.protocol,
        });
    }
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
        id: None,
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
            devices: s.devices.clone(),
            init: s.init,
            stop_signal: s.stop_signal.clone(),
            stop_grace_period_ms: s.stop_grace_period_ms,
            network,
            aliases,
            ports,
            seccomp: !matches!(s.seccomp, Some(berth_spec::model::Seccomp::Unconfined)),
            seccomp_profile: match &s.seccomp {
                Some(berth_spec::model::Seccomp::Profile { source, json }) => {
                    Some(berth_proto::isolator::SeccompProfile {
                        source: source.clone(),
                        json: json.clone(),
                    })
                }
                _ => None,
            },
            no_new_privileges: s.no_new_privileges.unwrap_or(true),
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

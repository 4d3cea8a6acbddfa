//! One service's keys, checked and normalised into a [`Service`].

use crate::ctx::{kind, scalar_string, show, Ctx, Path};
use crate::error::SpecError;
use crate::interpolate::parse_env_file;
use crate::model::*;
use crate::ports::{long_port, parse_port};
use berth_docker::ports::parse_expose;
use berth_docker::volumes::{self, absolute, mount_target, parse_tmpfs, parse_volume};
use berth_proto::supervisor::RestartPolicy;
use berth_proto::validate;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The service keys berth reads.
pub const SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "restart",
    "healthcheck",
    "depends_on",
    "deploy",
    "container_name",
    "networks",
    "network_mode",
    "expose",
    "user",
    "working_dir",
    "hostname",
    "read_only",
    "cap_add",
    "cap_drop",
    "tmpfs",
    "devices",
    "init",
    "stop_signal",
    "stop_grace_period",
    "labels",
    "profiles",
    "scale",
    "security_opt",
];

/// The other service keys of the Compose specification: refused as "not supported by berth"
/// (or warned about with `allow_unsupported`); a key in neither list is unknown.
pub const COMPOSE_ONLY_SERVICE_KEYS: &[&str] = &[
    "annotations",
    "attach",
    "blkio_config",
    "cgroup",
    "cgroup_parent",
    "configs",
    "cpu_count",
    "cpu_percent",
    "cpu_period",
    "cpu_quota",
    "cpu_rt_period",
    "cpu_rt_runtime",
    "cpu_shares",
    "cpus",
    "cpuset",
    "credential_spec",
    "develop",
    "device_cgroup_rules",
    "dns",
    "dns_opt",
    "dns_search",
    "domainname",
    "driver_opts",
    "extends",
    "external_links",
    "extra_hosts",
    "gpus",
    "group_add",
    "ipc",
    "isolation",
    "label_file",
    "links",
    "logging",
    "mac_address",
    "mem_limit",
    "mem_reservation",
    "mem_swappiness",
    "memswap_limit",
    "models",
    "oom_kill_disable",
    "oom_score_adj",
    "pid",
    "pids_limit",
    "platform",
    "post_start",
    "pre_stop",
    "privileged",
    "provider",
    "pull_policy",
    "pull_refresh_after",
    "runtime",
    "secrets",
    "shm_size",
    "stdin_open",
    "storage_opt",
    "sysctls",
    "tty",
    "ulimits",
    "use_api_socket",
    "userns_mode",
    "uts",
    "volumes_from",
];

/// Compose's rule for names (containers, profiles): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn valid_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(x) if x.is_ascii_alphanumeric())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '_' | '.' | '-'))
}

/// Split a command string the way a POSIX shell would (quotes and backslashes), as Compose
/// does for `command: "a b 'c d'"`.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated ' in {s:?}")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(x @ ('"' | '\\' | '$' | '`')) => cur.push(x),
                            Some('\n') => {}
                            Some(x) => {
                                cur.push('\\');
                                cur.push(x);
                            }
                            None => return Err(format!("unterminated \" in {s:?}")),
                        },
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated \" in {s:?}")),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(x) => {
                    in_word = true;
                    cur.push(x)
                }
                None => return Err(format!("a trailing \\ in {s:?}")),
            },
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

/// Where the declared things of the project are, for references from services.
pub(crate) struct Declared<'a> {
    pub volumes: &'a BTreeMap<String, VolumeDef>,
    pub networks: &'a BTreeMap<String, NetworkDef>,
}

/// One service's mapping, as the functions that read a group of its keys see it.
struct Svc<'a> {
    name: &'a str,
    m: &'a Map<String, Value>,
    declared: &'a Declared<'a>,
    /// Where its keys are: `services.<name>`.
    at: Path,
}

/// Service `name`: its keys checked, then read group by group (one function each, below, in
/// this order, which is the order its errors are found in).
pub(crate) fn service(
    ctx: &mut Ctx,
    name: &str,
    v: &Value,
    declared: &Declared,
) -> Result<Service, SpecError> {
    let at = Path::root().k("services").k(name);
    let m = match v {
        Value::Object(m) => m,
        other => {
            return Err(ctx.err(
                &at,
                format!("service {name} must be a mapping, not {}", kind(other)),
            ))
        }
    };
    let what = format!("service {name}");
    if m.contains_key("build") {
        ctx.unsupported(
            &at.k("build"),
            format!(
                "service {name}: `build` is not supported yet: build the image elsewhere and set `image`"
            ),
        )?;
    }
    let mut keys = m.clone();
    keys.remove("build");
    ctx.check_keys(&keys, &at, &what, SERVICE_KEYS, COMPOSE_ONLY_SERVICE_KEYS)?;
    let mut s = Service {
        replicas: 1,
        ..Default::default()
    };

    let svc = Svc {
        name,
        m,
        declared,
        at,
    };
    image_and_rootfs(ctx, &svc, &mut s)?;
    command_and_environment(ctx, &svc, &mut s)?;
    ports_and_expose(ctx, &svc, &mut s)?;
    mounts(ctx, &svc, &mut s)?;
    lifecycle(ctx, &svc, &mut s)?;
    replicas_and_name(ctx, &svc, &mut s)?;
    network(ctx, &svc, &mut s)?;
    process_settings(ctx, &svc, &mut s)?;
    privileges(ctx, &svc, &mut s)?;
    stop_labels_profiles(ctx, &svc, &mut s)?;
    Ok(s)
}

/// `x-berth` (berth's own keys: `rootfs`) and `image`: what the service's containers are made
/// from.
fn image_and_rootfs(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { name, m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("x-berth") {
        let xm = ctx.map(x, &p("x-berth"))?.cloned().unwrap_or_default();
        for (k, v) in &xm {
            match k.as_str() {
                "rootfs" => {
                    let dir = ctx.string(v, &p("x-berth").k("rootfs"))?;
                    s.rootfs = Some(absolute(&ctx.base_dir, &dir));
                }
                other => {
                    return Err(ctx.err(
                        &p("x-berth").k(other),
                        format!("x-berth.{other} is not a berth extension (rootfs)"),
                    ))
                }
            }
        }
    }
    s.image = match m.get("image") {
        Some(Value::String(i)) if !i.trim().is_empty() => {
            if i.chars().any(char::is_whitespace) {
                return Err(ctx.err(
                    &p("image"),
                    format!("service {name}: image {i:?} contains a space"),
                ));
            }
            // What the puller would refuse (the same parser), refused before anything is stored.
            validate::image(i).map_err(|e| ctx.err(&p("image"), format!("image: {e}")))?;
            i.clone()
        }
        Some(other) => {
            return Err(ctx.err(
                &p("image"),
                format!(
                    "service {name}: `image` must be a non-empty string, not {}",
                    show(other)
                ),
            ))
        }
        None if s.rootfs.is_some() => String::new(),
        None => return Err(ctx.err(&svc.at, format!("service {name} has no `image`"))),
    };
    Ok(())
}

/// `command`, `entrypoint`, and `env_file` with `environment`: what the container runs.
fn command_and_environment(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { name, m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("command") {
        s.command = command(ctx, x, &p("command"))?;
    }
    if let Some(x) = m.get("entrypoint") {
        s.entrypoint = command(ctx, x, &p("entrypoint"))?;
    }
    environment(ctx, name, m, s)?;
    Ok(())
}

/// `ports` (published from a bridge network) and `expose`.
fn ports_and_expose(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("ports") {
        let a = list(ctx, x, &p("ports"))?;
        for (i, e) in a.iter().enumerate() {
            let parsed = match e {
                Value::Object(o) => long_port(o),
                Value::String(_) | Value::Number(_) => parse_port(&scalar_string(e).unwrap()),
                other => Err(format!(
                    "a port must be a string like \"8080:80\" or a mapping, not {}",
                    kind(other)
                )),
            };
            let ports = parsed.map_err(|e| ctx.err(&p("ports").k(i), format!("ports: {e}")))?;
            s.ports.extend(ports);
        }
    }
    if let Some(x) = m.get("expose") {
        s.expose = ctx.strings(x, &p("expose"))?;
        for (i, e) in s.expose.iter().enumerate() {
            parse_expose(e).map_err(|e| ctx.err(&p("expose").k(i), format!("expose: {e}")))?;
        }
    }
    Ok(())
}

/// `volumes`, `devices` and `tmpfs`: what is mounted into the container.
fn mounts(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { name, m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("volumes") {
        let a = list(ctx, x, &p("volumes"))?;
        for (i, e) in a.iter().enumerate() {
            let vm = volume_mount(ctx, e, &p("volumes").k(i), svc.declared)?;
            if s.volumes.iter().any(|o| o.target == vm.target) {
                return Err(ctx.err(
                    &p("volumes").k(i),
                    format!("volumes: {} is mounted twice in service {name}", vm.target),
                ));
            }
            s.volumes.push(vm);
        }
    }
    if let Some(x) = m.get("devices") {
        for (i, d) in ctx.strings(x, &p("devices"))?.iter().enumerate() {
            let dm = berth_proto::isolator::DeviceMapping::parse(d)
                .map_err(|e| ctx.err(&p("devices").k(i), format!("devices: {e}")))?;
            if s.devices
                .iter()
                .any(|o| o.container_path == dm.container_path)
            {
                return Err(ctx.err(
                    &p("devices").k(i),
                    format!(
                        "devices: {} is given twice in service {name}",
                        dm.container_path
                    ),
                ));
            }
            s.devices.push(dm);
        }
    }
    if let Some(x) = m.get("tmpfs") {
        s.tmpfs = ctx.strings(x, &p("tmpfs"))?;
        for (i, t) in s.tmpfs.iter().enumerate() {
            let tmpfs =
                parse_tmpfs(t).map_err(|e| ctx.err(&p("tmpfs").k(i), format!("tmpfs: {e}")))?;
            if !tmpfs.ignored.is_empty() {
                let ignored = tmpfs.ignored.join(", ");
                ctx.warn(
                    &p("tmpfs").k(i),
                    format!("tmpfs: {t:?}: {ignored} {}", volumes::TMPFS_IGNORED),
                );
            }
        }
    }
    Ok(())
}

/// `restart`, `healthcheck` and `depends_on`: when the container runs.
fn lifecycle(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { name, m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("restart") {
        let r = ctx.string(x, &p("restart"))?;
        // The supervisor's own parser of restart policies.
        r.parse::<RestartPolicy>()
            .map_err(|e| ctx.err(&p("restart"), format!("restart: {e}")))?;
        s.restart = Some(r);
    }
    if let Some(x) = m.get("healthcheck") {
        s.healthcheck = healthcheck(ctx, name, x)?;
    }
    if let Some(x) = m.get("depends_on") {
        depends_on(ctx, name, x, s)?;
    }
    Ok(())
}

/// `scale`, `deploy` and `container_name` (which needs a single replica).
fn replicas_and_name(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { name, m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("scale") {
        s.replicas = ctx.uint(x, &p("scale"), u32::MAX as u64)? as u32;
    }
    if let Some(x) = m.get("deploy") {
        deploy(ctx, name, x, s)?;
        if let (Some(sc), Some(r)) = (
            m.get("scale"),
            m.get("deploy").and_then(|d| d.get("replicas")),
        ) {
            if ctx.uint(sc, &p("scale"), u32::MAX as u64)?
                != ctx.uint(r, &p("deploy").k("replicas"), u32::MAX as u64)?
            {
                return Err(ctx.err(
                    &p("scale"),
                    format!("service {name}: `scale` and `deploy.replicas` disagree"),
                ));
            }
        }
    }
    if let Some(x) = m.get("container_name") {
        let c = ctx.string(x, &p("container_name"))?;
        validate::container_name(&c)
            .map_err(|e| ctx.err(&p("container_name"), format!("container_name: {e}")))?;
        if s.replicas > 1 {
            return Err(ctx.err(
                &p("container_name"),
                format!(
                    "service {name}: container_name needs a single replica, not {}",
                    s.replicas
                ),
            ));
        }
        s.container_name = Some(c);
    }
    Ok(())
}

/// `networks` or `network_mode` (not both; ports only with a bridge network).
fn network(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { name, m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("networks") {
        networks(ctx, name, x, svc.declared, s)?;
    }
    if let Some(x) = m.get("network_mode") {
        let nm = ctx.string(x, &p("network_mode"))?;
        let ok = matches!(nm.as_str(), "none" | "host" | "bridge")
            || nm.strip_prefix("service:").is_some_and(|n| !n.is_empty())
            || nm.strip_prefix("container:").is_some_and(|n| !n.is_empty());
        if !ok {
            return Err(ctx.err(
                &p("network_mode"),
                format!("network_mode {nm:?}: expected none, host, bridge, service:NAME or container:NAME"),
            ));
        }
        if m.contains_key("networks") {
            return Err(ctx.err(
                &p("network_mode"),
                format!("service {name}: network_mode and networks cannot be combined"),
            ));
        }
        if !s.ports.is_empty() && nm != "bridge" {
            return Err(ctx.err(
                &p("ports"),
                format!("ports are published from a bridge network, not with network_mode {nm:?}"),
            ));
        }
        s.network_mode = Some(nm);
    }
    Ok(())
}

/// `user`, `hostname`, `working_dir`, `stop_signal` (each checked), `read_only` and `init`.
fn process_settings(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    for (key, slot) in [
        ("user", &mut s.user),
        ("hostname", &mut s.hostname),
        ("working_dir", &mut s.working_dir),
        ("stop_signal", &mut s.stop_signal),
    ] {
        if let Some(x) = m.get(key) {
            *slot = Some(ctx.string(x, &p(key))?);
        }
    }
    if let Some(w) = &s.working_dir {
        if !w.starts_with('/') {
            return Err(ctx.err(
                &p("working_dir"),
                format!("working_dir {w:?} must be an absolute path"),
            ));
        }
        validate::container_path(w)
            .map_err(|e| ctx.err(&p("working_dir"), format!("working_dir: {e}")))?;
    }
    if let Some(h) = &s.hostname {
        validate::hostname(h).map_err(|e| ctx.err(&p("hostname"), e))?;
    }
    if let Some(u) = &s.user {
        validate::user(u).map_err(|e| ctx.err(&p("user"), e))?;
    }
    if let Some(sig) = &s.stop_signal {
        validate::signal(sig)
            .map_err(|e| ctx.err(&p("stop_signal"), format!("stop_signal: {e}")))?;
    }
    if let Some(x) = m.get("read_only") {
        s.read_only = ctx.boolean(x, &p("read_only"))?;
    }
    if let Some(x) = m.get("init") {
        s.init = ctx.boolean(x, &p("init"))?;
    }
    Ok(())
}

/// `cap_add`, `cap_drop` and `security_opt`.
fn privileges(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { name, m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    for (key, slot) in [("cap_add", &mut s.cap_add), ("cap_drop", &mut s.cap_drop)] {
        if let Some(x) = m.get(key) {
            *slot = ctx.strings(x, &p(key))?;
            for (i, c) in slot.iter().enumerate() {
                validate::capability(c)
                    .map_err(|e| ctx.err(&p(key).k(i), format!("{key}: {e}")))?;
            }
        }
    }
    if let Some(x) = m.get("security_opt") {
        security_opt(ctx, name, x, &p("security_opt"), s)?;
    }
    Ok(())
}

/// `stop_grace_period`, `labels` and `profiles`.
fn stop_labels_profiles(ctx: &mut Ctx, svc: &Svc, s: &mut Service) -> Result<(), SpecError> {
    let Svc { m, .. } = *svc;
    let p = |k: &str| svc.at.k(k);
    if let Some(x) = m.get("stop_grace_period") {
        s.stop_grace_period_ms = Some(ctx.duration_ms(x, &p("stop_grace_period"))?);
    }
    if let Some(x) = m.get("labels") {
        for (k, v) in ctx.kv(x, &p("labels"))? {
            s.labels.insert(k, v.unwrap_or_default());
        }
    }
    if let Some(x) = m.get("profiles") {
        s.profiles = ctx.strings(x, &p("profiles"))?;
        for (i, pr) in s.profiles.iter().enumerate() {
            if !valid_name(pr) {
                return Err(ctx.err(
                    &p("profiles").k(i),
                    format!("profile {pr:?} must be letters, digits, '_', '.' or '-'"),
                ));
            }
        }
    }
    Ok(())
}

/// `security_opt`: `seccomp=PROFILE.json` (read now, relative to the Compose file),
/// `seccomp=unconfined`, `no-new-privileges[:true|false]`; `:` or `=` between key and value.
fn security_opt(
    ctx: &Ctx,
    name: &str,
    v: &Value,
    at: &Path,
    s: &mut Service,
) -> Result<(), SpecError> {
    for (i, o) in ctx.strings(v, at)?.iter().enumerate() {
        let (key, value) = match o.find([':', '=']) {
            Some(n) => (&o[..n], Some(&o[n + 1..])),
            None => (o.as_str(), None),
        };
        match (key, value) {
            ("seccomp", Some("unconfined")) => s.seccomp = Some(Seccomp::Unconfined),
            ("seccomp", Some(file)) if !file.is_empty() => {
                let path = absolute(&ctx.base_dir, file);
                let json = std::fs::read_to_string(&path).map_err(|e| {
                    ctx.err(
                        &at.k(i),
                        format!("service {name}: security_opt seccomp profile {path}: {e}"),
                    )
                })?;
                if let Err(e) = serde_json::from_str::<Value>(&json) {
                    return Err(ctx.err(
                        &at.k(i),
                        format!("service {name}: seccomp profile {path}: not valid JSON: {e}"),
                    ));
                }
                s.seccomp = Some(Seccomp::Profile { source: path, json });
            }
            ("no-new-privileges", None | Some("true")) => s.no_new_privileges = Some(true),
            ("no-new-privileges", Some("false")) => s.no_new_privileges = Some(false),
            _ => {
                return Err(ctx.err(
                    &at.k(i),
                    format!(
                        "service {name}: security_opt {o:?}: berth supports seccomp:PROFILE.json, seccomp:unconfined and no-new-privileges[:true|false]"
                    ),
                ))
            }
        }
    }
    Ok(())
}

fn list<'a>(ctx: &Ctx, v: &'a Value, path: &Path) -> Result<&'a [Value], SpecError> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(&[]),
        other => Err(ctx.err(
            path,
            format!("`{}` must be a list, not {}", path.key_name(), kind(other)),
        )),
    }
}

fn command(ctx: &Ctx, v: &Value, path: &Path) -> Result<Option<Vec<String>>, SpecError> {
    let words = words(ctx, v, path)?;
    for (i, a) in words.iter().flatten().enumerate() {
        let at = if v.is_array() {
            path.k(i)
        } else {
            path.clone()
        };
        validate::arg(a).map_err(|e| ctx.err(&at, format!("{}: {e}", path.last())))?;
    }
    Ok(words)
}

fn words(ctx: &Ctx, v: &Value, path: &Path) -> Result<Option<Vec<String>>, SpecError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => split_words(s)
            .map(Some)
            .map_err(|e| ctx.err(path, format!("{}: {e}", path.last()))),
        Value::Array(_) => ctx.strings(v, path).map(Some),
        other => Err(ctx.err(
            path,
            format!(
                "`{}` must be a string or a list of strings, not {}",
                path.last(),
                kind(other)
            ),
        )),
    }
}

/// `env_file` entries in order, then `environment` (which wins). An `environment` entry
/// without a value takes the variable from the environment of whoever applies (or `.env`),
/// and is left out when that is not set, as Compose does.
fn environment(
    ctx: &mut Ctx,
    name: &str,
    m: &Map<String, Value>,
    s: &mut Service,
) -> Result<(), SpecError> {
    let at = Path::root().k("services").k(name);
    if let Some(x) = m.get("env_file") {
        let p = at.k("env_file");
        let items: Vec<Value> = match x {
            Value::Array(a) => a.clone(),
            Value::Null => vec![],
            other => vec![other.clone()],
        };
        for (i, e) in items.iter().enumerate() {
            let ip = if matches!(x, Value::Array(_)) {
                p.k(i)
            } else {
                p.clone()
            };
            let (file, required) = match e {
                Value::String(f) => (f.clone(), true),
                Value::Object(o) => {
                    ctx.check_keys(o, &ip, "env_file", &["path", "required", "format"], &[])?;
                    let f = o
                        .get("path")
                        .map(|v| ctx.string(v, &ip.k("path")))
                        .transpose()?
                        .ok_or_else(|| ctx.err(&ip, "an env_file entry needs a `path`"))?;
                    let req = o
                        .get("required")
                        .map(|v| ctx.boolean(v, &ip.k("required")))
                        .transpose()?
                        .unwrap_or(true);
                    if let Some(fmt) = o.get("format") {
                        if fmt.as_str() != Some("raw") {
                            let f = ctx.string(fmt, &ip.k("format"))?;
                            return Err(ctx.err(
                                &ip.k("format"),
                                format!("env_file format {f:?}: only raw is known"),
                            ));
                        }
                    }
                    (f, req)
                }
                other => {
                    return Err(ctx.err(
                        &ip,
                        format!("`env_file` entries must be paths, not {}", kind(other)),
                    ))
                }
            };
            let path = PathBuf::from(absolute(&ctx.base_dir, &file));
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let vars = ctx.vars.clone();
                    let lookup = |k: &str| vars.get(k).cloned();
                    let kv = parse_env_file(&text, &lookup).map_err(|(line, msg)| SpecError {
                        file: path.display().to_string(),
                        line: line as u32,
                        column: 1,
                        message: msg,
                    })?;
                    s.environment.extend(kv);
                }
                Err(e) if required => {
                    return Err(ctx.err(
                        &ip,
                        format!("service {name}: env_file {}: {e}", path.display()),
                    ))
                }
                Err(_) => {}
            }
        }
    }
    if let Some(x) = m.get("environment") {
        for (k, val) in ctx.kv(x, &at.k("environment"))? {
            validate::env_entry(&format!("{k}={}", val.as_deref().unwrap_or_default()))
                .map_err(|e| ctx.err(&at.k("environment").k(&k), format!("environment: {e}")))?;
            match val {
                Some(v) => {
                    s.environment.insert(k, v);
                }
                None => {
                    if let Some(v) = ctx.vars.get(&k) {
                        s.environment.insert(k, v.clone());
                    }
                }
            }
        }
    }
    Ok(())
}

fn healthcheck(ctx: &mut Ctx, name: &str, v: &Value) -> Result<Option<Healthcheck>, SpecError> {
    let base = Path::root().k("services").k(name).k("healthcheck");
    let Some(m) = ctx.map(v, &base)? else {
        return Ok(None);
    };
    let m = m.clone();
    ctx.check_keys(
        &m,
        &base,
        "healthcheck",
        &[
            "test",
            "disable",
            "interval",
            "timeout",
            "retries",
            "start_period",
            "start_interval",
        ],
        &[],
    )?;
    let disabled = match m.get("disable") {
        Some(d) => ctx.boolean(d, &base.k("disable"))?,
        None => false,
    };
    let test = match m.get("test") {
        _ if disabled => vec!["NONE".to_string()],
        Some(Value::String(s)) if s == "NONE" => vec!["NONE".to_string()],
        Some(Value::String(s)) if !s.trim().is_empty() => vec!["CMD-SHELL".to_string(), s.clone()],
        Some(t @ Value::Array(_)) => {
            let l = ctx.strings(t, &base.k("test"))?;
            validate::healthcheck_test(&l).map_err(|e| ctx.err(&base.k("test"), e))?;
            l
        }
        None => return Err(ctx.err(&base, format!("service {name}: healthcheck needs a `test`"))),
        Some(other) => {
            return Err(ctx.err(
                &base.k("test"),
                format!(
                    "healthcheck test must be a command string or a list, not {}",
                    show(other)
                ),
            ))
        }
    };
    let mut h = Healthcheck {
        test,
        interval_ms: None,
        timeout_ms: None,
        retries: None,
        start_period_ms: None,
    };
    if h.test[0] == "NONE" {
        return Ok(Some(h));
    }
    if let Some(x) = m.get("interval") {
        h.interval_ms = Some(ctx.duration_ms(x, &base.k("interval"))?);
    }
    if let Some(x) = m.get("timeout") {
        h.timeout_ms = Some(ctx.duration_ms(x, &base.k("timeout"))?);
    }
    if let Some(x) = m.get("start_period") {
        h.start_period_ms = Some(ctx.duration_ms(x, &base.k("start_period"))?);
    }
    if let Some(x) = m.get("start_interval") {
        ctx.duration_ms(x, &base.k("start_interval"))?;
        ctx.warn(
            &base.k("start_interval"),
            "healthcheck start_interval is not applied by berth: checks run every `interval`",
        );
    }
    if let Some(x) = m.get("retries") {
        h.retries = Some(ctx.uint(x, &base.k("retries"), u32::MAX as u64)? as u32);
    }
    for (v, k) in [(h.interval_ms, "interval"), (h.timeout_ms, "timeout")] {
        if v == Some(0) {
            return Err(ctx.err(&base.k(k), format!("healthcheck {k} must be more than 0")));
        }
    }
    Ok(Some(h))
}

fn depends_on(ctx: &mut Ctx, name: &str, v: &Value, s: &mut Service) -> Result<(), SpecError> {
    let at = Path::root().k("services").k(name).k("depends_on");
    let started = DependsOn {
        condition: Condition::ServiceStarted,
        required: true,
        restart: false,
    };
    match v {
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                let d = match e {
                    Value::String(d) => d,
                    other => {
                        return Err(ctx.err(
                            &at.k(i),
                            format!(
                                "`depends_on` entries must be service names, not {}",
                                kind(other)
                            ),
                        ))
                    }
                };
                s.depends_on.insert(d.clone(), started.clone());
            }
        }
        Value::Object(o) => {
            for (d, spec) in o {
                let dp = at.k(d);
                let Some(sm) = ctx.map(spec, &dp)?.cloned() else {
                    s.depends_on.insert(d.clone(), started.clone());
                    continue;
                };
                ctx.check_keys(
                    &sm,
                    &dp,
                    &format!("depends_on {d}"),
                    &["condition", "required", "restart"],
                    &[],
                )?;
                let condition = match sm.get("condition") {
                    None => Condition::ServiceStarted,
                    Some(c) => match ctx.string(c, &dp.k("condition"))?.as_str() {
                        "service_started" => Condition::ServiceStarted,
                        "service_healthy" => Condition::ServiceHealthy,
                        "service_completed_successfully" => Condition::ServiceCompletedSuccessfully,
                        other => {
                            return Err(ctx.err(
                                &dp.k("condition"),
                                format!("depends_on {d}: unknown condition {other:?} (service_started, service_healthy, service_completed_successfully)"),
                            ))
                        }
                    },
                };
                let required = match sm.get("required") {
                    Some(r) => ctx.boolean(r, &dp.k("required"))?,
                    None => true,
                };
                let restart = match sm.get("restart") {
                    Some(r) => ctx.boolean(r, &dp.k("restart"))?,
                    None => false,
                };
                s.depends_on.insert(
                    d.clone(),
                    DependsOn {
                        condition,
                        required,
                        restart,
                    },
                );
            }
        }
        Value::Null => {}
        other => {
            return Err(ctx.err(
                &at,
                format!(
                    "`depends_on` must be a list or a mapping, not {}",
                    kind(other)
                ),
            ))
        }
    }
    if s.depends_on.contains_key(name) {
        return Err(ctx.err(&at.k(name), format!("dependency cycle: {name} -> {name}")));
    }
    Ok(())
}

fn networks(
    ctx: &mut Ctx,
    name: &str,
    v: &Value,
    declared: &Declared,
    s: &mut Service,
) -> Result<(), SpecError> {
    let at = Path::root().k("services").k(name).k("networks");
    // (network, where it is named, its options)
    type Entry = (String, Path, Option<Map<String, Value>>);
    let mut names: Vec<Entry> = Vec::new();
    match v {
        Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                let n = ctx.string(e, &at.k(i))?;
                names.push((n, at.k(i), None));
            }
        }
        Value::Object(o) => {
            for (n, spec) in o {
                let m = ctx.map(spec, &at.k(n))?.cloned();
                names.push((n.clone(), at.k(n), m));
            }
        }
        Value::Null => {}
        other => {
            return Err(ctx.err(
                &at,
                format!(
                    "`networks` must be a list or a mapping, not {}",
                    kind(other)
                ),
            ))
        }
    }
    for (n, np, spec) in names {
        if n != "default" && !declared.networks.contains_key(&n) {
            return Err(ctx.err(
                &np,
                format!("service {name} uses network {n:?}, which is not declared under the top-level `networks`"),
            ));
        }
        let mut sn = ServiceNetwork::default();
        if let Some(m) = spec {
            ctx.check_keys(
                &m,
                &np,
                &format!("network {n}"),
                &["aliases"],
                &[
                    "ipv4_address",
                    "ipv6_address",
                    "link_local_ips",
                    "mac_address",
                    "driver_opts",
                    "priority",
                    "gw_priority",
                    "interface_name",
                ],
            )?;
            if let Some(a) = m.get("aliases") {
                sn.aliases = ctx.strings(a, &np.k("aliases"))?;
            }
        }
        s.networks.insert(n, sn);
    }
    Ok(())
}

fn deploy(ctx: &mut Ctx, name: &str, v: &Value, s: &mut Service) -> Result<(), SpecError> {
    let at = Path::root().k("services").k(name).k("deploy");
    let Some(m) = ctx.map(v, &at)?.cloned() else {
        return Ok(());
    };
    ctx.check_keys(
        &m,
        &at,
        "deploy",
        &["replicas", "resources", "restart_policy", "labels", "mode"],
        &[
            "endpoint_mode",
            "placement",
            "rollback_config",
            "update_config",
        ],
    )?;
    if let Some(x) = m.get("mode") {
        let mode = ctx.string(x, &at.k("mode"))?;
        if mode != "replicated" {
            ctx.unsupported(
                &at.k("mode"),
                format!("deploy.mode {mode:?} is not supported by berth (replicated)"),
            )?;
        }
    }
    if let Some(x) = m.get("replicas") {
        s.replicas = ctx.uint(x, &at.k("replicas"), u32::MAX as u64)? as u32;
    }
    if let Some(x) = m.get("resources") {
        let rp = at.k("resources");
        let r = ctx.map(x, &rp)?.cloned().unwrap_or_default();
        ctx.check_keys(
            &r,
            &rp,
            "deploy.resources",
            &["limits", "reservations"],
            &[],
        )?;
        if let Some(l) = r.get("limits") {
            let lp = rp.k("limits");
            let l = ctx.map(l, &lp)?.cloned().unwrap_or_default();
            ctx.check_keys(
                &l,
                &lp,
                "deploy.resources.limits",
                &["memory", "cpus", "pids"],
                &["devices"],
            )?;
            if let Some(x) = l.get("memory") {
                let m = ctx.size(x, &lp.k("memory"))?;
                validate::memory_bytes(m).map_err(|e| {
                    ctx.err(
                        &lp.k("memory"),
                        format!("deploy.resources.limits.memory: {e}"),
                    )
                })?;
                s.limits.memory_bytes = Some(m);
            }
            if let Some(x) = l.get("cpus") {
                let t = ctx.string(x, &lp.k("cpus"))?;
                let c: f64 = t.trim().parse().map_err(|_| {
                    ctx.err(
                        &lp.k("cpus"),
                        format!("cpus {t:?} must be a number like 0.5"),
                    )
                })?;
                if !(c > 0.0 && c.is_finite()) {
                    return Err(ctx.err(&lp.k("cpus"), "cpus must be more than 0"));
                }
                s.limits.cpus = Some(c);
            }
            if let Some(x) = l.get("pids") {
                let n = match x {
                    Value::Number(n) => n.as_i64(),
                    Value::String(t) => t.trim().parse::<i64>().ok(),
                    _ => None,
                };
                s.limits.pids = Some(match n {
                    Some(n) if n >= -1 && n != 0 => n,
                    _ => {
                        return Err(ctx.err(
                            &lp.k("pids"),
                            format!(
                                "pids must be a whole number above 0 (or -1 for no limit), not {}",
                                show(x)
                            ),
                        ))
                    }
                });
            }
        }
        if r.contains_key("reservations") {
            ctx.warn(
                &rp.k("reservations"),
                "deploy.resources.reservations are not enforced by berth",
            );
        }
    }
    if let Some(x) = m.get("restart_policy") {
        let rp = at.k("restart_policy");
        let r = ctx.map(x, &rp)?.cloned().unwrap_or_default();
        ctx.check_keys(
            &r,
            &rp,
            "deploy.restart_policy",
            &["condition", "delay", "max_attempts", "window"],
            &[],
        )?;
        let cond = match r.get("condition") {
            Some(c) => ctx.string(c, &rp.k("condition"))?,
            None => "any".to_string(),
        };
        if !matches!(cond.as_str(), "none" | "on-failure" | "any") {
            return Err(ctx.err(
                &rp.k("condition"),
                format!("restart_policy condition {cond:?}: expected none, on-failure or any"),
            ));
        }
        let delay_ms = r
            .get("delay")
            .map(|d| ctx.duration_ms(d, &rp.k("delay")))
            .transpose()?;
        let max_attempts = r
            .get("max_attempts")
            .map(|n| ctx.uint(n, &rp.k("max_attempts"), u32::MAX as u64))
            .transpose()?
            .map(|n| n as u32);
        if let Some(w) = r.get("window") {
            ctx.duration_ms(w, &rp.k("window"))?;
            ctx.warn(
                &rp.k("window"),
                "deploy.restart_policy.window is not applied by berth",
            );
        }
        s.restart_policy = Some(RestartPolicySpec {
            condition: cond,
            max_attempts,
            delay_ms,
        });
    }
    if let Some(x) = m.get("labels") {
        for (k, v) in ctx.kv(x, &at.k("labels"))? {
            s.labels.insert(k, v.unwrap_or_default());
        }
    }
    Ok(())
}

fn volume_mount(
    ctx: &mut Ctx,
    v: &Value,
    path: &Path,
    declared: &Declared,
) -> Result<VolumeMount, SpecError> {
    let fail = |ctx: &Ctx, msg: String| ctx.err(path, format!("volumes: {msg}"));
    let check_named = |ctx: &Ctx, src: &str| -> Result<(), SpecError> {
        if declared.volumes.contains_key(src) {
            Ok(())
        } else {
            Err(fail(
                ctx,
                format!("named volume {src:?} is not declared under the top-level `volumes`"),
            ))
        }
    };
    match v {
        Value::String(spec) => {
            let v = parse_volume(spec, &ctx.base_dir).map_err(|e| fail(ctx, e))?;
            if let Some(e) = v.unsupported() {
                ctx.unsupported(path, format!("volumes: {spec:?}: {e}"))?;
            }
            let (kind, source) = match v.source {
                volumes::Source::Anonymous => (MountType::Volume, String::new()),
                volumes::Source::Bind(p) => (MountType::Bind, p),
                volumes::Source::Named(n) => {
                    check_named(ctx, &n)?;
                    (MountType::Volume, n)
                }
            };
            Ok(VolumeMount {
                kind,
                source,
                target: v.target,
                read_only: v.read_only,
                tmpfs_size: None,
            })
        }
        Value::Object(o) => {
            ctx.check_keys(
                o,
                path,
                "volume",
                &[
                    "type",
                    "source",
                    "target",
                    "read_only",
                    "bind",
                    "volume",
                    "tmpfs",
                    "consistency",
                ],
                &["image"],
            )?;
            let kind = match o.get("type") {
                None => MountType::Volume,
                Some(t) => match ctx.string(t, &path.k("type"))?.as_str() {
                    "bind" => MountType::Bind,
                    "volume" => MountType::Volume,
                    "tmpfs" => MountType::Tmpfs,
                    other @ ("npipe" | "cluster" | "image") => {
                        return Err(ctx.err(
                            &path.k("type"),
                            format!("volumes: mount type {other:?} is not supported by berth"),
                        ))
                    }
                    other => {
                        return Err(ctx.err(
                            &path.k("type"),
                            format!("volumes: unknown mount type {other:?} (bind, volume, tmpfs)"),
                        ))
                    }
                },
            };
            let target = match o.get("target") {
                Some(t) => ctx.string(t, &path.k("target"))?,
                None => return Err(fail(ctx, "a long-syntax volume needs a `target`".into())),
            };
            let source = match o.get("source") {
                Some(s) => ctx.string(s, &path.k("source"))?,
                None => String::new(),
            };
            let source = match kind {
                MountType::Bind => {
                    if source.is_empty() {
                        return Err(fail(ctx, "a bind mount needs a `source`".into()));
                    }
                    absolute(&ctx.base_dir, &source)
                }
                MountType::Volume => {
                    if !source.is_empty() {
                        check_named(ctx, &source)?;
                    }
                    source
                }
                MountType::Tmpfs => {
                    if !source.is_empty() {
                        return Err(
                            ctx.err(&path.k("source"), "volumes: a tmpfs mount has no `source`")
                        );
                    }
                    source
                }
            };
            let read_only = match o.get("read_only") {
                Some(r) => ctx.boolean(r, &path.k("read_only"))?,
                None => false,
            };
            let sub = |ctx: &mut Ctx,
                       key: &str,
                       allowed: &[&str],
                       known: &[&str]|
             -> Result<Option<Map<String, Value>>, SpecError> {
                let Some(x) = o.get(key) else { return Ok(None) };
                let m = ctx.map(x, &path.k(key))?.cloned().unwrap_or_default();
                ctx.check_keys(&m, &path.k(key), &format!("volume {key}"), allowed, known)?;
                Ok(Some(m))
            };
            if let Some(b) = sub(
                ctx,
                "bind",
                &["create_host_path", "selinux", "propagation"],
                &["recursive"],
            )? {
                if kind != MountType::Bind {
                    return Err(ctx.err(&path.k("bind"), "volumes: `bind` options need type: bind"));
                }
                if let Some(p) = b.get("propagation") {
                    let p = ctx.string(p, &path.k("bind").k("propagation"))?;
                    if let Some(e) = volumes::unsupported_propagation(&p) {
                        ctx.unsupported(&path.k("bind").k("propagation"), format!("volumes: {e}"))?;
                    }
                }
                if let Some(c) = b.get("create_host_path") {
                    ctx.boolean(c, &path.k("bind").k("create_host_path"))?;
                }
            }
            if let Some(vo) = sub(ctx, "volume", &["nocopy"], &["subpath"])? {
                if kind != MountType::Volume {
                    return Err(ctx.err(
                        &path.k("volume"),
                        "volumes: `volume` options need type: volume",
                    ));
                }
                if let Some(n) = vo.get("nocopy") {
                    ctx.boolean(n, &path.k("volume").k("nocopy"))?;
                }
            }
            let mut tmpfs_size = None;
            if let Some(t) = sub(ctx, "tmpfs", &["size", "mode"], &[])? {
                if kind != MountType::Tmpfs {
                    return Err(ctx.err(
                        &path.k("tmpfs"),
                        "volumes: `tmpfs` options need type: tmpfs",
                    ));
                }
                if let Some(sz) = t.get("size") {
                    let n = ctx.size(sz, &path.k("tmpfs").k("size"))?;
                    if n == 0 {
                        return Err(ctx.err(
                            &path.k("tmpfs").k("size"),
                            "volumes: a tmpfs size must be above 0",
                        ));
                    }
                    tmpfs_size = Some(n);
                }
                if let Some(md) = t.get("mode") {
                    ctx.uint(md, &path.k("tmpfs").k("mode"), 0o7777)?;
                }
            }
            let target = mount_target(&target)
                .map_err(|e| ctx.err(&path.k("target"), format!("volumes: {e}")))?;
            Ok(VolumeMount {
                kind,
                source,
                target,
                read_only,
                tmpfs_size,
            })
        }
        other => Err(fail(
            ctx,
            format!(
                "a volume must be a string like src:/dst or a mapping, not {}",
                kind(other)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words() {
        assert_eq!(
            split_words(r#"sh -c 'echo "a b"' x\ y "q\"t""#).unwrap(),
            vec!["sh", "-c", "echo \"a b\"", "x y", "q\"t"]
        );
        assert_eq!(split_words("  ").unwrap(), Vec::<String>::new());
        assert_eq!(split_words("a ''").unwrap(), vec!["a", ""]);
        assert!(split_words("'open").is_err());
        assert!(split_words("\"open").is_err());
    }

    #[test]
    fn names() {
        assert!(valid_name("web-1.a_b"));
        assert!(!valid_name("-web"));
        assert!(!valid_name("we b"));
        assert!(!valid_name(""));
    }
}

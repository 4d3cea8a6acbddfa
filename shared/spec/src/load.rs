//! Loading: read the files, parse the YAML with positions (`tree.rs`), interpolate, merge
//! several files the way Compose does, then validate into a [`Project`].

use crate::ctx::{kind, with_subject, Ctx, Path, Source};
use crate::error::SpecError;
use crate::interpolate::{interpolate, parse_env_file};
use crate::model::*;
use crate::service::{service, valid_name, Declared};
use crate::tree;
use berth_proto::validate;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// Files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// One or more files, merged in order (later ones override).
    pub files: Vec<PathBuf>,
    /// `-p`: wins over `name:` and the directory name.
    pub project_name: Option<String>,
    /// Variables for interpolation; the process environment when `None`. The `.env` file
    /// beside the first file adds the ones not set here.
    pub env: Option<BTreeMap<String, String>>,
    /// Turn unsupported keys into warnings instead of errors.
    pub allow_unsupported: bool,
    /// Profiles to enable (services with `profiles:` are left out unless one is enabled).
    pub profiles: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Loaded {
    pub project: Project,
    pub warnings: Vec<String>,
}

/// Load and validate a project from files.
pub fn load(opts: &LoadOptions) -> Result<Loaded, SpecError> {
    if opts.files.is_empty() {
        return Err(SpecError::new("spec", None, "no compose file given"));
    }
    let mut texts = Vec::new();
    for f in &opts.files {
        let name = f.display().to_string();
        let meta = std::fs::metadata(f)
            .map_err(|e| SpecError::new(&name, None, format!("cannot read: {e}")))?;
        if meta.len() > MAX_FILE_BYTES as u64 {
            return Err(too_large(&name, meta.len()));
        }
        let text = std::fs::read_to_string(f)
            .map_err(|e| SpecError::new(&name, None, format!("cannot read: {e}")))?;
        texts.push((name, text));
    }
    let first = &opts.files[0];
    let base_dir = match first.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
    load_texts(texts, base_dir, opts)
}

fn too_large(name: &str, len: u64) -> SpecError {
    SpecError::new(
        name,
        None,
        format!("file is {len} bytes; berth refuses spec files over {MAX_FILE_BYTES} bytes"),
    )
}

/// Load from texts already read (`(file name, text)`), with relative paths resolved against
/// `base_dir` (where the `.env` file is looked for, and whose name is the default project
/// name).
pub fn load_texts(
    texts: Vec<(String, String)>,
    base_dir: PathBuf,
    opts: &LoadOptions,
) -> Result<Loaded, SpecError> {
    if texts.is_empty() {
        return Err(SpecError::new("spec", None, "no compose file given"));
    }
    // Variables: given (or the process's), plus `.env` for what is not set.
    let mut vars: BTreeMap<String, String> = match &opts.env {
        Some(e) => e.clone(),
        None => std::env::vars().collect(),
    };
    let dotenv = base_dir.join(".env");
    if let Ok(text) = std::fs::read_to_string(&dotenv) {
        let given = vars.clone();
        let lookup = |k: &str| given.get(k).cloned();
        let entries = parse_env_file(&text, &lookup).map_err(|(line, msg)| SpecError {
            file: dotenv.display().to_string(),
            line: line as u32,
            column: 1,
            message: msg,
        })?;
        for (k, v) in entries {
            vars.entry(k).or_insert(v);
        }
    }
    let mut ctx = Ctx {
        sources: Vec::new(),
        base_dir,
        vars,
        allow_unsupported: opts.allow_unsupported,
        warnings: Vec::new(),
    };

    let mut merged = Value::Object(Map::new());
    for (name, text) in texts {
        if text.len() > MAX_FILE_BYTES {
            return Err(too_large(&name, text.len() as u64));
        }
        let (mut doc, positions) = tree::parse(&text)
            .map_err(|e| SpecError::new(&name, e.pos, format!("invalid YAML: {}", e.message)))?;
        ctx.sources.push(Source {
            name: name.clone(),
            positions,
        });
        let single = |path: &Path, msg: String| {
            let (_, pos) = ctx.locate(path);
            SpecError::new(&name, pos, with_subject(path, msg))
        };
        match &doc {
            Value::Object(_) => {}
            Value::Null => doc = Value::Object(Map::new()),
            other => {
                return Err(single(
                    &Path::root(),
                    format!(
                        "a compose file must be a mapping with a `services` key, not {}",
                        kind(other)
                    ),
                ))
            }
        }
        let mut unset = Vec::new();
        let mut path = Path::root();
        interpolate_value(&mut doc, &ctx.vars, &mut unset, &mut path)
            .map_err(|(p, msg)| single(&p, msg))?;
        unset.sort();
        unset.dedup();
        for v in unset {
            ctx.warnings.push(format!(
                "{name}: the {v} variable is not set; using an empty string"
            ));
        }
        merge(&mut merged, doc, &[]);
    }
    let project = validate(&mut ctx, &merged, opts)?;
    Ok(Loaded {
        project,
        warnings: ctx.warnings,
    })
}

/// Interpolate every string value (not keys), in place.
fn interpolate_value(
    v: &mut Value,
    vars: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
    path: &mut Path,
) -> Result<(), (Path, String)> {
    match v {
        Value::String(s) => {
            let lookup = |k: &str| vars.get(k).cloned();
            *s = interpolate(s, &lookup, unset).map_err(|e| (path.clone(), e))?;
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                path.0.push(i.to_string());
                interpolate_value(x, vars, unset, path)?;
                path.0.pop();
            }
        }
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                path.0.push(k.clone());
                interpolate_value(x, vars, unset, path)?;
                path.0.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// Compose's merge of an override file into a base: maps merge recursively (an empty value
/// in the override keeps the base); scalars, `command`, `entrypoint` and `healthcheck.test`
/// are replaced; `ports`, `expose`, `dns`, `cap_add`, `cap_drop`, `profiles`, `env_file` are
/// appended without duplicates; `environment` and `labels` merge by key and `depends_on` and
/// `networks` by name (list or map form alike); `volumes` and `tmpfs` merge by target, and
/// `devices` by container path.
pub fn merge(base: &mut Value, over: Value, path: &[&str]) {
    let key = path.last().copied().unwrap_or("");
    let in_service = path.len() == 3 && path[0] == "services";
    match (base, over) {
        (_, Value::Null) if !path.is_empty() => {}
        (b, o) if in_service && matches!(key, "environment" | "labels") => {
            let mut m = kv_map(b);
            for (k, v) in kv_map(&o) {
                m.insert(k, v);
            }
            *b = Value::Object(m);
        }
        (b, o)
            if in_service
                && matches!(key, "depends_on" | "networks")
                && (b.is_array() || o.is_array()) =>
        {
            let mut m = names_map(b, key);
            for (k, v) in names_map(&o, key) {
                let mut p = path.to_vec();
                p.push(&k);
                match m.get_mut(&k) {
                    Some(existing) => merge(existing, v, &p),
                    None => {
                        m.insert(k.clone(), v);
                    }
                }
            }
            *b = Value::Object(m);
        }
        (b @ Value::Object(_), Value::Object(o)) => {
            let bm = b.as_object_mut().expect("matched an object");
            for (k, v) in o {
                let mut p = path.to_vec();
                p.push(&k);
                match bm.get_mut(&k) {
                    Some(existing) => merge(existing, v, &p),
                    None => {
                        bm.insert(k.clone(), v);
                    }
                }
            }
        }
        (Value::Array(b), Value::Array(o))
            if in_service
                && matches!(
                    key,
                    "ports" | "expose" | "dns" | "cap_add" | "cap_drop" | "profiles" | "env_file"
                ) =>
        {
            for x in o {
                if !b.contains(&x) {
                    b.push(x);
                }
            }
        }
        (Value::Array(b), Value::Array(o))
            if in_service && matches!(key, "volumes" | "tmpfs" | "devices") =>
        {
            let target = if key == "devices" {
                device_target
            } else {
                mount_target
            };
            for x in o {
                let t = target(&x);
                if let Some(pos) = b.iter().position(|y| t.is_some() && target(y) == t) {
                    b[pos] = x;
                } else {
                    b.push(x);
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn mount_target(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => {
            let parts: Vec<&str> = s.split(':').collect();
            Some(if parts.len() >= 2 { parts[1] } else { parts[0] }.to_string())
        }
        Value::Object(m) => m.get("target").and_then(|t| t.as_str()).map(String::from),
        _ => None,
    }
}

/// The container path of a `devices:` entry.
fn device_target(v: &Value) -> Option<String> {
    berth_proto::isolator::DeviceMapping::parse(v.as_str()?)
        .ok()
        .map(|d| d.container_path)
}

/// `environment` / `labels` in list (`K=V`, `K`) or map form, as a map (null = no value).
fn kv_map(v: &Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str())
            .map(|s| match s.split_once('=') {
                Some((k, v)) => (k.to_string(), Value::String(v.to_string())),
                None => (s.to_string(), Value::Null),
            })
            .collect(),
        _ => Map::new(),
    }
}

/// `depends_on` / `networks` in list or map form, as a map.
fn names_map(v: &Value, key: &str) -> Map<String, Value> {
    match v {
        Value::Object(m) => m.clone(),
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str())
            .map(|s| {
                let v = if key == "depends_on" {
                    serde_json::json!({"condition": "service_started"})
                } else {
                    Value::Null
                };
                (s.to_string(), v)
            })
            .collect(),
        _ => Map::new(),
    }
}

const TOP_KEYS: &[&str] = &["version", "name", "services", "volumes", "networks"];
const COMPOSE_ONLY_TOP_KEYS: &[&str] = &["include", "secrets", "configs", "models"];

fn validate(ctx: &mut Ctx, doc: &Value, opts: &LoadOptions) -> Result<Project, SpecError> {
    let top = doc.as_object().expect("checked");
    ctx.check_keys(
        top,
        &Path::root(),
        "top level",
        TOP_KEYS,
        COMPOSE_ONLY_TOP_KEYS,
    )?;
    if top.contains_key("version") {
        ctx.warn(
            &Path::root().k("version"),
            "`version` is obsolete and ignored",
        );
    }
    let name = project_name(ctx, top, opts)?;

    let mut volumes = BTreeMap::new();
    if let Some(v) = top.get("volumes") {
        let at = Path::root().k("volumes");
        let m = ctx.map(v, &at)?.cloned().unwrap_or_default();
        for (k, def) in &m {
            volumes.insert(k.clone(), top_volume(ctx, k, def)?);
        }
    }
    let mut networks = BTreeMap::new();
    if let Some(v) = top.get("networks") {
        let at = Path::root().k("networks");
        let m = ctx.map(v, &at)?.cloned().unwrap_or_default();
        for (k, def) in &m {
            networks.insert(k.clone(), top_network(ctx, k, def)?);
        }
    }

    let services_m = match top.get("services") {
        None => {
            return Err(ctx.err(&Path::root(), "no `services` defined"));
        }
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(ctx.err(
                &Path::root().k("services"),
                format!(
                    "`services` must be a mapping of service names, not {}",
                    kind(other)
                ),
            ))
        }
    };
    let declared = Declared {
        volumes: &volumes,
        networks: &networks,
    };
    let mut all = BTreeMap::new();
    for (sname, sv) in services_m {
        if !valid_name(sname) {
            return Err(ctx.err(
                &Path::root().k("services").k(sname),
                format!("service name {sname:?} must be letters, digits, '.', '_' or '-', starting with a letter or digit"),
            ));
        }
        all.insert(sname.clone(), service(ctx, sname, sv, &declared)?);
    }
    for p in &opts.profiles {
        if !all.values().any(|s| s.profiles.contains(p)) {
            ctx.warnings
                .push(format!("no service has the profile {p:?}"));
        }
    }
    let active =
        |s: &Service| s.profiles.is_empty() || s.profiles.iter().any(|p| opts.profiles.contains(p));
    let mut services: BTreeMap<String, Service> = all
        .iter()
        .filter(|(_, s)| active(s))
        .map(|(n, s)| (n.clone(), s.clone()))
        .collect();
    if services.is_empty() && !all.is_empty() {
        ctx.warnings.push(
            "no service is active: every service has a profile and none of them is enabled".into(),
        );
    }
    // References between services: depends_on, network_mode: service:NAME.
    for (sname, s) in services.iter_mut() {
        let at = Path::root().k("services").k(sname.as_str());
        let mut dropped = Vec::new();
        for (dep, d) in &s.depends_on {
            match all.get(dep) {
                None => {
                    return Err(ctx.err(
                        &at.k("depends_on").k(dep),
                        format!("service {sname} depends on unknown service {dep}"),
                    ))
                }
                Some(ds) if !active(ds) => {
                    if d.required {
                        return Err(ctx.err(
                            &at.k("depends_on").k(dep),
                            format!(
                                "service {sname} depends on {dep}, which is only in profile(s) {} (enable one, or set `required: false`)",
                                ds.profiles.join(", ")
                            ),
                        ));
                    }
                    dropped.push(dep.clone());
                }
                Some(_) => {}
            }
        }
        for d in dropped {
            s.depends_on.remove(&d);
        }
        if let Some(other) = s
            .network_mode
            .as_deref()
            .and_then(|m| m.strip_prefix("service:"))
        {
            if !all.get(other).is_some_and(&active) {
                return Err(ctx.err(
                    &at.k("network_mode"),
                    format!("service {sname} uses the network of unknown service {other}"),
                ));
            }
            // As Compose: the other service starts first.
            s.depends_on.entry(other.to_string()).or_insert(DependsOn {
                condition: Condition::ServiceStarted,
                required: true,
                restart: false,
            });
        }
    }
    if let Some(cycle) = find_cycle(&services) {
        return Err(ctx.err(
            &Path::root()
                .k("services")
                .k(&cycle[0])
                .k("depends_on")
                .k(&cycle[1]),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    let project = Project {
        name,
        services,
        volumes,
        networks,
    };
    node_names(ctx, &project)?;
    Ok(project)
}

/// The names the project's containers, volumes and networks take on the node must be names
/// the supervisor and the isolator take (the same checks, `berth_proto::validate`).
fn node_names(ctx: &Ctx, p: &Project) -> Result<(), SpecError> {
    for key in p.volumes.keys() {
        // At its `name:` when it has one.
        let at = Path::root().k("volumes").k(key).k("name");
        validate::volume_name(&p.volume_on_node(key))
            .map_err(|e| ctx.err(&at, format!("volume {key}: the name on the node: {e}")))?;
    }
    for key in p.networks.keys() {
        let at = Path::root().k("networks").k(key).k("name");
        validate::network_name(&p.network_on_node(key))
            .map_err(|e| ctx.err(&at, format!("network {key}: the name on the node: {e}")))?;
    }
    for (sname, s) in &p.services {
        let at = Path::root().k("services").k(sname);
        if s.container_name.is_none() {
            let longest = replica_name(&p.name, sname, s.replicas.max(1));
            validate::container_name(&longest).map_err(|e| {
                ctx.err(
                    &at,
                    format!("service {sname}: the name of its containers: {e}"),
                )
            })?;
        }
        if s.network_mode.is_none() {
            let key = s
                .networks
                .keys()
                .next()
                .map(String::as_str)
                .unwrap_or("default");
            validate::network_name(&p.network_on_node(key))
                .map_err(|e| ctx.err(&at, format!("service {sname}: the network it joins: {e}")))?;
        }
        for (i, v) in s.volumes.iter().enumerate() {
            if v.kind == MountType::Volume && v.source.is_empty() {
                validate::volume_name(&anonymous_volume(&p.name, sname, &v.target)).map_err(
                    |e| {
                        ctx.err(
                            &at.k("volumes").k(i),
                            format!("volumes: anonymous volume: {e}"),
                        )
                    },
                )?;
            }
        }
    }
    Ok(())
}

/// As Compose: `-p`, else `COMPOSE_PROJECT_NAME`, else `name:`, each of which must already be
/// a valid name; else the first file's directory, normalised.
fn project_name(
    ctx: &Ctx,
    top: &Map<String, Value>,
    opts: &LoadOptions,
) -> Result<String, SpecError> {
    let invalid = |n: &str| {
        format!("project name {n:?} must be lowercase letters, digits, '-' and '_', starting with a letter or digit")
    };
    if let Some(n) = &opts.project_name {
        return match normalize_project_name(n) {
            Some(x) if &x == n => Ok(x),
            _ => Err(SpecError::new("-p", None, invalid(n))),
        };
    }
    if let Some(n) = ctx
        .vars
        .get("COMPOSE_PROJECT_NAME")
        .filter(|n| !n.is_empty())
    {
        return match normalize_project_name(n) {
            Some(x) if &x == n => Ok(x),
            _ => Err(SpecError::new("COMPOSE_PROJECT_NAME", None, invalid(n))),
        };
    }
    match top.get("name") {
        Some(Value::String(n)) => match normalize_project_name(n) {
            Some(x) if &x == n => Ok(x),
            _ => Err(ctx.err(&Path::root().k("name"), invalid(n))),
        },
        Some(other) => Err(ctx.err(
            &Path::root().k("name"),
            format!("`name` must be a string, not {}", kind(other)),
        )),
        None => {
            let dir = ctx
                .base_dir
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            normalize_project_name(&dir).ok_or_else(|| {
                ctx.err(
                    &Path::root(),
                    format!("the directory name {dir:?} makes no project name: set `name:` or -p"),
                )
            })
        }
    }
}

/// Compose's normalisation: lowercase, only `[a-z0-9_-]`, starting with a letter or digit.
pub fn normalize_project_name(s: &str) -> Option<String> {
    let n: String = s
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let n = n.trim_start_matches(['_', '-']).to_string();
    (!n.is_empty()).then_some(n)
}

/// A dependency cycle, as the names along it (first = last).
fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        services: &BTreeMap<String, Service>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|x| x == n) {
            let mut c = stack[pos..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_string());
        if let Some(s) = services.get(n) {
            for d in s.depends_on.keys() {
                if let Some(c) = visit(d, services, stack, done) {
                    return Some(c);
                }
            }
        }
        stack.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in services.keys() {
        if let Some(c) = visit(n, services, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

fn top_volume(ctx: &mut Ctx, name: &str, v: &Value) -> Result<VolumeDef, SpecError> {
    let at = Path::root().k("volumes").k(name);
    let mut d = VolumeDef::default();
    let Some(m) = ctx.map(v, &at)?.cloned() else {
        return Ok(d);
    };
    ctx.check_keys(
        &m,
        &at,
        &format!("volume {name}"),
        &["external", "name", "labels", "driver"],
        &["driver_opts"],
    )?;
    if let Some(x) = m.get("external") {
        d.external = ctx.boolean(x, &at.k("external"))?;
    }
    if let Some(x) = m.get("name") {
        d.name = Some(ctx.string(x, &at.k("name"))?);
    }
    if let Some(x) = m.get("labels") {
        for (k, v) in ctx.kv(x, &at.k("labels"))? {
            d.labels.insert(k, v.unwrap_or_default());
        }
    }
    if let Some(x) = m.get("driver") {
        let drv = ctx.string(x, &at.k("driver"))?;
        if drv != "local" {
            ctx.unsupported(
                &at.k("driver"),
                format!("volume {name}: driver {drv:?} is not supported by berth (local)"),
            )?;
        }
    }
    Ok(d)
}

fn top_network(ctx: &mut Ctx, name: &str, v: &Value) -> Result<NetworkDef, SpecError> {
    let at = Path::root().k("networks").k(name);
    let mut d = NetworkDef::default();
    let Some(m) = ctx.map(v, &at)?.cloned() else {
        return Ok(d);
    };
    ctx.check_keys(
        &m,
        &at,
        &format!("network {name}"),
        &[
            "external",
            "name",
            "internal",
            "labels",
            "driver",
            "attachable",
        ],
        &["driver_opts", "ipam", "enable_ipv4", "enable_ipv6"],
    )?;
    if let Some(x) = m.get("external") {
        d.external = ctx.boolean(x, &at.k("external"))?;
    }
    if let Some(x) = m.get("name") {
        d.name = Some(ctx.string(x, &at.k("name"))?);
    }
    if let Some(x) = m.get("internal") {
        d.internal = ctx.boolean(x, &at.k("internal"))?;
    }
    if let Some(x) = m.get("attachable") {
        ctx.boolean(x, &at.k("attachable"))?;
    }
    if let Some(x) = m.get("labels") {
        for (k, v) in ctx.kv(x, &at.k("labels"))? {
            d.labels.insert(k, v.unwrap_or_default());
        }
    }
    if let Some(x) = m.get("driver") {
        let drv = ctx.string(x, &at.k("driver"))?;
        if drv != "bridge" {
            ctx.unsupported(
                &at.k("driver"),
                format!("network {name}: driver {drv:?} is not supported by berth (bridge)"),
            )?;
        }
    }
    Ok(d)
}

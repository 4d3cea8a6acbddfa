//! Loading: read the files, parse YAML (line/column errors, merge keys, duplicate keys
//! refused, alias and size budgets), interpolate, merge several files the way Compose does,
//! then validate into a [`Project`].

use crate::error::SpecError;
use crate::interpolate::{interpolate, parse_env_file};
use crate::locate::locate;
use crate::model::*;
use crate::units::{parse_duration_ms, parse_size};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

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

struct Source {
    name: String,
    text: String,
}

struct Ctx {
    sources: Vec<Source>,
    base_dir: PathBuf,
    allow_unsupported: bool,
    warnings: Vec<String>,
}

impl Ctx {
    /// An error at `path`, located in the last file that has it.
    fn err(&self, path: &[&str], msg: impl Into<String>) -> SpecError {
        let mut best: Option<(usize, (u32, u32), usize)> = None;
        for (i, s) in self.sources.iter().enumerate() {
            for depth in (1..=path.len()).rev() {
                if let Some(pos) = locate(&s.text, &path[..depth]) {
                    if best.map(|(d, _, _)| depth >= d).unwrap_or(true) {
                        best = Some((depth, pos, i));
                    }
                    break;
                }
            }
        }
        match best {
            Some((_, pos, i)) => SpecError::new(&self.sources[i].name, Some(pos), msg),
            None => SpecError::new(
                self.sources
                    .last()
                    .map(|s| s.name.as_str())
                    .unwrap_or("spec"),
                None,
                msg,
            ),
        }
    }

    fn unsupported(&mut self, path: &[&str], what: &str) -> Result<(), SpecError> {
        let e = self.err(path, what.to_string());
        if self.allow_unsupported {
            self.warnings.push(format!("{e} (ignored)"));
            Ok(())
        } else {
            Err(e)
        }
    }
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
        if meta.len() as usize > MAX_FILE_BYTES {
            return Err(SpecError::new(
                &name,
                None,
                format!(
                    "file is {} bytes; berth refuses spec files over {MAX_FILE_BYTES} bytes",
                    meta.len()
                ),
            ));
        }
        let text = std::fs::read_to_string(f)
            .map_err(|e| SpecError::new(&name, None, format!("cannot read: {e}")))?;
        texts.push((name, text));
    }
    let first = &opts.files[0];
    let base_dir = first
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let base_dir = std::fs::canonicalize(&base_dir).unwrap_or(base_dir);
    load_texts(texts, base_dir, opts)
}

/// Load from texts already read (`(file name, text)`), with relative paths resolved against
/// `base_dir`.
pub fn load_texts(
    texts: Vec<(String, String)>,
    base_dir: PathBuf,
    opts: &LoadOptions,
) -> Result<Loaded, SpecError> {
    let mut ctx = Ctx {
        sources: texts
            .into_iter()
            .map(|(name, text)| Source { name, text })
            .collect(),
        base_dir,
        allow_unsupported: opts.allow_unsupported,
        warnings: Vec::new(),
    };

    // Variables: given (or the process's), plus .env for what is not set.
    let mut vars: BTreeMap<String, String> = match &opts.env {
        Some(e) => e.clone(),
        None => std::env::vars().collect(),
    };
    let dotenv = ctx.base_dir.join(".env");
    if let Ok(text) = std::fs::read_to_string(&dotenv) {
        let entries = parse_env_file(&text).map_err(|(line, msg)| SpecError {
            file: dotenv.display().to_string(),
            line: line as u32,
            column: 1,
            message: msg,
        })?;
        for (k, v) in entries {
            vars.entry(k).or_insert(v);
        }
    }

    let mut merged = Value::Object(Map::new());
    for i in 0..ctx.sources.len() {
        let (name, text) = (ctx.sources[i].name.clone(), ctx.sources[i].text.clone());
        if text.len() > MAX_FILE_BYTES {
            return Err(SpecError::new(&name, None, "file too large"));
        }
        let mut options = serde_saphyr::Options::default();
        options.with_snippet = false;
        // YAML 1.2 booleans only, as Compose reads them: `no` and `y` stay strings.
        options.strict_booleans = true;
        let mut doc: Value = serde_saphyr::from_str_with_options(&text, options).map_err(|e| {
            let pos = e.location().map(|l| (l.line() as u32, l.column() as u32));
            let msg = e.to_string();
            let msg = msg.lines().next().unwrap_or("invalid YAML").to_string();
            SpecError::new(
                &name,
                pos.filter(|p| p.0 > 0),
                format!("invalid YAML: {msg}"),
            )
        })?;
        if doc.is_null() {
            doc = Value::Object(Map::new());
        }
        if !doc.is_object() {
            return Err(SpecError::new(
                &name,
                Some((1, 1)),
                "a compose file must be a mapping with a `services` key",
            ));
        }
        let mut unset = Vec::new();
        let mut path = Vec::new();
        interpolate_value(&mut doc, &vars, &mut unset, &mut path).map_err(|(p, msg)| {
            let pr: Vec<&str> = p.iter().map(String::as_str).collect();
            let single = Ctx {
                sources: vec![Source {
                    name: name.clone(),
                    text: text.clone(),
                }],
                base_dir: PathBuf::new(),
                allow_unsupported: false,
                warnings: vec![],
            };
            single.err(&pr, msg)
        })?;
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

fn interpolate_value(
    v: &mut Value,
    vars: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
    path: &mut Vec<String>,
) -> Result<(), (Vec<String>, String)> {
    match v {
        Value::String(s) => {
            let lookup = |k: &str| vars.get(k).cloned();
            *s = interpolate(s, &lookup, unset).map_err(|e| (path.clone(), e))?;
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate_value(x, vars, unset, path)?;
                path.pop();
            }
        }
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                path.push(k.clone());
                interpolate_value(x, vars, unset, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

/// Compose's merge of an override file into a base: maps merge recursively; scalars,
/// `command`, `entrypoint` and `healthcheck.test` are replaced; `ports`, `expose`, `dns`,
/// `cap_add`, `cap_drop`, `profiles` are appended without duplicates; `environment` and
/// `labels` merge by key (list or map form); `volumes` and `tmpfs` merge by target.
pub fn merge(base: &mut Value, over: Value, path: &[&str]) {
    let key = path.last().copied().unwrap_or("");
    let in_service = path.len() == 3 && path[0] == "services";
    match (base, over) {
        (b @ Value::Object(_), Value::Object(o)) => {
            let bm = b.as_object_mut().unwrap();
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
        (b, o) if in_service && matches!(key, "environment" | "labels") => {
            let mut m = kv_map(b);
            for (k, v) in kv_map(&o) {
                m.insert(k, v);
            }
            *b = Value::Object(m);
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
        (Value::Array(b), Value::Array(o)) if in_service && matches!(key, "volumes" | "tmpfs") => {
            for x in o {
                let t = mount_target(&x);
                if let Some(pos) = b.iter().position(|y| t.is_some() && mount_target(y) == t) {
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

const TOP_KEYS: &[&str] = &["version", "name", "services", "volumes", "networks"];
const SERVICE_KEYS: &[&str] = &[
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
    "init",
    "stop_signal",
    "stop_grace_period",
    "labels",
    "profiles",
    "scale",
];

fn validate(ctx: &mut Ctx, doc: &Value, opts: &LoadOptions) -> Result<Project, SpecError> {
    let top = doc.as_object().expect("checked");
    for k in top.keys() {
        if k.starts_with("x-") || TOP_KEYS.contains(&k.as_str()) {
            continue;
        }
        ctx.unsupported(
            &[k],
            &format!("top-level key `{k}` is not supported by berth"),
        )?;
    }
    if top.contains_key("version") {
        ctx.warnings.push(format!(
            "{}: `version` is obsolete and ignored",
            ctx.err(&["version"], "").to_string().trim_end_matches(": ")
        ));
    }
    let name = match (&opts.project_name, top.get("name")) {
        (Some(n), _) => n.clone(),
        (None, Some(Value::String(n))) => n.clone(),
        (None, Some(_)) => return Err(ctx.err(&["name"], "`name` must be a string")),
        (None, None) => ctx
            .base_dir
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| "default".into()),
    };
    let name = normalize_project_name(&name).ok_or_else(|| {
        ctx.err(
            &["name"],
            format!("project name {name:?} must contain a letter or digit"),
        )
    })?;

    let mut volumes = BTreeMap::new();
    if let Some(v) = top.get("volumes") {
        let m = as_map_or_null(ctx, v, &["volumes"])?;
        for (k, def) in m {
            volumes.insert(k.clone(), top_volume(ctx, &k, &def)?);
        }
    }
    let mut networks = BTreeMap::new();
    if let Some(v) = top.get("networks") {
        let m = as_map_or_null(ctx, v, &["networks"])?;
        for (k, def) in m {
            networks.insert(k.clone(), top_network(ctx, &k, &def)?);
        }
    }

    let services_v = top.get("services").ok_or_else(|| {
        SpecError::new(&ctx.sources[0].name, Some((1, 1)), "no `services` defined")
    })?;
    let services_m = services_v.as_object().ok_or_else(|| {
        ctx.err(
            &["services"],
            "`services` must be a mapping of service names",
        )
    })?;
    let mut services = BTreeMap::new();
    for (sname, sv) in services_m {
        if !valid_service_name(sname) {
            return Err(ctx.err(
                &["services", sname],
                format!("service name {sname:?} must be letters, digits, '.', '_' or '-'"),
            ));
        }
        let s = service(ctx, sname, sv, &volumes)?;
        let active = s.profiles.is_empty() || s.profiles.iter().any(|p| opts.profiles.contains(p));
        if active {
            services.insert(sname.clone(), s);
        }
    }
    // depends_on: known services, no cycles.
    for (sname, s) in &services {
        for dep in s.depends_on.keys() {
            if !services.contains_key(dep) {
                if services_m.contains_key(dep) {
                    continue; // in an inactive profile
                }
                return Err(ctx.err(
                    &["services", sname, "depends_on", dep],
                    format!("service {sname} depends on unknown service {dep}"),
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(&services) {
        return Err(ctx.err(
            &["services", &cycle[0], "depends_on"],
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    Ok(Project {
        name,
        services,
        volumes,
        networks,
    })
}

/// Compose's normalisation: lowercase, only [a-z0-9_-].
pub fn normalize_project_name(s: &str) -> Option<String> {
    let n: String = s
        .to_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    let n = n.trim_start_matches(['_', '-']).to_string();
    (!n.is_empty()).then_some(n)
}

fn valid_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

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

fn as_map_or_null<'a>(
    ctx: &Ctx,
    v: &'a Value,
    path: &[&str],
) -> Result<Map<String, Value>, SpecError> {
    match v {
        Value::Object(m) => Ok(m.clone()),
        Value::Null => Ok(Map::new()),
        _ => Err(ctx.err(path, format!("`{}` must be a mapping", path.join(".")))),
    }
}

fn top_volume(ctx: &mut Ctx, name: &str, v: &Value) -> Result<VolumeDef, SpecError> {
    let mut d = VolumeDef::default();
    let Some(m) = v.as_object() else {
        if v.is_null() {
            return Ok(d);
        }
        return Err(ctx.err(
            &["volumes", name],
            format!("volume {name} must be a mapping or empty"),
        ));
    };
    for (k, x) in m {
        match k.as_str() {
            "external" => d.external = x.as_bool().unwrap_or(false),
            "name" => d.name = x.as_str().map(String::from),
            "labels" => d.labels = string_map(ctx, x, &["volumes", name, "labels"])?,
            "driver" if x.as_str() == Some("local") => {}
            k if k.starts_with("x-") => {}
            other => ctx.unsupported(
                &["volumes", name, other],
                &format!("volume {name}: key `{other}` is not supported by berth"),
            )?,
        }
    }
    Ok(d)
}

fn top_network(ctx: &mut Ctx, name: &str, v: &Value) -> Result<NetworkDef, SpecError> {
    let mut d = NetworkDef::default();
    let Some(m) = v.as_object() else {
        if v.is_null() {
            return Ok(d);
        }
        return Err(ctx.err(
            &["networks", name],
            format!("network {name} must be a mapping or empty"),
        ));
    };
    for (k, x) in m {
        match k.as_str() {
            "external" => d.external = x.as_bool().unwrap_or(false),
            "name" => d.name = x.as_str().map(String::from),
            "internal" => d.internal = x.as_bool().unwrap_or(false),
            "labels" => d.labels = string_map(ctx, x, &["networks", name, "labels"])?,
            "driver" if x.as_str() == Some("bridge") => {}
            k if k.starts_with("x-") => {}
            other => ctx.unsupported(
                &["networks", name, other],
                &format!("network {name}: key `{other}` is not supported by berth"),
            )?,
        }
    }
    Ok(d)
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_map(ctx: &Ctx, v: &Value, path: &[&str]) -> Result<BTreeMap<String, String>, SpecError> {
    let mut out = BTreeMap::new();
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let s = match x {
                    Value::Null => String::new(),
                    other => scalar_string(other).ok_or_else(|| {
                        let mut p = path.to_vec();
                        p.push(k);
                        ctx.err(
                            &p,
                            format!(
                                "`{}.{k}` must be a string, number or boolean",
                                path.join(".")
                            ),
                        )
                    })?,
                };
                out.insert(k.clone(), s);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let s = x.as_str().ok_or_else(|| {
                    let idx = i.to_string();
                    let mut p = path.to_vec();
                    p.push(&idx);
                    ctx.err(
                        &p,
                        format!(
                            "`{}` entries must be strings like KEY=value",
                            path.join(".")
                        ),
                    )
                })?;
                let (k, val) = s.split_once('=').unwrap_or((s, ""));
                out.insert(k.to_string(), val.to_string());
            }
        }
        Value::Null => {}
        _ => {
            return Err(ctx.err(
                path,
                format!("`{}` must be a list or a mapping", path.join(".")),
            ))
        }
    }
    Ok(out)
}

fn string_list(ctx: &Ctx, v: &Value, path: &[&str]) -> Result<Vec<String>, SpecError> {
    match v {
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| {
                scalar_string(x).ok_or_else(|| {
                    let idx = i.to_string();
                    let mut p = path.to_vec();
                    p.push(&idx);
                    ctx.err(&p, format!("`{}` entries must be strings", path.join(".")))
                })
            })
            .collect(),
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Null => Ok(vec![]),
        _ => Err(ctx.err(
            path,
            format!("`{}` must be a list of strings", path.join(".")),
        )),
    }
}

/// Split a command string the way a POSIX shell would (quotes and backslashes), as Compose
/// does for `command: "a b 'c d'"`.
pub fn split_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars().peekable();
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
            '\\' => {
                in_word = true;
                if let Some(x) = chars.next() {
                    cur.push(x);
                }
            }
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

fn command(ctx: &Ctx, v: &Value, path: &[&str]) -> Result<Option<Vec<String>>, SpecError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => split_words(s).map(Some).map_err(|e| ctx.err(path, e)),
        Value::Array(_) => string_list(ctx, v, path).map(Some),
        _ => Err(ctx.err(
            path,
            format!(
                "`{}` must be a string or a list of strings",
                path.last().unwrap()
            ),
        )),
    }
}

fn duration(ctx: &Ctx, v: &Value, path: &[&str]) -> Result<u64, SpecError> {
    let s = scalar_string(v)
        .ok_or_else(|| ctx.err(path, "a duration must be a string like 10s or 1m30s"))?;
    parse_duration_ms(&s).map_err(|e| ctx.err(path, format!("{}: {e}", path.last().unwrap())))
}

fn bool_of(ctx: &Ctx, v: &Value, path: &[&str]) -> Result<bool, SpecError> {
    v.as_bool().ok_or_else(|| {
        ctx.err(
            path,
            format!("`{}` must be true or false", path.last().unwrap()),
        )
    })
}

fn service(
    ctx: &mut Ctx,
    name: &str,
    v: &Value,
    volumes: &BTreeMap<String, VolumeDef>,
) -> Result<Service, SpecError> {
    let m = v.as_object().ok_or_else(|| {
        ctx.err(
            &["services", name],
            format!("service {name} must be a mapping"),
        )
    })?;
    let p = |k: &'static str| -> Vec<&str> { vec!["services", name, k] };
    let mut s = Service {
        replicas: 1,
        ..Default::default()
    };
    for (k, x) in m {
        if k.starts_with("x-") || SERVICE_KEYS.contains(&k.as_str()) {
            continue;
        }
        if k == "build" {
            let e = ctx.err(&["services", name, "build"], format!("service {name}: `build` is not supported yet: build the image elsewhere and set `image`"));
            if ctx.allow_unsupported {
                ctx.warnings.push(format!("{e} (ignored)"));
                continue;
            }
            return Err(e);
        }
        let _ = x;
        ctx.unsupported(
            &["services", name, k],
            &format!("service {name}: key `{k}` is not supported by berth"),
        )?;
    }
    if let Some(x) = m.get("x-berth") {
        let xm = x
            .as_object()
            .ok_or_else(|| ctx.err(&p("x-berth"), "`x-berth` must be a mapping"))?;
        for (k, v) in xm {
            match k.as_str() {
                "rootfs" => {
                    let dir = v.as_str().ok_or_else(|| {
                        ctx.err(
                            &["services", name, "x-berth", "rootfs"],
                            "x-berth.rootfs must be a directory path",
                        )
                    })?;
                    s.rootfs = Some(ctx.base_dir.join(dir).display().to_string());
                }
                other => {
                    return Err(ctx.err(
                        &["services", name, "x-berth", other],
                        format!("x-berth.{other} is not a berth extension (rootfs)"),
                    ))
                }
            }
        }
    }
    s.image = match m.get("image") {
        Some(Value::String(i)) if !i.trim().is_empty() => i.clone(),
        Some(_) => {
            return Err(ctx.err(
                &p("image"),
                format!("service {name}: `image` must be a non-empty string"),
            ))
        }
        None if s.rootfs.is_some() => String::new(),
        None => {
            return Err(ctx.err(
                &["services", name],
                format!("service {name} has no `image`"),
            ))
        }
    };
    if let Some(x) = m.get("command") {
        s.command = command(ctx, x, &p("command"))?;
    }
    if let Some(x) = m.get("entrypoint") {
        s.entrypoint = command(ctx, x, &p("entrypoint"))?;
    }
    // env_file first, environment wins.
    if let Some(x) = m.get("env_file") {
        let entries: Vec<(String, bool)> = match x {
            Value::String(f) => vec![(f.clone(), true)],
            Value::Array(a) => a
                .iter()
                .map(|e| match e {
                    Value::String(f) => Ok((f.clone(), true)),
                    Value::Object(o) => Ok((
                        o.get("path")
                            .and_then(|p| p.as_str())
                            .unwrap_or("")
                            .to_string(),
                        o.get("required").and_then(|r| r.as_bool()).unwrap_or(true),
                    )),
                    _ => Err(ctx.err(&p("env_file"), "`env_file` entries must be paths")),
                })
                .collect::<Result<_, _>>()?,
            _ => {
                return Err(ctx.err(
                    &p("env_file"),
                    "`env_file` must be a path or a list of paths",
                ))
            }
        };
        for (f, required) in entries {
            let path = ctx.base_dir.join(&f);
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let kv = parse_env_file(&text).map_err(|(line, msg)| SpecError {
                        file: path.display().to_string(),
                        line: line as u32,
                        column: 1,
                        message: msg,
                    })?;
                    s.environment.extend(kv);
                }
                Err(e) if required => {
                    return Err(ctx.err(
                        &p("env_file"),
                        format!("service {name}: env_file {}: {e}", path.display()),
                    ))
                }
                Err(_) => {}
            }
        }
    }
    if let Some(x) = m.get("environment") {
        for (k, val) in kv_map(x) {
            match val {
                Value::Null => {
                    // From the environment of whoever applies, when set.
                    if let Ok(v) = std::env::var(&k) {
                        s.environment.insert(k, v);
                    }
                }
                other => {
                    let sv = scalar_string(&other).ok_or_else(|| {
                        ctx.err(
                            &["services", name, "environment", &k],
                            format!("environment {k} must be a string, number or boolean"),
                        )
                    })?;
                    s.environment.insert(k, sv);
                }
            }
        }
        if !matches!(x, Value::Object(_) | Value::Array(_) | Value::Null) {
            return Err(ctx.err(
                &p("environment"),
                "`environment` must be a list or a mapping",
            ));
        }
    }
    if let Some(x) = m.get("ports") {
        let Value::Array(a) = x else {
            return Err(ctx.err(&p("ports"), "`ports` must be a list"));
        };
        for (i, e) in a.iter().enumerate() {
            let idx = i.to_string();
            let path = ["services", name, "ports", idx.as_str()];
            let parsed = match e {
                Value::Object(o) => long_port(o),
                other => match scalar_string(other) {
                    Some(spec) => parse_port(&spec),
                    None => Err("a port must be a string like 8080:80 or a mapping".into()),
                },
            };
            s.ports
                .extend(parsed.map_err(|e| ctx.err(&path, format!("ports: {e}")))?);
        }
    }
    if let Some(x) = m.get("expose") {
        s.expose = string_list(ctx, x, &p("expose"))?;
    }
    if let Some(x) = m.get("volumes") {
        let Value::Array(a) = x else {
            return Err(ctx.err(&p("volumes"), "`volumes` must be a list"));
        };
        for (i, e) in a.iter().enumerate() {
            let idx = i.to_string();
            let path = ["services", name, "volumes", idx.as_str()];
            let vm = volume_mount(ctx, e, volumes)
                .map_err(|e| ctx.err(&path, format!("volumes: {e}")))?;
            s.volumes.push(vm);
        }
    }
    if let Some(x) = m.get("tmpfs") {
        s.tmpfs = string_list(ctx, x, &p("tmpfs"))?;
        for t in &s.tmpfs {
            if !t.starts_with('/') {
                return Err(ctx.err(
                    &p("tmpfs"),
                    format!("tmpfs target {t:?} must be an absolute path"),
                ));
            }
        }
    }
    if let Some(x) = m.get("restart") {
        let r = scalar_string(x).unwrap_or_default();
        let ok = matches!(
            r.as_str(),
            "no" | "always" | "unless-stopped" | "on-failure"
        ) || r
            .strip_prefix("on-failure:")
            .map(|n| n.parse::<u32>().is_ok())
            .unwrap_or(false);
        if !ok {
            return Err(ctx.err(
                &p("restart"),
                format!("restart {r:?}: expected no, always, unless-stopped or on-failure[:max]"),
            ));
        }
        s.restart = Some(r);
    }
    if let Some(x) = m.get("healthcheck") {
        s.healthcheck = healthcheck(ctx, name, x)?;
    }
    if let Some(x) = m.get("depends_on") {
        match x {
            Value::Array(a) => {
                for e in a {
                    let d = e.as_str().ok_or_else(|| {
                        ctx.err(
                            &p("depends_on"),
                            "`depends_on` entries must be service names",
                        )
                    })?;
                    s.depends_on.insert(
                        d.to_string(),
                        DependsOn {
                            condition: Condition::ServiceStarted,
                            required: true,
                            restart: false,
                        },
                    );
                }
            }
            Value::Object(o) => {
                for (d, spec) in o {
                    let path = ["services", name, "depends_on", d.as_str()];
                    let cond = match spec.get("condition").and_then(|c| c.as_str()) {
                        None | Some("service_started") => Condition::ServiceStarted,
                        Some("service_healthy") => Condition::ServiceHealthy,
                        Some("service_completed_successfully") => Condition::ServiceCompletedSuccessfully,
                        Some(other) => {
                            return Err(ctx.err(&path, format!("depends_on {d}: unknown condition {other:?} (service_started, service_healthy, service_completed_successfully)")))
                        }
                    };
                    s.depends_on.insert(
                        d.clone(),
                        DependsOn {
                            condition: cond,
                            required: spec
                                .get("required")
                                .and_then(|r| r.as_bool())
                                .unwrap_or(true),
                            restart: spec
                                .get("restart")
                                .and_then(|r| r.as_bool())
                                .unwrap_or(false),
                        },
                    );
                }
            }
            _ => return Err(ctx.err(&p("depends_on"), "`depends_on` must be a list or a mapping")),
        }
        if s.depends_on.contains_key(name) {
            return Err(ctx.err(
                &p("depends_on"),
                format!("dependency cycle: {name} -> {name}"),
            ));
        }
    }
    if let Some(x) = m.get("scale") {
        s.replicas = x
            .as_u64()
            .ok_or_else(|| ctx.err(&p("scale"), "`scale` must be a number"))?
            as u32;
    }
    if let Some(x) = m.get("deploy") {
        deploy(ctx, name, x, &mut s)?;
    }
    if let Some(x) = m.get("container_name") {
        s.container_name = Some(
            x.as_str()
                .ok_or_else(|| ctx.err(&p("container_name"), "`container_name` must be a string"))?
                .to_string(),
        );
        if s.replicas > 1 {
            return Err(ctx.err(
                &p("container_name"),
                format!(
                    "service {name}: container_name needs a single replica, not {}",
                    s.replicas
                ),
            ));
        }
    }
    if let Some(x) = m.get("networks") {
        match x {
            Value::Array(a) => {
                for e in a {
                    let n = e.as_str().ok_or_else(|| {
                        ctx.err(&p("networks"), "`networks` entries must be names")
                    })?;
                    s.networks.insert(n.to_string(), ServiceNetwork::default());
                }
            }
            Value::Object(o) => {
                for (n, spec) in o {
                    let aliases = match spec.get("aliases") {
                        Some(a) => {
                            string_list(ctx, a, &["services", name, "networks", n, "aliases"])?
                        }
                        None => vec![],
                    };
                    s.networks.insert(n.clone(), ServiceNetwork { aliases });
                }
            }
            _ => return Err(ctx.err(&p("networks"), "`networks` must be a list or a mapping")),
        }
    }
    if let Some(x) = m.get("network_mode") {
        let nm = x.as_str().unwrap_or_default().to_string();
        let ok = matches!(nm.as_str(), "none" | "host" | "bridge")
            || nm.starts_with("service:")
            || nm.starts_with("container:");
        if !ok {
            return Err(ctx.err(&p("network_mode"), format!("network_mode {nm:?}: expected none, host, bridge, service:NAME or container:NAME")));
        }
        if !s.networks.is_empty() {
            return Err(ctx.err(
                &p("network_mode"),
                format!("service {name}: network_mode and networks cannot be combined"),
            ));
        }
        s.network_mode = Some(nm);
    }
    for (key, slot) in [
        ("user", &mut s.user),
        ("working_dir", &mut s.working_dir),
        ("hostname", &mut s.hostname),
        ("stop_signal", &mut s.stop_signal),
    ] {
        if let Some(x) = m.get(key) {
            *slot = Some(scalar_string(x).ok_or_else(|| {
                ctx.err(
                    &["services", name, key],
                    format!("`{key}` must be a string"),
                )
            })?);
        }
    }
    if let Some(x) = m.get("read_only") {
        s.read_only = bool_of(ctx, x, &p("read_only"))?;
    }
    if let Some(x) = m.get("init") {
        s.init = bool_of(ctx, x, &p("init"))?;
    }
    if let Some(x) = m.get("cap_add") {
        s.cap_add = string_list(ctx, x, &p("cap_add"))?;
    }
    if let Some(x) = m.get("cap_drop") {
        s.cap_drop = string_list(ctx, x, &p("cap_drop"))?;
    }
    if let Some(x) = m.get("stop_grace_period") {
        s.stop_grace_period_ms = Some(duration(ctx, x, &p("stop_grace_period"))?);
    }
    if let Some(x) = m.get("labels") {
        s.labels = string_map(ctx, x, &p("labels"))?;
    }
    if let Some(x) = m.get("profiles") {
        s.profiles = string_list(ctx, x, &p("profiles"))?;
    }
    Ok(s)
}

fn healthcheck(ctx: &Ctx, name: &str, v: &Value) -> Result<Option<Healthcheck>, SpecError> {
    let base = ["services", name, "healthcheck"];
    let m = v
        .as_object()
        .ok_or_else(|| ctx.err(&base, "`healthcheck` must be a mapping"))?;
    let at = |k: &'static str| -> Vec<&str> { vec!["services", name, "healthcheck", k] };
    if m.get("disable").and_then(|d| d.as_bool()) == Some(true) {
        return Ok(Some(Healthcheck {
            test: vec!["NONE".into()],
            interval_ms: None,
            timeout_ms: None,
            retries: None,
            start_period_ms: None,
        }));
    }
    let test = match m.get("test") {
        Some(Value::String(s)) => vec!["CMD-SHELL".to_string(), s.clone()],
        Some(t @ Value::Array(_)) => {
            let l = string_list(ctx, t, &at("test"))?;
            match l.first().map(String::as_str) {
                Some("CMD") | Some("CMD-SHELL") | Some("NONE") => l,
                _ => {
                    return Err(ctx.err(
                        &at("test"),
                        "healthcheck test must start with CMD, CMD-SHELL or NONE",
                    ))
                }
            }
        }
        None => return Err(ctx.err(&base, "healthcheck needs a `test`")),
        Some(_) => return Err(ctx.err(&at("test"), "healthcheck test must be a string or a list")),
    };
    let mut h = Healthcheck {
        test,
        interval_ms: None,
        timeout_ms: None,
        retries: None,
        start_period_ms: None,
    };
    for (k, x) in m {
        match k.as_str() {
            "test" | "disable" => {}
            "interval" => {
                h.interval_ms = Some(duration(
                    ctx,
                    x,
                    &["services", name, "healthcheck", "interval"],
                )?)
            }
            "timeout" => {
                h.timeout_ms = Some(duration(
                    ctx,
                    x,
                    &["services", name, "healthcheck", "timeout"],
                )?)
            }
            "start_period" => {
                h.start_period_ms = Some(duration(
                    ctx,
                    x,
                    &["services", name, "healthcheck", "start_period"],
                )?)
            }
            "retries" => {
                h.retries = Some(x.as_u64().ok_or_else(|| {
                    ctx.err(&at("retries"), "healthcheck retries must be a number")
                })? as u32)
            }
            "start_interval" => {}
            other => {
                return Err(ctx.err(
                    &["services", name, "healthcheck", other],
                    format!("healthcheck: unknown key `{other}`"),
                ))
            }
        }
    }
    Ok(Some(h))
}

fn deploy(ctx: &mut Ctx, name: &str, v: &Value, s: &mut Service) -> Result<(), SpecError> {
    let m = v
        .as_object()
        .ok_or_else(|| ctx.err(&["services", name, "deploy"], "`deploy` must be a mapping"))?
        .clone();
    for (k, x) in &m {
        match k.as_str() {
            "replicas" => {
                s.replicas = x.as_u64().ok_or_else(|| {
                    ctx.err(
                        &["services", name, "deploy", "replicas"],
                        "deploy.replicas must be a whole number",
                    )
                })? as u32
            }
            "resources" => {
                let r = x.as_object().cloned().unwrap_or_default();
                for (rk, rv) in &r {
                    match rk.as_str() {
                        "limits" => {
                            let l = rv.as_object().cloned().unwrap_or_default();
                            for (lk, lv) in &l {
                                let path = [
                                    "services",
                                    name,
                                    "deploy",
                                    "resources",
                                    "limits",
                                    lk.as_str(),
                                ];
                                match lk.as_str() {
                                    "memory" => {
                                        let sv = scalar_string(lv).unwrap_or_default();
                                        s.limits.memory_bytes = Some(parse_size(&sv).map_err(|e| ctx.err(&path, e))?);
                                    }
                                    "cpus" => {
                                        let sv = scalar_string(lv).unwrap_or_default();
                                        let c: f64 = sv.parse().map_err(|_| ctx.err(&path, format!("cpus {sv:?} must be a number like 0.5")))?;
                                        if c <= 0.0 {
                                            return Err(ctx.err(&path, "cpus must be more than 0"));
                                        }
                                        s.limits.cpus = Some(c);
                                    }
                                    "pids" => {
                                        s.limits.pids = Some(lv.as_i64().ok_or_else(|| ctx.err(&path, "pids must be a whole number"))?)
                                    }
                                    other => ctx.unsupported(&path, &format!("deploy.resources.limits.{other} is not supported by berth"))?,
                                }
                            }
                        }
                        "reservations" => ctx.warnings.push(format!(
                            "{}: deploy.resources.reservations are not enforced by berth",
                            ctx.err(
                                &["services", name, "deploy", "resources", "reservations"],
                                ""
                            )
                            .to_string()
                            .trim_end_matches(": ")
                        )),
                        other => ctx.unsupported(
                            &["services", name, "deploy", "resources", other],
                            &format!("deploy.resources.{other} is not supported by berth"),
                        )?,
                    }
                }
            }
            "restart_policy" => {
                let r = x.as_object().cloned().unwrap_or_default();
                let cond = r
                    .get("condition")
                    .and_then(|c| c.as_str())
                    .unwrap_or("any")
                    .to_string();
                if !matches!(cond.as_str(), "none" | "on-failure" | "any") {
                    return Err(ctx.err(
                        &["services", name, "deploy", "restart_policy", "condition"],
                        format!(
                            "restart_policy condition {cond:?}: expected none, on-failure or any"
                        ),
                    ));
                }
                let delay = match r.get("delay") {
                    Some(d) => Some(duration(
                        ctx,
                        d,
                        &["services", name, "deploy", "restart_policy", "delay"],
                    )?),
                    None => None,
                };
                s.restart_policy = Some(RestartPolicySpec {
                    condition: cond,
                    max_attempts: r
                        .get("max_attempts")
                        .and_then(|m| m.as_u64())
                        .map(|m| m as u32),
                    delay_ms: delay,
                });
            }
            "labels" => {
                let extra = string_map(ctx, x, &["services", name, "deploy", "labels"])?;
                s.labels.extend(extra);
            }
            "mode" if x.as_str() == Some("replicated") => {}
            other => ctx.unsupported(
                &["services", name, "deploy", other],
                &format!("deploy.{other} is not supported by berth"),
            )?,
        }
    }
    Ok(())
}

fn volume_mount(
    ctx: &Ctx,
    v: &Value,
    declared: &BTreeMap<String, VolumeDef>,
) -> Result<VolumeMount, String> {
    let resolve = |src: &str| -> String {
        let p = if let Some(rest) = src.strip_prefix("~/") {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(rest)
        } else {
            ctx.base_dir.join(src)
        };
        p.display().to_string()
    };
    let is_path = |s: &str| s.starts_with('/') || s.starts_with('.') || s.starts_with('~');
    match v {
        Value::String(spec) => {
            let parts: Vec<&str> = spec.split(':').collect();
            let (src, dst, mode) = match parts.as_slice() {
                [dst] => ("", *dst, ""),
                [src, dst] => (*src, *dst, ""),
                [src, dst, mode] => (*src, *dst, *mode),
                _ => return Err(format!("{spec:?}: expected SOURCE:TARGET[:MODE]")),
            };
            if !dst.starts_with('/') {
                return Err(format!(
                    "{spec:?}: the target {dst:?} must be an absolute path"
                ));
            }
            let mut read_only = false;
            for m in mode.split(',').filter(|m| !m.is_empty()) {
                match m {
                    "ro" => read_only = true,
                    "rw" | "z" | "Z" | "cached" | "delegated" | "consistent" | "nocopy" => {}
                    other => return Err(format!("{spec:?}: unknown mode {other:?} (ro, rw)")),
                }
            }
            if src.is_empty() {
                Ok(VolumeMount {
                    kind: MountType::Volume,
                    source: String::new(),
                    target: dst.into(),
                    read_only,
                    tmpfs_size: None,
                })
            } else if is_path(src) {
                Ok(VolumeMount {
                    kind: MountType::Bind,
                    source: resolve(src),
                    target: dst.into(),
                    read_only,
                    tmpfs_size: None,
                })
            } else {
                if !declared.contains_key(src) {
                    return Err(format!(
                        "named volume {src:?} is not declared under the top-level `volumes`"
                    ));
                }
                Ok(VolumeMount {
                    kind: MountType::Volume,
                    source: src.into(),
                    target: dst.into(),
                    read_only,
                    tmpfs_size: None,
                })
            }
        }
        Value::Object(o) => {
            let kind = match o.get("type").and_then(|t| t.as_str()) {
                Some("bind") => MountType::Bind,
                Some("volume") | None => MountType::Volume,
                Some("tmpfs") => MountType::Tmpfs,
                Some(other) => {
                    return Err(format!(
                        "mount type {other:?} is not supported (bind, volume, tmpfs)"
                    ))
                }
            };
            let target = o
                .get("target")
                .and_then(|t| t.as_str())
                .ok_or("a long-syntax volume needs a `target`")?;
            if !target.starts_with('/') {
                return Err(format!("the target {target:?} must be an absolute path"));
            }
            let source = o.get("source").and_then(|t| t.as_str()).unwrap_or("");
            let source = match kind {
                MountType::Bind => {
                    if source.is_empty() {
                        return Err("a bind mount needs a `source`".into());
                    }
                    resolve(source)
                }
                MountType::Volume => {
                    if !source.is_empty() && !declared.contains_key(source) {
                        return Err(format!(
                            "named volume {source:?} is not declared under the top-level `volumes`"
                        ));
                    }
                    source.to_string()
                }
                MountType::Tmpfs => String::new(),
            };
            let tmpfs_size = match o.get("tmpfs").and_then(|t| t.get("size")) {
                Some(sz) => Some(match sz {
                    Value::Number(n) => n.as_u64().unwrap_or(0),
                    other => parse_size(&scalar_string(other).unwrap_or_default())?,
                }),
                None => None,
            };
            Ok(VolumeMount {
                kind,
                source,
                target: target.into(),
                read_only: o
                    .get("read_only")
                    .and_then(|r| r.as_bool())
                    .unwrap_or(false),
                tmpfs_size,
            })
        }
        _ => Err("a volume must be a string like src:/dst or a mapping".into()),
    }
}

fn port_range(s: &str) -> Result<(u16, u16), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let a: u16 = a
        .parse()
        .map_err(|_| format!("{s:?} is not a port number"))?;
    let b: u16 = b
        .parse()
        .map_err(|_| format!("{s:?} is not a port number"))?;
    if a == 0 || b < a {
        return Err(format!("{s:?} is not a valid port or range"));
    }
    Ok((a, b))
}

/// Docker's short port syntax: `[[HOST_IP:]HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO]`.
pub fn parse_port(spec: &str) -> Result<Vec<PortSpec>, String> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Protocol::Tcp),
        Some((b, "udp")) => (b, Protocol::Udp),
        Some((_, p)) => return Err(format!("{spec:?}: unknown protocol {p:?} (tcp, udp)")),
        None => (spec, Protocol::Tcp),
    };
    // An IPv6 host address is in brackets.
    let (host_ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (ip, after) = r
            .split_once(']')
            .ok_or_else(|| format!("{spec:?}: unclosed ["))?;
        (
            Some(ip.to_string()),
            after
                .strip_prefix(':')
                .ok_or_else(|| format!("{spec:?}: expected : after the address"))?,
        )
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        if parts.len() == 3 {
            (Some(parts[0].to_string()), &body[parts[0].len() + 1..])
        } else {
            (None, body)
        }
    };
    if let Some(ip) = &host_ip {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("{spec:?}: {ip:?} is not an IP address"));
        }
    }
    let (host, container) = match rest.split_once(':') {
        Some((h, c)) => (
            if h.is_empty() {
                None
            } else {
                Some(port_range(h).map_err(|e| format!("{spec:?}: {e}"))?)
            },
            c,
        ),
        None => (None, rest),
    };
    let (c0, c1) = port_range(container).map_err(|e| format!("{spec:?}: {e}"))?;
    if let Some((h0, h1)) = host {
        if h1 - h0 != c1 - c0 {
            return Err(format!(
                "{spec:?}: the host range and the container range differ in length"
            ));
        }
    }
    Ok((c0..=c1)
        .enumerate()
        .map(|(i, cp)| PortSpec {
            host_ip: host_ip.clone(),
            host_port: host.map(|(h0, _)| h0 + i as u16),
            container_port: cp,
            protocol: proto,
        })
        .collect())
}

fn long_port(o: &Map<String, Value>) -> Result<Vec<PortSpec>, String> {
    let target = o
        .get("target")
        .and_then(|t| t.as_u64())
        .ok_or("a long-syntax port needs a numeric `target`")?;
    let published = match o.get("published") {
        Some(Value::Number(n)) => Some(n.as_u64().unwrap_or(0) as u16),
        Some(Value::String(s)) => Some(
            s.parse::<u16>()
                .map_err(|_| format!("published {s:?} is not a port"))?,
        ),
        _ => None,
    };
    let protocol = match o.get("protocol").and_then(|p| p.as_str()) {
        None | Some("tcp") => Protocol::Tcp,
        Some("udp") => Protocol::Udp,
        Some(p) => return Err(format!("unknown protocol {p:?}")),
    };
    Ok(vec![PortSpec {
        host_ip: o.get("host_ip").and_then(|h| h.as_str()).map(String::from),
        host_port: published,
        container_port: target as u16,
        protocol,
    }])
}

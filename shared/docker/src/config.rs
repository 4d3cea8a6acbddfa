//! Credentials in the Docker users' `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`): `{"auths": {"<server>": {"auth": base64("user:password")}}}`, or
//! kept by a credential helper the file names: `"credHelpers": {"<server>": "<name>"}` for one
//! registry, else `"credsStore": "<name>"` for all. A helper is the program
//! `docker-credential-<name>` speaking Docker's protocol (`get`, `store`, `erase`; JSON on
//! stdin and stdout). Read by the puller, written by `berth login` / `berth logout` the way
//! Docker writes it (other keys of the file are kept; the file is replaced atomically with
//! mode 0600; with a helper, `auths` keeps only an empty entry for the registry).

use crate::cred_helper::{self, Found, HelperError};
use base64::Engine;
use serde_json::{Map, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A Docker config file that cannot be read, parsed or written, or whose credential helper
/// failed: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("docker config {}: {reason}", path.display())]
pub struct ConfigError {
    pub path: PathBuf,
    pub reason: String,
}

/// The key Docker uses for Docker Hub in `auths`.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
const HUB_ALIASES: [&str; 4] = [
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({:?}, <secret>)", self.username)
    }
}

/// Where the Docker config file is: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn default_path() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

/// `host[:port]` of an `auths` key (`https://index.docker.io/v1/` → `index.docker.io`).
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn same_registry(key: &str, host: &str) -> bool {
    let kh = key_host(key);
    kh == host || (HUB_ALIASES.contains(&kh) && HUB_ALIASES.contains(&host))
}

/// The key `berth login` writes for `host`.
pub fn key_for(host: &str) -> String {
    if HUB_ALIASES.contains(&host) {
        DOCKER_HUB_KEY.to_string()
    } else {
        host.to_string()
    }
}

fn read_file(path: &Path) -> Result<Map<String, Value>, ConfigError> {
    let bad = |reason: String| ConfigError {
        path: path.to_path_buf(),
        reason,
    };
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Map::new()),
        Err(e) => return Err(bad(e.to_string())),
    };
    if text.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(&text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("not a JSON object".into())),
        Err(e) => Err(bad(e.to_string())),
    }
}

/// The credential helper that keeps the credentials of `host`, and what named it: the
/// `credHelpers` entry of the registry (any spelling of it; an empty name there means the
/// file itself), else `credsStore`. `None`: the file's `auths`.
fn helper_for(
    path: &Path,
    m: &Map<String, Value>,
    host: &str,
) -> Result<Option<(String, String)>, ConfigError> {
    let bad = |reason: String| ConfigError {
        path: path.to_path_buf(),
        reason,
    };
    let named = |v: &Value, what: String| -> Result<Option<(String, String)>, ConfigError> {
        let name = v
            .as_str()
            .ok_or_else(|| bad(format!("{what} is not a string")))?;
        if name.contains('/') {
            return Err(bad(format!("{what}: {name:?} is not a helper name")));
        }
        Ok((!name.is_empty()).then(|| (name.to_string(), what)))
    };
    match m.get("credHelpers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(helpers)) => {
            let key = key_for(host);
            let entry = helpers
                .get_key_value(&key)
                .or_else(|| helpers.get_key_value(host))
                .or_else(|| helpers.iter().find(|(k, _)| same_registry(k, host)));
            if let Some((k, v)) = entry {
                return named(v, format!("credHelpers.{k:?}"));
            }
        }
        Some(_) => return Err(bad("\"credHelpers\" is not an object".into())),
    }
    match m.get("credsStore") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => named(v, "credsStore".into()),
    }
}

/// A helper's failure as the error of the config file that named it.
fn helper_error(path: &Path, name: &str, what: &str, e: HelperError) -> ConfigError {
    let reason = match e {
        HelperError::Missing => format!(
            "credential helper {} (named by {what}) is not installed: not found in PATH",
            cred_helper::program(name)
        ),
        HelperError::NotFound => format!(
            "credential helper {} (named by {what}): {}",
            cred_helper::program(name),
            cred_helper::NOT_FOUND
        ),
        HelperError::Failed(reason) => format!("credential helper (named by {what}): {reason}"),
    };
    ConfigError {
        path: path.to_path_buf(),
        reason,
    }
}

/// Where `berth login` records credentials for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    /// In the file itself (base64, not encrypted).
    File,
    /// By this credential helper program (`docker-credential-<name>`).
    Helper(String),
}

/// The credentials recorded for registry `host` (`docker.io` matches Docker Hub's key): from
/// its credential helper when the file names one (as Docker does, the helper's answer is the
/// only one then), else from `auths`. Runs the helper, so it may block for a while.
pub fn lookup(path: &Path, host: &str) -> Result<Option<Credentials>, ConfigError> {
    let m = read_file(path)?;
    if let Some((name, what)) = helper_for(path, &m, host)? {
        let server = key_for(host);
        return match cred_helper::get(&name, &server) {
            Ok(Found::Password { username, secret }) => Ok(Some(Credentials {
                username,
                password: secret,
            })),
            Ok(Found::None) => Ok(None),
            Ok(Found::IdentityToken) => {
                tracing::warn!(helper = %cred_helper::program(&name), %server, "the credential helper holds an identity token, which berth does not use: pulling anonymously");
                Ok(None)
            }
            Err(e) => Err(helper_error(path, &name, &what, e)),
        };
    }
    let Some(Value::Object(auths)) = m.get("auths") else {
        return Ok(None);
    };
    let bad = |key: &str, reason: &str| ConfigError {
        path: path.to_path_buf(),
        reason: format!("auths.{key:?}: {reason}"),
    };
    // An exact key first, then any spelling of the same host.
    let entry = auths.get(host).map(|v| (host.to_string(), v)).or_else(|| {
        auths
            .iter()
            .find(|(k, _)| same_registry(k, host))
            .map(|(k, v)| (k.clone(), v))
    });
    let Some((key, entry)) = entry else {
        return Ok(None);
    };
    if let Some(auth) = entry.get("auth").and_then(Value::as_str) {
        if !auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(&key, &format!("auth is not base64: {e}")))?;
            let s = String::from_utf8(raw).map_err(|_| bad(&key, "auth is not UTF-8"))?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| bad(&key, "auth is not base64 of user:password"))?;
            return Ok(Some(Credentials {
                username: u.to_string(),
                password: p.to_string(),
            }));
        }
    }
    match (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        (Some(u), Some(p)) => Ok(Some(Credentials {
            username: u.to_string(),
            password: p.to_string(),
        })),
        _ => Ok(None),
    }
}

fn write_file(path: &Path, m: &Map<String, Value>) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError {
        path: path.to_path_buf(),
        reason,
    };
    let dir = path
        .parent()
        .ok_or_else(|| bad("has no parent directory".into()))?;
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(|e| bad(format!("create directory: {e}")))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let mut body = serde_json::to_vec_pretty(&Value::Object(m.clone())).expect("json serializes");
    body.push(b'\n');
    berth_files::atomic_write_mode(path, &body, 0o600, berth_files::Durability::PowerLoss)
        .map_err(|e| bad(format!("write: {e}")))
}

/// Record credentials for `host` as `docker login` does: through the registry's credential
/// helper when the file names one (`auths` then keeps an empty entry, no secret), else base64
/// in `auths`.
pub fn store(path: &Path, host: &str, creds: &Credentials) -> Result<Stored, ConfigError> {
    let mut m = read_file(path)?;
    let helper = helper_for(path, &m, host)?;
    let key = key_for(host);
    if let Some((name, what)) = &helper {
        cred_helper::store(name, &key, &creds.username, &creds.password)
            .map_err(|e| helper_error(path, name, what, e))?;
    }
    let auths = m
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(auths) = auths else {
        return Err(ConfigError {
            path: path.to_path_buf(),
            reason: "\"auths\" is not an object".into(),
        });
    };
    // Drop other spellings of the same registry so the new credentials are the ones used.
    auths.retain(|k, _| k == &key || !same_registry(k, host));
    let stored = match helper {
        Some((name, _)) => {
            auths.insert(key, Value::Object(Map::new()));
            Stored::Helper(cred_helper::program(&name))
        }
        None => {
            let auth = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", creds.username, creds.password));
            auths.insert(key, serde_json::json!({ "auth": auth }));
            Stored::File
        }
    };
    write_file(path, &m)?;
    Ok(stored)
}

/// Forget the credentials of `host`: erased from its credential helper (when the helper has
/// some) and its `auths` entries removed. `false` when there were none.
pub fn remove(path: &Path, host: &str) -> Result<bool, ConfigError> {
    let mut m = read_file(path)?;
    let mut removed = false;
    if let Some((name, what)) = helper_for(path, &m, host)? {
        let key = key_for(host);
        let fail = |e| helper_error(path, &name, &what, e);
        if cred_helper::get(&name, &key).map_err(fail)? != Found::None {
            match cred_helper::erase(&name, &key) {
                Ok(()) | Err(HelperError::NotFound) => {}
                Err(e) => return Err(fail(e)),
            }
            removed = true;
        }
    }
    let Some(Value::Object(auths)) = m.get_mut("auths") else {
        return Ok(removed);
    };
    let before = auths.len();
    auths.retain(|k, _| !same_registry(k, host));
    if auths.len() != before {
        write_file(path, &m)?;
        removed = true;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_lookup_remove_keep_other_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("docker").join("config.json");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, r#"{"credsStore":"","HttpHeaders":{"X":"y"}}"#).unwrap();
        let c = Credentials {
            username: "alice".into(),
            password: "s3:cr3t".into(),
        };
        store(&p, "localhost:5000", &c).unwrap();
        store(&p, "docker.io", &c).unwrap();
        assert_eq!(lookup(&p, "localhost:5000").unwrap(), Some(c.clone()));
        assert_eq!(lookup(&p, "docker.io").unwrap(), Some(c.clone()));
        assert_eq!(lookup(&p, "other:1").unwrap(), None);
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["HttpHeaders"]["X"], "y");
        assert_eq!(
            v["auths"]["localhost:5000"]["auth"],
            base64::engine::general_purpose::STANDARD.encode("alice:s3:cr3t")
        );
        assert!(v["auths"][DOCKER_HUB_KEY].is_object());
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(remove(&p, "localhost:5000").unwrap());
        assert!(!remove(&p, "localhost:5000").unwrap());
        assert_eq!(lookup(&p, "localhost:5000").unwrap(), None);
        assert!(remove(&p, "index.docker.io").unwrap());
    }

    #[test]
    fn credential_helper_selection() {
        let p = Path::new("/cfg/config.json");
        let m = |j: &str| serde_json::from_str::<Map<String, Value>>(j).unwrap();
        let c = m(r#"{"credsStore":"pass","credHelpers":{
            "reg.example:5000":"secretservice",
            "https://index.docker.io/v1/":"hub",
            "https://spelled.example/v2/":"spelled",
            "plain.example":""}}"#);
        assert_eq!(
            helper_for(p, &c, "reg.example:5000").unwrap(),
            Some((
                "secretservice".into(),
                r#"credHelpers."reg.example:5000""#.into()
            )),
            "credHelpers wins over credsStore"
        );
        assert_eq!(helper_for(p, &c, "docker.io").unwrap().unwrap().0, "hub");
        assert_eq!(
            helper_for(p, &c, "spelled.example").unwrap().unwrap().0,
            "spelled"
        );
        assert_eq!(
            helper_for(p, &c, "other:1").unwrap(),
            Some(("pass".into(), "credsStore".into()))
        );
        assert_eq!(
            helper_for(p, &c, "plain.example").unwrap(),
            None,
            "an empty credHelpers entry means the file"
        );
        assert_eq!(
            helper_for(p, &m(r#"{"credsStore":""}"#), "h").unwrap(),
            None
        );
        assert_eq!(helper_for(p, &m("{}"), "h").unwrap(), None);
        let e = helper_for(p, &m(r#"{"credsStore":"../../bin/sh"}"#), "h").unwrap_err();
        assert!(e.to_string().contains("not a helper name"), "{e}");
        let e = helper_for(p, &m(r#"{"credHelpers":[]}"#), "h").unwrap_err();
        assert!(e.to_string().contains("credHelpers"), "{e}");
    }

    #[test]
    fn a_missing_helper_names_the_program_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"credsStore":"berth-test-none","credHelpers":{"h:1":"berth-test-missing"}}"#,
        )
        .unwrap();
        let e = lookup(&p, "h:1").unwrap_err().to_string();
        assert!(
            e.contains("docker-credential-berth-test-missing")
                && e.contains(&p.display().to_string())
                && e.contains("credHelpers"),
            "{e}"
        );
        let c = Credentials {
            username: "u".into(),
            password: "p".into(),
        };
        let e = store(&p, "other:2", &c).unwrap_err().to_string();
        assert!(e.contains("docker-credential-berth-test-none"), "{e}");
        let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert!(v.get("auths").is_none(), "nothing recorded: {v}");
        assert!(remove(&p, "h:1").is_err());
    }

    #[test]
    fn docker_spellings_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let a = base64::engine::general_purpose::STANDARD.encode("bob:pw");
        std::fs::write(
            &p,
            format!(r#"{{"auths":{{"https://reg.example:5000/v2/":{{"auth":"{a}"}},"bad":{{"auth":"%%%"}}}}}}"#),
        )
        .unwrap();
        assert_eq!(
            lookup(&p, "reg.example:5000").unwrap().unwrap().username,
            "bob"
        );
        let e = lookup(&p, "bad").unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("not base64"), "{e}");
        std::fs::write(&p, "{nope").unwrap();
        assert!(lookup(&p, "x").is_err());
        assert_eq!(lookup(&dir.path().join("missing.json"), "x").unwrap(), None);
    }
}

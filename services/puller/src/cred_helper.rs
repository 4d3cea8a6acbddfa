//! Docker credential helpers: the program `docker-credential-<name>` (found in `PATH`), run
//! with one argument, the action, and its input on stdin, as Docker runs it:
//!
//! | action | stdin | stdout |
//! |---|---|---|
//! | `get` | the server URL | `{"ServerURL","Username","Secret"}` |
//! | `store` | `{"ServerURL","Username","Secret"}` | nothing |
//! | `erase` | the server URL | nothing |
//!
//! A helper without credentials for a server exits non-zero printing
//! `credentials not found in native keychain` (some answer an empty `Secret` instead); both
//! mean "none". The helper runs with this process's environment (for `pass`: `GNUPGHOME`,
//! `PASSWORD_STORE_DIR`), so in `berthd` it is the daemon's.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a helper may take to answer (one that waits for a pinentry nobody sees is
/// stopped).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What docker-credential-helpers print when they have nothing for a server.
pub const NOT_FOUND: &str = "credentials not found in native keychain";

/// The user name a helper answers for an identity (refresh) token instead of a password.
const TOKEN_USERNAME: &str = "<token>";

/// The program of helper `name`.
pub fn program(name: &str) -> String {
    format!("docker-credential-{name}")
}

#[derive(Debug, PartialEq, Eq)]
pub enum HelperError {
    /// The program is not installed (not found in `PATH`).
    Missing,
    /// The helper has no credentials for the server.
    NotFound,
    /// Anything else, described (naming the program and the action).
    Failed(String),
}

/// What a helper answered to `get`.
#[derive(PartialEq, Eq)]
pub enum Found {
    None,
    Password {
        username: String,
        secret: String,
    },
    /// An identity token (user name `<token>`): an OAuth2 refresh token, which berth does not
    /// use.
    IdentityToken,
}

impl std::fmt::Debug for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::None => write!(f, "None"),
            Found::Password { username, .. } => write!(f, "Password({username:?}, <secret>)"),
            Found::IdentityToken => write!(f, "IdentityToken"),
        }
    }
}

/// Run `docker-credential-<name> <action>` with `input` on stdin; its stdout when it succeeds.
fn run(name: &str, action: &str, input: &[u8]) -> Result<Vec<u8>, HelperError> {
    let prog = program(name);
    let mut child = match Command::new(&prog)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(HelperError::Missing),
        Err(e) => {
            return Err(HelperError::Failed(format!(
                "{prog} {action}: cannot start it: {e}"
            )))
        }
    };
    // The input is small (a URL or one JSON object): it fits the pipe, so this never blocks.
    // A helper that exits without reading it makes this fail; its status tells what happened.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            let _ = tx.send(buf);
        });
        rx
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                // Our own child, by its pid.
                let _ = child.kill();
                let _ = child.wait();
                return Err(HelperError::Failed(format!(
                    "{prog} {action} did not answer within {} s",
                    TIMEOUT.as_secs()
                )));
            }
            Err(e) => return Err(HelperError::Failed(format!("{prog} {action}: wait: {e}"))),
        }
    };
    // A process the helper left behind may hold the pipes open: do not wait for it long.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| rx.recv_timeout(Duration::from_secs(2)).ok();
    let stdout = collect(out).unwrap_or_default();
    let stderr = collect(err).unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    let (o, e) = (text(&stdout), text(&stderr));
    if o.contains(NOT_FOUND) || e.contains(NOT_FOUND) {
        return Err(HelperError::NotFound);
    }
    let said = match (o.is_empty(), e.is_empty()) {
        (false, false) => format!(": {o}; {e}"),
        (false, true) => format!(": {o}"),
        (true, false) => format!(": {e}"),
        (true, true) => String::new(),
    };
    Err(HelperError::Failed(format!(
        "{prog} {action} failed ({status}){said}"
    )))
}

/// The credentials the helper keeps for `server`.
pub fn get(name: &str, server: &str) -> Result<Found, HelperError> {
    let out = match run(name, "get", server.as_bytes()) {
        Ok(o) => o,
        Err(HelperError::NotFound) => return Ok(Found::None),
        Err(e) => return Err(e),
    };
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let r: Reply = serde_json::from_slice(&out).map_err(|e| {
        HelperError::Failed(format!(
            "{} get answered something that is not its JSON reply: {e}",
            program(name)
        ))
    })?;
    Ok(if r.secret.is_empty() {
        Found::None
    } else if r.username == TOKEN_USERNAME {
        Found::IdentityToken
    } else {
        Found::Password {
            username: r.username,
            secret: r.secret,
        }
    })
}

/// Give the helper credentials for `server`.
pub fn store(name: &str, server: &str, username: &str, secret: &str) -> Result<(), HelperError> {
    let input = serde_json::json!({"ServerURL": server, "Username": username, "Secret": secret});
    run(name, "store", input.to_string().as_bytes()).map(|_| ())
}

/// Make the helper forget `server`.
pub fn erase(name: &str, server: &str) -> Result<(), HelperError> {
    run(name, "erase", server.as_bytes()).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_helper_is_named_missing() {
        assert_eq!(
            get("berth-test-no-such-helper", "reg.example").unwrap_err(),
            HelperError::Missing
        );
    }
}

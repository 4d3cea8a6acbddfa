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

use berth_files::Finished;
use std::process::Command;
use std::time::Duration;

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
    let mut cmd = Command::new(&prog);
    cmd.arg(action);
    let out = match berth_files::run_with_timeout(&mut cmd, input, TIMEOUT) {
        Ok(Finished::Exited(o)) => o,
        Ok(Finished::TimedOut) => {
            return Err(HelperError::Failed(format!(
                "{prog} {action} did not answer within {} s",
                TIMEOUT.as_secs()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(HelperError::Missing),
        Err(e) => {
            return Err(HelperError::Failed(format!(
                "{prog} {action}: cannot run it: {e}"
            )))
        }
    };
    let (status, stdout, stderr) = (out.status, out.stdout, out.stderr);
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

//! `berth login [SERVER]`: check credentials with the registry (through the node's puller) and
//! record them as `docker login` does: through the credential helper the Docker config file
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`) names for the registry
//! (`credHelpers`, `credsStore`), else in the file itself.

use crate::ctx::Ctx;
use anyhow::{anyhow, bail, Context};
use berth_docker::config::{self as docker_config, Credentials, Stored};
use berth_proto::puller::{LoginReply, LoginRequest};
use std::io::{BufRead, IsTerminal, Write};

#[derive(clap::Args)]
pub struct Args {
    /// Registry host (`registry.example:5000`); Docker Hub when absent.
    server: Option<String>,
    #[arg(long, short = 'u')]
    username: Option<String>,
    /// The password (prefer --password-stdin: arguments are visible to other users).
    #[arg(long, short = 'p')]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

/// `host[:port]` of what people type after `login`: `https://index.docker.io/v1/` → `docker.io`.
pub fn server_host(server: Option<&str>) -> String {
    let s = server.unwrap_or("").trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let host = s.split('/').next().unwrap_or("");
    match host {
        "" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            berth_proto::reference::DEFAULT_DOMAIN.to_string()
        }
        h => h.to_string(),
    }
}

fn prompt(label: &str) -> anyhow::Result<String> {
    print!("{label}");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Read a line from the terminal with echo off.
fn prompt_secret(label: &str) -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let stdin = std::io::stdin();
    let old = tcgetattr(&stdin).context("read terminal settings")?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet).context("turn off echo")?;
    let r = prompt(label);
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &old);
    println!();
    r
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let host = server_host(a.server.as_deref());
    let tty = std::io::stdin().is_terminal();
    if a.password.is_some() && a.password_stdin {
        bail!("--password and --password-stdin are exclusive");
    }
    let username = match a.username {
        Some(u) => u,
        None if tty && !a.password_stdin => prompt("Username: ")?,
        None => bail!("a user name is needed: --username"),
    };
    if username.is_empty() {
        bail!("the user name is empty");
    }
    let password = if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else if a.password_stdin {
        let mut s = String::new();
        std::io::stdin().lock().read_line(&mut s)?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else if tty {
        prompt_secret("Password: ")?
    } else {
        bail!("a password is needed: --password-stdin");
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let reply: LoginReply = ctx
        .call::<berth_proto::puller::verbs::Login>(&LoginRequest {
            server: host.clone(),
            username: username.clone(),
            password: password.clone(),
        })
        .await?;
    let path = docker_config::default_path().ok_or_else(|| {
        anyhow!("neither DOCKER_CONFIG nor HOME is set: nowhere to record the login")
    })?;
    match docker_config::store(&path, &reply.server, &Credentials { username, password })? {
        Stored::File => eprintln!(
            "WARNING! Your password will be stored unencrypted in {}.",
            path.display()
        ),
        Stored::Helper(_) => {}
    }
    println!("{}", reply.status);
    Ok(())
}

//! `berth logout [SERVER]`: forget the credentials recorded for a registry (erased from its
//! credential helper too, when the Docker config file names one).

use crate::cmd::login::server_host;
use crate::ctx::Ctx;
use anyhow::anyhow;
use berth_docker::config as docker_config;

#[derive(clap::Args)]
pub struct Args {
    /// Registry host; Docker Hub when absent.
    server: Option<String>,
}

pub async fn run(_ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let host = server_host(a.server.as_deref());
    let path = docker_config::default_path()
        .ok_or_else(|| anyhow!("neither DOCKER_CONFIG nor HOME is set"))?;
    if docker_config::remove(&path, &host)? {
        println!("Removing login credentials for {host}");
    } else {
        println!("Not logged in to {host}");
    }
    Ok(())
}

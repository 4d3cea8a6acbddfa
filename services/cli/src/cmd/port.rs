//! `berth port CONTAINER`: the container's published ports as bound on the host, one a line
//! (`80/tcp -> 127.0.0.1:8080`), as `docker port` prints them.

use crate::ctx::Ctx;
use crate::output::print_json;
use berth_proto::network::*;

#[derive(clap::Args)]
pub struct Args {
    /// Container name or id.
    container: String,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r: PortsReply = ctx
        .call::<berth_proto::isolator::verbs::Ports>(&PortsRequest {
            container: a.container,
        })
        .await?;
    if ctx.json() {
        return print_json(&r.ports);
    }
    for p in &r.ports {
        println!("{p}");
    }
    Ok(())
}

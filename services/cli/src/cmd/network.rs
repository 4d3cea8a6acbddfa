//! `berth network ls [-q]`, `create [--subnet CIDR] NAME`, `rm NAME...`, `inspect NAME...`:
//! the node's bridge networks (served by the isolator).

use crate::ctx::Ctx;
use crate::output::{print_json, print_table, table};
use berth_proto::network::*;

#[derive(clap::Subcommand)]
pub enum NetworkCmd {
    /// List networks.
    Ls(LsArgs),
    /// Create a bridge network.
    Create(CreateArgs),
    /// Remove networks (refused while a running container is attached).
    Rm(NamesArgs),
    /// Show networks and their containers as JSON.
    Inspect(NamesArgs),
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// Only the names.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    /// The subnet in CIDR form (e.g. 10.90.0.0/24); chosen from the node's pool if absent.
    #[arg(long)]
    subnet: Option<String>,
    name: String,
}

#[derive(clap::Args)]
pub struct NamesArgs {
    #[arg(required = true)]
    names: Vec<String>,
}

pub async fn run(ctx: &Ctx, c: NetworkCmd) -> anyhow::Result<()> {
    match c {
        NetworkCmd::Ls(a) => {
            let r: NetworksReply = ctx
                .call::<berth_proto::isolator::verbs::Networks>(&NetworksRequest {})
                .await?;
            if ctx.json() {
                return print_json(&r.networks);
            }
            if a.quiet {
                for n in &r.networks {
                    println!("{}", n.name);
                }
                return Ok(());
            }
            let mut t = table(&["NAME", "BRIDGE", "SUBNET", "GATEWAY", "CONTAINERS"]);
            for n in &r.networks {
                t.add_row(vec![
                    n.name.clone(),
                    n.bridge.clone(),
                    n.subnet.clone(),
                    n.gateway.clone(),
                    n.endpoints.len().to_string(),
                ]);
            }
            print_table(&t);
            Ok(())
        }
        NetworkCmd::Create(a) => {
            let req = NetworkCreateRequest {
                name: a.name,
                subnet: a.subnet,
            };
            let r: NetworkInfo = ctx
                .call_mut::<berth_proto::isolator::verbs::NetworkCreate>(&req)
                .await?;
            if ctx.json() {
                return print_json(&r);
            }
            println!("{}", r.name);
            Ok(())
        }
        NetworkCmd::Rm(a) => {
            let mut failed = None;
            for name in &a.names {
                let req = NetworkRemoveRequest { name: name.clone() };
                match ctx
                    .call_mut::<berth_proto::isolator::verbs::NetworkRemove>(&req)
                    .await
                {
                    Ok(r) => println!("{}", r.name),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = Some(e);
                    }
                }
            }
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        NetworkCmd::Inspect(a) => {
            let mut out = Vec::new();
            for name in &a.names {
                let req = NetworkInspectRequest { name: name.clone() };
                let r: NetworkInfo = ctx
                    .call::<berth_proto::isolator::verbs::NetworkInspect>(&req)
                    .await?;
                out.push(r);
            }
            print_json(&out)
        }
    }
}

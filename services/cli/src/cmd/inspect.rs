//! `berth inspect CONTAINER...`: everything the supervisor knows, as a JSON array, with the
//! container's addresses on its bridge networks (from the isolator) under `networks`.

use crate::cmd::run::describe;
use crate::ctx::{exit, Ctx};
use berth_proto::network::{NetworksReply, NetworksRequest};
use berth_proto::supervisor::Target;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let mut out: Vec<serde_json::Value> = Vec::new();
    let mut nets: Option<NetworksReply> = None;
    let mut failed = false;
    for c in &a.containers {
        match ctx
            .call::<berth_proto::supervisor::verbs::Inspect>(&Target {
                container: c.clone(),
            })
            .await
        {
            Ok(r) => {
                if nets.is_none() {
                    nets = Some(
                        ctx.call::<berth_proto::isolator::verbs::Networks>(&NetworksRequest {})
                            .await
                            .unwrap_or(NetworksReply { networks: vec![] }),
                    );
                }
                let mut attached = serde_json::Map::new();
                for n in &nets.as_ref().unwrap().networks {
                    if let Some(e) = n.endpoints.iter().find(|e| e.container_id == r.state.id) {
                        attached.insert(
                            n.name.clone(),
                            serde_json::json!({
                                "address": e.address,
                                "subnet": n.subnet,
                                "gateway": n.gateway,
                                "aliases": e.aliases,
                                "ports": e.ports,
                            }),
                        );
                    }
                }
                let mut v = serde_json::to_value(&r)?;
                v["networks"] = serde_json::Value::Object(attached);
                out.push(v);
            }
            Err(e) => {
                eprintln!("berth: {c}: {}", describe(&e));
                failed = true;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    if failed {
        Err(exit(1))
    } else {
        Ok(())
    }
}

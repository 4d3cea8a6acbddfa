//! `berth inspect CONTAINER...`: everything the supervisor knows, as a JSON array.

use crate::cmd::run::describe;
use crate::ctx::{exit, Ctx};
use berth_proto::supervisor::{InspectReply, Target, INSPECT};
use berth_proto::Service;

#[derive(clap::Args)]
pub struct Args {
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let mut out: Vec<InspectReply> = Vec::new();
    let mut failed = false;
    for c in &a.containers {
        match ctx
            .call::<_, InspectReply>(
                Service::Supervisor,
                INSPECT,
                &Target {
                    container: c.clone(),
                },
            )
            .await
        {
            Ok(r) => out.push(r),
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

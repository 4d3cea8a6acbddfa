//! `berth volume ls [-q]` and `berth volume rm [-f] NAME...`: the node's named volumes
//! (served by the isolator).

use crate::ctx::Ctx;
use crate::output::{print_json, print_table, table};
use berth_proto::isolator::*;

#[derive(clap::Subcommand)]
pub enum VolumeCmd {
    /// List named volumes.
    Ls(LsArgs),
    /// Remove named volumes and their data.
    Rm(RmArgs),
}

#[derive(clap::Args)]
pub struct LsArgs {
    /// Only the names.
    #[arg(short = 'q', long)]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct RmArgs {
    /// Remove even while a running container uses the volume.
    #[arg(short = 'f', long)]
    force: bool,
    #[arg(required = true)]
    names: Vec<String>,
}

pub async fn run(ctx: &Ctx, c: VolumeCmd) -> anyhow::Result<()> {
    match c {
        VolumeCmd::Ls(a) => {
            let r: VolumesReply = ctx
                .call::<berth_proto::isolator::verbs::Volumes>(&VolumesRequest {})
                .await?;
            if ctx.json() {
                return print_json(&r.volumes);
            }
            if a.quiet {
                for v in &r.volumes {
                    println!("{}", v.name);
                }
                return Ok(());
            }
            let mut t = table(&["VOLUME NAME", "IN USE BY", "MOUNTPOINT"]);
            for v in &r.volumes {
                let used: Vec<String> = v
                    .used_by
                    .iter()
                    .map(|id| id.chars().take(12).collect())
                    .collect();
                t.add_row(vec![v.name.clone(), used.join(","), v.path.clone()]);
            }
            print_table(&t);
            Ok(())
        }
        VolumeCmd::Rm(a) => {
            let mut failed = None;
            for name in &a.names {
                let req = VolumeRemoveRequest {
                    name: name.clone(),
                    force: a.force,
                };
                match ctx
                    .call_mut::<berth_proto::isolator::verbs::VolumeRemove>(&req)
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
    }
}

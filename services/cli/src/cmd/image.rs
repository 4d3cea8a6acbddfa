//! `berth image ls|inspect|rm|prune`: images on the node (served by the layer-store).

use crate::ctx::Ctx;
use crate::output::{human_size, print_json};
use berth_proto::layer_store::*;

#[derive(clap::Subcommand)]
pub enum ImageCmd {
    /// List images (as `berth images`).
    Ls(super::images::Args),
    /// Show an image's config, layers and history, as JSON.
    Inspect(InspectArgs),
    /// Remove images (as `berth rmi`).
    Rm(super::rmi::Args),
    /// Remove snapshots and blobs that no image and no container uses.
    Prune(PruneArgs),
}

#[derive(clap::Args)]
pub struct InspectArgs {
    /// References, image IDs or digests.
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// Also remove every image no container uses.
    #[arg(short = 'a', long)]
    all: bool,
}

pub async fn run(ctx: &Ctx, c: ImageCmd) -> anyhow::Result<()> {
    match c {
        ImageCmd::Ls(a) => super::images::run(ctx, a).await,
        ImageCmd::Rm(a) => super::rmi::run(ctx, a).await,
        ImageCmd::Inspect(a) => {
            let mut out = Vec::new();
            let mut failed = None;
            for image in a.images {
                match ctx
                    .call::<berth_proto::layer_store::verbs::Inspect>(&InspectRequest { image })
                    .await
                {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        eprintln!("Error: {e}");
                        failed = Some(e);
                    }
                }
            }
            print_json(&out)?;
            match failed {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        ImageCmd::Prune(a) => {
            let r: GcReply = ctx
                .call_mut::<berth_proto::layer_store::verbs::Gc>(&GcRequest { all: a.all })
                .await?;
            if ctx.json() {
                return print_json(&r);
            }
            for u in &r.untagged {
                println!("Untagged: {u}");
            }
            println!(
                "Removed {} blob(s) and {} snapshot(s)",
                r.blobs_removed, r.snapshots_removed
            );
            println!("Total reclaimed space: {}", human_size(r.space_freed));
            Ok(())
        }
    }
}

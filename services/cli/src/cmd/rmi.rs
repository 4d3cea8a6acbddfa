//! `berth rmi [-f] IMAGE...`: untag images and delete what no reference and no container
//! needs any more (served by the layer-store).

use crate::ctx::Ctx;
use crate::output::print_json;
use berth_proto::layer_store::*;

#[derive(clap::Args)]
pub struct Args {
    /// Remove even while containers use the image (their root filesystems stay until removed).
    #[arg(short = 'f', long)]
    force: bool,
    /// References, image IDs or digests.
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let mut failed = None;
    let mut replies = Vec::new();
    for image in &a.images {
        let req = RemoveRequest {
            image: image.clone(),
            force: a.force,
        };
        match ctx
            .call_mut::<berth_proto::layer_store::verbs::Remove>(&req)
            .await
        {
            Ok(r) => {
                if !ctx.json() {
                    for u in &r.untagged {
                        println!("Untagged: {u}");
                    }
                    for d in &r.deleted {
                        println!("Deleted: {d}");
                    }
                }
                replies.push(r);
            }
            Err(e) => {
                eprintln!("Error: {e}");
                failed = Some(e);
            }
        }
    }
    if ctx.json() {
        print_json(&replies)?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

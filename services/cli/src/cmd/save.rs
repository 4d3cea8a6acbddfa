//! `berth save -o FILE IMAGE...`: write images into one archive that is both a Docker archive
//! (`manifest.json`, as `docker load` reads it) and an OCI image layout (`index.json`,
//! `oci-layout`, `blobs/`). The layer-store writes it on its node, so the path is made
//! absolute here.

use crate::ctx::Ctx;
use crate::output::{human_size, print_json};
use berth_proto::layer_store::*;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The archive to write (replaced if it exists).
    #[arg(short = 'o', long = "output", required = true)]
    output: PathBuf,
    /// References, image IDs or digests.
    #[arg(required = true)]
    images: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let path = std::path::absolute(&a.output)
        .map_err(|e| anyhow::anyhow!("{}: {e}", a.output.display()))?;
    let req = SaveRequest {
        images: a.images,
        path: path.display().to_string(),
    };
    let r: SaveReply = ctx
        .call_mut::<berth_proto::layer_store::verbs::Save>(&req)
        .await?;
    if ctx.json() {
        return print_json(&r);
    }
    eprintln!(
        "Saved {} image(s) to {} ({})",
        r.images.len(),
        r.path,
        human_size(r.size)
    );
    Ok(())
}

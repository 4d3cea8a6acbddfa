//! `berth load -i FILE`: load images from a Docker archive (`docker save`), an OCI archive or
//! an OCI image layout directory. The layer-store reads the file on its node, so the path is
//! made absolute here.

use crate::ctx::Ctx;
use crate::output::print_json;
use berth_proto::layer_store::*;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The archive (or OCI layout directory) to load.
    #[arg(short = 'i', long = "input", required = true)]
    input: PathBuf,
    /// Name the image this way when the archive names none.
    #[arg(short = 't', long)]
    tag: Option<String>,
    /// Print only the loaded references.
    #[arg(short = 'q', long)]
    quiet: bool,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let path =
        std::path::absolute(&a.input).map_err(|e| anyhow::anyhow!("{}: {e}", a.input.display()))?;
    if !path.exists() {
        anyhow::bail!("{} does not exist", path.display());
    }
    let req = LoadRequest {
        path: path.display().to_string(),
        tag: a.tag,
    };
    let r: LoadReply = ctx
        .call_mut::<berth_proto::layer_store::verbs::Load>(&req)
        .await?;
    if ctx.json() {
        return print_json(&r);
    }
    for i in &r.images {
        if a.quiet {
            println!("{}", i.reference);
        } else if i.reference == "<none>" {
            println!("Loaded image ID: {}", i.id);
        } else {
            println!("Loaded image: {}", i.reference);
        }
    }
    Ok(())
}

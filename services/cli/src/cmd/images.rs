//! `berth images [-q] [--json]`: the images on the node (served by the layer-store).

use crate::ctx::Ctx;
use crate::output::{human_duration, human_size, print_json, print_table, table};
use berth_proto::layer_store::*;

#[derive(clap::Args)]
pub struct Args {
    /// Only the image IDs.
    #[arg(short = 'q', long)]
    quiet: bool,
}

/// `12 minutes ago` from an RFC 3339 time, or the text as it is when it does not parse.
pub fn ago(created: Option<&str>) -> String {
    let Some(c) = created else {
        return "N/A".into();
    };
    match chrono::DateTime::parse_from_rfc3339(c) {
        Ok(t) => {
            let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds();
            format!("{} ago", human_duration(secs.max(0) as f64))
        }
        Err(_) => c.to_string(),
    }
}

/// The 12 hex digits Docker shows of an ID.
pub fn short_id(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .chars()
        .take(12)
        .collect()
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r: ImagesReply = ctx
        .call::<berth_proto::layer_store::verbs::Images>(&ImagesRequest {})
        .await?;
    if ctx.json() {
        return print_json(&r.images);
    }
    if a.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for i in &r.images {
            if seen.insert(i.id.clone()) {
                println!("{}", short_id(&i.id));
            }
        }
        return Ok(());
    }
    let mut t = table(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    for i in &r.images {
        t.add_row(vec![
            i.repository.clone(),
            i.tag.clone(),
            short_id(&i.id),
            ago(i.created.as_deref()),
            human_size(i.size),
        ]);
    }
    print_table(&t);
    Ok(())
}

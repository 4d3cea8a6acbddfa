//! Unpacking layers (the layer-store's own code, in this process): a layer of 20,000 small
//! files and a layer of one large file, beside `gzip -dc | tar -x` of the same blob; and the
//! whole 6-layer bench image, berth's `ensure_snapshots` (layers in parallel, each synced and
//! renamed into place as in a real prepare) beside one sequential `gzip -dc | tar -x` pass
//! over its layers and `umoci unpack`. The page cache is dropped before each timed run.

use super::Ctx;
use crate::env::{drop_caches, sh, time_sh};
use crate::stats::{Outcome, Series, Unit};
use anyhow::Context;
use berth_store::{ContentStore, Digest};
use std::path::{Path, PathBuf};
use std::time::Instant;

struct Blob {
    digest: String,
    media_type: String,
    path: PathBuf,
    size: u64,
}

fn layers(layout: &Path) -> anyhow::Result<(String, Vec<Blob>)> {
    let read = |d: &str| -> anyhow::Result<serde_json::Value> {
        let p = layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        Ok(serde_json::from_slice(
            &std::fs::read(&p).with_context(|| p.display().to_string())?,
        )?)
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    let manifest_digest = index["manifests"][0]["digest"]
        .as_str()
        .context("index.json names no manifest")?
        .to_string();
    let m = read(&manifest_digest)?;
    let mut out = Vec::new();
    for l in m["layers"].as_array().context("manifest without layers")? {
        let d = l["digest"].as_str().context("layer digest")?.to_string();
        out.push(Blob {
            path: layout
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
            media_type: l["mediaType"].as_str().unwrap_or_default().to_string(),
            size: l["size"].as_u64().unwrap_or(0),
            digest: d,
        });
    }
    Ok((manifest_digest, out))
}

/// A fresh directory under `work`, removed (and synced away) after `f`.
fn in_fresh_dir<T>(work: &Path, f: impl FnOnce(&Path) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let d = tempfile::Builder::new()
        .prefix("unpack-")
        .tempdir_in(work)?;
    drop_caches();
    let r = f(d.path());
    drop(d);
    let _ = sh("sync");
    r
}

fn tar_x(blob: &Path, dest: &Path) -> String {
    format!(
        "gzip -dc {} | tar -x --same-owner -C {}",
        blob.display(),
        dest.display()
    )
}

pub fn run(c: &Ctx) -> anyhow::Result<Vec<Outcome>> {
    let layout = c.fixtures.big_layout(6, 425)?;
    let (manifest, blobs) = layers(&layout)?;
    anyhow::ensure!(
        blobs.len() >= 2,
        "the bench image has {} layers",
        blobs.len()
    );
    let work = c.fixtures.dir.join("unpack-work");
    std::fs::create_dir_all(&work)?;
    let runs = c.runs.min(3);
    let mut outs = Vec::new();

    // One layer at a time: the small-files layer (the first) and the largest of the others
    // (the small-files layer is itself the largest blob, so it must be left out here).
    let largest = blobs[1..].iter().max_by_key(|b| b.size).unwrap();
    for (name, blob) in [
        ("unpack one layer, 20,000 small files", &blobs[0]),
        ("unpack one layer, one large file", largest),
    ] {
        let mut o = Outcome::new(name, Unit::Seconds, None);
        let mut s = Series::new(
            "berth",
            &format!("berth_layer_store::unpack::unpack({})", blob.digest),
        );
        let mut t = Series::new("gzip -dc | tar -x", &tar_x(&blob.path, Path::new("DIR")));
        let berth_once = || {
            in_fresh_dir(&work, |dest| {
                let t = Instant::now();
                berth_layer_store::unpack::unpack(
                    &blob.path,
                    &blob.media_type,
                    &blob.digest,
                    dest,
                    None,
                    Default::default(),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(t.elapsed())
            })
        };
        let tar_once = || in_fresh_dir(&work, |dest| time_sh(&tar_x(&blob.path, dest)));
        // Interleaved, each going first in turn: the disk's state after the previous run's
        // delete weighs on both alike.
        for i in 0..runs {
            if i % 2 == 0 {
                s.push(berth_once()?);
                t.push(tar_once()?);
            } else {
                t.push(tar_once()?);
                s.push(berth_once()?);
            }
        }
        o.series.push(s);
        o.series.push(t);
        // Within 1.2x of tar: the target, as berth/tar.
        let ratio = o.series[0].median() / o.series[1].median();
        o.notes.push(format!(
            "berth/tar = {ratio:.2} (target: within 1.2x): {}",
            if ratio <= 1.2 { "met" } else { "not met" }
        ));
        outs.push(o);
    }

    // The whole image.
    let mut o = Outcome::new(
        "unpack the whole 6-layer image (~425 MB)",
        Unit::Seconds,
        Some(1.2),
    );
    let mut s = Series::new(
        "berth",
        "LayerStore::ensure_snapshots (layers in parallel, synced and renamed)",
    );
    for _ in 0..runs {
        let d = in_fresh_dir(&work, |root| {
            let content = ContentStore::open(root.join("content"))?;
            for d in std::fs::read_dir(layout.join("blobs/sha256"))? {
                let d = d?;
                let digest: Digest =
                    format!("sha256:{}", d.file_name().to_string_lossy()).parse()?;
                if !content.has(&digest) {
                    // The layout's blobs, linked in (same filesystem): no copy is timed.
                    std::fs::hard_link(d.path(), content.blob_path(&digest)).or_else(|_| {
                        std::fs::copy(d.path(), content.blob_path(&digest)).map(|_| ())
                    })?;
                }
            }
            let ls = berth_layer_store::core::LayerStore::open(root)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let img = ls
                .read_image(&manifest.parse()?)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            drop_caches();
            let t = Instant::now();
            ls.ensure_snapshots(&img)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            Ok(t.elapsed())
        })?;
        s.push(d);
    }
    o.series.push(s);
    let mut t = Series::new(
        "gzip -dc | tar -x, each layer in turn",
        "for each layer: gzip -dc BLOB | tar -x -C DIR",
    );
    for _ in 0..runs {
        t.push(in_fresh_dir(&work, |dest| {
            let all: Vec<String> = blobs
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let d = dest.join(format!("l{i}"));
                    format!("mkdir {} && {}", d.display(), tar_x(&b.path, &d))
                })
                .collect();
            time_sh(&all.join(" && "))
        })?);
    }
    o.series.push(t);
    if crate::env::have("umoci") {
        let mut u = Series::new("umoci unpack", "umoci unpack --image LAYOUT:latest BUNDLE");
        for _ in 0..runs {
            u.push(in_fresh_dir(&work, |dest| {
                time_sh(&format!(
                    "umoci unpack --image {}:latest {}/bundle",
                    layout.display(),
                    dest.display()
                ))
            })?);
        }
        o.series.push(u);
    }
    outs.push(o);
    let _ = std::fs::remove_dir_all(&work);
    Ok(outs)
}

//! A cold pull of a multi-layer image of a few hundred MB from a local registry.

use super::Ctx;
use crate::env::{drop_caches, sh, time_sh};
use crate::fixtures::Registry;
use crate::stats::{Outcome, Series, Unit};

pub fn run(c: &Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new("cold pull, 6 layers ~425 MB", Unit::Seconds, Some(1.5));
    let layout = c.fixtures.big_layout(6, 425)?;
    let reg = Registry::start()?;
    let image = reg.push(&layout, "bench/big:latest")?;
    let work = tempfile::tempdir()?;
    // berth: each run pulls into a fresh berthd (its own empty data root), so every run is
    // cold whatever the image commands can remove.
    let mut s = Series::new(
        "berth",
        &format!("berth pull --quiet {image} (a fresh berthd each run)"),
    );
    for _ in 0..c.runs.min(3) {
        let fresh = crate::env::Berth::start(&c.berth.bin_dir)?;
        drop_caches();
        match time_sh(&format!("{} pull --quiet {image}", fresh.berth())) {
            Ok(d) => s.push(d),
            Err(e) => {
                o.notes.push(format!("berth: {e}"));
                break;
            }
        }
    }
    if !s.samples.is_empty() {
        o.series.push(s);
    }
    let mut engines: Vec<(&str, String, String)> = Vec::new();
    if c.peers.skopeo {
        let dest = work.path().join("skopeo-oci");
        engines.push((
            "skopeo copy",
            format!(
                "skopeo copy --quiet --src-tls-verify=false docker://{image} oci:{}:latest",
                dest.display()
            ),
            format!("rm -rf {}", dest.display()),
        ));
    }
    if c.peers.docker {
        engines.push((
            "docker",
            format!("docker pull -q {image}"),
            format!("docker rmi {image} >/dev/null"),
        ));
    }
    if c.peers.podman {
        engines.push((
            "podman",
            format!("podman pull -q --tls-verify=false {image}"),
            format!("podman rmi {image} >/dev/null"),
        ));
    }
    for (who, pull, clean) in engines {
        let mut s = Series::new(who, &pull);
        for _ in 0..c.runs.min(3) {
            let _ = sh(&clean);
            drop_caches();
            match time_sh(&pull) {
                Ok(d) => s.push(d),
                Err(e) => {
                    o.notes.push(format!("{who}: {e}"));
                    break;
                }
            }
        }
        let _ = sh(&clean);
        if !s.samples.is_empty() {
            o.series.push(s);
        }
    }
    o.notes.push(
        "berth pull and skopeo copy download and verify; docker and podman also unpack".into(),
    );
    Ok(o)
}

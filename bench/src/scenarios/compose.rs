//! A 20-service Compose file from nothing to converged, and a no-op re-apply; one service of
//! 200 replicas from nothing to converged.

use super::Ctx;
use crate::env::time_sh;
use crate::stats::{Outcome, Series, Unit};

/// `image_line` is `image: NAME` or berth's `x-berth: {rootfs: DIR}`.
fn compose_file(services: usize, image_line: &str) -> String {
    let mut s = String::from("services:\n");
    for i in 0..services {
        s.push_str(&format!(
            "  svc{i}:\n    {image_line}\n    command: [\"sleep\", \"600\"]\n    network_mode: none\n"
        ));
    }
    s
}

/// One service of `replicas` replicas (docker-compose 1.x takes the count from `--scale`).
fn replicas_file(replicas: usize, image_line: &str) -> String {
    format!(
        "services:\n  r:\n    {image_line}\n    command: [\"sleep\", \"600\"]\n    network_mode: none\n    deploy: {{replicas: {replicas}}}\n"
    )
}

pub fn run(c: &Ctx) -> anyhow::Result<Vec<Outcome>> {
    let (up, noop) = twenty(c)?;
    Ok(vec![up, noop, two_hundred(c)?])
}

fn two_hundred(c: &Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new("200-replica apply to converged", Unit::Seconds, None);
    let dir = tempfile::tempdir()?;
    let berth_file = dir.path().join("berth.yaml");
    std::fs::write(&berth_file, replicas_file(200, &c.berth_compose_image()))?;
    let b = c.berth.berth();
    let mut engines = vec![(
        "berth",
        format!(
            "{b} apply -f {} -p benchr --wait --wait-timeout 600s",
            berth_file.display()
        ),
        format!("{b} down benchr"),
    )];
    if c.peers.compose {
        let f = dir.path().join("docker-compose.yaml");
        std::fs::write(&f, replicas_file(1, "image: berth-bench-busybox"))?;
        engines.push((
            "docker-compose",
            format!(
                "docker-compose -f {} -p benchr up -d --scale r=200",
                f.display()
            ),
            format!("docker-compose -f {} -p benchr down -t 0", f.display()),
        ));
    }
    for (who, apply, down) in engines {
        let mut s = Series::new(who, &apply);
        for _ in 0..c.runs.min(2) {
            crate::env::drop_caches();
            match time_sh(&apply) {
                Ok(d) => s.push(d),
                Err(e) => {
                    o.notes.push(format!("{who}: {e}"));
                    let _ = time_sh(&down);
                    break;
                }
            }
            if let Err(e) = time_sh(&down) {
                o.notes.push(format!("{who} down: {e}"));
                break;
            }
        }
        if !s.samples.is_empty() {
            o.series.push(s);
        }
    }
    Ok(o)
}

fn twenty(c: &Ctx) -> anyhow::Result<(Outcome, Outcome)> {
    let mut up = Outcome::new("20-service apply to converged", Unit::Seconds, Some(0.5));
    let mut noop = Outcome::new("no-op re-apply", Unit::Seconds, Some(0.050));
    let dir = tempfile::tempdir()?;
    let berth_file = dir.path().join("berth.yaml");
    std::fs::write(&berth_file, compose_file(20, &c.berth_compose_image()))?;
    let b = c.berth.berth();
    let apply = format!("{b} apply -f {} -p benchc --wait", berth_file.display());
    let down = format!("{b} down benchc");
    let mut engines = vec![("berth", apply, down)];
    if c.peers.compose {
        let f = dir.path().join("docker-compose.yaml");
        std::fs::write(&f, compose_file(20, "image: berth-bench-busybox"))?;
        engines.push((
            "docker-compose",
            format!("docker-compose -f {} -p benchc up -d", f.display()),
            format!("docker-compose -f {} -p benchc down -t 0", f.display()),
        ));
    }
    for (who, apply, down) in engines {
        let mut s_up = Series::new(who, &apply);
        let mut s_noop = Series::new(who, &apply);
        for _ in 0..c.runs.min(5) {
            let r = time_sh(&apply).and_then(|d| {
                s_up.push(d);
                time_sh(&apply)
            });
            match r {
                Ok(d) => s_noop.push(d),
                Err(e) => {
                    up.notes.push(format!("{who}: {e}"));
                    let _ = time_sh(&down);
                    break;
                }
            }
            if let Err(e) = time_sh(&down) {
                up.notes.push(format!("{who} down: {e}"));
                break;
            }
        }
        if !s_up.samples.is_empty() {
            up.series.push(s_up);
        }
        if !s_noop.samples.is_empty() {
            noop.series.push(s_noop);
        }
    }
    Ok((up, noop))
}

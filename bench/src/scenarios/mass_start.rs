//! 50 detached containers started until all run, then all removed.

use super::Ctx;
use crate::env::{sh, time_sh};
use crate::peers::{PODMAN, PODMAN_RUN_FLAGS};
use crate::stats::{Outcome, Series, Unit};
use std::time::Instant;

const N: usize = 50;

pub fn run(c: &Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new("50 containers running", Unit::Seconds, Some(0.5));
    let b = c.berth.berth();
    let mut engines: Vec<(&str, String, String)> = vec![(
        "berth",
        format!("{b} run -d --name bench-$i {} sleep 600", c.berth_image),
        format!("{b} rm -f $(seq -f 'bench-%g' 0 {}) >/dev/null", N - 1),
    )];
    if c.peers.docker {
        engines.push((
            "docker",
            "docker run -d --network none --name bench-$i berth-bench-busybox sleep 600".into(),
            format!("docker rm -f $(seq -f 'bench-%g' 0 {}) >/dev/null", N - 1),
        ));
    }
    if c.peers.podman {
        engines.push((
            "podman",
            format!(
                "{PODMAN} run -d {PODMAN_RUN_FLAGS} --name bench-$i berth-bench-busybox sleep 600"
            ),
            format!(
                "{PODMAN} rm -f -t 0 $(seq -f 'bench-%g' 0 {}) >/dev/null",
                N - 1
            ),
        ));
    }
    for (who, start_one, remove_all) in engines {
        // Four at a time, as the peers' figures in the issues were taken.
        let start_all = format!(
            "for i in $(seq 0 {}); do {start_one} >/dev/null & if [ $((i % 4)) -eq 3 ]; then wait; fi; done; wait",
            N - 1
        );
        let mut s = Series::new(who, &format!("{N} × `{start_one}`, 4 at a time"));
        let mut rm = Series::new(&format!("{who} rm"), &remove_all);
        for _ in 0..c.runs.min(3) {
            crate::env::drop_caches();
            let t = Instant::now();
            if let Err(e) = sh(&start_all) {
                o.notes.push(format!("{who}: {e}"));
                let _ = sh(&remove_all);
                break;
            }
            s.push(t.elapsed());
            match time_sh(&remove_all) {
                Ok(d) => rm.push(d),
                Err(e) => o.notes.push(format!("{who} rm: {e}")),
            }
        }
        if !s.samples.is_empty() {
            o.series.push(s);
        }
        if !rm.samples.is_empty() {
            o.notes.push(format!(
                "{who}: removing all {N} took {} (median)",
                Unit::Seconds.fmt(rm.median())
            ));
        }
    }
    Ok(o)
}

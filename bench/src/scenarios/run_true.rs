//! `run --rm IMAGE /bin/true` end to end.

use super::Ctx;
use crate::env::time_sh;
use crate::peers::{PODMAN, PODMAN_RUN_FLAGS};
use crate::stats::{Outcome, Series, Unit};

pub fn run(c: &Ctx) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new("run --rm /bin/true", Unit::Seconds, Some(0.010));
    let mut cmds: Vec<(&str, String)> = vec![(
        "berth",
        format!("{} run --rm {} /bin/true", c.berth.berth(), c.berth_image),
    )];
    if c.peers.docker {
        cmds.push((
            "docker",
            "docker run --rm --network none berth-bench-busybox /bin/true".into(),
        ));
    }
    if c.peers.podman {
        cmds.push((
            "podman",
            format!("{PODMAN} run --rm {PODMAN_RUN_FLAGS} berth-bench-busybox /bin/true"),
        ));
    }
    if c.peers.runc {
        let b = c.fixtures.runc_bundle()?;
        let cfg = b.join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg)?)?;
        v["process"]["args"] = serde_json::json!(["/bin/true"]);
        v["process"]["terminal"] = serde_json::json!(false);
        std::fs::write(&cfg, serde_json::to_vec_pretty(&v)?)?;
        cmds.push((
            "runc",
            format!(
                "runc run --bundle {} berth-bench-$$-$(date +%s%N)",
                b.display()
            ),
        ));
    }
    for (who, cmd) in cmds {
        let mut s = Series::new(who, &cmd);
        for _ in 0..c.warmup {
            if let Err(e) = time_sh(&cmd) {
                o.notes.push(format!("{who}: {e}"));
                break;
            }
        }
        for _ in 0..c.runs {
            match time_sh(&cmd) {
                Ok(d) => s.push(d),
                Err(e) => {
                    o.notes.push(format!("{who}: {e}"));
                    break;
                }
            }
        }
        if !s.samples.is_empty() {
            o.series.push(s);
        }
    }
    Ok(o)
}

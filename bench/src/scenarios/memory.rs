//! Resident memory of berth's processes (daemon + NATS server, shims) idle and with 50
//! containers running, beside dockerd + containerd and podman's conmon.

use super::Ctx;
use crate::env::{pids_of_exe, pss_mib, rss_mib, sh};
use crate::stats::{Outcome, Series, Unit};

const N: usize = 50;

fn sum(pids: &[i32]) -> f64 {
    pids.iter().filter_map(|p| rss_mib(*p)).sum()
}

/// The shims of this daemon's containers: the pids its run directory's `shim.pid` files name.
fn container_shims(run_dir: &std::path::Path) -> Vec<i32> {
    let Ok(rd) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let all = pids_of_exe("berth-shim");
    rd.flatten()
        .filter_map(|e| {
            std::fs::read_to_string(e.path().join("shim.pid"))
                .ok()?
                .trim()
                .parse()
                .ok()
        })
        .filter(|p| all.contains(p))
        .collect()
}

/// Every `berth-shim` process that is not a container's (on a bench machine: the standby
/// shims and their pre-inits).
fn standby_shims(run_dir: &std::path::Path) -> Vec<i32> {
    let busy = container_shims(run_dir);
    pids_of_exe("berth-shim")
        .into_iter()
        .filter(|p| !busy.contains(p))
        .collect()
}

pub fn run(c: &Ctx) -> anyhow::Result<Vec<Outcome>> {
    let mut idle = Outcome::new("daemon + NATS resident, idle", Unit::MiB, Some(40.0));
    let mut busy = Outcome::new("daemon + NATS resident, 50 running", Unit::MiB, None);
    let mut shim = Outcome::new("resident per shim", Unit::MiB, Some(1.0));
    let b = c.berth;
    let daemon = || sum(&[b.pid().unwrap_or(0), b.nats_pid().unwrap_or(0)]);
    // Idle: nothing asked of it for a while (berthd returns free heap pages every 10 s).
    std::thread::sleep(std::time::Duration::from_secs(12));
    let mut s = Series::new("berth", "berthd + nats-server VmRSS");
    s.samples.push(daemon());
    idle.series.push(s);
    let standby = standby_shims(&b.dir.path().join("run"));
    idle.notes.push(format!(
        "berth, after the other scenarios ran on the same daemon: berthd {:.1} MiB, nats-server {:.1} MiB; besides, the {} standby shims and pre-inits waiting for containers: {:.1} MiB resident, {:.1} MiB proportional (shared code counted once)",
        rss_mib(b.pid().unwrap_or(0)).unwrap_or(f64::NAN),
        rss_mib(b.nats_pid().unwrap_or(0)).unwrap_or(f64::NAN),
        standby.len(),
        sum(&standby),
        standby.iter().filter_map(|p| pss_mib(*p)).sum::<f64>()
    ));

    let start = format!(
        "for i in $(seq 0 {}); do {} run -d --name mem-$i {} sleep 600 >/dev/null; done",
        N - 1,
        b.berth(),
        c.berth_image
    );
    let rm = format!(
        "{} rm -f $(seq -f 'mem-%g' 0 {}) >/dev/null",
        b.berth(),
        N - 1
    );
    match sh(&start) {
        Ok(_) => {
            let mut s = Series::new("berth", "berthd + nats-server VmRSS");
            s.samples.push(daemon());
            busy.series.push(s);
            // The shims of containers (those a run directory names): standby shims and
            // their pre-inits are counted with the daemon's note above.
            let shims = container_shims(&b.dir.path().join("run"));
            let mut s = Series::new("berth", "berth-shim VmRSS, each");
            s.samples = shims.iter().filter_map(|p| rss_mib(*p)).collect();
            if !s.samples.is_empty() {
                shim.series.push(s);
            }
        }
        Err(e) => busy.notes.push(format!("berth: {e}")),
    }
    let _ = sh(&rm);

    if c.peers.docker {
        let d = sum(&[pids_of_exe("dockerd"), pids_of_exe("containerd")].concat());
        let mut s = Series::new("docker", "dockerd + containerd VmRSS");
        s.samples.push(d);
        idle.series.push(s);
        let start = format!("for i in $(seq 0 {}); do docker run -d --network none --name mem-$i berth-bench-busybox sleep 600 >/dev/null; done", N - 1);
        if sh(&start).is_ok() {
            let d = sum(&[pids_of_exe("dockerd"), pids_of_exe("containerd")].concat());
            let mut s = Series::new("docker", "dockerd + containerd VmRSS");
            s.samples.push(d);
            busy.series.push(s);
            let mut s = Series::new("docker", "containerd-shim-runc-v2 VmRSS, each");
            s.samples = pids_of_exe("containerd-shim-runc-v2")
                .iter()
                .filter_map(|p| rss_mib(*p))
                .collect();
            if !s.samples.is_empty() {
                shim.series.push(s);
            }
        }
        let _ = sh(&format!(
            "docker rm -f $(seq -f 'mem-%g' 0 {}) >/dev/null",
            N - 1
        ));
    }
    if c.peers.podman {
        let start = format!("for i in $(seq 0 9); do {} run -d {} --name mem-$i berth-bench-busybox sleep 600 >/dev/null; done", crate::peers::PODMAN, crate::peers::PODMAN_RUN_FLAGS);
        if sh(&start).is_ok() {
            let mut s = Series::new("podman", "conmon VmRSS, each");
            s.samples = pids_of_exe("conmon")
                .iter()
                .filter_map(|p| rss_mib(*p))
                .collect();
            if !s.samples.is_empty() {
                shim.series.push(s);
            }
        }
        let _ = sh(&format!(
            "{} rm -f -t 0 $(seq -f 'mem-%g' 0 9) >/dev/null",
            crate::peers::PODMAN
        ));
    }
    Ok(vec![idle, busy, shim])
}

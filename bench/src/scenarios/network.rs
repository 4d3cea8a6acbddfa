//! Bridge networking: what a bridge network adds to a container's start (paired runs with
//! and without a network), and HTTP throughput through a published port beside the direct
//! path to the container's address (traffic only to 127.0.0.1 and the containers' own
//! bridge addresses).

use super::Ctx;
use crate::env::{sh, time_sh};
use crate::stats::{Outcome, Series, Unit};
use std::io::{Read, Write};
use std::time::Instant;

const FILE_MIB: usize = 256;

pub fn run(c: &Ctx) -> anyhow::Result<Vec<Outcome>> {
    let net = "benchnet";
    c.berth.cli(&format!("network create {net}"))?;
    let r = (|| Ok::<_, anyhow::Error>(vec![start(c, net)?, throughput(c, net)?]))();
    let _ = c.berth.cli("rm -f benchweb");
    let _ = c.berth.cli(&format!("network rm {net}"));
    r
}

fn start(c: &Ctx, net: &str) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "network setup added to run --rm /bin/true",
        Unit::Seconds,
        Some(0.005),
    );
    let b = c.berth.berth();
    let img = &c.berth_image;
    let mut engines = vec![(
        "berth",
        format!("{b} run --rm {img} /bin/true"),
        format!("{b} run --rm --network {net} {img} /bin/true"),
    )];
    if c.peers.docker {
        engines.push((
            "docker",
            "docker run --rm --network none berth-bench-busybox /bin/true".into(),
            "docker run --rm berth-bench-busybox /bin/true".into(),
        ));
    }
    for (who, none, bridge) in engines {
        // Each series in a block of its own (a bridge container's namespace is torn down by
        // the kernel after it exits, which slows whatever starts right after it); each
        // sample is one run with the network minus the median without.
        let mut without = Series::new(who, &none);
        let mut s = Series::new(who, &format!("({bridge}) - median({none})"));
        for _ in 0..c.warmup {
            let _ = time_sh(&none);
        }
        for _ in 0..c.runs {
            match time_sh(&none) {
                Ok(d) => without.push(d),
                Err(e) => {
                    o.notes.push(format!("{who}: {e}"));
                    break;
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        for _ in 0..c.warmup {
            let _ = time_sh(&bridge);
        }
        let base = without.median();
        for _ in 0..c.runs {
            match time_sh(&bridge) {
                Ok(d) => s.push_value(d.as_secs_f64() - base),
                Err(e) => {
                    o.notes.push(format!("{who}: {e}"));
                    break;
                }
            }
        }
        if !s.samples.is_empty() {
            o.notes.push(format!(
                "{who}: run --rm /bin/true {} without a network, {} with one (medians)",
                Unit::Seconds.fmt(base),
                Unit::Seconds.fmt(base + s.median())
            ));
            o.series.push(s);
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    Ok(o)
}

/// MiB/s of one `GET /big` from `addr`.
fn get(addr: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.write_all(b"GET /big HTTP/1.0\r\n\r\n")?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0usize;
    loop {
        match s.read(&mut buf)? {
            0 => break,
            k => n += k,
        }
    }
    anyhow::ensure!(n >= FILE_MIB << 20, "{addr}: only {n} bytes came back");
    Ok(n as f64 / (1 << 20) as f64 / t.elapsed().as_secs_f64())
}

fn wait_for(addr: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match get(addr) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn throughput(c: &Ctx, net: &str) -> anyhow::Result<Outcome> {
    let mut o = Outcome::new(
        "HTTP throughput, published port vs direct",
        Unit::MiBps,
        None,
    );
    let www = tempfile::tempdir()?;
    sh(&format!(
        "dd if=/dev/zero of={}/big bs=1M count={FILE_MIB} status=none",
        www.path().display()
    ))?;
    let serve = format!(
        "-v {}:/www:ro {} httpd -f -p 80 -h /www",
        www.path().display(),
        c.berth_image
    );
    let port = free_port()?;
    c.berth.cli(&format!(
        "run -d --name benchweb --network {net} -p 127.0.0.1:{port}:80 {serve}"
    ))?;
    let v: serde_json::Value = serde_json::from_str(&c.berth.cli("inspect benchweb")?)?;
    let direct = v[0]["networks"][net]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .ok_or_else(|| anyhow::anyhow!("no address for benchweb in inspect"))?
        .to_string();
    let mut targets = vec![
        ("berth", format!("127.0.0.1:{port}")),
        ("berth direct", format!("{direct}:80")),
    ];
    let mut docker_id = None;
    if c.peers.docker {
        let dport = free_port()?;
        match sh(&format!(
            "docker run -d -p 127.0.0.1:{dport}:80 -v {}:/www:ro berth-bench-busybox httpd -f -p 80 -h /www",
            www.path().display()
        )) {
            Ok(id) => {
                let id = id.trim().to_string();
                let ip = sh(&format!(
                    "docker inspect -f '{{{{.NetworkSettings.IPAddress}}}}' {id}"
                ))?;
                targets.push(("docker", format!("127.0.0.1:{dport}")));
                targets.push(("docker direct", format!("{}:80", ip.trim())));
                docker_id = Some(id);
            }
            Err(e) => o.notes.push(format!("docker: {e}")),
        }
    }
    for (who, addr) in targets {
        let mut s = Series::new(who, &format!("GET http://{addr}/big ({FILE_MIB} MiB)"));
        if let Err(e) = wait_for(&addr) {
            o.notes.push(format!("{who}: {e}"));
            continue;
        }
        for _ in 0..c.runs.min(5) {
            match get(&addr) {
                Ok(v) => s.push_value(v),
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
    if let Some(id) = docker_id {
        let _ = sh(&format!("docker rm -f {id}"));
    }
    Ok(o)
}

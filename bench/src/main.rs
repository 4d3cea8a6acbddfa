//! `berth-bench`: every scenario for berth and the installed peers, side by side, written to
//! `docs/benchmarks.md` with a chart. See docs/benchmarks.md for how to run it.

mod env;
mod fixtures;
mod peers;
mod report;
mod scenarios;
mod stats;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "berth-bench")]
struct Args {
    /// Timed runs per scenario (after the warm-up).
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed warm-up runs.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Scenarios to run (default: all): run, create, start50, compose, network, pull, unpack, memory.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// Directory holding berth's binaries (berth, berthd, berth-shim).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Where fixtures are built and cached.
    #[arg(long, default_value = "/var/tmp/berth-bench")]
    work_dir: PathBuf,
    /// The Markdown report.
    #[arg(long, default_value = "docs/benchmarks.md")]
    report: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let chosen: Vec<String> = if a.scenarios.is_empty() {
        scenarios::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        a.scenarios.clone()
    };
    for s in &chosen {
        anyhow::ensure!(
            scenarios::ALL.contains(&s.as_str()),
            "unknown scenario {s:?}; known: {}",
            scenarios::ALL.join(", ")
        );
    }
    let fixtures = fixtures::Fixtures::new(&a.work_dir)?;
    let peers = peers::Peers::detect();
    for n in &peers.notes {
        eprintln!("note: {n}");
    }
    // The same busybox image in every engine.
    let layout = fixtures.busybox_layout()?;
    if peers.docker {
        env::sh(&format!(
            "skopeo copy --quiet oci:{}:latest docker-daemon:berth-bench-busybox:latest",
            layout.display()
        ))
        .context("importing busybox into docker")?;
    }
    if peers.podman {
        env::sh(&format!(
            "skopeo copy --quiet oci:{}:latest containers-storage:localhost/berth-bench-busybox:latest",
            layout.display()
        ))
        .context("importing busybox into podman")?;
    }
    let berth = env::Berth::start(&a.bin_dir)?;
    let mut notes = peers.notes.clone();
    let berth_image = match berth.cli(&format!(
        "load -i {}",
        fixtures.busybox_archive()?.display()
    )) {
        Ok(_) => "busybox:latest".to_string(),
        Err(e) => {
            let rootfs = fixtures.runc_bundle()?.join("rootfs");
            let note = format!(
                "berth: the busybox image could not be loaded ({}); berth ran the same root filesystem with --rootfs {}",
                e.to_string().lines().last().unwrap_or(""),
                rootfs.display()
            );
            eprintln!("note: {note}");
            notes.push(note);
            format!("--rootfs {}", rootfs.display())
        }
    };

    let ctx = scenarios::Ctx {
        berth: &berth,
        peers: &peers,
        fixtures: &fixtures,
        runs: a.runs,
        warmup: a.warmup,
        berth_image,
    };
    let mut outcomes = Vec::new();
    for s in &chosen {
        eprintln!("scenario {s} ...");
        let r = match s.as_str() {
            "run" => scenarios::run_true::run(&ctx).map(|o| vec![o]),
            "create" => scenarios::create_exec::run(&ctx),
            "start50" => scenarios::mass_start::run(&ctx).map(|o| vec![o]),
            "compose" => scenarios::compose::run(&ctx),
            "network" => scenarios::network::run(&ctx),
            "pull" => scenarios::pull::run(&ctx).map(|o| vec![o]),
            "unpack" => scenarios::unpack::run(&ctx),
            "memory" => scenarios::memory::run(&ctx),
            _ => unreachable!("checked above"),
        };
        match r {
            Ok(os) => {
                for o in &os {
                    print_outcome(o);
                }
                outcomes.extend(os);
            }
            Err(e) => {
                eprintln!("scenario {s} failed: {e:#}");
                let mut o = stats::Outcome::new(s, stats::Unit::Seconds, None);
                o.notes.push(format!("failed: {e:#}"));
                outcomes.push(o);
            }
        }
    }
    let chart_path = a.report.with_extension("png");
    let chart = match report::chart(&outcomes, &chart_path) {
        Ok(true) => chart_path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned()),
        Ok(false) => None,
        Err(e) => {
            eprintln!("chart not drawn: {e:#}");
            None
        }
    };
    std::fs::write(
        &a.report,
        report::markdown(&outcomes, &notes, chart.as_deref()),
    )
    .with_context(|| format!("writing {}", a.report.display()))?;
    eprintln!("report written to {}", a.report.display());
    Ok(())
}

fn print_outcome(o: &stats::Outcome) {
    println!("== {}", o.name);
    let berth = o.berth().map(|s| s.median());
    for s in &o.series {
        let ratio = match berth {
            Some(b) if s.subject != "berth" => {
                format!("  ratio vs {} = {:.2}", s.subject, o.ratio(b, s.median()))
            }
            _ => String::new(),
        };
        println!(
            "  {:<16} median {:>10}  min {:>10}  max {:>10}  ({} runs){ratio}",
            s.subject,
            o.unit.fmt(s.median()),
            o.unit.fmt(s.min()),
            o.unit.fmt(s.max()),
            s.samples.len()
        );
    }
    if let (Some(t), Some(b)) = (o.target, berth) {
        println!(
            "  target < {}: {}",
            o.unit.fmt(t),
            if b < t { "met" } else { "not met" }
        );
    }
    for n in &o.notes {
        println!("  note: {}", n.lines().next().unwrap_or(""));
    }
}

//! The report: a Markdown table (machine, date, commands, figures, targets) and a PNG chart of
//! berth's figure relative to each peer.

use crate::stats::Outcome;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::Path;

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0))
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cg = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "cgroup v2"
    } else {
        "cgroup v1 (hybrid)"
    };
    format!("{cpu}, {cores} cores, {mem}, Linux {}, {cg}", kernel.trim())
}

pub fn markdown(outcomes: &[Outcome], peer_notes: &[String], chart: Option<&str>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# berth benchmarks\n");
    let _ = writeln!(
        md,
        "Run on {} by `berth-bench` on {}. Each figure is the median of the runs after a warm-up, \
         with min–max; the page cache is dropped before each pull and mass start. A timed command made \
         of plain words is started directly, as a shell starts it, so a figure does not include a \
         shell's own start (0.9 ms here); one that needs a shell (runc's, which names its container \
         with `$$`) runs under `sh -c`. Ratio = berth / peer \
         (below 1 means berth is faster or smaller; for throughput it is peer / berth, so below 1 \
         still means berth does better).\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        machine()
    );
    if let Some(c) = chart {
        let _ = writeln!(md, "![berth relative to its peers]({c})\n");
    }
    let _ = writeln!(
        md,
        "| scenario | who | median | min–max | runs | berth/peer | target | met |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|");
    for o in outcomes {
        let berth = o.berth().map(|s| s.median());
        for s in &o.series {
            let ratio = match (berth, s.subject.as_str()) {
                (_, "berth") | (None, _) => "".to_string(),
                (Some(b), _) => format!("{:.2}", o.ratio(b, s.median())),
            };
            let (target, met) = if s.subject == "berth" {
                match o.target {
                    Some(t) => (
                        format!("< {}", o.unit.fmt(t)),
                        if s.median() < t { "yes" } else { "no" }.to_string(),
                    ),
                    None => (String::new(), String::new()),
                }
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {}–{} | {} | {} | {} | {} |",
                o.name,
                s.subject,
                o.unit.fmt(s.median()),
                o.unit.fmt(s.min()),
                o.unit.fmt(s.max()),
                s.samples.len(),
                ratio,
                target,
                met
            );
        }
        if o.series.is_empty() {
            let _ = writeln!(md, "| {} | (nothing measured) | | | | | | |", o.name);
        }
    }
    let _ = writeln!(md, "\n## Commands\n");
    for o in outcomes {
        for s in &o.series {
            let _ = writeln!(md, "- {} / {}: `{}`", o.name, s.subject, s.command);
        }
    }
    let notes: Vec<String> = peer_notes
        .iter()
        .cloned()
        .chain(
            outcomes
                .iter()
                .flat_map(|o| o.notes.iter().map(move |n| format!("{}: {}", o.name, n))),
        )
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(md, "\n## Notes\n");
        for n in notes {
            let n: String = n.chars().take(400).collect();
            let _ = writeln!(md, "- {}", n.replace('\n', " "));
        }
    }
    md
}

/// A bar chart of berth/peer ratios (log scale), one bar per scenario and peer.
pub fn chart(outcomes: &[Outcome], path: &Path) -> anyhow::Result<bool> {
    let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"]
        .iter()
        .find_map(|p| std::fs::read(p).ok());
    let Some(font) = font else {
        return Ok(false);
    };
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("cannot load the chart font"))?;
    let mut bars: Vec<(String, f64)> = Vec::new();
    for o in outcomes {
        let Some(b) = o.berth().map(|s| s.median()) else {
            continue;
        };
        for s in o.series.iter().filter(|s| s.subject != "berth") {
            let r = o.ratio(b, s.median());
            if r.is_finite() && r > 0.0 {
                bars.push((format!("{} vs {}", o.name, s.subject), r));
            }
        }
    }
    if bars.is_empty() {
        return Ok(false);
    }
    let h = 120 + 40 * bars.len() as u32;
    let root = BitMapBackend::new(path, (1000, h)).into_drawing_area();
    root.fill(&WHITE)?;
    let lo = bars.iter().map(|b| b.1).fold(1.0f64, f64::min) / 2.0;
    let hi = bars.iter().map(|b| b.1).fold(1.0f64, f64::max) * 2.0;
    let n = bars.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "berth / peer (log scale; left of 1 = berth faster or smaller)",
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(380)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n).into_segmented())?;
    let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("ratio")
        .label_style(("sans-serif", 14))
        .draw()?;
    chart.draw_series(bars.iter().enumerate().map(|(i, (_, r))| {
        let color = if *r <= 1.0 {
            GREEN.mix(0.7)
        } else {
            RED.mix(0.7)
        };
        Rectangle::new(
            [
                (lo, SegmentValue::Exact(i)),
                (*r, SegmentValue::Exact(i + 1)),
            ],
            color.filled(),
        )
    }))?;
    chart.draw_series(std::iter::once(PathElement::new(
        vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
        BLACK.stroke_width(2),
    )))?;
    root.present()?;
    Ok(true)
}

//! `berth pull REF`: ask the node's puller for an image and show its progress (one bar per
//! layer and a total, with sizes and rate, on a terminal; plain lines otherwise).

use crate::ctx::Ctx;
use crate::output::human_size;
use anyhow::Context;
use berth_proto::puller::{LayerProgress, LayerState, PullRequest};
use berth_proto::reference::Reference;
use berth_proto::{subjects, Event};
use futures::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The image: `busybox`, `registry.example:5000/team/app:1`, `app@sha256:...`.
    reference: String,
    /// `os/arch[/variant]` to choose from a multi-platform image (default: this host's).
    #[arg(long)]
    platform: Option<String>,
    /// Print only the image reference when done.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Pulls can take long: at least an hour unless `--timeout` says more.
const PULL_TIMEOUT: u64 = 3600;

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let r = Reference::parse(&a.reference)?;
    let pull_id = berth_bus::random_hex(16);
    let node = ctx.node()?;
    let bus = ctx.bus().await?;
    let show = !a.quiet && !ctx.json();
    let events = if show {
        Some(
            bus.client()
                .subscribe(subjects::event(&node, "image", "pulling"))
                .await
                .context("subscribe to progress events")?,
        )
    } else {
        None
    };
    if show {
        println!(
            "{}: Pulling from {}",
            r.tag().or(r.digest()).unwrap_or("latest"),
            r.path()
        );
    }
    let req = PullRequest {
        reference: a.reference.clone(),
        platform: a.platform.clone(),
        pull_id: Some(pull_id.clone()),
    };
    let mut opts = ctx.request_options(true);
    opts.timeout = opts.timeout.max(Duration::from_secs(PULL_TIMEOUT));
    let call = bus.ask::<berth_proto::puller::verbs::Pull>(&node, &req, &opts);
    let started = Instant::now();
    let reply = match events {
        Some(mut sub) => {
            let mut view = View::new(std::io::stdout().is_terminal());
            tokio::pin!(call);
            let reply = loop {
                tokio::select! {
                    r = &mut call => break r,
                    Some(m) = sub.next() => {
                        if let Ok(ev) = serde_json::from_slice::<Event>(&m.payload) {
                            if ev.attrs.get("pull_id").and_then(|v| v.as_str()) == Some(pull_id.as_str()) {
                                view.update(&ev);
                            }
                        }
                    }
                }
            };
            // Progress events published just before the reply may still be in flight.
            while let Ok(Some(m)) =
                tokio::time::timeout(Duration::from_millis(50), sub.next()).await
            {
                if let Ok(ev) = serde_json::from_slice::<Event>(&m.payload) {
                    if ev.attrs.get("pull_id").and_then(|v| v.as_str()) == Some(pull_id.as_str()) {
                        view.update(&ev);
                    }
                }
            }
            view.finish(reply.is_ok(), started.elapsed());
            reply?
        }
        None => call.await?,
    };
    if ctx.json() {
        return crate::output::print_json(&reply);
    }
    if a.quiet {
        println!("{}", reply.reference);
        return Ok(());
    }
    println!("Digest: {}", reply.digest);
    if reply.downloaded {
        println!("Status: Downloaded newer image for {}", r.familiar());
    } else {
        println!("Status: Image is up to date for {}", r.familiar());
    }
    println!("{}", reply.reference);
    Ok(())
}

fn state_word(s: LayerState) -> &'static str {
    match s {
        LayerState::Waiting => "Waiting",
        LayerState::Downloading => "Downloading",
        LayerState::Retrying => "Retrying",
        LayerState::Verifying => "Verifying Checksum",
        LayerState::Done => "Pull complete",
        LayerState::Exists => "Already exists",
    }
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

/// The progress display: bars on a terminal, plain lines (one per layer state change)
/// otherwise, a total either way.
struct View {
    tty: bool,
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
    total: Option<ProgressBar>,
    states: HashMap<String, LayerState>,
    done: u64,
    size: u64,
}

impl View {
    fn new(tty: bool) -> View {
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stdout()
        } else {
            ProgressDrawTarget::hidden()
        });
        View {
            tty,
            multi,
            bars: HashMap::new(),
            total: None,
            states: HashMap::new(),
            done: 0,
            size: 0,
        }
    }

    fn update(&mut self, ev: &Event) {
        let layers: Vec<LayerProgress> = ev
            .attrs
            .get("layers")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        self.done = ev.attrs.get("done").and_then(|v| v.as_u64()).unwrap_or(0);
        self.size = ev.attrs.get("total").and_then(|v| v.as_u64()).unwrap_or(0);
        if self.tty {
            self.draw(&layers);
        } else {
            for l in &layers {
                if self.states.get(&l.digest) != Some(&l.state) {
                    println!("{}: {}", short(&l.digest), state_word(l.state));
                }
            }
        }
        for l in layers {
            self.states.insert(l.digest, l.state);
        }
    }

    fn draw(&mut self, layers: &[LayerProgress]) {
        let layer_style = ProgressStyle::with_template(
            "{prefix}: {msg:<18} [{bar:30}] {bytes:>10}/{total_bytes:<10}",
        )
        .expect("template")
        .progress_chars("=> ");
        for l in layers {
            let bar = self.bars.entry(l.digest.clone()).or_insert_with(|| {
                let b = self.multi.add(ProgressBar::new(l.total));
                b.set_style(layer_style.clone());
                b.set_prefix(short(&l.digest).to_string());
                b
            });
            bar.set_length(l.total);
            bar.set_position(l.done.min(l.total));
            bar.set_message(state_word(l.state));
        }
        let total = self.total.get_or_insert_with(|| {
            let b = self.multi.add(ProgressBar::new(0));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12}: {bytes:>10}/{total_bytes:<10} [{bar:30}] {binary_bytes_per_sec} {elapsed}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            b.set_prefix("Total");
            b
        });
        total.set_length(self.size);
        total.set_position(self.done.min(self.size));
    }

    fn finish(&mut self, ok: bool, elapsed: Duration) {
        if self.tty {
            for b in self.bars.values() {
                b.finish();
            }
            if let Some(t) = &self.total {
                t.finish();
            }
        }
        if ok && self.size > 0 {
            let rate = self.done as f64 / elapsed.as_secs_f64().max(0.001);
            println!(
                "Total: {} in {:.1}s ({}/s)",
                human_size(self.size),
                elapsed.as_secs_f64(),
                human_size(rate as u64)
            );
        }
    }
}

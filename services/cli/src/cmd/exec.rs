//! `berth exec [-i] [-t] [-e KEY=value] [-u USER] [-w DIR] CONTAINER COMMAND [ARG...]`: run a
//! command in a running container. Its output is streamed as it comes (over the bus, see
//! `berth_proto::isolator::ExecStream`); with `-i` berth's stdin is its input; with `-t` it
//! runs on a terminal of its own (and this terminal, when stdin is one, is put in raw mode
//! while it runs). berth exits with its exit code.

use crate::ctx::{exit, Ctx};
use berth_proto::isolator::{exec_subject, ExecStream};
use berth_proto::supervisor::ExecRequest;
use futures::StreamExt;
use std::io::{IsTerminal, Read, Write};
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Keep stdin open: berth's input goes to the command.
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal for the command.
    #[arg(short = 't', long)]
    tty: bool,
    /// Set an environment variable KEY=value.
    #[arg(short = 'e', long = "env")]
    env: Vec<String>,
    /// User: uid, uid:gid or a name.
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Working directory inside the container.
    #[arg(short = 'w', long)]
    workdir: Option<String>,
    container: String,
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// The terminal of stdin in raw mode until dropped.
struct RawMode(nix::sys::termios::Termios);

impl RawMode {
    fn enter() -> anyhow::Result<RawMode> {
        use nix::sys::termios::*;
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw)?;
        Ok(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            std::io::stdin(),
            nix::sys::termios::SetArg::TCSANOW,
            &self.0,
        );
    }
}

/// Rows and columns of the terminal on stdout, if it is one.
fn window() -> (Option<u16>, Option<u16>) {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a local winsize.
    let ok = unsafe { libc::ioctl(1, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0;
    if ok {
        (Some(ws.ws_row), Some(ws.ws_col))
    } else {
        (None, None)
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    let node = ctx.node()?;
    let bus = ctx.bus().await?.clone();
    let subject = exec_subject(&node, &berth_bus::random_hex(16));
    let client = bus.client().clone();
    // Subscribed before the request, so nothing the command writes is missed.
    let mut out = client.subscribe(format!("{subject}.out")).await?;
    let mut err = client.subscribe(format!("{subject}.err")).await?;
    let mut started = client.subscribe(format!("{subject}.started")).await?;
    let (rows, cols) = if a.tty { window() } else { (None, None) };
    let req = ExecRequest {
        container: a.container,
        args: a.command,
        env: a.env,
        user: a.user,
        working_dir: a.workdir,
        stream: Some(ExecStream {
            subject: subject.clone(),
            stdin: a.interactive,
            tty: a.tty,
            rows,
            cols,
        }),
    };
    let mut opts = ctx.request_options(true);
    opts.timeout = opts.timeout.max(Duration::from_secs(3600));
    let mut reply = tokio::spawn(async move {
        bus.ask::<berth_proto::supervisor::verbs::Exec>(&node, &req, &opts)
            .await
    });
    let _raw = if a.tty && a.interactive && std::io::stdin().is_terminal() {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let mut sink = Sink::default();
    let mut input_started = false;
    let r = loop {
        tokio::select! {
            m = out.next() => if let Some(m) = m { sink.put(true, &m.payload)? },
            m = err.next() => if let Some(m) = m { sink.put(false, &m.payload)? },
            m = started.next(), if !input_started => {
                input_started = true;
                if a.interactive && m.is_some() {
                    forward_stdin(client.clone(), format!("{subject}.in"));
                }
            },
            r = &mut reply => break r??,
        }
    };
    // The reply follows the last output on the server's side; take what is still queued.
    while sink.received < r.streamed_bytes {
        let next = tokio::time::timeout(Duration::from_secs(2), async {
            tokio::select! {
                m = out.next() => m.map(|m| (true, m)),
                m = err.next() => m.map(|m| (false, m)),
            }
        })
        .await;
        match next {
            Ok(Some((to_out, m))) => sink.put(to_out, &m.payload)?,
            _ => break,
        }
    }
    drop(_raw);
    if r.exit_code == 0 {
        Ok(())
    } else {
        Err(exit(r.exit_code))
    }
}

/// Where the streamed output goes, and how much of it came.
#[derive(Default)]
struct Sink {
    received: u64,
}

impl Sink {
    fn put(&mut self, to_stdout: bool, bytes: &[u8]) -> std::io::Result<()> {
        self.received += bytes.len() as u64;
        if to_stdout {
            let mut o = std::io::stdout().lock();
            o.write_all(bytes)?;
            o.flush()
        } else {
            let mut e = std::io::stderr().lock();
            e.write_all(bytes)?;
            e.flush()
        }
    }
}

/// berth's stdin, read on a thread of its own, published as the command's input; an empty
/// message at the end closes it.
fn forward_stdin(client: async_nats::Client, subject: String) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 16 << 10];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.blocking_send(Vec::new());
                    break;
                }
                Ok(n) => {
                    if tx.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    tokio::spawn(async move {
        while let Some(chunk) = rx.recv().await {
            let end = chunk.is_empty();
            if client.publish(subject.clone(), chunk.into()).await.is_err() || end {
                break;
            }
            let _ = client.flush().await;
        }
        let _ = client.flush().await;
    });
}

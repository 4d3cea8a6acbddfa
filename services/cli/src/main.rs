//! `berth`: the command line. It owns nothing: it publishes commands on the bus and renders
//! replies and events. One file per command under `cmd/`.

mod cmd;
mod ctx;
mod output;

use clap::{Parser, Subcommand};
use ctx::{Ctx, Early, GlobalOpts};

#[derive(Parser)]
#[command(name = "berth", version, about = "berth: containers on a bus")]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[command(defer = true)]
#[allow(clippy::large_enum_variant)] // parsed once per run
enum Command {
    /// System-wide information (`system info`, ...).
    #[command(subcommand)]
    System(cmd::system::SystemCmd),
    /// Replay past events, then follow live ones.
    Events(cmd::events::Args),
    /// Pull an image from a registry.
    Pull(cmd::pull::Args),
    /// Log in to a registry.
    Login(cmd::login::Args),
    /// Log out from a registry.
    Logout(cmd::logout::Args),
    /// Create and start a container (`-d` to leave it running in the background).
    Run(cmd::run::Args),
    /// List containers.
    Ps(cmd::ps::Args),
    /// Start containers (`-a`: one, printing its output and exiting with its exit code).
    Start(cmd::start::Args),
    /// Stop containers: the stop signal, then SIGKILL after the grace period.
    Stop(cmd::stop::Args),
    /// Restart containers.
    Restart(cmd::restart::Args),
    /// Send a signal to containers.
    Kill(cmd::kill::Args),
    /// Remove containers.
    Rm(cmd::rm::Args),
    /// Freeze containers.
    Pause(cmd::pause::Args),
    /// Thaw containers.
    Unpause(cmd::unpause::Args),
    /// Show everything known about containers, as JSON.
    Inspect(cmd::inspect::Args),
    /// Run a command in a running container.
    Exec(cmd::exec::Args),
    /// Show (and follow) a container's output.
    Logs(cmd::logs::Args),
    /// Memory, CPU and processes of running containers.
    Stats(cmd::stats::Args),
    /// Apply a Compose file: store it as the project's desired state and converge.
    Apply(cmd::apply::Args),
    /// Show what applying a Compose file would change (exit 0: nothing, 2: something).
    Plan(cmd::plan::Args),
    /// Take a project down.
    Down(cmd::down::Args),
    /// List projects and whether they have converged.
    Ls(cmd::ls::Args),
    /// The revisions of a project's desired state.
    History(cmd::history::Args),
    /// Apply an earlier revision of a project again.
    Rollback(cmd::rollback::Args),
    /// Named volumes (`volume ls`, `volume rm`).
    #[command(subcommand)]
    Volume(cmd::volume::VolumeCmd),
    /// Bridge networks (`network ls`, `create`, `rm`, `inspect`).
    #[command(subcommand)]
    Network(cmd::network::NetworkCmd),
    /// The published ports of a container.
    Port(cmd::port::Args),
    /// List images.
    Images(cmd::images::Args),
    /// Images: `image ls`, `inspect`, `rm`, `prune`.
    #[command(subcommand)]
    Image(cmd::image::ImageCmd),
    /// Remove images.
    Rmi(cmd::rmi::Args),
    /// Load images from a Docker or OCI archive.
    Load(cmd::load::Args),
    /// Save images into an archive (Docker and OCI layout in one).
    Save(cmd::save::Args),
}

// One thread runs everything async: the bus connection's task and the command's, so their
// messages pass without a thread switch. Clap parses on a thread of its own, started first
// (a cold first parse takes a few tenths of a millisecond; subcommands are built only when
// chosen), while this one connects to the bus (see `ctx::Early`); `--help`, `--version` and bad
// arguments end the process from there.
fn main() {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let cli = match Cli::try_parse() {
            Ok(cli) => cli,
            Err(e) => bad_arguments(e),
        };
        let _ = tx.send(cli);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("the async runtime starts");
    let early = Early::start(&rt);
    let code = rt.block_on(async move {
        let Ok(cli) = rx.await else {
            return 1;
        };
        command(cli, early).await
    });
    std::process::exit(code);
}

/// Print clap's message and exit: with 125 for a bad argument of `run`, `exec` or `start` (as
/// Docker's commands that run a container's command), else clap's own code (2; 0 for help).
fn bad_arguments(e: clap::Error) -> ! {
    let code = e.exit_code();
    let _ = e.print();
    let runs_a_command = matches!(
        subcommand(std::env::args().skip(1)).as_deref(),
        Some("run" | "exec" | "start")
    );
    if code != 0 && runs_a_command {
        std::process::exit(ctx::EXIT_ENGINE);
    }
    std::process::exit(code)
}

/// The first argument that is neither a global option nor its value: the subcommand.
fn subcommand(args: impl Iterator<Item = String>) -> Option<String> {
    const WITH_VALUE: [&str; 4] = ["--nats", "--creds", "--node", "--timeout"];
    let mut args = args.peekable();
    while let Some(a) = args.next() {
        if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

async fn command(cli: Cli, early: Option<Early>) -> i32 {
    let ctx = Ctx::new(cli.global, early);
    let r = match cli.command {
        Command::System(c) => cmd::system::run(&ctx, c).await,
        Command::Events(a) => cmd::events::run(&ctx, a).await,
        Command::Pull(a) => cmd::pull::run(&ctx, a).await,
        Command::Login(a) => cmd::login::run(&ctx, a).await,
        Command::Logout(a) => cmd::logout::run(&ctx, a).await,
        Command::Run(a) => cmd::run::run(&ctx, a).await.map_err(ctx::engine_error),
        Command::Ps(a) => cmd::ps::run(&ctx, a).await,
        Command::Start(a) => cmd::start::run(&ctx, a).await,
        Command::Stop(a) => cmd::stop::run(&ctx, a).await,
        Command::Restart(a) => cmd::restart::run(&ctx, a).await,
        Command::Kill(a) => cmd::kill::run(&ctx, a).await,
        Command::Rm(a) => cmd::rm::run(&ctx, a).await,
        Command::Pause(a) => cmd::pause::run(&ctx, a).await,
        Command::Unpause(a) => cmd::unpause::run(&ctx, a).await,
        Command::Inspect(a) => cmd::inspect::run(&ctx, a).await,
        Command::Exec(a) => cmd::exec::run(&ctx, a).await.map_err(ctx::engine_error),
        Command::Logs(a) => cmd::logs::run(&ctx, a).await,
        Command::Stats(a) => cmd::stats::run(&ctx, a).await,
        Command::Apply(a) => cmd::apply::run(&ctx, a).await,
        Command::Plan(a) => cmd::plan::run(&ctx, a).await,
        Command::Down(a) => cmd::down::run(&ctx, a).await,
        Command::Ls(a) => cmd::ls::run(&ctx, a).await,
        Command::History(a) => cmd::history::run(&ctx, a).await,
        Command::Rollback(a) => cmd::rollback::run(&ctx, a).await,
        Command::Volume(c) => cmd::volume::run(&ctx, c).await,
        Command::Network(c) => cmd::network::run(&ctx, c).await,
        Command::Port(a) => cmd::port::run(&ctx, a).await,
        Command::Images(a) => cmd::images::run(&ctx, a).await,
        Command::Image(c) => cmd::image::run(&ctx, c).await,
        Command::Rmi(a) => cmd::rmi::run(&ctx, a).await,
        Command::Load(a) => cmd::load::run(&ctx, a).await,
        Command::Save(a) => cmd::save::run(&ctx, a).await,
    };
    ctx::exit_code(r)
}

#[cfg(test)]
mod tests {
    use super::subcommand;

    #[test]
    fn the_subcommand_is_found_behind_global_options() {
        let args = |a: &[&str]| {
            a.iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(
            subcommand(args(&["--node", "run", "--json", "exec", "-x"])).as_deref(),
            Some("exec")
        );
        assert_eq!(
            subcommand(args(&["--timeout=5", "run"])).as_deref(),
            Some("run")
        );
        assert_eq!(subcommand(args(&["--json"])), None);
    }
}

//! `berth`: the command line. It owns nothing: it publishes commands on the bus and renders
//! replies and events. One file per command under `cmd/`.

mod cmd;
mod ctx;
mod output;

use clap::{Parser, Subcommand};
use ctx::{Ctx, GlobalOpts};

#[derive(Parser)]
#[command(name = "berth", version, about = "berth: containers on a bus")]
struct Cli {
    #[command(flatten)]
    global: GlobalOpts,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
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
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let ctx = Ctx::new(cli.global);
    let r = match cli.command {
        Command::System(c) => cmd::system::run(&ctx, c).await,
        Command::Events(a) => cmd::events::run(&ctx, a).await,
        Command::Pull(a) => cmd::pull::run(&ctx, a).await,
        Command::Login(a) => cmd::login::run(&ctx, a).await,
        Command::Logout(a) => cmd::logout::run(&ctx, a).await,
    };
    std::process::exit(ctx::exit_code(r));
}

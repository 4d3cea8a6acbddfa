//! `berth kill [-s SIGNAL] CONTAINER...`: send a signal (SIGKILL by default).

use crate::cmd::run::each;
use crate::ctx::Ctx;
use berth_proto::supervisor::KillRequest;

#[derive(clap::Args)]
pub struct Args {
    /// The signal: a name (SIGHUP, HUP) or a number.
    #[arg(short = 's', long = "signal")]
    signal: Option<String>,
    #[arg(required = true)]
    containers: Vec<String>,
}

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    each(&a.containers, |c| {
        let signal = a.signal.clone();
        async move {
            ctx.call_mut::<berth_proto::supervisor::verbs::Kill>(&KillRequest {
                container: c,
                signal,
            })
            .await?;
            Ok(())
        }
    })
    .await
}

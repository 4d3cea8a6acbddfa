//! `berth exec [-e KEY=value] [-u USER] [-w DIR] CONTAINER COMMAND [ARG...]`: run a command in
//! a running container; its output is printed when it ends, and berth exits with its code.

use crate::ctx::{exit, Ctx};
use anyhow::bail;
use berth_proto::supervisor::{ExecReply, ExecRequest, EXEC};
use berth_proto::Service;
use std::io::Write;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// Keep stdin open (interactive sessions are not supported yet).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// Allocate a terminal (interactive sessions are not supported yet).
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

pub async fn run(ctx: &Ctx, a: Args) -> anyhow::Result<()> {
    if a.interactive || a.tty {
        bail!(
            "exec -i/-t: interactive sessions are not supported yet; run the command without them"
        );
    }
    let node = ctx.node()?;
    let bus = ctx.bus().await?;
    let mut opts = ctx.request_options(true);
    opts.timeout = opts.timeout.max(Duration::from_secs(3600));
    let r: ExecReply = bus
        .request(
            &node,
            Service::Supervisor,
            EXEC,
            &ExecRequest {
                container: a.container,
                args: a.command,
                env: a.env,
                user: a.user,
                working_dir: a.workdir,
            },
            &opts,
        )
        .await?;
    std::io::stdout().write_all(r.stdout.as_bytes())?;
    std::io::stderr().write_all(r.stderr.as_bytes())?;
    if r.exit_code == 0 {
        Ok(())
    } else {
        Err(exit(r.exit_code))
    }
}

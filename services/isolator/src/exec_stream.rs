//! `exec` with a stream (`ExecRequest.stream`): the process's output is published on the bus
//! as it comes (`S.out`, `S.err`), its input taken from `S.in` (an empty message closes it),
//! and `S.started` tells the client when input is listened to. The reply follows the last
//! output message on the same connection, with the number of bytes streamed. With `tty`, the
//! shim gives the process a terminal of the container's own and everything comes on `S.out`.

use crate::error::{io, IsolatorError};
use crate::shim;
use berth_bus::ServiceContext;
use berth_proto::isolator::{ExecReply, ExecRequest, ExecStream};
use bytes::Bytes;
use futures::StreamExt;
use nix::fcntl::OFlag;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

/// How long the output pipes may stay open after the process ended (a background child
/// holding them) before the reply is sent anyway.
const DRAIN: Duration = Duration::from_secs(2);

fn pump(
    client: async_nats::Client,
    subject: String,
    mut rd: impl AsyncRead + Unpin + Send + 'static,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 << 10];
        let mut total = 0u64;
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if client
                        .publish(subject.clone(), Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    total += n as u64;
                }
            }
        }
        total
    })
}

pub async fn exec(
    ctx: &ServiceContext,
    req: ExecRequest,
    stream: ExecStream,
) -> Result<ExecReply, IsolatorError> {
    let (bundle, run_dir) = crate::exec_target(&ctx.config, &req)?;
    let s = stream.subject.clone();
    // Only this node's exec subjects: the output goes where the caller says, and the
    // services' identity may publish events, so a subject elsewhere would let a caller make
    // the isolator forge them.
    let own = berth_proto::isolator::exec_subject(ctx.bus.node(), "");
    let ok = s
        .strip_prefix(&own)
        .is_some_and(berth_proto::subjects::valid_token);
    if !ok {
        return Err(IsolatorError::invalid(
            "stream subject",
            format!("{s:?} is not {own}<id> (an id of letters, digits, '-' or '_')"),
        ));
    }
    let body = serde_json::to_string(&req).expect("plain data serializes");
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| io("pipe", "")(e.into()))?;
    let mut cmd = shim::exec_command(&req.id, &bundle, &run_dir, &body, &w);
    cmd.stdin(if stream.stdin {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| IsolatorError::ShimSpawn {
            path: shim::shim_bin(),
            source,
        })?;
    drop(w);
    let client = ctx.bus.client().clone();
    let input = match (stream.stdin, child.stdin.take()) {
        (true, Some(mut stdin)) => {
            let mut sub = client
                .subscribe(format!("{s}.in"))
                .await
                .map_err(|e| IsolatorError::invalid("stream", format!("subscribe {s}.in: {e}")))?;
            Some(tokio::spawn(async move {
                while let Some(m) = sub.next().await {
                    if m.payload.is_empty() || stdin.write_all(&m.payload).await.is_err() {
                        break;
                    }
                    let _ = stdin.flush().await;
                }
                // Dropping `stdin` closes the process's input.
            }))
        }
        _ => None,
    };
    let _ = client.publish(format!("{s}.started"), Bytes::new()).await;
    let out = pump(
        client.clone(),
        format!("{s}.out"),
        child.stdout.take().expect("piped"),
    );
    let err = pump(
        client.clone(),
        format!("{s}.err"),
        child.stderr.take().expect("piped"),
    );
    let status = match req.timeout_ms.map(Duration::from_millis) {
        Some(t) => match tokio::time::timeout(t, child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                if let Some(pid) = child.id() {
                    shim::stop_exec(pid);
                }
                child.wait().await
            }
        },
        None => child.wait().await,
    }
    .map_err(io("wait for", shim::shim_bin()))?;
    let mut streamed = 0;
    for h in [out, err] {
        let abort = h.abort_handle();
        match tokio::time::timeout(DRAIN, h).await {
            Ok(Ok(n)) => streamed += n,
            _ => abort.abort(),
        }
    }
    if let Some(i) = input {
        i.abort();
    }
    let _ = client.flush().await;
    if let Some(e) = tokio::task::spawn_blocking(move || shim::read_status(&r))
        .await
        .ok()
        .flatten()
    {
        return Err(IsolatorError::Exec {
            id: req.id,
            failure: e,
        });
    }
    Ok(ExecReply {
        exit_code: shim::exit_code(status),
        stdout: String::new(),
        stderr: String::new(),
        streamed_bytes: streamed,
    })
}

//! The isolator alone: from `create` to the container's process running, and a whole
//! `create → start → exit`, beside `runc run` of the same root filesystem.
//!
//! berth: `berth_isolator::create` called in-process (what the isolator service does for an
//! `isolator.create` request, without the bus hop), then the start FIFO poked as the supervisor
//! does. The container runs `/bin/echo x`; "running" is the moment its first output reaches the
//! shim (the log line's timestamp, taken by the shim as it reads the pipe). runc: `runc run` of
//! the bundle whose rootfs is the same busybox tree, `/bin/echo x` as the process, its first
//! output byte read by the bench from runc's stdout pipe.

use super::Ctx;
use crate::stats::{Outcome, Series, Unit};
use anyhow::Context;
use berth_bus::config::NodeConfig;
use berth_proto::isolator::{
    ContainerSpec, CreateRequest, LogLine, RootfsMount, EXIT_FILE, LOG_FILE, START_FIFO,
};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const ARGS: [&str; 2] = ["/bin/echo", "x"];

struct Once {
    exec: Duration,
    total: Duration,
}

fn realtime_of(rfc3339: &str) -> anyhow::Result<SystemTime> {
    let t = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .with_context(|| format!("log time {rfc3339:?}"))?;
    Ok(SystemTime::from(t))
}

fn berth_once(
    iso: &berth_isolator::Isolator,
    lower: &Path,
    work: &Path,
    n: usize,
) -> anyhow::Result<Once> {
    let cfg = &iso.cfg;
    let id = format!("{:0>64}", format!("{n:x}bec0"));
    let base = work.join(&id);
    let upper = base.join("upper");
    let wdir = base.join("work");
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&wdir)?;
    let req = CreateRequest {
        spec: ContainerSpec {
            id: id.clone(),
            name: format!("bench-create-{n}"),
            image: "busybox".into(),
            args: ARGS.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into()],
            seccomp: true,
            no_new_privileges: true,
            ..Default::default()
        },
        rootfs: RootfsMount {
            lowerdirs: vec![lower.display().to_string()],
            upperdir: upper.display().to_string(),
            workdir: wdir.display().to_string(),
            volatile: false,
        },
        release: false,
    };
    let wall = SystemTime::now();

    let t0 = Instant::now();
    let reply = berth_isolator::create(iso, &req).map_err(|e| anyhow::anyhow!("create: {e}"))?;
    let run_dir = cfg.container_run_dir(&id);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(run_dir.join(START_FIFO))
            .context("open the start FIFO")?;
        f.write_all(b"1")?;
    }
    // The shim writes exit.json and then exits. Its parent is the host's init (the shim is
    // detached), which may reap it late: wait on a pidfd, which is readable from the exit on.
    wait_exit(reply.shim_pid as i32)?;
    let total = t0.elapsed();
    anyhow::ensure!(run_dir.join(EXIT_FILE).exists(), "no exit status");
    let bundle = cfg.container_dir(&id);
    let log = std::fs::read(bundle.join(LOG_FILE)).context("the container's log")?;
    let first = log
        .split(|b| *b == b'\n')
        .next()
        .context("the container wrote nothing")?;
    let line: LogLine = serde_json::from_slice(first)?;
    anyhow::ensure!(line.log.trim() == "x", "unexpected output {:?}", line.log);
    let exec = realtime_of(&line.t)?
        .duration_since(wall)
        .context("the log time is before the request")?;
    let _ = std::fs::remove_dir_all(&bundle);
    let _ = std::fs::remove_dir_all(&run_dir);
    let _ = std::fs::remove_dir_all(&base);
    Ok(Once { exec, total })
}

fn wait_exit(pid: i32) -> anyhow::Result<()> {
    use nix::libc;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        anyhow::ensure!(
            e.raw_os_error() == Some(libc::ESRCH),
            "pidfd_open {pid}: {e}"
        );
        return Ok(());
    }
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, then close it.
    let r = unsafe { libc::poll(&mut p, 1, 10_000) };
    unsafe { libc::close(fd) };
    anyhow::ensure!(r == 1, "the container did not exit within 10 s");
    Ok(())
}

fn runc_once(bundle: &Path, n: usize) -> anyhow::Result<Once> {
    let t0 = Instant::now();
    let mut child = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(format!("berth-bench-ce-{}-{n}", std::process::id()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("runc run")?;
    let mut out = child.stdout.take().context("runc stdout")?;
    let mut b = [0u8; 1];
    let got = out.read(&mut b)?;
    let exec = t0.elapsed();
    anyhow::ensure!(got == 1 && b[0] == b'x', "runc: unexpected output");
    let mut rest = Vec::new();
    out.read_to_end(&mut rest)?;
    let st = child.wait()?;
    let total = t0.elapsed();
    anyhow::ensure!(st.success(), "runc run: {st}");
    Ok(Once { exec, total })
}

/// Warm-up then timed runs of `once` (given the run's number), each giving both figures:
/// create → exec into `outs[0]`, the whole run into `outs[1]`. The first failure ends the
/// series and becomes a note.
fn measure(
    c: &Ctx,
    who: &str,
    what: &str,
    outs: [&mut Outcome; 2],
    mut once: impl FnMut(usize) -> anyhow::Result<Once>,
) {
    let mut exec = Series::new(who, what);
    let mut total = Series::new(who, what);
    for i in 0..c.warmup + c.runs {
        match once(i + 1) {
            Ok(o) if i >= c.warmup => {
                exec.push(o.exec);
                total.push(o.total);
            }
            Ok(_) => {}
            Err(e) => {
                outs[0].notes.push(format!("{who}: {e:#}"));
                break;
            }
        }
    }
    let [e, t] = outs;
    for (o, s) in [(e, exec), (t, total)] {
        if !s.samples.is_empty() {
            o.series.push(s);
        }
    }
}

pub fn run(c: &Ctx) -> anyhow::Result<Vec<Outcome>> {
    let bundle = c.fixtures.runc_bundle()?;
    let lower = bundle.join("rootfs");
    let root = tempfile::Builder::new()
        .prefix("berth-bench-create-")
        .tempdir()?;
    let cfg = NodeConfig::local("benchcreate", root.path());
    std::fs::create_dir_all(cfg.containers_dir())?;
    std::fs::create_dir_all(&cfg.run_dir)?;
    let work = root.path().join("rootfs");

    let mut exec = Outcome::new("isolator create → exec", Unit::Seconds, Some(0.005));
    let mut total = Outcome::new(
        "isolator create → start → exit of /bin/echo",
        Unit::Seconds,
        None,
    );
    let what =
        "berth_isolator::create + start FIFO, /bin/echo x (first output as the shim logs it)";
    let iso = berth_isolator::Isolator::new(cfg.clone());
    measure(c, "berth", what, [&mut exec, &mut total], |n| {
        berth_once(&iso, &lower, &work, n)
    });
    // The standby shims this process started go now, so later scenarios (memory) count only
    // the daemon's.
    iso.standby.dismiss();

    if c.peers.runc {
        let cfg_path = bundle.join("config.json");
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&cfg_path)?)?;
        v["process"]["args"] = serde_json::json!(ARGS);
        v["process"]["terminal"] = serde_json::json!(false);
        std::fs::write(&cfg_path, serde_json::to_vec_pretty(&v)?)?;
        let what = format!(
            "runc run --bundle {} ID, /bin/echo x (first byte on runc's stdout)",
            bundle.display()
        );
        measure(c, "runc", &what, [&mut exec, &mut total], |n| {
            runc_once(&bundle, n)
        });
    }
    Ok(vec![exec, total])
}

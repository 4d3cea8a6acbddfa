//! A real `berthd` (the built binary) with its own nats-server, in a temp data root, for one
//! test; and running the `berth` CLI against it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Berthd {
    pub dir: tempfile::TempDir,
    pub node: String,
    pub port: u16,
    child: Option<Child>,
    /// Further environment of the daemon (kept across restarts).
    env: Vec<(String, std::ffi::OsString)>,
    /// A descriptor of the test's that the daemon inherits, without close-on-exec, as
    /// `(the test's fd, the daemon's fd number)` (kept across restarts).
    inherit: Option<(std::os::fd::RawFd, i32)>,
}

impl Berthd {
    /// Start `berthd` with a fresh data root and run dir and a free port, and wait until every
    /// service answers `system info`.
    pub fn start() -> Berthd {
        Self::start_with_env(&[])
    }

    /// [`Berthd::start`] with further environment variables for the daemon (what the
    /// programs it runs need, e.g. a credential helper's).
    pub fn start_with_env(env: &[(&str, &Path)]) -> Berthd {
        Self::start_configured(env, None)
    }

    /// [`Berthd::start`] with `fd` (which the caller keeps open while the daemon runs) open
    /// in the daemon as descriptor `at`, not close-on-exec: as a careless parent would leave
    /// one.
    pub fn start_inheriting(fd: &impl std::os::fd::AsRawFd, at: i32) -> Berthd {
        Self::start_configured(&[], Some((fd.as_raw_fd(), at)))
    }

    fn start_configured(
        env: &[(&str, &Path)],
        inherit: Option<(std::os::fd::RawFd, i32)>,
    ) -> Berthd {
        let dir = tempfile::Builder::new()
            .prefix("berthd-test-")
            .tempdir()
            .expect("tempdir");
        let node = crate::unique("n");
        let port = crate::free_port();
        let mut d = Berthd {
            dir,
            node,
            port,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
                .collect(),
            inherit,
        };
        d.spawn();
        d
    }

    pub fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn admin_creds(&self) -> PathBuf {
        self.data_root().join("auth/admin.json")
    }
    pub fn monitor_creds(&self) -> PathBuf {
        self.data_root().join("auth/monitor.json")
    }
    /// The CLI's own identity, which `berth` uses by default (and [`Berthd::berth`] too).
    pub fn cli_creds(&self) -> PathBuf {
        self.data_root().join("auth/cli.json")
    }
    /// The log of the local nats-server (permission violations are logged there).
    pub fn nats_log(&self) -> String {
        std::fs::read_to_string(self.data_root().join("nats/nats.log")).unwrap_or_default()
    }
    pub fn node(&self) -> &str {
        &self.node
    }
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The pid of the local nats-server berthd started.
    pub fn nats_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.data_root().join("nats/nats.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("log");
        let mut cmd = Command::new(crate::bin("berthd"));
        if let Some((fd, at)) = self.inherit {
            use std::os::unix::process::CommandExt;
            // SAFETY: only dup2 and fcntl (async-signal-safe) between fork and exec; dup2
            // leaves the new descriptor without close-on-exec.
            unsafe {
                cmd.pre_exec(move || {
                    let rc = if fd == at {
                        libc::fcntl(at, libc::F_SETFD, 0)
                    } else {
                        libc::dup2(fd, at)
                    };
                    if rc < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .arg("--data-root")
            .arg(self.data_root())
            .arg("--run-dir")
            .arg(self.run_dir())
            .arg("--node")
            .arg(&self.node)
            .arg("--nats-port")
            .arg(self.port.to_string())
            .env_remove("BERTH_CONFIG")
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start berthd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = self.berth(&["system", "info"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "berthd did not come up: {}\nlog:\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// Run the CLI as its own identity (`auth/cli.json`, its default) against this daemon.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.berth_as(&self.cli_creds(), args)
    }

    /// Run the CLI as its own identity with further environment variables (a Compose
    /// file's `${VAR}`).
    pub fn berth_env(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.command(&self.cli_creds(), args)
            .envs(env.iter().copied())
            .output()
            .expect("run berth")
    }

    /// Run the CLI with another credentials file.
    pub fn berth_as(&self, creds: &Path, args: &[&str]) -> Output {
        self.command(creds, args).output().expect("run berth")
    }

    /// The CLI as its own identity with `input` on its stdin (closed after it).
    pub fn berth_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        with_input(self.command(&self.cli_creds(), args), input)
    }

    /// The CLI as a process not started yet (stdin is /dev/null unless set).
    pub fn command(&self, creds: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(crate::bin("berth"));
        c.arg("--nats")
            .arg(self.url())
            .arg("--creds")
            .arg(creds)
            .arg("--node")
            .arg(&self.node)
            .args(args)
            .env_remove("BERTH_CONFIG")
            .stdin(Stdio::null());
        c
    }

    /// SIGTERM by pid, and wait up to `within` for it to exit; returns its exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Berthd {
    /// SIGKILL berthd (and so its nats-server) by pid, as a crash would; containers live on.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(p) = self.nats_pid() {
            if !Path::new(&format!("/proc/{p}")).exists() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill every container this daemon's run directory knows (by the pids its shims
    /// recorded, checked against the container id) and wait for the shims to finish.
    pub fn kill_containers(&self) {
        let Ok(entries) = std::fs::read_dir(self.run_dir()) else {
            return;
        };
        let mut shims = Vec::new();
        for e in entries.flatten() {
            let read = |f: &str| -> Option<i32> {
                std::fs::read_to_string(e.path().join(f))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            };
            let (Some(shim), Some(init)) = (read("shim.pid"), read("init.pid")) else {
                continue;
            };
            if !berth_proto::isolator::is_shim_of(shim as u32, &e.path()) {
                continue;
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(init),
                nix::sys::signal::Signal::SIGKILL,
            );
            shims.push(shim);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for shim in shims {
            while Path::new(&format!("/proc/{shim}")).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        let nats = self.nats_pid();
        self.terminate(Duration::from_secs(10));
        self.kill_containers();
        crate::remove_networks(&self.data_root());
        // The nats child dies with berthd; make sure of it (it is ours: its pid file is in our
        // data root).
        if let Some(p) = nats {
            if Path::new(&format!("/proc/{p}")).exists() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// stdout of a CLI run as a string.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// stderr of a CLI run as a string.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run `cmd` with `input` on its stdin (closed after it) and collect its output.
pub fn with_input(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run berth");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(input)
        .expect("write berth's stdin");
    child.wait_with_output().expect("wait for berth")
}

//! The machine the bench runs on: berth's binaries and a berthd of its own, the peers that are
//! installed, and helpers to run and time commands.

use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Run a shell command; fail with its output when it fails.
pub fn sh(cmd: &str) -> anyhow::Result<String> {
    let out = Command::new("sh").arg("-c").arg(cmd).output()?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Time one run of a command (output discarded); fail if it fails. A command made of plain
/// words is started directly, as a shell would start it, so the figure is the command's own
/// and not also a shell's start (about 0.9 ms here, for every engine alike); one that needs a
/// shell (variables, substitutions, pipes, redirections, quotes, globs) runs under `sh -c`.
pub fn time_sh(cmd: &str) -> anyhow::Result<Duration> {
    let mut c = match plain_words(cmd) {
        Some(w) => {
            let mut c = Command::new(w[0]);
            c.args(&w[1..]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.arg("-c").arg(cmd);
            c
        }
    };
    let t = Instant::now();
    let st = c.stdout(Stdio::null()).stderr(Stdio::piped()).output()?;
    let d = t.elapsed();
    if !st.status.success() {
        bail!("`{cmd}` failed: {}", String::from_utf8_lossy(&st.stderr));
    }
    Ok(d)
}

/// The words of `cmd` if a shell would take it word for word: no character a shell treats
/// specially, no assignment before the command, no comment, no tilde.
fn plain_words(cmd: &str) -> Option<Vec<&str>> {
    if cmd.chars().any(|ch| "$`|;&<>\"'\\*?()[]{}!\n".contains(ch)) {
        return None;
    }
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let first = words.first()?;
    if first.contains('=')
        || words
            .iter()
            .any(|w| w.starts_with('#') || w.starts_with('~'))
    {
        return None;
    }
    Some(words)
}

pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {bin}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Write back dirty pages and drop the page cache, so cold runs are comparable.
pub fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3\n");
}

/// Resident memory (VmRSS) of a process in MiB.
pub fn rss_mib(pid: i32) -> Option<f64> {
    proc_mib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size (shared pages divided among the processes sharing them).
pub fn pss_mib(pid: i32) -> Option<f64> {
    proc_mib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The kB figure of the line starting with `key` in a /proc file, in MiB.
fn proc_mib(path: &str, key: &str) -> Option<f64> {
    let s = std::fs::read_to_string(path).ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Pids whose executable's file name is `name` (for measuring peers' daemons' memory).
pub fn pids_of_exe(name: &str) -> Vec<i32> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            if let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) {
                if exe.file_name().map(|f| f == name).unwrap_or(false) {
                    v.push(pid);
                }
            }
        }
    }
    v
}

/// A berthd of the bench's own (temp data root, free port), stopped by pid when dropped.
pub struct Berth {
    pub bin_dir: PathBuf,
    pub dir: tempfile::TempDir,
    pub node: String,
    pub port: u16,
    child: Option<Child>,
}

impl Berth {
    pub fn start(bin_dir: &Path) -> anyhow::Result<Berth> {
        let dir = tempfile::Builder::new().prefix("berth-bench-").tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let node = format!("bench{}", std::process::id());
        let log = std::fs::File::create(dir.path().join("berthd.log"))?;
        let child = Command::new(bin_dir.join("berthd"))
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--run-dir")
            .arg(dir.path().join("run"))
            .args(["--node", &node, "--nats-port", &port.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting berthd")?;
        let b = Berth {
            bin_dir: bin_dir.to_path_buf(),
            dir,
            node,
            port,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while b.cli("system info").is_err() {
            if Instant::now() > deadline {
                bail!(
                    "berthd did not come up; see {}",
                    b.dir.path().join("berthd.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(b)
    }

    /// The CLI invocation prefix for this daemon.
    pub fn berth(&self) -> String {
        format!(
            "{} --nats nats://127.0.0.1:{} --creds {} --node {}",
            self.bin_dir.join("berth").display(),
            self.port,
            self.dir.path().join("data/auth/admin.json").display(),
            self.node
        )
    }

    pub fn cli(&self, args: &str) -> anyhow::Result<String> {
        sh(&format!("{} {args}", self.berth()))
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    pub fn nats_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join("data/nats/nats.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Berth {
    fn drop(&mut self) {
        // Containers, then networks: nothing of the run is left in the host's tables.
        if let Ok(ids) = self.cli("ps -aq") {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.cli(&format!("rm -f {}", ids.join(" ")));
            }
        }
        if let Ok(nets) = self.cli("network ls -q") {
            for n in nets.split_whitespace() {
                let _ = self.cli(&format!("network rm {n}"));
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plain_words;

    #[test]
    fn only_commands_a_shell_takes_word_for_word_skip_it() {
        assert_eq!(
            plain_words("/b/berth --nats nats://127.0.0.1:4222 run --rm img:latest /bin/true"),
            Some(vec![
                "/b/berth",
                "--nats",
                "nats://127.0.0.1:4222",
                "run",
                "--rm",
                "img:latest",
                "/bin/true"
            ])
        );
        assert!(plain_words("podman run --ulimit nofile=1024:1024 x /bin/true").is_some());
        for shelly in [
            "runc run --bundle /b berth-bench-$$",
            "a | b",
            "a > /dev/null",
            "a 'quoted word'",
            "X=1 a",
            "a ~/x",
            "a *.tar",
            "a; b",
            "a # comment",
            "",
        ] {
            assert!(plain_words(shelly).is_none(), "{shelly}");
        }
    }
}

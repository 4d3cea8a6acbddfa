//! The peers installed on this machine: Docker (dockerd is started by the bench when it is not
//! running, and stopped after), Podman (with runc: crun refuses this host's cgroup layout; and
//! rlimits within the hard limit), runc, skopeo, docker-compose. Missing ones are skipped with
//! a note, never faked.

use crate::env::{have, sh};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const PODMAN: &str = "podman --runtime runc";
pub const PODMAN_RUN_FLAGS: &str =
    "--network none --ulimit nofile=1024:1024 --ulimit nproc=1024:1024";

pub struct Peers {
    pub docker: bool,
    pub podman: bool,
    pub runc: bool,
    pub skopeo: bool,
    pub compose: bool,
    pub notes: Vec<String>,
    dockerd: Option<Child>,
}

impl Peers {
    pub fn detect() -> Peers {
        let mut notes = Vec::new();
        let mut dockerd = None;
        let mut docker = have("docker");
        if docker && sh("docker info >/dev/null 2>&1").is_err() {
            if have("dockerd") {
                let log = std::fs::File::create("/tmp/berth-bench-dockerd.log").ok();
                // Docker's default bridge on a subnet of its own (so its bridge network can be
                // compared), no iptables rules; the bridge is deleted when dockerd stops.
                let child = Command::new("dockerd")
                    .args(["--iptables=false", "--ip6tables=false", "--bip", DOCKER_BIP])
                    .stdout(Stdio::null())
                    .stderr(log.map(Stdio::from).unwrap_or(Stdio::null()))
                    .spawn();
                match child {
                    Ok(c) => {
                        dockerd = Some(c);
                        let mut up = false;
                        for _ in 0..100 {
                            if sh("docker info >/dev/null 2>&1").is_ok() {
                                up = true;
                                break;
                            }
                            std::thread::sleep(Duration::from_millis(200));
                        }
                        if !up {
                            notes.push("docker: dockerd did not come up; skipped".into());
                            docker = false;
                        }
                    }
                    Err(e) => {
                        notes.push(format!("docker: cannot start dockerd ({e}); skipped"));
                        docker = false;
                    }
                }
            } else {
                notes.push("docker: no daemon and no dockerd; skipped".into());
                docker = false;
            }
        } else if !docker {
            notes.push("docker: not installed (apt-get install docker.io); skipped".into());
        }
        let podman = have("podman") && have("runc");
        if !podman {
            notes.push("podman: not installed (apt-get install podman runc); skipped".into());
        }
        let runc = have("runc");
        if !runc {
            notes.push("runc: not installed; skipped".into());
        }
        let skopeo = have("skopeo");
        let compose = docker && have("docker-compose");
        if docker && !compose {
            notes.push("docker-compose: not installed; skipped".into());
        }
        Peers {
            docker,
            podman,
            runc,
            skopeo,
            compose,
            notes,
            dockerd,
        }
    }
}

/// The address of the `docker0` bridge of a dockerd the bench starts.
const DOCKER_BIP: &str = "10.199.0.1/24";

impl Drop for Peers {
    fn drop(&mut self) {
        if let Some(mut c) = self.dockerd.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let mut gone = false;
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    gone = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !gone {
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = sh("ip link del docker0 2>/dev/null");
        }
    }
}

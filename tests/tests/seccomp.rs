//! Seccomp through the real daemon and kernel. A static probe (`tests/probe/syscall_probe.c`,
//! built here with `cc -static`) tries system calls with harmless arguments inside a
//! container and prints `LABEL ok` or `LABEL errno N` for each; the tests compare its lines
//! under berth's default profile, `seccomp=unconfined`, Docker's default profile file (moby's
//! `profiles/seccomp/default.json` from Debian's `golang-github-docker-docker-dev`, given with
//! `--security-opt seccomp=FILE`) and small user profiles. As root.

use berth_tests::daemon::{stderr, stdout, Berthd};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Docker's default profile as Debian ships it (`.ci/deps` installs the package).
const DOCKER_PROFILE: &str =
    "/usr/share/gocode/src/github.com/docker/docker/profiles/seccomp/default.json";

/// Docker's (and berth's) default capabilities.
const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Where berth's default profile answers otherwise than the Docker 20.10 profile Debian
/// ships, each with the reason. berth follows Docker's current profile, which has changed
/// since 20.10 in these places.
const DIFFERENCES_FROM_DOCKER_20_10: &[(&str, &str)] = &[
    ("socket_alg", "Docker's current profile refuses AF_ALG sockets; 20.10's allowed every family"),
    ("socket_vsock", "Docker's current profile refuses AF_VSOCK sockets; 20.10's allowed every family"),
    ("cachestat", "Linux 6.5; allowed by Docker's current profile, unknown to 20.10's"),
    ("fchmodat2", "Linux 6.6; allowed by Docker's current profile, unknown to 20.10's"),
    ("futex_wake", "Linux 6.7; allowed by Docker's current profile, unknown to 20.10's"),
    ("statmount", "Linux 6.8; allowed by Docker's current profile, unknown to 20.10's"),
    ("listmount", "Linux 6.8; allowed by Docker's current profile, unknown to 20.10's"),
    ("mseal", "Linux 6.10; allowed by Docker's current profile, unknown to 20.10's"),
    ("getxattrat", "Linux 6.13; allowed by Docker's current profile, unknown to 20.10's"),
    ("io_uring_setup", "Docker's current profile refuses io_uring (its operations bypass seccomp); 20.10's allowed it"),
    ("lsm_list_modules", "Linux 6.8: Docker's current profile allows it with CAP_SYS_ADMIN only (else EPERM); 20.10's names no call that new (ENOSYS)"),
    ("name_to_handle_at", "allowed by Docker's current profile (opening by handle still needs CAP_DAC_READ_SEARCH); 20.10's refused it"),
    ("pkey_free", "memory protection keys: allowed by Docker's current profile; 20.10's refused them"),
    ("process_vm_readv", "Docker's current profile allows it from Linux 4.8 as it allows ptrace; 20.10's wanted CAP_SYS_PTRACE"),
];

struct Probe {
    d: Berthd,
    dir: tempfile::TempDir,
    root: String,
}

impl Probe {
    /// A daemon and a busybox root filesystem with the probe built into it (`None` when not
    /// root).
    fn start() -> Option<Probe> {
        if !berth_tests::is_root() {
            eprintln!("skipped: needs root");
            return None;
        }
        let d = Berthd::start();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        berth_tests::images::container_rootfs(&root);
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe/syscall_probe.c");
        let out = std::process::Command::new("cc")
            .args(["-static", "-O1", "-o"])
            .arg(root.join("probe"))
            .arg(&src)
            .output()
            .expect("run cc (build-essential)");
        assert!(
            out.status.success(),
            "cc -static {}: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Probe {
            d,
            root: root.display().to_string(),
            dir,
        })
    }

    /// Run the probe with `opts` before the image: label → `ok` / `errno N`.
    fn run(&self, opts: &[&str]) -> BTreeMap<String, String> {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(opts);
        args.extend(["--rootfs", &self.root, "/probe"]);
        let o = self.d.berth(&args);
        assert!(
            o.status.success(),
            "berth {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        let got: BTreeMap<String, String> = stdout(&o)
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert!(got.len() > 100, "probe output: {}", stdout(&o));
        got
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn kernel() -> (u32, u32) {
    let r = nix::sys::utsname::uname().unwrap();
    let r = r.release().to_string_lossy().to_string();
    let mut n = r.split(['.', '-']).map(|x| x.parse::<u32>().unwrap_or(0));
    (n.next().unwrap(), n.next().unwrap())
}

/// What Docker's profile `p` answers for a call named `name` in a container holding `caps`
/// on x86-64: `Some(None)` allowed, `Some(Some(errno))` refused, `None` when an entry for
/// it filters arguments (the argument tests cover those).
fn docker_answer(p: &Value, name: &str, caps: &[&str]) -> Option<Option<i64>> {
    let strs = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let default_errno = p["defaultErrnoRet"].as_i64().unwrap_or(1);
    let mut answer = None;
    for e in p["syscalls"].as_array().unwrap() {
        if !strs(&e["names"]).iter().any(|n| n == name) {
            continue;
        }
        let (inc, exc) = (&e["includes"], &e["excludes"]);
        let applies = strs(&inc["caps"])
            .iter()
            .all(|c| caps.contains(&c.as_str()))
            && !strs(&exc["caps"])
                .iter()
                .any(|c| caps.contains(&c.as_str()))
            && (strs(&inc["arches"]).is_empty()
                || strs(&inc["arches"]).iter().any(|a| a == "amd64"))
            && !strs(&exc["arches"]).iter().any(|a| a == "amd64")
            && inc["minKernel"].as_str().is_none_or(|k| {
                let mut n = k.split('.').map(|x| x.parse::<u32>().unwrap());
                kernel() >= (n.next().unwrap(), n.next().unwrap_or(0))
            });
        if !applies {
            continue;
        }
        if e["args"].as_array().is_some_and(|a| !a.is_empty()) {
            return None;
        }
        if answer.is_none() {
            answer = Some(match e["action"].as_str().unwrap() {
                "SCMP_ACT_ALLOW" => None,
                "SCMP_ACT_ERRNO" => Some(e["errnoRet"].as_i64().unwrap_or(default_errno)),
                other => panic!("{name}: action {other} in Docker's profile"),
            });
        }
    }
    Some(answer.unwrap_or(Some(default_errno)))
}

/// The probe's labels that are plain syscall names (the others try one call with
/// different arguments: `socket_vsock`, `personality_query`, ...).
fn is_call(label: &str) -> bool {
    !["socket_", "personality_", "clone_"]
        .iter()
        .any(|p| label.starts_with(p))
}

fn docker_profile() -> Value {
    let text = std::fs::read_to_string(DOCKER_PROFILE).unwrap_or_else(|e| {
        panic!("{DOCKER_PROFILE}: {e} (install golang-github-docker-docker-dev)")
    });
    serde_json::from_str(&text).unwrap()
}

#[test]
fn dockers_profile_file_answers_as_docker_evaluates_it() {
    let Some(p) = Probe::start() else { return };
    let profile = docker_profile();
    let kernel_says = p.run(&["--security-opt", "seccomp=unconfined"]);
    let opt = format!("seccomp={DOCKER_PROFILE}");
    let got = p.run(&["--security-opt", &opt]);
    let mut checked = 0;
    for (label, outcome) in &got {
        if !is_call(label) {
            continue;
        }
        let Some(answer) = docker_answer(&profile, label, DEFAULT_CAPS) else {
            continue;
        };
        checked += 1;
        match answer {
            None => assert_eq!(
                outcome, &kernel_says[label],
                "{label}: allowed by Docker's profile"
            ),
            // Refused by the profile: its errno, or ENOSYS for calls newer than any it names.
            Some(errno) => assert!(
                outcome == &format!("errno {errno}") || outcome == "errno 38",
                "{label}: Docker's profile refuses it (errno {errno}); berth: {outcome}"
            ),
        }
    }
    assert!(checked > 80, "{checked} calls checked");
}

#[test]
fn default_profile_answers_as_dockers_except_where_documented() {
    let Some(p) = Probe::start() else { return };
    let default = p.run(&[]);
    let opt = format!("seccomp={DOCKER_PROFILE}");
    let docker = p.run(&["--security-opt", &opt]);
    let kernel_says = p.run(&["--security-opt", "seccomp=unconfined"]);
    let mut differ = vec![];
    for (label, outcome) in &default {
        if docker.get(label) != Some(outcome) {
            differ.push(format!(
                "{label}: berth {outcome}, Docker {:?}, kernel {:?}",
                docker.get(label),
                kernel_says.get(label)
            ));
        }
    }
    let documented: Vec<&str> = DIFFERENCES_FROM_DOCKER_20_10.iter().map(|d| d.0).collect();
    let unexplained: Vec<&String> = differ
        .iter()
        .filter(|d| !documented.contains(&d.split(':').next().unwrap()))
        .collect();
    assert!(unexplained.is_empty(), "{unexplained:#?}");
    // And the list stays honest: each documented difference is seen.
    for d in documented {
        assert!(
            differ.iter().any(|x| x.split(':').next() == Some(d)),
            "{d} is listed as a difference but answers the same: {differ:#?}"
        );
    }
    // The filter is on: calls Docker refuses fail that the kernel would have let through.
    for label in [
        "unshare",
        "socket_vsock",
        "personality_read_implies_exec",
        "keyctl",
    ] {
        assert_eq!(default[label], "errno 1", "{label}");
        assert_ne!(kernel_says[label], "errno 1", "{label} unconfined");
    }
    assert_eq!(default["clone3"], "errno 38");
}

#[test]
fn personality_read_implies_exec_is_refused() {
    let Some(p) = Probe::start() else { return };
    let got = p.run(&[]);
    assert_eq!(got["personality_read_implies_exec"], "errno 1");
    assert_eq!(got["personality_addr_no_randomize"], "errno 1");
    assert_eq!(got["personality_query"], "ok");
    assert_eq!(got["personality_linux"], "ok");
    let unconfined = p.run(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(unconfined["personality_read_implies_exec"], "ok");
}

#[test]
fn vsock_and_alg_sockets_and_namespace_clones_are_refused() {
    let Some(p) = Probe::start() else { return };
    let got = p.run(&[]);
    assert_eq!(got["socket_vsock"], "errno 1");
    assert_eq!(got["socket_alg"], "errno 1");
    assert_eq!(got["socket_unix"], "ok");
    assert_eq!(got["socket_inet"], "ok");
    assert_eq!(got["socket_netlink"], "ok");
    // The kernel refuses both clones with EINVAL; the filter stops the namespace one first.
    assert_eq!(got["clone_newuser"], "errno 1");
    assert_eq!(got["clone_plain"], "errno 22");
    let unconfined = p.run(&["--security-opt", "seccomp=unconfined"]);
    assert_ne!(unconfined["socket_vsock"], "errno 1");
    assert_eq!(unconfined["clone_newuser"], "errno 22");
}

#[test]
fn capabilities_open_their_groups_and_unconfined_opens_the_rest() {
    let Some(p) = Probe::start() else { return };
    let plain = p.run(&[]);
    assert_eq!(plain["unshare"], "errno 1");
    assert_eq!(plain["keyctl"], "errno 1");
    assert_eq!(plain["pidfd_getfd"], "errno 1");
    let admin = p.run(&["--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE"]);
    assert_eq!(admin["unshare"], "ok");
    assert_eq!(admin["clone_newuser"], "errno 22");
    assert_eq!(
        admin["mount"], "errno 14",
        "mount reaches the kernel (EFAULT)"
    );
    assert_eq!(
        admin["pidfd_getfd"], "errno 9",
        "pidfd_getfd reaches the kernel (EBADF)"
    );
    assert_eq!(
        admin["keyctl"], "errno 1",
        "keyctl is refused whatever the capabilities"
    );
    let unconfined = p.run(&[
        "--cap-add",
        "SYS_ADMIN",
        "--security-opt",
        "seccomp=unconfined",
    ]);
    assert_eq!(unconfined["unshare"], "ok");
    assert_eq!(
        unconfined["keyctl"], "errno 95",
        "keyctl reaches the kernel (EOPNOTSUPP)"
    );
}

#[test]
fn a_user_profile_applies_its_own_actions() {
    let Some(p) = Probe::start() else { return };
    let profile = p.file(
        "deny.json",
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [
              {"names": ["getpid", "no_such_call"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
              {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
               "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"}]},
              {"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
               "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]}"#,
    );
    let opt = format!("seccomp={}", profile.display());
    let got = p.run(&["--security-opt", &opt]);
    let kernel_says = p.run(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(got["getpid"], "errno 13");
    assert_eq!(got["socket_inet"], "errno 1");
    assert_eq!(got["keyctl"], "errno 5");
    for (label, outcome) in &got {
        if !["getpid", "socket_inet", "keyctl"].contains(&label.as_str()) {
            assert_eq!(outcome, &kernel_says[label], "{label}: not in the profile");
        }
    }
    let admin = p.run(&["--cap-add", "SYS_ADMIN", "--security-opt", &opt]);
    assert_eq!(admin["keyctl"], "errno 95");
}

#[test]
fn a_bad_profile_is_refused_with_one_line_naming_file_field_and_entry() {
    let Some(p) = Probe::start() else { return };
    let profile = p.file(
        "bad.json",
        r#"{"defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
              {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
              {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
               "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_FOO"}]}]}"#,
    );
    let opt = format!("seccomp={}", profile.display());
    let o = p.d.berth(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "--rootfs",
        &p.root,
        "/probe",
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{}: syscalls[1].args[0].op: unknown operator \"SCMP_CMP_FOO\"",
            profile.display()
        )),
        "{err}"
    );
    let missing = p.dir.path().join("missing.json");
    let opt = format!("seccomp={}", missing.display());
    let o = p.d.berth(&[
        "run",
        "--rm",
        "--security-opt",
        &opt,
        "--rootfs",
        &p.root,
        "/probe",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing.json"), "{}", stderr(&o));
}

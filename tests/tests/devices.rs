//! The device policy on the real kernel (as root): a container may open only the default
//! devices and the ones given with `--device`; a block device node found in its image or made
//! with `mknod` inside does not open; the default nodes are usable by any user; and the
//! cgroup v2 device program allows and refuses as its rules say.
//!
//! Through the real daemon and CLI (`cargo build --workspace --bins` first), except the v2
//! program, which is attached to a temporary cgroup of the unified hierarchy. Everything made
//! is removed at the end, pass or fail (the daemon's guard kills its containers).

use berth_tests::daemon::{stderr, stdout, Berthd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A daemon and a busybox root filesystem to run with `--rootfs`.
fn setup() -> Option<(Berthd, tempfile::TempDir)> {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return None;
    }
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    berth_tests::rootfs::make_busybox_rootfs(&dir.path().join("rootfs"));
    Some((d, dir))
}

fn rootfs(dir: &tempfile::TempDir) -> String {
    dir.path().join("rootfs").display().to_string()
}

/// `berth run --rm --rootfs <dir> [extra...] sh -c script`.
fn run_sh(d: &Berthd, dir: &tempfile::TempDir, extra: &[&str], script: &str) -> Output {
    let root = rootfs(dir);
    let mut args = vec!["run", "--rm", "--rootfs", &root];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["sh", "-c", script]);
    d.berth(&args)
}

/// A real block device of the host that the host itself can open (so that a refusal in the
/// container is the container's policy), as (major, minor, its node in /dev): the root disk
/// when the host lets root open it, else a loop device.
fn host_block_device() -> (u32, u32, PathBuf) {
    let dev = std::fs::metadata("/").unwrap().dev();
    let (maj, min) = (
        nix::sys::stat::major(dev) as u32,
        nix::sys::stat::minor(dev) as u32,
    );
    let root_disk = std::fs::read_to_string(format!("/sys/dev/block/{maj}:{min}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| (maj, min, Path::new("/dev").join(n)))
        });
    root_disk
        .into_iter()
        .chain(loop_device().map(|(p, maj, min)| (maj, min, p)))
        .find(|(_, _, p)| std::fs::File::open(p).is_ok())
        .expect("a block device the host can open (the root disk or /dev/loopN)")
}

/// A loop device node of the host (a block device harmless to open).
fn loop_device() -> Option<(PathBuf, u32, u32)> {
    (0..8).find_map(|i| {
        let p = PathBuf::from(format!("/dev/loop{i}"));
        let m = std::fs::metadata(&p).ok()?;
        m.file_type().is_block_device().then(|| {
            let r = m.rdev();
            (
                p,
                nix::sys::stat::major(r) as u32,
                nix::sys::stat::minor(r) as u32,
            )
        })
    })
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}{}", stdout(o), stderr(o));
    stdout(o)
}

#[test]
fn default_nodes_are_0666_and_usable_by_a_non_root_user() {
    let Some((d, dir)) = setup() else { return };
    let out = ok(&run_sh(
        &d,
        &dir,
        &["--user", "1000"],
        "id -u; for n in null zero full random urandom tty; do stat -c '%a %F %n' /dev/$n; done; \
         echo x > /dev/null && echo wrote-null; head -c 5 /dev/zero | wc -c; \
         head -c 3 /dev/urandom | wc -c",
    ));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    for n in ["null", "zero", "full", "random", "urandom", "tty"] {
        assert!(
            lines.contains(&format!("666 character special file /dev/{n}").as_str()),
            "/dev/{n} is not 0666: {out}"
        );
    }
    assert!(lines.contains(&"wrote-null"), "{out}");
    assert_eq!(&lines[lines.len() - 2..], ["5", "3"], "{out}");
}

#[test]
fn mknod_of_a_host_block_device_inside_then_read_fails() {
    let Some((d, dir)) = setup() else { return };
    let (maj, min, host_node) = host_block_device();
    // The same read works outside a container: what refuses it below is the policy.
    let outside = Command::new("dd")
        .arg(format!("if={}", host_node.display()))
        .args(["of=/dev/null", "bs=512", "count=1"])
        .output()
        .unwrap();
    assert!(outside.status.success(), "{}", stderr(&outside));

    let root = rootfs(&dir);
    ok(&d.berth(&[
        "run", "-d", "--name", "box", "--rootfs", &root, "sleep", "600",
    ]));
    // mknod is allowed (an image may carry nodes); opening the node is not.
    let script = format!(
        "mknod /tmp/disk b {maj} {min} && echo made; dd if=/tmp/disk of=/dev/null bs=512 count=1"
    );
    let o = d.berth(&["exec", "box", "sh", "-c", &script]);
    assert!(!o.status.success(), "the disk was read: {}", stderr(&o));
    assert_eq!(stdout(&o), "made\n");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    // Even with the capabilities of raw device access: the rule is the cgroup's. (Not
    // `--cap-add ALL`: a host whose own bounding set lacks one cannot give it.)
    let o = run_sh(
        &d,
        &dir,
        &[
            "--cap-add",
            "SYS_ADMIN",
            "--cap-add",
            "SYS_RAWIO",
            "--cap-add",
            "DAC_READ_SEARCH",
        ],
        &format!("mknod /tmp/disk b {maj} {min} && echo made; exec dd if=/tmp/disk of=/dev/null bs=512 count=1"),
    );
    assert!(!o.status.success(), "the disk was read: {}", stderr(&o));
    assert_eq!(stdout(&o), "made\n", "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
    ok(&d.berth(&["rm", "-f", "box"]));
}

#[test]
fn a_block_device_node_in_an_image_layer_does_not_open() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Berthd::start();
    let (maj, min, _) = host_block_device();
    let layout = berth_tests::images::Layout::new();
    let work = tempfile::tempdir().unwrap();
    let base = work.path().join("base");
    berth_tests::images::busybox_rootfs(&base);
    for sub in ["tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(base.join(sub)).unwrap();
    }
    // A layer holding a node of a host block device, world-readable.
    let extra = work.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    nix::sys::stat::mknod(
        &extra.join("disk"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(maj.into(), min.into()),
    )
    .unwrap();
    layout.build("dev", berth_tests::layers::host_arch(), &[&base, &extra]);
    let archive = work.path().join("img.tar");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:dev", layout.path().display()))
        .arg(format!(
            "docker-archive:{}:berth/devtest:v1",
            archive.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy");
    ok(&d.berth(&["load", "-i", archive.to_str().unwrap()]));

    let o = d.berth(&[
        "run",
        "--rm",
        "berth/devtest:v1",
        "sh",
        "-c",
        "stat -c '%F %t:%T' /disk; exec dd if=/disk of=/dev/null bs=512 count=1",
    ]);
    // The node is there, as the image has it, and does not open.
    assert_eq!(
        stdout(&o),
        format!("block special file {maj:x}:{min:x}\n"),
        "{}",
        stderr(&o)
    );
    assert!(!o.status.success(), "the disk was read: {}", stderr(&o));
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_device_given_with_device_is_there_with_its_permissions_only() {
    let Some((d, dir)) = setup() else { return };
    let Some((host, maj, min)) = loop_device() else {
        eprintln!("skipped: no /dev/loopN on this host");
        return;
    };
    let host_mode = std::fs::metadata(&host).unwrap().mode() & 0o777;
    let root = rootfs(&dir);
    let spec = format!("{}:/dev/disk:r", host.display());
    ok(&d.berth(&[
        "run", "-d", "--name", "box", "--device", &spec, "--rootfs", &root, "sleep", "600",
    ]));
    let o = d.berth(&[
        "exec",
        "box",
        "sh",
        "-c",
        "stat -c '%a %F %t:%T' /dev/disk; dd if=/dev/disk of=/dev/null count=0 && echo read-ok; \
         dd if=/dev/zero of=/dev/disk count=0 conv=notrunc && echo write-ok",
    ]);
    assert_eq!(
        stdout(&o),
        format!("{host_mode:o} block special file {maj:x}:{min:x}\nread-ok\n"),
        "{}",
        stderr(&o)
    );
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "writing was allowed: {}",
        stderr(&o)
    );

    // The bundle's config.json carries the same policy for runc.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&d.berth(&["inspect", "box"]))).unwrap();
    let id = inspect[0]["state"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {inspect}"))
        .to_string();
    assert_eq!(
        inspect[0]["spec"]["devices"][0]["container_path"], "/dev/disk",
        "{inspect}"
    );
    let cfg: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            d.data_root()
                .join("containers")
                .join(&id)
                .join("config.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["linux"]["devices"][0]["path"], "/dev/disk", "{cfg}");
    assert_eq!(cfg["linux"]["devices"][0]["type"], "b", "{cfg}");
    let rules = cfg["linux"]["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules[0]["allow"], false);
    assert!(
        rules.iter().any(|r| r["type"] == "b"
            && r["major"] == maj
            && r["minor"] == min
            && r["access"] == "r"),
        "{cfg}"
    );
    ok(&d.berth(&["rm", "-f", "box"]));

    // Without --device the same node does not open.
    let o = run_sh(
        &d,
        &dir,
        &[],
        &format!("mknod /tmp/disk b {maj} {min}; exec dd if=/tmp/disk of=/dev/null count=0"),
    );
    assert!(!o.status.success(), "read without --device");
    assert!(
        stderr(&o).contains("Operation not permitted"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_device_flag_that_names_no_device_is_refused_naming_the_field() {
    let Some((d, dir)) = setup() else { return };
    let o = run_sh(&d, &dir, &["--device", "/etc/hostname:/dev/x"], "true");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("devices[0].host_path") && e.contains("not a character or block device"),
        "{e}"
    );
    let o = run_sh(&d, &dir, &["--device", "/dev/null:/dev/x:rx"], "true");
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("--device") && e.contains("rwm"), "{e}");
}

/// The cgroup2 mount point (the unified hierarchy, also mounted on a hybrid host).
fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// A temporary cgroup v2 directory, removed at the end (once its processes are gone).
struct TempCgroup(PathBuf);

impl Drop for TempCgroup {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.0.exists() && std::fs::remove_dir(&self.0).is_err() {
            if Instant::now() > deadline {
                eprintln!("could not remove {}", self.0.display());
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Run `script` with busybox's sh, moved into cgroup `cg` before it execs (or left where
/// the test is, with `None`).
fn sh_in(cg: Option<&Path>, script: &str) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(berth_tests::images::BUSYBOX);
    c.args(["sh", "-c", script]);
    if let Some(cg) = cg {
        let procs =
            std::ffi::CString::new(cg.join("cgroup.procs").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: the closure runs in the forked child before exec and only calls open(2),
        // write(2) and close(2) on memory prepared before the fork.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // "0": the writing process itself.
                let r = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if r != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    c.output().expect("run busybox sh")
}

#[test]
fn the_v2_device_program_allows_the_defaults_and_refuses_the_rest() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Some(unified) = cgroup2_mount() else {
        eprintln!("skipped: no cgroup2 hierarchy mounted");
        return;
    };
    let (maj, min, disk) = host_block_device();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        "cat /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c; \
         mknod {d}/disk b {maj} {min} && echo mknod-ok; \
         dd if={disk} of=/dev/null bs=512 count=1 2>&1 | grep -o 'Operation not permitted'; \
         dd if={d}/disk of=/dev/null bs=512 count=1 2>&1 | grep -o 'Operation not permitted'; \
         head -c 1 /dev/kmsg 2>&1 | grep -o 'Operation not permitted'; true",
        d = dir.path().display(),
        disk = disk.display(),
    );
    // Outside the cgroup nothing is refused: the script can tell.
    let o = sh_in(None, &script);
    assert_eq!(stdout(&o), "null-ok\n4\nmknod-ok\n", "{}", stderr(&o));
    std::fs::remove_file(dir.path().join("disk")).unwrap();

    let cg = TempCgroup(unified.join(berth_tests::unique("berth-devtest")));
    std::fs::create_dir(&cg.0).unwrap();
    berth_cgroups::devices::attach_program(&cg.0, &berth_policy::devices::default_rules()).unwrap();
    let o = sh_in(Some(&cg.0), &script);
    assert_eq!(
        stdout(&o),
        "null-ok\n4\nmknod-ok\nOperation not permitted\nOperation not permitted\nOperation not permitted\n",
        "{}",
        stderr(&o)
    );
}

//! A busybox root file system for container tests: `/bin/busybox` from Debian's
//! `busybox-static` with a symlink for every applet, `/etc/passwd` and `/etc/group` with a
//! user `alice` (1000:1000, also in groups `wheel` (10) and `staff` (50)), and the usual empty
//! directories. Use it as an overlay lower dir; [`Rootfs::container`] makes a fresh upper and
//! work dir pair.

use berth_proto::isolator::RootfsMount;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
    nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n\
    alice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
pub const GROUP: &str =
    "root:x:0:\nwheel:x:10:root,alice\nstaff:x:50:alice\nalice:x:1000:\nnogroup:x:65534:\n";

/// A busybox rootfs in a temporary directory, removed on drop.
pub struct Rootfs {
    pub dir: tempfile::TempDir,
}

impl Rootfs {
    pub fn new() -> Rootfs {
        let dir = tempfile::Builder::new()
            .prefix("berth-rootfs-")
            .tempdir()
            .expect("tempdir");
        make_busybox_rootfs(&dir.path().join("lower"));
        Rootfs { dir }
    }

    /// The lower dir (the image's one layer).
    pub fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }

    /// A fresh upper/work pair named `name` and the overlay description using them.
    pub fn container(&self, name: &str) -> RootfsMount {
        let base = self.dir.path().join("containers").join(name);
        let upper = base.join("upper");
        let work = base.join("work");
        std::fs::create_dir_all(&upper).expect("upper");
        std::fs::create_dir_all(&work).expect("work");
        RootfsMount {
            lowerdirs: vec![self.lower().display().to_string()],
            upperdir: upper.display().to_string(),
            workdir: work.display().to_string(),
            volatile: false,
        }
    }
}

impl Default for Rootfs {
    fn default() -> Self {
        Self::new()
    }
}

/// Fill `dest` with busybox, every applet, `/etc/passwd`, `/etc/group` and empty dirs.
pub fn make_busybox_rootfs(dest: &Path) {
    let bin = dest.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    std::fs::copy(crate::images::BUSYBOX, bin.join("busybox"))
        .expect("copy /bin/busybox (package busybox-static)");
    let out = Command::new(crate::images::BUSYBOX)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("applet symlink");
    }
    for d in [
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/alice",
        "var",
        "mnt",
    ] {
        std::fs::create_dir_all(dest.join(d)).expect("rootfs dir");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dest.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod tmp");
    std::os::unix::fs::chown(dest.join("home/alice"), Some(1000), Some(1000)).expect("chown");
    std::fs::write(dest.join("etc/passwd"), PASSWD).expect("passwd");
    std::fs::write(dest.join("etc/group"), GROUP).expect("group");
}

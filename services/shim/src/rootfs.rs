//! The container's file system, built inside its own mount namespace: the overlay, `/proc`,
//! `/dev` (its default nodes and the devices given to the container: `devices.rs`), `/sys`,
//! the per-container `/etc` files, the spec's mounts, Docker's masked and read-only paths,
//! then `pivot_root`.

use crate::error::{ShimError, Step};
use crate::fsutil::{ensure_in, fd_path, is_dir, open_in, Kind};
use berth_policy::rootfs::{volume_dir, MASKED, READ_ONLY};
use berth_proto::isolator::{
    ContainerSpec, MountKind, MountSpec, RootfsMount, HOSTNAME_FILE, HOSTS_FILE, RESOLV_FILE,
};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;
use nix::unistd::{chdir, fchdir, pivot_root, symlinkat};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

pub struct Paths<'a> {
    pub bundle: &'a Path,
    pub volumes: &'a Path,
}

/// The container's own devices (`--device`), resolved on the host.
pub type Devices<'a> = &'a [berth_proto::isolator::Device];

fn nodev() -> MsFlags {
    MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC
}

fn mnt(
    source: Option<&str>,
    target: &OwnedFd,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
    what: &str,
) -> Result<(), ShimError> {
    mount(source, fd_path(target).as_str(), fstype, flags, data).step(|| format!("mount {what}"))
}

/// Remount the mount now at `path` (inside `root`) read-only, keeping `extra` flags.
fn remount_ro(root: &OwnedFd, path: &str, extra: MsFlags) -> Result<(), ShimError> {
    // Re-resolve: an fd opened before the mount points below it, not at the mount's root.
    let fd = open_in(root, path).step(|| format!("resolve {path} for read-only remount"))?;
    mount(
        None::<&str>,
        fd_path(&fd).as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra,
        None::<&str>,
    )
    .step(|| format!("remount {path} read-only"))
}

/// Make every mount private, mount the overlay at `<bundle>/rootfs` and return its fd.
pub fn mount_overlay(rootfs: &RootfsMount, target: &Path) -> Result<OwnedFd, ShimError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .step(|| "make the mount namespace private".into())?;
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.lowerdirs.join(":"),
        rootfs.upperdir,
        rootfs.workdir
    );
    let overlay = |data: &str| {
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(data),
        )
    };
    let r = if rootfs.volatile {
        // Kernels before 5.10 have no `volatile` (EINVAL): the writes are synced after all.
        overlay(&format!("{data},volatile")).or_else(|e| match e {
            Errno::EINVAL => overlay(&data),
            e => Err(e),
        })
    } else {
        overlay(&data)
    };
    r.step(|| format!("mount the overlay on {}", target.display()))?;
    nix::fcntl::open(
        target,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .step(|| format!("open {}", target.display()))
}

/// Everything below the root, before `pivot_root`.
pub fn populate(
    root: &OwnedFd,
    spec: &ContainerSpec,
    paths: &Paths,
    devices: Devices,
) -> Result<(), ShimError> {
    // /proc
    let proc_ = ensure_in(root, "/proc", Kind::Dir)?;
    mnt(Some("proc"), &proc_, Some("proc"), nodev(), None, "/proc")?;

    // /dev: a tmpfs with the standard nodes only.
    let dev = ensure_in(root, "/dev", Kind::Dir)?;
    mnt(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
        "/dev",
    )?;
    let dev = open_in(root, "/dev").step(|| "resolve /dev".into())?;
    crate::devices::make_default_nodes(&dev)?;
    for (target, name) in [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
        ("/proc/kcore", "core"),
    ] {
        symlinkat(target, dev.as_fd(), name).step(|| format!("symlink /dev/{name}"))?;
    }
    let pts = ensure_in(root, "/dev/pts", Kind::Dir)?;
    mnt(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        "/dev/pts",
    )?;
    let shm = ensure_in(root, "/dev/shm", Kind::Dir)?;
    mnt(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        nodev(),
        Some("mode=1777,size=65536k"),
        "/dev/shm",
    )?;
    let mq = ensure_in(root, "/dev/mqueue", Kind::Dir)?;
    mnt(
        Some("mqueue"),
        &mq,
        Some("mqueue"),
        nodev(),
        None,
        "/dev/mqueue",
    )?;

    // /sys, read-only.
    let sys = ensure_in(root, "/sys", Kind::Dir)?;
    mnt(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        nodev() | MsFlags::MS_RDONLY,
        None,
        "/sys",
    )?;

    // The spec's mounts, parents before children.
    let mut mounts: Vec<&MountSpec> = spec.mounts.iter().collect();
    mounts.sort_by_key(|m| m.target.split('/').filter(|c| !c.is_empty()).count());
    for m in mounts {
        user_mount(root, m, paths)?;
    }
    // The devices it was given, once every mount they may go into is there.
    crate::devices::make_nodes(root, devices)?;

    // Per-container /etc files.
    for (file, target) in [
        (HOSTNAME_FILE, "/etc/hostname"),
        (HOSTS_FILE, "/etc/hosts"),
        (RESOLV_FILE, "/etc/resolv.conf"),
    ] {
        let src = paths.bundle.join(file);
        let t = ensure_in(root, target, Kind::File)?;
        mount(
            Some(&src),
            fd_path(&t).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .step(|| format!("bind {target}"))?;
    }

    // Masked and read-only paths, last so no mount above undoes them.
    let null = open_in(root, "/dev/null").step(|| "resolve /dev/null".into())?;
    for p in MASKED {
        let fd = match open_in(root, p) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e).step(|| format!("resolve {p}")),
        };
        if is_dir(&fd).step(|| format!("stat {p}"))? {
            mnt(
                Some("tmpfs"),
                &fd,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
                &format!("mask {p}"),
            )?;
        } else {
            mount(
                Some(fd_path(&null).as_str()),
                fd_path(&fd).as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .step(|| format!("mask {p}"))?;
        }
    }
    for p in READ_ONLY {
        let fd = match open_in(root, p) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e).step(|| format!("resolve {p}")),
        };
        mount(
            Some(fd_path(&fd).as_str()),
            fd_path(&fd).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .step(|| format!("bind {p} for read-only"))?;
        remount_ro(root, p, nodev())?;
    }
    Ok(())
}

fn user_mount(root: &OwnedFd, m: &MountSpec, paths: &Paths) -> Result<(), ShimError> {
    let what = format!("{} on {}", kind_name(m.kind), m.target);
    match m.kind {
        MountKind::Tmpfs => {
            let t = ensure_in(root, &m.target, Kind::Dir)?;
            let mut data = "mode=1777".to_string();
            if let Some(n) = m.size_bytes {
                data.push_str(&format!(",size={n}"));
            }
            let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
            if m.read_only {
                flags |= MsFlags::MS_RDONLY;
            }
            mnt(Some("tmpfs"), &t, Some("tmpfs"), flags, Some(&data), &what)
        }
        MountKind::Bind | MountKind::Volume => {
            let src = match m.kind {
                MountKind::Volume => volume_dir(paths.volumes, &m.source),
                _ => PathBuf::from(&m.source),
            };
            let meta =
                std::fs::metadata(&src).step(|| format!("{what}: source {}", src.display()))?;
            let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
            let t = ensure_in(root, &m.target, kind)?;
            mount(
                Some(&src),
                fd_path(&t).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .step(|| format!("mount {what}"))?;
            if m.read_only {
                remount_ro(root, &m.target, MsFlags::empty())?;
            }
            Ok(())
        }
    }
}

fn kind_name(k: MountKind) -> &'static str {
    match k {
        MountKind::Bind => "bind mount",
        MountKind::Volume => "volume",
        MountKind::Tmpfs => "tmpfs",
    }
}

/// Make `root` the process's root; the old root is detached. Read-only root when asked.
pub fn pivot(root: &OwnedFd, read_only: bool) -> Result<(), ShimError> {
    fchdir(root.as_fd()).step(|| "chdir into the rootfs".into())?;
    pivot_root(".", ".").step(|| "pivot_root".into())?;
    umount2(".", MntFlags::MNT_DETACH).step(|| "detach the old root".into())?;
    chdir("/").step(|| "chdir /".into())?;
    if read_only {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .step(|| "remount / read-only".into())?;
    }
    Ok(())
}

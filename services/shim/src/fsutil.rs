//! Path resolution that cannot leave a root: every mount target, working directory and file
//! the shim creates inside a container is resolved with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)` relative to the container's root, so a symlink in the image (even
//! `/proc` or `/dev` itself being one) or a `/proc/self/fd/N` magic link cannot send it to the
//! host.

use crate::error::{ShimError, Step};
use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{mkdirat, Mode};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Open `path` (absolute, as seen inside the container) below `root` as an `O_PATH` fd.
pub fn open_in(root: &impl AsFd, path: &str) -> Result<OwnedFd, Errno> {
    open_path(root.as_fd(), rel(path))
}

/// `openat2` as `O_PATH`, again while it answers `EAGAIN`: with `RESOLVE_IN_ROOT` the kernel
/// gives up a lookup that crossed `..` while any mount or rename happened on the host (other
/// containers starting), and asks for a retry.
fn open_path(dir: std::os::fd::BorrowedFd, path: &str) -> Result<OwnedFd, Errno> {
    let mut tries = 0;
    loop {
        match openat2(dir, path, how(OFlag::O_PATH)) {
            Err(Errno::EAGAIN) if tries < 100 => tries += 1,
            r => return r,
        }
    }
}

fn rel(path: &str) -> &str {
    let p = path.trim_start_matches('/');
    if p.is_empty() {
        "."
    } else {
        p
    }
}

/// How many symlinks `ensure_in` follows while creating, as the kernel's own limit.
const MAX_LINKS: u32 = 40;

/// Resolve `path` below `root`, creating it (and missing parents) as `kind` when missing.
/// A dangling symlink on the way is followed inside `root` (its target is created there), as
/// the kernel would resolve it from inside the container.
pub fn ensure_in(root: &impl AsFd, path: &str, kind: Kind) -> Result<OwnedFd, ShimError> {
    ensure(root, path, kind, 0)
}

fn ensure(root: &impl AsFd, path: &str, kind: Kind, links: u32) -> Result<OwnedFd, ShimError> {
    match open_in(root, path) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(Errno::ELOOP) | Err(Errno::EXDEV) => {
            return Err(ShimError::invalid(
                format!("resolve {path}"),
                "it resolves through a magic link (/proc/self/fd or the like) or a symlink loop, refused",
            ))
        }
        Err(e) => return Err(e).step(|| format!("resolve {path}")),
    }
    if links > MAX_LINKS {
        return Err(ShimError::invalid(
            format!("resolve {path}"),
            "too many levels of symbolic links",
        ));
    }
    let p = path.trim_end_matches('/');
    let (parent, name) = match p.rsplit_once('/') {
        Some((a, b)) => (if a.is_empty() { "/" } else { a }, b),
        None => ("/", p),
    };
    if name.is_empty() {
        return Err(ShimError::invalid(
            format!("resolve {path}"),
            "not a path to create",
        ));
    }
    let pfd = ensure(root, parent, Kind::Dir, links)?;
    if name == "." || name == ".." {
        return open_in(root, path).step(|| format!("resolve {path}"));
    }
    if let Ok(target) = nix::fcntl::readlinkat(pfd.as_fd(), name) {
        let target = target.to_string_lossy().into_owned();
        let next = if target.starts_with('/') {
            target
        } else {
            format!("{parent}/{target}")
        };
        return ensure(root, &next, kind, links + 1);
    }
    // The parent is an O_PATH fd; *at calls accept it as a directory.
    let r = match kind {
        Kind::Dir => mkdirat(pfd.as_fd(), name, Mode::from_bits_truncate(0o755)),
        Kind::File => nix::fcntl::openat(
            pfd.as_fd(),
            name,
            OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::from_bits_truncate(0o644),
        )
        .map(drop),
    };
    match r {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => return Err(e).step(|| format!("create {path}")),
    }
    open_path(pfd.as_fd(), name).step(|| format!("resolve {path}"))
}

/// The `/proc/self/fd/N` path of `fd`, for syscalls that take paths (mount).
pub fn fd_path(fd: &impl AsRawFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

/// Whether `fd` (O_PATH) is a directory.
pub fn is_dir(fd: &impl AsFd) -> Result<bool, Errno> {
    let st = nix::sys::stat::fstat(fd.as_fd())?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

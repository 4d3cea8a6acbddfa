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

/// How many components `ensure_in` creates at most for one path.
const MAX_CREATES: u32 = 4096;

/// The error for a path that goes through a magic link (or loops).
fn magic(path: &str) -> ShimError {
    ShimError::invalid(
        format!("resolve {path}"),
        "it resolves through a magic link (/proc/self/fd, /proc/self/root or the like) or a \
         symlink loop, refused",
    )
}

/// `/` followed by `comps` joined with `/`.
fn joined(comps: &[&str]) -> String {
    let mut s = String::from("/");
    s.push_str(&comps.join("/"));
    s
}

/// Resolve `path` below `root`, creating it (and missing parents) as `kind` when missing.
///
/// Every lookup is an `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from `root`; a
/// missing component is created with `*at` calls relative to its parent's fd (resolved the same
/// way), then the whole path is resolved again. A dangling symlink on the way is followed
/// inside `root` (its target is created there), as the kernel would resolve it from inside
/// the container: its text is read from an `O_PATH|O_NOFOLLOW` fd of the link itself, and a
/// link on procfs (a magic link such as `/proc/self/fd/N`) is refused, never read.
pub fn ensure_in(root: &impl AsFd, path: &str, kind: Kind) -> Result<OwnedFd, ShimError> {
    let mut cur = path.to_string();
    let (mut links, mut creates) = (0u32, 0u32);
    loop {
        match open_in(root, &cur) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENOENT) => {}
            Err(Errno::ELOOP) | Err(Errno::EXDEV) => return Err(magic(path)),
            Err(e) => return Err(e).step(|| format!("resolve {path}")),
        }
        let comps: Vec<&str> = cur.split('/').filter(|c| !c.is_empty()).collect();
        // The first missing component: every prefix before it resolves.
        let mut parent = open_in(root, "/").step(|| "open the root".to_string())?;
        let mut missing = None;
        for (i, name) in comps.iter().enumerate() {
            match open_in(root, &joined(&comps[..=i])) {
                Ok(fd) => parent = fd,
                Err(Errno::ENOENT) => {
                    missing = Some((i, *name));
                    break;
                }
                Err(Errno::ELOOP) | Err(Errno::EXDEV) => return Err(magic(path)),
                Err(e) => return Err(e).step(|| format!("resolve {path}")),
            }
        }
        // Nothing missing now: something else created it meanwhile; resolve again.
        let Some((i, name)) = missing else { continue };
        if name == "." || name == ".." {
            return Err(ShimError::invalid(
                format!("resolve {path}"),
                format!("{} went away while it was resolved", joined(&comps[..i])),
            ));
        }
        let rest = &comps[i + 1..];
        if let Some(target) = link_text(&parent, name, path)? {
            links += 1;
            if links > MAX_LINKS {
                return Err(ShimError::invalid(
                    format!("resolve {path}"),
                    "too many levels of symbolic links",
                ));
            }
            let mut next = if target.starts_with('/') {
                target
            } else {
                format!("{}/{target}", joined(&comps[..i]))
            };
            for c in rest {
                next.push('/');
                next.push_str(c);
            }
            cur = next;
            continue;
        }
        creates += 1;
        if creates > MAX_CREATES {
            return Err(ShimError::invalid(
                format!("resolve {path}"),
                "it keeps disappearing while it is created",
            ));
        }
        let what = joined(&comps[..=i]);
        // The parent is an O_PATH fd; *at calls accept it as a directory.
        let r = match (rest.is_empty(), kind) {
            (true, Kind::File) => nix::fcntl::openat(
                parent.as_fd(),
                name,
                OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                Mode::from_bits_truncate(0o644),
            )
            .map(drop),
            _ => mkdirat(parent.as_fd(), name, Mode::from_bits_truncate(0o755)),
        };
        match r {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => return Err(e).step(|| format!("create {what}")),
        }
    }
}

/// The text of `name` in `dir` when it is a symlink; `None` when there is nothing there. A
/// symlink on procfs is refused: there it is a magic link, whose text names something outside
/// the container's view (the kernel follows such a link by the object, not by the text).
fn link_text(dir: &OwnedFd, name: &str, path: &str) -> Result<Option<String>, ShimError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(dir.as_fd(), name, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e).step(|| format!("resolve {path}")),
    };
    let st = nix::sys::stat::fstat(fd.as_fd()).step(|| format!("stat a link of {path}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        return Ok(None);
    }
    let fs = nix::sys::statfs::fstatfs(fd.as_fd()).step(|| format!("statfs a link of {path}"))?;
    if fs.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(magic(path));
    }
    // readlinkat with an empty name reads the link the O_PATH fd stands for.
    let text = nix::fcntl::readlinkat(fd.as_fd(), "").step(|| format!("read a link of {path}"))?;
    Ok(Some(text.to_string_lossy().into_owned()))
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

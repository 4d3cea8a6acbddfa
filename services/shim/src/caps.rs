//! Capabilities: applying a container's set (`berth_policy::caps`: Docker's default set with
//! `cap_add`/`cap_drop`) to the current process (bounding set first, then the rest after the
//! uid change).

use crate::error::{ShimError, Step};
use caps::{CapSet, CapsHashSet};

/// Drop from the bounding set every capability not in `set`. Needs CAP_SETPCAP: call before
/// the uid change.
pub fn limit_bounding(set: &CapsHashSet) -> Result<(), ShimError> {
    for c in caps::runtime::thread_all_supported() {
        if !set.contains(&c) {
            caps::drop(None, CapSet::Bounding, c).map_err(|e| ShimError::Sys {
                step: format!("drop {c} from the bounding set"),
                source: std::io::Error::other(e.to_string()),
            })?;
        }
    }
    Ok(())
}

/// Keep the permitted set across the uid change that follows.
pub fn keep_across_setuid(on: bool) -> Result<(), ShimError> {
    nix::sys::prctl::set_keepcaps(on).step(|| "prctl(PR_SET_KEEPCAPS)".into())
}

/// Set the effective and permitted sets to `set`; empty the inheritable and ambient sets.
///
/// The inheritable set stays empty (CVE-2022-24769): a non-root process executing a file
/// with inheritable file capabilities would otherwise gain them (`P'(permitted) = P(inheritable)
/// & F(inheritable) | ...`), beyond what its user was given. Root still gets the bounding set
/// at `execve` (its file capabilities count as full), as in Docker.
pub fn apply(set: &CapsHashSet) -> Result<(), ShimError> {
    let supported = caps::runtime::thread_all_supported();
    let set: CapsHashSet = set.intersection(&supported).copied().collect();
    // Inheritable first (emptying it needs nothing), then effective (it must stay within
    // permitted), then permitted.
    let none = CapsHashSet::new();
    for (cs, s) in [
        (CapSet::Inheritable, &none),
        (CapSet::Effective, &set),
        (CapSet::Permitted, &set),
    ] {
        caps::set(None, cs, s).map_err(|e| ShimError::Sys {
            step: format!("set {cs:?} capabilities"),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    // Ambient capabilities must be within inheritable, so the kernel has dropped them with
    // it; clear them explicitly all the same (kernels before 4.3 have no ambient set).
    if caps::runtime::ambient_set_supported().is_ok() {
        caps::clear(None, CapSet::Ambient).map_err(|e| ShimError::Sys {
            step: "clear the ambient capabilities".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(())
}

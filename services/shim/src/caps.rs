//! Capabilities: Docker's default set, `cap_add`/`cap_drop` (with `ALL`), and applying a set
//! to the current process (bounding set first, then the rest after the uid change).

use crate::error::{ShimError, Step};
use caps::{CapSet, Capability, CapsHashSet};
use std::str::FromStr;

/// Docker's default capabilities: `CapEff` of a root process reads `00000000a80425fb`.
pub const DEFAULT: [Capability; 14] = [
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Parse a capability name as Docker accepts it: any case, with or without `CAP_`.
pub fn parse(name: &str) -> Result<Capability, String> {
    let up = name.trim().to_ascii_uppercase();
    let full = if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    };
    Capability::from_str(&full).map_err(|_| format!("unknown capability {name:?}"))
}

fn is_all(name: &str) -> bool {
    name.trim().eq_ignore_ascii_case("ALL")
}

/// The capability set of a container: Docker's default, with `add` and `drop` applied.
/// `drop: [ALL]` starts from nothing; `add: [ALL]` starts from every capability.
pub fn resolve(add: &[String], drop: &[String]) -> Result<CapsHashSet, String> {
    let mut set: CapsHashSet = if drop.iter().any(|d| is_all(d)) {
        CapsHashSet::new()
    } else if add.iter().any(|a| is_all(a)) {
        caps::all()
    } else {
        DEFAULT.iter().copied().collect()
    };
    let drops: Vec<Capability> = drop
        .iter()
        .filter(|d| !is_all(d))
        .map(|d| parse(d).map_err(|e| format!("cap_drop: {e}")))
        .collect::<Result<_, _>>()?;
    let adds: Vec<Capability> = add
        .iter()
        .filter(|a| !is_all(a))
        .map(|a| parse(a).map_err(|e| format!("cap_add: {e}")))
        .collect::<Result<_, _>>()?;
    for d in &drops {
        set.remove(d);
    }
    set.extend(adds);
    Ok(set)
}

/// The bitmask of a set, as `/proc/<pid>/status` prints `CapEff`.
pub fn mask(set: &CapsHashSet) -> u64 {
    set.iter().fold(0u64, |m, c| m | c.bitmask())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_default_mask() {
        let s = resolve(&[], &[]).unwrap();
        assert_eq!(mask(&s), 0xa80425fb);
    }

    #[test]
    fn add_drop_and_all() {
        let s = resolve(&["sys_admin".into()], &["CAP_NET_RAW".into()]).unwrap();
        assert!(s.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!s.contains(&Capability::CAP_NET_RAW));
        let none = resolve(&[], &["ALL".into()]).unwrap();
        assert!(none.is_empty());
        let only = resolve(&["chown".into()], &["all".into()]).unwrap();
        assert_eq!(mask(&only), 1);
        let all = resolve(&["ALL".into()], &["kill".into()]).unwrap();
        assert!(all.contains(&Capability::CAP_SYS_ADMIN));
        assert!(!all.contains(&Capability::CAP_KILL));
        let e = resolve(&["CAP_FLY".into()], &[]).unwrap_err();
        assert!(e.contains("cap_add") && e.contains("CAP_FLY"), "{e}");
    }
}

//! Capabilities: Docker's default set and `cap_add`/`cap_drop` (with `ALL`) applied to it.
//! The shim applies the set to the container's process (`berth-shim`'s `caps.rs`).

use caps::{Capability, CapsHashSet};
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

//! The container's user: `uid`, `uid:gid`, `name`, `name:group` (or mixes), looked up in the
//! container's own `/etc/passwd` and `/etc/group`, with supplementary groups.
//!
//! Every id must fit in 0..=4294967294: 4294967295 is `(uid_t)-1`, which `setresuid`,
//! `setresgid` and `chown` take as "leave unchanged", so a container asking for it would keep
//! running as root (containerd's CVE-2024-40635). A number out of that range, a negative one,
//! and an id field of `/etc/passwd` or `/etc/group` that is not a number are refused, naming
//! the field and the value.

use berth_proto::validate::numeric_id as numeric;
pub use berth_proto::validate::{parse_id, MAX_ID};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (without `gid`).
    pub groups: Vec<u32>,
    pub home: String,
}

/// Check a user spec (`uid`, `uid:gid`, `name:gid`, ...) without the container's files: what
/// the isolator refuses before anything is made ([`berth_proto::validate::user`]).
pub fn check_spec(spec: &str) -> Result<(), String> {
    berth_proto::validate::user(spec)
}

struct Passwd<'a> {
    name: &'a str,
    uid: &'a str,
    gid: &'a str,
    home: &'a str,
}

impl Passwd<'_> {
    fn uid(&self) -> Result<u32, String> {
        parse_id(&format!("/etc/passwd: user {:?}: uid", self.name), self.uid)
    }
    fn gid(&self) -> Result<u32, String> {
        parse_id(&format!("/etc/passwd: user {:?}: gid", self.name), self.gid)
    }
}

struct Group<'a> {
    name: &'a str,
    gid: &'a str,
    members: Vec<&'a str>,
}

impl Group<'_> {
    fn gid(&self) -> Result<u32, String> {
        parse_id(&format!("/etc/group: group {:?}: gid", self.name), self.gid)
    }
}

fn passwd_entries(text: &str) -> Vec<Passwd<'_>> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(Passwd {
                name: f[0],
                uid: f[2],
                gid: f[3],
                home: f[5],
            })
        })
        .collect()
}

fn group_entries(text: &str) -> Vec<Group<'_>> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(Group {
                name: f[0],
                gid: f[2],
                members: f[3].split(',').filter(|m| !m.is_empty()).collect(),
            })
        })
        .collect()
}

/// Resolve `spec` (`None` = root) against the texts of `/etc/passwd` and `/etc/group` (empty
/// when the image has none).
pub fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<User, String> {
    let spec = spec.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("0");
    check_spec(spec)?;
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let pw = passwd_entries(passwd);
    let gr = group_entries(group);
    let (uid, entry) = if numeric(u) {
        let uid = parse_id("uid", u)?;
        // An entry whose uid field is no valid id cannot be this uid.
        (uid, pw.iter().find(|p| p.uid() == Ok(uid)))
    } else {
        let p = pw
            .iter()
            .find(|p| p.name == u)
            .ok_or_else(|| format!("user {u:?} is not in the container's /etc/passwd"))?;
        (p.uid()?, Some(p))
    };
    let gid = match g {
        Some(g) if numeric(g) => parse_id("gid", g)?,
        Some(g) => gr
            .iter()
            .find(|e| e.name == g)
            .ok_or_else(|| format!("group {g:?} is not in the container's /etc/group"))?
            .gid()?,
        None => entry.map(|p| p.gid()).transpose()?.unwrap_or(0),
    };
    // Supplementary groups: those listing the user's name, only when no group was given (as
    // Docker does).
    let mut groups = Vec::new();
    if g.is_none() {
        if let Some(p) = entry {
            for e in gr.iter().filter(|e| e.members.contains(&p.name)) {
                let id = e.gid()?;
                if id != gid && !groups.contains(&id) {
                    groups.push(id);
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        home: entry
            .map(|p| p.home.to_string())
            .unwrap_or_else(|| "/".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
    const GR: &str = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,root\nstaff:x:50:alice\n";

    #[test]
    fn forms() {
        let r = resolve(None, PW, GR).unwrap();
        assert_eq!((r.uid, r.gid, r.groups.clone()), (0, 0, vec![10]));
        let a = resolve(Some("alice"), PW, GR).unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups, a.home.as_str()),
            (1000, 1000, vec![10, 50], "/home/alice")
        );
        let n = resolve(Some("1000:1000"), "", "").unwrap();
        assert_eq!((n.uid, n.gid), (1000, 1000));
        let ng = resolve(Some("alice:staff"), PW, GR).unwrap();
        assert_eq!((ng.uid, ng.gid, ng.groups.len()), (1000, 50, 0));
        let u = resolve(Some("4242"), PW, GR).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let top = resolve(Some("4294967294:4294967294"), "", "").unwrap();
        assert_eq!((top.uid, top.gid), (MAX_ID, MAX_ID));
        assert!(resolve(Some("bob"), PW, GR).unwrap_err().contains("bob"));
        assert!(resolve(Some("alice:nogroup"), PW, GR)
            .unwrap_err()
            .contains("nogroup"));
    }

    #[test]
    fn ids_that_mean_unchanged_or_do_not_fit_are_refused() {
        for (spec, want) in [
            ("4294967295", "uid 4294967295 is out of range"),
            ("0:4294967295", "gid 4294967295 is out of range"),
            (
                "99999999999999999999",
                "uid 99999999999999999999 is out of range",
            ),
            ("-1", "uid \"-1\" is negative"),
            ("alice:-1", "gid \"-1\" is negative"),
            ("+5", "uid \"+5\" is not a number"),
        ] {
            let e = resolve(Some(spec), PW, GR).unwrap_err();
            assert!(e.contains(want), "{spec}: {e}");
            assert_eq!(check_spec(spec).unwrap_err(), e, "{spec}");
        }
        assert!(check_spec("alice:staff").is_ok());
        assert!(check_spec("1000:1000").is_ok());
    }

    #[test]
    fn names_that_map_to_bad_ids_are_refused() {
        let pw = "evil:x:4294967295:0::/:/bin/sh\n\
                  badgid:x:1001:4294967295::/:/bin/sh\n\
                  word:x:abc:0::/:/bin/sh\n\
                  bob:x:1002:1002::/:/bin/sh\n";
        let gr = "evilgrp:x:4294967295:\nlisted:x:-1:bob\n";
        let e = resolve(Some("evil"), pw, gr).unwrap_err();
        assert!(
            e.contains("/etc/passwd: user \"evil\": uid 4294967295 is out of range"),
            "{e}"
        );
        let e = resolve(Some("badgid"), pw, gr).unwrap_err();
        assert!(e.contains("user \"badgid\": gid 4294967295"), "{e}");
        let e = resolve(Some("word"), pw, gr).unwrap_err();
        assert!(e.contains("uid \"abc\" is not a number"), "{e}");
        let e = resolve(Some("0:evilgrp"), pw, gr).unwrap_err();
        assert!(
            e.contains("/etc/group: group \"evilgrp\": gid 4294967295"),
            "{e}"
        );
        // A group listing the user, as a supplementary group.
        let e = resolve(Some("bob"), pw, gr).unwrap_err();
        assert!(
            e.contains("group \"listed\": gid \"-1\" is negative"),
            "{e}"
        );
        // By number, a broken entry is no match (and so no home, no groups).
        let u = resolve(Some("1002:7"), pw, gr).unwrap();
        assert_eq!((u.uid, u.gid), (1002, 7));
    }
}

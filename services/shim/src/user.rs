//! The container's user: `uid`, `uid:gid`, `name`, `name:group` (or mixes), looked up in the
//! container's own `/etc/passwd` and `/etc/group`, with supplementary groups.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (without `gid`).
    pub groups: Vec<u32>,
    pub home: String,
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn passwd_entries(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(Passwd {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

fn group_entries(text: &str) -> Vec<Group> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(Group {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            })
        })
        .collect()
}

/// Resolve `spec` (`None` = root) against the texts of `/etc/passwd` and `/etc/group` (empty
/// when the image has none).
pub fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<User, String> {
    let spec = spec.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("0");
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let pw = passwd_entries(passwd);
    let gr = group_entries(group);
    let entry = match u.parse::<u32>() {
        Ok(uid) => pw.iter().find(|p| p.uid == uid),
        Err(_) => Some(
            pw.iter()
                .find(|p| p.name == u)
                .ok_or_else(|| format!("user {u:?} is not in the container's /etc/passwd"))?,
        ),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry.map(|p| p.uid).unwrap_or(0),
    };
    let gid = match g {
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => {
                gr.iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| format!("group {g:?} is not in the container's /etc/group"))?
                    .gid
            }
        },
        None => entry.map(|p| p.gid).unwrap_or(0),
    };
    // Supplementary groups: those listing the user's name, only when no group was given (as
    // Docker does).
    let mut groups = Vec::new();
    if g.is_none() {
        if let Some(p) = entry {
            for e in &gr {
                if e.members.contains(&p.name) && e.gid != gid && !groups.contains(&e.gid) {
                    groups.push(e.gid);
                }
            }
        }
    }
    Ok(User {
        uid,
        gid,
        groups,
        home: entry.map(|p| p.home.clone()).unwrap_or_else(|| "/".into()),
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
        assert!(resolve(Some("bob"), PW, GR).unwrap_err().contains("bob"));
        assert!(resolve(Some("alice:nogroup"), PW, GR)
            .unwrap_err()
            .contains("nogroup"));
    }
}

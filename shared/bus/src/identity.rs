//! berth's identities on the bus, one per role: who each is, the file it lives in under
//! `<data_root>/auth/`, and the prefix of its reply subjects. What each may publish and
//! subscribe to is the local nats-server's configuration, written by berthd
//! (`services/daemon/src/local_nats.rs`); docs/security.md has the table.
//!
//! Identity files are secrets: [`check_private`] refuses one (or its directory) that anyone
//! but its owner may read or write, as ssh refuses a loose key.

use crate::BusError;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// A role on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The operator's: everything. Used by no tool by default.
    Admin,
    /// berthd's services but the reconciler (puller, layer-store, isolator, supervisor) and
    /// berthd's own set-up of the stream and buckets.
    Services,
    /// The reconciler: the only writer of desired state.
    Reconciler,
    /// The `berth` CLI: service verbs, reading state and events.
    Cli,
    /// Read-only: events and state.
    Monitor,
}

impl Identity {
    pub const ALL: [Identity; 5] = [
        Identity::Admin,
        Identity::Services,
        Identity::Reconciler,
        Identity::Cli,
        Identity::Monitor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::Services => "services",
            Identity::Reconciler => "reconciler",
            Identity::Cli => "cli",
            Identity::Monitor => "monitor",
        }
    }

    /// The NATS user name.
    pub fn user(self) -> String {
        format!("berth-{}", self.name())
    }

    /// The file name under `<data_root>/auth/`.
    pub fn file_name(self) -> String {
        format!("{}.json", self.name())
    }

    /// The prefix of this identity's reply subjects: `_INBOX_<name>`, which only it may
    /// subscribe to, so no other identity reads its replies. The admin keeps the library's
    /// `_INBOX`.
    pub fn inbox_prefix(self) -> Option<String> {
        match self {
            Identity::Admin => None,
            other => Some(format!("_INBOX_{}", other.name())),
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Refuse an identity file, or the directory holding identity files, that anyone but its
/// owner may read or write (any group or other permission bit), or that belongs to another
/// user (root's is accepted). The error names the path and the command that fixes it.
pub fn check_private(path: &Path) -> Result<(), BusError> {
    let md = std::fs::metadata(path).map_err(|e| BusError::Credentials {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let (what, wanted) = if md.is_dir() {
        ("identity directory", "700")
    } else {
        ("credentials file", "600")
    };
    let mode = md.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(BusError::Loose {
            what,
            path: path.display().to_string(),
            problem: format!("is open to others (mode {mode:03o})"),
            fix: format!("chmod {wanted} {}", path.display()),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if md.uid() != me && md.uid() != 0 {
        return Err(BusError::Loose {
            what,
            path: path.display().to_string(),
            problem: format!("belongs to uid {}, not to this user (uid {me})", md.uid()),
            fix: format!("chown {me} {}", path.display()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn loose_files_and_directories_are_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("cli.json");
        std::fs::write(&f, "{}").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_private(&f);
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                let s = e.to_string();
                assert!(s.contains(&format!("chmod 600 {}", f.display())), "{s}");
                assert!(s.contains(&format!("{mode:03o}")), "{s}");
            }
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let e = check_private(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("chmod 700 {}", dir.path().display())),
            "{e}"
        );
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        check_private(dir.path()).unwrap();
    }

    #[test]
    fn every_identity_but_the_admin_has_its_own_inbox() {
        let mut seen = std::collections::HashSet::new();
        for id in Identity::ALL {
            assert!(seen.insert(id.inbox_prefix()), "{id} shares an inbox");
            assert_eq!(id.file_name(), format!("{id}.json"));
        }
        assert_eq!(Identity::Admin.inbox_prefix(), None);
        assert_eq!(Identity::Cli.inbox_prefix().as_deref(), Some("_INBOX_cli"));
    }
}

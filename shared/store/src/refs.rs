//! The reference -> manifest digest map: `<root>/refs.json`, replaced by atomic rename while
//! holding an exclusive `flock` on `<root>/refs.lock`, so concurrent writers never lose an
//! update and readers always see a whole file.

use crate::{ContentStore, Digest, StoreError};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::PathBuf;

const REFS_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
struct RefsFile {
    v: u32,
    refs: BTreeMap<String, Digest>,
}

impl ContentStore {
    fn refs_path(&self) -> PathBuf {
        self.root().join("refs.json")
    }

    fn refs_lock(&self) -> Result<Flock<File>, StoreError> {
        let p = self.root().join("refs.lock");
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(StoreError::io("open", &p))?;
        Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, errno)| StoreError::io("lock", &p)(io::Error::from(errno)))
    }

    fn load_refs(&self) -> Result<BTreeMap<String, Digest>, StoreError> {
        let p = self.refs_path();
        let text = match fs::read(&p) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(StoreError::io("read", p)(e)),
        };
        let f: RefsFile = serde_json::from_slice(&text).map_err(|e| StoreError::Refs {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if f.v != REFS_VERSION {
            return Err(StoreError::Refs {
                path: p,
                reason: format!(
                    "version {} is not understood (expected {REFS_VERSION})",
                    f.v
                ),
            });
        }
        Ok(f.refs)
    }

    fn save_refs(&self, refs: BTreeMap<String, Digest>) -> Result<(), StoreError> {
        let p = self.refs_path();
        let body = serde_json::to_vec_pretty(&RefsFile {
            v: REFS_VERSION,
            refs,
        })
        .expect("refs serialize");
        berth_files::atomic_write(&p, &body, berth_files::Durability::PowerLoss)
            .map_err(StoreError::io("replace", &p))
    }

    fn update_refs<T>(
        &self,
        f: impl FnOnce(&mut BTreeMap<String, Digest>) -> T,
    ) -> Result<T, StoreError> {
        let _lock = self.refs_lock()?;
        let mut refs = self.load_refs()?;
        let before = refs.clone();
        let out = f(&mut refs);
        if refs != before {
            self.save_refs(refs)?;
        }
        Ok(out)
    }

    /// Record that `reference` (normalized, e.g. `docker.io/library/busybox:latest`) names the
    /// manifest `d`.
    pub fn set_ref(&self, reference: &str, d: &Digest) -> Result<(), StoreError> {
        check_ref(reference)?;
        self.update_refs(|m| {
            m.insert(reference.to_string(), d.clone());
        })
    }

    pub fn get_ref(&self, reference: &str) -> Result<Option<Digest>, StoreError> {
        Ok(self.load_refs()?.get(reference).cloned())
    }

    /// Forget a reference; `false` when it was not recorded.
    pub fn remove_ref(&self, reference: &str) -> Result<bool, StoreError> {
        self.update_refs(|m| m.remove(reference).is_some())
    }

    /// Every recorded reference.
    pub fn refs(&self) -> Result<BTreeMap<String, Digest>, StoreError> {
        self.load_refs()
    }
}

fn check_ref(reference: &str) -> Result<(), StoreError> {
    let bad = |reason: &str| StoreError::InvalidReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if reference.is_empty() {
        return Err(bad("empty"));
    }
    if reference.len() > 4096 {
        return Err(bad("longer than 4096 bytes"));
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("contains whitespace or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_remove_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        assert_eq!(s.get_ref("docker.io/library/busybox:latest").unwrap(), None);
        s.set_ref("docker.io/library/busybox:latest", &a).unwrap();
        s.set_ref("localhost:5000/x:t", &b).unwrap();
        s.set_ref("docker.io/library/busybox:latest", &b).unwrap();
        assert_eq!(
            s.get_ref("docker.io/library/busybox:latest").unwrap(),
            Some(b.clone())
        );
        let all = s.refs().unwrap();
        assert_eq!(all.len(), 2);
        assert!(s.remove_ref("localhost:5000/x:t").unwrap());
        assert!(!s.remove_ref("localhost:5000/x:t").unwrap());
        // Reopening sees the same map.
        let s2 = ContentStore::open(dir.path()).unwrap();
        assert_eq!(s2.refs().unwrap().len(), 1);
        assert!(s.set_ref("", &a).is_err());
        assert!(s.set_ref("a b", &a).is_err());
    }

    #[test]
    fn concurrent_writers_lose_no_update() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for j in 0..10 {
                        s.set_ref(&format!("r{i}-{j}"), &Digest::of(&[i, j]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.refs().unwrap().len(), 80);
    }

    #[test]
    fn corrupt_map_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let s = ContentStore::open(dir.path()).unwrap();
        fs::write(dir.path().join("refs.json"), b"{not json").unwrap();
        let e = s.refs().unwrap_err().to_string();
        assert!(e.contains("refs.json"), "{e}");
    }
}

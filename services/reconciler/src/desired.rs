//! Desired state in the `berth_desired` bucket: one key per project, one revision per apply,
//! written by compare-and-set.

use async_nats::jetstream::kv::{self, Operation};
use berth_proto::reconciler::{BaseRevision, DesiredRecord, RevisionInfo, StaleBase};
use berth_proto::BerthError;
use futures::StreamExt;

pub struct Desired {
    kv: kv::Store,
}

/// The last entry of a project's key, which a write must build on.
#[derive(Debug, Clone)]
pub enum Base {
    /// Never applied.
    New,
    /// Applied: the revision and its record.
    At(u64, Box<DesiredRecord>),
    /// Taken down at this revision (a delete marker).
    Deleted(u64),
}

impl Base {
    /// The revision a compare-and-set update must name; `None` for a key never written.
    pub fn revision(&self) -> Option<u64> {
        match self {
            Base::New => None,
            Base::At(r, _) | Base::Deleted(r) => Some(*r),
        }
    }

    /// As a client names it: the revision, or none for a key never written.
    pub fn as_base(&self) -> BaseRevision {
        self.revision().map_or(BaseRevision::None, BaseRevision::At)
    }
}

/// The current revision of a project.
pub struct Current {
    pub revision: u64,
    pub record: DesiredRecord,
}

fn decode(project: &str, revision: u64, bytes: &[u8]) -> Result<DesiredRecord, BerthError> {
    serde_json::from_slice(bytes).map_err(|e| {
        BerthError::internal(format!(
            "desired state of {project} at revision {revision} does not decode: {e}"
        ))
    })
}

fn services_of(r: &DesiredRecord) -> Vec<String> {
    r.spec
        .get("services")
        .and_then(|s| s.as_object())
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

impl Desired {
    pub fn new(kv: kv::Store) -> Desired {
        Desired { kv }
    }

    pub fn store(&self) -> &kv::Store {
        &self.kv
    }

    /// The project's current revision; `None` when it was never applied or was taken down.
    pub async fn current(&self, project: &str) -> Result<Option<Current>, BerthError> {
        let e = self.kv.entry(project).await.map_err(|e| {
            BerthError::unavailable(format!("reading desired state of {project}: {e}"))
        })?;
        match e {
            Some(e) if e.operation == Operation::Put => Ok(Some(Current {
                revision: e.revision,
                record: decode(project, e.revision, &e.value)?,
            })),
            _ => Ok(None),
        }
    }

    /// Store `record` as the project's next revision, unless it equals the current one.
    /// Returns (revision, changed). With `expected` (the revision the client planned
    /// against), only if that is still the key's last revision; without, on the revision
    /// read here. Either way a writer in between makes this fail with the typed conflict
    /// ([`StaleBase`]) and store nothing. A spec equal to the current one is `changed: false`
    /// whatever `expected` says: nothing would be lost.
    pub async fn apply(
        &self,
        record: &DesiredRecord,
        expected: Option<BaseRevision>,
    ) -> Result<(u64, bool), BerthError> {
        let base = self.base(&record.project).await?;
        if let Base::At(rev, cur) = &base {
            if cur.spec == record.spec && record.rollback_of.is_none() {
                return Ok((*rev, false));
            }
        }
        if let Some(expected) = expected {
            if expected != base.as_base() {
                return Err(StaleBase {
                    expected,
                    now: base.as_base(),
                }
                .to_error(&record.project));
            }
        }
        Ok((self.write(record, &base).await?, true))
    }

    /// What the next write of `project` builds on: its last entry in the bucket.
    pub async fn base(&self, project: &str) -> Result<Base, BerthError> {
        let last = self.kv.entry(project).await.map_err(|e| {
            BerthError::unavailable(format!("reading desired state of {project}: {e}"))
        })?;
        Ok(match last {
            None => Base::New,
            Some(e) if e.operation == Operation::Put => {
                Base::At(e.revision, Box::new(decode(project, e.revision, &e.value)?))
            }
            Some(e) => Base::Deleted(e.revision),
        })
    }

    /// Store `record` on top of `base` by compare-and-set (`create` for a new key, `update`
    /// with the base's revision otherwise): if anyone wrote the key since `base` was read, this
    /// fails with `Conflict` and stores nothing. Returns the new revision.
    pub async fn write(&self, record: &DesiredRecord, base: &Base) -> Result<u64, BerthError> {
        let project = &record.project;
        let bytes: bytes::Bytes = serde_json::to_vec(record)
            .map_err(|e| BerthError::internal(e.to_string()))?
            .into();
        let stored = match base.revision() {
            Some(rev) => {
                self.kv
                    .update(project.as_str(), bytes, rev)
                    .await
                    .map_err(|err| match err.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(BerthError::unavailable(format!(
                            "storing desired state of {project}: {err}"
                        ))),
                    })
            }
            None => self
                .kv
                .create(project.as_str(), bytes)
                .await
                .map_err(|err| match err.kind() {
                    kv::CreateErrorKind::AlreadyExists => None,
                    _ => Some(BerthError::unavailable(format!(
                        "storing desired state of {project}: {err}"
                    ))),
                }),
        };
        match stored {
            Ok(rev) => Ok(rev),
            Err(Some(e)) => Err(e),
            // Lost the compare-and-set: name the revision that won.
            Err(None) => {
                let now = self.base(project).await?.as_base();
                Err(StaleBase {
                    expected: base.as_base(),
                    now,
                }
                .to_error(project))
            }
        }
    }

    /// Every revision kept, oldest first.
    pub async fn history(
        &self,
        project: &str,
    ) -> Result<Vec<(RevisionInfo, Option<DesiredRecord>)>, BerthError> {
        let mut h = match self.kv.history(project).await {
            Ok(h) => h,
            Err(e) => {
                return Err(BerthError::not_found(format!(
                    "project {project} has no desired state ({e})"
                )))
            }
        };
        let mut out = Vec::new();
        while let Some(e) = h.next().await {
            let e = e.map_err(|e| {
                BerthError::unavailable(format!("reading history of {project}: {e}"))
            })?;
            if e.operation == Operation::Put {
                let r = decode(project, e.revision, &e.value)?;
                out.push((
                    RevisionInfo {
                        revision: e.revision,
                        applied_at: r.applied_at.clone(),
                        services: services_of(&r),
                        rollback_of: r.rollback_of,
                        deleted: false,
                    },
                    Some(r),
                ));
            } else {
                out.push((
                    RevisionInfo {
                        revision: e.revision,
                        applied_at: String::new(),
                        services: vec![],
                        rollback_of: None,
                        deleted: true,
                    },
                    None,
                ));
            }
        }
        if out.is_empty() {
            return Err(BerthError::not_found(format!(
                "project {project} has no desired state"
            )));
        }
        Ok(out)
    }

    /// Take the project down: a delete marker (history is kept, so it can be rolled back).
    pub async fn delete(&self, project: &str) -> Result<bool, BerthError> {
        if self.current(project).await?.is_none() {
            return Ok(false);
        }
        self.kv.delete(project).await.map_err(|e| {
            BerthError::unavailable(format!("deleting desired state of {project}: {e}"))
        })?;
        Ok(true)
    }

    /// Every project key, with its current record (`None` when taken down).
    pub async fn all(&self) -> Result<Vec<(String, u64, Option<DesiredRecord>)>, BerthError> {
        let mut keys = match self.kv.keys().await {
            Ok(k) => k,
            Err(e) => return Err(BerthError::unavailable(format!("listing projects: {e}"))),
        };
        let mut names = Vec::new();
        while let Some(k) = keys.next().await {
            match k {
                Ok(k) => names.push(k),
                Err(e) => return Err(BerthError::unavailable(format!("listing projects: {e}"))),
            }
        }
        let mut out = Vec::new();
        for n in names {
            match self.current(&n).await? {
                Some(c) => out.push((n, c.revision, Some(c.record))),
                None => out.push((n, 0, None)),
            }
        }
        Ok(out)
    }
}

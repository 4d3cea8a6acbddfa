//! Request and reply types of the reconciler (cluster-wide: `berth.v1._.reconciler.<verb>`).
//!
//! Desired state: one key per project in the `berth_desired` bucket, whose value is a
//! [`DesiredRecord`]; every apply is one revision (the bucket keeps 64), written by
//! compare-and-set so two concurrent applies cannot interleave.
//!
//! Events (`berth.v1.events.<node>.reconcile.<action>` and `...spec.applied`, name = project):
//! `step` (attrs `action`, `container`, `step`, `revision`), `converged` (`revision`),
//! `failed` (`action`, `container`, `error`, `attempt`, `retry_in_ms`, `revision`).

use crate::BerthError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

pub const APPLY: &str = "apply";
pub const PLAN: &str = "plan";
pub const DOWN: &str = "down";
pub const HISTORY: &str = "history";
pub const ROLLBACK: &str = "rollback";
pub const LS: &str = "ls";

/// The value of a project's key in `berth_desired`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredRecord {
    pub project: String,
    /// The validated Compose project (`berth_spec::Project` as JSON).
    pub spec: serde_json::Value,
    /// RFC 3339.
    pub applied_at: String,
    /// The files it was read from, for people.
    #[serde(default)]
    pub files: Vec<String>,
    /// Set when this revision re-applies an earlier one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub project: String,
    pub spec: serde_json::Value,
    #[serde(default)]
    pub files: Vec<String>,
    /// The revision of the project's key this apply was planned against: stored only if that
    /// is still the last one, else refused with a [`StaleBase`] conflict. Absent (an older
    /// client): the reconciler builds on whatever revision it reads just before storing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRevision>,
}

/// The revision a change of a project builds on: the last revision of its key in
/// `berth_desired` (a take-down's delete marker counts), or none for a project never applied.
/// On the wire: the number, or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BaseRevision {
    None,
    At(u64),
}

impl BaseRevision {
    pub fn revision(self) -> Option<u64> {
        match self {
            BaseRevision::None => None,
            BaseRevision::At(r) => Some(r),
        }
    }
}

impl fmt::Display for BaseRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BaseRevision::None => f.write_str("none"),
            BaseRevision::At(r) => write!(f, "{r}"),
        }
    }
}

impl std::str::FromStr for BaseRevision {
    type Err = String;
    /// `none` or a revision number above 0.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "none" => Ok(BaseRevision::None),
            t => match t.parse::<u64>() {
                Ok(n) if n > 0 => Ok(BaseRevision::At(n)),
                _ => Err(format!(
                    "{s:?} is not a revision: a number above 0, or none for a new project"
                )),
            },
        }
    }
}

impl Serialize for BaseRevision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BaseRevision::None => s.serialize_str("none"),
            BaseRevision::At(r) => s.serialize_u64(*r),
        }
    }
}

impl<'de> Deserialize<'de> for BaseRevision {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) if n.as_u64().is_some_and(|n| n > 0) => {
                Ok(BaseRevision::At(n.as_u64().expect("checked")))
            }
            serde_json::Value::String(s) if s == "none" => Ok(BaseRevision::None),
            other => Err(serde::de::Error::custom(format!(
                "base {other} is not a revision (a number above 0, or \"none\")"
            ))),
        }
    }
}

/// The conflict of a change planned against a revision that is no longer the project's last
/// one: another change was stored first, and this one stored nothing. Travels as a
/// `conflict` error whose detail is `expected revision N, now M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaleBase {
    pub expected: BaseRevision,
    pub now: BaseRevision,
}

impl StaleBase {
    pub fn to_error(self, project: &str) -> BerthError {
        BerthError::conflict(format!(
            "another apply of {project} was stored first, nothing was changed (plan and apply again)"
        ))
        .with_detail(self.detail())
    }

    fn detail(self) -> String {
        format!("expected revision {}, now {}", self.expected, self.now)
    }

    /// The conflict an error reply carries, if it is one.
    pub fn from_error(e: &BerthError) -> Option<StaleBase> {
        if e.code != crate::ErrorCode::Conflict {
            return None;
        }
        let d = e.detail.as_deref()?.strip_prefix("expected revision ")?;
        let (expected, now) = d.split_once(", now ")?;
        Some(StaleBase {
            expected: expected.parse().ok()?,
            now: now.parse().ok()?,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyReply {
    pub project: String,
    pub revision: u64,
    /// False when the spec was identical to the current revision (nothing stored).
    pub changed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanRequest {
    pub project: String,
    pub spec: serde_json::Value,
}

/// One step a plan would take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanStep {
    /// `create`, `replace`, `remove`, `start`.
    pub action: String,
    pub container: String,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanReply {
    pub project: String,
    pub steps: Vec<PlanStep>,
    /// The revision the plan was made against (to give `apply --base`); absent from an older
    /// reconciler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRevision>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectRequest {
    pub project: String,
}

/// `down`: remove the project's containers and networks; with `volumes`, its volumes too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownRequest {
    pub project: String,
    #[serde(default)]
    pub volumes: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DownReply {
    pub project: String,
    pub removed: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevisionInfo {
    pub revision: u64,
    pub applied_at: String,
    pub services: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u64>,
    /// The project was taken down at this revision.
    #[serde(default)]
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryReply {
    pub project: String,
    pub revisions: Vec<RevisionInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub project: String,
    /// The revision to restore; the one before the current when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<u64>,
    /// As [`ApplyRequest::base`]: the project's revision when the rollback was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseRevision>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProjectStatus {
    pub project: String,
    pub revision: u64,
    pub services: usize,
    pub desired_containers: usize,
    pub running_containers: usize,
    pub converged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LsReply {
    pub projects: Vec<ProjectStatus>,
}

/// The reconciler's verbs (see [`crate::verb`]).
pub mod verbs {
    use super::*;
    use crate::verb::Empty;
    crate::verbs! { crate::Service::Reconciler;
        Apply = APPLY, ApplyRequest => ApplyReply;
        Plan = PLAN, PlanRequest => PlanReply;
        Down = DOWN, DownRequest => DownReply;
        History = HISTORY, ProjectRequest => HistoryReply;
        Rollback = ROLLBACK, RollbackRequest => ApplyReply;
        Ls = LS, Empty => LsReply;
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_is_a_number_or_none_and_a_stale_one_travels_typed() {
        let r: ApplyRequest =
            serde_json::from_value(serde_json::json!({"project": "p", "spec": {}, "base": 4}))
                .unwrap();
        assert_eq!(r.base, Some(BaseRevision::At(4)));
        let r: ApplyRequest =
            serde_json::from_value(serde_json::json!({"project": "p", "spec": {}, "base": "none"}))
                .unwrap();
        assert_eq!(r.base, Some(BaseRevision::None));
        let r: ApplyRequest =
            serde_json::from_value(serde_json::json!({"project": "p", "spec": {}})).unwrap();
        assert_eq!(r.base, None);
        assert!(serde_json::from_value::<ApplyRequest>(
            serde_json::json!({"project": "p", "spec": {}, "base": "latest"})
        )
        .is_err());
        assert_eq!(
            serde_json::to_value(BaseRevision::None).unwrap(),
            serde_json::json!("none")
        );
        assert_eq!("7".parse(), Ok(BaseRevision::At(7)));
        assert!("0".parse::<BaseRevision>().is_err());

        let c = StaleBase {
            expected: BaseRevision::At(3),
            now: BaseRevision::At(5),
        };
        let e = c.to_error("shop");
        assert_eq!(e.code, crate::ErrorCode::Conflict);
        assert_eq!(e.detail.as_deref(), Some("expected revision 3, now 5"));
        assert_eq!(StaleBase::from_error(&e), Some(c));
        let new = StaleBase {
            expected: BaseRevision::None,
            now: BaseRevision::At(1),
        };
        assert_eq!(StaleBase::from_error(&new.to_error("shop")), Some(new));
        assert_eq!(StaleBase::from_error(&BerthError::conflict("other")), None);
    }
}

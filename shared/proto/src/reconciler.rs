//! Request and reply types of the reconciler (cluster-wide: `berth.v1._.reconciler.<verb>`).
//!
//! Desired state: one key per project in the `berth_desired` bucket, whose value is a
//! [`DesiredRecord`]; every apply is one revision (the bucket keeps 64), written by
//! compare-and-set so two concurrent applies cannot interleave.
//!
//! Events (`berth.v1.events.<node>.reconcile.<action>` and `...spec.applied`, name = project):
//! `step` (attrs `action`, `container`, `step`, `revision`), `converged` (`revision`),
//! `failed` (`action`, `container`, `error`, `attempt`, `retry_in_ms`, `revision`).

use serde::{Deserialize, Serialize};

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

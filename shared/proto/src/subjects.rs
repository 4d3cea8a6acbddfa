//! Subject names. Commands: `berth.v1.<node>.<service>.<verb>`; events:
//! `berth.v1.events.<node>.<entity>.<action>`. Cluster-wide services use `_` as node.

use serde::{Deserialize, Serialize};

/// Prefix of every berth subject; the version is part of it so v2 can run beside v1.
pub const PREFIX: &str = "berth.v1";
/// Every event subject starts with this.
pub const EVENTS_PREFIX: &str = "berth.v1.events";
/// The JetStream stream that captures every event.
pub const EVENTS_STREAM: &str = "BERTH_EVENTS";
/// Key-value bucket of desired state: one key per project, history kept for rollback.
pub const KV_DESIRED: &str = "berth_desired";
/// Key-value bucket of actual state: one key per container (`<node>.<id>`).
pub const KV_ACTUAL: &str = "berth_actual";
/// Key-value bucket of the first reply to each state-changing command, by idempotency key
/// (`<node>.<service>.<key>`), so a retry after a restart is answered, not applied again.
pub const KV_IDEMPOTENCY: &str = "berth_idem";
/// The node token of cluster-wide services.
pub const CLUSTER_NODE: &str = "_";

/// The five services of berth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Puller,
    LayerStore,
    Isolator,
    Supervisor,
    Reconciler,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Puller,
        Service::LayerStore,
        Service::Isolator,
        Service::Supervisor,
        Service::Reconciler,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Service::Puller => "puller",
            Service::LayerStore => "layer-store",
            Service::Isolator => "isolator",
            Service::Supervisor => "supervisor",
            Service::Reconciler => "reconciler",
        }
    }

    /// Cluster-wide services answer on the `_` node token whatever node hosts them.
    pub fn is_cluster_wide(self) -> bool {
        matches!(self, Service::Reconciler)
    }

    /// The node token this service answers on when hosted on `node`.
    pub fn node_token(self, node: &str) -> &str {
        if self.is_cluster_wide() {
            CLUSTER_NODE
        } else {
            node
        }
    }

    pub fn from_name(s: &str) -> Option<Service> {
        Service::ALL.into_iter().find(|svc| svc.name() == s)
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `berth.v1.<node>.<service>.<verb>` (the node token is `_` for cluster-wide services).
pub fn command(node: &str, service: Service, verb: &str) -> String {
    format!(
        "{PREFIX}.{}.{}.{verb}",
        service.node_token(node),
        service.name()
    )
}

/// Wildcard a service subscribes to for all its verbs.
pub fn service_wildcard(node: &str, service: Service) -> String {
    format!("{PREFIX}.{}.{}.*", service.node_token(node), service.name())
}

/// `berth.v1.events.<node>.<entity>.<action>`.
pub fn event(node: &str, entity: &str, action: &str) -> String {
    format!("{EVENTS_PREFIX}.{node}.{entity}.{action}")
}

/// A node name must be a single subject token.
pub fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Key of a container in the actual-state bucket.
pub fn actual_key(node: &str, container_id: &str) -> String {
    format!("{node}.{container_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_have_the_documented_shape() {
        assert_eq!(
            command("node-a", Service::Puller, "pull"),
            "berth.v1.node-a.puller.pull"
        );
        assert_eq!(
            command("node-a", Service::Reconciler, "apply"),
            "berth.v1._.reconciler.apply"
        );
        assert_eq!(
            event("n1", "image", "pulled"),
            "berth.v1.events.n1.image.pulled"
        );
        assert_eq!(
            service_wildcard("n1", Service::LayerStore),
            "berth.v1.n1.layer-store.*"
        );
        assert_eq!(Service::from_name("layer-store"), Some(Service::LayerStore));
        assert!(valid_token("node-1_a"));
        assert!(!valid_token("a.b"));
        assert!(!valid_token(""));
    }
}

//! Events: published on `berth.v1.events.<node>.<entity>.<action>` and kept in the
//! `BERTH_EVENTS` stream.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    /// Unique id, also the `Nats-Msg-Id` so the stream drops duplicates.
    pub id: String,
    /// RFC 3339 time of the event.
    pub time: String,
    pub node: String,
    /// `service`, `image`, `container`, `snapshot`, `spec`, `reconcile`, ...
    pub entity: String,
    /// `started`, `pulled`, `exited`, ...
    pub action: String,
    /// The name of the thing the event is about (service name, image reference, container name).
    pub name: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub attrs: Map<String, Value>,
}

impl Event {
    /// Whether the event matches a `key=value` filter (node, entity, action, name, or an attr).
    pub fn matches(&self, key: &str, value: &str) -> bool {
        match key {
            "node" => self.node == value,
            "entity" | "type" => self.entity == value,
            "action" | "event" => self.action == value,
            "name" => self.name == value,
            other => match self.attrs.get(other) {
                Some(Value::String(s)) => s == value,
                #[allow(clippy::cmp_owned)] // numbers and booleans compare by their text
                Some(v) => v.to_string() == value,
                None => false,
            },
        }
    }
}

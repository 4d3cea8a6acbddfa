//! Connecting to NATS, typed request/reply, and publishing events.

use crate::error::BusError;
use async_nats::jetstream;
use berth_proto::envelope::IDEMPOTENCY_HEADER;
use berth_proto::{subjects, Event, Reply, Request, Service, Verb, SCHEMA_VERSION};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A NATS identity as `berthd` writes it: a 0600 JSON file `{"user": ..., "password": ...}`,
/// optionally with the `url` of the server it belongs to and the prefix of its reply
/// subjects (see [`crate::Identity::inbox_prefix`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbox_prefix: Option<String>,
}

impl Credentials {
    /// Read an identity file, refusing one that others may read or write
    /// ([`crate::identity::check_private`]).
    pub fn read(path: &Path) -> Result<Credentials, BusError> {
        crate::identity::check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(|e| BusError::Credentials {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| BusError::Credentials {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}

/// How to reach the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    pub url: String,
    pub creds: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    /// The client name shown by the server.
    pub name: String,
    /// The node this client acts for (used for event subjects and default targets).
    pub node: String,
    /// Long-lived clients (services) keep reconnecting forever and wait for the first
    /// connection; short-lived ones (the CLI) fail at once.
    pub persistent: bool,
}

/// Per-request options.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    pub timeout: Duration,
    /// Set for commands that change state: a retry with the same key is not applied twice.
    pub idempotency_key: Option<String>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            timeout: Duration::from_secs(30),
            idempotency_key: None,
        }
    }
}

impl RequestOptions {
    pub fn timeout(t: Duration) -> Self {
        RequestOptions {
            timeout: t,
            ..Default::default()
        }
    }
    /// A state-changing command: a fresh idempotency key.
    pub fn mutating(t: Duration) -> Self {
        RequestOptions {
            timeout: t,
            idempotency_key: Some(crate::random_hex(32)),
        }
    }
}

/// Requests allowed longer than this are watched: the serving service's `info` is asked
/// while they wait ([`Bus::request`]).
pub const WATCH_AFTER: Duration = Duration::from_secs(2);
/// How often a watched request's service is asked whether it is still there.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a probe waits for the service's `info`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to the bus, cheap to clone.
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    node: String,
    url: String,
    /// Poked when an operation finds a stream or bucket gone; the keeper
    /// ([`crate::infra::keep`]) looks and re-creates what this identity owns.
    missing: Arc<tokio::sync::Notify>,
}

/// An event as the stream takes it: its subject, its id as `Nats-Msg-Id`, its JSON.
fn event_message(ev: &Event) -> (String, async_nats::HeaderMap, bytes::Bytes) {
    let subject = subjects::event(&ev.node, &ev.entity, &ev.action);
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", ev.id.as_str());
    let payload = serde_json::to_vec(ev).expect("events serialize");
    (subject, h, payload.into())
}

impl Bus {
    pub async fn connect(opts: &ConnectOptions) -> Result<Bus, BusError> {
        let mut o = async_nats::ConnectOptions::new()
            .name(&opts.name)
            .connection_timeout(Duration::from_secs(3));
        if let Some(path) = &opts.creds {
            let c = Credentials::read(path)?;
            o = o.user_and_password(c.user, c.password);
            if let Some(prefix) = c.inbox_prefix {
                o = o.custom_inbox_prefix(prefix);
            }
        }
        if let Some(ca) = &opts.ca {
            o = o.add_root_certificates(ca.clone()).require_tls(true);
        }
        if opts.persistent {
            o = o
                .retry_on_initial_connect()
                .max_reconnects(None)
                .reconnect_delay_callback(|attempt| {
                    // 50 ms doubling up to 2 s.
                    let ms = 50u64.saturating_mul(1 << attempt.min(6));
                    Duration::from_millis(ms.min(2000))
                })
                .event_callback(|ev| async move {
                    tracing::info!(event = %ev, "nats connection event");
                });
        } else {
            o = o.max_reconnects(Some(3));
        }
        // The first attempt goes out at once. Left to its default, async-nats sleeps a zero
        // delay first, which waits for the timer's next millisecond tick (0.5-1 ms of every
        // CLI call); later attempts keep their backoff.
        o = o.reconnect_to_server_callback(|servers, _info| async move {
            servers
                .iter()
                .find(|s| !s.did_connect && s.failed_attempts == 0)
                .map(|s| async_nats::ReconnectToServer {
                    addr: s.addr.clone(),
                    delay: Some(Duration::ZERO),
                })
        });
        let client = o.connect(&opts.url).await.map_err(|e| BusError::Connect {
            url: opts.url.clone(),
            reason: e.to_string(),
        })?;
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            node: opts.node.clone(),
            url: opts.url.clone(),
            missing: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }
    pub fn node(&self) -> &str {
        &self.node
    }
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Say that an operation found a stream or bucket gone (a "stream not found" error, or no
    /// responder for a stream's subject): the keeper, if one runs for this connection, looks
    /// at once and re-creates what is missing.
    pub fn report_missing(&self) {
        self.missing.notify_one();
    }

    /// What [`Bus::report_missing`] wakes.
    pub(crate) fn missing(&self) -> Arc<tokio::sync::Notify> {
        self.missing.clone()
    }

    /// Send `body` to `<service>.<verb>` on `node` and decode the typed reply.
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        node: &str,
        service: Service,
        verb: &str,
        body: &Req,
        opts: &RequestOptions,
    ) -> Result<Resp, BusError> {
        let subject = subjects::command(node, service, verb);
        let payload = serde_json::to_vec(&Request::new(body)).map_err(|e| BusError::Decode {
            subject: subject.clone(),
            reason: e.to_string(),
        })?;
        let mut req = async_nats::client::Request::new()
            .payload(payload.into())
            .timeout(Some(opts.timeout));
        if let Some(key) = &opts.idempotency_key {
            let mut h = async_nats::HeaderMap::new();
            h.insert(IDEMPOTENCY_HEADER, key.as_str());
            req = req.headers(h);
        }
        let sent = self.client.send_request(subject.clone(), req);
        // A long request is not left waiting on a service that is gone: its `info` is asked
        // meanwhile (see `watch_service`).
        let r = if opts.timeout > WATCH_AFTER && verb != berth_proto::info::VERB {
            tokio::select! {
                r = sent => r,
                _ = self.watch_service(node, service) => {
                    return Err(BusError::Gone {
                        service: service.name().to_string(),
                        node: service.node_token(node).to_string(),
                        verb: verb.to_string(),
                    });
                }
            }
        } else {
            sent.await
        };
        let msg = r.map_err(|e| match e.kind() {
            async_nats::client::RequestErrorKind::NoResponders => BusError::NoResponders {
                service: service.name().to_string(),
                node: service.node_token(node).to_string(),
                subject: subject.clone(),
            },
            async_nats::client::RequestErrorKind::TimedOut => BusError::Timeout {
                service: service.name().to_string(),
                node: service.node_token(node).to_string(),
                verb: verb.to_string(),
                after: opts.timeout,
            },
            // The connection went with the server (berthd's own nats-server dies with it).
            _ if self.client.connection_state() != async_nats::connection::State::Connected => {
                BusError::Gone {
                    service: service.name().to_string(),
                    node: service.node_token(node).to_string(),
                    verb: verb.to_string(),
                }
            }
            _ => BusError::nats("request", e),
        })?;
        decode_reply(&subject, &msg.payload)
    }

    /// Return once `service` on `node` is gone: every [`PROBE_EVERY`] its `info` is asked;
    /// no responders means gone at once, and so do two probes in a row without an answer
    /// (or with the connection down: berthd's nats-server went with it). Never returns while
    /// the service answers.
    async fn watch_service(&self, node: &str, service: Service) {
        let subject = subjects::command(node, service, berth_proto::info::VERB);
        let payload: bytes::Bytes = serde_json::to_vec(&Request::new(serde_json::json!({})))
            .expect("an info request serializes")
            .into();
        let mut failed = 0;
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let ok = if self.client.connection_state() != async_nats::connection::State::Connected {
                false
            } else {
                let probe = async_nats::client::Request::new()
                    .payload(payload.clone())
                    .timeout(Some(PROBE_TIMEOUT));
                match self.client.send_request(subject.clone(), probe).await {
                    Ok(_) => true,
                    Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                        return
                    }
                    Err(_) => false,
                }
            };
            failed = if ok { 0 } else { failed + 1 };
            if failed >= 2 {
                return;
            }
        }
    }

    /// Send the declared verb `V` to its service on `node`: the request and the reply are the
    /// verb's types, the ones the service's router serves it with.
    pub async fn ask<V: Verb>(
        &self,
        node: &str,
        body: &V::Request,
        opts: &RequestOptions,
    ) -> Result<V::Reply, BusError> {
        self.request(node, V::SERVICE, V::NAME, body, opts).await
    }

    /// [`Bus::ask`] on this client's own node.
    pub async fn ask_local<V: Verb>(
        &self,
        body: &V::Request,
        opts: &RequestOptions,
    ) -> Result<V::Reply, BusError> {
        let node = self.node.clone();
        self.ask::<V>(&node, body, opts).await
    }

    /// Like [`Bus::request`] to this client's own node.
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        service: Service,
        verb: &str,
        body: &Req,
        opts: &RequestOptions,
    ) -> Result<Resp, BusError> {
        let node = self.node.clone();
        self.request(&node, service, verb, body, opts).await
    }

    /// Build an event of this node.
    pub fn event(
        &self,
        entity: &str,
        action: &str,
        name: &str,
        attrs: serde_json::Map<String, serde_json::Value>,
    ) -> Event {
        Event {
            v: SCHEMA_VERSION,
            id: crate::random_hex(24),
            time: crate::now_rfc3339(),
            node: self.node.clone(),
            entity: entity.to_string(),
            action: action.to_string(),
            name: name.to_string(),
            attrs,
        }
    }

    /// Publish an event into the stream, with its id as `Nats-Msg-Id` so the stream drops
    /// duplicates of a retried publish. Waits for the stream's acknowledgement.
    pub async fn publish_event(&self, ev: &Event) -> Result<(), BusError> {
        let (subject, h, payload) = event_message(ev);
        let ack = self
            .js
            .publish_with_headers(subject, h, payload)
            .await
            .map_err(|e| BusError::nats("publish event", e))?;
        ack.await
            .map_err(|e| BusError::nats("publish event ack", e))?;
        Ok(())
    }

    /// Send `payload` to a stream's subject now and check the stream's acknowledgement in the
    /// background, logging a failure. For announcements (events, actual state) that the work
    /// they describe must not wait for: what this connection sends reaches the server in
    /// order, so a later announcement never overtakes an earlier one.
    pub async fn publish_unconfirmed(
        &self,
        subject: String,
        headers: async_nats::HeaderMap,
        payload: bytes::Bytes,
        what: &'static str,
    ) -> Result<(), BusError> {
        let ack = self
            .js
            .publish_with_headers(subject.clone(), headers, payload)
            .await
            .map_err(|e| BusError::nats(what, e))?;
        let missing = self.missing.clone();
        tokio::spawn(async move {
            if let Err(e) = ack.await {
                tracing::warn!(%e, subject, what, "not acknowledged by the stream");
                if e.kind() == jetstream::context::PublishErrorKind::StreamNotFound {
                    missing.notify_one();
                }
            }
        });
        Ok(())
    }

    /// [`Bus::publish_event`] without waiting for the stream's acknowledgement (see
    /// [`Bus::publish_unconfirmed`]).
    pub async fn send_event(&self, ev: &Event) -> Result<(), BusError> {
        let (subject, h, payload) = event_message(ev);
        self.publish_unconfirmed(subject, h, payload, "publish event")
            .await
    }

    /// Put `key` in `kv` without waiting for the acknowledgement (see
    /// [`Bus::publish_unconfirmed`]); `value` `None` deletes it.
    pub async fn kv_send(
        &self,
        kv: &jetstream::kv::Store,
        key: &str,
        value: Option<bytes::Bytes>,
    ) -> Result<(), BusError> {
        if kv.use_jetstream_prefix {
            // A bucket behind a JetStream domain: the library knows its subjects.
            return match value {
                Some(v) => kv
                    .put(key, v)
                    .await
                    .map(|_| ())
                    .map_err(|e| BusError::nats("kv put", e)),
                None => kv
                    .delete(key)
                    .await
                    .map_err(|e| BusError::nats("kv delete", e)),
            };
        }
        let subject = format!("{}{key}", kv.put_prefix.as_ref().unwrap_or(&kv.prefix));
        let mut h = async_nats::HeaderMap::new();
        let payload = match value {
            Some(v) => v,
            None => {
                h.insert("KV-Operation", "DEL");
                bytes::Bytes::new()
            }
        };
        self.publish_unconfirmed(subject, h, payload, "kv put")
            .await
    }

    /// Publish an event, logging rather than failing when the bus is down: events must never
    /// stop the work they describe (nor wait for the stream's acknowledgement).
    pub async fn emit(
        &self,
        entity: &str,
        action: &str,
        name: &str,
        attrs: serde_json::Map<String, serde_json::Value>,
    ) {
        let ev = self.event(entity, action, name, attrs);
        if let Err(e) = self.send_event(&ev).await {
            tracing::warn!(%e, entity, action, name, "event not published");
        }
    }
}

/// Decode a reply envelope, checking the schema version first.
pub fn decode_reply<Resp: DeserializeOwned>(
    subject: &str,
    payload: &[u8],
) -> Result<Resp, BusError> {
    let probe: berth_proto::envelope::VersionProbe =
        serde_json::from_slice(payload).map_err(|e| BusError::Decode {
            subject: subject.to_string(),
            reason: e.to_string(),
        })?;
    if probe.v != SCHEMA_VERSION {
        return Err(BusError::Remote(berth_proto::envelope::version_mismatch(
            probe.v,
        )));
    }
    let reply: Reply<Resp> = serde_json::from_slice(payload).map_err(|e| BusError::Decode {
        subject: subject.to_string(),
        reason: e.to_string(),
    })?;
    reply.into_result().map_err(BusError::Remote)
}

/// `serde_json::Map` from pairs, for event attributes.
#[macro_export]
macro_rules! attrs {
    ($($k:expr => $v:expr),* $(,)?) => {{
        #[allow(unused_mut)]
        let mut m = serde_json::Map::new();
        $( m.insert($k.to_string(), serde_json::json!($v)); )*
        m
    }};
}

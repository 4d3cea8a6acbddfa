//! Hosting a service on the bus: a [`Router`] of typed verbs, served on
//! `berth.v1.<node>.<service>.*` in a queue group, with the `info` verb answered for every
//! service, idempotency keys honoured, and a graceful drain on shutdown.

use crate::{Bus, NodeConfig};
use async_nats::jetstream::kv;
use berth_proto::envelope::{version_mismatch, VersionProbe, IDEMPOTENCY_HEADER};
use berth_proto::info::ServiceInfo;
use berth_proto::{subjects, BerthError, Reply, Service, Verb, SCHEMA_VERSION};
use bytes::Bytes;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every service's `run` receives: the bus, the node's configuration and the shutdown
/// signal (cancelled when the host wants the service to stop taking work).
#[derive(Clone)]
pub struct ServiceContext {
    pub bus: Bus,
    pub config: NodeConfig,
    pub shutdown: CancellationToken,
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Value, BerthError>> + Send>>;
type Handler = Arc<dyn Fn(Value) -> BoxFut + Send + Sync>;

/// The verbs of one service.
#[derive(Default, Clone)]
pub struct Router {
    routes: HashMap<String, Handler>,
    /// The verbs added by type ([`Router::verb`]): [`serve`] checks they are the service's
    /// declared verbs, all of them.
    typed: Vec<(Service, &'static str)>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Serve the declared verb `V`: its request decoded as `V::Request`, `f`'s answer sent as
    /// `V::Reply`. Services add every verb this way.
    pub fn verb<V: Verb, F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(V::Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<V::Reply, BerthError>> + Send + 'static,
    {
        self.typed.push((V::SERVICE, V::NAME));
        self.route(V::NAME, f)
    }

    /// Add a verb by name, whose body decodes to `Req` and whose answer is `Resp`: for tests of
    /// the bus itself (an echo service); a service declares its verbs and uses [`Router::verb`].
    pub fn route<Req, Resp, F, Fut>(mut self, verb: &str, f: F) -> Self
    where
        Req: DeserializeOwned + Send + 'static,
        Resp: Serialize + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, BerthError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let name = verb.to_string();
        let h: Handler = Arc::new(move |v: Value| {
            let f = f.clone();
            let name = name.clone();
            Box::pin(async move {
                let req: Req = serde_json::from_value(v)
                    .map_err(|e| BerthError::invalid(format!("malformed {name} request: {e}")))?;
                let resp = f(req).await?;
                serde_json::to_value(resp).map_err(|e| BerthError::internal(e.to_string()))
            })
        });
        self.routes.insert(verb.to_string(), h);
        self
    }

    pub fn verbs(&self) -> Vec<String> {
        let mut v: Vec<String> = self.routes.keys().cloned().collect();
        v.sort();
        v
    }
}

/// How long the reply to a state-changing command is kept for its retries (in memory, and in
/// the `berth_idem` bucket, whose `max_age` it is).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(600);
/// Longest wait for the `berth_idem` bucket before a command runs without it.
const IDEMPOTENCY_LOOKUP: Duration = Duration::from_secs(2);
const IDEMPOTENCY_MAX: usize = 10_000;

/// Replies of recent state-changing commands by idempotency key; a duplicate waits for the
/// first to finish and gets the same reply. The fast path in memory; the `berth_idem` bucket
/// keeps them across a restart ([`stored_reply`], [`store_reply`]).
#[derive(Default)]
struct IdempotencyCache {
    entries: HashMap<String, (Instant, Arc<OnceCell<Bytes>>)>,
}

impl IdempotencyCache {
    fn cell(&mut self, key: &str) -> Arc<OnceCell<Bytes>> {
        if self.entries.len() >= IDEMPOTENCY_MAX {
            let now = Instant::now();
            self.entries
                .retain(|_, (t, _)| now.duration_since(*t) < IDEMPOTENCY_TTL);
        }
        self.entries
            .entry(key.to_string())
            .or_insert_with(|| (Instant::now(), Arc::new(OnceCell::new())))
            .1
            .clone()
    }
}

/// The key of idempotency key `key` in the `berth_idem` bucket: `<node>.<service>.<key>`, the
/// key hex-encoded unless it is made of letters, digits, `-` and `_` only.
pub fn idempotency_kv_key(node: &str, service: Service, key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let k = if plain {
        key.to_string()
    } else {
        key.bytes().map(|b| format!("{b:02x}")).collect()
    };
    format!("{}.{}.{k}", service.node_token(node), service.name())
}

/// The reply stored for a key by an earlier run of the service (`None`: none, or the bucket
/// did not answer in time).
async fn stored_reply(kv: &kv::Store, key: &str) -> Option<Bytes> {
    match tokio::time::timeout(IDEMPOTENCY_LOOKUP, kv.get(key)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(%e, key, "idempotency bucket not read");
            None
        }
        Err(_) => {
            tracing::warn!(key, "idempotency bucket did not answer");
            None
        }
    }
}

/// Keep the first reply for a key (sent before the reply itself, on the same connection).
async fn store_reply(bus: &Bus, kv: &kv::Store, key: &str, reply: &Bytes) {
    if let Err(e) = bus.kv_send(kv, key, Some(reply.clone())).await {
        tracing::warn!(%e, key, "reply not kept in the idempotency bucket");
    }
}

#[derive(Deserialize)]
struct AnyRequest {
    #[serde(default)]
    body: Value,
}

/// Serve `router` for `service` until `ctx.shutdown` is cancelled, then stop taking work,
/// finish the requests in flight and return.
/// A router with typed verbs must serve exactly the verbs its service declares (a verb left
/// out would answer "no such verb" to callers that compile against it).
fn check_declared(
    service: Service,
    typed: &[(Service, &'static str)],
) -> Result<(), crate::BusError> {
    if typed.is_empty() {
        return Ok(());
    }
    let wrong = |what: String| {
        Err(crate::BusError::Remote(BerthError::internal(format!(
            "the {} router {what}",
            service.name()
        ))))
    };
    if let Some((s, v)) = typed.iter().find(|(s, _)| *s != service) {
        return wrong(format!("serves {v}, a verb of the {} service", s.name()));
    }
    let served: std::collections::BTreeSet<&str> = typed.iter().map(|(_, v)| *v).collect();
    let declared: std::collections::BTreeSet<&str> = berth_proto::verb::declared(service)
        .iter()
        .copied()
        .collect();
    if served != declared {
        let missing: Vec<_> = declared.difference(&served).collect();
        return wrong(format!("does not serve the declared verbs {missing:?}"));
    }
    Ok(())
}

pub async fn serve(
    ctx: &ServiceContext,
    service: Service,
    router: Router,
) -> Result<(), crate::BusError> {
    check_declared(service, &router.typed)?;
    let bus = &ctx.bus;
    let subject = subjects::service_wildcard(bus.node(), service);
    let mut sub = bus
        .client()
        .queue_subscribe(subject.clone(), service.name().to_string())
        .await
        .map_err(|e| crate::BusError::nats("subscribe", e))?;
    let started_at = crate::now_rfc3339();
    let started = Instant::now();
    let routes = Arc::new(router.routes);
    let cache = Arc::new(Mutex::new(IdempotencyCache::default()));
    let idem = match bus
        .jetstream()
        .get_key_value(subjects::KV_IDEMPOTENCY)
        .await
    {
        Ok(kv) => Some(kv),
        Err(e) => {
            tracing::warn!(%e, service = service.name(), "no idempotency bucket: retries are recognised until a restart only");
            None
        }
    };
    let tracker = TaskTracker::new();
    tracing::info!(service = service.name(), %subject, "serving");
    bus.emit(
        "service",
        "started",
        service.name(),
        crate::attrs! {"version" => env!("CARGO_PKG_VERSION")},
    )
    .await;

    loop {
        let msg = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let verb = msg
            .subject
            .as_str()
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_string();
        let key = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(IDEMPOTENCY_HEADER))
            .map(|v| v.as_str().to_string());
        let routes = routes.clone();
        let cache = cache.clone();
        let idem = idem.clone();
        let bus2 = bus.clone();
        let client = bus.client().clone();
        let info = ServiceInfo {
            service: service.name().to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            node: bus.node().to_string(),
            started_at: started_at.clone(),
            uptime_secs: started.elapsed().as_secs_f64(),
        };
        tracker.spawn(async move {
            let payload = msg.payload.clone();
            let run = async { encode(dispatch(&routes, &verb, &payload, info).await) };
            let out = match key {
                Some(k) => {
                    let cell = cache.lock().unwrap().cell(&k);
                    cell.get_or_init(|| async {
                        let Some(kv) = &idem else {
                            return run.await;
                        };
                        let kk = idempotency_kv_key(bus2.node(), service, &k);
                        if let Some(first) = stored_reply(kv, &kk).await {
                            tracing::info!(verb, key = %k, "a retried command: its first reply again");
                            return first;
                        }
                        let out = run.await;
                        store_reply(&bus2, kv, &kk, &out).await;
                        out
                    })
                    .await
                    .clone()
                }
                None => run.await,
            };
            if let Err(e) = client.publish(reply_to, out).await {
                tracing::warn!(%e, verb, "reply not sent");
            }
        });
    }

    let _ = sub.unsubscribe().await;
    tracker.close();
    tracker.wait().await;
    let _ = bus.client().flush().await;
    tracing::info!(service = service.name(), "stopped");
    Ok(())
}

async fn dispatch(
    routes: &HashMap<String, Handler>,
    verb: &str,
    payload: &[u8],
    info: ServiceInfo,
) -> Result<Value, BerthError> {
    let probe: VersionProbe = serde_json::from_slice(payload)
        .map_err(|e| BerthError::invalid(format!("request is not a berth envelope: {e}")))?;
    if probe.v != SCHEMA_VERSION {
        return Err(version_mismatch(probe.v));
    }
    if verb == berth_proto::info::VERB {
        return Ok(serde_json::to_value(info).expect("info serializes"));
    }
    let req: AnyRequest = serde_json::from_slice(payload)
        .map_err(|e| BerthError::invalid(format!("malformed request: {e}")))?;
    let Some(h) = routes.get(verb) else {
        let mut known: Vec<&str> = routes.keys().map(|s| s.as_str()).collect();
        known.sort();
        return Err(BerthError::unsupported(format!(
            "unknown verb {verb:?}; this service answers: info, {}",
            known.join(", ")
        )));
    };
    h(req.body).await
}

fn encode(r: Result<Value, BerthError>) -> Bytes {
    let reply = match r {
        Ok(v) => Reply::ok(v),
        Err(e) => Reply::err(e),
    };
    serde_json::to_vec(&reply)
        .expect("replies serialize")
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::puller::verbs as pv;
    use berth_proto::supervisor::verbs as sv;
    use berth_proto::Empty;

    fn puller_router() -> Router {
        Router::new()
            .verb::<pv::Pull, _, _>(|_| async { Err(BerthError::internal("unused")) })
            .verb::<pv::Resolve, _, _>(|_| async { Err(BerthError::internal("unused")) })
    }

    #[test]
    fn a_router_serves_exactly_its_services_declared_verbs() {
        // Two of the puller's three verbs: the third is named.
        let r = puller_router();
        let e = check_declared(Service::Puller, &r.typed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("login"), "{e}");
        // All three: accepted.
        let r = puller_router()
            .verb::<pv::Login, _, _>(|_| async { Err(BerthError::internal("unused")) });
        check_declared(Service::Puller, &r.typed).unwrap();
        assert_eq!(r.verbs(), ["login", "pull", "resolve"]);
        // A verb of another service on this router.
        let r = r.verb::<sv::Wait, _, _>(|_| async { Err(BerthError::internal("unused")) });
        let e = check_declared(Service::Puller, &r.typed)
            .unwrap_err()
            .to_string();
        assert!(e.contains("wait") && e.contains("supervisor"), "{e}");
        // Untyped routes (the bus's own tests) are not checked.
        let r = Router::new().route("echo", |e: Empty| async move { Ok::<_, BerthError>(e) });
        check_declared(Service::Puller, &r.typed).unwrap();
    }
}

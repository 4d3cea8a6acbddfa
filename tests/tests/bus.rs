//! The bus layer against a real nats-server: request/reply, typed errors, no responders,
//! idempotency, events with dedup, reconnect after a server restart.

use berth_bus::{attrs, serve, BusError, RequestOptions, Router};
use berth_proto::{BerthError, ErrorCode, Service};
use berth_tests::nats::NatsServer;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Serialize, Deserialize)]
struct Echo {
    text: String,
}

fn echo_router(count: Arc<AtomicU32>) -> Router {
    Router::new()
        .route("echo", |r: Echo| async move { Ok::<_, BerthError>(r) })
        .route("fail", |_r: Echo| async move {
            Err::<Echo, _>(
                BerthError::not_found("no such thing: widget").with_detail("looked in /x"),
            )
        })
        .route("count", move |_r: Echo| {
            let count = count.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, BerthError>(count.fetch_add(1, Ordering::SeqCst) + 1)
            }
        })
}

#[tokio::test]
async fn request_reply_typed_errors_and_no_responders() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = nats.context("n1", dir.path()).await;
    let count = Arc::new(AtomicU32::new(0));
    let server = {
        let ctx = ctx.clone();
        let r = echo_router(count.clone());
        tokio::spawn(async move { serve(&ctx, Service::Puller, r).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bus = nats.bus("n1").await;
    let o = RequestOptions::timeout(Duration::from_secs(5));

    let r: Echo = bus
        .call(Service::Puller, "echo", &Echo { text: "hi".into() }, &o)
        .await
        .unwrap();
    assert_eq!(r.text, "hi");

    let e = bus
        .call::<_, Echo>(Service::Puller, "fail", &Echo { text: "".into() }, &o)
        .await
        .unwrap_err();
    let remote = e.remote().expect("typed error");
    assert_eq!(remote.code, ErrorCode::NotFound);
    assert_eq!(remote.detail.as_deref(), Some("looked in /x"));

    let e = bus
        .call::<_, Echo>(Service::Puller, "nope", &Echo { text: "".into() }, &o)
        .await
        .unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::Unsupported);

    // The info verb is answered for every service.
    let info: berth_proto::info::ServiceInfo = bus
        .call(Service::Puller, "info", &serde_json::json!({}), &o)
        .await
        .unwrap();
    assert_eq!(info.service, "puller");
    assert_eq!(info.node, "n1");

    // A service nobody runs fails at once, naming service and node.
    let t = std::time::Instant::now();
    let e = bus
        .request::<_, Echo>(
            "n2",
            Service::Isolator,
            "create",
            &Echo { text: "".into() },
            &o,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, BusError::NoResponders { .. }), "{e}");
    assert!(
        e.to_string().contains("isolator") && e.to_string().contains("n2"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "no-responders must not wait for the timeout"
    );

    // Same idempotency key twice: applied once, same answer.
    let key = RequestOptions::mutating(Duration::from_secs(5));
    let a: u32 = bus
        .call(Service::Puller, "count", &Echo { text: "".into() }, &key)
        .await
        .unwrap();
    let b: u32 = bus
        .call(Service::Puller, "count", &Echo { text: "".into() }, &key)
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(count.load(Ordering::SeqCst), 1);
    let other = RequestOptions::mutating(Duration::from_secs(5));
    let c: u32 = bus
        .call(Service::Puller, "count", &Echo { text: "".into() }, &other)
        .await
        .unwrap();
    assert_eq!(c, 2);

    // A handler slower than the timeout: the error says the outcome is unknown.
    let slow = RequestOptions::timeout(Duration::from_millis(10));
    let e = bus
        .call::<_, u32>(Service::Puller, "count", &Echo { text: "".into() }, &slow)
        .await
        .unwrap_err();
    assert!(matches!(e, BusError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("unknown"), "{e}");

    ctx.shutdown.cancel();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn events_are_deduplicated_by_id() {
    let nats = NatsServer::start();
    let bus = nats.bus("n1").await;
    let ev = bus.event(
        "image",
        "pulled",
        "busybox",
        attrs! {"digest" => "sha256:x"},
    );
    bus.publish_event(&ev).await.unwrap();
    bus.publish_event(&ev).await.unwrap();
    let mut stream = bus
        .jetstream()
        .get_stream(berth_proto::subjects::EVENTS_STREAM)
        .await
        .unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1, "a re-published event id is dropped");
}

#[tokio::test]
async fn services_reconnect_after_server_restart() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let ctx = nats.context("n1", dir.path()).await;
    let server = {
        let ctx = ctx.clone();
        let r = echo_router(Arc::new(AtomicU32::new(0)));
        tokio::spawn(async move { serve(&ctx, Service::Supervisor, r).await })
    };
    let bus = nats.bus("n1").await;
    let o = RequestOptions::timeout(Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _: Echo = bus
        .call(Service::Supervisor, "echo", &Echo { text: "a".into() }, &o)
        .await
        .unwrap();

    nats.restart();
    let mut ok = false;
    for _ in 0..100 {
        if bus
            .call::<_, Echo>(Service::Supervisor, "echo", &Echo { text: "b".into() }, &o)
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "service answers again after the server came back");
    ctx.shutdown.cancel();
    server.await.unwrap().unwrap();
}

//! The puller against registries that misbehave, through a [`FaultFront`] in front of a real
//! registry: an HTTPS registry that redirects to plain HTTP (refused unless the registry is
//! marked insecure), manifests served with a media type that is not a manifest's, and requests
//! of every kind (ping, token, manifest, config, layer) that fail a few times (5xx, cut
//! answers, 429 with `Retry-After`) or for good (the error names the URL, the status and the
//! attempts; a final 403 is not retried).

use berth_proto::ErrorCode;
use berth_tests::images::{Compression, Format, Layout};
use berth_tests::registry::{Fault, FaultFront, Kind, Registry, TestTls};
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

use berth_tests::puller::PullerEnv;

async fn start(settings: &str) -> PullerEnv {
    PullerEnv::start("berth-registry-faults-", "", settings).await
}

/// A registry (behind a token server when `token` is set) holding busybox as
/// `berth/<repo>:v1`, in `format`.
fn registry_with_busybox(repo: &str, token: bool, format: Format) -> Registry {
    let reg = if token {
        Registry::start_with_token("dora", "doras-pw", 300)
    } else {
        Registry::start()
    };
    let layout = Layout::new();
    layout.busybox("v1", "amd64");
    layout.push(
        "v1",
        &format!("{}/berth/{repo}:v1", reg.host()),
        format,
        Compression::Gzip,
        reg.creds_arg().as_deref(),
    );
    reg
}

#[tokio::test]
async fn https_redirect_to_plain_http_is_refused_unless_insecure() {
    let reg = registry_with_busybox("downgrade", false, Format::Oci);
    let tls = TestTls::new();
    let front = FaultFront::start(&reg, Some(&tls)).await;
    // Where the redirects lead: plain HTTP, counting what reaches it.
    let plain = FaultFront::start(&reg, None).await;
    let reference = format!("{}/berth/downgrade:v1", front.host());
    // A loopback registry is insecure by default: this one is marked secure, with our CA.
    let secure = format!(
        "max_attempts = 3\nretry_backoff_ms = 20\n[registry.\"{}\"]\ninsecure = false\nca_file = {:?}\n",
        front.host(),
        tls.ca_file()
    );
    let env = start(&secure).await;

    // A manifest redirected to plain HTTP.
    front.script(
        Kind::Manifest,
        vec![Fault::Redirect(plain.origin())],
        Fault::Pass,
    );
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e}");
    let from = format!("{}/v2/berth/downgrade/manifests/v1", front.origin());
    let to = format!("{}/v2/berth/downgrade/manifests/v1", plain.origin());
    assert!(
        e.message.contains(&format!("redirect from {from} to {to}")),
        "names the redirect: {e}"
    );
    assert!(
        e.message.contains("insecure = true"),
        "says how to allow it: {e}"
    );
    assert_eq!(
        front.seen(Kind::Manifest),
        1,
        "a refused redirect is not retried"
    );
    assert_eq!(
        plain.seen(Kind::Manifest),
        0,
        "nothing was asked over plain HTTP"
    );
    env.assert_empty();

    // Blobs redirected to plain HTTP (the manifest comes over HTTPS).
    front.script(Kind::Blob, vec![], Fault::Redirect(plain.origin()));
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e}");
    assert!(
        e.message.contains(&format!(
            "redirect from {}/v2/berth/downgrade/blobs/sha256:",
            front.origin()
        )) && e.message.contains(&format!(
            " to {}/v2/berth/downgrade/blobs/sha256:",
            plain.origin()
        )),
        "names the redirect: {e}"
    );
    assert_eq!(
        plain.seen(Kind::Blob),
        0,
        "nothing was asked over plain HTTP"
    );
    env.assert_empty();

    // Marked insecure: the same redirects are followed.
    env.settings(&format!(
        "max_attempts = 3\nretry_backoff_ms = 20\n[registry.\"{}\"]\ninsecure = true\n",
        front.host()
    ));
    let r = env.pull(&reference).await;
    env.assert_complete(&r);
    assert_eq!(
        plain.seen(Kind::Blob),
        1 + r.layers.len(),
        "the config and each layer came over plain HTTP"
    );
}

#[tokio::test]
async fn manifest_served_with_a_wrong_media_type_is_refused() {
    // Docker schema 2: its body has a mediaType (umoci's OCI manifests have none).
    let reg = registry_with_busybox("mediatype", false, Format::DockerV2s2);
    let front = FaultFront::start(&reg, None).await;
    let reference = format!("{}/berth/mediatype:v1", front.host());
    let env = start("max_attempts = 3\nretry_backoff_ms = 20\n").await;

    front.script(
        Kind::Manifest,
        vec![Fault::ContentType("application/json".into())],
        Fault::Pass,
    );
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    assert!(
        e.message.starts_with(&format!("{reference}: ")),
        "names the reference: {e}"
    );
    assert!(
        e.message.contains("media type \"application/json\""),
        "names the type received: {e}"
    );
    assert_eq!(front.seen(Kind::Manifest), 1, "not retried");
    env.assert_empty();

    // A manifest type in the header that the body's mediaType contradicts.
    front.script(
        Kind::Manifest,
        vec![Fault::ContentType(OCI_MANIFEST.into())],
        Fault::Pass,
    );
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unsupported, "{e}");
    assert!(
        e.message
            .contains(&format!("served the manifest as \"{OCI_MANIFEST}\""))
            && e.message
                .contains(&format!("mediaType field says \"{DOCKER_MANIFEST}\"")),
        "names both types: {e}"
    );
    env.assert_empty();

    // Served as what it is: pulled.
    let r = env.pull(&reference).await;
    assert_eq!(r.media_type, DOCKER_MANIFEST);
    env.assert_complete(&r);
}

#[tokio::test]
async fn every_kind_of_request_is_retried_until_it_passes() {
    let reg = registry_with_busybox("flaky", true, Format::Oci);
    let front = FaultFront::start(&reg, None).await;
    let reference = format!("{}/berth/flaky:v1", front.host());
    let env = start("max_attempts = 4\nretry_backoff_ms = 20\n").await;
    env.login(&front.host(), "dora", "doras-pw");

    front.script(Kind::Ping, vec![Fault::Status(503, None)], Fault::Pass);
    front.script(
        Kind::Token,
        vec![Fault::Status(500, None), Fault::Truncate],
        Fault::Pass,
    );
    front.script(
        Kind::Manifest,
        vec![Fault::Status(502, None), Fault::Truncate],
        Fault::Pass,
    );
    // The config comes first, alone: 500, then cut, then whole. Then the layers: the first
    // answer is cut (that layer resumes with a Range request), the next is a 429 asking for
    // a 1 s pause.
    front.script(
        Kind::Blob,
        vec![
            Fault::Status(500, None),
            Fault::Truncate,
            Fault::Pass,
            Fault::Truncate,
            Fault::Status(429, Some(1)),
        ],
        Fault::Pass,
    );
    let tokens_before = reg.tokens_issued(); // the push's
    let began = std::time::Instant::now();
    let r = env.pull(&reference).await;
    env.assert_complete(&r);
    assert!(env.store.ingests().unwrap().is_empty());
    assert_eq!(front.seen(Kind::Ping), 2, "ping: 503, then answered");
    assert_eq!(front.seen(Kind::Token), 3, "token: 500, cut, then issued");
    assert_eq!(
        front.seen(Kind::Manifest),
        3,
        "manifest: 502, cut, then whole"
    );
    assert_eq!(
        front.seen(Kind::Blob),
        3 + r.layers.len() + 2,
        "config three times, each layer once, plus a resume and a retry after the 429"
    );
    assert!(front.ranged(Kind::Blob) >= 1, "the cut layer was resumed");
    assert!(
        began.elapsed() >= Duration::from_secs(1),
        "the 429's Retry-After was waited for"
    );
    assert_eq!(
        reg.tokens_issued() - tokens_before,
        2,
        "the token of the cut answer, then one for the whole pull"
    );
}

#[tokio::test]
async fn a_request_that_always_fails_names_url_status_and_attempts() {
    let reg = registry_with_busybox("broken", false, Format::Oci);
    let front = FaultFront::start(&reg, None).await;
    let reference = format!("{}/berth/broken:v1", front.host());
    let env = start("max_attempts = 3\nretry_backoff_ms = 20\n").await;

    front.script(Kind::Manifest, vec![], Fault::Status(503, None));
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    let url = format!("{}/v2/berth/broken/manifests/v1", front.origin());
    assert!(e.message.contains(&format!("{url} answered 503")), "{e}");
    assert!(e.message.contains("gave up after 3 attempts"), "{e}");
    assert_eq!(front.seen(Kind::Manifest), 3);
    env.assert_empty();

    // A final answer: one attempt, and the error says it was not retried.
    front.script(Kind::Manifest, vec![], Fault::Pass);
    front.script(Kind::Blob, vec![], Fault::Status(403, None));
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
    assert!(
        e.message
            .contains(&format!("{}/v2/berth/broken/blobs/sha256:", front.origin()))
            && e.message.contains("answered 403")
            && e.message.contains("not retried"),
        "{e}"
    );
    assert_eq!(front.seen(Kind::Blob), 1, "a 403 is not retried");
    env.assert_empty();
}

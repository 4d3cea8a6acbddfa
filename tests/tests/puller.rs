//! The puller against a real registry (Debian's docker-registry) with images built by umoci and
//! pushed by skopeo: tags and digests, OCI and Docker formats, gzip/zstd/plain layers, indexes,
//! Basic auth, Bearer tokens (one expiring mid-pull), a real credential helper, corrupted blobs,
//! a registry killed mid-pull, mirrors, and the errors people see.

use berth_bus::{Bus, BusError, RequestOptions};
use berth_proto::puller::{
    LoginReply, LoginRequest, PullReply, PullRequest, ResolveReply, ResolveRequest,
};
use berth_proto::{ErrorCode, Event, Service};
use berth_store::{ContentStore, Digest};
use berth_tests::images::{self, Compression, Format, Layout};
use berth_tests::registry::Registry;
use futures::StreamExt;
use std::path::PathBuf;
use std::time::Duration;

use berth_tests::puller::PullerEnv as Env;

/// Settings of every pull here: quick retries, two attempts.
const BASE: &str = "retry_backoff_ms = 50\nmax_attempts = 2\n";

async fn start() -> Env {
    Env::start("berth-puller-test-", BASE, "").await
}

async fn start_with(settings: &str) -> Env {
    Env::start("berth-puller-test-", BASE, settings).await
}

fn busybox_layout(tag: &str) -> Layout {
    let l = Layout::new();
    l.busybox(tag, "amd64");
    l
}

async fn events(bus: &Bus) -> async_nats::Subscriber {
    bus.client()
        .subscribe("berth.v1.events.n1.image.>")
        .await
        .unwrap()
}

#[tokio::test]
async fn pull_by_tag_and_by_digest_with_progress_events() {
    let reg = Registry::start();
    let layout = busybox_layout("v1");
    let reference = format!("{}/berth/busybox:v1", reg.host());
    layout.push("v1", &reference, Format::Oci, Compression::Gzip, None);
    let expected = images::inspect_digest(&reference, None);

    let env = start().await;
    let mut sub = events(&env.bus).await;
    let r = env
        .pull_with(&reference, None, Some("pull-one"))
        .await
        .unwrap();
    assert_eq!(r.reference, reference);
    assert_eq!(r.digest, expected, "the digest skopeo sees");
    assert_eq!(r.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(r.platform, "linux/amd64");
    assert_eq!(r.layers.len(), 2);
    assert!(r.downloaded);
    env.assert_complete(&r);
    // The stored layers are the bytes skopeo pushed.
    for l in &r.layers {
        assert_eq!(
            std::fs::read(env.store.blob_path(&l.parse().unwrap())).unwrap(),
            layout.blob(l)
        );
    }
    assert!(
        env.store.ingests().unwrap().is_empty(),
        "no download left in ingest/"
    );

    // Progress events name the pull; the last one has every byte; then `pulled`.
    let mut last_progress = None;
    let mut pulled = None;
    while pulled.is_none() {
        let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("events arrive")
            .unwrap();
        let ev: Event = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(ev.name, reference);
        assert_eq!(ev.attrs["pull_id"], "pull-one");
        match ev.action.as_str() {
            "pulling" => last_progress = Some(ev),
            "pulled" => pulled = Some(ev),
            other => panic!("unexpected event {other}"),
        }
    }
    let p = last_progress.expect("at least one progress event");
    assert_eq!(p.attrs["done"], p.attrs["total"]);
    assert_eq!(p.attrs["total"].as_u64().unwrap(), r.size);
    assert_eq!(p.attrs["layers"].as_array().unwrap().len(), 2);
    assert_eq!(pulled.unwrap().attrs["digest"], r.digest.as_str());

    // Again: idempotent, nothing downloaded.
    let again = env.pull(&reference).await;
    assert_eq!(again.digest, r.digest);
    assert!(!again.downloaded);

    // By digest, with the registry gone: served from the store.
    let mut reg = reg;
    reg.kill();
    let by_digest = format!("{}/berth/busybox@{}", reg.host(), r.digest);
    let d = env.pull(&by_digest).await;
    assert_eq!(d.digest, r.digest);
    assert!(!d.downloaded);
    assert_eq!(
        env.store.get_ref(&by_digest).unwrap(),
        Some(r.digest.parse().unwrap())
    );
}

#[tokio::test]
async fn pull_by_digest_from_registry() {
    let reg = Registry::start();
    let layout = busybox_layout("v1");
    let reference = format!("{}/berth/busybox:v1", reg.host());
    layout.push("v1", &reference, Format::Oci, Compression::Gzip, None);
    let digest = images::inspect_digest(&reference, None);
    let env = start().await;
    let by_digest = format!("{}/berth/busybox@{digest}", reg.host());
    let r = env.pull(&by_digest).await;
    assert_eq!(r.digest, digest);
    assert!(r.downloaded);
    env.assert_complete(&r);
    // A digest the repository does not have.
    let other = format!("{}/berth/busybox@sha256:{}", reg.host(), "0".repeat(64));
    let e = env.pull_err(&other, None).await;
    assert_eq!(e.code, ErrorCode::NotFound, "{e}");
}

#[tokio::test]
async fn docker_v2s2_zstd_and_uncompressed_layers() {
    let reg = Registry::start();
    let layout = busybox_layout("v1");
    let env = start().await;
    let cases = [
        (
            "v2s2",
            Format::DockerV2s2,
            Compression::Gzip,
            "application/vnd.docker.distribution.manifest.v2+json",
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            &[0x1f, 0x8b][..],
        ),
        (
            "zstd",
            Format::Oci,
            Compression::Zstd,
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.layer.v1.tar+zstd",
            &[0x28, 0xb5, 0x2f, 0xfd][..],
        ),
        (
            "plain",
            Format::Oci,
            Compression::None,
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.oci.image.layer.v1.tar",
            &b"ustar"[..],
        ),
    ];
    for (repo, format, comp, manifest_type, layer_type, magic) in cases {
        let reference = format!("{}/berth/{repo}:v1", reg.host());
        layout.push("v1", &reference, format, comp, None);
        let r = env.pull(&reference).await;
        assert_eq!(r.media_type, manifest_type, "{repo}");
        assert_eq!(r.digest, images::inspect_digest(&reference, None), "{repo}");
        env.assert_complete(&r);
        let m = env.manifest(&r.digest);
        for l in m["layers"].as_array().unwrap() {
            assert_eq!(l["mediaType"], layer_type, "{repo}");
            let bytes = std::fs::read(
                env.store
                    .blob_path(&l["digest"].as_str().unwrap().parse().unwrap()),
            )
            .unwrap();
            // gzip and zstd magic numbers at 0; a tar's "ustar" at 257.
            let at = if magic == b"ustar" { 257 } else { 0 };
            assert_eq!(&bytes[at..at + magic.len()], magic, "{repo}");
        }
    }
}

#[tokio::test]
async fn index_resolves_to_the_platform() {
    let reg = Registry::start();
    let layout = Layout::new();
    layout.busybox("amd", "amd64");
    layout.busybox("arm", "arm64");
    let index_digest = layout.index("multi", &[("amd", "amd64"), ("arm", "arm64")]);
    let reference = format!("{}/berth/multi:v1", reg.host());
    layout.push("multi", &reference, Format::Oci, Compression::Gzip, None);
    assert_eq!(images::inspect_digest(&reference, None), index_digest);

    let env = start().await;
    let amd = env.pull(&reference).await;
    assert_eq!(
        amd.digest,
        layout.descriptor("amd").0,
        "the host platform by default"
    );
    assert_eq!(amd.index_digest.as_deref(), Some(index_digest.as_str()));
    assert_eq!(amd.platform, "linux/amd64");
    env.assert_complete(&amd);
    assert!(
        env.store.has(&index_digest.parse().unwrap()),
        "the index is kept"
    );

    let arm = env
        .pull_with(&reference, Some("linux/arm64"), None)
        .await
        .unwrap();
    assert_eq!(arm.digest, layout.descriptor("arm").0);
    assert_eq!(arm.platform, "linux/arm64");
    assert_ne!(arm.layers, amd.layers);

    let e = env.pull_err(&reference, Some("linux/s390x")).await;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(
        e.message.contains("linux/s390x") && e.message.contains("linux/arm64"),
        "{e}"
    );

    let e = env.pull_err(&reference, Some("linux")).await;
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("os/arch"), "{e}");

    // By the index digest, for a platform: from the store, no download.
    let by_index = format!("{}/berth/multi@{index_digest}", reg.host());
    let r = env
        .pull_with(&by_index, Some("linux/arm64"), None)
        .await
        .unwrap();
    assert_eq!(r.digest, arm.digest);
    assert!(!r.downloaded);

    // resolve: the same answer without writing.
    let res: ResolveReply = env
        .bus
        .call(
            Service::Puller,
            "resolve",
            &ResolveRequest {
                reference: reference.clone(),
                platform: Some("linux/arm64".into()),
            },
            &RequestOptions::timeout(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    assert_eq!(res.digest, arm.digest);
    assert_eq!(res.index_digest.as_deref(), Some(index_digest.as_str()));
    assert_eq!(res.layers.len(), 2);
}

#[tokio::test]
async fn basic_auth_right_and_wrong_password() {
    let reg = Registry::start_with_auth("alice", "right-password");
    let layout = busybox_layout("v1");
    let reference = format!("{}/berth/private:v1", reg.host());
    layout.push(
        "v1",
        &reference,
        Format::Oci,
        Compression::Gzip,
        reg.creds_arg().as_deref(),
    );
    let env = start().await;

    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
    assert!(e.message.contains("berth login"), "{e}");

    env.login(&reg.host(), "alice", "wrong-password");
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
    assert!(e.message.contains("alice"), "{e}");
    assert!(env.store.list().unwrap().is_empty());

    env.login(&reg.host(), "alice", "right-password");
    let r = env.pull(&reference).await;
    env.assert_complete(&r);

    // The login verb checks credentials against the registry.
    let o = RequestOptions::timeout(Duration::from_secs(30));
    let ok: LoginReply = env
        .bus
        .call(
            Service::Puller,
            "login",
            &LoginRequest {
                server: reg.host(),
                username: "alice".into(),
                password: "right-password".into(),
            },
            &o,
        )
        .await
        .unwrap();
    assert_eq!(ok.server, reg.host());
    let e = env
        .bus
        .call::<_, LoginReply>(
            Service::Puller,
            "login",
            &LoginRequest {
                server: reg.host(),
                username: "alice".into(),
                password: "nope".into(),
            },
            &o,
        )
        .await
        .unwrap_err();
    assert_eq!(e.remote().unwrap().code, ErrorCode::Unauthorized);
}

#[tokio::test]
async fn corrupted_blob_is_refused_and_nothing_is_stored() {
    let reg = Registry::start();
    let layout = busybox_layout("v1");
    let reference = format!("{}/berth/corrupt:v1", reg.host());
    layout.push("v1", &reference, Format::Oci, Compression::Gzip, None);
    let m = images::inspect_raw(&reference, None);
    // The busybox layer: the largest.
    let layer = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let path = reg.blob_data_path(&layer);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let env = start().await;
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(e.message.contains(&layer), "names the blob: {e}");
    assert!(
        e.message.contains("expected") && e.message.contains("got"),
        "{e}"
    );
    let d: Digest = layer.parse().unwrap();
    assert!(!env.store.has(&d));
    assert!(!env.store.blob_path(&d).exists());
    assert!(
        env.store.ingests().unwrap().iter().all(|(x, _)| x != &d),
        "ingest cleaned"
    );
    assert!(
        env.store.refs().unwrap().is_empty(),
        "no reference recorded"
    );
    let manifest_digest = images::inspect_digest(&reference, None);
    assert!(
        !env.store.has(&manifest_digest.parse().unwrap()),
        "no manifest stored"
    );
}

/// A layout with one image whose second layer is `mb` MiB of random bytes.
fn big_layout(mb: usize) -> Layout {
    let l = Layout::new();
    let base = l.dir.path().join("base");
    images::busybox_rootfs(&base);
    let big = l.dir.path().join("big");
    images::random_file(&big.join("data/blob"), mb << 20);
    l.build("big", "amd64", &[&base, &big]);
    l
}

/// The largest layer of a pushed image.
fn largest_layer(reference: &str) -> Digest {
    let m = images::inspect_raw(reference, None);
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A pull of `reference` running in the background.
fn spawn_pull(bus: &Bus, reference: &str) -> tokio::task::JoinHandle<Result<PullReply, BusError>> {
    let (bus, reference) = (bus.clone(), reference.to_string());
    tokio::spawn(async move {
        bus.call::<_, PullReply>(
            Service::Puller,
            "pull",
            &PullRequest {
                reference,
                platform: None,
                pull_id: None,
            },
            &RequestOptions::timeout(Duration::from_secs(120)),
        )
        .await
    })
}

/// Wait until the download of `blob` has written bytes.
async fn wait_partial(store: &ContentStore, blob: &Digest) {
    for _ in 0..20_000 {
        if store
            .ingests()
            .unwrap()
            .iter()
            .any(|(d, n)| d == blob && *n > 0)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("the download never started");
}

#[tokio::test]
async fn registry_killed_mid_pull_fails_cleanly_then_a_second_pull_succeeds() {
    let mut reg = Registry::start();
    let layout = big_layout(64);
    let reference = format!("{}/berth/big:v1", reg.host());
    layout.push("big", &reference, Format::Oci, Compression::Gzip, None);
    let big = largest_layer(&reference);
    let env = start().await;
    let pull = spawn_pull(&env.bus, &reference);
    wait_partial(&env.store, &big).await;
    reg.pause();
    reg.kill();
    let e = pull.await.unwrap().unwrap_err();
    let e = e.remote().unwrap().clone();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(e.message.contains(&reg.host()), "{e}");
    assert!(!env.store.has(&big), "no partial blob is visible");
    let partial = env.store.ingests().unwrap();
    assert!(
        partial.iter().any(|(d, n)| d == &big && *n > 0),
        "the partial download is kept: {partial:?}"
    );
    assert!(env.store.refs().unwrap().is_empty());

    reg.restart();
    let r = env.pull(&reference).await;
    env.assert_complete(&r);
    assert!(env.store.ingests().unwrap().is_empty());
}

/// The layer-store's `gc` while a pull is half way: the pull's lease keeps the layers it
/// has committed (nothing refers to them until the manifest is stored) and its partial
/// download; the pull then completes with every blob in place, and leaves no lease behind.
#[tokio::test]
async fn gc_during_a_pull_takes_nothing_from_it() {
    let reg = Registry::start();
    let layout = big_layout(64);
    let reference = format!("{}/berth/big:v1", reg.host());
    layout.push("big", &reference, Format::Oci, Compression::Gzip, None);
    let big = largest_layer(&reference);
    let m = images::inspect_raw(&reference, None);
    let small: Digest = m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().parse::<Digest>().unwrap())
        .find(|d| d != &big)
        .unwrap();
    // One download at a time, in manifest order: the small base layer is committed before
    // the big one starts.
    let env = start_with("max_concurrent_downloads = 1").await;
    {
        let c = env.ctx.clone();
        tokio::spawn(async move { berth_layer_store::run(c).await });
    }
    let pull = spawn_pull(&env.bus, &reference);
    wait_partial(&env.store, &big).await;
    reg.pause();
    for _ in 0..5000 {
        if env.store.has(&small) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        env.store.has(&small),
        "the small layer is committed while the big one downloads"
    );
    let leases: Vec<_> = std::fs::read_dir(env.ctx.config.data_root.join("leases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(leases.iter().any(|n| n.starts_with("pull-")), "{leases:?}");
    let mut gc: Option<berth_proto::layer_store::GcReply> = None;
    for _ in 0..100 {
        match env
            .bus
            .ask_local::<berth_proto::layer_store::verbs::Gc>(
                &berth_proto::layer_store::GcRequest { all: false },
                &RequestOptions::timeout(Duration::from_secs(10)),
            )
            .await
        {
            Ok(r) => {
                gc = Some(r);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let gc = gc.expect("the layer-store answers gc");
    assert_eq!(gc.blobs_removed, 0, "{gc:?}");
    assert!(env.store.has(&small));
    assert!(env
        .store
        .ingests()
        .unwrap()
        .iter()
        .any(|(d, n)| d == &big && *n > 0));
    reg.resume();
    let r = pull.await.unwrap().unwrap();
    env.assert_complete(&r);
    let left: Vec<_> = std::fs::read_dir(env.ctx.config.data_root.join("leases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn registry_killed_and_restarted_during_one_pull_resumes() {
    let mut reg = Registry::start();
    let layout = big_layout(64);
    let reference = format!("{}/berth/big:v1", reg.host());
    layout.push("big", &reference, Format::Oci, Compression::Gzip, None);
    let big = largest_layer(&reference);
    let env = start_with("").await;
    env.settings("");
    std::fs::write(
        env.ctx.config.data_root.join("registries.toml"),
        format!(
            "docker_config = {:?}\nretry_backoff_ms = 400\nmax_attempts = 6\n",
            env.docker_config()
        ),
    )
    .unwrap();
    let pull = spawn_pull(&env.bus, &reference);
    wait_partial(&env.store, &big).await;
    reg.pause();
    reg.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!env.store.has(&big));
    reg.restart();
    let r = pull
        .await
        .unwrap()
        .expect("the pull resumes after the registry is back");
    env.assert_complete(&r);
}

#[tokio::test]
async fn unknown_tag_missing_repository_and_bad_references() {
    let reg = Registry::start();
    let layout = busybox_layout("v1");
    layout.push(
        "v1",
        &format!("{}/berth/busybox:v1", reg.host()),
        Format::Oci,
        Compression::Gzip,
        None,
    );
    let env = start().await;

    let e = env
        .pull_err(&format!("{}/berth/busybox:nope", reg.host()), None)
        .await;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(
        e.message,
        format!(
            "manifest nope not found in repository berth/busybox on {}",
            reg.host()
        )
    );
    let e = env
        .pull_err(&format!("{}/berth/none:v1", reg.host()), None)
        .await;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert_eq!(
        e.message,
        format!("repository berth/none does not exist on {}", reg.host())
    );

    let e = env.pull_err("Busy Box", None).await;
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert!(e.message.contains("\"Busy Box\""), "{e}");

    // A port nobody listens on.
    let dead = format!("127.0.0.1:{}/x:y", berth_tests::free_port());
    let e = env.pull_err(&dead, None).await;
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert!(e.message.contains("cannot connect"), "{e}");
    assert!(env.store.list().unwrap().is_empty());
}

#[tokio::test]
async fn mirrors_are_tried_first_and_settings_reload_without_restart() {
    let origin = Registry::start();
    let mirror = Registry::start();
    let layout = busybox_layout("v1");
    // Only the mirror has the image.
    layout.push(
        "v1",
        &format!("{}/berth/m:v1", mirror.host()),
        Format::Oci,
        Compression::Gzip,
        None,
    );
    let reference = format!("{}/berth/m:v1", origin.host());
    let env = start().await;
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::NotFound);

    env.settings(&format!(
        "[registry.\"{}\"]\nmirrors = [\"http://127.0.0.1:{}\", \"http://{}\"]\n",
        origin.host(),
        berth_tests::free_port(), // a dead mirror first: skipped
        mirror.host()
    ));
    let r = env.pull(&reference).await;
    assert_eq!(r.reference, reference);
    env.assert_complete(&r);

    // A mirror without the image: the origin answers.
    let layout2 = busybox_layout("v2");
    layout2.push(
        "v2",
        &format!("{}/berth/m:v2", origin.host()),
        Format::Oci,
        Compression::Gzip,
        None,
    );
    let r = env.pull(&format!("{}/berth/m:v2", origin.host())).await;
    env.assert_complete(&r);

    env.settings("max_concurrent_downloads = 0\n");
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::FailedPrecondition);
    assert!(
        e.message.contains("registries.toml") && e.message.contains("between 1 and 64"),
        "{e}"
    );
}

#[tokio::test]
async fn concurrent_pulls_of_one_image_share_the_store() {
    let reg = Registry::start();
    let layout = big_layout(16);
    let reference = format!("{}/berth/big:v1", reg.host());
    layout.push("big", &reference, Format::Oci, Compression::Gzip, None);
    let env = start().await;
    let (a, b) = tokio::join!(
        env.pull_with(&reference, None, None),
        env.pull_with(&reference, None, None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.digest, b.digest);
    env.assert_complete(&a);
    assert!(env.store.ingests().unwrap().is_empty());
}

/// A registry behind htpasswd Basic auth holding busybox as `<repo>:v1`; and that reference.
fn pushed_behind_basic_auth(user: &str, password: &str, repo: &str) -> (Registry, String) {
    let reg = Registry::start_with_auth(user, password);
    let reference = format!("{}/{repo}:v1", reg.host());
    busybox_layout("v1").push(
        "v1",
        &reference,
        Format::Oci,
        Compression::Gzip,
        reg.creds_arg().as_deref(),
    );
    (reg, reference)
}

/// `berth login`, `berth pull` (plain lines when not a terminal, `-q`), `berth logout`
/// through a real berthd.
#[test]
fn cli_login_pull_logout() {
    use berth_tests::daemon::{stderr, stdout, with_input, Berthd};

    let (reg, reference) = pushed_behind_basic_auth("bob", "pw-of-bob", "berth/cli");

    let d = Berthd::start();
    let docker_dir = d.dir.path().join("docker");
    std::fs::write(
        d.data_root().join("registries.toml"),
        format!("docker_config = {:?}\n", docker_dir.join("config.json")),
    )
    .unwrap();
    let berth = |args: &[&str], stdin: &str| {
        let mut c = d.command(&d.admin_creds(), args);
        c.env("DOCKER_CONFIG", &docker_dir);
        with_input(c, stdin.as_bytes())
    };

    let out = berth(&["pull", &reference], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("berth login"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "one line: {}",
        stderr(&out)
    );

    let out = berth(
        &["login", &reg.host(), "-u", "bob", "--password-stdin"],
        "wrong\n",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("bob"), "{}", stderr(&out));
    assert!(!docker_dir.join("config.json").exists(), "nothing recorded");

    let out = berth(
        &["login", &reg.host(), "-u", "bob", "--password-stdin"],
        "pw-of-bob\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Login Succeeded"));
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(docker_dir.join("config.json")).unwrap()).unwrap();
    assert!(cfg["auths"][reg.host()]["auth"].is_string(), "{cfg}");

    let out = berth(&["pull", &reference], "");
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("Pull complete"), "{text}");
    assert!(text.contains("Total: "), "{text}");
    let digest = images::inspect_digest(&reference, reg.creds_arg().as_deref());
    assert!(text.contains(&format!("Digest: {digest}")), "{text}");
    assert!(text.contains("Downloaded newer image"), "{text}");

    let out = berth(&["pull", "-q", &reference], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), reference);

    let out = berth(&["pull", &format!("{}/berth/cli:nope", reg.host())], "");
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "berth: manifest nope not found in repository berth/cli on {}",
            reg.host()
        )
    );

    let out = berth(&["logout", &reg.host()], "");
    assert!(
        stdout(&out).contains("Removing login credentials"),
        "{}",
        stdout(&out)
    );
    let out = berth(&["logout", &reg.host()], "");
    assert!(stdout(&out).contains("Not logged in"), "{}", stdout(&out));
}

#[tokio::test]
async fn redirects_to_blob_storage_carry_no_credentials() {
    use base64_free::basic;
    let reg = Registry::start_with_auth("carol", "carols-pw");
    let layout = busybox_layout("v1");
    layout.push(
        "v1",
        &format!("{}/berth/redir:v1", reg.host()),
        Format::Oci,
        Compression::Gzip,
        reg.creds_arg().as_deref(),
    );
    let front =
        berth_tests::registry::BlobRedirector::start(reg.port, Some(basic("carol", "carols-pw")))
            .await;
    let env = start().await;
    env.login(&front.host(), "carol", "carols-pw");
    let r = env.pull(&format!("{}/berth/redir:v1", front.host())).await;
    env.assert_complete(&r);
    assert!(
        front.storage_hits() >= 3,
        "config and both layers came from storage"
    );
    assert_eq!(
        front.leaked_auth(),
        0,
        "no credentials sent to the other host"
    );
}

/// `Basic base64(user:password)` without a base64 crate in the tests: `base64` (coreutils).
mod base64_free {
    pub fn basic(user: &str, password: &str) -> String {
        use std::io::Write;
        let mut c = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(format!("{user}:{password}").as_bytes())
            .unwrap();
        let out = c.wait_with_output().unwrap();
        format!("Basic {}", String::from_utf8(out.stdout).unwrap().trim())
    }
}

#[tokio::test]
async fn bearer_tokens_from_the_registry_token_server() {
    let reg = Registry::start_with_token("dave", "daves-pw", 60);
    let layout = busybox_layout("v1");
    let reference = format!("{}/berth/tok:v1", reg.host());
    layout.push(
        "v1",
        &reference,
        Format::Oci,
        Compression::Gzip,
        reg.creds_arg().as_deref(),
    );
    let env = start().await;

    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");

    env.login(&reg.host(), "dave", "wrong");
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::Unauthorized, "{e}");
    assert!(e.message.contains("token"), "{e}");

    env.login(&reg.host(), "dave", "daves-pw");
    let before = reg.tokens_issued();
    let r = env.pull(&reference).await;
    env.assert_complete(&r);
    assert_eq!(
        reg.tokens_issued() - before,
        1,
        "one token for the whole pull"
    );
}

/// A Bearer token that expires in the middle of a pull: tokens live 2 s (the registry refuses
/// them after that; the client keeps one up to 5 s, as it takes every token to live at least
/// 10 s), blob answers come at 1 MiB/s through a slow front, and the big layer's first answer is
/// cut after 2.5 s. Its Range resume carries the expired token, is refused (401), gets a new
/// token and goes on (206): the pull completes with every blob verified.
#[tokio::test]
async fn bearer_token_expiring_mid_pull_is_renewed() {
    let reg = Registry::start_with_token("erin", "erins-pw", 60);
    let layout = big_layout(6);
    let pushed = format!("{}/berth/slow:v1", reg.host());
    layout.push(
        "big",
        &pushed,
        Format::Oci,
        Compression::Gzip,
        reg.creds_arg().as_deref(),
    );
    let front = berth_tests::registry::SlowFront::start(
        reg.port,
        1 << 20,
        Some(Duration::from_millis(2500)),
    )
    .await;
    reg.set_token_ttl(2);
    let env = start().await;
    env.login(&front.host(), "erin", "erins-pw");
    let before = reg.tokens_issued();
    let started = std::time::Instant::now();
    let r = env.pull(&format!("{}/berth/slow:v1", front.host())).await;
    let took = started.elapsed();
    env.assert_complete(&r);
    assert!(env.store.ingests().unwrap().is_empty());
    assert!(
        took > Duration::from_secs(4),
        "the pull outlived its first token: {took:?}"
    );
    assert!(
        front.refused() >= 1,
        "the registry refused the expired token (took {took:?})"
    );
    assert!(
        front.partial() >= 1,
        "the cut download was resumed with a Range request"
    );
    assert!(
        reg.tokens_issued() - before >= 2,
        "a new token after the refusal: {} issued",
        reg.tokens_issued() - before
    );
}

/// `pass`, the standard Unix password manager, with a throwaway gpg key (no passphrase) in a
/// temp dir: the store of `docker-credential-pass`. The gpg-agent its gpg starts is stopped
/// through `gpgconf` with its own home on Drop.
struct PassStore {
    dir: tempfile::TempDir,
}

impl PassStore {
    fn new() -> PassStore {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("berth-pass-")
            .tempdir()
            .unwrap();
        let s = PassStore { dir };
        std::fs::create_dir(s.gnupg()).unwrap();
        std::fs::set_permissions(s.gnupg(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let run = |c: &mut std::process::Command| {
            let out = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
            assert!(
                out.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        run(s
            .command("gpg")
            .args(["--batch", "--pinentry-mode", "loopback", "--passphrase", ""])
            .args([
                "--quick-gen-key",
                "berth-test",
                "default",
                "default",
                "never",
            ]));
        let keys = run(s
            .command("gpg")
            .args(["--batch", "--with-colons", "--list-secret-keys"]));
        let fpr = keys
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').nth(8))
            .unwrap_or_else(|| panic!("no fingerprint in {keys}"))
            .to_string();
        run(s.command("pass").args(["init", &fpr]));
        s
    }

    fn gnupg(&self) -> PathBuf {
        self.dir.path().join("gnupg")
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// What `pass`, gpg and the helper need to find this store.
    fn env(&self) -> [(&'static str, PathBuf); 2] {
        [
            ("GNUPGHOME", self.gnupg()),
            ("PASSWORD_STORE_DIR", self.store()),
        ]
    }

    fn command(&self, program: &str) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        c.envs(self.env());
        c
    }

    /// `docker-credential-pass list`: `{server: user}`.
    fn list(&self) -> serde_json::Value {
        let out = self
            .command("docker-credential-pass")
            .arg("list")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for PassStore {
    fn drop(&mut self) {
        let _ = self
            .command("gpgconf")
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

/// A credential helper for real: the Docker config says `"credsStore": "pass"`; `berth login`
/// stores through `docker-credential-pass` (config.json keeps no secret), the daemon's puller
/// gets the credentials through it for the pull (the helper's environment is berthd's), and
/// `berth logout` erases them. A `credHelpers` entry wins over `credsStore`, and one naming a
/// helper that is not installed is an error naming the program and the config file.
#[test]
fn cli_login_pull_logout_through_a_credential_helper() {
    use berth_tests::daemon::{stderr, stdout, with_input, Berthd};

    let (reg, reference) = pushed_behind_basic_auth("frank", "pw-of-frank", "berth/helped");

    let pass = PassStore::new();
    let pass_env = pass.env();
    let d = Berthd::start_with_env(&pass_env.each_ref().map(|(k, v)| (*k, v.as_path())));
    let docker_dir = d.dir.path().join("docker");
    let config = docker_dir.join("config.json");
    std::fs::create_dir_all(&docker_dir).unwrap();
    std::fs::write(&config, r#"{"credsStore": "pass"}"#).unwrap();
    std::fs::write(
        d.data_root().join("registries.toml"),
        format!("docker_config = {config:?}\n"),
    )
    .unwrap();
    let berth = |args: &[&str], stdin: &str| {
        let mut c = d.command(&d.admin_creds(), args);
        c.env("DOCKER_CONFIG", &docker_dir).envs(pass.env());
        with_input(c, stdin.as_bytes())
    };
    let read_config = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(&config).unwrap()).unwrap()
    };

    // The helper has nothing yet: anonymous, refused.
    let out = berth(&["pull", &reference], "");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("berth login"), "{}", stderr(&out));

    let out = berth(
        &["login", &reg.host(), "-u", "frank", "--password-stdin"],
        "pw-of-frank\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Login Succeeded"));
    assert!(!stderr(&out).contains("unencrypted"), "{}", stderr(&out));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(!text.contains("pw-of-frank"), "{text}");
    let cfg = read_config();
    assert_eq!(cfg["credsStore"], "pass", "{cfg}");
    assert_eq!(cfg["auths"][reg.host()], serde_json::json!({}), "{cfg}");
    assert_eq!(pass.list()[reg.host()], "frank");

    let out = berth(&["pull", &reference], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = images::inspect_digest(&reference, reg.creds_arg().as_deref());
    assert!(
        stdout(&out).contains(&format!("Digest: {digest}")),
        "{}",
        stdout(&out)
    );

    let out = berth(&["logout", &reg.host()], "");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Removing login credentials"),
        "{}",
        stdout(&out)
    );
    assert!(pass.list().get(reg.host()).is_none(), "{}", pass.list());
    assert!(read_config()["auths"].get(reg.host()).is_none());
    // By tag the registry is asked again, and now refuses.
    let out = berth(&["pull", &reference], "");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("authentication failed") && stderr(&out).contains("berth login"),
        "{}",
        stderr(&out)
    );
    let out = berth(&["logout", &reg.host()], "");
    assert!(stdout(&out).contains("Not logged in"), "{}", stdout(&out));

    // credHelpers for this registry wins over credsStore; its helper is not installed.
    std::fs::write(
        &config,
        format!(
            r#"{{"credsStore": "pass", "credHelpers": {{"{}": "berth-missing"}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    for (args, input) in [
        (vec!["pull", reference.as_str()], ""),
        (
            vec!["login", &reg.host(), "-u", "frank", "--password-stdin"],
            "pw-of-frank\n",
        ),
    ] {
        let out = berth(&args, input);
        assert!(!out.status.success(), "{args:?}");
        let e = stderr(&out);
        assert!(
            e.contains("docker-credential-berth-missing")
                && e.contains(&config.display().to_string()),
            "{args:?}: {e}"
        );
    }
    assert!(pass.list().get(reg.host()).is_none(), "{}", pass.list());
}

/// The error of a missing helper through the bus: `failed_precondition`, naming the program
/// and the config file; `credHelpers` of another registry does not apply.
#[tokio::test]
async fn a_missing_credential_helper_is_a_clear_error() {
    let reg = Registry::start();
    let layout = busybox_layout("v1");
    let reference = format!("{}/berth/open:v1", reg.host());
    layout.push("v1", &reference, Format::Oci, Compression::Gzip, None);
    let env = start().await;
    std::fs::create_dir_all(env.docker_config().parent().unwrap()).unwrap();
    std::fs::write(
        env.docker_config(),
        format!(
            r#"{{"credHelpers": {{"{}": "berth-missing", "other.example": "berth-other"}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let e = env.pull_err(&reference, None).await;
    assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e}");
    assert!(
        e.message.contains("docker-credential-berth-missing")
            && e.message
                .contains(&env.docker_config().display().to_string()),
        "{e}"
    );
    std::fs::write(
        env.docker_config(),
        r#"{"credHelpers": {"other.example": "berth-other"}}"#,
    )
    .unwrap();
    let r = env.pull(&reference).await;
    env.assert_complete(&r);
}

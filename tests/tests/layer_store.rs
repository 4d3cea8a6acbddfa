//! The layer-store against a real nats-server, images made by `umoci` and `skopeo` from
//! `busybox-static`, and the real kernel's overlayfs: prepared root filesystems give exactly
//! the tree `umoci unpack` gives (whiteouts, opaque dirs, hard links, symlinks, setuid,
//! devices, fifos, xattrs, owners), Docker and OCI archives load and save, hostile layers are
//! refused without touching anything outside the data root, and removing everything gives the
//! space back.

use berth_bus::{Bus, RequestOptions};
use berth_proto::layer_store::*;
use berth_proto::{BerthError, Service};
use berth_store::ContentStore;
use berth_tests::images::{busybox_rootfs, Layout};
use berth_tests::layers::{
    assert_same_tree, disk_usage, import_layout, store_image, umoci_unpack, LayerTar, OverlayMount,
};
use berth_tests::nats::NatsServer;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

struct Svc {
    _nats: NatsServer,
    dir: tempfile::TempDir,
    bus: Bus,
    shutdown: tokio_util::sync::CancellationToken,
}

impl Svc {
    async fn start() -> Svc {
        let nats = NatsServer::start();
        let dir = tempfile::Builder::new()
            .prefix("berth-ls-")
            .tempdir()
            .unwrap();
        let ctx = nats.context("n1", dir.path()).await;
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = berth_layer_store::run(ctx).await {
                panic!("layer-store: {e}");
            }
        });
        let bus = nats.bus("n1").await;
        // Wait until it answers.
        for _ in 0..100 {
            if bus
                .ask_local::<berth_proto::layer_store::verbs::Images>(
                    &ImagesRequest {},
                    &RequestOptions::timeout(Duration::from_secs(2)),
                )
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Svc {
            _nats: nats,
            dir,
            bus,
            shutdown,
        }
    }

    fn data_root(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn store(&self) -> ContentStore {
        ContentStore::open(self.data_root().join("content")).unwrap()
    }

    async fn call<Req: serde::Serialize, Rep: serde::de::DeserializeOwned>(
        &self,
        verb: &str,
        req: &Req,
    ) -> Result<Rep, BerthError> {
        self.bus
            .call(
                Service::LayerStore,
                verb,
                req,
                &RequestOptions::timeout(Duration::from_secs(120)),
            )
            .await
            .map_err(|e| {
                e.remote()
                    .cloned()
                    .unwrap_or_else(|| panic!("{verb}: not a service error: {e}"))
            })
    }

    async fn prepare(&self, id: &str, image: &str) -> Result<PrepareReply, BerthError> {
        self.call(
            PREPARE,
            &PrepareRequest {
                container_id: id.into(),
                image: image.into(),
                volatile: false,
            },
        )
        .await
    }

    async fn release(&self, id: &str) {
        let _: serde_json::Value = self
            .call(
                RELEASE,
                &ReleaseRequest {
                    container_id: id.into(),
                },
            )
            .await
            .unwrap_or_else(|e| panic!("release {id}: {e:?}"));
    }
}

impl Drop for Svc {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn set_user_xattr(p: &Path, name: &str, value: &[u8]) {
    let cp = CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings, a value slice.
    let r = unsafe {
        libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {}: {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

/// A busybox image `rich` in `layout` whose layers hold every kind of entry an image may
/// carry, and whiteouts and an opaque dir over earlier layers.
fn rich_image(layout: &Layout) {
    use std::os::unix::fs::{chown, symlink, PermissionsExt};
    let root = layout.dir.path().join("rich");
    let base = root.join("base");
    busybox_rootfs(&base);
    let mk = |p: &str| std::fs::create_dir_all(base.join(p)).unwrap();
    for d in [
        "etc/dir",
        "opt/keep",
        "var/gone/sub",
        "usr/bin",
        "tmp",
        "dev",
        "run",
        "srv",
    ] {
        mk(d);
    }
    std::fs::write(base.join("etc/dir/a"), "a\n").unwrap();
    std::fs::write(base.join("etc/dir/b"), "b\n").unwrap();
    std::fs::write(base.join("opt/keep/x"), "x\n").unwrap();
    std::fs::write(base.join("var/gone/sub/f"), "f\n").unwrap();
    // setuid, setgid, sticky
    std::fs::write(base.join("usr/bin/su"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        base.join("usr/bin/su"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::set_permissions(base.join("srv"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    std::fs::set_permissions(base.join("tmp"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // owner, hard link, symlinks, xattr
    std::fs::write(base.join("srv/owned"), "alice\n").unwrap();
    chown(base.join("srv/owned"), Some(1000), Some(1001)).unwrap();
    std::fs::hard_link(base.join("etc/dir/b"), base.join("etc/b-link")).unwrap();
    symlink("/etc/dir/b", base.join("etc/abs-link")).unwrap();
    symlink("../opt/keep", base.join("etc/rel-link")).unwrap();
    symlink("/nowhere/at/all", base.join("etc/dangling")).unwrap();
    set_user_xattr(&base.join("etc/dir/a"), "user.berth", b"yes");
    // fifo and a character device
    nix::unistd::mkfifo(
        &base.join("run/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &base.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
    layout.build("rich", berth_tests::layers::host_arch(), &[&base]);
    let img = format!("{}:rich", layout.path().display());
    // A whiteout of a file and of a whole directory, then an opaque directory.
    run(Command::new("umoci").args(["insert", "--image", &img, "--whiteout", "/etc/dir/a"]));
    run(Command::new("umoci").args(["insert", "--image", &img, "--whiteout", "/var/gone"]));
    let newkeep = root.join("newkeep");
    std::fs::create_dir_all(&newkeep).unwrap();
    std::fs::write(newkeep.join("z"), "z\n").unwrap();
    run(Command::new("umoci")
        .args(["insert", "--image", &img, "--opaque"])
        .arg(&newkeep)
        .arg("/opt/keep"));
    // A file replaced by a directory in a later layer.
    let later = root.join("later");
    std::fs::create_dir_all(later.join("etc/dir/b")).unwrap();
    std::fs::write(later.join("etc/dir/b/inner"), "inner\n").unwrap();
    run(Command::new("umoci")
        .args(["insert", "--image", &img])
        .arg(&later)
        .arg("/"));
}

fn assert_prepared_matches(reply: &PrepareReply, layout: &Layout, tag: &str) {
    let want = umoci_unpack(&layout.path(), tag);
    let got = OverlayMount::mount(&reply.rootfs);
    assert_same_tree(&got.path(), &want.path().join("bundle/rootfs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_gives_the_tree_umoci_unpacks_and_release_cleans_up() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root (overlay mounts, device nodes, chown)");
        return;
    }
    let svc = Svc::start().await;
    let layout = Layout::new();
    rich_image(&layout);
    let digest = import_layout(
        &svc.store(),
        &layout.path(),
        "rich",
        "localhost:5000/rich:v1",
    );

    let reply = svc.prepare("c1", "localhost:5000/rich:v1").await.unwrap();
    assert_eq!(reply.image_digest, digest);
    assert_eq!(reply.rootfs.lowerdirs.len(), 5, "{:?}", reply.rootfs);
    assert_eq!(reply.config.cmd, vec!["/bin/sh".to_string()]);
    for l in &reply.rootfs.lowerdirs {
        assert!(
            Path::new(l).starts_with(svc.data_root().join("snapshots")),
            "{l} is not a snapshot"
        );
    }
    assert_prepared_matches(&reply, &layout, "rich");

    // The same image by manifest digest and by name@digest: the same snapshots, unpacked once.
    let by_digest = svc.prepare("c2", &digest).await.unwrap();
    assert_eq!(by_digest.rootfs.lowerdirs, reply.rootfs.lowerdirs);
    let by_name = svc
        .prepare("c3", &format!("localhost:5000/rich@{digest}"))
        .await
        .unwrap();
    assert_eq!(by_name.rootfs.lowerdirs, reply.rootfs.lowerdirs);
    assert_ne!(by_name.rootfs.upperdir, reply.rootfs.upperdir);

    // Unknown images are refused by name.
    let e = svc
        .prepare("c4", "localhost:5000/nope:v1")
        .await
        .unwrap_err();
    assert!(e.message.contains("nope"), "{e:?}");

    for (id, r) in [("c1", &reply), ("c2", &by_digest), ("c3", &by_name)] {
        svc.release(id).await;
        assert!(!Path::new(&r.rootfs.upperdir).exists(), "{id}: upper stays");
        assert!(!Path::new(&r.rootfs.workdir).exists(), "{id}: work stays");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_and_oci_archives_load_prepare_and_save() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let svc = Svc::start().await;
    let layout = Layout::new();
    rich_image(&layout);
    let files = tempfile::Builder::new()
        .prefix("berth-archives-")
        .tempdir()
        .unwrap();
    let docker = files.path().join("docker.tar");
    let oci = files.path().join("oci.tar");
    let src = format!("oci:{}:rich", layout.path().display());
    run(Command::new("skopeo")
        .args(["copy", "--quiet", &src])
        .arg(format!("docker-archive:{}:berth/dock:v1", docker.display())));
    run(Command::new("skopeo")
        .args(["copy", "--quiet", &src])
        .arg(format!("oci-archive:{}:berth/oci:v2", oci.display())));

    let r: LoadReply = svc
        .call(
            LOAD,
            &LoadRequest {
                path: docker.display().to_string(),
                tag: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.format, "docker-archive");
    assert_eq!(r.images.len(), 1, "{r:?}");
    assert_eq!(r.images[0].reference, "docker.io/berth/dock:v1");
    let p = svc.prepare("d1", "berth/dock:v1").await.unwrap();
    assert_prepared_matches(&p, &layout, "rich");

    let r: LoadReply = svc
        .call(
            LOAD,
            &LoadRequest {
                path: oci.display().to_string(),
                tag: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(r.format, "oci-archive");
    assert_eq!(r.images.len(), 1, "{r:?}");
    let p2 = svc.prepare("o1", &r.images[0].reference).await.unwrap();
    assert_prepared_matches(&p2, &layout, "rich");

    let images: ImagesReply = svc.call(IMAGES, &ImagesRequest {}).await.unwrap();
    assert!(
        images
            .images
            .iter()
            .any(|i| i.repository == "berth/dock" && i.tag == "v1"),
        "{images:?}"
    );

    // A truncated archive is refused by name, and nothing is recorded.
    let bytes = std::fs::read(&docker).unwrap();
    let cut = files.path().join("cut.tar");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = svc
        .call::<_, LoadReply>(
            LOAD,
            &LoadRequest {
                path: cut.display().to_string(),
                tag: None,
            },
        )
        .await
        .unwrap_err();
    assert!(e.message.contains("cut.tar"), "{e:?}");

    // save, then independent tools read the archive both ways.
    let saved = files.path().join("saved.tar");
    let _: SaveReply = svc
        .call(
            SAVE,
            &SaveRequest {
                images: vec!["berth/dock:v1".into()],
                path: saved.display().to_string(),
            },
        )
        .await
        .unwrap();
    for transport in ["docker-archive", "oci-archive"] {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("{transport}:{}", saved.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo inspect {transport}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The saved archive, unpacked by umoci through skopeo's OCI copy, is still the image.
    let back = files.path().join("back");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("docker-archive:{}", saved.display()))
        .arg(format!("oci:{}:back", back.display())));
    let want = umoci_unpack(&layout.path(), "rich");
    let got = umoci_unpack(&back, "back");
    assert_same_tree(
        &got.path().join("bundle/rootfs"),
        &want.path().join("bundle/rootfs"),
    );

    svc.release("d1").await;
    svc.release("o1").await;
}

/// The canary beside the data root, and a check that it is as it was.
struct Canary {
    path: PathBuf,
    before: (Vec<u8>, u64, u64),
}

impl Canary {
    fn new(dir: &Path) -> Canary {
        let path = dir.join("canary");
        std::fs::write(&path, "untouched\n").unwrap();
        Canary {
            before: Self::state(&path),
            path,
        }
    }

    fn state(p: &Path) -> (Vec<u8>, u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let md = std::fs::symlink_metadata(p).expect("canary exists");
        (std::fs::read(p).unwrap(), md.nlink(), md.ino())
    }

    fn check(&self, case: &str) {
        assert_eq!(
            Self::state(&self.path),
            self.before,
            "{case}: the canary changed"
        );
        let dir = self.path.parent().unwrap();
        for e in std::fs::read_dir(dir).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                ["canary", "data", "run"].contains(&name.as_str()),
                "{case}: {name} appeared beside the data root"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_are_refused_and_nothing_outside_changes() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let svc = Svc::start().await;
    let canary = Canary::new(svc.dir.path());
    let store = svc.store();
    // From a snapshot dir (<data>/snapshots/<tmp>/fs) up to the test dir holding the canary.
    let up = "../../../../canary";
    let canary_abs = canary.path.display().to_string();
    let canary_rel = canary_abs.trim_start_matches('/').to_string();

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            LayerTar::new().file(up, 0o644, b"pwned\n").finish(),
            up,
        ),
        (
            "dotdot-inside-name",
            LayerTar::new()
                .dir("a", 0o755)
                .file("a/../../../../../canary", 0o644, b"pwned\n")
                .finish(),
            "a/../../../../../canary",
        ),
        (
            "symlink-to-root-then-file",
            LayerTar::new()
                .symlink("root", "/")
                .file(&format!("root/{canary_rel}"), 0o644, b"pwned\n")
                .finish(),
            "root/",
        ),
        (
            "relative-symlink-out-then-file",
            LayerTar::new()
                .symlink("up", "../../../..")
                .file("up/canary", 0o644, b"pwned\n")
                .finish(),
            "up/canary",
        ),
        (
            "symlink-out-then-dir",
            LayerTar::new()
                .symlink("up", "../../../..")
                .dir("up/newdir", 0o755)
                .finish(),
            "up/newdir",
        ),
        (
            "hardlink-to-etc-passwd",
            LayerTar::new().hardlink("pw", "/etc/passwd").finish(),
            "pw",
        ),
        (
            "hardlink-to-canary",
            LayerTar::new().hardlink("c", up).finish(),
            "c",
        ),
        (
            "hardlink-through-symlink",
            LayerTar::new()
                .symlink("up", "../../../..")
                .hardlink("c", "up/canary")
                .finish(),
            "c",
        ),
        (
            "escaping-whiteout",
            LayerTar::new()
                .file("../../../../.wh.canary", 0, b"")
                .finish(),
            ".wh.canary",
        ),
        (
            "whiteout-through-symlink",
            LayerTar::new()
                .symlink("up", "../../../..")
                .file("up/.wh.canary", 0, b"")
                .finish(),
            "up/.wh.canary",
        ),
        (
            "overlay-xattr",
            LayerTar::new()
                .dir("d", 0o755)
                .file_with_xattr("d/f", "trusted.overlay.opaque", b"y", b"x")
                .finish(),
            "d/f",
        ),
        (
            "truncated-file",
            {
                let t = LayerTar::new().file("big", 0o644, &[7u8; 4000]).finish();
                t[..512 + 1000].to_vec()
            },
            "big",
        ),
    ];
    for (i, (case, tar, entry)) in cases.iter().enumerate() {
        let reference = format!("localhost:5000/hostile:{case}");
        let (_, layers) = store_image(&store, &reference, std::slice::from_ref(tar));
        let id = format!("h{i}");
        let e = svc
            .prepare(&id, &reference)
            .await
            .err()
            .unwrap_or_else(|| panic!("{case}: the hostile layer was unpacked"));
        assert!(
            e.message.contains(&layers[0]),
            "{case}: the error does not name the layer {}: {e:?}",
            layers[0]
        );
        assert!(
            e.message.contains(entry),
            "{case}: the error does not name the entry {entry}: {e:?}"
        );
        canary.check(case);
        // Nothing looks complete, and the failed unpack left nothing behind.
        let snaps: Vec<_> = std::fs::read_dir(svc.data_root().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(snaps.is_empty(), "{case}: snapshots left: {snaps:?}");
        assert!(
            !svc.data_root()
                .join("containers")
                .join(&id)
                .join("upper")
                .exists(),
            "{case}: an upper dir stays after a failed prepare"
        );
    }

    // An absolute name lands inside the snapshot.
    let reference = "localhost:5000/hostile:absolute";
    store_image(
        &store,
        reference,
        &[LayerTar::new()
            .file(&canary_abs, 0o644, b"inside\n")
            .file("/etc/abs", 0o600, b"abs\n")
            .finish()],
    );
    let p = svc.prepare("abs", reference).await.unwrap();
    canary.check("absolute");
    let lower = Path::new(&p.rootfs.lowerdirs[0]);
    assert_eq!(std::fs::read(lower.join(&canary_rel)).unwrap(), b"inside\n");
    assert_eq!(std::fs::read(lower.join("etc/abs")).unwrap(), b"abs\n");
    svc.release("abs").await;
}

#[test]
fn a_decompression_bomb_stops_at_the_limit() {
    let dir = tempfile::Builder::new()
        .prefix("berth-bomb-")
        .tempdir()
        .unwrap();
    let zeros = vec![0u8; 64 << 20];
    let tar = LayerTar::new().file("big", 0o644, &zeros).finish();
    drop(zeros);
    let plain = dir.path().join("layer.tar");
    std::fs::write(&plain, &tar).unwrap();
    run(Command::new("gzip").arg("-k").arg(&plain));
    let gz = dir.path().join("layer.tar.gz");
    assert!(
        std::fs::metadata(&gz).unwrap().len() < 1 << 20,
        "gzip should shrink zeros"
    );
    let dest = dir.path().join("fs");
    std::fs::create_dir(&dest).unwrap();
    let limit = 8 << 20;
    let e = berth_layer_store::unpack::unpack(
        &gz,
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "sha256:bomb",
        &dest,
        None,
        berth_layer_store::unpack::Limits {
            max_uncompressed: limit,
        },
    )
    .unwrap_err();
    assert!(
        matches!(e, berth_layer_store::unpack::UnpackError::TooLarge { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("sha256:bomb"), "{e}");
    assert!(
        disk_usage(&dest) <= limit + (1 << 20),
        "more than the limit was written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_and_prune_give_every_byte_back() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let svc = Svc::start().await;
    let _: DfReply = svc.call(DF, &DfRequest {}).await.unwrap();
    let empty = disk_usage(&svc.data_root());
    let layout = Layout::new();
    layout.busybox("v1", berth_tests::layers::host_arch());
    import_layout(&svc.store(), &layout.path(), "v1", "berth/bb:v1");
    let p = svc.prepare("r1", "berth/bb:v1").await.unwrap();
    assert!(!p.rootfs.volatile, "{p:?}");
    // A container removed at its exit: its root filesystem comes back volatile, recorded all
    // the same, and released like any other.
    let v: PrepareReply = svc
        .call(
            PREPARE,
            &PrepareRequest {
                container_id: "r2".into(),
                image: "berth/bb:v1".into(),
                volatile: true,
            },
        )
        .await
        .unwrap();
    assert!(v.rootfs.volatile, "{v:?}");
    assert!(svc
        .data_root()
        .join("layer-store/containers/r2.json")
        .is_file());
    svc.release("r2").await;
    assert!(!Path::new(&v.rootfs.upperdir).exists());
    std::fs::write(
        Path::new(&p.rootfs.upperdir).join("written"),
        vec![7u8; 1 << 20],
    )
    .unwrap();
    assert!(disk_usage(&svc.data_root()) > empty + (1 << 20));

    let df: DfReply = svc.call(DF, &DfRequest {}).await.unwrap();
    assert_eq!(df.snapshots.count, 2, "{df:?}");
    assert_eq!(df.containers.count, 1, "{df:?}");

    // In use: refused unless forced.
    let e = svc
        .call::<_, RemoveReply>(
            REMOVE,
            &RemoveRequest {
                image: "berth/bb:v1".into(),
                force: false,
            },
        )
        .await
        .unwrap_err();
    assert!(
        e.message.contains("r1") || e.message.contains("use"),
        "{e:?}"
    );

    svc.release("r1").await;
    let r: RemoveReply = svc
        .call(
            REMOVE,
            &RemoveRequest {
                image: "berth/bb:v1".into(),
                force: false,
            },
        )
        .await
        .unwrap();
    assert!(!r.untagged.is_empty(), "{r:?}");
    let _: GcReply = svc.call(GC, &GcRequest { all: true }).await.unwrap();
    let images: ImagesReply = svc.call(IMAGES, &ImagesRequest {}).await.unwrap();
    assert!(images.images.is_empty(), "{images:?}");
    assert!(svc.store().list().unwrap().is_empty(), "blobs stay");
    let snaps = std::fs::read_dir(svc.data_root().join("snapshots"))
        .unwrap()
        .count();
    assert_eq!(snaps, 0, "snapshots stay");
    // Back to the empty size, give or take the (emptied) bookkeeping files.
    let now = disk_usage(&svc.data_root());
    assert!(
        now <= empty + 3 * 4096,
        "the data root uses {now} bytes, {empty} when empty"
    );
}

#[test]
fn cli_load_images_save_rmi_prune_and_df_through_berthd() {
    use berth_tests::daemon::{stderr, stdout, Berthd};
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Berthd::start();
    let layout = Layout::new();
    layout.busybox("v1", berth_tests::layers::host_arch());
    let files = tempfile::Builder::new()
        .prefix("berth-cli-archives-")
        .tempdir()
        .unwrap();
    let archive = files.path().join("bb.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v1", layout.path().display()))
        .arg(format!("docker-archive:{}:berth/cli:v1", archive.display())));
    let ok = |args: &[&str]| {
        let o = d.berth(args);
        assert!(
            o.status.success(),
            "berth {args:?}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    };

    let out = ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        out.contains("Loaded image: docker.io/berth/cli:v1"),
        "{out}"
    );
    let out = ok(&["images"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("berth/cli") && l.contains("v1")),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&["images", "--json"])).unwrap();
    assert_eq!(json[0]["repository"], "berth/cli", "{json}");
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&["image", "inspect", "berth/cli:v1"])).unwrap();
    assert_eq!(
        inspect[0]["layers"].as_array().unwrap().len(),
        2,
        "{inspect}"
    );
    let out = ok(&["system", "df"]);
    assert!(out.contains("Images"), "{out}");

    let saved = files.path().join("saved.tar");
    ok(&["save", "-o", saved.to_str().unwrap(), "berth/cli:v1"]);
    run(Command::new("skopeo")
        .arg("inspect")
        .arg(format!("docker-archive:{}", saved.display())));

    let o = d.berth(&["rmi", "berth/nope:v1"]);
    assert!(!o.status.success(), "rmi of a missing image succeeded");
    assert!(stderr(&o).contains("nope"), "{}", stderr(&o));
    let out = ok(&["rmi", "berth/cli:v1"]);
    assert!(out.contains("Untagged: docker.io/berth/cli:v1"), "{out}");
    let out = ok(&["image", "prune", "-a"]);
    assert!(out.contains("Total reclaimed space"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&ok(&["images", "--json"])).unwrap();
    assert_eq!(json, serde_json::json!([]));
    // The saved archive loads back.
    let out = ok(&["load", "-i", saved.to_str().unwrap()]);
    assert!(out.contains("berth/cli:v1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prepares_share_snapshots_and_report_each_unpack_once() {
    use futures::StreamExt;
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let svc = Svc::start().await;
    let layout = Layout::new();
    layout.busybox("v1", berth_tests::layers::host_arch());
    import_layout(&svc.store(), &layout.path(), "v1", "berth/once:v1");
    let mut events = svc
        .bus
        .client()
        .subscribe(berth_proto::subjects::event("n1", "image", EVENT_UNPACKED))
        .await
        .unwrap();
    let prepares = (0..6).map(|i| {
        let svc = &svc;
        async move { svc.prepare(&format!("p{i}"), "berth/once:v1").await }
    });
    let replies = futures::future::join_all(prepares).await;
    let first = replies[0].as_ref().unwrap().rootfs.lowerdirs.clone();
    for r in &replies {
        assert_eq!(r.as_ref().unwrap().rootfs.lowerdirs, first);
    }
    let mut layers = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), events.next()).await {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        layers.push(v.to_string());
    }
    assert_eq!(layers.len(), 2, "layers unpacked: {layers:#?}");
    for i in 0..6 {
        svc.release(&format!("p{i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_and_uncompressed_layers_give_the_same_tree() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let svc = Svc::start().await;
    let layout = Layout::new();
    rich_image(&layout);
    // skopeo recompresses into a second layout; the uncompressed copy is made by gzip -dc.
    let zlayout = layout.dir.path().join("zstd");
    run(Command::new("skopeo")
        .args([
            "copy",
            "--quiet",
            "--dest-compress",
            "--dest-compress-format",
            "zstd",
        ])
        .arg(format!("oci:{}:rich", layout.path().display()))
        .arg(format!("oci:{}:rich", zlayout.display())));
    let m: serde_json::Value = {
        let idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(zlayout.join("index.json")).unwrap()).unwrap();
        let d = idx["manifests"][0]["digest"].as_str().unwrap().to_string();
        serde_json::from_slice(&std::fs::read(zlayout.join("blobs/sha256").join(&d[7..])).unwrap())
            .unwrap()
    };
    assert!(
        m["layers"][0]["mediaType"]
            .as_str()
            .unwrap()
            .ends_with("+zstd"),
        "{m}"
    );
    import_layout(&svc.store(), &zlayout, "rich", "berth/rich:zstd");
    let plain = layout.uncompressed("rich");
    import_layout(&svc.store(), &layout.path(), &plain, "berth/rich:plain");
    for (id, r) in [("z1", "berth/rich:zstd"), ("u1", "berth/rich:plain")] {
        let p = svc.prepare(id, r).await.unwrap();
        assert_prepared_matches(&p, &layout, "rich");
        svc.release(id).await;
    }
}

/// Each container's record is its own file: the single state file of earlier versions is
/// moved into them at open, records of containers whose upper dir is gone (a release cut
/// short) are dropped, and a release moves the dirs out at once and deletes them behind.
#[test]
fn container_records_migrate_stale_ones_go_and_release_empties_the_trash() {
    let dir = tempfile::Builder::new()
        .prefix("berth-ls-records-")
        .tempdir()
        .unwrap();
    let root = dir.path();
    let own = root.join("layer-store");
    std::fs::create_dir_all(&own).unwrap();
    let (upper, work) = (
        root.join("containers/live/upper"),
        root.join("containers/live/work"),
    );
    std::fs::create_dir_all(upper.join("etc")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(upper.join("etc/written"), b"by the container").unwrap();
    let rec = |u: &Path, w: &Path| {
        serde_json::json!({
            "image": "berth/bb:v1",
            "manifest": format!("sha256:{}", "a".repeat(64)),
            "chain_ids": [format!("sha256:{}", "b".repeat(64))],
            "upper": u, "work": w,
        })
    };
    let gone = root.join("containers/gone");
    std::fs::write(
        own.join("state.json"),
        serde_json::to_vec(&serde_json::json!({
            "v": 1,
            "containers": {
                "live": rec(&upper, &work),
                "gone": rec(&gone.join("upper"), &gone.join("work")),
            }
        }))
        .unwrap(),
    )
    .unwrap();

    let ls = berth_layer_store::core::LayerStore::open(root).unwrap();
    assert!(!own.join("state.json").exists(), "the old state file stays");
    let live = ls.container("live").unwrap().expect("live's record moved");
    assert_eq!(Path::new(&live.upper), upper);
    assert!(
        ls.container("gone").unwrap().is_none(),
        "a stale record stays"
    );
    assert!(own.join("containers/live.json").is_file());

    ls.release("live").unwrap();
    assert!(
        !upper.exists() && !work.exists(),
        "released dirs stay in place"
    );
    assert!(ls.container("live").unwrap().is_none(), "the record stays");
    let trash = own.join("trash");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&trash).unwrap().count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the trash is not emptied"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Releasing again: nothing of it is left.
    assert!(ls.release("live").is_err());
}

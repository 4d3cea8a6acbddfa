//! Test images built with independent tools: a rootfs from `busybox-static`, `umoci` to make
//! OCI images in an OCI layout, `skopeo` to push them to a [`crate::registry::Registry`] as OCI
//! or Docker schema 2, gzip, zstd or uncompressed, and multi-platform indexes written into the
//! layout (an index is plain JSON) and pushed with `skopeo copy --all`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where busybox-static puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 13] = [
    "sh", "ls", "cat", "echo", "true", "sleep", "env", "id", "hostname", "httpd", "wget",
    "nslookup", "nc",
];

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Fill `dest` with a minimal rootfs: `/bin/busybox` and symlinks for a few applets.
pub fn busybox_rootfs(dest: &Path) {
    let bin = dest.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs/bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).expect("copy busybox (busybox-static)");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", bin.join(a)).expect("applet symlink");
    }
}

/// A busybox root filesystem a container can run with `--rootfs`: [`busybox_rootfs`] plus
/// the directories the container's mounts go on.
pub fn container_rootfs(dest: &Path) {
    busybox_rootfs(dest);
    for d in ["tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(dest.join(d)).expect("rootfs directory");
    }
}

/// A file of `bytes` random (incompressible) bytes at `path`.
pub fn random_file(path: &Path, bytes: usize) {
    use std::io::Read;
    let mut data = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut data))
        .expect("read /dev/urandom");
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("parent dir");
    }
    std::fs::write(path, data).expect("write random file");
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    DockerV2s2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// An OCI image layout in a temp dir, holding the images a test builds.
pub struct Layout {
    pub dir: tempfile::TempDir,
}

impl Default for Layout {
    fn default() -> Self {
        Self::new()
    }
}

impl Layout {
    pub fn new() -> Layout {
        let dir = tempfile::Builder::new()
            .prefix("berth-images-")
            .tempdir()
            .expect("tempdir");
        run(Command::new("umoci")
            .args(["init", "--layout"])
            .arg(dir.path().join("oci")));
        Layout { dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("oci")
    }

    fn image_arg(&self, tag: &str) -> String {
        format!("{}:{tag}", self.path().display())
    }

    /// Build image `tag` for `linux/<arch>`: one layer per directory in `layers`, with
    /// `/bin/sh` as its command.
    pub fn build(&self, tag: &str, arch: &str, layers: &[&Path]) {
        run(Command::new("umoci")
            .args(["new", "--image"])
            .arg(self.image_arg(tag)));
        for l in layers {
            run(Command::new("umoci")
                .args(["insert", "--image"])
                .arg(self.image_arg(tag))
                .arg(l)
                .arg("/"));
        }
        run(Command::new("umoci")
            .args(["config", "--image"])
            .arg(self.image_arg(tag))
            .args(["--os", "linux", "--architecture", arch])
            .args(["--config.cmd", "/bin/sh"]));
    }

    /// A busybox image `tag` for `linux/<arch>` with a second layer holding `/etc/berth-test`
    /// (its content names the arch and tag, so tests can tell images apart).
    pub fn busybox(&self, tag: &str, arch: &str) {
        let root = self.dir.path().join(format!("rootfs-{tag}"));
        busybox_rootfs(&root.join("base"));
        let extra = root.join("extra");
        std::fs::create_dir_all(extra.join("etc")).expect("etc");
        std::fs::write(extra.join("etc/berth-test"), format!("{arch} {tag}\n")).expect("marker");
        self.build(tag, arch, &[&root.join("base"), &extra]);
    }

    /// The manifest descriptor of `tag` in the layout's index.json: `(digest, size)`.
    pub fn descriptor(&self, tag: &str) -> (String, u64) {
        let idx: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.path().join("index.json")).expect("index.json"),
        )
        .expect("index.json is JSON");
        let m = idx["manifests"]
            .as_array()
            .expect("manifests")
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
            .unwrap_or_else(|| panic!("no {tag} in the layout"));
        (
            m["digest"].as_str().unwrap().to_string(),
            m["size"].as_u64().unwrap(),
        )
    }

    /// The bytes of a blob of the layout.
    pub fn blob(&self, digest: &str) -> Vec<u8> {
        let hex = digest.strip_prefix("sha256:").expect("sha256");
        std::fs::read(self.path().join("blobs/sha256").join(hex)).expect("layout blob")
    }

    /// Write an OCI index named `name` over the images `tags` (each `(tag, arch)`) into the
    /// layout, as a blob plus an entry of index.json. Returns the index digest.
    pub fn index(&self, name: &str, tags: &[(&str, &str)]) -> String {
        let manifests: Vec<serde_json::Value> = tags
            .iter()
            .map(|(tag, arch)| {
                let (digest, size) = self.descriptor(tag);
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": size,
                    "platform": {"os": "linux", "architecture": arch},
                })
            })
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        }))
        .unwrap();
        let hex = sha256_hex(&body);
        std::fs::write(self.path().join("blobs/sha256").join(&hex), &body).expect("index blob");
        let p = self.path().join("index.json");
        let mut idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        idx["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": body.len(),
                "annotations": {"org.opencontainers.image.ref.name": name},
            }));
        std::fs::write(&p, serde_json::to_vec(&idx).unwrap()).unwrap();
        format!("sha256:{hex}")
    }

    /// Push `tag` (an image, or an index with all its images) to `dest`
    /// (`host:port/repo:tag`) in `format` with `compression`.
    pub fn push(
        &self,
        tag: &str,
        dest: &str,
        format: Format,
        compression: Compression,
        creds: Option<&str>,
    ) {
        // Recompress into a second layout first: pushing straight to a registry lets skopeo
        // reuse a blob the registry has already in another compression. skopeo 1.9 cannot
        // decompress, so uncompressed layers are written into the layout here (`gzip -dc`).
        let source = match compression {
            Compression::Gzip => self.image_arg(tag),
            Compression::None => self.image_arg(&self.uncompressed(tag)),
            Compression::Zstd => {
                let conv = self
                    .dir
                    .path()
                    .join(format!("conv-{}", berth_bus::random_hex(6)));
                run(Command::new("skopeo")
                    .args(["copy", "--all", "--quiet"])
                    .args(["--dest-compress", "--dest-compress-format", "zstd"])
                    .arg(format!("oci:{}", self.image_arg(tag)))
                    .arg(format!("oci:{}:{tag}", conv.display())));
                format!("{}:{tag}", conv.display())
            }
        };
        let mut c = Command::new("skopeo");
        c.args(["copy", "--all", "--quiet", "--dest-tls-verify=false"]);
        if compression == Compression::None {
            // Otherwise skopeo compresses layers for registries.
            c.arg("--preserve-digests");
        }
        if format == Format::DockerV2s2 {
            c.args(["--format", "v2s2"]);
        }
        if let Some(creds) = creds {
            c.arg("--dest-creds").arg(creds);
        }
        c.arg(format!("oci:{source}"))
            .arg(format!("docker://{dest}"));
        run(&mut c);
    }
}

impl Layout {
    /// A copy of image `tag` with every gzip layer decompressed (by `gzip -dc`), as tag
    /// `<tag>-plain`. The config's diff ids stay valid: they are digests of the tars.
    pub fn uncompressed(&self, tag: &str) -> String {
        let (digest, _) = self.descriptor(tag);
        let mut m: serde_json::Value = serde_json::from_slice(&self.blob(&digest)).unwrap();
        let blobs = self.path().join("blobs/sha256");
        for l in m["layers"].as_array_mut().unwrap() {
            let src = blobs.join(
                l["digest"]
                    .as_str()
                    .unwrap()
                    .strip_prefix("sha256:")
                    .unwrap(),
            );
            let tmp = blobs.join(format!("tmp-{}", berth_bus::random_hex(8)));
            let out = std::fs::File::create(&tmp).unwrap();
            let st = Command::new("gzip")
                .arg("-dc")
                .arg(&src)
                .stdout(out)
                .status()
                .expect("gzip");
            assert!(st.success(), "gzip -dc {}", src.display());
            let data = std::fs::read(&tmp).unwrap();
            let hex = sha256_hex(&data);
            std::fs::rename(&tmp, blobs.join(&hex)).unwrap();
            l["mediaType"] = "application/vnd.oci.image.layer.v1.tar".into();
            l["digest"] = format!("sha256:{hex}").into();
            l["size"] = data.len().into();
        }
        let body = serde_json::to_vec(&m).unwrap();
        let hex = sha256_hex(&body);
        std::fs::write(blobs.join(&hex), &body).unwrap();
        let new_tag = format!("{tag}-plain");
        let p = self.path().join("index.json");
        let mut idx: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        idx["manifests"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{hex}"),
                "size": body.len(),
                "annotations": {"org.opencontainers.image.ref.name": new_tag},
            }));
        std::fs::write(&p, serde_json::to_vec(&idx).unwrap()).unwrap();
        new_tag
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sha256sum");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Fetch a manifest from the registry with skopeo (an independent client): its raw JSON.
pub fn inspect_raw(reference: &str, creds: Option<&str>) -> serde_json::Value {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(creds) = creds {
        c.arg("--creds").arg(creds);
    }
    c.arg(format!("docker://{reference}"));
    serde_json::from_str(&run(&mut c)).expect("manifest JSON")
}

/// The manifest digest skopeo (an independent client) sees for `reference`.
pub fn inspect_digest(reference: &str, creds: Option<&str>) -> String {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--raw", "--tls-verify=false"]);
    if let Some(creds) = creds {
        c.arg("--creds").arg(creds);
    }
    c.arg(format!("docker://{reference}"));
    let out = c.output().expect("skopeo inspect");
    assert!(
        out.status.success(),
        "skopeo inspect {reference}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!("sha256:{}", sha256_hex(&out.stdout))
}

//! Test images made by independent tools: a busybox image from Debian's busybox-static (umoci),
//! a multi-layer image of a few hundred MB, a local registry (Debian's docker-registry), and a
//! runc bundle of the same rootfs. Built once into the bench's work dir and reused.

use crate::env::sh;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct Fixtures {
    pub dir: PathBuf,
}

impl Fixtures {
    pub fn new(dir: &Path) -> anyhow::Result<Fixtures> {
        std::fs::create_dir_all(dir)?;
        Ok(Fixtures {
            dir: dir.to_path_buf(),
        })
    }

    /// An OCI layout `busybox-oci` with tag `latest`: /bin/busybox plus its applet links.
    pub fn busybox_layout(&self) -> anyhow::Result<PathBuf> {
        let layout = self.dir.join("busybox-oci");
        if layout.join("index.json").exists() {
            return Ok(layout);
        }
        let root = self.dir.join("busybox-rootfs");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("bin"))?;
        sh(&format!(
            "cp /bin/busybox {r}/bin/busybox && for a in $({r}/bin/busybox --list); do [ -e {r}/bin/$a ] || ln -s busybox {r}/bin/$a; done && mkdir -p {r}/etc {r}/tmp {r}/proc {r}/sys {r}/dev && echo 'root:x:0:0:root:/root:/bin/sh' > {r}/etc/passwd && echo 'root:x:0:' > {r}/etc/group",
            r = root.display()
        ))
        .context("building the busybox rootfs (is busybox-static installed?)")?;
        sh(&format!(
            "umoci init --layout {l} && umoci new --image {l}:latest && umoci insert --image {l}:latest {r} / && umoci config --image {l}:latest --config.cmd sh",
            l = layout.display(),
            r = root.display()
        ))
        .context("making the busybox OCI image with umoci")?;
        Ok(layout)
    }

    /// The busybox image as an OCI archive (what `berth load -i` reads).
    pub fn busybox_archive(&self) -> anyhow::Result<PathBuf> {
        let out = self.dir.join("busybox.oci.tar");
        if !out.exists() {
            let l = self.busybox_layout()?;
            sh(&format!(
                "skopeo copy --quiet oci:{}:latest oci-archive:{}:busybox:latest",
                l.display(),
                out.display()
            ))?;
        }
        Ok(out)
    }

    /// A runc bundle of the busybox rootfs (for the low-level floor).
    pub fn runc_bundle(&self) -> anyhow::Result<PathBuf> {
        let bundle = self.dir.join("runc-bundle");
        if bundle.join("config.json").exists() {
            return Ok(bundle);
        }
        let l = self.busybox_layout()?;
        let _ = std::fs::remove_dir_all(&bundle);
        sh(&format!(
            "umoci unpack --image {}:latest {b} >/dev/null && cd {b} && sed -i 's/\"terminal\": true/\"terminal\": false/' config.json",
            l.display(),
            b = bundle.display()
        ))?;
        Ok(bundle)
    }

    /// A multi-layer image (`layers` layers, about `mb` MB of incompressible data in all, one
    /// layer of 20,000 small files) as an OCI layout.
    pub fn big_layout(&self, layers: usize, mb: usize) -> anyhow::Result<PathBuf> {
        let layout = self.dir.join(format!("big-{layers}x{mb}"));
        if layout.join("index.json").exists() {
            return Ok(layout);
        }
        let _ = std::fs::remove_dir_all(&layout);
        let l = layout.display();
        sh(&format!(
            "umoci init --layout {l} && umoci new --image {l}:latest"
        ))?;
        let per = mb / layers;
        for i in 0..layers {
            let d = self.dir.join(format!("big-src-{i}"));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir_all(&d)?;
            if i == 0 {
                // 20,000 small files.
                sh(&format!(
                    "cd {} && for j in $(seq 0 199); do mkdir d$j; head -c 409600 /dev/urandom | split -b 4096 -a 3 - d$j/f; done",
                    d.display()
                ))?;
            } else {
                sh(&format!(
                    "head -c {}M /dev/urandom > {}/blob{i}",
                    per,
                    d.display()
                ))?;
            }
            sh(&format!(
                "umoci insert --image {l}:latest {} /layer{i}",
                d.display()
            ))?;
            std::fs::remove_dir_all(&d)?;
        }
        Ok(layout)
    }
}

/// Debian's docker-registry on a free loopback port, stopped by pid when dropped.
pub struct Registry {
    pub port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Registry {
    pub fn start() -> anyhow::Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-reg-")
            .tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = dir.path().join("config.yml");
        std::fs::write(
            &conf,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting docker-registry (apt-get install docker-registry)")?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        Ok(Registry {
            port,
            _dir: dir,
            child,
        })
    }

    pub fn push(&self, layout: &Path, name: &str) -> anyhow::Result<String> {
        let r = format!("127.0.0.1:{}/{name}", self.port);
        sh(&format!(
            "skopeo copy --quiet --dest-tls-verify=false oci:{}:latest docker://{r}",
            layout.display()
        ))?;
        Ok(r)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

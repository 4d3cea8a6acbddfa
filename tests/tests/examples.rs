//! The example Compose files in `compose/`, as the quick start applies them: a busybox image
//! built by umoci from busybox-static, exported by skopeo, `berth load`ed, then each example
//! applied through the real daemon and checked for what its comments promise. As root.

use berth_tests::daemon::{stderr, stdout, Berthd};
use berth_tests::images::Layout;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../compose")
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

fn ok(d: &Berthd, env: &[(&str, &str)], args: &[&str]) -> String {
    let o = d.berth_env(env, args);
    assert!(
        o.status.success(),
        "berth {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    format!("{}{}", stdout(&o), stderr(&o))
}

fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn the_examples_work_with_a_loaded_busybox_image() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Berthd::start();
    let layout = Layout::new();
    layout.busybox("latest", berth_tests::layers::host_arch());
    let files = tempfile::tempdir().unwrap();
    let archive = files.path().join("busybox.tar");
    let st = Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:latest", layout.path().display()))
        .arg(format!("oci-archive:{}:busybox:latest", archive.display()))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy");
    ok(&d, &[], &["load", "-i", archive.to_str().unwrap()]);

    // web.yaml: the health-checked httpd with its port on loopback, two workers that fetch
    // its page by service name, limits, a named volume.
    let port = berth_tests::free_port().to_string();
    let env = [("WEB_PORT", port.as_str())];
    let web = example("web.yaml");
    ok(&d, &env, &["apply", "-f", &web, "--wait"]);
    let ps = ok(&d, &[], &["ps"]);
    for c in ["web-httpd-1", "web-worker-1", "web-worker-2"] {
        assert!(ps.contains(c), "{ps}");
    }
    let page = {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
            .expect("the published port");
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut b = String::new();
        s.read_to_string(&mut b).unwrap();
        b
    };
    assert!(page.ends_with("hello from berth\n"), "{page}");
    until("a worker to fetch the page by name", || {
        stdout(&d.berth(&["logs", "web-worker-2"])).contains("got: hello from berth")
    });
    let v: serde_json::Value =
        serde_json::from_str(&ok(&d, &[], &["inspect", "web-httpd-1"])).unwrap();
    assert_eq!(v[0]["spec"]["resources"]["memory_bytes"], 32 << 20, "{v}");
    assert_eq!(v[0]["spec"]["resources"]["pids_limit"], 64);
    // A no-op re-apply changes nothing.
    let out = ok(&d, &env, &["apply", "-f", &web, "--wait"]);
    assert!(out.contains("unchanged"), "{out}");
    ok(&d, &[], &["down", "-v", "web"]);

    // jobs.yaml: the app starts only after the one-shot completed, and reads its output.
    let jobs = example("jobs.yaml");
    ok(&d, &[], &["apply", "-f", &jobs, "--wait"]);
    until("the app to print the job's output", || {
        stdout(&d.berth(&["logs", "jobs-app-1"])).contains("migrated")
    });
    ok(&d, &[], &["down", "-v", "jobs"]);
    let vols = ok(&d, &[], &["volume", "ls", "-q"]);
    assert!(
        !vols.contains("web_site") && !vols.contains("jobs_data"),
        "{vols}"
    );
}

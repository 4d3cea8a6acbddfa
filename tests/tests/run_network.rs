//! `berth run` on bridge networks through the real daemon: `-p` publishes a port on the
//! node's default network, `--network NAME` joins a network made by `berth network create`
//! and answers to its `--network-alias`, `--network container:NAME` shares another
//! container's namespace, and `inspect` shows the addresses. As root; traffic goes only to
//! 127.0.0.1 and to the containers' own addresses. Bridges, veths and rules are removed by
//! the daemon guard, pass or fail.

use berth_tests::daemon::{stderr, stdout, Berthd};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn rootfs(dir: &std::path::Path) -> String {
    let root = dir.join("rootfs");
    berth_tests::images::container_rootfs(&root);
    std::fs::create_dir_all(root.join("www")).unwrap();
    std::fs::write(root.join("www/index.html"), "hello from berth\n").unwrap();
    root.display().to_string()
}

fn ok(d: &Berthd, args: &[&str]) -> String {
    let o = d.berth(args);
    assert!(
        o.status.success(),
        "berth {args:?}: {}{}",
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

fn http_get(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut b = String::new();
            s.read_to_string(&mut b)?;
            Ok(b)
        });
        match got {
            Ok(b) if b.contains("200 OK") => return b,
            _ if Instant::now() > deadline => panic!("127.0.0.1:{port}: {got:?}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[test]
fn run_publishes_ports_joins_networks_and_shares_namespaces() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    let port = berth_tests::free_port();
    let publish = format!("127.0.0.1:{port}:80");

    // -p alone: the node's default network `bridge`, made on first use.
    ok(
        &d,
        &[
            "run", "-d", "--name", "web", "-p", &publish, "--rootfs", &root, "httpd", "-f", "-p",
            "80", "-h", "/www",
        ],
    );
    assert!(http_get(port).ends_with("hello from berth\n"));
    assert!(ok(&d, &["port", "web"]).contains(&format!("80/tcp -> 127.0.0.1:{port}")));
    let v: serde_json::Value = serde_json::from_str(&ok(&d, &["inspect", "web"])).unwrap();
    let addr = v[0]["networks"]["bridge"]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in inspect: {v}"))
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(ok(&d, &["network", "ls"]).contains("bridge"));

    // The same port again: refused, naming the port and the container; nothing left.
    let o = d.berth(&[
        "run", "-d", "--name", "web2", "-p", &publish, "--rootfs", &root, "httpd", "-f", "-p", "80",
    ]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("web2"),
        "{e}"
    );
    let ps = ok(&d, &["ps", "-a"]);
    assert!(!ps.contains("web2") || !ps.contains("running"), "{ps}");

    // A named network: containers on it reach each other by name and alias, and the
    // published container (on `bridge`) is out of their reach.
    ok(&d, &["network", "create", "backend"]);
    ok(
        &d,
        &[
            "run",
            "-d",
            "--name",
            "api",
            "--network",
            "backend",
            "--network-alias",
            "svc",
            "--rootfs",
            &root,
            "httpd",
            "-f",
            "-p",
            "80",
            "-h",
            "/www",
        ],
    );
    let get = |name: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = d.berth(&[
                "run",
                "--rm",
                "--network",
                "backend",
                "--rootfs",
                &root,
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{name}/"),
            ]);
            if o.status.success() {
                return stdout(&o);
            }
            assert!(Instant::now() < deadline, "wget {name}: {}", stderr(&o));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    assert_eq!(get("api"), "hello from berth\n");
    assert_eq!(get("svc"), "hello from berth\n");
    let o = d.berth(&[
        "run",
        "--rm",
        "--network",
        "backend",
        "--rootfs",
        &root,
        "sh",
        "-c",
        &format!("echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {addr} 80"),
    ]);
    assert!(
        !stdout(&o).contains("200 OK"),
        "a container on backend reached bridge's {addr}"
    );

    // container:NAME shares api's network namespace: its loopback is api's.
    let out = ok(
        &d,
        &[
            "run",
            "--rm",
            "--network",
            "container:api",
            "--rootfs",
            &root,
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1/",
        ],
    );
    assert_eq!(out, "hello from berth\n");

    // Unknown networks are clear errors.
    let o = d.berth(&[
        "run",
        "--rm",
        "--network",
        "nosuch",
        "--rootfs",
        &root,
        "true",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("nosuch"),
        "{}",
        stderr(&o)
    );
    let o = d.berth(&[
        "run",
        "--rm",
        "--network",
        "container:nosuch",
        "--rootfs",
        &root,
        "true",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("nosuch"),
        "{}",
        stderr(&o)
    );

    // In use: refused; after the container goes, removed.
    let o = d.berth(&["network", "rm", "backend"]);
    assert!(
        !o.status.success() && stderr(&o).contains("api"),
        "{}",
        stderr(&o)
    );
    ok(&d, &["rm", "-f", "api", "web"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = d.berth(&["network", "rm", "backend"]);
        if o.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", stderr(&o));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!ok(&d, &["network", "ls"]).contains("backend"));
}

#[test]
fn the_default_network_is_loopback_only_and_loopback_works() {
    if !berth_tests::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let root = rootfs(dir.path());
    // A server and a client on 127.0.0.1 inside one container without a network.
    let out = ok(
        &d,
        &[
            "run",
            "--rm",
            "--rootfs",
            &root,
            "sh",
            "-c",
            // The client retries until the server listens, and the output is read once it
            // is there: no fixed sleep, which a loaded machine outlasts.
            "ls /sys/class/net; (nc -l -p 5000 > /tmp/got &); \
             for i in $(seq 100); do echo ping | nc -w 2 127.0.0.1 5000 && break; sleep 0.1; done; \
             for i in $(seq 100); do [ -s /tmp/got ] && break; sleep 0.1; done; cat /tmp/got",
        ],
    );
    assert_eq!(out, "lo\nping\n");
}

//! The reconciler through the real daemon and CLI: Compose files applied, re-applied,
//! changed, rolled back; drift corrected; berthd killed mid-way. As root (containers on the
//! real kernel). Services run a busybox-static root filesystem (`x-berth: {rootfs: DIR}`), so
//! these tests exercise the reconciler, the supervisor and the isolator, not image handling.

use berth_tests::daemon::{stderr, stdout, Berthd};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

macro_rules! need_root {
    () => {
        if !berth_tests::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

struct World {
    d: Berthd,
    /// A busybox root filesystem every service runs.
    rootfs: String,
    dir: tempfile::TempDir,
}

impl World {
    fn start() -> World {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        berth_tests::images::container_rootfs(&root);
        World {
            d: Berthd::start(),
            rootfs: root.display().to_string(),
            dir,
        }
    }

    fn write(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.path().join(name);
        let image = format!("x-berth: {{rootfs: {}}}", self.rootfs);
        std::fs::write(&p, yaml.replace("image: IMAGE", &image)).unwrap();
        p.display().to_string()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.d.berth(args);
        assert!(
            o.status.success(),
            "berth {args:?} failed: {}{}\n{}",
            stdout(&o),
            stderr(&o),
            self.d
                .log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        format!("{}{}", stdout(&o), stderr(&o))
    }

    /// name → (id, status) of every container.
    fn ps(&self) -> BTreeMap<String, (String, String)> {
        let o = self.d.berth(&["ps", "-a", "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value =
            serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
        v.as_array()
            .expect("a list")
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    (
                        c["id"].as_str().unwrap().to_string(),
                        c["status"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    }

    fn running(&self) -> Vec<String> {
        self.ps()
            .into_iter()
            .filter(|(_, (_, st))| st == "running")
            .map(|(n, _)| n)
            .collect()
    }

    fn until(&self, what: &str, f: impl Fn(&World) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if f(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}; containers: {:?}", self.ps());
    }
}

const TWO: &str = "name: demo\nservices:\n  web:\n    image: IMAGE\n    command: [sleep, '3600']\n    environment: {V: '1'}\n    deploy: {replicas: 2}\n  db:\n    image: IMAGE\n    command: [sleep, '3600']\n";

#[test]
fn apply_converges_and_reapply_changes_only_what_changed() {
    need_root!();
    let w = World::start();
    let f = w.write("c.yaml", TWO);
    w.ok(&["apply", "-f", &f, "--wait"]);
    assert_eq!(w.running(), vec!["demo-db-1", "demo-web-1", "demo-web-2"]);
    let before = w.ps();

    // The same file again: nothing stored, nothing recreated.
    let out = w.ok(&["apply", "-f", &f, "--wait"]);
    assert!(out.contains("unchanged"), "{out}");
    let o = w.d.berth(&["plan", "-f", &f]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(w.ps(), before);

    // One service's env changes: only its containers are replaced.
    let f2 = w.write("c2.yaml", &TWO.replace("V: '1'", "V: '2'"));
    let o = w.d.berth(&["plan", "-f", &f2]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("replace") && stdout(&o).contains("demo-web-1"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("demo-db-1"), "{}", stdout(&o));
    w.ok(&["apply", "-f", &f2, "--wait"]);
    let after = w.ps();
    assert_eq!(
        after["demo-db-1"], before["demo-db-1"],
        "db was not touched"
    );
    assert_ne!(
        after["demo-web-1"].0, before["demo-web-1"].0,
        "web was replaced"
    );
    assert_eq!(after["demo-web-1"].1, "running");

    // A service removed from the spec: its containers go.
    let f3 = w.write(
        "c3.yaml",
        "name: demo\nservices:\n  db:\n    image: IMAGE\n    command: [sleep, '3600']\n",
    );
    w.ok(&["apply", "-f", &f3, "--wait"]);
    assert_eq!(w.running(), vec!["demo-db-1"]);

    // History and rollback.
    let h = w.ok(&["history", "demo"]);
    assert_eq!(
        h.lines()
            .filter(|l| l.trim_start().starts_with(char::is_numeric))
            .count(),
        3,
        "{h}"
    );
    w.ok(&["rollback", "demo"]);
    w.until("the rollback to converge", |w| w.running().len() == 3);
    let env = w.ok(&["exec", "demo-web-1", "sh", "-c", "echo $V"]);
    assert!(
        env.contains('2'),
        "rolled back to the revision with V=2: {env}"
    );

    // Down removes everything.
    w.ok(&["down", "demo"]);
    w.until("down", |w| w.ps().is_empty());
}

#[test]
fn drift_is_corrected_and_a_killed_daemon_finishes_without_duplicates() {
    need_root!();
    let mut w = World::start();
    let f = w.write("c.yaml", TWO);
    w.ok(&["apply", "-f", &f, "--wait"]);

    // Removed by hand: it comes back.
    let old = w.ps()["demo-web-2"].0.clone();
    w.ok(&["rm", "-f", "demo-web-2"]);
    w.until("demo-web-2 to come back", |w| {
        w.ps()
            .get("demo-web-2")
            .map(|(id, st)| id != &old && st == "running")
            .unwrap_or(false)
    });
    // Killed by hand (restart policy `no`): it is started again.
    w.ok(&["kill", "demo-db-1"]);
    w.until("demo-db-1 to run again", |w| {
        w.ps()
            .get("demo-db-1")
            .map(|(_, st)| st == "running")
            .unwrap_or(false)
    });
    // A container with the project's labels that is not in the spec is removed.
    w.ok(&[
        "run",
        "-d",
        "--name",
        "intruder",
        "--label",
        "berth.project=demo",
        "--rootfs",
        &w.rootfs,
        "sleep",
        "3600",
    ]);
    w.until("the orphan to be removed", |w| {
        !w.ps().contains_key("intruder")
    });

    // Scale up, and kill berthd in the middle of it.
    let f2 = w.write("c2.yaml", &TWO.replace("replicas: 2", "replicas: 6"));
    let o = w.d.berth(&["apply", "-f", &f2]);
    assert!(o.status.success(), "{}", stderr(&o));
    std::thread::sleep(Duration::from_millis(300));
    w.d.kill();
    w.d.spawn();
    w.until("six web replicas", |w| {
        w.running()
            .iter()
            .filter(|n| n.starts_with("demo-web-"))
            .count()
            == 6
    });
    let names: Vec<String> = w.ps().into_keys().collect();
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(names, dedup);
    assert_eq!(names.len(), 7, "{names:?}");
    w.ok(&["down", "demo"]);
}

#[test]
fn depends_on_healthy_waits_and_concurrent_applies_conflict_cleanly() {
    need_root!();
    let w = World::start();
    let f = w.write(
        "h.yaml",
        "name: hc\nservices:\n  app:\n    image: IMAGE\n    command: [sleep, '3600']\n    depends_on:\n      db: {condition: service_healthy}\n  db:\n    image: IMAGE\n    command: [sh, -c, 'sleep 2; echo > /ready; exec sleep 3600']\n    healthcheck:\n      test: [CMD-SHELL, '[ -f /ready ]']\n      interval: 500ms\n      retries: 20\n",
    );
    let t = Instant::now();
    w.ok(&["apply", "-f", &f, "--wait"]);
    assert!(
        t.elapsed() >= Duration::from_secs(2),
        "app waited for db to be healthy"
    );
    let events = w.ok(&[
        "events", "--since", "5m", "--until", "0s", "--format", "json",
    ]);
    let pos = |pat: &str| {
        events
            .lines()
            .position(|l| l.contains(pat))
            .unwrap_or_else(|| panic!("no {pat} in {events}"))
    };
    assert!(
        pos("\"healthy\"") < pos("create hc-app-1"),
        "app created only after db was healthy"
    );

    // Concurrent applies of different specs: each either stores a whole revision or gets a
    // clear conflict; the stored history never mixes the two.
    let specs: Vec<String> = (0..6)
        .map(|i| w.write(&format!("v{i}.yaml"), &format!("name: race\nservices:\n  s{i}:\n    image: IMAGE\n    command: [sleep, '3600']\n")))
        .collect();
    let outs: Vec<std::process::Output> = std::thread::scope(|s| {
        let hs: Vec<_> = specs
            .iter()
            .map(|f| s.spawn(|| w.d.berth(&["apply", "-f", f])))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = outs.iter().filter(|o| o.status.success()).count();
    let conflicts = outs
        .iter()
        .filter(|o| {
            !o.status.success() && stderr(o).contains("another apply of race was stored first")
        })
        .count();
    assert_eq!(
        ok + conflicts,
        6,
        "{:?}",
        outs.iter().map(stderr).collect::<Vec<_>>()
    );
    assert!(ok >= 1);
    let h = w.d.berth(&["--json", "history", "race"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&h)).unwrap();
    for r in v["revisions"].as_array().unwrap() {
        assert_eq!(
            r["services"].as_array().unwrap().len(),
            1,
            "a revision holds one whole spec: {r}"
        );
    }
    assert_eq!(v["revisions"].as_array().unwrap().len(), ok);
    w.ok(&["down", "race"]);
    w.ok(&["down", "hc"]);
}

/// The container's address on its bridge network, from `berth inspect`.
fn address(w: &World, container: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&w.ok(&["inspect", container])).unwrap();
    let nets = v[0]["networks"].as_object().expect("networks in inspect");
    let (_, n) = nets
        .iter()
        .next()
        .unwrap_or_else(|| panic!("{container} is on no network: {v}"));
    let a = n["address"].as_str().unwrap();
    a.split('/').next().unwrap().to_string()
}

/// Every line of the host's links, addresses, routes and iptables rules that names `what`.
fn host_lines(what: &str) -> Vec<String> {
    let mut out = String::new();
    for args in [vec!["-br", "link"], vec!["-4", "addr"], vec!["-4", "route"]] {
        let o = std::process::Command::new("ip")
            .args(&args)
            .output()
            .unwrap();
        out += &String::from_utf8_lossy(&o.stdout);
    }
    for t in ["filter", "nat"] {
        let o = std::process::Command::new("iptables")
            .args(["-w", "-t", t, "-S"])
            .output()
            .unwrap();
        out += &String::from_utf8_lossy(&o.stdout);
    }
    out.lines()
        .filter(|l| l.contains(what))
        .map(str::to_string)
        .collect()
}

const WEB: &str = "name: PROJECT\nservices:\n  web:\n    image: IMAGE\n    command: [sh, -c, 'hostname > /tmp/index.html; exec httpd -f -p 80 -h /tmp']\n    PORTS\n    deploy: {replicas: REPLICAS}\n  client:\n    image: IMAGE\n    command: [sleep, '3600']\n";

fn web(project: &str, ports: &str, replicas: u32) -> String {
    WEB.replace("PROJECT", project)
        .replace("PORTS", ports)
        .replace("REPLICAS", &replicas.to_string())
}

/// wget from inside a container; the body, or None when it failed.
fn wget(w: &World, container: &str, url: &str) -> Option<String> {
    let o =
        w.d.berth(&["exec", container, "wget", "-q", "-O", "-", url]);
    o.status.success().then(|| stdout(&o).trim().to_string())
}

/// Whether an HTTP request from `container` to `ip:80` gets an answer within 2 s.
fn answers(w: &World, container: &str, ip: &str) -> bool {
    let o = w.d.berth(&[
        "exec",
        container,
        "sh",
        "-c",
        &format!("echo -e 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80"),
    ]);
    stdout(&o).contains("200 OK")
}

fn wget_retry(w: &World, container: &str, url: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(b) = wget(w, container, url) {
            return b;
        }
        if Instant::now() > deadline {
            let o = w.d.berth(&["exec", container, "wget", "-O", "-", url]);
            let r = w.d.berth(&["exec", container, "cat", "/etc/resolv.conf"]);
            panic!(
                "wget {url} from {container} never answered: {}{}\nresolv.conf: {}",
                stdout(&o),
                stderr(&o),
                stdout(&r)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn compose_services_reach_each_other_by_name_and_publish_ports() {
    need_root!();
    let w = World::start();
    let port = berth_tests::free_port();
    let f = w.write(
        "n.yaml",
        &web("nw", &format!("ports: ['127.0.0.1:{port}:80']"), 1),
    );
    w.ok(&["apply", "-f", &f, "--wait"]);
    let web_host = w.ok(&["exec", "nw-web-1", "hostname"]).trim().to_string();

    // By service name and by container name, from the other service.
    assert_eq!(wget_retry(&w, "nw-client-1", "http://web/"), web_host);
    assert_eq!(wget_retry(&w, "nw-client-1", "http://nw-web-1/"), web_host);
    // resolv.conf points at the network's DNS server (the gateway).
    let resolv = w.ok(&["exec", "nw-client-1", "cat", "/etc/resolv.conf"]);
    let v: serde_json::Value = serde_json::from_str(&w.ok(&["inspect", "nw-client-1"])).unwrap();
    let gw = v[0]["networks"]["nw_default"]["gateway"].as_str().unwrap();
    assert!(resolv.contains(&format!("nameserver {gw}")), "{resolv}");

    // The published port, from the host through loopback.
    let body = {
        use std::io::{Read, Write};
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
                let mut b = String::new();
                s.read_to_string(&mut b)?;
                Ok(b)
            });
            match got {
                Ok(b) if b.contains("200 OK") => break b,
                _ if Instant::now() > deadline => {
                    panic!("127.0.0.1:{port} never answered: {got:?}")
                }
                _ => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    };
    assert!(body.ends_with(&format!("{web_host}\n")), "{body}");
    let ports = w.ok(&["port", "nw-web-1"]);
    assert!(
        ports.contains(&format!("80/tcp -> 127.0.0.1:{port}")),
        "{ports}"
    );

    // Scaled to three replicas (the first replaced: its ports changed): every one answers by
    // the service name, round robin, without restarting the client.
    let f3 = w.write("n3.yaml", &web("nw", "", 3));
    w.ok(&["apply", "-f", &f3, "--wait"]);
    let mut hosts: Vec<String> = (1..=3)
        .map(|i| {
            w.ok(&["exec", &format!("nw-web-{i}"), "hostname"])
                .trim()
                .to_string()
        })
        .collect();
    hosts.sort();
    // The service name gives every replica's address (clients that sort answers, as glibc
    // does, may prefer one; the DNS server rotates them), and each answers by its own name.
    let mut by_name: Vec<String> = (1..=3)
        .map(|i| wget_retry(&w, "nw-client-1", &format!("http://nw-web-{i}/")))
        .collect();
    by_name.sort();
    assert_eq!(by_name, hosts);
    let mut addrs: Vec<String> = (1..=3)
        .map(|i| address(&w, &format!("nw-web-{i}")))
        .collect();
    addrs.sort();
    let ns = w.ok(&["exec", "nw-client-1", "nslookup", "web"]);
    let mut got: Vec<String> = ns
        .split_once("Name:")
        .map(|(_, answers)| answers)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("Address:"))
        .map(|a| a.trim().to_string())
        .collect();
    got.sort();
    assert_eq!(got, addrs, "{ns}");
    for a in &addrs {
        assert_eq!(
            wget_retry(&w, "nw-client-1", &format!("http://{a}/")).len(),
            12
        );
    }

    // Another project is another network: its containers cannot reach these.
    let g = w.write("o.yaml", &web("other", "", 1));
    w.ok(&["apply", "-f", &g, "--wait"]);
    let mine = address(&w, "nw-web-1");
    let theirs = address(&w, "other-web-1");
    assert_ne!(
        mine.rsplit_once('.').unwrap().0,
        theirs.rsplit_once('.').unwrap().0
    );
    assert_eq!(
        wget_retry(&w, "other-client-1", &format!("http://{theirs}/")).len(),
        12
    );
    assert!(answers(&w, "other-client-1", &theirs));
    assert!(!answers(&w, "other-client-1", &mine));
    assert!(!answers(&w, "nw-client-1", &theirs));

    // down: no bridge, veth, address, route or rule of the project's network is left.
    let bridge = berth_net::store::bridge_name(&w.d.data_root(), "nw_default");
    assert!(
        !host_lines(&bridge).is_empty(),
        "the bridge {bridge} exists while up"
    );
    w.ok(&["down", "nw"]);
    assert_eq!(host_lines(&bridge), Vec::<String>::new());
    let nets = w.ok(&["network", "ls"]);
    assert!(!nets.contains("nw_default"), "{nets}");
    assert!(nets.contains("other_default"), "{nets}");
    w.ok(&["down", "other"]);
    let other = berth_net::store::bridge_name(&w.d.data_root(), "other_default");
    assert_eq!(host_lines(&other), Vec::<String>::new());
    let veths: Vec<String> = host_lines("vb-")
        .into_iter()
        .filter(|l| l.contains(&bridge) || l.contains(&other))
        .collect();
    assert!(veths.is_empty(), "{veths:?}");
}

#[test]
fn a_taken_port_fails_the_apply_clearly_and_down_v_removes_volumes() {
    need_root!();
    let w = World::start();
    let taken = std::net::TcpListener::bind(("127.0.0.1", berth_tests::free_port())).unwrap();
    let port = taken.local_addr().unwrap().port();
    let f = w.write(
        "t.yaml",
        &format!("name: tk\nservices:\n  web:\n    image: IMAGE\n    command: [httpd, -f, -p, '80']\n    ports: ['127.0.0.1:{port}:80']\n    volumes: [data:/data, /anon]\nvolumes:\n  data: {{}}\n"),
    );
    let o = w.d.berth(&["apply", "-f", &f, "--wait"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("tk-web-1") && e.contains("in use"),
        "{e}"
    );
    // Nothing half started: no container of the project runs.
    assert!(
        !w.running().iter().any(|n| n.starts_with("tk-")),
        "{:?}",
        w.ps()
    );

    // The port freed, the project converges; `down -v` removes its volumes, and a plain
    // `down` keeps them.
    drop(taken);
    w.until("tk to converge", |w| {
        w.running().contains(&"tk-web-1".to_string())
    });
    w.ok(&["exec", "tk-web-1", "sh", "-c", "echo kept > /data/f"]);
    let vols = w.ok(&["volume", "ls", "-q"]);
    assert!(vols.contains("tk_data"), "{vols}");
    let anon: Vec<String> = vols
        .lines()
        .filter(|l| l.starts_with("tk_web"))
        .map(str::to_string)
        .collect();
    assert_eq!(anon.len(), 1, "{vols}");
    w.ok(&["down", "tk"]);
    let vols = w.ok(&["volume", "ls", "-q"]);
    assert!(
        vols.contains("tk_data") && vols.contains(&anon[0]),
        "{vols}"
    );
    w.ok(&["apply", "-f", &f, "--wait"]);
    assert_eq!(w.ok(&["exec", "tk-web-1", "cat", "/data/f"]).trim(), "kept");
    w.ok(&["down", "-v", "tk"]);
    let vols = w.ok(&["volume", "ls", "-q"]);
    assert!(
        !vols.contains("tk_data") && !vols.contains(&anon[0]),
        "{vols}"
    );
}

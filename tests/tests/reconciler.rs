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
        berth_tests::images::busybox_rootfs(&root);
        for d in ["tmp", "etc", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
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
    assert_eq!(w.running(), vec!["demo-db-0", "demo-web-0", "demo-web-1"]);
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
        stdout(&o).contains("replace") && stdout(&o).contains("demo-web-0"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("demo-db-0"), "{}", stdout(&o));
    w.ok(&["apply", "-f", &f2, "--wait"]);
    let after = w.ps();
    assert_eq!(
        after["demo-db-0"], before["demo-db-0"],
        "db was not touched"
    );
    assert_ne!(
        after["demo-web-0"].0, before["demo-web-0"].0,
        "web was replaced"
    );
    assert_eq!(after["demo-web-0"].1, "running");

    // A service removed from the spec: its containers go.
    let f3 = w.write(
        "c3.yaml",
        "name: demo\nservices:\n  db:\n    image: IMAGE\n    command: [sleep, '3600']\n",
    );
    w.ok(&["apply", "-f", &f3, "--wait"]);
    assert_eq!(w.running(), vec!["demo-db-0"]);

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
    let env = w.ok(&["exec", "demo-web-0", "sh", "-c", "echo $V"]);
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
    let old = w.ps()["demo-web-1"].0.clone();
    w.ok(&["rm", "-f", "demo-web-1"]);
    w.until("demo-web-1 to come back", |w| {
        w.ps()
            .get("demo-web-1")
            .map(|(id, st)| id != &old && st == "running")
            .unwrap_or(false)
    });
    // Killed by hand (restart policy `no`): it is started again.
    w.ok(&["kill", "demo-db-0"]);
    w.until("demo-db-0 to run again", |w| {
        w.ps()
            .get("demo-db-0")
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
        pos("\"healthy\"") < pos("create hc-app-0"),
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

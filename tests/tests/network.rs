//! berth's bridge networks on the real kernel (as root), without containers: each "container"
//! is a network namespace made by the test (`ip netns add`) with busybox processes in it
//! (`busybox-static`: `sleep` as the init whose pid is attached, `httpd`, `wget`,
//! `nslookup`). Traffic goes only to 127.0.0.1 and to the addresses of these namespaces.
//!
//! Every namespace, process, bridge, veth and iptables rule a test makes carries a unique
//! name and is removed by a Drop guard, pass or fail.

use berth_docker::ports::parse_ports;
use berth_net::{AttachRequest, Attachment, Net, NetConfig, NetError};
use berth_tests::{is_root, unique};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A network namespace standing in for a container, with the processes started in it.
struct Ns {
    name: String,
    procs: Vec<Child>,
    /// pid of the `sleep` that plays the container's init.
    pid: u32,
    www: tempfile::TempDir,
}

impl Ns {
    fn new() -> Ns {
        let name = unique("bnt");
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        let mut ns = Ns {
            name,
            procs: Vec::new(),
            pid: 0,
            www: tempfile::Builder::new()
                .prefix("berth-net-www-")
                .tempdir()
                .unwrap(),
        };
        ns.pid = ns.spawn(&["busybox", "sleep", "600"]);
        ns
    }

    fn spawn(&mut self, args: &[&str]) -> u32 {
        let c = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = c.id();
        self.procs.push(c);
        // `ip netns exec` execs the command in the same process once it has joined.
        let want = std::fs::metadata(format!("/run/netns/{}", self.name))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while berth_net::store::netns_ino(pid) != Some(want) {
            assert!(
                Instant::now() < deadline,
                "{args:?} did not enter {}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        pid
    }

    /// Serve `body` as `/index.html` on port 80.
    fn httpd(&mut self, body: &str) {
        std::fs::write(self.www.path().join("index.html"), body).unwrap();
        let dir = self.www.path().to_string_lossy().into_owned();
        self.spawn(&["busybox", "httpd", "-f", "-p", "80", "-h", &dir]);
    }

    /// Run a command in the namespace (bounded by `timeout`).
    fn run(&self, args: &[&str]) -> Output {
        self.run_for(10, args)
    }

    fn run_for(&self, secs: u32, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "timeout", &secs.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Point the namespace's `/etc/resolv.conf` (as `ip netns exec` binds it) at `server`.
    fn resolver(&self, server: &str) {
        let d = PathBuf::from("/etc/netns").join(&self.name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("resolv.conf"), format!("nameserver {server}\n")).unwrap();
    }

    /// `busybox wget -O - <url>`: the body, or the error output.
    fn wget(&self, url: &str) -> Result<String, String> {
        // (`-T` makes Debian's static busybox 1.35 crash; `timeout` bounds it instead.)
        let o = self.run_for(3, &["busybox", "wget", "-q", "-O", "-", url]);
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).into_owned())
        } else {
            Err(format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ))
        }
    }

    /// Retry `wget` while the server starts.
    fn wget_retry(&self, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.wget(url) {
                Ok(b) => return b,
                Err(e) if Instant::now() > deadline => panic!("wget {url} in {}: {e}", self.name),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The addresses `busybox nslookup name server` prints for `name`.
    fn nslookup(&self, name: &str, server: &str) -> Vec<String> {
        let o = self.run(&["busybox", "nslookup", name, server]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        // Skip the server's own lines: addresses come after "Name:".
        out.split_once("Name:")
            .map(|(_, rest)| {
                rest.lines()
                    .filter_map(|l| l.trim().strip_prefix("Address:"))
                    .map(|a| a.split_whitespace().next().unwrap_or("").to_string())
                    .filter(|a| !a.contains(':'))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn links(&self) -> String {
        String::from_utf8_lossy(&self.run(&["ip", "-br", "link"]).stdout).into_owned()
    }

    /// Kill the namespace's processes (the "container" ends); the namespace itself goes
    /// when its last process and its `ip netns` mount are gone.
    fn stop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.procs.clear();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// A data root and the networking on it; on drop, every network of the data root loses its
/// bridge, rules and record even if the test failed half way.
struct Node {
    net: Arc<Net>,
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Node {
        let dir = tempfile::Builder::new()
            .prefix("berth-net-")
            .tempdir()
            .unwrap();
        Node::at(dir)
    }

    fn at(dir: tempfile::TempDir) -> Node {
        let net = Net::new(NetConfig::new(dir.path()));
        Node { net, dir }
    }

    async fn attach(
        &self,
        network: &str,
        ns: &Ns,
        name: &str,
        aliases: &[&str],
        ports: &[&str],
    ) -> Result<Attachment, NetError> {
        let t = Instant::now();
        let r = self
            .net
            .attach(&AttachRequest {
                network: network.into(),
                container_id: container_id(name),
                container_name: name.into(),
                aliases: aliases.iter().map(|s| s.to_string()).collect(),
                pid: ns.pid,
                ports: ports.iter().flat_map(|p| parse_ports(p).unwrap()).collect(),
            })
            .await;
        eprintln!("attach {name}: {:?}", t.elapsed());
        r
    }
}

/// A test container's id, derived from its name (unique within a test) so that the test can
/// name the host end of its veth without matching other tests' links.
fn container_id(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{hex:0<64}")[..64].to_string()
}

impl Drop for Node {
    fn drop(&mut self) {
        cleanup(self.dir.path());
    }
}

fn cleanup(root: &Path) {
    berth_tests::remove_networks(root);
}

fn host_tables() -> String {
    let mut s = String::new();
    for args in [vec!["-br", "link"], vec!["-4", "addr"], vec!["-4", "route"]] {
        s += &String::from_utf8_lossy(&Command::new("ip").args(&args).output().unwrap().stdout);
    }
    for t in ["filter", "nat"] {
        s += &String::from_utf8_lossy(
            &Command::new("iptables")
                .args(["-w", "-t", t, "-S"])
                .output()
                .unwrap()
                .stdout,
        );
    }
    s
}

fn try_http_get(addr: &str) -> std::io::Result<String> {
    let mut c = std::net::TcpStream::connect(addr)?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    c.read_to_string(&mut out)?;
    Ok(out)
}

/// GET through a published port until the body ends with `want` (the server may still be
/// starting: the proxy then closes the connection).
fn http_get(addr: &str, want: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = try_http_get(addr);
        match &r {
            Ok(b) if b.ends_with(want) => return b.clone(),
            _ if Instant::now() > deadline => panic!("GET {addr}: {r:?}"),
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_containers_reach_each_other_by_name() {
    need_root!();
    let node = Node::new();
    let info = node.net.create("proj_default", None).await.unwrap();
    assert!(info.bridge.starts_with("berth-") && info.bridge.len() <= 15);
    let gw = info.gateway.clone();
    let mut web = Ns::new();
    let client = Ns::new();
    web.httpd("hello from web");
    let a = node
        .attach("proj_default", &web, "proj-web-1", &["web"], &[])
        .await
        .unwrap();
    let b = node
        .attach("proj_default", &client, "proj-client-1", &["client"], &[])
        .await
        .unwrap();
    assert_ne!(a.address, b.address);
    assert!(a.subnet.contains(&a.address) && a.gateway.to_string() == gw);
    assert!(web.links().contains("eth0"), "{}", web.links());

    // The network's DNS server knows the service name and the container name.
    assert_eq!(client.nslookup("web", &gw), vec![a.address.to_string()]);
    assert_eq!(
        client.nslookup("proj-web-1", &gw),
        vec![a.address.to_string()]
    );
    assert_eq!(
        client.nslookup("web.proj_default", &gw),
        vec![a.address.to_string()]
    );
    assert!(client.nslookup("nothing-here", &gw).is_empty());

    // And the client's resolver, pointed at it, reaches the web server by name.
    client.resolver(&gw);
    assert_eq!(client.wget_retry("http://web/"), "hello from web");
    assert_eq!(client.wget_retry("http://proj-web-1/"), "hello from web");

    // The records say who is where.
    let i = node.net.inspect("proj_default").unwrap();
    assert_eq!(i.endpoints.len(), 2);
    assert!(i.endpoints.iter().any(|e| e.container_name == "proj-web-1"
        && e.address == format!("{}/{}", a.address, a.subnet.prefix_len())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_port_is_reached_from_the_host_on_loopback() {
    need_root!();
    let node = Node::new();
    node.net.create("pub", None).await.unwrap();
    let mut web = Ns::new();
    web.httpd("published body");
    let port = berth_tests::free_port();
    let a = node
        .attach(
            "pub",
            &web,
            "pub-web-1",
            &[],
            &[&format!("127.0.0.1:{port}:80"), "127.0.0.1::80"],
        )
        .await
        .unwrap();
    assert_eq!(a.ports.len(), 2);
    assert_eq!(a.ports[0].host_port, port);
    let chosen = a.ports[1].host_port;
    assert_ne!(chosen, 0, "a port asked as 0 is given its real number");
    let body = http_get(&format!("127.0.0.1:{port}"), "published body");
    assert!(body.starts_with("HTTP/1."), "{body}");
    http_get(&format!("127.0.0.1:{chosen}"), "published body");
    assert_eq!(node.net.ports("pub-web-1").unwrap().unwrap(), a.ports);

    // Detaching frees the ports at once.
    let id = node.net.inspect("pub").unwrap().endpoints[0]
        .container_id
        .clone();
    node.net.detach("pub", &id).await.unwrap();
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port free after detach");
    std::net::TcpListener::bind(("127.0.0.1", chosen)).expect("port free after detach");
    assert!(node.net.ports("pub-web-1").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_port_is_published() {
    need_root!();
    let node = Node::new();
    node.net.create("udp", None).await.unwrap();
    let ns = Ns::new();
    // A UDP echo server inside the namespace: a thread joins it and binds there.
    let nsfile = std::fs::File::open(format!("/run/netns/{}", ns.name)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        nix::sched::setns(&nsfile, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = std::net::UdpSocket::bind("0.0.0.0:5353").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        tx.send(()).unwrap();
        let mut b = [0u8; 512];
        while let Ok((n, from)) = s.recv_from(&mut b) {
            let mut r = b"echo:".to_vec();
            r.extend_from_slice(&b[..n]);
            let _ = s.send_to(&r, from);
        }
    });
    rx.recv().unwrap();
    let a = node
        .attach("udp", &ns, "udp-1", &[], &["127.0.0.1::5353/udp"])
        .await
        .unwrap();
    let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.send_to(b"ping", ("127.0.0.1", a.ports[0].host_port))
        .unwrap();
    let mut b = [0u8; 64];
    let (n, _) = c.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], b"echo:ping");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_answer_by_service_name_and_follow_removal() {
    need_root!();
    let node = Node::new();
    let info = node.net.create("scale", None).await.unwrap();
    let gw = info.gateway.clone();
    let mut replicas: Vec<Ns> = (0..3).map(|_| Ns::new()).collect();
    let mut addrs = Vec::new();
    for (i, r) in replicas.iter_mut().enumerate() {
        r.httpd(&format!("replica {}", i + 1));
    }
    for (i, r) in replicas.iter().enumerate() {
        let a = node
            .attach("scale", r, &format!("scale-api-{}", i + 1), &["api"], &[])
            .await
            .unwrap();
        addrs.push(a.address.to_string());
    }
    let client = Ns::new();
    node.attach("scale", &client, "scale-client-1", &[], &[])
        .await
        .unwrap();

    // Every replica's address, and the first one rotates from answer to answer.
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let mut got = client.nslookup("api", &gw);
        firsts.insert(got[0].clone());
        got.sort();
        let mut want = addrs.clone();
        want.sort();
        assert_eq!(got, want);
    }
    assert_eq!(
        firsts.len(),
        3,
        "round robin: each replica comes first once"
    );

    // The name reaches a replica, and each replica answers by its container name. (Which
    // replica `api` reaches is the client's choice: glibc's getaddrinfo sorts the answers by
    // RFC 6724 rule 9, longest matching prefix, so it may always pick the same one.)
    client.resolver(&gw);
    let body = client.wget_retry("http://api/");
    assert!(body.starts_with("replica "), "{body}");
    for i in 1..=3 {
        assert_eq!(
            client.wget_retry(&format!("http://scale-api-{i}/")),
            format!("replica {i}")
        );
    }

    // Replica 2 goes away without a detach (the container died): its address leaves the
    // answers at once, without restarting anything.
    replicas[1].stop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut got = client.nslookup("api", &gw);
        got.sort();
        if got == vec![addrs[0].clone(), addrs[2].clone()] {
            break;
        }
        assert!(Instant::now() < deadline, "still answered {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Scaling up again: a fourth replica is answered as soon as it is attached.
    let mut r4 = Ns::new();
    r4.httpd("replica 4");
    let a4 = node
        .attach("scale", &r4, "scale-api-4", &["api"], &[])
        .await
        .unwrap();
    // Addresses are handed out round the subnet: the dead replica's is not reused at once
    // (a neighbour's ARP entry for it may still be fresh).
    assert_ne!(a4.address.to_string(), addrs[1]);
    assert!(node
        .net
        .inspect("scale")
        .unwrap()
        .endpoints
        .iter()
        .all(|e| !e.address.starts_with(&format!("{}/", addrs[1]))));
    let mut got = client.nslookup("api", &gw);
    got.sort();
    assert_eq!(got.len(), 3, "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_networks_cannot_reach_each_other() {
    need_root!();
    let node = Node::new();
    let n1 = node.net.create("iso_one", None).await.unwrap();
    let n2 = node.net.create("iso_two", None).await.unwrap();
    assert_ne!(n1.subnet, n2.subnet);
    let mut web = Ns::new();
    web.httpd("one");
    let peer = Ns::new();
    let stranger = Ns::new();
    let a = node
        .attach("iso_one", &web, "one-web-1", &["web"], &[])
        .await
        .unwrap();
    node.attach("iso_one", &peer, "one-peer-1", &[], &[])
        .await
        .unwrap();
    node.attach("iso_two", &stranger, "two-stranger-1", &[], &[])
        .await
        .unwrap();
    let url = format!("http://{}/", a.address);
    assert_eq!(peer.wget_retry(&url), "one");
    let e = stranger
        .wget(&url)
        .expect_err("a container of another network must not connect");
    assert!(!e.contains("one"), "{e}");
    // Nor does the other network's DNS know the name.
    assert!(stranger.nslookup("web", &n2.gateway).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_port_is_refused_and_nothing_is_left() {
    need_root!();
    let node = Node::new();
    let info = node.net.create("taken", None).await.unwrap();
    let holder = std::net::TcpListener::bind(("127.0.0.1", berth_tests::free_port())).unwrap();
    let port = holder.local_addr().unwrap().port();
    let ns = Ns::new();
    let free = berth_tests::free_port();
    let e = node
        .attach(
            "taken",
            &ns,
            "taken-web-1",
            &[],
            &[
                &format!("127.0.0.1:{free}:81"),
                &format!("127.0.0.1:{port}:80"),
            ],
        )
        .await
        .expect_err("the port is taken");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}"))
            && msg.contains("taken-web-1")
            && msg.contains("in use"),
        "{msg}"
    );
    // Nothing half made: no endpoint, no veth, no eth0 in the namespace, the other port free.
    assert!(node.net.inspect("taken").unwrap().endpoints.is_empty());
    let veth = berth_net::store::veth_name(&info.bridge, &container_id("taken-web-1"));
    let tables = host_tables();
    assert!(
        !tables.contains(&veth),
        "no veth of this network ({veth} on {})",
        info.bridge
    );
    assert!(!ns.links().contains("eth0"), "{}", ns.links());
    std::net::TcpListener::bind(("127.0.0.1", free)).expect("the first port was released");
    // Once the port is free the same container attaches.
    drop(holder);
    node.attach(
        "taken",
        &ns,
        "taken-web-1",
        &[],
        &[&format!("127.0.0.1:{port}:80")],
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_leaves_nothing_in_the_host_tables() {
    need_root!();
    let node = Node::new();
    let info = node.net.create("gone", None).await.unwrap();
    let tables = host_tables();
    assert!(tables.contains(&info.bridge));
    assert!(
        tables.contains(&format!("berth:{}", info.bridge)),
        "rules are tagged"
    );
    let one = Ns::new();
    let two = Ns::new();
    let a1 = node.attach("gone", &one, "gone-1", &[], &[]).await.unwrap();
    let a2 = node
        .attach("gone", &two, "gone-2", &[], &["127.0.0.1::80"])
        .await
        .unwrap();
    assert!(host_tables().contains(&a1.veth) && host_tables().contains(&a2.veth));

    // Refused while a live container is attached.
    let e = node.net.remove("gone").await.expect_err("in use");
    assert!(
        e.to_string().contains("gone-1") && e.to_string().contains("gone-2"),
        "{e}"
    );
    let id1 = node.net.inspect("gone").unwrap().endpoints[0]
        .container_id
        .clone();
    node.net.detach("gone", &id1).await.unwrap();
    assert!(!host_tables().contains(&a1.veth), "detach removes the veth");
    assert!(!one.links().contains("eth0"));
    // The other container ends without being detached; removal releases it.
    let mut two = two;
    two.stop();
    node.net.remove("gone").await.unwrap();
    let after = host_tables();
    for name in [&info.bridge, &a1.veth, &a2.veth, &info.subnet] {
        assert!(
            !after.contains(name.as_str()),
            "{name} is left in the host's tables:\n{after}"
        );
    }
    assert!(!after.contains(&format!("berth:{}", info.bridge)));
    assert!(node.net.list().unwrap().is_empty());
    assert!(!node.dir.path().join("networks/gone.json").exists());
    std::net::TcpListener::bind(("127.0.0.1", a2.ports[0].host_port)).expect("port released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_keeps_addresses_and_ports() {
    need_root!();
    let dir = tempfile::Builder::new()
        .prefix("berth-net-")
        .tempdir()
        .unwrap();
    let root = dir.path().to_path_buf();
    let node = Node::at(dir);
    node.net
        .create("keep", Some("10.89.250.0/29"))
        .await
        .unwrap();
    // A subnet that overlaps an existing network is refused, naming it.
    let e = node
        .net
        .create("keep2", Some("10.89.250.0/24"))
        .await
        .expect_err("overlap");
    assert!(e.to_string().contains("\"keep\""), "{e}");
    let mut web = Ns::new();
    web.httpd("kept");
    let port = berth_tests::free_port();
    let a = node
        .attach(
            "keep",
            &web,
            "keep-web-1",
            &[],
            &[&format!("127.0.0.1:{port}:80")],
        )
        .await
        .unwrap();

    // The service restarts: a new Net on the same data root (the old one's tasks end).
    let mut node2 = node;
    node2.net = Net::new(NetConfig::new(&root));
    node2.net.restore().await.unwrap();
    http_get(&format!("127.0.0.1:{port}"), "kept");
    // The live container's address is not handed out again; the /29 has 4 more.
    let mut others = Vec::new();
    for i in 0..4 {
        let ns = Ns::new();
        let b = node2
            .attach("keep", &ns, &format!("keep-x-{i}"), &[], &[])
            .await
            .unwrap();
        assert_ne!(b.address, a.address);
        others.push(ns);
    }
    let ns = Ns::new();
    let e = node2
        .attach("keep", &ns, "keep-too-many", &[], &[])
        .await
        .expect_err("full");
    assert!(matches!(e, NetError::Exhausted(_)), "{e}");
}

/// Containers created by the isolator service on a bridge network, killed by their init
/// pid on drop (the shim then removes the cgroup), and the networks of the data root removed.
struct Containers {
    ctx: berth_bus::ServiceContext,
    inits: Vec<(i32, i32)>,
}

impl Drop for Containers {
    fn drop(&mut self) {
        for (init, shim) in &self.inits {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*init),
                nix::sys::signal::Signal::SIGKILL,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while berth_isolator::alive(*shim) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.ctx.shutdown.cancel();
        cleanup(&self.ctx.config.data_root);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolator_containers_on_a_bridge_network() {
    use berth_bus::RequestOptions;
    use berth_proto::isolator::*;
    use berth_proto::network::*;

    need_root!();
    let shim = berth_tests::bin_dir().join("berth-shim");
    if !shim.exists() {
        eprintln!("skipped: berth-shim is not built (cargo build --workspace --bins)");
        return;
    }
    let nats = berth_tests::nats::NatsServer::start();
    let dir = tempfile::Builder::new()
        .prefix("berth-net-iso-")
        .tempdir()
        .unwrap();
    let ctx = nats.context("n1", dir.path()).await;
    let bus = nats.bus("n1").await;
    let rootfs = berth_tests::rootfs::Rootfs::new();
    let mut cs = Containers {
        ctx: ctx.clone(),
        inits: Vec::new(),
    };
    let svc = ctx.clone();
    tokio::spawn(async move { berth_isolator::run(svc).await.expect("isolator") });
    let opts = RequestOptions::timeout(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(10);
    let info: NetworkInfo = loop {
        match bus
            .ask_local::<berth_proto::isolator::verbs::NetworkCreate>(
                &NetworkCreateRequest {
                    name: "app_default".into(),
                    subnet: None,
                },
                &RequestOptions::timeout(Duration::from_secs(2)),
            )
            .await
        {
            Ok(i) => break i,
            Err(e) => {
                assert!(Instant::now() < deadline, "network-create: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let port = berth_tests::free_port();
    let spec = |name: &str, script: &str| ContainerSpec {
        id: berth_bus::random_hex(64),
        name: name.into(),
        image: "busybox-test".into(),
        args: vec!["/bin/sh".into(), "-c".into(), script.into()],
        env: vec!["PATH=/bin".into()],
        seccomp: true,
        no_new_privileges: true,
        network: NetworkMode::Bridge("app_default".into()),
        ..Default::default()
    };
    let mut web = spec(
        "app-web-1",
        "mkdir -p /tmp/www && echo served by web > /tmp/www/index.html && exec httpd -f -p 80 -h /tmp/www",
    );
    web.aliases = vec!["web".into()];
    web.ports = parse_ports(&format!("127.0.0.1:{port}:80")).unwrap();
    let client = spec(
        "app-client-1",
        "cat /etc/resolv.conf; for i in $(seq 1 100); do wget -q -O - http://web/ && exit 0; sleep 0.1; done; exit 1",
    );
    for s in [&web, &client] {
        let t = Instant::now();
        let r: CreateReply = bus
            .ask_local::<berth_proto::isolator::verbs::Create>(
                // Released by the isolator itself once its network is attached.
                &CreateRequest {
                    spec: s.clone(),
                    rootfs: rootfs.container(&s.id),
                    release: true,
                },
                &opts,
            )
            .await
            .unwrap_or_else(|e| panic!("create {}: {e}", s.name));
        eprintln!("create {} on a bridge network: {:?}", s.name, t.elapsed());
        cs.inits.push((r.init_pid as i32, r.shim_pid as i32));
    }
    // The client reached the web server by its service name and exits 0.
    let exit = ctx.config.container_run_dir(&client.id).join(EXIT_FILE);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exit.exists() {
        assert!(Instant::now() < deadline, "client did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st: ExitStatus = serde_json::from_slice(&std::fs::read(&exit).unwrap()).unwrap();
    let log = std::fs::read_to_string(ctx.config.container_dir(&client.id).join(LOG_FILE)).unwrap();
    assert_eq!(st.exit_code, 0, "client log: {log}");
    assert!(log.contains("served by web"), "{log}");
    assert!(
        log.contains(&format!("nameserver {}", info.gateway)),
        "{log}"
    );
    // The published port answers on the host's loopback; `ports` reports it.
    assert!(http_get(&format!("127.0.0.1:{port}"), "served by web\n").starts_with("HTTP/1."));
    let p: PortsReply = bus
        .ask_local::<berth_proto::isolator::verbs::Ports>(
            &PortsRequest {
                container: "app-web-1".into(),
            },
            &opts,
        )
        .await
        .unwrap();
    assert_eq!(p.ports, web.ports);
    // A second container asking for the same port is refused, naming it, and nothing of
    // it is left (no run dir, no container dir, no endpoint).
    let dup = {
        let mut d = spec("app-web-2", "exec httpd -f -p 80 -h /");
        d.ports = web.ports.clone();
        d
    };
    let e = bus
        .ask_local::<berth_proto::isolator::verbs::Create>(
            &CreateRequest {
                spec: dup.clone(),
                rootfs: rootfs.container(&dup.id),
                release: false,
            },
            &opts,
        )
        .await
        .expect_err("port taken");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("127.0.0.1:{port}")) && msg.contains("app-web-2"),
        "{msg}"
    );
    assert!(
        !ctx.config.container_run_dir(&dup.id).exists(),
        "run dir left"
    );
    assert!(
        !ctx.config.container_dir(&dup.id).exists(),
        "container dir left"
    );
    let i: NetworkInfo = bus
        .ask_local::<berth_proto::isolator::verbs::NetworkInspect>(
            &NetworkInspectRequest {
                name: "app_default".into(),
            },
            &opts,
        )
        .await
        .unwrap();
    assert!(!i.endpoints.iter().any(|e| e.container_name == "app-web-2"));
    // Removal is refused while web runs; once it has ended, the sweep releases it.
    let e = bus
        .ask_local::<berth_proto::isolator::verbs::NetworkRemove>(
            &NetworkRemoveRequest {
                name: "app_default".into(),
            },
            &opts,
        )
        .await
        .expect_err("in use");
    assert!(e.to_string().contains("app-web-1"), "{e}");
    drop(
        std::mem::take(&mut cs.inits)
            .into_iter()
            .map(|(init, shim)| {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(init),
                    nix::sys::signal::Signal::SIGKILL,
                );
                shim
            })
            .collect::<Vec<_>>(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = bus
            .ask_local::<berth_proto::isolator::verbs::NetworkRemove>(
                &NetworkRemoveRequest {
                    name: "app_default".into(),
                },
                &opts,
            )
            .await;
        if r.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "network-remove: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!host_tables().contains(&info.bridge));
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("port released");
}

#[test]
fn cli_network_verbs_through_berthd() {
    need_root!();
    use berth_tests::daemon::{stderr, stdout, Berthd};
    let d = Berthd::start();
    let root = d.data_root();
    struct Clean(PathBuf);
    impl Drop for Clean {
        fn drop(&mut self) {
            cleanup(&self.0);
        }
    }
    let _clean = Clean(root.clone());
    let o = d.berth(&["network", "create", "--subnet", "10.89.251.0/28", "clinet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "clinet\n");
    let o = d.berth(&["network", "ls"]);
    let out = stdout(&o);
    assert!(
        out.starts_with("NAME") && out.contains("clinet") && out.contains("10.89.251.0/28"),
        "{out}"
    );
    let o = d.berth(&["network", "ls", "-q"]);
    assert_eq!(stdout(&o), "clinet\n");
    let o = d.berth(&["network", "inspect", "clinet"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["gateway"], "10.89.251.1");
    let bridge = v[0]["bridge"].as_str().unwrap().to_string();
    assert!(host_tables().contains(&bridge));
    let o = d.berth(&["network", "create", "clinet"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = d.berth(&["port", "nothing-like-this"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not attached"), "{}", stderr(&o));
    let o = d.berth(&["network", "rm", "clinet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!host_tables().contains(&bridge));
    let o = d.berth(&["network", "inspect", "clinet"]);
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
}

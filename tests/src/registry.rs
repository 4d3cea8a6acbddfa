//! A real registry (Debian's `docker-registry`, i.e. distribution) on a free loopback port,
//! storing into a temp dir, optionally behind htpasswd Basic auth or a token server. Killed by
//! pid on Drop. Fronts put in front of it redirect blobs, send them slowly, or inject faults
//! (statuses, cut answers, wrong media types, redirects) over plain HTTP or TLS ([`FaultFront`],
//! [`TestTls`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The registry binary: `BERTH_REGISTRY_BIN`, else `/usr/bin/docker-registry`.
pub fn registry_bin() -> String {
    std::env::var("BERTH_REGISTRY_BIN").unwrap_or_else(|_| "/usr/bin/docker-registry".to_string())
}

pub struct Registry {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// `(user, password)` when started behind htpasswd or a token server.
    pub auth: Option<(String, String)>,
    child: Option<Child>,
    config: PathBuf,
    token: Option<TokenServer>,
}

impl Registry {
    /// Start an open registry.
    pub fn start() -> Registry {
        Self::start_inner(None)
    }

    /// Start a registry that wants Basic credentials `user`/`password` (htpasswd, bcrypt).
    pub fn start_with_auth(user: &str, password: &str) -> Registry {
        Self::start_inner(Some((user.to_string(), password.to_string())))
    }

    /// Start a registry using Bearer tokens from a [`TokenServer`] that grants the pull and
    /// push scopes asked for to `user`/`password` only, tokens accepted by the registry for
    /// `ttl_secs` after they are issued (see [`TokenServer`] on distribution's leeway).
    pub fn start_with_token(user: &str, password: &str, ttl_secs: u64) -> Registry {
        Self::start_full(
            Some((user.to_string(), password.to_string())),
            Some(ttl_secs),
        )
    }

    fn start_inner(auth: Option<(String, String)>) -> Registry {
        Self::start_full(auth, None)
    }

    fn start_full(auth: Option<(String, String)>, token_ttl: Option<u64>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("berth-registry-")
            .tempdir()
            .expect("tempdir");
        let port = crate::free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).expect("storage dir");
        let mut auth_block = String::new();
        let mut token = None;
        if let (Some((user, password)), Some(ttl)) = (&auth, token_ttl) {
            let t = TokenServer::start(dir.path(), user, password, ttl);
            auth_block = format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                t.port,
                TokenServer::SERVICE,
                TokenServer::ISSUER,
                t.cert.display()
            );
            token = Some(t);
        } else if let Some((user, password)) = &auth {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-B", "-b", "-c"])
                .arg(&htpasswd)
                .arg(user)
                .arg(password)
                .output()
                .expect("htpasswd (apache2-utils) is needed for registries with auth");
            assert!(
                out.status.success(),
                "htpasswd: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            auth_block = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                htpasswd.display()
            );
        }
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: {}\n{auth_block}",
                storage.display(),
                berth_bus::random_hex(32)
            ),
        )
        .expect("write registry config");
        let mut r = Registry {
            port,
            dir,
            auth,
            child: None,
            config,
            token,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("registry.log"))
            .expect("registry log");
        let child = Command::new(registry_bin())
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", registry_bin()));
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(15));
    }

    /// Wait until `GET /v2/` answers (200, or 401 behind auth).
    fn wait_ready(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
                let mut buf = [0u8; 32];
                if s.write_all(req.as_bytes()).is_ok() {
                    if let Ok(n) = s.read(&mut buf) {
                        let head = String::from_utf8_lossy(&buf[..n]);
                        if head.contains(" 200 ") || head.contains(" 401 ") {
                            return;
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "the registry on 127.0.0.1:{} is not ready after {within:?}; log: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
        );
    }

    /// `127.0.0.1:<port>`: the registry part of references to it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Kill the registry (SIGKILL, by pid) and reap it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freeze the registry (SIGSTOP, by pid): connections stay open but nothing more is sent.
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGSTOP,
            )
            .expect("SIGSTOP the registry");
        }
    }

    /// Let a paused registry go on (SIGCONT, by pid).
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGCONT,
            )
            .expect("SIGCONT the registry");
        }
    }

    /// Start it again on the same port with the same storage.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`) on its disk.
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
        self.storage_root()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The registry's log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Credentials as `user:password` for skopeo's `--dest-creds`.
    pub fn creds_arg(&self) -> Option<String> {
        self.auth.as_ref().map(|(u, p)| format!("{u}:{p}"))
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Tokens issued so far by the token server (0 without one).
    pub fn tokens_issued(&self) -> usize {
        self.token.as_ref().map(|t| t.issued()).unwrap_or(0)
    }

    /// The port of its token server, if it has one.
    pub fn token_port(&self) -> Option<u16> {
        self.token.as_ref().map(|t| t.port)
    }

    /// The lifetime of the tokens issued from now on (a registry started with a token server).
    pub fn set_token_ttl(&self, ttl_secs: u64) {
        self.token
            .as_ref()
            .expect("a registry with a token server")
            .set_ttl(ttl_secs);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A front for a [`Registry`] that sends blob downloads elsewhere, as registries backed by
/// object storage do: `GET /v2/<name>/blobs/<digest>` on `127.0.0.1:<port>` is answered with a
/// 307 to `127.0.0.2:<storage_port>` (another origin), which serves the blob from the registry
/// with its own credentials and counts requests that arrived carrying an `Authorization`
/// header. Everything else is passed through to the registry. Stopped on Drop.
pub struct BlobRedirector {
    pub port: u16,
    pub storage_port: u16,
    storage_hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    leaked_auth: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BlobRedirector {
    /// Start in front of the registry on 127.0.0.1:`upstream`; `storage_auth` is the
    /// `Authorization` value the storage side uses towards the registry, if it needs one.
    pub async fn start(upstream: u16, storage_auth: Option<String>) -> BlobRedirector {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind front");
        let storage = tokio::net::TcpListener::bind("127.0.0.2:0")
            .await
            .expect("bind 127.0.0.2");
        let port = front.local_addr().unwrap().port();
        let storage_port = storage.local_addr().unwrap().port();
        let storage_hits = Arc::new(AtomicUsize::new(0));
        let leaked_auth = Arc::new(AtomicUsize::new(0));
        let front_task = tokio::spawn(async move {
            while let Ok((mut c, _)) = front.accept().await {
                tokio::spawn(async move {
                    let Some((head, path)) = read_head(&mut c).await else {
                        return;
                    };
                    if head.starts_with("GET ")
                        && path.starts_with("/v2/")
                        && path.contains("/blobs/")
                    {
                        let resp = format!(
                            "HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.2:{storage_port}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        );
                        let _ = tokio::io::AsyncWriteExt::write_all(&mut c, resp.as_bytes()).await;
                        return;
                    }
                    forward(c, &head, upstream, None).await;
                });
            }
        });
        let (hits, leaked) = (storage_hits.clone(), leaked_auth.clone());
        let storage_task = tokio::spawn(async move {
            while let Ok((mut c, _)) = storage.accept().await {
                let (hits, leaked, auth) = (hits.clone(), leaked.clone(), storage_auth.clone());
                tokio::spawn(async move {
                    let Some((head, _)) = read_head(&mut c).await else {
                        return;
                    };
                    hits.fetch_add(1, Ordering::SeqCst);
                    if head
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    {
                        leaked.fetch_add(1, Ordering::SeqCst);
                    }
                    forward(c, &head, upstream, auth.as_deref()).await;
                });
            }
        });
        BlobRedirector {
            port,
            storage_port,
            storage_hits,
            leaked_auth,
            tasks: vec![front_task, storage_task],
        }
    }

    /// `127.0.0.1:<port>`: the registry name to pull through.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Requests the storage side served.
    pub fn storage_hits(&self) -> usize {
        self.storage_hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Requests that reached the storage side with an `Authorization` header.
    pub fn leaked_auth(&self) -> usize {
        self.leaked_auth.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for BlobRedirector {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The request head (up to the blank line) and its target, from a plain connection.
async fn read_head(c: &mut tokio::net::TcpStream) -> Option<(String, String)> {
    read_head_any(c, true).await
}

/// Send a GET/HEAD request head to the registry (one request per connection, with
/// `Authorization` replaced by `auth` when given) and pipe the answer back.
async fn forward(mut c: tokio::net::TcpStream, head: &str, upstream: u16, auth: Option<&str>) {
    use tokio::io::AsyncWriteExt;
    let Some(mut up) = send_upstream(head, upstream, auth).await else {
        return;
    };
    let _ = tokio::io::copy(&mut up, &mut c).await;
    let _ = c.shutdown().await;
}

/// Connect to the registry and send it a request head (see [`forward`]).
async fn send_upstream(
    head: &str,
    upstream: u16,
    auth: Option<&str>,
) -> Option<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let mut up = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
        .await
        .ok()?;
    let mut out = String::new();
    for (i, line) in head.trim_end().split("\r\n").enumerate() {
        let lower = line.to_ascii_lowercase();
        if i > 0
            && (lower.starts_with("connection:")
                || lower.starts_with("host:")
                || (auth.is_some() && lower.starts_with("authorization:")))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!(
        "Host: 127.0.0.1:{upstream}\r\nConnection: close\r\n"
    ));
    if let Some(a) = auth {
        out.push_str(&format!("Authorization: {a}\r\n"));
    }
    out.push_str("\r\n");
    up.write_all(out.as_bytes()).await.ok()?;
    Some(up)
}

/// A slow front for a [`Registry`] on `127.0.0.1:<port>`: every request is passed through, and
/// the answers to blob downloads are sent at most `bytes_per_sec` (a long pull without huge
/// images). The first blob answer still being sent `cut_after` after it began is cut (the
/// connection closed mid-body, once), so the client has to resume it. Counts the answers 401 to
/// requests that carried a Bearer token (`refused`) and the 206 answers (`partial`). Stopped on
/// Drop.
pub struct SlowFront {
    pub port: u16,
    refused: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    partial: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl SlowFront {
    pub async fn start(
        upstream: u16,
        bytes_per_sec: u64,
        cut_after: Option<Duration>,
    ) -> SlowFront {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let front = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the slow front");
        let port = front.local_addr().unwrap().port();
        let refused = Arc::new(AtomicUsize::new(0));
        let partial = Arc::new(AtomicUsize::new(0));
        let cut_done = Arc::new(AtomicBool::new(cut_after.is_none()));
        let (r, p) = (refused.clone(), partial.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut c, _)) = front.accept().await {
                let (refused, partial, cut_done) = (r.clone(), p.clone(), cut_done.clone());
                tokio::spawn(async move {
                    let Some((head, path)) = read_head(&mut c).await else {
                        return;
                    };
                    let blob = head.starts_with("GET ") && path.contains("/blobs/");
                    let bearer = head
                        .lines()
                        .any(|l| l.to_ascii_lowercase().starts_with("authorization: bearer "));
                    let Some(mut up) = send_upstream(&head, upstream, None).await else {
                        return;
                    };
                    let began = Instant::now();
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut status: Option<u16> = None;
                    let mut answer_head = Vec::new();
                    let mut sent = 0u64;
                    loop {
                        let n = match up.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if status.is_none() {
                            answer_head.extend_from_slice(&buf[..n]);
                            let text = String::from_utf8_lossy(&answer_head);
                            if let Some(line) =
                                text.split("\r\n").next().filter(|_| text.contains("\r\n"))
                            {
                                let code = line
                                    .split_whitespace()
                                    .nth(1)
                                    .and_then(|c| c.parse().ok())
                                    .unwrap_or(0);
                                status = Some(code);
                                if code == 401 && bearer {
                                    refused.fetch_add(1, Ordering::SeqCst);
                                }
                                if code == 206 {
                                    partial.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                        let body = blob && matches!(status, Some(200 | 206));
                        if body {
                            if let Some(cut) = cut_after {
                                if began.elapsed() >= cut && !cut_done.swap(true, Ordering::SeqCst)
                                {
                                    return; // both connections dropped mid-body
                                }
                            }
                        }
                        if c.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        if body {
                            sent += n as u64;
                            let due =
                                began + Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
                            tokio::time::sleep_until(due.into()).await;
                        }
                    }
                    let _ = c.shutdown().await;
                });
            }
        });
        SlowFront {
            port,
            refused,
            partial,
            task,
        }
    }

    /// `127.0.0.1:<port>`: the registry name to pull through.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Answers 401 to requests that carried a Bearer token (the registry refused the token).
    pub fn refused(&self) -> usize {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Answers 206 (a download resumed with a Range request).
    pub fn partial(&self) -> usize {
        self.partial.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for SlowFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A token server for a registry with `auth: token` (what docker_auth or Docker Hub's
/// auth.docker.io do): `GET /token?service=&scope=repository:<name>:<actions>` with Basic
/// credentials answers a JWT (RS256, signed by `openssl` with a self-signed certificate the
/// registry trusts, sent in the `x5c` header) and `expires_in` = the ttl. distribution accepts a
/// token until [`TokenServer::REGISTRY_LEEWAY`] past its `exp` (clock skew), so `exp` is set
/// that much before the end of the ttl: the registry refuses the token `ttl` seconds after it
/// was issued. Runs on its own thread (the test's runtime may be blocked in skopeo); stopped on
/// Drop.
pub struct TokenServer {
    pub port: u16,
    pub cert: PathBuf,
    issued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ttl: std::sync::Arc<std::sync::atomic::AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TokenServer {
    pub const SERVICE: &'static str = "berth-test-registry";
    pub const ISSUER: &'static str = "berth-test-issuer";
    /// How long past a token's `exp` distribution still accepts it (its `token.Leeway`).
    pub const REGISTRY_LEEWAY: u64 = 60;

    pub fn start(dir: &Path, user: &str, password: &str, ttl_secs: u64) -> TokenServer {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let key = dir.join("token-key.pem");
        let cert = dir.join("token-cert.pem");
        let out = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .args(["-subj", "/CN=berth-test-token", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let der = Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl x509");
        assert!(der.status.success());
        let x5c = b64(&der.stdout, false);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind token server");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(AtomicUsize::new(0));
        let ttl = Arc::new(std::sync::atomic::AtomicU64::new(ttl_secs));
        let stop = Arc::new(AtomicBool::new(false));
        let expected = format!(
            "Basic {}",
            b64(format!("{user}:{password}").as_bytes(), false)
        );
        let (issued2, stop2, ttl2, user) =
            (issued.clone(), stop.clone(), ttl.clone(), user.to_string());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let Ok((mut c, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut b = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") && buf.len() < 65536 {
                    match c.read(&mut b) {
                        Ok(1) => buf.push(b[0]),
                        _ => break,
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let authorized = head.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:")
                        && l[14..].trim() == expected
                });
                let resp = if !authorized {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                } else {
                    let target = head.split_whitespace().nth(1).unwrap_or("");
                    let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                    let mut access = Vec::new();
                    for pair in query.split('&') {
                        let Some(("scope", v)) = pair.split_once('=') else {
                            continue;
                        };
                        let v = percent_decode(v);
                        let parts: Vec<&str> = v.split(':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({
                                "type": parts[0], "name": parts[1],
                                "actions": parts[2].split(',').collect::<Vec<_>>(),
                            }));
                        }
                    }
                    let ttl_secs = ttl2.load(Ordering::SeqCst);
                    let token = sign_jwt(&key, &x5c, &user, access, ttl_secs);
                    issued2.fetch_add(1, Ordering::SeqCst);
                    let body =
                        serde_json::json!({"token": token, "expires_in": ttl_secs}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = c.write_all(resp.as_bytes());
            }
        });
        TokenServer {
            port,
            cert,
            issued,
            ttl,
            stop,
            thread: Some(thread),
        }
    }

    pub fn issued(&self) -> usize {
        self.issued.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The lifetime of the tokens issued from now on.
    pub fn set_ttl(&self, ttl_secs: u64) {
        self.ttl
            .store(ttl_secs, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A JWT the registry accepts from `nbf` (10 s ago) until `ttl` seconds from now.
fn sign_jwt(key: &Path, x5c: &str, sub: &str, access: Vec<serde_json::Value>, ttl: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": TokenServer::ISSUER, "sub": sub, "aud": TokenServer::SERVICE,
        "exp": (now + ttl).saturating_sub(TokenServer::REGISTRY_LEEWAY),
        "nbf": now - 10, "iat": now,
        "jti": berth_bus::random_hex(16), "access": access,
    });
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes(), true),
        b64(claims.to_string().as_bytes(), true)
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl dgst");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let sig = child.wait_with_output().expect("openssl dgst");
    assert!(sig.status.success());
    format!("{input}.{}", b64(&sig.stdout, true))
}

/// Base64 (standard with padding, or URL-safe without, as JWTs want).
fn b64(data: &[u8], url: bool) -> String {
    let table: &[u8] = if url {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A throwaway certificate authority and a server certificate it signed for `127.0.0.1`
/// (made by `openssl` in a temp dir, removed on Drop): for TLS fronts the client verifies.
pub struct TestTls {
    dir: tempfile::TempDir,
}

impl TestTls {
    pub fn new() -> TestTls {
        let dir = tempfile::Builder::new()
            .prefix("berth-tls-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=berth-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            d.join("ext.cnf"),
            "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n\
             keyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
        )
        .expect("ext.cnf");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            "server.pem",
        ]);
        openssl(&[
            "x509",
            "-in",
            "server.pem",
            "-outform",
            "DER",
            "-out",
            "server.der",
        ]);
        openssl(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            "server.key",
            "-outform",
            "DER",
            "-out",
            "server.key.der",
        ]);
        TestTls { dir }
    }

    /// The CA certificate (PEM), for a client's `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
        let cert = std::fs::read(self.dir.path().join("server.der")).expect("server.der");
        let key = std::fs::read(self.dir.path().join("server.key.der")).expect("server key");
        let config = tokio_rustls::rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert)],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
            )
            .expect("a TLS server config");
        tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config))
    }
}

impl Default for TestTls {
    fn default() -> Self {
        Self::new()
    }
}

/// The kinds of request a [`FaultFront`] tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `GET /v2/`
    Ping,
    /// The token server's realm (`/token`), when the registry has one.
    Token,
    /// `/v2/<name>/manifests/<reference>`
    Manifest,
    /// `/v2/<name>/blobs/<digest>` (configs and layers)
    Blob,
    Other,
}

/// What a [`FaultFront`] does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Pass it to the registry (or its token server) and the answer back unchanged.
    Pass,
    /// Answer this status with an empty body, and `Retry-After: <secs>` when given.
    Status(u16, Option<u64>),
    /// Pass it through, but close the connection after half of the answer's body.
    Truncate,
    /// Pass it through with the answer's `Content-Type` replaced by this one.
    ContentType(String),
    /// Answer `307` to this origin (`http://127.0.0.1:5000`) + the request's path and query.
    Redirect(String),
}

#[derive(Default)]
struct FrontState {
    /// Per kind: faults for the next requests, in order; then the one for all after.
    scripts: std::collections::HashMap<Kind, (std::collections::VecDeque<Fault>, Fault)>,
    seen: std::collections::HashMap<Kind, usize>,
    ranged: std::collections::HashMap<Kind, usize>,
}

/// A front for a [`Registry`] on `127.0.0.1:<port>`, over plain HTTP or TLS ([`TestTls`]),
/// that injects faults by kind of request ([`FaultFront::script`]) and counts the requests of
/// each kind that it received (`seen`) and those carrying a `Range` header (`ranged`). With a
/// registry that has a token server, the token realm in the registry's `WWW-Authenticate`
/// answers is rewritten to this front's `/token`, so token requests pass here too. One request
/// per connection (`Connection: close`). Stopped on Drop.
pub struct FaultFront {
    pub port: u16,
    scheme: &'static str,
    state: std::sync::Arc<std::sync::Mutex<FrontState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultFront {
    /// Start a front over plain HTTP (`tls` None) or TLS with `tls`'s certificate.
    pub async fn start(registry: &Registry, tls: Option<&TestTls>) -> FaultFront {
        use std::sync::{Arc, Mutex};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fault front");
        let port = listener.local_addr().unwrap().port();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let state = Arc::new(Mutex::new(FrontState::default()));
        let acceptor = tls.map(|t| t.acceptor());
        let route = Route {
            upstream: registry.port,
            token: registry.token_port(),
            front: format!("{scheme}://127.0.0.1:{port}"),
        };
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((c, _)) = listener.accept().await {
                let (st, route, acceptor) = (st.clone(), route.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(c).await {
                                serve_fault(tls, &st, &route, false).await;
                            }
                        }
                        None => serve_fault(c, &st, &route, true).await,
                    }
                });
            }
        });
        FaultFront {
            port,
            scheme,
            state,
            task,
        }
    }

    /// The next requests of `kind` get `first`, one each, in order; all after get `then`.
    pub fn script(&self, kind: Kind, first: Vec<Fault>, then: Fault) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .insert(kind, (first.into(), then));
    }

    /// Requests of `kind` received so far.
    pub fn seen(&self, kind: Kind) -> usize {
        *self.state.lock().unwrap().seen.get(&kind).unwrap_or(&0)
    }

    /// Requests of `kind` received with a `Range` header (resumed downloads).
    pub fn ranged(&self, kind: Kind) -> usize {
        *self.state.lock().unwrap().ranged.get(&kind).unwrap_or(&0)
    }

    /// `127.0.0.1:<port>`: the registry name to pull through.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http(s)://127.0.0.1:<port>`
    pub fn origin(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }
}

impl Drop for FaultFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where a [`FaultFront`] sends requests, and its own origin (for the token realm).
#[derive(Clone)]
struct Route {
    upstream: u16,
    token: Option<u16>,
    front: String,
}

/// Serve one request on `c` the way the front's script says.
async fn serve_fault<S>(mut c: S, state: &std::sync::Mutex<FrontState>, route: &Route, plain: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((head, target)) = read_head_any(&mut c, plain).await else {
        return;
    };
    let path = target.split('?').next().unwrap_or(&target);
    let kind = if path == "/v2/" || path == "/v2" {
        Kind::Ping
    } else if path.starts_with("/token") {
        Kind::Token
    } else if path.contains("/manifests/") {
        Kind::Manifest
    } else if path.contains("/blobs/") {
        Kind::Blob
    } else {
        Kind::Other
    };
    let fault = {
        let mut st = state.lock().unwrap();
        *st.seen.entry(kind).or_default() += 1;
        if head
            .lines()
            .any(|l| l.to_ascii_lowercase().starts_with("range:"))
        {
            *st.ranged.entry(kind).or_default() += 1;
        }
        match st.scripts.get_mut(&kind) {
            Some((first, then)) => first.pop_front().unwrap_or_else(|| then.clone()),
            None => Fault::Pass,
        }
    };
    let answer = |status: u16, extra: String| {
        format!("HTTP/1.1 {status} Fault\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n")
    };
    match &fault {
        Fault::Status(code, retry_after) => {
            let extra = retry_after
                .map(|s| format!("Retry-After: {s}\r\n"))
                .unwrap_or_default();
            let _ = c.write_all(answer(*code, extra).as_bytes()).await;
            let _ = c.shutdown().await;
            return;
        }
        Fault::Redirect(origin) => {
            let extra = format!("Location: {origin}{target}\r\n");
            let _ = c.write_all(answer(307, extra).as_bytes()).await;
            let _ = c.shutdown().await;
            return;
        }
        Fault::Pass | Fault::Truncate | Fault::ContentType(_) => {}
    }
    let port = match (kind, route.token) {
        (Kind::Token, Some(t)) => t,
        _ => route.upstream,
    };
    let Some(mut up) = send_upstream(&head, port, None).await else {
        return;
    };
    // The answer's head, then its body as it comes.
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    let split = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match up.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let body_start = buf.split_off(split);
    let answer_head = String::from_utf8_lossy(&buf).to_string();
    let mut out = String::new();
    let mut length = None;
    for line in answer_head.trim_end().split("\r\n") {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse::<u64>().ok();
        }
        if let (Fault::ContentType(t), true) = (&fault, lower.starts_with("content-type:")) {
            out.push_str(&format!("Content-Type: {t}\r\n"));
            continue;
        }
        if lower.starts_with("www-authenticate:") {
            if let Some(t) = route.token {
                let realm = format!("http://127.0.0.1:{t}");
                out.push_str(&line.replace(&realm, &route.front));
                out.push_str("\r\n");
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    if c.write_all(out.as_bytes()).await.is_err() {
        return;
    }
    // With Truncate, at most half the body, then the connection is closed.
    let mut budget = match (&fault, length) {
        (Fault::Truncate, Some(len)) => len / 2,
        (Fault::Truncate, None) => 0,
        _ => u64::MAX,
    };
    let mut pending = body_start;
    loop {
        let n = (pending.len() as u64).min(budget) as usize;
        if c.write_all(&pending[..n]).await.is_err() {
            return;
        }
        budget -= n as u64;
        if budget == 0 {
            break;
        }
        match up.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => pending = chunk[..n].to_vec(),
        }
    }
    let _ = c.flush().await;
    let _ = c.shutdown().await;
}

/// The request head and its path, from any stream; on a plain one, a TLS ClientHello (a
/// client trying HTTPS first) is hung up on at once.
async fn read_head_any<S>(c: &mut S, plain: bool) -> Option<(String, String)>
where
    S: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if c.read(&mut byte).await.ok()? == 0 || buf.len() > 64 * 1024 {
            return None;
        }
        if plain && buf.is_empty() && byte[0] == 0x16 {
            return None;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).ok()?;
    let path = head.split_whitespace().nth(1)?.to_string();
    Some((head, path))
}

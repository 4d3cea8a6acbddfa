//! A client of one registry endpoint (the origin or a mirror) for one repository, speaking the
//! OCI distribution API over reqwest: scheme selection (HTTPS, then plain HTTP only for
//! insecure registries), the `WWW-Authenticate` challenge (anonymous, Basic, Bearer tokens per
//! repository scope, refreshed when they expire or are refused mid-pull), redirects followed
//! by hand so credentials are sent only to the registry's own origin and never from HTTPS to
//! plain HTTP (unless the registry is insecure), and every request retried by one policy
//! (`crate::retry`).

use crate::error::{is_transient_status, PullError};
use crate::retry::{parse_retry_after, retry, RetryPolicy};
use crate::settings::RegistrySettings;
use base64::Engine;
use berth_docker::Credentials;
use bytes::Bytes;
use futures::StreamExt;
use reqwest::header::{
    HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, LOCATION, RANGE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Response, StatusCode, Url};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

pub const USER_AGENT: &str = concat!("berth/", env!("CARGO_PKG_VERSION"));
/// Manifests and indexes larger than this are refused (Docker's limit is the same).
pub const MANIFEST_LIMIT: usize = 4 << 20;

/// Where to reach a registry: `host[:port]`, with a fixed scheme when it was given as a URL.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    /// `host[:port]`, also the key of its settings and credentials.
    pub host: String,
    /// `https` or `http` when fixed by a mirror URL; chosen by probing otherwise.
    pub scheme: Option<String>,
    /// A path prefix of a mirror given as URL (`https://m.example/prefix`), without trailing `/`.
    pub prefix: String,
    pub is_mirror: bool,
}

impl EndpointSpec {
    /// The origin of a reference's registry (`docker.io` is served by `registry-1.docker.io`).
    pub fn origin(domain: &str) -> EndpointSpec {
        let host = if domain == berth_proto::reference::DEFAULT_DOMAIN {
            "registry-1.docker.io".to_string()
        } else {
            domain.to_string()
        };
        EndpointSpec {
            host,
            scheme: None,
            prefix: String::new(),
            is_mirror: false,
        }
    }

    /// A mirror as written in the settings: `host[:port]` or `http(s)://host[:port][/prefix]`.
    pub fn mirror(spec: &str) -> Result<EndpointSpec, String> {
        let spec = spec.trim().trim_end_matches('/');
        let (scheme, rest) = match spec.split_once("://") {
            Some((s @ ("http" | "https"), rest)) => (Some(s.to_string()), rest),
            Some((s, _)) => {
                return Err(format!(
                    "mirror {spec:?}: scheme {s:?} is not http or https"
                ))
            }
            None => (None, spec),
        };
        let (host, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h.to_string(), format!("/{p}")),
            None => (rest.to_string(), String::new()),
        };
        if host.is_empty() {
            return Err(format!("mirror {spec:?} has no host"));
        }
        Ok(EndpointSpec {
            host,
            scheme,
            prefix,
            is_mirror: true,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Challenge {
    /// The registry answered `/v2/` without asking for credentials.
    Anonymous,
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

#[derive(Default)]
struct TokenCache {
    token: Option<(String, Instant)>,
}

/// A connected endpoint for one repository.
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    /// The host as named in the reference or the settings (for messages and credentials).
    pub host: String,
    pub repository: String,
    pub is_mirror: bool,
    /// Plain HTTP allowed after a redirect (the registry is insecure).
    insecure: bool,
    policy: RetryPolicy,
    creds: Option<Credentials>,
    challenge: Mutex<Challenge>,
    token: Mutex<TokenCache>,
}

fn http_client(settings: &RegistrySettings, host: &str) -> Result<reqwest::Client, PullError> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(30));
    if let Some(ca) = &settings.ca_file {
        let pem = std::fs::read(ca).map_err(|e| PullError::Connect {
            registry: host.to_string(),
            reason: format!("CA file {}: {e}", ca.display()),
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| PullError::Connect {
            registry: host.to_string(),
            reason: format!("CA file {}: {e}", ca.display()),
        })?;
        b = b.add_root_certificate(cert);
    }
    if settings.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build()
        .map_err(|e| PullError::Internal(format!("HTTP client: {e}")))
}

/// The whole chain of causes of a reqwest error, on one line.
pub fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        src = c.source();
    }
    s
}

impl RegistryClient {
    /// Reach `spec` for `repository`: pick the scheme (HTTPS; plain HTTP only when the
    /// registry is insecure) and learn how it wants to be authenticated. The probe (`GET /v2/`
    /// on each scheme in turn) is retried as a whole by `policy`.
    pub async fn connect(
        spec: &EndpointSpec,
        settings: &RegistrySettings,
        repository: &str,
        creds: Option<Credentials>,
        policy: RetryPolicy,
    ) -> Result<RegistryClient, PullError> {
        let http = http_client(settings, &spec.host)?;
        let schemes: Vec<&str> = match spec.scheme.as_deref() {
            Some(s) => vec![s],
            None if settings.insecure => vec!["https", "http"],
            None => vec!["https"],
        };
        let mut bases = Vec::new();
        for scheme in schemes {
            let base =
                Url::parse(&format!("{scheme}://{}{}", spec.host, spec.prefix)).map_err(|e| {
                    PullError::Connect {
                        registry: spec.host.clone(),
                        reason: format!("not a valid address: {e}"),
                    }
                })?;
            bases.push(base);
        }
        let hint = if !settings.insecure && spec.scheme.is_none() {
            " (if it serves plain HTTP, list it with insecure = true in registries.toml)"
        } else {
            ""
        };
        let (base, challenge) = retry(policy, || async {
            let mut last = None;
            for base in &bases {
                let url = join(base, "/v2/");
                match http.get(url).send().await {
                    Ok(resp) if is_transient_status(resp.status().as_u16()) => {
                        return Err(status_error(&spec.host, "ping (GET /v2/)", resp).await);
                    }
                    Ok(resp) => {
                        let challenge = if resp.status() == StatusCode::UNAUTHORIZED {
                            parse_challenge(resp.headers()).ok_or_else(|| {
                                PullError::Unauthorized {
                                    registry: spec.host.clone(),
                                    user: None,
                                    reason: "401 without a usable WWW-Authenticate challenge"
                                        .into(),
                                }
                            })?
                        } else {
                            Challenge::Anonymous
                        };
                        return Ok((base.clone(), challenge));
                    }
                    Err(e) => last = Some((base.scheme().to_string(), describe(&e))),
                }
            }
            let (scheme, reason) = last.expect("at least one scheme tried");
            Err(PullError::Connect {
                registry: spec.host.clone(),
                reason: format!("{scheme}: {reason}{hint}"),
            })
        })
        .await?;
        Ok(RegistryClient {
            http,
            base,
            host: spec.host.clone(),
            repository: repository.to_string(),
            is_mirror: spec.is_mirror,
            insecure: settings.insecure,
            policy,
            creds,
            challenge: Mutex::new(challenge),
            token: Mutex::new(TokenCache::default()),
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    pub async fn challenge(&self) -> Challenge {
        self.challenge.lock().await.clone()
    }

    fn basic(&self) -> Option<String> {
        self.creds.as_ref().map(|c| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", c.username, c.password))
            )
        })
    }

    /// The `Authorization` value for the current challenge (fetching a token when needed).
    async fn authorization(&self, refresh: bool) -> Result<Option<String>, PullError> {
        let challenge = self.challenge.lock().await.clone();
        match challenge {
            Challenge::Anonymous => Ok(None),
            Challenge::Basic => Ok(self.basic()),
            Challenge::Bearer { realm, service } => {
                let mut cache = self.token.lock().await;
                if !refresh {
                    if let Some((t, exp)) = &cache.token {
                        if Instant::now() < *exp {
                            return Ok(Some(format!("Bearer {t}")));
                        }
                    }
                }
                let scope = format!("repository:{}:pull", self.repository);
                let (token, ttl) = self
                    .fetch_token(&realm, service.as_deref(), Some(&scope))
                    .await?;
                // Renew a little before the registry's deadline.
                let exp = Instant::now() + ttl.saturating_sub(Duration::from_secs(5));
                cache.token = Some((token.clone(), exp));
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    /// The Bearer token flow: GET the realm with service and scope, with Basic credentials
    /// (sent only to the realm's own origin) when we have them; retried by the policy.
    pub async fn fetch_token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<(String, Duration), PullError> {
        let mut url = Url::parse(realm).map_err(|e| PullError::Unauthorized {
            registry: self.host.clone(),
            user: None,
            reason: format!("token realm {realm:?} is not a URL: {e}"),
        })?;
        self.check_scheme("token request", "token realm", &self.base, &url)?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            if let Some(s) = scope {
                q.append_pair("scope", s);
            }
            if let Some(c) = &self.creds {
                q.append_pair("account", &c.username);
            }
        }
        retry(self.policy, || self.fetch_token_once(&url)).await
    }

    async fn fetch_token_once(&self, url: &Url) -> Result<(String, Duration), PullError> {
        let step = "token request";
        let resp = self
            .follow(step, url.clone(), None, None, self.basic(), url)
            .await?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(PullError::Unauthorized {
                registry: self.host.clone(),
                user: self.creds.as_ref().map(|c| c.username.clone()),
                reason: format!("the token service refused with {status}; not retried"),
            });
        }
        if !status.is_success() {
            return Err(self.status_error(step, resp).await);
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let body = self.read_limited(step, resp, MANIFEST_LIMIT).await?;
        let t: TokenReply = serde_json::from_slice(&body).map_err(|e| PullError::Unauthorized {
            registry: self.host.clone(),
            user: None,
            reason: format!("malformed token reply: {e}"),
        })?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PullError::Unauthorized {
                registry: self.host.clone(),
                user: None,
                reason: "the token reply has no token".into(),
            })?;
        Ok((
            token,
            Duration::from_secs(t.expires_in.unwrap_or(60).max(10)),
        ))
    }

    /// Refuse going from HTTPS to plain HTTP (`what`: a redirect, a token realm) unless the
    /// registry is insecure.
    fn check_scheme(
        &self,
        step: &str,
        what: &'static str,
        from: &Url,
        to: &Url,
    ) -> Result<(), PullError> {
        if from.scheme() == "https" && to.scheme() != "https" && !self.insecure {
            return Err(PullError::Downgrade {
                registry: self.host.clone(),
                step: step.to_string(),
                what,
                from: shown(from),
                to: shown(to),
            });
        }
        Ok(())
    }

    /// One GET of `path` (under `/v2/`), authenticated, following redirects; a 401 renews the
    /// challenge and token once. Not retried: the callers retry (a blob download resumes).
    pub async fn get(
        &self,
        step: &str,
        path: &str,
        accept: Option<&str>,
        range_from: Option<u64>,
    ) -> Result<Response, PullError> {
        let url = join(&self.base, path);
        for attempt in 0..2 {
            let auth = self.authorization(attempt > 0).await?;
            let resp = self
                .follow(step, url.clone(), accept, range_from, auth, &self.base)
                .await?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            if attempt == 0 {
                if let Some(c) = parse_challenge(resp.headers()) {
                    *self.challenge.lock().await = c;
                }
                self.token.lock().await.token = None;
                continue;
            }
            let detail = registry_error(resp).await;
            return Err(PullError::Unauthorized {
                registry: self.host.clone(),
                user: self.creds.as_ref().map(|c| c.username.clone()),
                reason: match &self.creds {
                    Some(_) => format!(
                        "{}; not retried (401 with a renewed token)",
                        detail.unwrap_or_else(|| "credentials refused".into())
                    ),
                    None => format!(
                        "the registry wants credentials and none are recorded for {} (berth login {})",
                        self.host, self.host
                    ),
                },
            });
        }
        unreachable!("the loop returns")
    }

    /// GET `url`, following redirects (at most 10): `auth` is sent only to `auth_origin`'s
    /// origin, and a redirect from HTTPS to plain HTTP is refused unless the registry is
    /// insecure.
    async fn follow(
        &self,
        step: &str,
        mut url: Url,
        accept: Option<&str>,
        range_from: Option<u64>,
        auth: Option<String>,
        auth_origin: &Url,
    ) -> Result<Response, PullError> {
        for _ in 0..10 {
            let mut h = HeaderMap::new();
            if let Some(a) = accept {
                h.insert(ACCEPT, HeaderValue::from_str(a).expect("accept header"));
            }
            if let Some(from) = range_from.filter(|f| *f > 0) {
                h.insert(
                    RANGE,
                    HeaderValue::from_str(&format!("bytes={from}-")).expect("range header"),
                );
            }
            if let Some(a) = &auth {
                if same_origin(&url, auth_origin) {
                    h.insert(
                        AUTHORIZATION,
                        HeaderValue::from_str(a).map_err(|_| PullError::Unauthorized {
                            registry: self.host.clone(),
                            user: None,
                            reason: "credentials contain characters not allowed in a header".into(),
                        })?,
                    );
                }
            }
            let resp = self
                .http
                .get(url.clone())
                .headers(h)
                .send()
                .await
                .map_err(|e| PullError::Network {
                    registry: self.host.clone(),
                    step: step.to_string(),
                    reason: describe(&e),
                })?;
            if resp.status().is_redirection() {
                if let Some(loc) = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()) {
                    let next = url.join(loc).map_err(|e| PullError::Network {
                        registry: self.host.clone(),
                        step: step.to_string(),
                        reason: format!("bad redirect {loc:?}: {e}"),
                    })?;
                    self.check_scheme(step, "redirect", &url, &next)?;
                    url = next;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(PullError::Network {
            registry: self.host.clone(),
            step: step.to_string(),
            reason: "more than 10 redirects".into(),
        })
    }

    /// GET a manifest (tag or digest) with every media type berth understands, retried.
    /// Returns the body, its media type (Content-Type) and the registry's digest header.
    pub async fn manifest(
        &self,
        reference: &str,
    ) -> Result<(Bytes, Option<String>, Option<String>), PullError> {
        retry(self.policy, || self.manifest_once(reference)).await
    }

    async fn manifest_once(
        &self,
        reference: &str,
    ) -> Result<(Bytes, Option<String>, Option<String>), PullError> {
        let step = format!("manifest {reference}");
        let path = format!("/v2/{}/manifests/{reference}", self.repository);
        let resp = self
            .get(&step, &path, Some(crate::manifest::ACCEPT_MANIFESTS), None)
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            let detail = registry_error(resp).await.unwrap_or_default();
            if detail.contains("NAME_UNKNOWN") || !self.repository_exists().await {
                return Err(PullError::RepositoryNotFound {
                    registry: self.host.clone(),
                    repository: self.repository.clone(),
                });
            }
            return Err(PullError::ManifestNotFound {
                registry: self.host.clone(),
                repository: self.repository.clone(),
                reference: reference.to_string(),
            });
        }
        if !status.is_success() {
            return Err(self.status_error(&step, resp).await);
        }
        let ctype = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase());
        let digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(len) = resp.content_length() {
            if len as usize > MANIFEST_LIMIT {
                return Err(PullError::Malformed {
                    reference: reference.to_string(),
                    what: "manifest".into(),
                    reason: format!("{len} bytes is more than the limit of {MANIFEST_LIMIT}"),
                });
            }
        }
        let body = self.read_limited(&step, resp, MANIFEST_LIMIT).await?;
        Ok((body, ctype, digest))
    }

    /// Whether the repository exists (its tag list answers). Used to word a 404 precisely.
    async fn repository_exists(&self) -> bool {
        let step = "tag list";
        let path = format!("/v2/{}/tags/list?n=1", self.repository);
        let status = retry(self.policy, || async {
            let r = self.get(step, &path, None, None).await?;
            if is_transient_status(r.status().as_u16()) {
                return Err(self.status_error(step, r).await);
            }
            Ok(r.status())
        })
        .await;
        !matches!(status, Ok(StatusCode::NOT_FOUND))
    }

    /// A small blob (an image config) in memory, limited to `limit` bytes, retried.
    pub async fn small_blob(&self, digest: &str, limit: usize) -> Result<Bytes, PullError> {
        let step = format!("blob {digest}");
        retry(self.policy, || async {
            let resp = self.blob(digest, 0).await?;
            self.read_limited(&step, resp, limit).await
        })
        .await
    }

    /// Start downloading a blob, from byte `from` (a Range request when above 0). The reply is
    /// 200 (whole blob) or 206 (the rest); other answers are errors.
    pub async fn blob(&self, digest: &str, from: u64) -> Result<Response, PullError> {
        let step = format!("blob {digest}");
        let path = format!("/v2/{}/blobs/{digest}", self.repository);
        let resp = self.get(&step, &path, None, Some(from)).await?;
        let status = resp.status();
        if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT {
            return Ok(resp);
        }
        if status == StatusCode::NOT_FOUND {
            return Err(PullError::Status {
                registry: self.host.clone(),
                step: format!("blob {digest} of {}", self.repository),
                url: shown(resp.url()),
                status: 404,
                detail: Some("the blob is not in the repository".into()),
                retry_after: None,
            });
        }
        Err(self.status_error(&step, resp).await)
    }

    async fn read_limited(
        &self,
        step: &str,
        resp: Response,
        limit: usize,
    ) -> Result<Bytes, PullError> {
        let url = shown(resp.url());
        let mut out = Vec::new();
        let mut s = resp.bytes_stream();
        while let Some(chunk) = s.next().await {
            let chunk = chunk.map_err(|e| PullError::Network {
                registry: self.host.clone(),
                step: step.to_string(),
                reason: format!("reading the answer of {url}: {}", describe(&e)),
            })?;
            if out.len() + chunk.len() > limit {
                // Final: the same answer would come again.
                return Err(PullError::Malformed {
                    reference: format!("{}/{}", self.host, self.repository),
                    what: step.to_string(),
                    reason: format!("the answer of {url} is larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.into())
    }

    pub async fn status_error(&self, step: &str, resp: Response) -> PullError {
        status_error(&self.host, step, resp).await
    }
}

/// The error for an unwanted answer: its status, URL, `Retry-After` and the registry's
/// error body.
async fn status_error(host: &str, step: &str, resp: Response) -> PullError {
    let status = resp.status().as_u16();
    let url = shown(resp.url());
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    PullError::Status {
        registry: host.to_string(),
        step: step.to_string(),
        url,
        status,
        detail: registry_error(resp).await,
        retry_after,
    }
}

/// A URL as errors show it: without its query, which may hold a signature (blob storage), and
/// without user information.
pub fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}

fn join(base: &Url, path: &str) -> Url {
    let mut s = base.as_str().trim_end_matches('/').to_string();
    s.push_str(path);
    Url::parse(&s).expect("base URL plus an API path is a URL")
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `CODE: message` of the registry's error body (`{"errors":[{"code","message"}]}`).
async fn registry_error(resp: Response) -> Option<String> {
    let body = resp.bytes().await.ok()?;
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<E>,
    }
    #[derive(serde::Deserialize)]
    struct E {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let e: Errors = serde_json::from_slice(&body).ok()?;
    let parts: Vec<String> = e
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.code, e.message))
        .collect();
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// The first challenge of a 401 that berth can answer (Bearer preferred over Basic).
pub fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let mut basic = false;
    for v in headers.get_all(WWW_AUTHENTICATE) {
        let Ok(v) = v.to_str() else { continue };
        let (scheme, params) = match v.trim().split_once(' ') {
            Some((s, p)) => (s, p),
            None => (v.trim(), ""),
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            let p = parse_params(params);
            let realm = p
                .iter()
                .find(|(k, _)| k == "realm")
                .map(|(_, v)| v.clone())?;
            let service = p
                .iter()
                .find(|(k, _)| k == "service")
                .map(|(_, v)| v.clone());
            return Some(Challenge::Bearer { realm, service });
        }
        if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// `k="v", k2=v2` (quoted strings may contain commas and `\"`).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == ',' || b[i].is_whitespace()) {
            i += 1;
        }
        let ks = i;
        while i < b.len() && b[i] != '=' && b[i] != ',' {
            i += 1;
        }
        let key = b[ks..i]
            .iter()
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if i >= b.len() || b[i] != '=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != ',' {
                val.push(b[i]);
                i += 1;
            }
            val = val.trim().to_string();
        }
        if !key.is_empty() {
            out.push((key, val));
        }
    }
    out
}

/// Check `username`/`password` against registry `server` the way `docker login` does: the
/// `/v2/` endpoint with Basic credentials, or a token from the Bearer realm.
pub async fn check_login(
    settings: &crate::settings::Settings,
    server: &str,
    username: &str,
    password: &str,
) -> Result<(), PullError> {
    let spec = EndpointSpec::origin(server);
    let creds = Credentials {
        username: username.to_string(),
        password: password.to_string(),
    };
    let c = RegistryClient::connect(
        &spec,
        &settings.for_host(&spec.host),
        "",
        Some(creds),
        settings.retry_policy(),
    )
    .await?;
    match c.challenge().await {
        Challenge::Anonymous => Ok(()),
        Challenge::Bearer { realm, service } => c
            .fetch_token(&realm, service.as_deref(), None)
            .await
            .map(|_| ()),
        Challenge::Basic => {
            retry(c.policy, || async {
                let resp = c
                    .follow(
                        "login",
                        join(&c.base, "/v2/"),
                        None,
                        None,
                        c.basic(),
                        &c.base,
                    )
                    .await?;
                if resp.status().is_success() {
                    Ok(())
                } else if resp.status() == StatusCode::UNAUTHORIZED {
                    Err(PullError::Unauthorized {
                        registry: server.to_string(),
                        user: Some(username.to_string()),
                        reason: "the registry refused the user name or password".into(),
                    })
                } else {
                    Err(c.status_error("login", resp).await)
                }
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(WWW_AUTHENTICATE, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(&h(&[
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#
            ])),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            parse_challenge(&h(&[r#"Basic realm="basic-realm""#])),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(&h(&[r#"Basic realm="x""#, r#"bearer realm=https://t/x"#])),
            Some(Challenge::Bearer {
                realm: "https://t/x".into(),
                service: None
            })
        );
        assert_eq!(parse_challenge(&h(&["Negotiate"])), None);
        assert_eq!(parse_challenge(&h(&["Bearer service=\"x\""])), None);
    }

    #[test]
    fn params_with_escapes() {
        let p = parse_params(r#"realm="a,b\"c", service=svc , x="""#);
        assert_eq!(
            p,
            vec![
                ("realm".into(), "a,b\"c".into()),
                ("service".into(), "svc".into()),
                ("x".into(), "".into())
            ]
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            EndpointSpec::origin("docker.io").host,
            "registry-1.docker.io"
        );
        assert_eq!(
            EndpointSpec::origin("localhost:5000").host,
            "localhost:5000"
        );
        let m = EndpointSpec::mirror("http://127.0.0.1:5001/").unwrap();
        assert_eq!(
            (m.host.as_str(), m.scheme.as_deref(), m.prefix.as_str()),
            ("127.0.0.1:5001", Some("http"), "")
        );
        let m = EndpointSpec::mirror("https://m.example/cache/hub").unwrap();
        assert_eq!(m.prefix, "/cache/hub");
        assert!(EndpointSpec::mirror("ftp://x").unwrap_err().contains("ftp"));
        let base = Url::parse("https://m.example/cache").unwrap();
        assert_eq!(join(&base, "/v2/").as_str(), "https://m.example/cache/v2/");
        assert!(same_origin(
            &Url::parse("https://a:443/x").unwrap(),
            &Url::parse("https://a/").unwrap()
        ));
        assert!(!same_origin(
            &Url::parse("https://a:444/x").unwrap(),
            &Url::parse("https://a/").unwrap()
        ));
        assert!(!same_origin(
            &Url::parse("http://a/x").unwrap(),
            &Url::parse("https://a/").unwrap()
        ));
    }

    #[test]
    fn urls_in_errors_carry_no_secrets() {
        let u = Url::parse("https://u:pw@blobs.example/b/sha256:1?X-Amz-Signature=s#f").unwrap();
        assert_eq!(shown(&u), "https://blobs.example/b/sha256:1");
    }
}

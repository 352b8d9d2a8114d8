//! Test harness: a real origin and the real `tollgate` binary on loopback, real HTTP clients and
//! real signatures minted in the test.
//!
//! - [`Origin`]: an HTTP/1.1 server (hyper) on `127.0.0.1:0`, on its own thread and runtime. It
//!   records every request it receives and renders `/premium/*` from `x-tollgate-variant`, the
//!   way a publisher's origin renders the full article or the teaser.
//! - [`Edge`]: writes keys, secrets and a config into a temp dir, starts `tollgate -c` on free
//!   ports, waits for `/healthz`, kills the process on drop.
//! - [`tokens`]: good and deliberately bad tokens.
//! - [`client`], [`get`], [`raw_get`]: clients that do exactly what the test says (no redirects,
//!   no proxies from the environment, no pooled connections unless asked for).
//! - [`parse_metrics`], [`metric`]: a strict reader of the Prometheus text format.

#![allow(dead_code)]

pub mod tokens;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tollgate::auth::mint::{self, SigningKey};

/// The marker only the subscriber variant of a premium page carries.
pub const SUBSCRIBER_MARK: &str = "SUBSCRIBER-CONTENT";
/// The origin secret header name used by every test config.
pub const SECRET_HEADER: &str = "x-api-key";
/// The variant header the edge sends to the origin.
pub const VARIANT_HEADER: &str = "x-tollgate-variant";

// ---------------------------------------------------------------------------------------------
// Origin
// ---------------------------------------------------------------------------------------------

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query, if any (without `?`).
    pub query: Option<String>,
    /// Path and query exactly as received.
    pub uri: String,
    /// Every header line, in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The only value of header `name`; panics if it was sent more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "origin received {} copies of {name}: {all:?}",
            all.len()
        );
        all.into_iter().next()
    }

    /// Whether `needle` occurs anywhere the origin could see it: URI, any header, body.
    pub fn mentions(&self, needle: &str) -> bool {
        self.uri.contains(needle)
            || self
                .headers
                .iter()
                .any(|(k, v)| k.contains(needle) || v.contains(needle))
            || String::from_utf8_lossy(&self.body).contains(needle)
    }
}

/// A canned answer for one exact path.
#[derive(Debug, Clone)]
pub struct Override {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: String,
}

#[derive(Default)]
struct OriginState {
    requests: Vec<Recorded>,
    hits: HashMap<String, usize>,
    overrides: HashMap<String, Override>,
    pad_to: usize,
    delay: Duration,
}

/// A real origin server on loopback. Dropping it stops the server.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<Mutex<OriginState>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

static ORIGIN_SEQ: AtomicU64 = AtomicU64::new(1);

/// The body the origin renders for a premium page: the full article for the subscriber variant,
/// the teaser for any other, padded with `.` up to `pad_to` bytes.
pub fn premium_body(path: &str, subscriber: bool, pad_to: usize) -> String {
    let mut body = if subscriber {
        format!("FULL:{path}:{SUBSCRIBER_MARK}\n")
    } else {
        format!("TEASER:{path}\n")
    };
    if body.len() < pad_to {
        body.push_str(&".".repeat(pad_to - body.len()));
    }
    body
}

fn respond(status: u16, headers: &[(String, String)], body: String) -> Response<Full<Bytes>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Full::new(Bytes::from(body)))
        .expect("origin builds a valid response")
}

async fn handle(
    state: Arc<Mutex<OriginState>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| path.clone()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let variant = rec.header_all(VARIANT_HEADER).join(",");
    let secret = rec.header_all(SECRET_HEADER).join(",");
    let seq = ORIGIN_SEQ.fetch_add(1, Ordering::Relaxed).to_string();
    let (over, pad_to, delay) = {
        let mut st = state.lock().unwrap();
        *st.hits.entry(path.clone()).or_default() += 1;
        st.requests.push(rec);
        (st.overrides.get(&path).cloned(), st.pad_to, st.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut headers = vec![
        (
            "content-type".to_string(),
            "text/plain; charset=utf-8".to_string(),
        ),
        ("x-origin-seq".to_string(), seq),
    ];
    if let Some(o) = over {
        headers.extend(o.headers);
        return Ok(respond(o.status, &headers, o.body));
    }
    if path.starts_with("/premium/") {
        headers.push(("cache-control".into(), "public, max-age=300".into()));
        headers.push(("x-origin-variant".into(), variant.clone()));
        return Ok(respond(
            200,
            &headers,
            premium_body(&path, variant == "subscriber", pad_to),
        ));
    }
    if path == "/leak" {
        // A careless origin that echoes what it received, secret included.
        headers.push(("x-echo".into(), secret.clone()));
        headers.push((SECRET_HEADER.into(), secret.clone()));
        headers.push(("x-debug".into(), format!("key={secret}; seen")));
        headers.push(("cache-control".into(), "public, max-age=300".into()));
        return Ok(respond(200, &headers, "leak\n".to_string()));
    }
    if path.starts_with("/news/") {
        headers.push(("cache-control".into(), "public, max-age=300".into()));
        return Ok(respond(200, &headers, format!("PUBLIC:{path}\n")));
    }
    Ok(respond(200, &headers, format!("PAGE:{path}\n")))
}

impl Origin {
    /// Start an origin on `127.0.0.1:0`.
    pub fn start() -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind origin");
        listener
            .set_nonblocking(true)
            .expect("nonblocking origin listener");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(Mutex::new(OriginState::default()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("test-origin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("origin runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let st = st.clone();
                                tokio::spawn(async move {
                                    let svc = service_fn(move |req| handle(st.clone(), req));
                                    let _ = http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc)
                                        .await;
                                });
                            }
                        }
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn origin thread");
        Origin {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// Pad every premium body to at least `n` bytes (to fill a small cache).
    pub fn set_padding(&self, n: usize) {
        self.state.lock().unwrap().pad_to = n;
    }

    /// The padding in force.
    pub fn padding(&self) -> usize {
        self.state.lock().unwrap().pad_to
    }

    /// Make every answer take this long (a slow origin, to exercise request coalescing).
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Answer `path` (exact, without query) with a canned response.
    pub fn set_override(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.state.lock().unwrap().overrides.insert(
            path.to_owned(),
            Override {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.to_owned(),
            },
        );
    }

    /// Requests received for `path` (exact path, any query).
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests received for `path` (exact path, any query), in order.
    pub fn requests_for(&self, path: &str) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The most recent request for `path`.
    pub fn last_for(&self, path: &str) -> Option<Recorded> {
        self.requests_for(path).pop()
    }

    /// Total requests received.
    pub fn total(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Edge
// ---------------------------------------------------------------------------------------------

/// The issuer every default token and config uses.
pub const ISSUER: &str = "https://id.example.com";
/// The audience every default token and config uses.
pub const AUDIENCE: &str = "news-edge";

/// The default routes: a paywall, two public areas, no catch-all (so unmatched paths 404).
pub fn default_routes() -> Vec<String> {
    vec![
        r#"{ match: "/premium/*", origin: news, access: paywall, require: [premium], cache: { default_ttl: 5m, min_ttl: 0s, max_ttl: 1d } }"#.into(),
        r#"{ match: "/news/*", origin: news, access: public }"#.into(),
        r#"{ match: "/leak", origin: news, access: public }"#.into(),
        r#"{ match: "/static/*", origin: news, access: public }"#.into(),
    ]
}

/// What a test may change in the edge's config.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// `auth.issuer` (None: not checked).
    pub issuer: Option<String>,
    /// `auth.audience` (None: not checked).
    pub audience: Option<String>,
    /// `routes:` entries, YAML flow mappings, first match wins.
    pub routes: Vec<String>,
    /// The `cache:` value, a YAML flow mapping.
    pub cache: String,
    /// `auth.token_sources`.
    pub token_sources: Vec<String>,
    /// `keys.reload_interval_seconds`.
    pub reload_interval_seconds: u64,
    /// `pingora.threads`.
    pub threads: usize,
}

impl Default for EdgeOptions {
    fn default() -> Self {
        EdgeOptions {
            issuer: Some(ISSUER.into()),
            audience: Some(AUDIENCE.into()),
            routes: default_routes(),
            cache: "{ memory: { max_size: 64MiB } }".into(),
            token_sources: vec!["query:token".into(), "bearer".into(), "cookie:token".into()],
            reload_interval_seconds: 1,
            threads: 2,
        }
    }
}

/// A running `tollgate` process. Killed on drop.
pub struct Edge {
    /// Proxy port.
    pub port: u16,
    /// Admin port.
    pub admin_port: u16,
    /// The origin secret the edge sends.
    pub secret: String,
    /// The admin token.
    pub admin_token: String,
    /// The config file.
    pub config_path: PathBuf,
    stderr_path: PathBuf,
    child: Mutex<Child>,
    dir: tempfile::TempDir,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct ports that were free a moment ago (all held at once while choosing).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("local addr").port())
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Write `text` to `path` atomically (temp file + rename), as a deploy tool would.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension(format!("tmp-{}", random_hex(4)));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename into place");
}

fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

fn config_yaml(
    dir: &Path,
    port: u16,
    admin_port: u16,
    origin: SocketAddr,
    opts: &EdgeOptions,
) -> String {
    let mut auth = String::new();
    if let Some(i) = &opts.issuer {
        auth.push_str(&format!("  issuer: {}\n", yaml_str(i)));
    }
    if let Some(a) = &opts.audience {
        auth.push_str(&format!("  audience: {}\n", yaml_str(a)));
    }
    let sources: Vec<String> = opts.token_sources.iter().map(|s| yaml_str(s)).collect();
    let routes: String = opts.routes.iter().map(|r| format!("  - {r}\n")).collect();
    format!(
        "listeners:\n  - addr: 127.0.0.1:{port}\n\
         admin:\n  addr: 127.0.0.1:{admin_port}\n  token_file: admin.token\n\
         origins:\n  news:\n    url: http://{origin}\n    secret_header: {SECRET_HEADER}\n    secret_file: origin.secret\n\
         keys:\n  jwks_file: jwks.json\n  reload_interval_seconds: {reload}\n\
         auth:\n{auth}  leeway_seconds: 30\n  subscriptions_claim: subs\n  token_sources: [{sources}]\n\
         routes:\n{routes}\
         cache: {cache}\n\
         pingora:\n  threads: {threads}\n  pid_file: {pid}\n  upgrade_sock: {sock}\n",
        reload = opts.reload_interval_seconds,
        sources = sources.join(", "),
        cache = opts.cache,
        threads = opts.threads,
        pid = yaml_str(&dir.join("tollgate.pid").to_string_lossy()),
        sock = yaml_str(&dir.join("upgrade.sock").to_string_lossy()),
    )
}

/// A raw HTTP/1.1 GET over a fresh connection; returns true on a 200.
fn probe_200(port: u16, path: &str) -> bool {
    raw_get(port, path, &[])
        .map(|r| r.status == 200)
        .unwrap_or(false)
}

impl Edge {
    /// Start an edge in front of `origin` with the default options and `keys` in jwks.json.
    pub fn start(origin: &Origin, keys: &[&SigningKey]) -> Edge {
        Edge::start_with(origin, keys, EdgeOptions::default())
    }

    /// Start an edge with custom options.
    pub fn start_with(origin: &Origin, keys: &[&SigningKey], opts: EdgeOptions) -> Edge {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret = format!("origin-secret-{}", random_hex(12));
        let admin_token = format!("admin-{}", random_hex(16));
        std::fs::write(dir.path().join("origin.secret"), format!("{secret}\n")).unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{admin_token}\n")).unwrap();
        std::fs::write(dir.path().join("jwks.json"), mint::jwks_json(keys)).unwrap();
        let config_path = dir.path().join("tollgate.yaml");
        let stderr_path = dir.path().join("stderr.log");

        let mut last_err = String::new();
        for _attempt in 0..3 {
            let [port, admin_port] = free_ports::<2>();
            std::fs::write(
                &config_path,
                config_yaml(dir.path(), port, admin_port, origin.addr, &opts),
            )
            .unwrap();
            let stderr = std::fs::File::create(&stderr_path).unwrap();
            let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
                .arg("-c")
                .arg(&config_path)
                .env(
                    "RUST_LOG",
                    std::env::var("TOLLGATE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                )
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(stderr)
                .spawn()
                .expect("spawn tollgate");
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last_err = format!(
                        "tollgate exited with {status} before it was ready; stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                    break; // maybe a port race: retry with fresh ports
                }
                if probe_200(admin_port, "/healthz")
                    && TcpStream::connect(("127.0.0.1", port)).is_ok()
                {
                    return Edge {
                        port,
                        admin_port,
                        secret,
                        admin_token,
                        config_path,
                        stderr_path,
                        child: Mutex::new(child),
                        dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "tollgate did not answer /healthz on 127.0.0.1:{admin_port} within 20 s; \
                         stderr:\n{}",
                        std::fs::read_to_string(&stderr_path).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("tollgate failed to start three times; last: {last_err}");
    }

    /// `http://127.0.0.1:<port><path>` on the proxy listener.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// `http://127.0.0.1:<admin_port><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.admin_port, path)
    }

    /// The temp dir holding the config, keys and secrets.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the edge wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The last `n` lines the edge wrote to stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// The edge's exit status, if it is no longer running.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// Panic with the edge's panics and the tail of its stderr if the process has died.
    pub fn assert_running(&self) {
        if let Some(status) = self.exit_status() {
            let all = self.stderr();
            let panics: Vec<&str> = all
                .lines()
                .filter(|l| {
                    l.contains("panicked at") || l.contains("attempt to") || l.contains("abort")
                })
                .take(20)
                .collect();
            panic!(
                "the edge process died ({status}); its panics:\n{}\n--- stderr tail ---\n{}",
                panics.join("\n"),
                self.stderr_tail(40)
            );
        }
    }

    /// Replace jwks.json (atomically) with these keys' public halves.
    pub fn rewrite_jwks(&self, keys: &[&SigningKey]) {
        write_atomic(&self.dir.path().join("jwks.json"), &mint::jwks_json(keys));
    }

    /// `GET /metrics` text.
    pub async fn metrics(&self) -> String {
        let r = client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(r.status().as_u16(), 200, "GET /metrics status");
        r.text().await.expect("metrics body")
    }

    /// The value of one metric series (sum over series matching `labels`; 0 if absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics().await, name, labels)
    }

    /// Poll `/metrics` until the series reaches `at_least` (the request counter is bumped in the
    /// logging phase, after the client already has its response). Returns the last value.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let v = self.metric(name, labels).await;
            if v >= at_least || Instant::now() > deadline {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /admin/purge` with the admin token and the given JSON body.
    pub async fn purge(&self, body: &str) -> (u16, String) {
        let r = client()
            .post(self.admin_url("/admin/purge"))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("POST /admin/purge");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// Purge and return the `purged` count; panics unless the answer is 200 JSON.
    pub async fn purge_ok(&self, body: &str) -> u64 {
        let (status, text) = self.purge(body).await;
        assert_eq!(status, 200, "purge {body} answered {status}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("purge answer is not JSON ({e}): {text}"));
        v["purged"]
            .as_u64()
            .unwrap_or_else(|| panic!("purge answer has no numeric \"purged\": {text}"))
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
        if std::thread::panicking() {
            eprintln!("--- tollgate stderr (tail) ---\n{}", self.stderr_tail(60));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// A client that follows no redirects, ignores proxy settings and opens a fresh connection per
/// request (so no test depends on connection reuse by accident).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

/// Like [`client`] but keeping connections alive (many requests over few connections).
pub fn pooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Where a request carries its token.
#[derive(Debug, Clone, Copy)]
pub enum Tok<'a> {
    /// No token.
    None,
    /// `?token=`.
    Query(&'a str),
    /// `Authorization: Bearer`.
    Bearer(&'a str),
    /// `Cookie: token=`.
    Cookie(&'a str),
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: String,
}

impl Resp {
    /// The only value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut all = self.headers.get_all(name).iter();
        let first = all.next()?;
        assert!(
            all.next().is_none(),
            "response has several {name} headers: {:?}",
            self.headers
        );
        Some(first.to_str().expect("header is text"))
    }

    /// `Cache-Status`, or panics.
    pub fn cache_status(&self) -> &str {
        self.header("cache-status")
            .unwrap_or_else(|| panic!("response without Cache-Status: {:?}", self.headers))
    }

    /// A cache hit per `Cache-Status`.
    pub fn is_hit(&self) -> bool {
        let cs = self.cache_status();
        cs.split(';').map(str::trim).any(|p| p == "hit")
    }

    /// A miss forwarded to the origin per `Cache-Status`.
    pub fn is_miss(&self) -> bool {
        self.cache_status().contains("fwd=miss")
    }

    /// The full article (subscriber variant).
    pub fn is_full(&self) -> bool {
        self.status == 200 && self.body.starts_with("FULL:") && self.body.contains(SUBSCRIBER_MARK)
    }

    /// The teaser (anonymous variant), with no subscriber content at all.
    pub fn is_teaser(&self) -> bool {
        self.status == 200
            && self.body.starts_with("TEASER:")
            && !self.body.contains(SUBSCRIBER_MARK)
    }

    /// Every header value, for "never appears in a response" checks.
    pub fn all_header_text(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect()
    }
}

/// Send a request and read the whole response.
pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.expect("request to the edge");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.expect("response body");
    Resp {
        status,
        headers,
        body,
    }
}

/// Build a GET for `path` carrying `tok`.
pub fn request(
    client: &reqwest::Client,
    edge: &Edge,
    path: &str,
    tok: Tok<'_>,
) -> reqwest::RequestBuilder {
    match tok {
        Tok::None => client.get(edge.url(path)),
        Tok::Query(t) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            client.get(edge.url(&format!("{path}{sep}token={t}")))
        }
        Tok::Bearer(t) => client.get(edge.url(path)).bearer_auth(t),
        Tok::Cookie(t) => client
            .get(edge.url(path))
            .header("cookie", format!("token={t}")),
    }
}

/// GET `path` with `tok` on a fresh connection.
pub async fn get(edge: &Edge, path: &str, tok: Tok<'_>) -> Resp {
    send(request(&client(), edge, path, tok)).await
}

/// A response read by [`raw_get`].
#[derive(Debug)]
pub struct RawResp {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (as sent; no chunked decoding needed for the responses we read this way).
    pub body: String,
}

impl RawResp {
    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Send a request target exactly as written (no client-side normalization of `..` or `%xx`)
/// over a fresh connection. `extra` are additional header lines.
pub fn raw_get(port: u16, target: &str, extra: &[(&str, &str)]) -> std::io::Result<RawResp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(RawResp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Prometheus text
// ---------------------------------------------------------------------------------------------

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`/`_sum`/`_count` suffixes as written).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

fn valid_metric_name(n: &str) -> bool {
    let mut chars = n.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Parse the text exposition format strictly: every non-comment, non-empty line must be
/// `name{label="value",...} value` or `name value` with a float value.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", i + 1);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, rest) = match line.find(['{', ' ']) {
            Some(p) => line.split_at(p),
            None => return Err(bad("no value")),
        };
        if !valid_metric_name(name) {
            return Err(bad("invalid metric name"));
        }
        let mut labels = BTreeMap::new();
        let rest = if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                r = r.trim_start_matches(',');
                if let Some(after) = r.strip_prefix('}') {
                    break after;
                }
                let (k, after) = r
                    .split_once("=\"")
                    .ok_or_else(|| bad("label without =\""))?;
                if !valid_metric_name(k) || k.contains(':') {
                    return Err(bad("invalid label name"));
                }
                let mut v = String::new();
                let mut chars = after.char_indices();
                let end = loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, 'n')) => v.push('\n'),
                            Some((_, c @ ('\\' | '"'))) => v.push(c),
                            _ => return Err(bad("bad escape in label value")),
                        },
                        Some((j, '"')) => break j,
                        Some((_, c)) => v.push(c),
                        None => return Err(bad("unterminated label value")),
                    }
                };
                labels.insert(k.to_owned(), v);
                r = &after[end + 1..];
            }
        } else {
            rest
        };
        let mut fields = rest.split_whitespace();
        let value = fields.next().ok_or_else(|| bad("no value"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| bad("value is not a float"))?,
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|_| bad("timestamp is not an integer"))?;
        }
        if fields.next().is_some() {
            return Err(bad("trailing fields"));
        }
        out.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    Ok(out)
}

/// Sum of the samples named `name` whose labels include all of `labels`; 0 if none.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    parse_metrics(text)
        .unwrap_or_else(|e| panic!("metrics do not parse: {e}"))
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

/// Poll `f` every 100 ms until it returns true or `timeout` passes; returns whether it did.
pub async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

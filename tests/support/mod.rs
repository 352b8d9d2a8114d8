//! Test harness: a real origin and the real `tollgate` binary on loopback, real HTTP clients and
//! real signatures minted in the test.
//!
//! - [`Origin`]: an HTTP/1.1 server (hyper) on `127.0.0.1:0`, on its own thread and runtime. It
//!   records every request it receives and renders `/premium/*` from `x-tollgate-variant`, the
//!   way a publisher's origin renders the full article or the teaser. [`Origin::set_large`]
//!   serves large deterministic binary bodies ([`pattern_body`]), optionally trickled.
//! - [`Edge`]: writes keys, secrets and a config into a temp dir, starts `tollgate -c` on free
//!   ports, waits for `/healthz`, kills the process on drop. [`Edge::stop`] (SIGTERM),
//!   [`Edge::kill_hard`] (SIGKILL) and [`Edge::start_again`] restart it on the same config;
//!   [`disk_options`] puts the disk tier in a directory the test owns; [`Edge::rss`] reads
//!   `VmRSS`/`VmHWM`.
//!   `TOLLGATE_TEST_FAST_HITS=off` ([`FAST_HITS_ENV`]) starts every edge whose test does not
//!   set [`EdgeOptions::fast_hits`] with the connection-level hit path off.
//! - [`tokens`]: good and deliberately bad tokens.
//! - [`client`], [`get`], [`raw_get`]: clients that do exactly what the test says (no redirects,
//!   no proxies from the environment, no pooled connections unless asked for).
//! - [`parse_metrics`], [`metric`]: a strict reader of the Prometheus text format.

#![allow(dead_code)]

pub mod certs;
pub mod naive_origin;
pub mod raw;
pub mod tokens;
pub mod variant_pages;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
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
    /// Exact path → a binary body (see [`Origin::set_large`]).
    large: HashMap<String, Bytes>,
    /// Large bodies go out in frames of this many bytes, `pace` apart.
    frame: usize,
    pace: Duration,
    /// Exact path → a body with its content type (see [`Origin::set_file`]).
    files: HashMap<String, Served>,
    /// While set and not yet `true`, every request waits (after being recorded) for it to turn
    /// `true` (see [`Origin::hold`]).
    gate: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Requests held at the origin (see [`Origin::hold`]); dropping it releases them too.
pub struct Held(tokio::sync::watch::Sender<bool>);

impl Held {
    /// Let every held request (and later ones) be answered.
    pub fn release(self) {}
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A body registered with [`Origin::set_file`].
#[derive(Debug, Clone)]
struct Served {
    body: Bytes,
    content_type: String,
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

/// A deterministic, incompressible body of `len` bytes for `seed` (splitmix64 output): what the
/// origin serves for a path registered with [`Origin::set_large`].
pub fn pattern_body(seed: &str, len: usize) -> Bytes {
    // FNV-1a of the seed, then splitmix64.
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    Bytes::from(out)
}

/// The origin's response body: the whole body in one frame, or (large bodies) frames of `frame`
/// bytes with `pace` between them, so a test can keep a fill in flight. Its exact size is known
/// up front, so every response carries `Content-Length`.
pub struct OriginBody {
    rest: Bytes,
    frame: usize,
    pace: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl OriginBody {
    fn full(data: Bytes) -> OriginBody {
        OriginBody {
            rest: data,
            frame: 0,
            pace: Duration::ZERO,
            sleep: None,
        }
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.sleep.as_mut() {
            use std::future::Future;
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let n = if this.frame == 0 {
            this.rest.len()
        } else {
            this.frame.min(this.rest.len())
        };
        let data = this.rest.split_to(n);
        if !this.pace.is_zero() && !this.rest.is_empty() {
            this.sleep = Some(Box::pin(tokio::time::sleep(this.pace)));
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

fn respond(status: u16, headers: &[(String, String)], body: String) -> Response<OriginBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(OriginBody::full(Bytes::from(body)))
        .expect("origin builds a valid response")
}

async fn handle(
    state: Arc<Mutex<OriginState>>,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
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
    let (over, pad_to, delay, large) = {
        let mut st = state.lock().unwrap();
        *st.hits.entry(path.clone()).or_default() += 1;
        st.requests.push(rec);
        let large = st.large.get(&path).map(|b| (b.clone(), st.frame, st.pace));
        (st.overrides.get(&path).cloned(), st.pad_to, st.delay, large)
    };
    let gate = state.lock().unwrap().gate.clone();
    if let Some(mut open) = gate {
        let _ = open.wait_for(|open| *open).await;
    }
    let served = state.lock().unwrap().files.get(&path).cloned();
    if let Some(f) = served {
        tokio::time::sleep(f.delay).await;
        let resp = Response::builder()
            .status(200)
            .header("content-type", f.content_type)
            .header("cache-control", "public, max-age=3600")
            .header("x-origin-seq", seq)
            .body(OriginBody::full(f.body))
            .expect("origin builds a valid response");
        return Ok(resp);
    }
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
    if let Some((data, frame, pace)) = large {
        let mut b = Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .header("cache-control", "public, max-age=3600");
        for (k, v) in headers.iter().filter(|(k, _)| k != "content-type") {
            b = b.header(k.as_str(), v.as_str());
        }
        let body = OriginBody {
            rest: data,
            frame,
            pace,
            sleep: None,
        };
        return Ok(b.body(body).expect("origin builds a valid response"));
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
        let state = Arc::new(Mutex::new(OriginState {
            frame: 64 * 1024,
            ..OriginState::default()
        }));
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

    /// Hold every request from now on (each is recorded, then waits) until the returned
    /// [`Held`] is released or dropped.
    pub fn hold(&self) -> Held {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.state.lock().unwrap().gate = Some(rx);
        Held(tx)
    }

    /// Serve `path` (exact, without query) with [`pattern_body`]`(path, len)`: 200,
    /// `application/octet-stream`, `Cache-Control: public, max-age=3600`, `Content-Length`.
    /// Returns the body (a cheap handle on the origin's copy) for the test to compare against.
    pub fn set_large(&self, path: &str, len: usize) -> Bytes {
        let body = pattern_body(path, len);
        self.state
            .lock()
            .unwrap()
            .large
            .insert(path.to_owned(), body.clone());
        body
    }

    /// Send bodies registered with [`Origin::set_large`] in frames of `frame` bytes with `pace`
    /// between frames (a slow origin whose fills stay in flight). Default: 64 KiB, no pause.
    pub fn set_pace(&self, frame: usize, pace: Duration) {
        let mut st = self.state.lock().unwrap();
        st.frame = frame.max(1);
        st.pace = pace;
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
    /// `pingora.grace_period_seconds` (None: not written, Pingora's default of 5 minutes).
    /// Tests that stop the edge with SIGTERM ([`Edge::stop`]) set it low.
    pub grace_period_seconds: Option<u64>,
    /// `pingora.graceful_shutdown_timeout_seconds` (None: not written).
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// More listener addresses besides `127.0.0.1:<port>`, e.g. `"[::1]:8081"`.
    pub extra_listeners: Vec<String>,
    /// Top-level YAML appended to the config as is (e.g. `state_dir:`, `revocation:`).
    pub extra_yaml: String,
    /// Replaces the `news` origin's `url` (default `http://<test origin>`).
    pub origin_url: Option<String>,
    /// More `key: value` lines under `origins.news` (e.g. `ca_file: ca.pem`).
    pub origin_extra: Vec<String>,
    /// `cache.memory.fast_hits`: `Some` pins the connection-level hit path on or off; `None`
    /// leaves it to [`FAST_HITS_ENV`] (and, when that is unset, to the edge's default: on).
    /// A `fast_hits` written in [`EdgeOptions::cache`] pins it too (never both).
    pub fast_hits: Option<bool>,
}

/// `TOLLGATE_TEST_FAST_HITS=off` starts every [`Edge`] whose test does not choose
/// [`EdgeOptions::fast_hits`] with the hit path off (`cache.memory.fast_hits: false`), so the
/// whole suite checks the answers of the proxy alone; `on` (or unset) leaves the edge's default.
pub const FAST_HITS_ENV: &str = "TOLLGATE_TEST_FAST_HITS";

/// What [`FAST_HITS_ENV`] asks for: `Some(false)` for `off`, `Some(true)` for `on`, `None` when
/// unset or empty. Any other value panics: a misspelt switch must not run the suite unswitched.
pub fn fast_hits_from_env() -> Option<bool> {
    let value = std::env::var(FAST_HITS_ENV).unwrap_or_default();
    match value.trim() {
        "" => None,
        "off" => Some(false),
        "on" => Some(true),
        other => panic!("{FAST_HITS_ENV}={other:?}: expected off or on"),
    }
}

/// The `cache:` value of `opts` with `memory.fast_hits` set as [`EdgeOptions::fast_hits`] or
/// [`FAST_HITS_ENV`] ask, unless the test wrote it into the cache value itself.
fn cache_yaml(opts: &EdgeOptions) -> String {
    let written = opts.cache.contains("fast_hits");
    let want = match (opts.fast_hits, written) {
        (Some(_), true) => panic!(
            "EdgeOptions: fast_hits is set both in the field and in cache: {}",
            opts.cache
        ),
        (Some(on), false) => Some(on),
        (None, true) => None,
        (None, false) => fast_hits_from_env(),
    };
    let Some(on) = want else {
        return opts.cache.clone();
    };
    let mut cache: serde_yaml::Value = serde_yaml::from_str(&opts.cache)
        .unwrap_or_else(|e| panic!("EdgeOptions::cache is not YAML ({e}): {}", opts.cache));
    let map = cache
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("EdgeOptions::cache is not a mapping: {}", opts.cache));
    let memory = map
        .entry("memory".into())
        .or_insert_with(|| serde_yaml::Mapping::new().into());
    memory
        .as_mapping_mut()
        .unwrap_or_else(|| panic!("cache.memory is not a mapping: {}", opts.cache))
        .insert("fast_hits".into(), on.into());
    // JSON is YAML: one line, fit for the flow position after `cache: `
    serde_json::to_string(&cache).expect("cache value to JSON")
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
            grace_period_seconds: None,
            graceful_shutdown_timeout_seconds: None,
            extra_listeners: Vec::new(),
            extra_yaml: String::new(),
            origin_url: None,
            origin_extra: Vec::new(),
            fast_hits: None,
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
    origin_addr: SocketAddr,
    opts: EdgeOptions,
    /// Processes started so far on this config dir (1 + restarts).
    starts: u32,
}

/// Send `sig` to process `pid` (the system call: tests need no `kill` binary).
pub fn send_signal(pid: u32, sig: rustix::process::Signal) {
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .unwrap_or_else(|| panic!("not a process id: {pid}"));
    rustix::process::kill_process(target, sig)
        .unwrap_or_else(|e| panic!("kill({pid}, {sig:?}) failed: {e}"));
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
    let mut pingora_extra = String::new();
    if let Some(g) = opts.grace_period_seconds {
        pingora_extra.push_str(&format!("  grace_period_seconds: {g}\n"));
    }
    if let Some(g) = opts.graceful_shutdown_timeout_seconds {
        pingora_extra.push_str(&format!("  graceful_shutdown_timeout_seconds: {g}\n"));
    }
    let extra_listeners: String = opts
        .extra_listeners
        .iter()
        .map(|a| {
            if a.starts_with('{') {
                format!("  - {a}\n") // a whole listener mapping, e.g. with tls:
            } else {
                format!("  - addr: {}\n", yaml_str(a))
            }
        })
        .collect();
    let origin_url = opts
        .origin_url
        .clone()
        .unwrap_or_else(|| format!("http://{origin}"));
    let origin_extra: String = opts
        .origin_extra
        .iter()
        .map(|l| format!("    {l}\n"))
        .collect();
    let mut extra_yaml = opts.extra_yaml.clone();
    if !extra_yaml.is_empty() && !extra_yaml.ends_with('\n') {
        extra_yaml.push('\n');
    }
    format!(
        "listeners:\n  - addr: 127.0.0.1:{port}\n{extra_listeners}\
         admin:\n  addr: 127.0.0.1:{admin_port}\n  token_file: admin.token\n\
         origins:\n  news:\n    url: {origin_url}\n    secret_header: {SECRET_HEADER}\n    secret_file: origin.secret\n{origin_extra}\
         keys:\n  jwks_file: jwks.json\n  reload_interval_seconds: {reload}\n\
         auth:\n{auth}  leeway_seconds: 30\n  subscriptions_claim: subs\n  token_sources: [{sources}]\n\
         routes:\n{routes}\
         cache: {cache}\n\
         pingora:\n  threads: {threads}\n  pid_file: {pid}\n  upgrade_sock: {sock}\n{pingora_extra}{extra_yaml}",
        reload = opts.reload_interval_seconds,
        sources = sources.join(", "),
        cache = cache_yaml(opts),
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

/// Write the config and start `tollgate -c` until `/healthz` answers. With `ports: None`, on two
/// fresh ports (three attempts, in case another process grabbed a port in between); with
/// `Some((proxy, admin))`, on exactly those (three attempts, for a port still being released).
fn spawn_edge(
    dir: &Path,
    config_path: &Path,
    stderr_path: &Path,
    origin: SocketAddr,
    opts: &EdgeOptions,
    ports: Option<(u16, u16)>,
) -> (u16, u16, Child) {
    let mut last_err = String::new();
    for attempt in 0..3 {
        let (port, admin_port) = match ports {
            Some(p) => {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(500));
                }
                p
            }
            None => {
                let [port, admin_port] = free_ports::<2>();
                (port, admin_port)
            }
        };
        let config = config_yaml(dir, port, admin_port, origin, opts);
        std::fs::write(config_path, &config).unwrap();
        // every address the config names on loopback (listeners, TLS and PROXY listeners
        // included; the origin's too, which is already up): ready when all accept
        let addrs: Vec<u16> = config
            .split("127.0.0.1:")
            .skip(1)
            .filter_map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .collect();
        let stderr = std::fs::File::create(stderr_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("-c")
            .arg(config_path)
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
                    std::fs::read_to_string(stderr_path).unwrap_or_default()
                );
                break; // maybe a port race: retry with fresh ports
            }
            if probe_200(admin_port, "/healthz")
                && addrs
                    .iter()
                    .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok())
            {
                return (port, admin_port, child);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "tollgate did not answer /healthz on 127.0.0.1:{admin_port} within 20 s; \
                     stderr:\n{}",
                    std::fs::read_to_string(stderr_path).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("tollgate failed to start three times; last: {last_err}");
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
        let (port, admin_port, child) = spawn_edge(
            dir.path(),
            &config_path,
            &stderr_path,
            origin.addr,
            &opts,
            None,
        );
        Edge {
            port,
            admin_port,
            secret,
            admin_token,
            config_path,
            stderr_path,
            child: Mutex::new(child),
            dir,
            origin_addr: origin.addr,
            opts,
            starts: 1,
        }
    }

    /// Whether this edge runs with the connection-level hit path (`cache.memory.fast_hits`),
    /// as its options and [`FAST_HITS_ENV`] decided.
    pub fn fast_hits(&self) -> bool {
        let written: Option<serde_yaml::Value> = serde_yaml::from_str(&cache_yaml(&self.opts))
            .ok()
            .and_then(|c: serde_yaml::Value| c.get("memory")?.get("fast_hits").cloned());
        written.and_then(|v| v.as_bool()).unwrap_or(true)
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
        let r = client().get(self.admin_url("/metrics")).send().await;
        let r = r.unwrap_or_else(|e| {
            // a dead edge explains itself (its panics, its stderr) before the error does
            self.assert_running();
            panic!("GET /metrics: {e}")
        });
        assert_eq!(r.status().as_u16(), 200, "GET /metrics status");
        r.text().await.expect("metrics body")
    }

    /// The value of one metric series (sum over series matching `labels`; 0 if absent).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.metrics().await, name, labels)
    }

    /// Poll `/metrics` until the series reaches `at_least` (the request counter is bumped in the
    /// logging phase, after the client already has its response). Returns the last value.
    /// A family that is not exported yet (label-vector families appear with their first series)
    /// reads as not there yet until the deadline, then fails as [`metric`] does.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.metrics().await;
            let late = Instant::now() > deadline;
            if exported(&text, name) || late {
                let v = metric(&text, name, labels);
                if v >= at_least || late {
                    return v;
                }
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

/// Peak and current resident memory of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy)]
pub struct Rss {
    /// `VmRSS`: resident now, bytes.
    pub now: u64,
    /// `VmHWM`: the peak resident size since the process started, bytes.
    pub peak: u64,
}

/// `VmRSS` and `VmHWM` of process `pid`.
pub fn rss_of(pid: u32) -> Rss {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/status: {e}"));
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("/proc/{pid}/status has no {name}"));
        let kib: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("bad {name} line {line:?}"));
        kib * 1024
    };
    Rss {
        now: field("VmRSS:"),
        peak: field("VmHWM:"),
    }
}

/// A `cache:` value (YAML flow mapping) with a disk tier at `disk_dir`, e.g.
/// `disk_cache("64MiB", dir, "1GiB", "256MiB")`. The directory belongs to the test (a
/// `TempDir` it holds), so it outlives any one edge process.
pub fn disk_cache(memory_max: &str, disk_dir: &Path, disk_max: &str, max_object: &str) -> String {
    format!(
        "{{ memory: {{ max_size: {memory_max} }}, disk: {{ path: {}, max_size: {disk_max} }}, \
         max_object_size: {max_object} }}",
        yaml_str(&disk_dir.to_string_lossy())
    )
}

/// Default options with a disk tier at `disk_dir` and a short SIGTERM grace period, so that
/// [`Edge::stop`] and [`Edge::restart`] take a second or two.
pub fn disk_options(
    memory_max: &str,
    disk_dir: &Path,
    disk_max: &str,
    max_object: &str,
) -> EdgeOptions {
    EdgeOptions {
        cache: disk_cache(memory_max, disk_dir, disk_max, max_object),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(2),
        ..EdgeOptions::default()
    }
}

/// Regular files under `dir` (recursively), sorted; empty if `dir` does not exist.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The disk tier's object files: `<disk_dir>/objects/<2 hex>/<32 hex>.tgc`.
pub fn object_files(disk_dir: &Path) -> Vec<PathBuf> {
    files_under(&disk_dir.join("objects"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "tgc"))
        .collect()
}

/// The object file whose bytes contain `needle` (a slice of one object's body); panics unless
/// exactly one does.
pub fn object_file_containing(disk_dir: &Path, needle: &[u8]) -> (PathBuf, usize) {
    let mut found = Vec::new();
    for f in object_files(disk_dir) {
        let data = std::fs::read(&f).unwrap_or_default();
        if let Some(at) = data.windows(needle.len()).position(|w| w == needle) {
            found.push((f, at));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "expected exactly one object file under {}/objects holding the given body bytes \
         (bodies are incompressible and stored as is), found {found:?}",
        disk_dir.display()
    );
    found.pop().unwrap()
}

impl Edge {
    /// The process id of the running edge.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// `VmRSS` / `VmHWM` of the running edge.
    pub fn rss(&self) -> Rss {
        self.assert_running();
        rss_of(self.pid())
    }

    /// How many processes have been started on this config dir (1 + restarts).
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// Stop the edge the way systemd does (SIGTERM) and wait for it to exit (30 s at most, or
    /// panic). Set [`EdgeOptions::grace_period_seconds`] low, or this takes Pingora's 5 minutes.
    pub fn stop(&mut self) {
        self.assert_running();
        let pid = self.pid();
        send_signal(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.exit_status() {
                assert!(
                    status.success(),
                    "the edge exited with {status} on SIGTERM; stderr tail:\n{}",
                    self.stderr_tail(40)
                );
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "the edge did not exit within 30 s of SIGTERM; stderr tail:\n{}",
                    self.stderr_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` the edge (no chance to flush or clean up) and reap it.
    pub fn kill_hard(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        child.kill().expect("SIGKILL the edge");
        let _ = child.wait();
    }

    /// Start a new process on the same config dir (keys, secrets, admin token), the same options
    /// and the same ports, after [`Edge::stop`] or [`Edge::kill_hard`]. Same ports because the
    /// client's `Host` (`127.0.0.1:<port>`) is part of the cache key: on another port nothing
    /// stored before would be found. The previous process's stderr is kept as
    /// `stderr.<n>.log` in [`Edge::dir`].
    pub fn start_again(&mut self) {
        assert!(
            self.exit_status().is_some(),
            "start_again: the previous edge is still running"
        );
        let _ = std::fs::rename(
            &self.stderr_path,
            self.dir.path().join(format!("stderr.{}.log", self.starts)),
        );
        let (port, admin_port, child) = spawn_edge(
            self.dir.path(),
            &self.config_path,
            &self.stderr_path,
            self.origin_addr,
            &self.opts,
            Some((self.port, self.admin_port)),
        );
        self.port = port;
        self.admin_port = admin_port;
        *self.child.get_mut().unwrap_or_else(|e| e.into_inner()) = child;
        self.starts += 1;
    }

    /// [`Edge::stop`] (SIGTERM) then [`Edge::start_again`].
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Poll `/metrics` (every 50 ms, up to `timeout`) until `ok(value)` holds for the series;
    /// returns the last value and whether it held. A family not exported yet is waited for as
    /// in [`Edge::wait_metric`].
    pub async fn poll_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> (f64, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.metrics().await;
            let late = Instant::now() > deadline;
            if exported(&text, name) || late {
                let v = metric(&text, name, labels);
                if ok(v) {
                    return (v, true);
                }
                if late {
                    return (v, false);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

/// Like [`client`] with a generous timeout, for large bodies in debug builds.
pub fn big_body_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(55))
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

/// A response whose body is bytes (binary objects), fully read.
#[derive(Debug)]
pub struct BinResp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl BinResp {
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
}

/// GET `path` on the edge with extra request headers; the body read as bytes.
pub async fn get_bin(edge: &Edge, path: &str, headers: &[(&str, &str)]) -> BinResp {
    let mut rb = client().get(edge.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: body: {e}"));
    BinResp {
        status,
        headers,
        body,
    }
}

/// What [`get_streamed`] saw: the head, and the body checked chunk by chunk as it arrived.
#[derive(Debug)]
pub struct Streamed {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body bytes received.
    pub len: u64,
    /// SHA-256 of the body received, hex.
    pub sha256: String,
    /// Offset of the first byte that differs from the expected body (or where the body went
    /// past its end), if any.
    pub first_mismatch: Option<u64>,
    /// The transfer error, if the body did not arrive completely.
    pub error: Option<String>,
}

impl Streamed {
    /// `Cache-Status`, or panics.
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .unwrap_or_else(|| panic!("response without Cache-Status: {:?}", self.headers))
            .to_str()
            .expect("header is text")
    }

    /// The body arrived completely and equals the expected body, byte for byte (every chunk
    /// was compared at its offset as it arrived). [`Streamed::sha256`] is there to compare with
    /// a digest computed once, e.g. [`sha256_hex`] of the origin's body.
    pub fn matches(&self, expected: &[u8]) -> bool {
        self.error.is_none() && self.first_mismatch.is_none() && self.len == expected.len() as u64
    }
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// GET `path` with `client` and read the body as it streams in, never holding it whole: each
/// chunk is hashed and compared with `expected` at its offset. A transfer error is reported in
/// [`Streamed::error`], not a panic (a response cut short is an outcome some tests look for).
pub async fn get_streamed(
    client: &reqwest::Client,
    edge: &Edge,
    path: &str,
    expected: &[u8],
) -> Streamed {
    use sha2::Digest;
    let mut r = client
        .get(edge.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let mut hasher = sha2::Sha256::new();
    let mut len: u64 = 0;
    let mut first_mismatch = None;
    let mut error = None;
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                let at = len as usize;
                if first_mismatch.is_none() {
                    let want = expected
                        .get(at..(at + chunk.len()).min(expected.len()))
                        .unwrap_or(&[]);
                    // slice equality first (memcmp; the byte loop is slow in debug builds)
                    if want != &chunk[..want.len()] {
                        let i = want.iter().zip(chunk.iter()).position(|(a, b)| a != b);
                        first_mismatch = Some((at + i.unwrap_or(0)) as u64);
                    } else if want.len() < chunk.len() {
                        first_mismatch = Some((at + want.len()) as u64);
                    }
                }
                hasher.update(&chunk);
                len += chunk.len() as u64;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(format!("{e} ({:?})", std::error::Error::source(&e)));
                break;
            }
        }
    }
    Streamed {
        status,
        headers,
        len,
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        first_mismatch,
        error,
    }
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

/// Whether `text` has a `# TYPE` line for `name` (or the histogram or summary it is part of).
fn declared(text: &str, name: &str) -> bool {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name);
    text.lines().any(|l| {
        l.starts_with(&format!("# TYPE {name} ")) || l.starts_with(&format!("# TYPE {base} "))
    })
}

/// Whether `text` exports `name` at all: a `# TYPE` line or a sample.
pub fn exported(text: &str, name: &str) -> bool {
    declared(text, name)
        || text.lines().any(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(['{', ' ']))
        })
}

/// Sum of the samples named `name` whose labels include all of `labels`; 0 when no series has
/// those label values. Panics when `name` is nowhere in the text (no sample, no `# TYPE`), or
/// when one of the label names is on none of its series: a misspelt or missing metric must fail
/// a test, never read as 0.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let samples = parse_metrics(text).unwrap_or_else(|e| panic!("metrics do not parse: {e}"));
    let family: Vec<&Sample> = samples.iter().filter(|s| s.name == name).collect();
    assert!(
        !family.is_empty() || declared(text, name),
        "metric {name} is not exported at all (misspelt, or never registered)"
    );
    for (k, _) in labels {
        assert!(
            family.is_empty() || family.iter().any(|s| s.labels.contains_key(*k)),
            "metric {name} has no label {k:?}"
        );
    }
    family
        .iter()
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

// ---------------------------------------------------------------------------------------------
// Media: files on the origin, clients from other loopback addresses, the revocation API
// ---------------------------------------------------------------------------------------------

impl Origin {
    /// Serve `path` (exact, without query) with `body` as `content_type`: 200,
    /// `Cache-Control: public, max-age=3600`, `Content-Length`, after waiting `delay` (a slow
    /// segment).
    pub fn set_file(
        &self,
        path: &str,
        body: impl Into<Bytes>,
        content_type: &str,
        delay: Duration,
    ) {
        self.state.lock().unwrap().files.insert(
            path.to_owned(),
            Served {
                body: body.into(),
                content_type: content_type.to_owned(),
                delay,
            },
        );
    }

    /// Serve every regular file directly inside `dir` at `url_dir` + its name (`url_dir` ends
    /// with `/`), typed by extension: `.m3u8` as `application/vnd.apple.mpegurl`, `.ts` as
    /// `video/mp2t`, anything else as `application/octet-stream`. Returns the URL paths, sorted.
    pub fn serve_dir(&self, url_dir: &str, dir: &Path) -> Vec<String> {
        let mut served = Vec::new();
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let e = e.expect("directory entry");
            if !e.file_type().expect("file type").is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let content_type = match name.rsplit_once('.').map(|(_, ext)| ext) {
                Some("m3u8") => "application/vnd.apple.mpegurl",
                Some("ts") => "video/mp2t",
                _ => "application/octet-stream",
            };
            let path = format!("{url_dir}{name}");
            let body = std::fs::read(e.path()).expect("read served file");
            self.set_file(&path, body, content_type, Duration::ZERO);
            served.push(path);
        }
        served.sort();
        served
    }
}

/// Like [`client`], but every connection comes from `local` (on Linux any 127.0.0.0/8 address
/// is loopback), so the edge sees that client address.
pub fn client_from(local: std::net::IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .local_address(local)
        .build()
        .expect("reqwest client")
}

impl Edge {
    /// `POST /admin/revoke` with the admin token: `{"sid": sid, "ttl_seconds": ttl}` (no
    /// `ttl_seconds` when `None`). Returns the status and the JSON answer.
    pub async fn revoke(&self, sid: &str, ttl_seconds: Option<u64>) -> (u16, serde_json::Value) {
        let mut body = serde_json::json!({ "sid": sid });
        if let Some(ttl) = ttl_seconds {
            body["ttl_seconds"] = ttl.into();
        }
        let r = client()
            .post(self.admin_url("/admin/revoke"))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /admin/revoke");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        let v = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("/admin/revoke answered {status} with non-JSON ({e}): {text}")
        });
        (status, v)
    }

    /// `GET /admin/revocations` with the admin token: the `revocations` array; panics unless
    /// the answer is 200 JSON of that shape.
    pub async fn revocations(&self) -> Vec<serde_json::Value> {
        let r = client()
            .get(self.admin_url("/admin/revocations"))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("GET /admin/revocations");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(
            status, 200,
            "GET /admin/revocations answered {status}: {text}"
        );
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("/admin/revocations is not JSON ({e}): {text}"));
        v["revocations"]
            .as_array()
            .unwrap_or_else(|| panic!("/admin/revocations has no \"revocations\" array: {text}"))
            .clone()
    }

    /// The jwks.json the edge reloads its keys from.
    pub fn jwks_path(&self) -> PathBuf {
        self.dir.path().join("jwks.json")
    }
}

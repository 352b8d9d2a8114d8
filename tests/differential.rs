//! Differential: the same requests to two edges on one origin whose configs differ only in
//! `cache.memory.fast_hits` (the connection-level hit path on, and off: the proxy alone). Every
//! access mode (public, paywall, token, signed, basic, AWS Secure Media Delivery) × protocol
//! (HTTP/1.1, HTTP/1.1 over TLS, HTTP/2 over TLS negotiated by ALPN; the edge offers no h2c:
//! its plain listeners speak HTTP/1 only), each on a fresh connection per request and on one
//! connection kept for all the cases (so that it moves between the hit path and the proxy) ×
//! credential state, every cacheable object warm on both edges. Each answer must be the same on both — status, body, headers (but `Date`, `Age`
//! and the test origin's per-response `x-origin-seq`), the access-log record (but `time` and
//! `duration`) and what the request added to the counters — and a refused or non-subscriber
//! credential never gets subscriber content, and no hit reaches the origin.
//!
//! Which of these requests the hit path answers is printed (`--nocapture`), not asserted: that
//! is changing. Asserted: with `fast_hits: false` it answers none.
//!
//! Every difference found is collected and reported together, each naming its case
//! (`mode/protocol/state`).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use ring::hmac;
use serde_json::{json, Value};
use support::certs::Ca;
use support::{tokens, Edge, EdgeOptions, Origin, SUBSCRIBER_MARK};
use tollgate::auth::mint::{b64url, SigningKey};

/// The hit path's answers.
const SERVED: &str = "tollgate_fast_path_total";
/// Sampled once per answered request, last of its counters (proxy `logging` and hit path alike).
const DURATION_COUNT: &str = "tollgate_request_duration_seconds_count";
/// Every answered request, whichever way it was answered.
const REQUESTS: &str = "tollgate_requests_total";
/// The counter families whose increments must match, request by request.
const COMPARED: [&str; 5] = [
    REQUESTS,
    "tollgate_auth_decisions_total",
    "tollgate_cache_lookups_total",
    "tollgate_refused_requests_total",
    DURATION_COUNT,
];
/// The name the TLS certificate is for; resolved to 127.0.0.1 by the clients.
const TLS_NAME: &str = "a.test";
/// Response headers that differ by the second, or per origin response (each edge stored its own).
const UNCOMPARED_HEADERS: [&str; 3] = ["date", "age", "x-origin-seq"];

// ---------------------------------------------------------------------------------------------
// Protocols and clients
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Proto {
    /// HTTP/1.1 on the plain listener.
    H1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1` only).
    H1Tls,
    /// HTTP/2 over TLS (ALPN `h2` only).
    H2Tls,
}

/// How a case's request travels: the protocol, on a fresh connection or on one the client
/// keeps for all the cases (HTTP/1.1 keep-alive; one multiplexed HTTP/2 connection), so that a
/// connection also moves between the hit path and the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Via {
    proto: Proto,
    kept: bool,
}

const VIAS: [Via; 6] = [
    Via::fresh(Proto::H1),
    Via::fresh(Proto::H1Tls),
    Via::fresh(Proto::H2Tls),
    Via::kept(Proto::H1),
    Via::kept(Proto::H1Tls),
    Via::kept(Proto::H2Tls),
];

impl Via {
    const fn fresh(proto: Proto) -> Via {
        Via { proto, kept: false }
    }

    const fn kept(proto: Proto) -> Via {
        Via { proto, kept: true }
    }

    fn name(self) -> String {
        let kept = if self.kept { " kept" } else { "" };
        format!("{}{kept}", self.proto.name())
    }

    fn client(self, ca: &Path) -> reqwest::Client {
        self.proto.client(ca, self.kept)
    }
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H1Tls => "h1+tls",
            Proto::H2Tls => "h2+tls",
        }
    }

    fn version(self) -> reqwest::Version {
        match self {
            Proto::H1 | Proto::H1Tls => reqwest::Version::HTTP_11,
            Proto::H2Tls => reqwest::Version::HTTP_2,
        }
    }

    /// A client that speaks exactly this protocol (a fresh connection per request unless
    /// `kept`, no redirects, no proxies from the environment), trusting only `ca` for TLS.
    fn client(self, ca: &Path, kept: bool) -> reqwest::Client {
        let b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(if kept { 4 } else { 0 })
            .timeout(Duration::from_secs(20));
        let b = match self {
            Proto::H1 => b.http1_only(),
            Proto::H1Tls | Proto::H2Tls => {
                let pem = std::fs::read(ca).expect("read the test CA");
                let cert = reqwest::Certificate::from_pem(&pem).expect("test CA certificate");
                let b = b
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(cert)
                    .https_only(true)
                    // the port comes from the URL
                    .resolve(TLS_NAME, "127.0.0.1:0".parse().unwrap());
                if self == Proto::H1Tls {
                    b.http1_only()
                } else {
                    // over TLS: ALPN offers h2 alone
                    b.http2_prior_knowledge()
                }
            }
        };
        b.build().expect("reqwest client")
    }
}

// ---------------------------------------------------------------------------------------------
// Two edges
// ---------------------------------------------------------------------------------------------

/// One edge of the pair, with its TLS port and its access log.
struct Side {
    edge: Edge,
    tls_port: u16,
    log: PathBuf,
}

impl Side {
    fn url(&self, proto: Proto, target: &str) -> String {
        match proto {
            Proto::H1 => self.edge.url(target),
            Proto::H1Tls | Proto::H2Tls => {
                format!("https://{TLS_NAME}:{}{target}", self.tls_port)
            }
        }
    }

    /// The edge's host as a request names it, for normalizing access-log records.
    fn ports(&self) -> [u16; 2] {
        [self.edge.port, self.tls_port]
    }
}

struct Pair {
    /// `fast_hits: true`.
    on: Side,
    /// `fast_hits: false`.
    off: Side,
    ca: PathBuf,
    _dir: tempfile::TempDir,
}

/// Two edges on `origin`, identical but for `fast_hits` (and, necessarily, their ports and
/// log files): `routes`, a TLS listener, the access log, and `extra_yaml`.
fn pair(origin: &Origin, key: &SigningKey, routes: Vec<String>, extra_yaml: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "Tollgate Differential CA", "ca.pem");
    let (crt, tls_key) = ca.leaf(dir.path(), "a", &[TLS_NAME]);
    let side = |fast_hits: bool| {
        let tls_port = support::free_port();
        let log = dir.path().join(format!(
            "access-{}.log",
            if fast_hits { "on" } else { "off" }
        ));
        let listener = format!(
            "{{ addr: \"127.0.0.1:{tls_port}\", tls: {{ cert: {:?}, key: {:?} }} }}",
            crt.to_string_lossy(),
            tls_key.to_string_lossy()
        );
        let opts = EdgeOptions {
            routes: routes.clone(),
            token_sources: vec![
                "path".into(),
                "query:token".into(),
                "bearer".into(),
                "cookie:token".into(),
            ],
            extra_listeners: vec![listener],
            extra_yaml: format!(
                "{extra_yaml}\nlogging: {{ access_log: {} }}\n",
                serde_json::to_string(&log.to_string_lossy()).unwrap()
            ),
            fast_hits: Some(fast_hits),
            ..EdgeOptions::default()
        };
        let edge = Edge::start_with(origin, &[key], opts);
        assert_eq!(edge.fast_hits(), fast_hits);
        Side {
            edge,
            tls_port,
            log,
        }
    };
    let on = side(true);
    let off = side(false);
    Pair {
        on,
        off,
        ca: ca.pem.clone(),
        _dir: dir,
    }
}

/// What the protected objects are made of on the origin: subscriber content, cacheable.
fn serve_protected(origin: &Origin, path: &str) {
    origin.set_override(
        path,
        200,
        &[("cache-control", "public, max-age=300")],
        &format!("MEDIA:{path}:{SUBSCRIBER_MARK}\n"),
    );
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// One request, sent as is over every protocol to both edges.
#[derive(Clone)]
struct Case {
    mode: &'static str,
    state: &'static str,
    head: bool,
    /// Path and query as sent (tokens and signatures included).
    target: String,
    headers: Vec<(&'static str, String)>,
    /// The status this case is about (a check of the test itself).
    want: u16,
    /// Subscriber content is the answer (else it must not be).
    subscriber: bool,
    /// A request body (to a method that has none: refused for its framing).
    body: Option<&'static str>,
}

impl Case {
    fn get(mode: &'static str, state: &'static str, target: impl Into<String>) -> Case {
        Case {
            mode,
            state,
            head: false,
            target: target.into(),
            headers: Vec::new(),
            want: 200,
            subscriber: false,
            body: None,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    fn bearer(self, token: &str) -> Case {
        self.header("authorization", format!("Bearer {token}"))
    }

    fn head(mut self) -> Case {
        self.head = true;
        self
    }

    fn refused(mut self, status: u16) -> Case {
        self.want = status;
        self
    }

    /// Send `body` with the request: refused with 400 for its framing, before routing.
    fn with_body(mut self, body: &'static str) -> Case {
        self.body = Some(body);
        self.want = 400;
        self
    }

    /// Whether the edge records this request with a request-duration sample and an access-log
    /// line over `proto`. Not a framing refusal over HTTP/1: the connection loop answers it
    /// before any proxy phase (with the hit path on or off), counting it in
    /// `tollgate_requests_total` and `tollgate_refused_requests_total` only.
    fn logged(&self, proto: Proto) -> bool {
        self.body.is_none() || proto == Proto::H2Tls
    }

    fn subscriber(mut self) -> Case {
        self.subscriber = true;
        self
    }

    fn name(&self, via: Via) -> String {
        let head = if self.head { " HEAD" } else { "" };
        format!("{}/{}/{}{head}", self.mode, via.name(), self.state)
    }
}

/// An answer as the client read it.
struct Answer {
    /// The client's port: which connection carried it.
    local_port: Option<u16>,
    status: u16,
    version: reqwest::Version,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Headers as sorted (name, value) pairs, without [`UNCOMPARED_HEADERS`].
    fn comparable_headers(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| !UNCOMPARED_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        v.sort();
        v
    }
}

async fn send(client: &reqwest::Client, side: &Side, via: Via, case: &Case) -> Answer {
    let url = side.url(via.proto, &case.target);
    let mut rb = if case.head {
        client.head(&url)
    } else {
        client.get(&url)
    };
    for (k, v) in &case.headers {
        rb = rb.header(*k, v.as_str());
    }
    if let Some(body) = case.body {
        rb = rb.body(body);
    }
    let r = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: request failed: {e:?}", case.name(via)));
    let local_port = r
        .extensions()
        .get::<hyper_util::client::legacy::connect::HttpInfo>()
        .map(|info| info.local_addr().port());
    let status = r.status().as_u16();
    let version = r.version();
    let headers = r.headers().clone();
    let body = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("{}: body: {e:?}", case.name(via)));
    Answer {
        local_port,
        status,
        version,
        headers,
        body,
    }
}

// ---------------------------------------------------------------------------------------------
// Counters and access-log records
// ---------------------------------------------------------------------------------------------

/// The compared counter series of a `/metrics` text, keyed `name{labels}`.
fn compared_series(metrics: &str) -> BTreeMap<String, f64> {
    let samples = support::parse_metrics(metrics).expect("metrics parse");
    samples
        .into_iter()
        .filter(|s| COMPARED.contains(&s.name.as_str()))
        .map(|s| {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            (format!("{}{{{}}}", s.name, labels.join(",")), s.value)
        })
        .collect()
}

/// What changed between two [`compared_series`] (series that moved, by how much).
fn increments(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> Vec<String> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let d = v - before.get(k).copied().unwrap_or(0.0);
            (d != 0.0).then(|| format!("{k} +{d}"))
        })
        .collect()
}

fn served(metrics: &str) -> f64 {
    support::metric(metrics, SERVED, &[("outcome", "served")])
}

/// The `/metrics` text once `name` (summed over its series) reaches `want` on `edge`, read again
/// after that so that every family is seen complete; `None` after 5 s. With
/// [`DURATION_COUNT`]: the last counter an answer bumps (but see [`Case::logged`]).
async fn metrics_after(edge: &Edge, name: &str, want: f64) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = edge.metrics().await;
        if support::metric(&m, name, &[]) >= want {
            return Some(edge.metrics().await);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn log_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The access log's lines once it holds `n` (5 s at most).
async fn log_after(path: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let lines = log_lines(path);
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A record without `time` and `duration`, its host's port (each edge has its own) written
/// `PORT`.
fn comparable_record(mut record: Value, side: &Side) -> Value {
    let obj = record.as_object_mut().expect("a record is an object");
    obj.remove("time");
    obj.remove("duration");
    if let Some(Value::String(host)) = obj.get_mut("host") {
        for port in side.ports() {
            if let Some(name) = host.strip_suffix(&format!(":{port}")) {
                *host = format!("{name}:PORT");
                break;
            }
        }
    }
    record
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

/// Where each side stands: counters, samples and log lines so far.
struct Seen {
    series: BTreeMap<String, f64>,
    requests: f64,
    durations: f64,
    lines: usize,
    served: f64,
}

async fn seen(side: &Side) -> Seen {
    let m = side.edge.metrics().await;
    Seen {
        series: compared_series(&m),
        requests: support::metric(&m, REQUESTS, &[]),
        durations: support::metric(&m, DURATION_COUNT, &[]),
        lines: log_lines(&side.log).len(),
        served: served(&m),
    }
}

/// The requests that fill the cache: each must be a miss on both edges, on the plain listener
/// and on the TLS one (the host, in the cache key, differs; HTTP/2 names the TLS one's).
async fn warm(origin: &Origin, pair: &Pair, fills: &[Case]) {
    for via in [Via::fresh(Proto::H1), Via::fresh(Proto::H1Tls)] {
        let client = via.client(&pair.ca);
        for case in fills {
            for side in [&pair.on, &pair.off] {
                let a = send(&client, side, via, case).await;
                assert_eq!(a.status, 200, "warm-up {}: {}", case.name(via), a.body);
                assert!(
                    a.header("cache-status").contains("fwd=miss"),
                    "warm-up {} is a miss: {:?}",
                    case.name(via),
                    a.headers
                );
            }
        }
    }
    let objects = (2 * fills.len()) as f64;
    for side in [&pair.on, &pair.off] {
        let (held, ok) = side
            .edge
            .poll_metric(
                "tollgate_cache_objects",
                &[("tier", "memory")],
                Duration::from_secs(5),
                |v| v >= objects,
            )
            .await;
        assert!(ok, "only {held} of {objects} warm-up objects stored");
        // every warm-up request counted and logged, so that none is taken for a case's
        assert!(
            metrics_after(&side.edge, DURATION_COUNT, objects)
                .await
                .is_some(),
            "warm-up requests never all sampled"
        );
        let lines = log_after(&side.log, 2 * fills.len()).await.len();
        assert_eq!(lines, 2 * fills.len(), "warm-up access-log lines");
    }
    assert_eq!(origin.total(), 2 * 2 * fills.len(), "one fill per object");
}

/// Run every case over every protocol against both edges; print the hit path's share per
/// (mode, protocol); panic with every difference found.
async fn run(origin: &Origin, pair: &Pair, cases: &[Case]) {
    let filled = origin.total();
    let mut failures: Vec<String> = Vec::new();
    // (mode, protocol) → (served by the hit path, requests)
    let mut table: BTreeMap<(&str, Via), (f64, usize)> = BTreeMap::new();
    let mut modes: Vec<&str> = Vec::new();
    let (mut on_seen, mut off_seen) = (seen(&pair.on).await, seen(&pair.off).await);
    // the connections (client ports) each edge saw, per way of sending
    let mut connections: BTreeMap<Via, [BTreeSet<Option<u16>>; 2]> = BTreeMap::new();
    for via in VIAS {
        let client = via.client(&pair.ca);
        let proto = via.proto;
        for case in cases {
            let name = case.name(via);
            let mut fail = |what: String| failures.push(format!("[{name}] {what}"));
            let on = send(&client, &pair.on, via, case).await;
            let off = send(&client, &pair.off, via, case).await;
            let seen_ports = connections.entry(via).or_default();
            seen_ports[0].insert(on.local_port);
            seen_ports[1].insert(off.local_port);

            // The test's own premises.
            for (side, a) in [("on", &on), ("off", &off)] {
                if a.version != proto.version() {
                    fail(format!("{side}: answered over {:?}", a.version));
                }
                if a.status != case.want {
                    fail(format!(
                        "{side}: status {} where the case expects {}: {}",
                        a.status, case.want, a.body
                    ));
                }
                if a.status == 200 && a.header("cache-status") != "tollgate; hit" {
                    fail(format!(
                        "{side}: not a hit: cache-status {:?}",
                        a.header("cache-status")
                    ));
                }
                // The security property: subscriber content only to an entitled credential.
                let got_mark = a.body.contains(SUBSCRIBER_MARK);
                if got_mark && !case.subscriber {
                    fail(format!(
                        "{side}: SUBSCRIBER CONTENT TO A REFUSED OR NON-SUBSCRIBER CREDENTIAL: {}",
                        a.body
                    ));
                }
                if !case.head && case.subscriber && !got_mark {
                    fail(format!("{side}: no subscriber content: {}", a.body));
                }
            }
            // The two answers.
            if on.status != off.status {
                fail(format!("status: on {} / off {}", on.status, off.status));
            }
            if on.body != off.body {
                fail(format!("body: on {:?} / off {:?}", on.body, off.body));
            }
            let (oh, fh) = (on.comparable_headers(), off.comparable_headers());
            if oh != fh {
                fail(format!("headers:\n  on  {oh:?}\n  off {fh:?}"));
            }
            for (side, a) in [("on", &on), ("off", &off)] {
                if !a.headers.contains_key("date") {
                    fail(format!("{side}: no Date"));
                }
            }
            if origin.total() != filled {
                fail(format!(
                    "the origin was asked: {} requests since the warm-up",
                    origin.total() - filled
                ));
            }

            // What each edge counted and logged for it.
            let mut records = Vec::new();
            let mut moved = Vec::new();
            for (label, side, before) in [
                ("on", &pair.on, &mut on_seen),
                ("off", &pair.off, &mut off_seen),
            ] {
                let logged = case.logged(proto);
                let settled = if logged {
                    metrics_after(&side.edge, DURATION_COUNT, before.durations + 1.0).await
                } else {
                    // counted before its answer was written: nothing more will come
                    metrics_after(&side.edge, REQUESTS, before.requests + 1.0).await
                };
                let Some(m) = settled else {
                    fail(format!("{label}: not counted within 5 s"));
                    *before = seen(side).await;
                    moved.push(Vec::new());
                    records.push(Value::Null);
                    continue;
                };
                let series = compared_series(&m);
                moved.push(increments(&before.series, &series));
                let (requests, durations) = (
                    support::metric(&m, REQUESTS, &[]),
                    support::metric(&m, DURATION_COUNT, &[]),
                );
                let recorded = u8::from(logged);
                if requests != before.requests + 1.0 {
                    fail(format!(
                        "{label}: counted {} times in {REQUESTS}",
                        requests - before.requests
                    ));
                }
                if durations != before.durations + f64::from(recorded) {
                    fail(format!(
                        "{label}: {} request-duration samples, expected {recorded}",
                        durations - before.durations
                    ));
                }
                let lines = if logged {
                    log_after(&side.log, before.lines + 1).await
                } else {
                    log_lines(&side.log)
                };
                if lines.len() != before.lines + usize::from(recorded) {
                    fail(format!(
                        "{label}: {} access-log lines, expected {recorded}",
                        lines.len() - before.lines
                    ));
                }
                records.push(
                    lines
                        .get(before.lines)
                        .cloned()
                        .map_or(Value::Null, |r| comparable_record(r, side)),
                );
                let now_served = served(&m);
                let delta = now_served - before.served;
                if label == "on" {
                    let row = table.entry((case.mode, via)).or_default();
                    row.0 += delta;
                    row.1 += 1;
                } else if delta != 0.0 {
                    fail(format!("off: the hit path answered ({SERVED} +{delta})"));
                }
                *before = Seen {
                    series,
                    requests,
                    durations,
                    lines: lines.len(),
                    served: now_served,
                };
            }
            if moved[0] != moved[1] {
                fail(format!(
                    "counters:\n  on  {:?}\n  off {:?}",
                    moved[0], moved[1]
                ));
            }
            if records[0] != records[1] {
                fail(format!(
                    "access-log record:\n  on  {}\n  off {}",
                    records[0], records[1]
                ));
            }
            if !modes.contains(&case.mode) {
                modes.push(case.mode);
            }
        }
    }

    // The test's own premise: a fresh connection per request, or one kept for them all (a
    // refusal that closes it, e.g. for framing, opens another).
    for (via, sides) in &connections {
        for (label, ports) in ["on", "off"].iter().zip(sides) {
            let n = ports.len();
            let ok = if via.kept {
                n <= 1 + cases.iter().filter(|c| c.body.is_some()).count()
            } else {
                n == cases.len()
            };
            if !ok || ports.contains(&None) {
                failures.push(format!(
                    "[{}] {label}: {} requests went over {n} connections {ports:?}",
                    via.name(),
                    cases.len()
                ));
            }
        }
    }
    let used: Vec<String> = connections
        .iter()
        .map(|(via, [on, off])| format!("{} {}/{}", via.name(), on.len(), off.len()))
        .collect();
    println!("\nconnections used (on/off): {}", used.join(", "));

    // The whole run, warm-up included: the compared families as they stand.
    let (on_all, off_all) = (
        compared_series(&pair.on.edge.metrics().await),
        compared_series(&pair.off.edge.metrics().await),
    );
    if on_all != off_all {
        failures.push(format!(
            "[totals] counters differ:\n  on  {on_all:?}\n  off {off_all:?}"
        ));
    }
    let off_served = served(&pair.off.edge.metrics().await);
    if off_served != 0.0 {
        failures.push(format!(
            "[totals] the hit path answered {off_served} requests with fast_hits: false"
        ));
    }

    println!(
        "\nrequests the hit path answered (fast_hits: true), of the requests sent \
         (\"kept\": one connection for all the cases):"
    );
    let mut head = format!("{:<13}", "mode");
    for via in VIAS {
        head.push_str(&format!("{:>13}", via.name()));
    }
    println!("{head}");
    for mode in &modes {
        let mut row = format!("{mode:<13}");
        for via in VIAS {
            let (s, n) = table.get(&(*mode, via)).copied().unwrap_or_default();
            row.push_str(&format!("{:>13}", format!("{s}/{n}")));
        }
        println!("{row}");
    }
    println!();
    assert!(
        failures.is_empty(),
        "{} differences between the hit path on and off:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Credentials
// ---------------------------------------------------------------------------------------------

/// A paywall or media token with `sid` (revocable) and `paths`, living `ttl` seconds.
fn jwt(key: &SigningKey, subs: &[&str], sid: Option<&str>, paths: &[&str], ttl: i64) -> String {
    let mut c = tokens::claims("reader", subs, ttl);
    if ttl < 0 {
        c["iat"] = json!(tokens::now() + ttl - 3600);
    }
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    if !paths.is_empty() {
        c["paths"] = json!(paths);
    }
    tokens::sign(key, &c)
}

fn basic(user: &str, pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b64}")
}

/// CloudFront's URL-safe base64 (`+` `=` `/` become `-` `_` `~`).
fn cf_b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .replace('+', "-")
        .replace('=', "_")
        .replace('/', "~")
}

/// A CloudFront key pair: the RSA key signs, the edge holds the public half under `id`.
struct CfKey {
    id: &'static str,
    key: PKey<Private>,
}

impl CfKey {
    fn new(id: &'static str) -> CfKey {
        let rsa = Rsa::generate(2048).expect("RSA key");
        CfKey {
            id,
            key: PKey::from_rsa(rsa).expect("pkey"),
        }
    }

    fn public_pem(&self) -> Vec<u8> {
        self.key.public_key_to_pem().expect("public key PEM")
    }

    /// The signing parameters of a custom policy for `resource` (CloudFront wildcards), expiring
    /// at `expires`, optionally for source addresses `ip`: (policy, signature, key pair id).
    fn sign(&self, resource: &str, expires: i64, ip: Option<&str>) -> [String; 3] {
        let mut condition = json!({ "DateLessThan": { "AWS:EpochTime": expires } });
        if let Some(ip) = ip {
            condition["IpAddress"] = json!({ "AWS:SourceIp": ip });
        }
        let policy =
            json!({ "Statement": [{ "Resource": resource, "Condition": condition }] }).to_string();
        let mut signer =
            openssl::sign::Signer::new(MessageDigest::sha1(), &self.key).expect("signer");
        signer.update(policy.as_bytes()).expect("sign");
        let signature = signer.sign_to_vec().expect("signature");
        [
            cf_b64(policy.as_bytes()),
            cf_b64(&signature),
            self.id.to_string(),
        ]
    }

    fn url(&self, path: &str, resource: &str, expires: i64, ip: Option<&str>) -> String {
        let [p, s, k] = self.sign(resource, expires, ip);
        format!("{path}?Policy={p}&Signature={s}&Key-Pair-Id={k}")
    }

    fn cookies(&self, resource: &str, expires: i64) -> String {
        let [p, s, k] = self.sign(resource, expires, None);
        format!("CloudFront-Policy={p}; CloudFront-Signature={s}; CloudFront-Key-Pair-Id={k}")
    }
}

const SMD_KID: &str = "20240101_0123456789abcdef0123";
const SMD_SECRET: &str = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99";

/// An AWS Secure Media Delivery token (HS256, as the AWS token service makes it), as the first
/// path segment. With `bind = Some((ip, sid))` it carries `intsig` over the viewer address and
/// the session id, and the segment is `<sid>.<token>`.
fn smd_token(secret: &str, paths: &[&str], ttl: i64, bind: Option<(&str, &str)>) -> String {
    let now = tokens::now();
    let mut payload = json!({ "paths": paths, "exp": now + ttl, "iat": now.min(now + ttl - 60) });
    if let Some((ip, sid)) = bind {
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            format!("{ip}:{sid}").as_bytes(),
        );
        payload["ip"] = Value::Bool(true);
        payload["ip_ver"] = json!(4);
        payload["ssn"] = Value::Bool(true);
        payload["intsig"] = Value::String(b64url(tag.as_ref()));
    }
    let h = b64url(
        json!({"alg": "HS256", "typ": "JWT", "kid": SMD_KID})
            .to_string()
            .as_bytes(),
    );
    let input = format!("{h}.{}", b64url(payload.to_string().as_bytes()));
    let sig = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        input.as_bytes(),
    );
    let token = format!("{input}.{}", b64url(sig.as_ref()));
    match bind {
        Some((_, sid)) => format!("{sid}.{token}"),
        None => token,
    }
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

const STORY: &str = "/premium/story";
const SEGMENT: &str = "/vod/show/seg1.ts";
const REPORT: &str = "/downloads/report.pdf";
const DRAFT: &str = "/drafts/story";

/// Public, paywall, token (JWT media tokens), signed (CloudFront) and basic routes.
///
/// Credential states, and those that do not apply:
/// - public: no credential is asked for; a token is ignored unverified, so "missing" (also
///   HEAD, and targets that normalize to the stored one: `%70`, `//`) and a forged token
///   ("ignored") are the only states.
/// - paywall: valid (bearer, cookie, query, HEAD, a `%73` target), expired, forged, malformed,
///   not entitled (subscriptions without `premium`), revoked (`sid` revoked at the admin API:
///   the teaser), missing (also a `//` target). Refusals are the teaser, never an error.
/// - token: valid (path token, query, HEAD), expired, forged, not entitled (`paths` elsewhere;
///   `ip` elsewhere — no `require` on the route, so every valid token is subscribed), revoked,
///   missing.
/// - signed: valid (URL, cookies, HEAD, a policy for exactly this path), expired policy, forged
///   signature (another key under the same Key-Pair-Id), not entitled (policy for another
///   resource; for another source IP; the exact-path policy on a `%72` target, which names the
///   same object once normalized but is checked as requested), missing. No revocation:
///   CloudFront signatures have none.
/// - basic: valid (HEAD too), wrong password, unknown user, malformed header, missing. No
///   expiry, no revocation, no entitlement beyond the realm's file.
///
/// And one request refused for its framing (a GET with a body: 400 before routing, counted in
/// `tollgate_refused_requests_total`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_protocol_and_credential_state_answers_alike_with_the_hit_path_on_and_off() {
    let origin = Origin::start();
    for path in [SEGMENT, REPORT, DRAFT] {
        serve_protected(&origin, path);
    }
    let key = tokens::es256("k1");
    let cf = CfKey::new("KDIFFRSA");
    let cf_forger = CfKey::new("KDIFFRSA");
    let files = tempfile::tempdir().unwrap();
    let cf_pem = files.path().join("cf.pem");
    std::fs::write(&cf_pem, cf.public_pem()).unwrap();
    let htpasswd = files.path().join("editors.htpasswd");
    // bcrypt at its lowest cost: debug builds stay fast
    let hash = bcrypt::hash("correct horse", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{hash}\n")).unwrap();
    let mut routes = vec![
        r#"{ match: "/vod/*", origin: news, access: token }"#.to_string(),
        r#"{ match: "/downloads/*", origin: news, access: signed }"#.to_string(),
        r#"{ match: "/drafts/*", origin: news, access: basic, realm: editors }"#.to_string(),
    ];
    routes.extend(support::default_routes());
    let extra = format!(
        "signed_keys:\n  {}: {:?}\nbasic_auth:\n  editors: {:?}\n",
        cf.id,
        cf_pem.to_string_lossy(),
        htpasswd.to_string_lossy()
    );
    let pair = pair(&origin, &key, routes, &extra);

    let now = tokens::now();
    let sub = tokens::subscriber(&key, "alice");
    let media = jwt(&key, &[], Some("s-live"), &["/vod/show/"], 600);
    let signed_url = cf.url(REPORT, "http*://*/downloads/*", now + 3600, None);
    let alice = basic("alice", "correct horse");
    let fills = [
        Case::get("public", "fill", "/news/page"),
        Case::get("paywall", "fill", STORY),
        Case::get("paywall", "fill", STORY).bearer(&sub),
        Case::get("token", "fill", format!("/{media}{SEGMENT}")),
        Case::get("signed", "fill", signed_url.clone()),
        Case::get("basic", "fill", DRAFT).header("authorization", alice.clone()),
    ];
    warm(&origin, &pair, &fills).await;
    for side in [&pair.on, &pair.off] {
        let (code, _) = side.edge.revoke("s-revoked", Some(3600)).await;
        assert_eq!(code, 200, "revoke");
    }

    let forged_sub = tokens::forged(&key);
    let forger = tokens::es256("k1");
    let cases = vec![
        // public
        Case::get("public", "missing", "/news/page"),
        Case::get("public", "ignored", "/news/page").bearer(&forged_sub),
        Case::get("public", "missing", "/news/page").head(),
        // targets that normalize to the stored object's (the hit path and the proxy each
        // normalize them)
        Case::get("public", "missing, %-encoded", "/news/%70age"),
        Case::get("public", "missing, //", "/news//page"),
        // paywall
        Case::get("paywall", "valid", STORY)
            .bearer(&sub)
            .subscriber(),
        Case::get("paywall", "valid cookie", STORY)
            .header("cookie", format!("token={sub}"))
            .subscriber(),
        Case::get("paywall", "valid query", format!("{STORY}?token={sub}")).subscriber(),
        Case::get("paywall", "valid", STORY)
            .bearer(&sub)
            .head()
            .subscriber(),
        Case::get("paywall", "expired", STORY).bearer(&tokens::expired(&key)),
        Case::get("paywall", "forged", STORY).bearer(&forged_sub),
        Case::get("paywall", "malformed", STORY).bearer(&tokens::malformed()),
        Case::get("paywall", "not entitled", STORY).bearer(&tokens::valid(
            &key,
            "bob",
            &["basic"],
            3600,
        )),
        Case::get("paywall", "revoked", STORY).bearer(&jwt(
            &key,
            &["premium"],
            Some("s-revoked"),
            &[],
            3600,
        )),
        Case::get("paywall", "missing", STORY),
        Case::get("paywall", "valid, %-encoded", "/premium/%73tory")
            .bearer(&sub)
            .subscriber(),
        Case::get("paywall", "missing, //", "//premium/story"),
        // token
        Case::get("token", "valid", format!("/{media}{SEGMENT}")).subscriber(),
        Case::get("token", "valid query", format!("{SEGMENT}?token={media}")).subscriber(),
        Case::get("token", "valid", format!("/{media}{SEGMENT}"))
            .head()
            .subscriber(),
        Case::get(
            "token",
            "expired",
            format!(
                "/{}{SEGMENT}",
                jwt(&key, &[], Some("s-live"), &["/vod/show/"], -3600)
            ),
        )
        .refused(403),
        Case::get(
            "token",
            "forged",
            format!(
                "/{}{SEGMENT}",
                jwt(&forger, &[], Some("s-live"), &["/vod/show/"], 600)
            ),
        )
        .refused(403),
        Case::get(
            "token",
            "not entitled: path",
            format!(
                "/{}{SEGMENT}",
                jwt(&key, &[], Some("s-live"), &["/vod/other/"], 600)
            ),
        )
        .refused(403),
        Case::get(
            "token",
            "not entitled: ip",
            format!("/{}{SEGMENT}", {
                let mut c = tokens::claims("reader", &[], 600);
                c["paths"] = json!(["/vod/show/"]);
                c["ip"] = json!("203.0.113.0/24");
                tokens::sign(&key, &c)
            }),
        )
        .refused(403),
        Case::get(
            "token",
            "revoked",
            format!(
                "/{}{SEGMENT}",
                jwt(&key, &[], Some("s-revoked"), &["/vod/show/"], 600)
            ),
        )
        .refused(403),
        Case::get("token", "missing", SEGMENT).refused(403),
        // signed
        Case::get("signed", "valid", signed_url.clone()).subscriber(),
        Case::get("signed", "valid cookies", REPORT)
            .header("cookie", cf.cookies("http*://*/downloads/*", now + 3600))
            .subscriber(),
        Case::get("signed", "valid", signed_url.clone())
            .head()
            .subscriber(),
        Case::get(
            "signed",
            "expired",
            cf.url(REPORT, "http*://*/downloads/*", now - 3600, None),
        )
        .refused(403),
        Case::get(
            "signed",
            "forged",
            cf_forger.url(REPORT, "http*://*/downloads/*", now + 3600, None),
        )
        .refused(403),
        Case::get(
            "signed",
            "not entitled: resource",
            cf.url(REPORT, "http*://*/private/*", now + 3600, None),
        )
        .refused(403),
        Case::get(
            "signed",
            "not entitled: ip",
            cf.url(
                REPORT,
                "http*://*/downloads/*",
                now + 3600,
                Some("203.0.113.0/24"),
            ),
        )
        .refused(403),
        Case::get("signed", "missing", REPORT).refused(403),
        // a policy for this one path is checked against the URL as requested, not normalized
        Case::get(
            "signed",
            "valid, exact resource",
            cf.url(REPORT, &format!("http*://*{REPORT}"), now + 3600, None),
        )
        .subscriber(),
        Case::get(
            "signed",
            "not entitled: resource, %-encoded",
            cf.url(
                "/downloads/%72eport.pdf",
                &format!("http*://*{REPORT}"),
                now + 3600,
                None,
            ),
        )
        .refused(403),
        // basic
        Case::get("basic", "valid", DRAFT)
            .header("authorization", alice.clone())
            .subscriber(),
        Case::get("basic", "valid", DRAFT)
            .header("authorization", alice.clone())
            .head()
            .subscriber(),
        Case::get("basic", "wrong password", DRAFT)
            .header("authorization", basic("alice", "wrong"))
            .refused(401),
        Case::get("basic", "unknown user", DRAFT)
            .header("authorization", basic("mallory", "correct horse"))
            .refused(401),
        Case::get("basic", "malformed", DRAFT)
            .header("authorization", "Basic !!notbase64")
            .refused(401),
        Case::get("basic", "missing", DRAFT).refused(401),
        // refused for its framing before routing, whatever the route
        Case::get("framing", "GET with a body", STORY).with_body("x"),
    ];
    run(&origin, &pair, &cases).await;
}

/// AWS Secure Media Delivery tokens on a `token` route, and a paywall route on the same edge
/// (with SMD secrets configured, paywall decisions may consult them).
///
/// Credential states: valid (unbound, session-bound to this viewer, HEAD), expired, forged
/// (signed with another secret), not entitled (`paths` elsewhere; bound to another viewer
/// address), revoked (the bound session revoked at the admin API), missing. Paywall here: valid,
/// forged, not entitled, missing (the other states are covered by the test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smd_tokens_answer_alike_with_the_hit_path_on_and_off() {
    let origin = Origin::start();
    serve_protected(&origin, SEGMENT);
    let key = tokens::es256("k1");
    let files = tempfile::tempdir().unwrap();
    let secrets = files.path().join("smd-secrets.json");
    std::fs::write(&secrets, json!({ SMD_KID: SMD_SECRET }).to_string()).unwrap();
    let mut routes = vec![r#"{ match: "/vod/*", origin: news, access: token }"#.to_string()];
    routes.extend(support::default_routes());
    let extra = format!("smd: {{ secrets_file: {:?} }}\n", secrets.to_string_lossy());
    let pair = pair(&origin, &key, routes, &extra);

    let sub = tokens::subscriber(&key, "alice");
    let smd = smd_token(SMD_SECRET, &["/vod/show/"], 600, None);
    let fills = [
        Case::get("paywall+smd", "fill", STORY),
        Case::get("paywall+smd", "fill", STORY).bearer(&sub),
        Case::get("smd", "fill", format!("/{smd}{SEGMENT}")),
    ];
    warm(&origin, &pair, &fills).await;
    for side in [&pair.on, &pair.off] {
        let (code, _) = side.edge.revoke("sess-revoked", Some(3600)).await;
        assert_eq!(code, 200, "revoke");
    }

    let seg = |token: String| format!("/{token}{SEGMENT}");
    let cases = vec![
        Case::get("smd", "valid", seg(smd.clone())).subscriber(),
        Case::get(
            "smd",
            "valid bound",
            seg(smd_token(
                SMD_SECRET,
                &["/vod/show/"],
                600,
                Some(("127.0.0.1", "sess-live")),
            )),
        )
        .subscriber(),
        Case::get("smd", "valid", seg(smd.clone()))
            .head()
            .subscriber(),
        Case::get(
            "smd",
            "expired",
            seg(smd_token(SMD_SECRET, &["/vod/show/"], -3600, None)),
        )
        .refused(403),
        Case::get(
            "smd",
            "forged",
            seg(smd_token("not-the-secret", &["/vod/show/"], 600, None)),
        )
        .refused(403),
        Case::get(
            "smd",
            "not entitled: path",
            seg(smd_token(SMD_SECRET, &["/vod/other/"], 600, None)),
        )
        .refused(403),
        Case::get(
            "smd",
            "not entitled: ip",
            seg(smd_token(
                SMD_SECRET,
                &["/vod/show/"],
                600,
                Some(("10.1.2.3", "sess-elsewhere")),
            )),
        )
        .refused(403),
        Case::get(
            "smd",
            "revoked",
            seg(smd_token(
                SMD_SECRET,
                &["/vod/show/"],
                600,
                Some(("127.0.0.1", "sess-revoked")),
            )),
        )
        .refused(403),
        Case::get("smd", "missing", SEGMENT).refused(403),
        Case::get("paywall+smd", "valid", STORY)
            .bearer(&sub)
            .subscriber(),
        Case::get("paywall+smd", "forged", STORY).bearer(&tokens::forged(&key)),
        Case::get("paywall+smd", "not entitled", STORY).bearer(&tokens::valid(
            &key,
            "bob",
            &["basic"],
            3600,
        )),
        Case::get("paywall+smd", "missing", STORY),
    ];
    run(&origin, &pair, &cases).await;
}

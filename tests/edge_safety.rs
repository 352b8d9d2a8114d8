//! Safe at the HTTP edge (issue 18; SPEC §10): what a client on the open internet and the
//! publisher's origin see when the client is hostile.
//!
//! The edge stands in front of [`NaiveOrigin`], an origin that frames requests the way many real
//! ones do (GET and HEAD bodies are not read: whatever follows the head is the next request),
//! so a request smuggled past the edge shows up there as a request it records. Every probe is
//! written byte by byte with the raw client ([`Conn`]) and asserts what the client got back and
//! what the origin parsed:
//!
//! - A. request framing: GET/HEAD bodies, `Content-Length` / `Transfer-Encoding` conflicts and
//!   spellings, bare LF, obs-fold, chunk sizes — refused with a 4xx and a closed connection, or
//!   forwarded so that the origin parses exactly the requests the client sent;
//! - B. `Host`: exactly one valid `Host` on HTTP/1.1;
//! - C. `limits.header_timeout` (408 for a head that does not arrive in time, slowloris
//!   included) and `limits.idle_timeout`;
//! - D. pipelined requests after a miss are all answered, in order;
//! - E. PROXY protocol v1/v2 on `listeners[].proxy_protocol`, believed only from
//!   `trusted_proxies`;
//! - F. `X-Forwarded-For` / `-Proto` believed only from `trusted_proxies`;
//! - G. `limits.failed_auth`: failed credential checks per address are budgeted (429 with
//!   `Retry-After`), valid credentials never are.
//!
//! Refusals are also counted in `tollgate_refused_requests_total{reason}`; those assertions are
//! loose (`> 0` for the expected reason). Timeouts come from the config (1 s / 3 s), and every
//! wait is a read with a deadline, so a test failing against an edge without these limits fails
//! in seconds.

mod support;

use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::naive_origin::{NaiveOptions, NaiveOrigin};
use support::raw::{Conn, Exchange};
use support::{client, client_from, free_port, send, tokens, Edge, EdgeOptions, Origin, Resp};
use tollgate::auth::mint::SigningKey;

const REFUSED: &str = "tollgate_refused_requests_total";
const AUTH: &str = "tollgate_auth_decisions_total";
/// How long a probe waits for an answer (and a close) that should come at once.
const PROMPT: Duration = Duration::from_secs(3);
/// The smuggled request: a `token` route the client is not allowed to read.
const SMUGGLED: &str = "GET /drafts/secret HTTP/1.1\r\nHost: h.test\r\n\r\n";
/// The `limits:` used by the timeout tests.
const SHORT_LIMITS: &str = "limits: { header_timeout: 1s, idle_timeout: 3s }";
/// The `limits:` used by the failure-budget tests.
const SMALL_BUDGET: &str = "limits: { failed_auth: { per_address_per_second: 1, burst: 5 } }";

// ---------------------------------------------------------------------------------------------
// The rig
// ---------------------------------------------------------------------------------------------

/// A naive origin, an edge in front of it, and the key its tokens are signed with.
struct Rig {
    naive: NaiveOrigin,
    edge: Edge,
    key: SigningKey,
    /// `Edge::start_with` wants an `Origin`; the edge is pointed at the naive one instead.
    _unused: Origin,
}

/// `/news/*` public, `/drafts/*` and `/vod/*` token, `/premium/*` paywall, `/only/*` public but
/// `https_only`.
fn routes() -> Vec<String> {
    [
        r#"{ match: "/news/*", origin: news, access: public }"#,
        r#"{ match: "/drafts/*", origin: news, access: token }"#,
        r#"{ match: "/vod/*", origin: news, access: token }"#,
        r#"{ match: "/premium/*", origin: news, access: paywall, require: [premium] }"#,
        r#"{ match: "/only/*", origin: news, access: public, viewer_protocol: https_only }"#,
    ]
    .map(String::from)
    .to_vec()
}

/// Start the rig with `extra_yaml` (top level) and `extra_listeners`. An edge that refuses the
/// config fails the test at once, saying so.
fn rig_with(extra_yaml: &str, extra_listeners: Vec<String>) -> Rig {
    rig_on(NaiveOrigin::start(), extra_yaml, extra_listeners)
}

/// [`rig_with`] in front of this naive origin.
fn rig_on(naive: NaiveOrigin, extra_yaml: &str, extra_listeners: Vec<String>) -> Rig {
    let unused = Origin::start();
    let key = tokens::es256("k1");
    let opts = EdgeOptions {
        routes: routes(),
        extra_yaml: extra_yaml.to_owned(),
        extra_listeners: extra_listeners.clone(),
        origin_url: Some(naive.url()),
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..EdgeOptions::default()
    };
    let edge = match std::panic::catch_unwind(AssertUnwindSafe(|| {
        Edge::start_with(&unused, &[&key], opts)
    })) {
        Ok(edge) => edge,
        Err(p) => {
            let why = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "the edge did not start with this config (issue 18 adds `limits`, \
                 `trusted_proxies` and `listeners[].proxy_protocol`):\n  extra yaml: \
                 {extra_yaml:?}\n  extra listeners: {extra_listeners:?}\n{why}"
            );
        }
    };
    Rig {
        naive,
        edge,
        key,
        _unused: unused,
    }
}

fn rig() -> Rig {
    rig_with("", Vec::new())
}

/// Send `bytes` in one write on a fresh connection, then read until the edge closes the
/// connection or `PROMPT` passes.
fn exchange(port: u16, bytes: &[u8]) -> Exchange {
    let mut c = Conn::open(port);
    let _ = c.send(bytes); // a reset while writing is an outcome, read what came back
    c.read_until_close(PROMPT)
}

/// The edge refused the request: exactly one answer, a 4xx, and then it closed the connection
/// (nothing after the refused head can be trusted to be a request).
#[track_caller]
fn assert_refused_and_closed(rig: &Rig, ex: &Exchange, what: &str) {
    eprintln!("{what}: {}", ex.describe());
    let origin = || rig.naive.dump();
    let first = ex.responses.first().unwrap_or_else(|| {
        panic!(
            "{what}: expected a 4xx, got no response: {}\n  the origin parsed: {}",
            ex.describe(),
            origin()
        )
    });
    assert!(
        (400..500).contains(&first.status),
        "{what}: expected a 4xx (400), got: {}\n  the origin parsed: {}",
        ex.describe(),
        origin()
    );
    assert_eq!(
        ex.responses.len(),
        1,
        "{what}: the edge answered more than the refused request (bytes after a refused head \
         were taken as a request): {}\n  the origin parsed: {}",
        ex.describe(),
        origin()
    );
    assert!(
        ex.closed(),
        "{what}: the edge kept the connection open after refusing it: {}",
        ex.describe()
    );
}

/// Wait a moment for anything still on its way to the origin, then require that it recorded
/// nothing at all.
#[track_caller]
fn assert_origin_saw_nothing(rig: &Rig, what: &str) {
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline && rig.naive.count() == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        rig.naive.count(),
        0,
        "{what}: a refused request reached the origin, which parsed:\n  {}",
        rig.naive.dump()
    );
}

/// The origin never parsed a request the client did not send as a request.
#[track_caller]
fn assert_nothing_smuggled(rig: &Rig, what: &str) {
    std::thread::sleep(Duration::from_millis(200)); // let a late write land before looking
    let smuggled = rig.naive.requests_under("/drafts/");
    assert!(
        smuggled.is_empty(),
        "{what}: the origin parsed a request hidden in a body ({} of them); all it parsed:\n  {}",
        smuggled.len(),
        rig.naive.dump()
    );
}

/// Poll the refusal counter for `reason` until it is above zero (3 s at most).
async fn assert_refusal_counted(edge: &Edge, reason: &str) {
    let (v, ok) = edge
        .poll_metric(REFUSED, &[("reason", reason)], PROMPT, |v| v > 0.0)
        .await;
    assert!(
        ok,
        "{REFUSED}{{reason=\"{reason}\"}} is {v}, expected > 0; metrics:\n{}",
        edge.metrics()
            .await
            .lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A `POST /news/<name>` head with extra header lines (each ending in CRLF) and `body`.
fn post(name: &str, headers: &str, body: &str) -> String {
    format!("POST /news/{name} HTTP/1.1\r\nHost: h.test\r\n{headers}\r\n{body}")
}

// ---------------------------------------------------------------------------------------------
// A. Request framing and smuggling
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_a_content_length_body_is_refused_and_never_reaches_the_origin() {
    let rig = rig();
    let req = format!(
        "GET /news/a HTTP/1.1\r\nHost: h.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let ex = exchange(rig.edge.port, req.as_bytes());
    assert_refused_and_closed(&rig, &ex, "GET with a Content-Length body");
    assert_nothing_smuggled(&rig, "GET with a Content-Length body");
    assert_origin_saw_nothing(&rig, "GET with a Content-Length body");
    assert_refusal_counted(&rig.edge, "body_not_allowed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_with_a_content_length_body_is_refused_and_never_reaches_the_origin() {
    let rig = rig();
    let req = format!(
        "HEAD /news/a HTTP/1.1\r\nHost: h.test\r\nContent-Length: {}\r\n\r\n{SMUGGLED}",
        SMUGGLED.len()
    );
    let ex = exchange(rig.edge.port, req.as_bytes());
    assert_refused_and_closed(&rig, &ex, "HEAD with a Content-Length body");
    assert_nothing_smuggled(&rig, "HEAD with a Content-Length body");
    assert_origin_saw_nothing(&rig, "HEAD with a Content-Length body");
}

#[test]
fn a_refused_head_request_gets_no_body() {
    // RFC 9110 §9.3.2: no content in a response to HEAD, refusals included (a client reading
    // the answer as HEAD semantics would take body bytes for the start of the next response)
    let rig = rig();
    let mut c = Conn::open(rig.edge.port);
    c.expect_head();
    let _ = c.send(b"HEAD /news/nohost HTTP/1.1\r\n\r\n");
    let ex = c.read_until_close(PROMPT);
    eprintln!("HEAD without Host: {}", ex.describe());
    assert_eq!(
        ex.statuses().first(),
        Some(&400),
        "HEAD without Host: {}",
        ex.describe()
    );
    assert!(
        ex.leftover.is_empty(),
        "the 400 answering a HEAD carried content: {:?}",
        String::from_utf8_lossy(&ex.leftover)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_with_a_chunked_body_is_refused_and_never_reaches_the_origin() {
    let rig = rig();
    let req = format!(
        "GET /news/b HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    );
    let ex = exchange(rig.edge.port, req.as_bytes());
    assert_refused_and_closed(&rig, &ex, "GET with a chunked body");
    assert_nothing_smuggled(&rig, "GET with a chunked body");
    assert_origin_saw_nothing(&rig, "GET with a chunked body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_get_after_a_refused_body_is_never_answered_from_the_body() {
    let rig = rig();
    let inner = "GET /news/from-body HTTP/1.1\r\nHost: h.test\r\n\r\n";
    let req = format!(
        "GET /news/q HTTP/1.1\r\nHost: h.test\r\nContent-Length: {}\r\n\r\n{inner}\
         GET /news/after HTTP/1.1\r\nHost: h.test\r\n\r\n",
        inner.len()
    );
    let ex = exchange(rig.edge.port, req.as_bytes());
    assert!(
        !ex.responses
            .iter()
            .any(|r| r.text().contains("/news/from-body")),
        "the request hidden in the refused GET's body was answered: {}",
        ex.describe()
    );
    assert_refused_and_closed(&rig, &ex, "GET with a body, then a pipelined GET");
    assert!(
        rig.naive.requests_for("/news/from-body").is_empty(),
        "the origin parsed the request hidden in the body:\n  {}",
        rig.naive.dump()
    );
    assert_origin_saw_nothing(&rig, "GET with a body, then a pipelined GET");
}

/// A POST whose framing headers are refused: 400, closed, the origin sees nothing. Returns
/// the rig for further checks.
#[track_caller]
fn assert_post_refused(headers: &str, body: &str, what: &str) -> Rig {
    let rig = rig();
    let req = post("form", headers, body);
    let ex = exchange(rig.edge.port, req.as_bytes());
    assert_refused_and_closed(&rig, &ex, what);
    assert_nothing_smuggled(&rig, what);
    assert_origin_saw_nothing(&rig, what);
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_with_both_content_length_and_chunked_is_refused() {
    let body = format!("0\r\n\r\n{SMUGGLED}");
    let rig = assert_post_refused(
        "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        &body,
        "Content-Length and Transfer-Encoding: chunked",
    );
    assert_refusal_counted(&rig.edge, "bad_framing").await;
}

#[test]
fn duplicate_content_length_with_the_same_value_is_refused() {
    assert_post_refused(
        "Content-Length: 5\r\nContent-Length: 5\r\n",
        "hello",
        "two Content-Length: 5",
    );
}

#[test]
fn duplicate_content_length_with_different_values_is_refused() {
    let body = format!("hello{SMUGGLED}");
    let headers = format!("Content-Length: 5\r\nContent-Length: {}\r\n", body.len());
    assert_post_refused(
        &headers,
        &body,
        "Content-Length: 5 and a second, longer one",
    );
}

#[test]
fn content_length_with_a_plus_sign_is_refused() {
    assert_post_refused("Content-Length: +5\r\n", "hello", "Content-Length: +5");
}

#[test]
fn content_length_in_hex_is_refused() {
    assert_post_refused("Content-Length: 0x5\r\n", "hello", "Content-Length: 0x5");
}

#[test]
fn content_length_as_a_list_is_refused() {
    assert_post_refused(
        "Content-Length:  5,5\r\n",
        "hello",
        "Content-Length: ' 5,5'",
    );
}

/// A chunked POST body carrying the smuggled request after its last chunk.
fn chunked_then_smuggled() -> String {
    format!("0\r\n\r\n{SMUGGLED}")
}

#[test]
fn transfer_encoding_chunked_then_identity_is_refused() {
    assert_post_refused(
        "Transfer-Encoding: chunked, identity\r\n",
        &chunked_then_smuggled(),
        "Transfer-Encoding: chunked, identity",
    );
}

#[test]
fn transfer_encoding_gzip_then_chunked_is_refused() {
    assert_post_refused(
        "Transfer-Encoding: gzip, chunked\r\n",
        &chunked_then_smuggled(),
        "Transfer-Encoding: gzip, chunked",
    );
}

#[test]
fn transfer_encoding_xchunked_is_refused() {
    assert_post_refused(
        "Transfer-Encoding: xchunked\r\n",
        &chunked_then_smuggled(),
        "Transfer-Encoding: xchunked",
    );
}

#[test]
fn two_transfer_encoding_headers_are_refused() {
    assert_post_refused(
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        &chunked_then_smuggled(),
        "two Transfer-Encoding: chunked headers",
    );
}

#[test]
fn transfer_encoding_on_http_1_0_is_refused() {
    let rig = rig();
    let req = format!(
        "POST /news/form HTTP/1.0\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        chunked_then_smuggled()
    );
    let what = "Transfer-Encoding: chunked on HTTP/1.0";
    let ex = exchange(rig.edge.port, req.as_bytes());
    assert_refused_and_closed(&rig, &ex, what);
    assert_nothing_smuggled(&rig, what);
    assert_origin_saw_nothing(&rig, what);
}

/// A malformed head: 4xx, closed, the origin sees nothing. Returns the rig.
#[track_caller]
fn assert_head_refused(raw: &str, what: &str) -> Rig {
    let rig = rig();
    let ex = exchange(rig.edge.port, raw.as_bytes());
    assert_refused_and_closed(&rig, &ex, what);
    assert_origin_saw_nothing(&rig, what);
    rig
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_line_endings_are_refused() {
    let rig = assert_head_refused(
        "GET /news/lf HTTP/1.1\nHost: h.test\n\n",
        "a head with bare LF line endings",
    );
    assert_refusal_counted(&rig.edge, "malformed").await;
}

#[test]
fn one_header_line_ending_in_bare_lf_is_refused() {
    assert_head_refused(
        "GET /news/lf1 HTTP/1.1\r\nHost: h.test\nX-Note: 1\r\n\r\n",
        "one header line ending in a bare LF",
    );
}

#[test]
fn obs_fold_is_refused() {
    assert_head_refused(
        "GET /news/fold HTTP/1.1\r\nHost: h.test\r\nX-Note: one\r\n two\r\n\r\n",
        "an obs-fold continuation line",
    );
}

#[test]
fn whitespace_before_the_colon_is_refused() {
    assert_head_refused(
        "GET /news/sp HTTP/1.1\r\nHost: h.test\r\nX-Note : 1\r\n\r\n",
        "a space between a header name and its colon",
    );
}

/// A valid chunked POST: forwarded, and the origin records exactly that one POST with the
/// decoded body.
#[track_caller]
fn assert_chunked_post_forwarded(chunks: &str, want_body: &str, what: &str) {
    let rig = rig();
    let req = post("upload", "Transfer-Encoding: chunked\r\n", chunks);
    let mut c = Conn::open(rig.edge.port);
    c.send(req.as_bytes()).expect("send the POST");
    let ex = c.read_responses(1, PROMPT);
    assert_eq!(
        ex.statuses(),
        vec![200],
        "{what}: expected the origin's 200: {}",
        ex.describe()
    );
    assert_eq!(
        ex.responses[0].text(),
        "naive POST /news/upload\n",
        "{what}: body"
    );
    let all = rig.naive.requests();
    assert_eq!(
        all.len(),
        1,
        "{what}: the origin should have parsed exactly one request:\n  {}",
        rig.naive.dump()
    );
    assert_eq!(
        (all[0].method.as_str(), all[0].path()),
        ("POST", "/news/upload"),
        "{what}: {}",
        all[0].summary()
    );
    assert_eq!(
        String::from_utf8_lossy(&all[0].body),
        want_body,
        "{what}: the body the origin decoded"
    );
}

#[test]
fn a_valid_chunked_post_is_forwarded_with_its_body() {
    assert_chunked_post_forwarded(
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "hello world",
        "chunked POST",
    );
}

#[test]
fn a_chunked_post_with_chunk_extensions_is_forwarded_with_its_body() {
    assert_chunked_post_forwarded(
        "5;ext=1\r\nhello\r\n6;name=\"v\"\r\n world\r\n0\r\n\r\n",
        "hello world",
        "chunked POST with chunk extensions",
    );
}

/// A chunked POST with a broken chunk: the client gets a 4xx or a closed connection (never
/// the origin's 200, never a second answer), and the origin parses no request beyond that POST
/// (in particular not one hidden in the body).
#[track_caller]
fn assert_bad_chunk_refused(chunks: &str, what: &str) {
    let rig = rig();
    let req = post("upload", "Transfer-Encoding: chunked\r\n", chunks);
    let ex = exchange(rig.edge.port, req.as_bytes());
    eprintln!("{what}: {}", ex.describe());
    assert!(
        ex.responses.iter().all(|r| (400..500).contains(&r.status)),
        "{what}: expected a 4xx or a closed connection, got: {}\n  the origin parsed: {}",
        ex.describe(),
        rig.naive.dump()
    );
    assert!(
        ex.responses.len() <= 1,
        "{what}: the edge answered more than the one POST: {}",
        ex.describe()
    );
    assert!(
        !ex.responses.is_empty() || ex.closed(),
        "{what}: no answer and the connection still open after {PROMPT:?}: {}",
        ex.describe()
    );
    assert_nothing_smuggled(&rig, what);
    let extra: Vec<String> = rig
        .naive
        .requests()
        .iter()
        .filter(|r| r.unparseable.is_none() && !(r.method == "POST" && r.path() == "/news/upload"))
        .map(|r| r.summary())
        .collect();
    assert!(
        extra.is_empty(),
        "{what}: the origin parsed requests the client never sent: {extra:?}"
    );
}

#[test]
fn chunk_size_that_is_not_hex_is_refused() {
    assert_bad_chunk_refused(&format!("zz\r\n{SMUGGLED}\r\n0\r\n\r\n"), "chunk size zz");
}

#[test]
fn chunk_size_with_0x_prefix_is_refused() {
    assert_bad_chunk_refused(
        &format!("0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        "chunk size 0x5",
    );
}

#[test]
fn negative_chunk_size_is_refused() {
    assert_bad_chunk_refused(&format!("-1\r\n{SMUGGLED}\r\n0\r\n\r\n"), "chunk size -1");
}

#[test]
fn chunk_size_of_twenty_hex_digits_is_refused() {
    // 2^76 + 5: a parser that wraps reads a 5-byte chunk and then the smuggled request
    assert_bad_chunk_refused(
        &format!("10000000000000000005\r\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        "a 20-hex-digit chunk size",
    );
}

#[test]
fn chunk_size_ending_in_bare_lf_is_refused() {
    assert_bad_chunk_refused(
        &format!("5\nhello\r\n0\r\n\r\n{SMUGGLED}"),
        "a chunk size line ending in a bare LF",
    );
}

#[test]
fn chunk_data_without_its_crlf_is_refused() {
    // a parser that skips two bytes after the data without looking reads "XY" as the CRLF
    assert_bad_chunk_refused(
        &format!("5\r\nhelloXY0\r\n\r\n{SMUGGLED}"),
        "chunk data not followed by CRLF",
    );
}

// ---------------------------------------------------------------------------------------------
// B. Host
// ---------------------------------------------------------------------------------------------

/// A GET for `/news/<name>` with these header lines: 400, and the origin sees nothing.
#[track_caller]
fn assert_host_refused(rig: &Rig, name: &str, headers: &str, what: &str) {
    let req = format!("GET /news/{name} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    let ex = exchange(rig.edge.port, req.as_bytes());
    eprintln!("{what}: {}", ex.describe());
    assert_eq!(
        ex.statuses().first(),
        Some(&400),
        "{what}: expected 400: {}",
        ex.describe()
    );
    assert_origin_saw_nothing(rig, what);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_1_without_host_is_refused() {
    let rig = rig();
    assert_host_refused(&rig, "nohost", "", "HTTP/1.1 without Host");
    assert_refusal_counted(&rig.edge, "bad_host").await;
}

#[test]
fn two_host_headers_are_refused() {
    assert_host_refused(
        &rig(),
        "twohosts",
        "Host: h.test\r\nHost: other.test\r\n",
        "two Host headers",
    );
}

#[test]
fn a_host_list_is_refused() {
    assert_host_refused(&rig(), "hostlist", "Host: a.test, b.test\r\n", "Host: a, b");
}

#[test]
fn a_host_with_a_space_is_refused() {
    assert_host_refused(&rig(), "hostspace", "Host: a b\r\n", "Host: a b");
}

#[test]
fn a_host_with_userinfo_is_refused() {
    assert_host_refused(
        &rig(),
        "hostuser",
        "Host: user@h.test\r\n",
        "Host: user@h.test",
    );
}

#[test]
fn http_1_0_without_host_is_served() {
    let rig = rig();
    let ex = exchange(rig.edge.port, b"GET /news/ten HTTP/1.0\r\n\r\n");
    assert_eq!(
        ex.statuses().first(),
        Some(&200),
        "HTTP/1.0 needs no Host: {}",
        ex.describe()
    );
    assert_eq!(ex.responses[0].text(), "naive GET /news/ten\n");
    assert_eq!(
        rig.naive.requests_for("/news/ten").len(),
        1,
        "{}",
        rig.naive.dump()
    );
}

/// An HTTP/1.0 origin's answers reach the client with the edge's own version, `HTTP/1.1` (RFC
/// 9110 §6.2: an intermediary sends its own HTTP-version). Pingora forwards the status line of a
/// `Content-Length` answer as the origin wrote it, so a miss said `HTTP/1.0` to an HTTP/1.1
/// client (whose connection a strict client then treats as closing) while the hit after it
/// said `HTTP/1.1`. The miss, the hit and a miss for an HTTP/1.0 client, each checked on the
/// status line as sent.
#[test]
fn an_http_1_0_origin_is_answered_as_http_1_1() {
    let naive = NaiveOrigin::start_with(NaiveOptions {
        http_1_0: true,
        ..NaiveOptions::default()
    });
    let rig = rig_on(naive, "", Vec::new());
    let mut c = Conn::open(rig.edge.port);
    for want in ["miss", "hit"] {
        c.send(b"GET /news/old HTTP/1.1\r\nHost: h.test\r\n\r\n")
            .expect("send a GET");
        let ex = c.read_responses(1, PROMPT);
        let Some(r) = ex.responses.first() else {
            panic!("{want}: no answer: {}", ex.describe());
        };
        assert_eq!(
            r.status_line,
            "HTTP/1.1 200 OK",
            "{want}: {}",
            ex.describe()
        );
        assert_eq!(r.text(), "naive GET /news/old\n", "{want}");
        let status = r.header("cache-status").unwrap_or("");
        assert!(status.contains(want), "{want}: Cache-Status {status:?}");
        assert!(!r.says_close() && !ex.closed(), "{want}: {}", ex.describe());
    }
    assert_eq!(
        rig.naive.requests_for("/news/old").len(),
        1,
        "{}",
        rig.naive.dump()
    );

    let ex = exchange(
        rig.edge.port,
        b"GET /news/older HTTP/1.0\r\nHost: h.test\r\n\r\n",
    );
    let line = ex.responses.first().map(|r| r.status_line.as_str());
    assert_eq!(line, Some("HTTP/1.1 200 OK"), "{}", ex.describe());
    assert!(
        ex.closed(),
        "an HTTP/1.0 request without keep-alive: {}",
        ex.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// C. Head and idle timeouts
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_head_gets_408_after_the_header_timeout() {
    let rig = rig_with(SHORT_LIMITS, Vec::new());
    let mut c = Conn::open(rig.edge.port);
    c.send(b"GET /news/a HTTP/1.1\r\nHost: h.test\r\n")
        .expect("send the start of a head");
    let ex = c.read_until_close(Duration::from_secs(6));
    assert_eq!(
        ex.statuses(),
        vec![408],
        "a head still incomplete after header_timeout (1 s): {}",
        ex.describe()
    );
    let closed = ex.closed_after.unwrap_or_else(|| {
        panic!(
            "the connection stayed open after the 408: {}",
            ex.describe()
        )
    });
    eprintln!("incomplete head: 408 and close after {closed:?}");
    assert!(
        closed >= Duration::from_millis(800) && closed < Duration::from_secs(5),
        "408 and close expected about 1 s after the first byte, came after {closed:?}"
    );
    assert_origin_saw_nothing(&rig, "an incomplete head");
    assert_refusal_counted(&rig.edge, "header_timeout").await;
}

#[test]
fn a_slowloris_head_gets_408_by_the_header_timeout() {
    let rig = rig_with(SHORT_LIMITS, Vec::new());
    let head = format!(
        "GET /news/slow HTTP/1.1\r\nHost: h.test\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(60)
    );
    let mut c = Conn::open(rig.edge.port);
    c.send(&head.as_bytes()[..1]).expect("send the first byte");
    // one byte every 200 ms: every read is prompt, the head as a whole takes ~20 s
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut w = c.try_clone_stream();
        let rest = head.as_bytes()[1..].to_vec();
        let done = done.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            for b in rest {
                std::thread::sleep(Duration::from_millis(200));
                if done.load(Ordering::SeqCst) || w.write_all(&[b]).is_err() {
                    return;
                }
            }
        })
    };
    let ex = c.read_until_close(Duration::from_secs(6));
    done.store(true, Ordering::SeqCst);
    let _ = writer.join();
    assert_eq!(
        ex.statuses(),
        vec![408],
        "a head trickling in one byte per 200 ms must still be complete within header_timeout \
         (the bound is for the whole head, not each read): {}",
        ex.describe()
    );
    let closed = ex.closed_after.unwrap_or_else(|| {
        panic!(
            "the connection stayed open after the 408: {}",
            ex.describe()
        )
    });
    eprintln!("slowloris: 408 and close after {closed:?}");
    assert!(
        closed < Duration::from_millis(3500),
        "408 and close expected about 1 s after the first byte, came after {closed:?}"
    );
    assert_origin_saw_nothing(&rig, "a slowloris head");
}

#[test]
fn a_silent_connection_is_closed_after_the_idle_timeout_without_an_answer() {
    let rig = rig_with(SHORT_LIMITS, Vec::new());
    let mut c = Conn::open(rig.edge.port);
    let ex = c.wait_close(Duration::from_secs(7));
    let closed = ex.closed_after.unwrap_or_else(|| {
        panic!(
            "a connection that sent nothing was still open after 7 s (idle_timeout 3 s): {}",
            ex.describe()
        )
    });
    eprintln!("silent connection: closed after {closed:?}");
    assert!(
        ex.leftover.is_empty(),
        "a connection that sent nothing got bytes back: {}",
        ex.describe()
    );
    assert!(
        closed >= Duration::from_secs(2) && closed < Duration::from_secs(6),
        "closed after {closed:?}, expected about idle_timeout (3 s)"
    );
}

#[test]
fn a_kept_alive_connection_is_closed_after_the_idle_timeout() {
    let rig = rig_with(SHORT_LIMITS, Vec::new());
    let mut c = Conn::open(rig.edge.port);
    c.send(b"GET /news/ka HTTP/1.1\r\nHost: h.test\r\n\r\n")
        .expect("send a GET");
    let ex = c.read_responses(1, PROMPT);
    assert_eq!(ex.statuses(), vec![200], "{}", ex.describe());
    assert!(
        !ex.closed(),
        "closed right after the answer: {}",
        ex.describe()
    );
    let answered = Instant::now();
    let ex = c.wait_close(Duration::from_secs(7));
    assert!(
        ex.closed(),
        "a kept-alive connection was still open 7 s after its answer (idle_timeout 3 s)"
    );
    let idle = answered.elapsed();
    eprintln!("kept-alive connection: closed {idle:?} after its answer");
    assert!(
        idle >= Duration::from_secs(2) && idle < Duration::from_secs(6),
        "closed {idle:?} after the answer, expected about idle_timeout (3 s)"
    );
    assert!(
        ex.leftover.is_empty(),
        "the edge sent bytes on an idle connection: {}",
        ex.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// D. Pipelining
// ---------------------------------------------------------------------------------------------

/// If fewer responses than requests came back, say whether the edge announced keep-alive and
/// then hung up on the rest.
fn pipelining_failure(ex: &Exchange, sent: usize) -> String {
    let announced = ex.responses.iter().any(|r| r.says_keep_alive());
    format!(
        "{} of {sent} pipelined requests answered{}: {}",
        ex.responses.len(),
        if announced && ex.closed() {
            " (a response said Connection: keep-alive, then the edge closed with requests \
             unanswered)"
        } else {
            ""
        },
        ex.describe()
    )
}

#[test]
fn pipelined_gets_after_a_miss_are_all_answered_in_order() {
    let rig = rig();
    let mut c = Conn::open(rig.edge.port);
    c.send(
        b"GET /news/p1 HTTP/1.1\r\nHost: h.test\r\n\r\n\
          GET /news/p2 HTTP/1.1\r\nHost: h.test\r\n\r\n\
          GET /news/p1 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    )
    .expect("send three pipelined GETs");
    let ex = c.read_responses(3, Duration::from_secs(5));
    assert_eq!(ex.responses.len(), 3, "{}", pipelining_failure(&ex, 3));
    let bodies: Vec<String> = ex.responses.iter().map(|r| r.text()).collect();
    assert_eq!(ex.statuses(), vec![200, 200, 200], "{}", ex.describe());
    assert_eq!(
        bodies,
        [
            "naive GET /news/p1\n",
            "naive GET /news/p2\n",
            "naive GET /news/p1\n"
        ],
        "answers out of order or for the wrong request"
    );
    let third = ex.responses[2].header("cache-status").unwrap_or("");
    assert!(
        third.contains("hit"),
        "the third request (p1 again) should be a hit, Cache-Status: {third:?}"
    );
    assert_eq!(
        rig.naive.requests_for("/news/p1").len(),
        1,
        "{}",
        rig.naive.dump()
    );
    assert_eq!(
        rig.naive.requests_for("/news/p2").len(),
        1,
        "{}",
        rig.naive.dump()
    );
}

#[test]
fn a_pipelined_post_with_a_body_then_a_get_are_both_answered() {
    let rig = rig();
    let mut c = Conn::open(rig.edge.port);
    c.send(
        b"POST /news/form HTTP/1.1\r\nHost: h.test\r\nContent-Length: 11\r\n\r\nhello world\
          GET /news/p3 HTTP/1.1\r\nHost: h.test\r\n\r\n",
    )
    .expect("send a POST and a GET");
    let ex = c.read_responses(2, Duration::from_secs(5));
    assert_eq!(ex.responses.len(), 2, "{}", pipelining_failure(&ex, 2));
    let got: Vec<(u16, String)> = ex.responses.iter().map(|r| (r.status, r.text())).collect();
    assert_eq!(
        got,
        [
            (200, "naive POST /news/form\n".to_string()),
            (200, "naive GET /news/p3\n".to_string())
        ]
    );
    let all = rig.naive.requests();
    let seen: Vec<(String, String, String)> = all
        .iter()
        .map(|r| {
            (
                r.method.clone(),
                r.target.clone(),
                String::from_utf8_lossy(&r.body).into_owned(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("POST".into(), "/news/form".into(), "hello world".into()),
            ("GET".into(), "/news/p3".into(), String::new())
        ],
        "the origin should have parsed exactly the POST (with its body) and the GET:\n  {}",
        rig.naive.dump()
    );
}

// ---------------------------------------------------------------------------------------------
// E. PROXY protocol
// ---------------------------------------------------------------------------------------------

const PROXY_V1: &str = "PROXY TCP4 203.0.113.7 10.0.0.1 5555 80\r\n";

/// A PROXY protocol v2 header: PROXY command, TCP over IPv4, 203.0.113.7:5555 → 10.0.0.1:80.
fn proxy_v2() -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x21); // version 2, PROXY
    h.push(0x11); // AF_INET, STREAM
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&[203, 0, 113, 7]);
    h.extend_from_slice(&[10, 0, 0, 1]);
    h.extend_from_slice(&5555u16.to_be_bytes());
    h.extend_from_slice(&80u16.to_be_bytes());
    h
}

/// A rig with a second listener that speaks PROXY protocol, and `trusted_proxies`.
fn proxy_rig(trusted: &str) -> (Rig, u16) {
    let pp = free_port();
    let rig = rig_with(
        &format!("trusted_proxies: [{trusted}]"),
        vec![format!(
            "{{ addr: \"127.0.0.1:{pp}\", proxy_protocol: true }}"
        )],
    );
    (rig, pp)
}

/// One request behind `preamble` on a fresh connection to `port`; the single answer.
fn one_answer(port: u16, preamble: &[u8], target: &str) -> Exchange {
    let mut bytes = preamble.to_vec();
    bytes.extend_from_slice(
        format!("GET {target} HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let mut c = Conn::open(port);
    let _ = c.send(&bytes);
    c.read_responses(1, PROMPT)
}

/// The `x-forwarded-for` values the origin received for `path`.
#[track_caller]
fn forwarded_for(rig: &Rig, path: &str) -> Vec<String> {
    let reqs = rig.naive.requests_for(path);
    assert_eq!(
        reqs.len(),
        1,
        "origin requests for {path}:\n  {}",
        rig.naive.dump()
    );
    reqs[0].header_all("x-forwarded-for")
}

/// A media token bound to `ip`.
fn ip_token(rig: &Rig, ip: &str) -> String {
    tokens::media(&rig.key, None, &[], Some(ip), 3600)
}

#[test]
fn proxy_v1_from_a_trusted_peer_sets_the_client_address() {
    let (rig, pp) = proxy_rig("\"127.0.0.1/32\"");
    let ex = one_answer(pp, PROXY_V1.as_bytes(), "/news/pp1");
    assert_eq!(ex.statuses(), vec![200], "{}", ex.describe());
    assert_eq!(
        forwarded_for(&rig, "/news/pp1"),
        ["203.0.113.7"],
        "the origin should see the address from the PROXY v1 header"
    );
}

#[test]
fn proxy_v2_from_a_trusted_peer_sets_the_client_address() {
    let (rig, pp) = proxy_rig("\"127.0.0.1/32\"");
    let ex = one_answer(pp, &proxy_v2(), "/news/pp2");
    assert_eq!(ex.statuses(), vec![200], "{}", ex.describe());
    assert_eq!(
        forwarded_for(&rig, "/news/pp2"),
        ["203.0.113.7"],
        "the origin should see the address from the PROXY v2 header"
    );
}

#[test]
fn an_ip_bound_token_is_checked_against_the_trusted_proxy_address() {
    let (rig, pp) = proxy_rig("\"127.0.0.1/32\"");
    let tok = ip_token(&rig, "203.0.113.7/32");
    let via_proxy = one_answer(pp, PROXY_V1.as_bytes(), &format!("/vod/a?token={tok}"));
    assert_eq!(
        via_proxy.statuses(),
        vec![200],
        "token bound to 203.0.113.7 through a trusted PROXY header naming 203.0.113.7: {}",
        via_proxy.describe()
    );
    let via_v2 = one_answer(pp, &proxy_v2(), &format!("/vod/b?token={tok}"));
    assert_eq!(
        via_v2.statuses(),
        vec![200],
        "the same through PROXY v2: {}",
        via_v2.describe()
    );
    let direct = one_answer(rig.edge.port, b"", &format!("/vod/c?token={tok}"));
    assert_eq!(
        direct.statuses(),
        vec![403],
        "token bound to 203.0.113.7 presented directly from 127.0.0.1: {}",
        direct.describe()
    );
}

#[test]
fn a_proxy_header_from_an_untrusted_peer_is_consumed_but_not_believed() {
    let (rig, pp) = proxy_rig("\"10.0.0.0/8\"");
    let ex = one_answer(pp, PROXY_V1.as_bytes(), "/news/untrusted");
    assert_eq!(
        ex.statuses(),
        vec![200],
        "the PROXY header is consumed and the request served: {}",
        ex.describe()
    );
    assert_eq!(
        forwarded_for(&rig, "/news/untrusted"),
        ["127.0.0.1"],
        "127.0.0.1 is not a trusted proxy: its PROXY header must not set the client address"
    );
    let tok = ip_token(&rig, "203.0.113.7/32");
    let ex = one_answer(pp, PROXY_V1.as_bytes(), &format!("/vod/a?token={tok}"));
    assert_eq!(
        ex.statuses(),
        vec![403],
        "an ip-bound token through an untrusted PROXY header: {}",
        ex.describe()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_a_proxy_header_gets_nothing_from_the_origin() {
    let (rig, pp) = proxy_rig("\"127.0.0.1/32\"");
    let ex = exchange(
        pp,
        b"GET /news/nopp HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
    );
    assert!(
        ex.responses.iter().all(|r| r.status == 400),
        "a connection without a PROXY header must be closed or answered 400: {}",
        ex.describe()
    );
    assert!(ex.closed(), "connection left open: {}", ex.describe());
    assert_origin_saw_nothing(&rig, "a request without the PROXY header");
    assert_refusal_counted(&rig.edge, "proxy_protocol").await;
}

// ---------------------------------------------------------------------------------------------
// F. X-Forwarded-For / X-Forwarded-Proto
// ---------------------------------------------------------------------------------------------

/// GET `path` from 127.0.0.1 with these extra headers.
async fn get_with(rig: &Rig, path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut rb = client().get(rig.edge.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    send(rb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_resolves_to_the_right_most_untrusted_address() {
    let rig = rig_with("trusted_proxies: [\"127.0.0.1/32\"]", Vec::new());
    let xff = [("x-forwarded-for", "198.51.100.9, 203.0.113.7")];
    let r = get_with(&rig, "/news/xff", &xff).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        forwarded_for(&rig, "/news/xff"),
        ["203.0.113.7"],
        "the right-most address not in trusted_proxies is the client"
    );
    let good = ip_token(&rig, "203.0.113.7/32");
    let r = get_with(&rig, &format!("/vod/a?token={good}"), &xff).await;
    assert_eq!(
        r.status, 200,
        "token bound to the resolved client 203.0.113.7: {r:?}"
    );
    let left = ip_token(&rig, "198.51.100.9/32");
    let r = get_with(&rig, &format!("/vod/b?token={left}"), &xff).await;
    assert_eq!(
        r.status, 403,
        "token bound to 198.51.100.9, an address a client can write in front: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_skips_every_trusted_hop() {
    let rig = rig_with(
        "trusted_proxies: [\"127.0.0.1/32\", \"203.0.113.0/24\"]",
        Vec::new(),
    );
    let xff = [("x-forwarded-for", "198.51.100.9, 203.0.113.7")];
    let r = get_with(&rig, "/news/xff2", &xff).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        forwarded_for(&rig, "/news/xff2"),
        ["198.51.100.9"],
        "203.0.113.7 is a trusted hop: the client is the address before it"
    );
    let tok = ip_token(&rig, "198.51.100.9/32");
    let r = get_with(&rig, &format!("/vod/a?token={tok}"), &xff).await;
    assert_eq!(
        r.status, 200,
        "token bound to the resolved client 198.51.100.9: {r:?}"
    );
    let hop = ip_token(&rig, "203.0.113.7/32");
    let r = get_with(&rig, &format!("/vod/b?token={hop}"), &xff).await;
    assert_eq!(r.status, 403, "token bound to a trusted hop: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_from_an_untrusted_peer_changes_nothing() {
    let rig = rig();
    let spoof = [("x-forwarded-for", "203.0.113.7")];
    let r = get_with(&rig, "/news/spoof", &spoof).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        forwarded_for(&rig, "/news/spoof"),
        ["127.0.0.1"],
        "without trusted_proxies the client is the socket peer, whatever it claims"
    );
    let tok = ip_token(&rig, "203.0.113.7/32");
    let r = get_with(&rig, &format!("/vod/a?token={tok}"), &spoof).await;
    assert_eq!(
        r.status, 403,
        "a spoofed X-Forwarded-For opened an ip-bound token: {r:?}"
    );
    let own = ip_token(&rig, "127.0.0.1/32");
    let r = get_with(&rig, &format!("/vod/b?token={own}"), &spoof).await;
    assert_eq!(
        r.status, 200,
        "token bound to the real peer 127.0.0.1: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_proto_https_from_a_trusted_peer_serves_an_https_only_route() {
    let rig = rig_with("trusted_proxies: [\"127.0.0.1/32\"]", Vec::new());
    let r = get_with(&rig, "/only/page", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        r.status, 200,
        "a trusted TLS-terminating proxy said https: {r:?}"
    );
    let r = get_with(&rig, "/only/plain", &[]).await;
    assert_eq!(r.status, 403, "plain HTTP without X-Forwarded-Proto: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_proto_from_an_untrusted_peer_is_ignored() {
    let rig = rig();
    let r = get_with(&rig, "/only/page", &[("x-forwarded-proto", "https")]).await;
    assert_eq!(
        r.status, 403,
        "X-Forwarded-Proto from an untrusted client must not satisfy https_only: {r:?}"
    );
    assert_origin_saw_nothing(&rig, "https_only over plain HTTP");
}

// ---------------------------------------------------------------------------------------------
// G. Failed-credential budget
// ---------------------------------------------------------------------------------------------

/// Whether `r` is a 429 with an integer `Retry-After` of at least 1 s.
#[track_caller]
fn assert_throttled(r: &Resp, what: &str) {
    assert_eq!(r.status, 429, "{what}: {r:?}");
    let ra = r
        .header("retry-after")
        .unwrap_or_else(|| panic!("{what}: 429 without Retry-After: {r:?}"));
    let secs: u64 = ra
        .parse()
        .unwrap_or_else(|_| panic!("{what}: Retry-After {ra:?} is not an integer of seconds"));
    assert!(secs >= 1, "{what}: Retry-After {secs}, expected >= 1");
}

/// Send `n` forged tokens for `path` from 127.0.0.1 and return the responses.
async fn flood(rig: &Rig, path: &str, n: usize) -> Vec<Resp> {
    let mut out = Vec::new();
    for _ in 0..n {
        let forged = tokens::forged(&rig.key);
        out.push(get_with(rig, &format!("{path}?token={forged}"), &[]).await);
    }
    out
}

/// The flood was refused while the budget (burst 5) lasted, then throttled.
#[track_caller]
fn assert_budget_ran_out(got: &[Resp], while_budget: u16, what: &str) {
    let statuses: Vec<u16> = got.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses[0], while_budget,
        "{what}: the first failure is within the budget: {statuses:?}"
    );
    let first_429 = statuses.iter().position(|s| *s == 429).unwrap_or_else(|| {
        panic!(
            "{what}: {} failures in a row (burst 5) never got a 429: {statuses:?}",
            got.len()
        )
    });
    assert!(
        first_429 <= 7,
        "{what}: burst 5 at 1/s, yet the first 429 came only at attempt {}: {statuses:?}",
        first_429 + 1
    );
    assert!(
        statuses.iter().all(|s| *s == while_budget || *s == 429),
        "{what}: only {while_budget} or 429 expected: {statuses:?}"
    );
    assert_eq!(
        statuses.last(),
        Some(&429),
        "{what}: still not throttled at the end of the flood: {statuses:?}"
    );
    for r in got.iter().filter(|r| r.status == 429) {
        assert_throttled(r, what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_token_checks_run_out_of_budget_and_get_429() {
    let rig = rig_with(
        &format!("{SMALL_BUDGET}\ntrusted_proxies: [\"127.0.0.1/32\"]"),
        Vec::new(),
    );
    // a reader with a good token, before the flood
    let known = tokens::media(&rig.key, Some("s-known"), &[], None, 3600);
    let r = get_with(&rig, &format!("/vod/show?token={known}"), &[]).await;
    assert_eq!(r.status, 200, "a valid token before the flood: {r:?}");
    let throttled = rig.edge.metric(AUTH, &[("result", "throttled")]).await;

    let got = flood(&rig, "/vod/show", 12).await;
    assert_budget_ran_out(&got, 403, "forged tokens on a token route");

    let r = get_with(&rig, &format!("/vod/show?token={known}"), &[]).await;
    assert_eq!(
        r.status, 200,
        "a valid token this address already used must still work during the throttle: {r:?}"
    );
    let other = tokens::media(&rig.key, Some("s-other"), &[], None, 3600);
    let r = get_with(
        &rig,
        &format!("/vod/show?token={other}"),
        &[("x-forwarded-for", "198.51.100.20")],
    )
    .await;
    assert_eq!(
        r.status, 200,
        "another client (198.51.100.20 via the trusted proxy 127.0.0.1) has its own budget: {r:?}"
    );
    let third = tokens::media(&rig.key, Some("s-third"), &[], None, 3600);
    let r = send(
        client_from(IpAddr::from([127, 0, 0, 2]))
            .get(rig.edge.url(&format!("/vod/show?token={third}"))),
    )
    .await;
    assert_eq!(
        r.status, 200,
        "another client (127.0.0.2) has its own budget: {r:?}"
    );

    let (v, ok) = rig
        .edge
        .poll_metric(AUTH, &[("result", "throttled")], PROMPT, |v| v > throttled)
        .await;
    assert!(ok, "{AUTH}{{result=\"throttled\"}} stayed at {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_never_consume_the_budget() {
    let rig = rig_with(SMALL_BUDGET, Vec::new());
    for i in 0..20 {
        let tok = tokens::media(&rig.key, Some(&format!("s-{i}")), &[], None, 3600);
        let r = get_with(&rig, &format!("/vod/v{i}?token={tok}"), &[]).await;
        assert_eq!(
            r.status,
            200,
            "valid token #{} of 20 (never seen before) from one address, burst 5: {r:?}",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_tokens_on_a_paywall_route_get_429_not_the_teaser_once_the_budget_is_spent() {
    let rig = rig_with(SMALL_BUDGET, Vec::new());
    let got = flood(&rig, "/premium/story", 12).await;
    assert_budget_ran_out(&got, 200, "forged tokens on a paywall route");
}

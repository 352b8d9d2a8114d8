//! Edge safety (issue 18) where TLS and HTTP/2 are involved: a PROXY header read before the TLS
//! handshake, bodies on GET over HTTP/2, and upgrades (h2c, WebSocket) that must never become
//! a tunnel to the origin. Real edge, real origin, real TLS clients (OpenSSL from the test,
//! `curl` for HTTP/2).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
use support::*;

/// Open a TCP connection, write `preamble` in the clear, then speak TLS (trusting `ca`, SNI
/// `a.test`) and send one HTTP/1.1 GET; the response text, or the error.
fn get_over_tls(port: u16, preamble: &[u8], ca: &Path, path: &str) -> Result<String, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    tcp.write_all(preamble).map_err(|e| e.to_string())?;
    let mut connector = SslConnector::builder(SslMethod::tls()).map_err(|e| e.to_string())?;
    connector.set_ca_file(ca).map_err(|e| e.to_string())?;
    connector.set_verify(SslVerifyMode::PEER);
    let connector = connector.build();
    let mut tls = connector
        .connect("a.test", tcp)
        .map_err(|e| format!("handshake: {e}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let _ = tls.read_to_end(&mut out);
    Ok(String::from_utf8_lossy(&out).into_owned())
}

fn tls_rig(proxy_protocol: bool, trusted: &str) -> TlsEdge {
    TlsEdge::start(
        &format!("proxy_protocol: {proxy_protocol},"),
        EdgeOptions {
            extra_yaml: format!("trusted_proxies: [{trusted}]"),
            ..EdgeOptions::default()
        },
    )
}

const PROXY_V1: &[u8] = b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 443\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_before_the_tls_handshake_names_the_viewer() {
    let rig = tls_rig(true, "127.0.0.1/32");
    let text = get_over_tls(rig.port, PROXY_V1, &rig.ca, "/news/pp-tls").expect("TLS GET");
    assert!(text.starts_with("HTTP/1.1 200"), "answer: {text}");
    let seen = rig.origin.last_for("/news/pp-tls").expect("origin asked");
    assert_eq!(
        seen.header("x-forwarded-for").as_deref(),
        Some("203.0.113.7")
    );
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_before_tls_from_an_untrusted_peer_is_read_but_not_believed() {
    let rig = tls_rig(true, "10.0.0.0/8");
    let text = get_over_tls(rig.port, PROXY_V1, &rig.ca, "/news/pp-untrusted").expect("GET");
    assert!(text.starts_with("HTTP/1.1 200"), "answer: {text}");
    let seen = rig
        .origin
        .last_for("/news/pp-untrusted")
        .expect("origin asked");
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_without_the_proxy_header_is_refused() {
    let rig = tls_rig(true, "127.0.0.1/32");
    let got = get_over_tls(rig.port, b"", &rig.ca, "/news/pp-missing");
    assert!(
        got.as_ref().is_err() || got.as_ref().is_ok_and(|t| t.is_empty()),
        "a connection without its PROXY header was served: {got:?}"
    );
    assert_eq!(rig.origin.hits("/news/pp-missing"), 0);
    let refused = rig
        .edge
        .wait_metric(
            "tollgate_refused_requests_total",
            &[("reason", "proxy_protocol")],
            1.0,
        )
        .await;
    assert!(refused >= 1.0);
    // the listener still serves connections that do send it
    let text = get_over_tls(rig.port, PROXY_V1, &rig.ca, "/news/pp-after").expect("GET");
    assert!(text.starts_with("HTTP/1.1 200"), "answer: {text}");
}

/// `curl` over TLS to `a.test:port`; (exit code, "version status", body).
fn curl_tls(ca: &Path, port: u16, path: &str, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("a.test:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("https://a.test:{port}{path}"))
        .output()
        .expect("run curl (install it: apt-get install -y curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        out.status.code().unwrap_or(-1),
        meta.to_string(),
        body.to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_body_over_http2_is_refused_before_the_origin() {
    let rig = tls_rig(false, "10.0.0.0/8");
    let smuggled = "GET /drafts/secret HTTP/1.1\r\nHost: a.test\r\n\r\n";
    for method in ["GET", "HEAD", "TRACE"] {
        let path = format!("/news/h2-body-{method}");
        let (code, meta, _) = curl_tls(
            &rig.ca,
            rig.port,
            &path,
            &["--http2", "-X", method, "--data-binary", smuggled],
        );
        assert_eq!(
            meta, "2 400",
            "{method} with a body over HTTP/2 (curl exit {code})"
        );
        assert_eq!(rig.origin.hits(&path), 0, "{method}: origin asked");
    }
    assert_eq!(rig.origin.hits("/drafts/secret"), 0);
    let (_, meta, body) = curl_tls(&rig.ca, rig.port, "/news/h2-plain", &["--http2"]);
    assert_eq!(meta, "2 200", "a plain HTTP/2 GET still works: {body}");
    let (_, meta, _) = curl_tls(
        &rig.ca,
        rig.port,
        "/news/h2-post",
        &["--http2", "--data-binary", "a=1"],
    );
    assert_eq!(meta, "2 200", "POST bodies still go through");
    let seen = rig.origin.last_for("/news/h2-post").expect("origin asked");
    assert_eq!(seen.method, "POST");
    let refused = rig
        .edge
        .wait_metric(
            "tollgate_refused_requests_total",
            &[("reason", "body_not_allowed")],
            3.0,
        )
        .await;
    assert!(refused >= 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_never_reach_the_origin() {
    let origin = Origin::start();
    let k = support::tokens::es256("k1");
    let edge = Edge::start(&origin, &[&k]);
    for (what, headers) in [
        (
            "h2c",
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
        ),
        (
            "websocket",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
        ),
    ] {
        let path = format!("/news/upgrade-{what}");
        let mut conn = support::raw::Conn::open(edge.port);
        conn.send(format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n{headers}\r\n").as_bytes())
            .expect("send");
        let ex = conn.read_responses(1, Duration::from_secs(5));
        assert_eq!(ex.statuses(), vec![200], "{what}: {}", ex.describe());
        let seen = origin.last_for(&path).expect("origin asked");
        for h in ["upgrade", "http2-settings"] {
            assert_eq!(seen.header(h), None, "{what}: the origin saw {h}");
        }
    }
}

/// A HEAD over HTTP/2 that misses is filled with a GET; its answer must carry no DATA (clients
/// reset such a stream as a protocol error). Found by `tests/leak_scale.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_over_http2_that_misses_ends_cleanly() {
    let rig = tls_rig(false, "10.0.0.0/8");
    for (round, want) in [("miss", "fwd=miss"), ("hit", "hit")] {
        let out = Command::new("curl")
            .args(["-sS", "-I", "--http2", "--max-time", "10"])
            .arg("--cacert")
            .arg(&rig.ca)
            .arg("--resolve")
            .arg(format!("a.test:{}:127.0.0.1", rig.port))
            .arg(format!("https://a.test:{}/news/h2-head", rig.port))
            .output()
            .expect("run curl");
        let head = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{round}: curl exit {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(head.starts_with("HTTP/2 200"), "{round}: {head}");
        assert!(head.contains(want), "{round}: {head}");
    }
    // the HEAD filled the object for GETs (a GET is a hit with the origin's body)
    let (_, meta, body) = curl_tls(&rig.ca, rig.port, "/news/h2-head", &["--http2"]);
    assert_eq!(meta, "2 200");
    assert!(body.contains("/news/h2-head"), "{body}");
    assert_eq!(rig.origin.hits("/news/h2-head"), 1);
}

/// One HTTP/1.1 response from `tls`: the head, and a body read to its `Content-Length`.
fn read_response(tls: &mut impl Read) -> (String, Vec<u8>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tls.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().expect("length"))
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).expect("response body");
    (head, body)
}

/// A keep-alive TLS connection that waits past the point where its OpenSSL buffers are given
/// back (one second) goes on serving hits and misses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_tls_connection_serves_after_idling_past_its_buffer_release() {
    let rig = tls_rig(false, "");
    let tcp = TcpStream::connect(("127.0.0.1", rig.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_ca_file(&rig.ca).unwrap();
    let mut tls = connector.build().connect("a.test", tcp).expect("handshake");
    let mut get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        tls.write_all(req.as_bytes()).unwrap();
        read_response(&mut tls)
    };
    let (head, first) = get("/news/kept");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = get("/news/kept");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-status: tollgate; hit"),
        "{head}"
    );
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(1500));
        let (head, body) = get("/news/kept");
        assert!(
            head.to_ascii_lowercase()
                .contains("cache-status: tollgate; hit"),
            "round {round}: {head}"
        );
        assert_eq!(body, first, "round {round}");
        let (head, body) = get(&format!("/news/kept-miss-{round}"));
        assert!(head.starts_with("HTTP/1.1 200"), "round {round}: {head}");
        assert!(!body.is_empty());
    }
    assert_eq!(rig.origin.hits("/news/kept"), 1);
    let _ = &rig.edge;
}

/// A client socket that holds back what is written to it until told to send it.
#[derive(Debug)]
struct Held {
    tcp: TcpStream,
    hold: bool,
    held: Vec<u8>,
}

impl Read for Held {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.read(buf)
    }
}

impl Write for Held {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.hold {
            self.held.extend_from_slice(buf);
            return Ok(buf.len());
        }
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// Three requests, each its own TLS record, reach the edge in one TCP segment: OpenSSL reads
/// them all at once (it reads ahead) and hands out one record a read, so the second and third
/// are read with nothing new on the socket. All three are answered, in order: a hit (the
/// edge's own loop), a miss (Pingora's proxy, on the same connection), a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_tls_records_that_arrive_together_are_all_answered() {
    let rig = tls_rig(false, "");
    let port = rig.port;
    let ca = rig.ca.clone();
    let answers = tokio::task::spawn_blocking(move || {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
        connector.set_ca_file(&ca).unwrap();
        let held = Held {
            tcp,
            hold: false,
            held: Vec::new(),
        };
        let mut tls = connector
            .build()
            .connect("a.test", held)
            .expect("handshake");
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        tls.write_all(get("/news/together").as_bytes()).unwrap();
        let warm = read_response(&mut tls);
        assert!(warm.0.starts_with("HTTP/1.1 200"), "{}", warm.0);
        // (the first answer was a miss: wait until it is stored)
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            tls.write_all(get("/news/together").as_bytes()).unwrap();
            let (head, _) = read_response(&mut tls);
            if head
                .to_ascii_lowercase()
                .contains("cache-status: tollgate; hit")
            {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "never a hit: {head}");
            std::thread::sleep(Duration::from_millis(20));
        }
        tls.get_mut().hold = true;
        for path in ["/news/together", "/news/together-miss", "/news/together"] {
            tls.write_all(get(path).as_bytes()).unwrap();
        }
        let held = std::mem::take(&mut tls.get_mut().held);
        tls.get_mut().hold = false;
        // (22 bytes: a TLS 1.3 record's header, content type and tag)
        assert!(held.len() > 3 * 22, "three records: {} bytes", held.len());
        tls.get_mut().tcp.write_all(&held).unwrap();
        (0..3).map(|_| read_response(&mut tls)).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let heads: Vec<String> = answers.iter().map(|a| a.0.to_ascii_lowercase()).collect();
    for h in &heads {
        assert!(h.starts_with("http/1.1 200"), "{heads:?}");
    }
    assert!(
        heads[0].contains("cache-status: tollgate; hit"),
        "{heads:?}"
    );
    assert!(!heads[1].contains("; hit"), "{heads:?}");
    assert!(
        heads[2].contains("cache-status: tollgate; hit"),
        "{heads:?}"
    );
    assert_eq!(answers[0].1, answers[2].1);
    assert_ne!(answers[1].1, answers[0].1);
    assert_eq!(rig.origin.hits("/news/together"), 1);
    assert_eq!(rig.origin.hits("/news/together-miss"), 1);
}

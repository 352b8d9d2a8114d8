//! The HTTP/2 connection loop (`app::h2`) as a client meets it: hits it answers itself, streams
//! it hands to Pingora's session behind it, on one connection; flow control both ways with a
//! client whose windows are small; and its own framing — PING, header lists too large, a
//! broken header block, an idle connection — read frame by frame from a raw TLS connection.
//! Real edge (hit path pinned on), real origin, `reqwest` (hyper's HTTP/2) and OpenSSL.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use openssl::ssl::{SslConnector, SslMethod, SslStream, SslVerifyMode};
use support::*;
use tollgate::http2::{self, flag, hpack, kind};

fn rig(extra_yaml: &str) -> TlsEdge {
    TlsEdge::start(
        "",
        EdgeOptions {
            extra_yaml: extra_yaml.to_string(),
            fast_hits: Some(true),
            ..EdgeOptions::default()
        },
    )
}

/// HTTP/2 over TLS (ALPN h2), one connection, and windows of 16 KiB per stream and 32 KiB in
/// all: every answer larger than that waits for the client's WINDOW_UPDATEs.
fn small_window_client(rig: &TlsEdge) -> reqwest::Client {
    let pem = std::fs::read(&rig.ca).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve("a.test", ([127, 0, 0, 1], rig.port).into())
        .http2_prior_knowledge()
        .http2_initial_stream_window_size(16 * 1024)
        .http2_initial_connection_window_size(32 * 1024)
        .http2_adaptive_window(false)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

fn url(rig: &TlsEdge, path: &str) -> String {
    format!("https://a.test:{}{path}", rig.port)
}

/// Store `path` (for the host the raw requests name) with one GET over HTTP/2.
async fn warm(rig: &TlsEdge, path: &str) {
    let r = small_window_client(rig)
        .get(url(rig, path))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "warming {path}");
}

async fn served(edge: &Edge) -> f64 {
    edge.metric("tollgate_fast_path_total", &[("outcome", "served")])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_follow_a_small_window_whether_hit_or_handed_to_the_proxy() {
    let rig = rig("");
    let body = rig.origin.set_large("/news/big", 300 * 1024);
    let c = small_window_client(&rig);
    // a miss: answered by the session behind the loop, its DATA paced by the client's windows
    let r = c.get(url(&rig, "/news/big")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), body, "the miss's body");
    let before = served(&rig.edge).await;
    // hits, eight at once on the one connection, with misses of other objects among them
    let gets = (0..8).map(|i| {
        let c = c.clone();
        let path = if i % 2 == 0 {
            "/news/big".to_string()
        } else {
            format!("/news/small-{i}")
        };
        let u = url(&rig, &path);
        async move {
            let r = c.get(u).send().await.unwrap();
            let status = r.status();
            let cache = r
                .headers()
                .get("cache-status")
                .map(|v| v.to_str().unwrap().to_string());
            (path, status, cache, r.bytes().await.unwrap())
        }
    });
    for (path, status, cache, got) in futures::future::join_all(gets).await {
        assert_eq!(status, 200, "{path}");
        if path == "/news/big" {
            assert_eq!(got, body, "a hit's body");
            assert!(cache.unwrap_or_default().contains("hit"), "{path}");
        } else {
            assert_eq!(got, format!("PUBLIC:{path}\n").as_bytes(), "{path}");
        }
    }
    let after = served(&rig.edge).await;
    assert_eq!(
        after - before,
        4.0,
        "the four hits were answered by the loop"
    );
    assert_eq!(rig.origin.hits("/news/big"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_larger_than_the_windows_reaches_the_origin_whole() {
    let rig = rig("");
    let c = small_window_client(&rig);
    let upload: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
    let post = || {
        c.post(url(&rig, "/news/upload"))
            .body(upload.clone())
            .send()
    };
    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = rig.origin.last_for("/news/upload").expect("origin asked");
    assert_eq!(seen.body.len(), upload.len());
    assert!(seen.body == upload, "the body the origin received");
    // a second one on the same connection: the windows were given back
    let r = post().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(rig.origin.requests_for("/news/upload").len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Frame by frame
// ---------------------------------------------------------------------------------------------

struct Raw {
    tls: SslStream<TcpStream>,
    decoder: loona_hpack::Decoder<'static>,
}

struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

impl Raw {
    /// A TLS connection offering only `h2`, the preface and an empty SETTINGS written.
    fn connect(port: u16, ca: &Path) -> Raw {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
        b.set_ca_file(ca).unwrap();
        b.set_verify(SslVerifyMode::PEER);
        b.set_alpn_protos(b"\x02h2").unwrap();
        let mut tls = b.build().connect("a.test", tcp).unwrap();
        assert_eq!(tls.ssl().selected_alpn_protocol(), Some(&b"h2"[..]));
        let mut out = BytesMut::new();
        out.extend_from_slice(http2::PREFACE);
        http2::put_settings(&mut out, &[]);
        tls.write_all(&out).unwrap();
        Raw {
            tls,
            decoder: loona_hpack::Decoder::new(),
        }
    }

    fn send(&mut self, out: &BytesMut) {
        self.tls.write_all(out).unwrap();
    }

    /// The next frame, or `None` once the edge closed.
    fn next(&mut self) -> Option<Frame> {
        let mut head = [0u8; 9];
        self.tls.read_exact(&mut head).ok()?;
        let h = http2::Head::parse(&head).unwrap();
        let mut payload = vec![0; h.len];
        self.tls.read_exact(&mut payload).ok()?;
        Some(Frame {
            kind: h.kind,
            flags: h.flags,
            stream: h.stream,
            payload,
        })
    }

    /// Frames until `stop` holds for one (returned); panics if the connection ends first.
    fn until(&mut self, what: &str, stop: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            let f = self
                .next()
                .unwrap_or_else(|| panic!("the connection ended before {what}"));
            if stop(&f) {
                return f;
            }
        }
    }

    fn fields(&mut self, block: &[u8]) -> Vec<(String, String)> {
        self.decoder
            .decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8(n).unwrap(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect()
    }
}

/// A GET's header block for `a.test:<port>` (the host `small_window_client` names).
fn request(port: u16, path: &str, extra: &[(&str, &str)]) -> BytesMut {
    let authority = format!("a.test:{port}");
    let mut block = BytesMut::new();
    for (n, v) in [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", path),
        (":authority", &authority),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        hpack::put_field(&mut block, n.as_bytes(), v.as_bytes());
    }
    block
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_answers_pings_hits_oversized_lists_and_broken_blocks_itself() {
    let rig = rig("");
    warm(&rig, "/news/raw").await;
    let (ca, port) = (rig.ca.clone(), rig.port);
    let before = served(&rig.edge).await;
    let (hit, too_large, goaway) = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(port, &ca);
        let mut out = BytesMut::new();
        http2::put_frame(&mut out, kind::PING, 0, 0, b"12345678");
        http2::put_headers(&mut out, 1, &request(port, "/news/raw", &[]), true, 16_384);
        raw.send(&out);
        let ping = raw.until("the PING's ACK", |f| f.kind == kind::PING);
        assert_eq!(
            (ping.flags, &ping.payload[..]),
            (flag::ACK, &b"12345678"[..])
        );
        let head = raw.until("the hit's HEADERS", |f| f.kind == kind::HEADERS);
        assert_eq!(head.stream, 1);
        let hit = raw.fields(&head.payload);
        let data = raw.until("the hit's DATA", |f| f.kind == kind::DATA);
        assert_eq!(data.flags & flag::END_STREAM, flag::END_STREAM);
        assert_eq!(data.payload, b"PUBLIC:/news/raw\n");

        // a header list over 64 KiB (in CONTINUATION frames): 431, as Pingora's session answers
        let big = "c".repeat(70 * 1024);
        let block = request(port, "/news/raw", &[("cookie", &big)]);
        let mut out = BytesMut::new();
        http2::put_headers(&mut out, 3, &block, true, 16_384);
        raw.send(&out);
        let head = raw.until("the 431", |f| f.kind == kind::HEADERS && f.stream == 3);
        let too_large = raw.fields(&head.payload);

        // a block that does not decode (index 0): the connection ends with COMPRESSION_ERROR
        let mut out = BytesMut::new();
        http2::put_frame(
            &mut out,
            kind::HEADERS,
            flag::END_HEADERS | flag::END_STREAM,
            5,
            &[0x80],
        );
        raw.send(&out);
        let goaway = raw.until("GOAWAY", |f| f.kind == kind::GOAWAY);
        assert!(raw.next().is_none(), "the connection closes after GOAWAY");
        (hit, too_large, goaway)
    })
    .await
    .unwrap();
    assert_eq!(field(&hit, ":status"), Some("200"));
    assert!(
        field(&hit, "cache-status").is_some_and(|v| v.contains("hit")),
        "{hit:?}"
    );
    assert_eq!(field(&hit, "content-length"), Some("17"));
    assert_eq!(served(&rig.edge).await - before, 1.0);
    assert_eq!(field(&too_large, ":status"), Some("431"));
    let code = u32::from_be_bytes(goaway.payload[4..8].try_into().unwrap());
    assert_eq!(code, 0x9, "COMPRESSION_ERROR");
    let last = u32::from_be_bytes(goaway.payload[0..4].try_into().unwrap());
    assert_eq!(last, 3, "the last stream taken");
    assert_eq!(
        rig.origin.hits("/news/raw"),
        1,
        "no request reached the origin twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gets_goaway_then_closes() {
    let rig = rig("limits: { idle_timeout: 1s }");
    let (ca, port) = (rig.ca.clone(), rig.port);
    let waited = tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(port, &ca);
        let start = Instant::now();
        let goaway = raw.until("GOAWAY", |f| f.kind == kind::GOAWAY);
        let code = u32::from_be_bytes(goaway.payload[4..8].try_into().unwrap());
        assert_eq!(code, 0, "NO_ERROR");
        assert!(raw.next().is_none(), "closed after GOAWAY");
        start.elapsed()
    })
    .await
    .unwrap();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
}

/// A connection with no open stream past the point where its TLS buffers are given back (one
/// second) answers hits and misses on the same connection (and is not closed before its idle
/// timeout, 4 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_serves_after_idling_past_its_buffer_release() {
    let rig = rig("limits: { idle_timeout: 4s }");
    warm(&rig, "/news/rested").await;
    let (ca, port) = (rig.ca.clone(), rig.port);
    tokio::task::spawn_blocking(move || {
        let mut raw = Raw::connect(port, &ca);
        for (stream, path, body) in [
            (1, "/news/rested", "PUBLIC:/news/rested\n"),
            (3, "/news/rested", "PUBLIC:/news/rested\n"),
            (5, "/news/rested-miss", "PUBLIC:/news/rested-miss\n"),
        ] {
            std::thread::sleep(Duration::from_millis(1500));
            let mut out = BytesMut::new();
            http2::put_headers(&mut out, stream, &request(port, path, &[]), true, 16_384);
            raw.send(&out);
            let head = raw.until("HEADERS", |f| f.kind == kind::HEADERS && f.stream == stream);
            let fields = raw.fields(&head.payload);
            assert_eq!(field(&fields, ":status"), Some("200"), "stream {stream}");
            let data = raw.until("DATA", |f| f.kind == kind::DATA && f.stream == stream);
            assert_eq!(data.payload, body.as_bytes(), "stream {stream}");
        }
    })
    .await
    .unwrap();
    assert_eq!(rig.origin.hits("/news/rested"), 1);
}

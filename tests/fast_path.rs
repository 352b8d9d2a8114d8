//! The connection-level hit path (`cache.memory.fast_hits`, on by default) against the proxy
//! it short-cuts: the same answers, the same counters, and a connection that moves between
//! the two without losing a request.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::tokens;
use support::{client, get, raw_get, request, send, Edge, EdgeOptions, Origin, Tok};

const FAST: &str = "tollgate_fast_path_total";
const OBJECTS: &str = "tollgate_cache_objects";

/// Wait until the memory tier holds `n` objects. A miss's answer can reach the client a moment
/// before its fill is stored; a request in that moment is (rightly) the proxy's, which would
/// make the served/proxied counts below depend on timing.
fn wait_stored(admin_port: u16, n: f64) {
    for _ in 0..500 {
        let m = raw_get(admin_port, "/metrics", &[]).expect("metrics").body;
        if support::metric(&m, OBJECTS, &[("tier", "memory")]) >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the memory tier never held {n} objects");
}

/// Wait (up to 5 s) until `name{labels}` reads `want`, and return what it reads then. An
/// answer's counters are bumped right after it is written (as the proxy's `logging` phase
/// does), so a client can ask `/metrics` a moment before, on another worker thread.
async fn settled(edge: &Edge, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
    support::eventually(Duration::from_secs(5), || async {
        edge.metric(name, labels).await == want
    })
    .await;
    edge.metric(name, labels).await
}

async fn wait_stored_async(edge: &Edge, n: f64) {
    let port = edge.admin_port;
    tokio::task::spawn_blocking(move || wait_stored(port, n))
        .await
        .unwrap();
}

/// The hit path on, whatever `TOLLGATE_TEST_FAST_HITS` says: these tests are about it.
fn hit_path() -> EdgeOptions {
    EdgeOptions {
        fast_hits: Some(true),
        ..EdgeOptions::default()
    }
}

fn proxy_only() -> EdgeOptions {
    EdgeOptions {
        cache: "{ memory: { max_size: 64MiB, fast_hits: false } }".into(),
        ..EdgeOptions::default()
    }
}

/// Every line of a metric family, for comparing two edges.
fn family(metrics: &str, name: &str) -> Vec<String> {
    let mut lines: Vec<String> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// Headers as sorted (name, value) pairs, without the two that change by the second and the
/// test origin's response counter (each edge stored its own response).
fn comparable(h: &reqwest::header::HeaderMap) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = h
        .iter()
        .filter(|(k, _)| !["date", "age", "x-origin-seq"].contains(&k.as_str()))
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_owned()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn fast_hits_answer_and_count_exactly_as_the_proxy_does() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let fast = Edge::start_with(&origin, &[&key], hit_path());
    let proxy = Edge::start_with(&origin, &[&key], proxy_only());
    let sub = tokens::subscriber(&key, "alice");
    let not_entitled = tokens::valid(&key, "bob", &["basic"], 3600);
    let expired = tokens::expired(&key);
    let forged = {
        let other = tokens::es256("k1");
        tokens::subscriber(&other, "mallory")
    };
    // Fill both variants of the article and the public page on both edges (misses).
    for edge in [&fast, &proxy] {
        for tok in [Tok::None, Tok::Bearer(&sub)] {
            let r = get(edge, "/premium/story", tok).await;
            assert!(r.is_miss(), "warm-up is a miss: {}", r.cache_status());
        }
        assert!(get(edge, "/news/page", Tok::None).await.is_miss());
        wait_stored_async(edge, 3.0).await;
    }
    let filled = origin.total();

    let cases: Vec<(&str, &str, Tok<'_>, bool)> = vec![
        ("public", "/news/page", Tok::None, false),
        ("public HEAD", "/news/page", Tok::None, true),
        (
            "public, token ignored",
            "/news/page",
            Tok::Bearer(&sub),
            false,
        ),
        ("anonymous", "/premium/story", Tok::None, false),
        (
            "subscriber bearer",
            "/premium/story",
            Tok::Bearer(&sub),
            false,
        ),
        (
            "subscriber cookie",
            "/premium/story",
            Tok::Cookie(&sub),
            false,
        ),
        (
            "subscriber query",
            "/premium/story",
            Tok::Query(&sub),
            false,
        ),
        ("subscriber HEAD", "/premium/story", Tok::Bearer(&sub), true),
        (
            "not entitled",
            "/premium/story",
            Tok::Bearer(&not_entitled),
            false,
        ),
        ("expired", "/premium/story", Tok::Bearer(&expired), false),
        ("forged", "/premium/story", Tok::Bearer(&forged), false),
        ("garbage", "/premium/story", Tok::Bearer("a.b.c"), false),
    ];
    let served_before = fast.metric(FAST, &[("outcome", "served")]).await;
    for (what, path, tok, head) in &cases {
        let mut answers = Vec::new();
        for edge in [&fast, &proxy] {
            let rb = request(&client(), edge, path, *tok);
            let rb = if *head {
                rb.build()
                    .map(|mut r| {
                        *r.method_mut() = reqwest::Method::HEAD;
                        client().execute(r)
                    })
                    .expect("request")
                    .await
                    .expect("HEAD")
            } else {
                rb.send().await.expect("GET")
            };
            let status = rb.status().as_u16();
            let headers = rb.headers().clone();
            let body = rb.text().await.expect("body");
            answers.push((status, headers, body));
        }
        let (f, p) = (&answers[0], &answers[1]);
        assert_eq!(f.0, p.0, "{what}: status");
        assert_eq!(f.2, p.2, "{what}: body");
        assert_eq!(comparable(&f.1), comparable(&p.1), "{what}: headers");
        assert_eq!(f.1["cache-status"], "tollgate; hit", "{what}");
        for h in [&f.1, &p.1] {
            let age: u64 = h["age"].to_str().unwrap().parse().expect("numeric Age");
            assert!(age <= 5, "{what}: Age {age}");
            assert!(h.contains_key("date"), "{what}: Date");
        }
        let subscriber = f.2.contains(support::SUBSCRIBER_MARK);
        let should_be = what.starts_with("subscriber");
        if !head {
            assert_eq!(
                subscriber, should_be,
                "{what}: subscriber content to the wrong reader"
            );
        }
    }
    assert_eq!(origin.total(), filled, "hits never reach the origin");

    let want = served_before + cases.len() as f64;
    let served = settled(&fast, FAST, &[("outcome", "served")], want).await - served_before;
    assert_eq!(
        served,
        cases.len() as f64,
        "every case answered by the hit path"
    );
    assert_eq!(proxy.metric(FAST, &[("outcome", "served")]).await, 0.0);
    assert_eq!(proxy.metric(FAST, &[("outcome", "proxied")]).await, 0.0);
    // every request of both edges counted: 3 fills + the cases
    let requests = 3.0 + cases.len() as f64;
    for edge in [&fast, &proxy] {
        settled(
            edge,
            "tollgate_request_duration_seconds_count",
            &[],
            requests,
        )
        .await;
    }
    let (fm, pm) = (fast.metrics().await, proxy.metrics().await);
    for name in [
        "tollgate_requests_total",
        "tollgate_auth_decisions_total",
        "tollgate_cache_lookups_total",
    ] {
        assert_eq!(family(&fm, name), family(&pm, name), "{name} differs");
    }
    let served_count = |m: &str| {
        m.lines()
            .find(|l| l.starts_with("tollgate_request_duration_seconds_count"))
            .map(str::to_owned)
    };
    assert_eq!(
        served_count(&fm),
        served_count(&pm),
        "request duration samples"
    );
}

/// Raw HTTP/1.1 answers read off one connection: (status, lower-case headers, body).
type Answer = (u16, Vec<(String, String)>, Vec<u8>);

fn read_answers(s: &mut TcpStream, buf: &mut Vec<u8>, n: usize, heads: &[bool]) -> Vec<Answer> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    while out.len() < n {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(len)) = resp.parse(buf) {
            let hs: Vec<(String, String)> = resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            let cl: usize = hs
                .iter()
                .find(|(k, _)| k == "content-length")
                .map_or(0, |(_, v)| v.parse().expect("content-length"));
            let body_len = if heads[out.len()] { 0 } else { cl };
            if buf.len() >= len + body_len {
                let status = resp.code.expect("status");
                let body = buf[len..len + body_len].to_vec();
                buf.drain(..len + body_len);
                out.push((status, hs, body));
                continue;
            }
        }
        let got = s.read(&mut chunk).expect("read from the edge");
        assert!(
            got > 0,
            "connection closed after {} of {n} answers",
            out.len()
        );
        buf.extend_from_slice(&chunk[..got]);
    }
    out
}

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.1.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

#[tokio::test]
async fn pipelined_hits_and_connection_close() {
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[], hit_path());
    for p in ["/news/a", "/news/b"] {
        assert!(get(&edge, p, Tok::None).await.is_miss());
    }
    wait_stored_async(&edge, 2.0).await;
    let port = edge.port;
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let h = format!("Host: 127.0.0.1:{port}\r\n");
        let reqs = format!(
            "GET /news/a HTTP/1.1\r\n{h}\r\nHEAD /news/b HTTP/1.1\r\n{h}\r\n\
             GET /news/b HTTP/1.1\r\n{h}Connection: close\r\n\r\n"
        );
        s.write_all(reqs.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let answers = read_answers(&mut s, &mut buf, 3, &[false, true, false]);
        // after `Connection: close` the edge closes: nothing more to read
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("clean close");
        assert!(
            buf.is_empty() && rest.is_empty(),
            "bytes after the last answer"
        );
        answers
    })
    .await
    .unwrap();
    let bodies: Vec<String> = answers
        .iter()
        .map(|a| String::from_utf8_lossy(&a.2).into_owned())
        .collect();
    assert!(bodies[0].contains("/news/a"), "{bodies:?}");
    assert!(bodies[1].is_empty(), "HEAD has no body");
    assert!(bodies[2].contains("/news/b"), "{bodies:?}");
    for a in &answers {
        assert_eq!(a.0, 200);
        assert_eq!(header(a, "cache-status"), "tollgate; hit");
    }
    assert_eq!(
        header(&answers[1], "content-length"),
        header(&answers[2], "content-length")
    );
    assert_eq!(header(&answers[0], "connection"), "keep-alive");
    assert_eq!(header(&answers[2], "connection"), "close");
    assert_eq!(
        settled(&edge, FAST, &[("outcome", "served")], 3.0).await,
        3.0
    );
    assert_eq!(origin.hits("/news/a") + origin.hits("/news/b"), 2);
}

#[tokio::test]
async fn one_connection_moves_between_the_hit_path_and_the_proxy() {
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[], hit_path());
    let (port, admin_port) = (edge.port, edge.admin_port);
    let p = "/news/moving";
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let h = format!("Host: 127.0.0.1:{port}\r\n");
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for (i, req) in [
            format!("GET {p} HTTP/1.1\r\n{h}\r\n"), // miss: proxy
            format!("GET {p} HTTP/1.1\r\n{h}\r\n"), // hit: fast
            format!("GET {p} HTTP/1.1\r\n{h}Range: bytes=0-3\r\n\r\n"), // proxy (206)
            format!("GET {p} HTTP/1.1\r\n{h}\r\n"), // hit: fast
            format!("POST {p} HTTP/1.1\r\n{h}Content-Length: 2\r\n\r\nhi"), // proxy, invalidates
            format!("GET {p} HTTP/1.1\r\n{h}\r\n"), // miss again
            format!("GET {p} HTTP/1.1\r\n{h}\r\n"), // hit: fast
        ]
        .iter()
        .enumerate()
        {
            s.write_all(req.as_bytes()).unwrap();
            out.extend(read_answers(&mut s, &mut buf, 1, &[false]));
            if i == 0 || i == 5 {
                wait_stored(admin_port, 1.0); // the misses
            }
        }
        out
    })
    .await
    .unwrap();
    let seen: Vec<(u16, &str)> = answers
        .iter()
        .map(|a| (a.0, header(a, "cache-status")))
        .collect();
    assert_eq!(seen[0], (200, "tollgate; fwd=miss; stored"));
    assert_eq!(seen[1], (200, "tollgate; hit"));
    assert_eq!(seen[2].0, 206);
    assert_eq!(
        answers[2].2,
        answers[1].2[..4].to_vec(),
        "the range of the stored body"
    );
    assert_eq!(seen[3], (200, "tollgate; hit"));
    assert_eq!(
        seen[5],
        (200, "tollgate; fwd=miss; stored"),
        "POST invalidated the entry"
    );
    assert_eq!(seen[6], (200, "tollgate; hit"));
    assert_eq!(
        settled(&edge, FAST, &[("outcome", "served")], 3.0).await,
        3.0
    );
    assert_eq!(
        settled(&edge, FAST, &[("outcome", "proxied")], 4.0).await,
        4.0
    );
}

#[tokio::test]
async fn purged_and_expired_objects_are_never_answered_by_the_hit_path() {
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[], hit_path());
    let p = "/news/short";
    origin.set_override(p, 200, &[("cache-control", "max-age=1")], "short-lived");
    assert!(get(&edge, p, Tok::None).await.is_miss());
    assert!(get(&edge, p, Tok::None).await.is_hit());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = get(&edge, p, Tok::None).await;
    assert_ne!(
        stale.cache_status(),
        "tollgate; hit",
        "an expired object is not a plain hit"
    );
    assert_eq!(
        origin.hits(p),
        2,
        "the expired object went back to the origin"
    );

    let q = "/news/purged";
    assert!(get(&edge, q, Tok::None).await.is_miss());
    assert!(get(&edge, q, Tok::None).await.is_hit());
    edge.purge_ok(&format!(r#"{{"paths": ["{q}"]}}"#)).await;
    assert!(
        get(&edge, q, Tok::None).await.is_miss(),
        "purged means gone"
    );
    assert_eq!(origin.hits(q), 2);
    let r = send(client().get(edge.url(q))).await;
    assert_eq!(r.cache_status(), "tollgate; hit");
}

/// Answers whose decision checked a signature in full wait for the other ready connections
/// before they are written (`FastHit::checked_in_full`), and only those.
/// On eight connections at once, each pipelining new tokens, a repeated token, a forged one and
/// none: every answer arrives, in its connection's order, with the right variant, all hits.
#[tokio::test]
async fn answers_after_signature_checks_keep_their_order_across_connections() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], hit_path());
    let sub = tokens::subscriber(&key, "warm");
    for tok in [Tok::None, Tok::Bearer(&sub)] {
        assert!(get(&edge, "/premium/story", tok).await.is_miss());
    }
    wait_stored_async(&edge, 2.0).await;
    let forged = tokens::forged(&key);
    let port = edge.port;
    let mut conns = Vec::new();
    for i in 0..8 {
        let fresh = tokens::subscriber(&key, &format!("reader{i}"));
        let not_entitled = tokens::valid(&key, &format!("basic{i}"), &["basic"], 3600);
        // (token, subscriber content expected)
        let plan = vec![
            (Some(fresh.clone()), true),
            (Some(fresh), true),
            (Some(forged.clone()), false),
            (None, false),
            (Some(not_entitled), false),
        ];
        conns.push(tokio::task::spawn_blocking(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut reqs = String::new();
            for (tok, _) in &plan {
                reqs += &format!("GET /premium/story HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n");
                if let Some(t) = tok {
                    reqs += &format!("Authorization: Bearer {t}\r\n");
                }
                reqs += "\r\n";
            }
            s.write_all(reqs.as_bytes()).unwrap();
            let mut buf = Vec::new();
            let answers = read_answers(&mut s, &mut buf, plan.len(), &[false; 5]);
            (plan, answers)
        }));
    }
    for c in conns {
        let (plan, answers) = c.await.unwrap();
        for (k, ((_, subscriber), a)) in plan.iter().zip(&answers).enumerate() {
            let body = String::from_utf8_lossy(&a.2);
            assert_eq!(a.0, 200, "answer {k}");
            assert_eq!(header(a, "cache-status"), "tollgate; hit", "answer {k}");
            assert_eq!(
                body.contains(support::SUBSCRIBER_MARK),
                *subscriber,
                "answer {k}: {body}"
            );
            assert!(
                body.starts_with(if *subscriber { "FULL:" } else { "TEASER:" }),
                "answer {k}: {body}"
            );
        }
    }
    assert_eq!(
        settled(&edge, FAST, &[("outcome", "served")], 40.0).await,
        40.0
    );
    // Each connection's new, forged and not-entitled tokens were verified in full (a denial is
    // not remembered, so the shared forgery is checked on every connection): 3 × 8 answers
    // yielded; the repeated token and the request without one did not.
    let yields = edge.metric("tollgate_fast_path_yields_total", &[]).await;
    assert_eq!(
        yields, 24.0,
        "answers that yielded after a signature check, of 40"
    );
    assert_eq!(origin.total(), 2, "hits never reach the origin");
}

/// Memory files named like the edge's body files among `pid`'s open descriptors.
fn body_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the edge's descriptors")
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().starts_with("/memfd:tollgate-body"))
        .count()
}

#[tokio::test]
async fn large_bodies_go_out_from_sealed_files_intact() {
    const SENT_FROM_FILES: &str = "tollgate_fast_path_sendfile_bytes_total";
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[], hit_path());
    let small = origin.set_large("/news/small.bin", 64 * 1024 - 1);
    let big = origin.set_large("/news/big.bin", 300_001);
    let huge = origin.set_large("/news/huge.bin", 5 * 1024 * 1024 + 7);
    for (p, b) in [
        ("/news/small.bin", &small),
        ("/news/big.bin", &big),
        ("/news/huge.bin", &huge),
    ] {
        let r = support::get_bin(&edge, p, &[]).await;
        assert!(r.status == 200 && r.body == *b, "{p}: the miss's body");
    }
    wait_stored_async(&edge, 3.0).await;
    // one sealed file per body of 64 KiB and more; the 64 KiB - 1 body stays on the heap
    assert_eq!(body_files(edge.pid()), 2);
    assert_eq!(edge.metric(SENT_FROM_FILES, &[]).await, 0.0);

    // One connection, pipelined: file-backed and heap bodies, a HEAD, and three 5 MiB bodies
    // asked for before reading anything, through a 64 KiB receive buffer, so the socket fills
    // and the rest of a body goes out by the ordinary write after `sendfile` would block.
    let port = edge.port;
    let answers = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&s, 64 * 1024).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let h = format!("Host: 127.0.0.1:{port}\r\n");
        let mut reqs = String::new();
        for (m, p) in [
            ("GET", "/news/big.bin"),
            ("HEAD", "/news/big.bin"),
            ("GET", "/news/small.bin"),
            ("GET", "/news/big.bin"),
            ("GET", "/news/huge.bin"),
            ("GET", "/news/huge.bin"),
            ("GET", "/news/huge.bin"),
            ("GET", "/news/small.bin"),
        ] {
            reqs.push_str(&format!("{m} {p} HTTP/1.1\r\n{h}\r\n"));
        }
        s.write_all(reqs.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let mut buf = Vec::new();
        let heads = [false, true, false, false, false, false, false, false];
        read_answers(&mut s, &mut buf, 8, &heads)
    })
    .await
    .unwrap();
    let want: [&[u8]; 8] = [&big, b"", &small, &big, &huge, &huge, &huge, &small];
    for (i, (a, w)) in answers.iter().zip(want).enumerate() {
        assert_eq!(a.0, 200, "answer {i}");
        assert_eq!(header(a, "cache-status"), "tollgate; hit", "answer {i}");
        assert!(
            a.2 == w,
            "answer {i}: {} body bytes differ from the origin's",
            a.2.len()
        );
    }
    assert_eq!(header(&answers[1], "content-length"), "300001");

    // Only the file-backed bodies were sent from files, and not all of the 5 MiB ones: the
    // socket filled and the ordinary write carried the rest.
    let file_bytes = 2.0 * big.len() as f64 + 3.0 * huge.len() as f64;
    assert_eq!(
        settled(&edge, FAST, &[("outcome", "served")], 8.0).await,
        8.0
    );
    let sent = edge.metric(SENT_FROM_FILES, &[]).await;
    assert!(
        sent >= big.len() as f64 && sent < file_bytes,
        "{sent} of {file_bytes}"
    );

    // the proxy path reads the same stored bytes: a range of the file-backed body
    let r = support::get_bin(&edge, "/news/big.bin", &[("range", "bytes=100000-100099")]).await;
    assert_eq!(r.status, 206);
    assert!(
        r.body[..] == big[100_000..100_100],
        "range of a file-backed body"
    );
    assert_eq!(origin.hits("/news/big.bin"), 1);
    assert_eq!(origin.hits("/news/huge.bin"), 1);

    // A purge frees the objects at once, not when the eviction structure gets round to it:
    // their files (each holding its body) are closed, with no other traffic to trigger a sweep.
    edge.purge_ok(r#"{"paths": ["/news/big.bin", "/news/huge.bin"]}"#)
        .await;
    let pid = edge.pid();
    let closed = support::eventually(
        Duration::from_secs(5),
        || async move { body_files(pid) == 0 },
    )
    .await;
    assert!(
        closed,
        "{} body files still open after the purge",
        body_files(pid)
    );
}

/// Once a client's failed-credential budget is spent, a paywall request with a credential not
/// already known good gets its `429` from the connection loop, on a kept connection, answered
/// and counted as the proxy answers it (`fast_hits: false`): same status and headers, same
/// counters. A known-good subscriber token on the same connection still gets its hit.
#[tokio::test]
async fn throttled_requests_are_answered_by_the_loop_as_the_proxy_would() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let budget = "limits: { failed_auth: { per_address_per_second: 0.001, burst: 2 } }";
    let fast = Edge::start_with(
        &origin,
        &[&key],
        EdgeOptions {
            extra_yaml: budget.into(),
            fast_hits: Some(true),
            ..EdgeOptions::default()
        },
    );
    let proxy = Edge::start_with(
        &origin,
        &[&key],
        EdgeOptions {
            cache: "{ memory: { max_size: 64MiB, fast_hits: false } }".into(),
            extra_yaml: budget.into(),
            ..EdgeOptions::default()
        },
    );
    let sub = tokens::subscriber(&key, "known");
    let forged = tokens::forged(&key);
    let mut answers = Vec::new();
    for edge in [&fast, &proxy] {
        // the subscriber's token is verified (and remembered) before the budget is spent
        assert!(get(edge, "/premium/story", Tok::Bearer(&sub))
            .await
            .is_full());
        let port = edge.port;
        let (forged, sub) = (forged.clone(), sub.clone());
        answers.push(
            tokio::task::spawn_blocking(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let mut reqs = String::new();
                for tok in [&forged, &forged, &forged, &forged, &sub] {
                    reqs += &format!(
                        "GET /premium/story HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
                         Authorization: Bearer {tok}\r\n\r\n"
                    );
                }
                s.write_all(reqs.as_bytes()).unwrap();
                let mut buf = Vec::new();
                read_answers(&mut s, &mut buf, 5, &[false; 5])
            })
            .await
            .unwrap(),
        );
    }
    for (edge, got) in [(&fast, &answers[0]), (&proxy, &answers[1])] {
        let statuses: Vec<u16> = got.iter().map(|a| a.0).collect();
        // two failures spend the budget (burst 2): the next forged tokens are refused unverified
        assert_eq!(statuses, [200, 200, 429, 429, 200], "{}", edge.port);
        assert!(String::from_utf8_lossy(&got[4].2).contains(support::SUBSCRIBER_MARK));
        for a in &got[2..4] {
            assert_eq!(header(a, "retry-after"), "1000");
            assert_eq!(
                header(a, "connection"),
                "keep-alive",
                "the connection is kept"
            );
        }
    }
    let strip = |a: &Answer| -> Vec<(String, String)> {
        let mut h: Vec<_> = a.1.iter().filter(|(k, _)| k != "date").cloned().collect();
        h.sort();
        h
    };
    assert_eq!(strip(&answers[0][2]), strip(&answers[1][2]), "429 headers");
    assert_eq!(answers[0][2].2, answers[1][2].2, "429 body");
    // the loop answered the two 429s itself: of the six requests, four were hits it served or
    // requests it handed to the proxy
    // (counters are bumped just after an answer is written: wait for them to settle)
    let four = support::eventually(Duration::from_secs(5), || async {
        let served = fast.metric(FAST, &[("outcome", "served")]).await;
        served + fast.metric(FAST, &[("outcome", "proxied")]).await == 4.0
    })
    .await;
    assert!(
        four,
        "the loop's served + proxied is not 4: a 429 went to the proxy"
    );
    for edge in [&fast, &proxy] {
        let throttled = settled(
            edge,
            "tollgate_auth_decisions_total",
            &[("result", "throttled")],
            2.0,
        )
        .await;
        assert_eq!(throttled, 2.0);
        let labels = [
            ("route", "/premium/*"),
            ("cache_status", "edge"),
            ("status_class", "4xx"),
        ];
        assert_eq!(
            settled(edge, "tollgate_requests_total", &labels, 2.0).await,
            2.0
        );
    }
}

/// The raw answers to `requests` sent at once on one connection, and whether the edge closed
/// it after the last one.
fn raw_exchange(port: u16, requests: &str, heads: &[bool]) -> (Vec<Answer>, bool) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(requests.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let answers = read_answers(&mut s, &mut buf, heads.len(), heads);
    let mut rest = Vec::new();
    let closed = s.read_to_end(&mut rest).is_ok() && rest.is_empty() && buf.is_empty();
    (answers, closed)
}

#[tokio::test]
async fn http_1_0_hits_are_answered_by_the_hit_path_as_the_proxy_answers_them() {
    let origin = Origin::start();
    let fast = Edge::start_with(&origin, &[], hit_path());
    let proxy = Edge::start_with(&origin, &[], proxy_only());
    for edge in [&fast, &proxy] {
        assert!(get(edge, "/news/old", Tok::None).await.is_miss());
        wait_stored_async(edge, 1.0).await;
    }
    let served_before = fast.metric(FAST, &[("outcome", "served")]).await;
    // HTTP/1.0 without keep-alive: one answer, then the edge closes; with keep-alive: the
    // connection stays for the next request, which (without it) is the last
    let cases: [(&str, &[bool]); 2] = [
        ("GET /news/old HTTP/1.0\r\nHost: {h}\r\n\r\n", &[false]),
        (
            "GET /news/old HTTP/1.0\r\nHost: {h}\r\nConnection: keep-alive\r\n\r\n\
             HEAD /news/old HTTP/1.0\r\nHost: {h}\r\n\r\n",
            &[false, true],
        ),
    ];
    for (requests, heads) in cases {
        let mut seen = Vec::new();
        for edge in [&fast, &proxy] {
            let port = edge.port;
            let heads = heads.to_vec();
            // the host the objects were filled under (it is part of the cache key)
            let sent = requests.replace("{h}", &format!("127.0.0.1:{port}"));
            let (answers, closed) =
                tokio::task::spawn_blocking(move || raw_exchange(port, &sent, &heads))
                    .await
                    .unwrap();
            assert!(
                closed,
                "{requests:?}: the connection is closed after the last answer"
            );
            let comparable: Vec<_> = answers
                .into_iter()
                .map(|(status, headers, body)| {
                    let headers: Vec<_> = headers
                        .into_iter()
                        .filter(|(k, _)| !["date", "age", "x-origin-seq"].contains(&k.as_str()))
                        .collect();
                    (status, headers, body)
                })
                .collect();
            seen.push(comparable);
        }
        assert_eq!(seen[0].len(), seen[1].len(), "{requests:?}: answers");
        for (f, p) in seen[0].iter().zip(&seen[1]) {
            assert_eq!(f.0, p.0, "{requests:?}: status");
            assert_eq!(f.2, p.2, "{requests:?}: body");
            assert_eq!(f.1, p.1, "{requests:?}: headers");
        }
        for (status, headers, _) in &seen[0] {
            assert_eq!(*status, 200);
            assert!(headers.contains(&("cache-status".into(), "tollgate; hit".into())));
        }
        assert_eq!(
            seen[0]
                .last()
                .and_then(|a| a.1.iter().find(|(k, _)| k == "connection")),
            Some(&("connection".to_owned(), "close".to_owned())),
            "{requests:?}: the last answer says it closes"
        );
    }
    let served = settled(&fast, FAST, &[("outcome", "served")], served_before + 3.0).await;
    assert_eq!(
        served - served_before,
        3.0,
        "the three HTTP/1.0 hits took the hit path"
    );
    assert_eq!(origin.hits("/news/old"), 2, "one fill per edge, then hits");
}

//! Cache behaviour at the edge: request coalescing, freshness from the origin and the route's
//! TTL bounds, and what is never stored.

mod support;

use std::time::Duration;

use support::tokens;
use support::{get, pooled_client, request, send, Edge, EdgeOptions, Origin, Tok};

/// 200 concurrent requests for one cold key reach the origin once (the cache lock coalesces
/// them); all 200 get the body. Proof that they overlapped: the origin holds the first fill
/// until the edge has handed all 200 to its proxy, and while it holds it has seen that one.
#[tokio::test]
async fn concurrent_misses_for_one_cold_key_reach_the_origin_once() {
    const N: usize = 200;
    let key = tokens::es256("k1");
    let origin = Origin::start();
    // The hit path stays on whatever `TOLLGATE_TEST_FAST_HITS` says: the proof of overlap
    // below counts the requests it handed to the proxy. The misses are the proxy's either way.
    let opts = EdgeOptions {
        fast_hits: Some(true),
        ..EdgeOptions::default()
    };
    let edge = Edge::start_with(&origin, &[&key], opts);
    let client = pooled_client();
    let sub = tokens::subscriber(&key, "alice");
    let proxied = ("outcome", "proxied");

    for (path, tok) in [
        ("/news/cold", Tok::None),
        ("/premium/cold", Tok::Bearer(&sub)),
    ] {
        let before = edge.metric("tollgate_fast_path_total", &[proxied]).await;
        let held = origin.hold();
        let mut tasks = Vec::new();
        for _ in 0..N {
            let rb = request(&client, &edge, path, tok);
            tasks.push(tokio::spawn(send(rb)));
        }
        // every request was read by the edge and is in its proxy, none answered yet
        let all_in = support::eventually(Duration::from_secs(20), || async {
            edge.metric("tollgate_fast_path_total", &[proxied]).await >= before + N as f64
        })
        .await;
        assert!(
            all_in,
            "{path}: the {N} requests never were in the edge together"
        );
        assert_eq!(
            origin.hits(path),
            1,
            "{path}: {N} overlapping misses, and more than one fill reached the origin"
        );
        held.release();
        let mut ok = 0;
        for t in tasks {
            let r = t.await.expect("task");
            assert_eq!(r.status, 200, "{path}: {r:?}");
            if path.starts_with("/premium/") {
                assert!(r.is_full(), "{path}: subscriber must get the full body");
            }
            ok += 1;
        }
        assert_eq!(ok, N);
        assert_eq!(
            origin.hits(path),
            1,
            "{path}: {N} concurrent misses must reach the origin once"
        );
    }
}

/// The route's min/max TTL clamp the origin's freshness; without explicit freshness the route's
/// default TTL applies; `no-store`, `private` and `Set-Cookie` responses are never stored.
#[tokio::test]
async fn freshness_follows_the_origin_within_the_route_bounds() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let opts = EdgeOptions {
        routes: vec![
        // max_ttl 1s: the origin's max-age=300 is cut to 1 s
        r#"{ match: "/short/*", origin: news, access: public, cache: { default_ttl: 1s, min_ttl: 0s, max_ttl: 1s } }"#.into(),
        // min_ttl 1h: the origin's max-age=0 is raised to an hour
        r#"{ match: "/long/*", origin: news, access: public, cache: { default_ttl: 1h, min_ttl: 1h, max_ttl: 1d } }"#.into(),
        r#"{ match: "/*", origin: news, access: public, cache: { default_ttl: 5m } }"#.into(),
        ],
        ..EdgeOptions::default()
    };
    let edge = Edge::start_with(&origin, &[&key], opts);

    origin.set_override(
        "/short/a",
        200,
        &[("cache-control", "max-age=300")],
        "short",
    );
    assert!(get(&edge, "/short/a", Tok::None).await.is_miss());
    assert!(get(&edge, "/short/a", Tok::None).await.is_hit());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&edge, "/short/a", Tok::None).await;
    assert!(
        !r.is_hit(),
        "max_ttl must cap freshness: {}",
        r.cache_status()
    );
    assert_eq!(origin.hits("/short/a"), 2);

    origin.set_override("/long/a", 200, &[("cache-control", "max-age=0")], "long");
    assert!(get(&edge, "/long/a", Tok::None).await.is_miss());
    let r = get(&edge, "/long/a", Tok::None).await;
    assert!(
        r.is_hit(),
        "min_ttl must raise freshness: {}",
        r.cache_status()
    );

    // no Cache-Control, no Expires: default_ttl
    origin.set_override("/plain", 200, &[], "plain");
    get(&edge, "/plain", Tok::None).await;
    assert!(get(&edge, "/plain", Tok::None).await.is_hit());

    for (path, header) in [
        ("/nostore", ("cache-control", "no-store")),
        ("/private", ("cache-control", "private, max-age=60")),
        ("/cookie", ("set-cookie", "session=abc")),
    ] {
        origin.set_override(path, 200, &[header], "x");
        for _ in 0..2 {
            let r = get(&edge, path, Tok::None).await;
            assert_eq!(r.cache_status(), "tollgate; fwd=miss", "{path}");
        }
        assert_eq!(origin.hits(path), 2, "{path} must not be stored");
    }

    // an expired Expires date is a miss every time; a future one is honoured
    origin.set_override(
        "/expired",
        200,
        &[("expires", "Thu, 01 Jan 1970 00:00:00 GMT")],
        "old",
    );
    get(&edge, "/expired", Tok::None).await;
    assert!(!get(&edge, "/expired", Tok::None).await.is_hit());
}

/// A POST is never answered from the cache and never stored, on any route: public, paywall
/// (reader and subscriber), token, signed and basic. Each path is cached by a GET first; every
/// POST then reaches the origin (`fwd=bypass`), and the next GET is not the POST's answer.
#[tokio::test]
async fn unsafe_methods_bypass_the_cache() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("editors.htpasswd");
    let alice = bcrypt::hash("correct horse", 4).unwrap();
    std::fs::write(&htpasswd, format!("alice:{alice}\n")).unwrap();
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudfront");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("e2e.json")).unwrap()).unwrap();
    let signed_keys: String = doc["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, f)| format!("  {id}: {:?}\n", fixtures.join(f.as_str().unwrap())))
        .collect();
    let mut routes = vec![
        r#"{ match: "/vod/*", origin: news, access: token }"#.to_string(),
        r#"{ match: "/downloads/*", origin: news, access: signed }"#.to_string(),
        r#"{ match: "/drafts/*", origin: news, access: basic, realm: editors }"#.to_string(),
    ];
    routes.extend(support::default_routes());
    let edge = Edge::start_with(
        &origin,
        &[&key],
        EdgeOptions {
            routes,
            extra_yaml: format!(
                "basic_auth:\n  editors: {:?}\nsigned_keys:\n{signed_keys}",
                htpasswd.to_string_lossy()
            ),
            ..EdgeOptions::default()
        },
    );
    let sub = tokens::subscriber(&key, "alice");
    let bearer = format!("Bearer {sub}");
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "alice:correct horse"
        )
    );
    let signed = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "canned_rsa_sha1")
        .and_then(|c| c["path"].as_str())
        .unwrap()
        .to_string();
    let signed_host = doc["host"].as_str().unwrap().to_string();
    // (kind, request path, origin path, headers)
    type Case<'a> = (&'a str, String, &'a str, Vec<(&'a str, String)>);
    let cases: Vec<Case> = vec![
        ("public", "/news/p".into(), "/news/p", vec![]),
        ("paywall, reader", "/premium/p".into(), "/premium/p", vec![]),
        (
            "paywall, subscriber",
            "/premium/q".into(),
            "/premium/q",
            vec![("authorization", bearer.clone())],
        ),
        (
            "token",
            "/vod/p".into(),
            "/vod/p",
            vec![("authorization", bearer.clone())],
        ),
        (
            "signed",
            signed.clone(),
            "/downloads/report.pdf",
            vec![("host", signed_host.clone())],
        ),
        (
            "basic",
            "/drafts/p".into(),
            "/drafts/p",
            vec![("authorization", basic.clone())],
        ),
    ];
    let client = support::client();
    for (kind, path, origin_path, headers) in &cases {
        let with = |rb: reqwest::RequestBuilder| {
            headers
                .iter()
                .fold(rb, |rb, (k, v)| rb.header(*k, v.as_str()))
        };
        let first = send(with(client.get(edge.url(path)))).await;
        assert_eq!(first.status, 200, "{kind}: GET {path}: {first:?}");
        let cached = send(with(client.get(edge.url(path)))).await;
        assert!(
            cached.is_hit(),
            "{kind}: the GET was not cached: {}",
            cached.cache_status()
        );
        let hits = origin.hits(origin_path);
        for i in 1..=2 {
            let r = send(with(client.post(edge.url(path))).body("x")).await;
            assert_eq!(r.status, 200, "{kind}: POST {i}: {r:?}");
            assert_eq!(r.cache_status(), "tollgate; fwd=bypass", "{kind}: POST {i}");
            assert_eq!(
                origin.hits(origin_path),
                hits + i,
                "{kind}: POST {i} reached the origin"
            );
        }
        let last = origin.last_for(origin_path).expect("origin asked");
        assert_eq!(last.method, "POST", "{kind}");
        // the POST's answer was not stored for the GET
        let after = send(with(client.get(edge.url(path)))).await;
        assert!(
            !after.is_hit(),
            "{kind}: GET after POST: {}",
            after.cache_status()
        );
        assert_eq!(
            origin.last_for(origin_path).expect("origin").method,
            "GET",
            "{kind}"
        );
    }
}

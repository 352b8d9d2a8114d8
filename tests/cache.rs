//! Cache behaviour at the edge: request coalescing, freshness from the origin and the route's
//! TTL bounds, and what is never stored.

mod support;

use std::time::Duration;

use support::tokens;
use support::{get, pooled_client, request, send, Edge, EdgeOptions, Origin, Tok};

/// 200 concurrent requests for one cold key reach the origin once (the cache lock coalesces
/// them); all 200 get the body.
#[tokio::test]
async fn concurrent_misses_for_one_cold_key_reach_the_origin_once() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    origin.set_delay(Duration::from_millis(300));
    let edge = Edge::start(&origin, &[&key]);
    let client = pooled_client();
    let sub = tokens::subscriber(&key, "alice");

    for (path, tok) in [
        ("/news/cold", Tok::None),
        ("/premium/cold", Tok::Bearer(&sub)),
    ] {
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let rb = request(&client, &edge, path, tok);
            tasks.push(tokio::spawn(send(rb)));
        }
        let mut ok = 0;
        for t in tasks {
            let r = t.await.expect("task");
            assert_eq!(r.status, 200, "{path}: {r:?}");
            if path.starts_with("/premium/") {
                assert!(r.is_full(), "{path}: subscriber must get the full body");
            }
            ok += 1;
        }
        assert_eq!(ok, 200);
        assert_eq!(
            origin.hits(path),
            1,
            "{path}: 200 concurrent misses must reach the origin once"
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

/// A POST is never answered from the cache and never stored, on any route.
#[tokio::test]
async fn unsafe_methods_bypass_the_cache() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let client = support::client();
    get(&edge, "/news/p", Tok::None).await;
    for _ in 0..2 {
        let r = send(client.post(edge.url("/news/p")).body("x")).await;
        assert_eq!(r.cache_status(), "tollgate; fwd=bypass");
    }
    assert_eq!(origin.hits("/news/p"), 3);
}

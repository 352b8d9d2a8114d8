//! HTTP caching semantics (RFC 9111, RFC 9213, RFC 5861) end to end: the behaviours the
//! cache-tests.fyi suite checks (`tests/conformance/cache-tests.sh`), guarded here because the
//! suite itself cannot run in CI. A real origin, the real `tollgate` binary, real clients; each
//! test asserts what a reader sees (status, body, headers, `Cache-Status`) and what the origin
//! received.
//!
//! One limitation is not tested because it is Pingora's: the HTTP layer rewrites `Date` on every
//! response (see README, "HTTP caching conformance").

mod support;

use std::time::{Duration, SystemTime};

use support::tokens;
use support::{client, disk_options, get, send, Edge, EdgeOptions, Origin, Resp, Tok};

const STALE: &str = "tollgate; hit; fwd=stale";

/// A path, the origin's headers for it, and whether a second GET is a hit.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn age(r: &Resp) -> u64 {
    r.header("age").expect("Age").parse().expect("numeric Age")
}

/// GET `path` twice; true when the second answer came from the cache.
async fn second_is_hit(edge: &Edge, path: &str) -> bool {
    get(edge, path, Tok::None).await;
    get(edge, path, Tok::None).await.is_hit()
}

/// The origin's `Age` and `Date` count towards freshness (RFC 9111 §4.2.3), malformed `Age`
/// values are ignored, `Expires` is relative to `Date`, and a hit's `Age` includes the age the
/// response already had when it was stored.
#[tokio::test]
async fn age_and_date_from_the_origin_count_towards_freshness() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let now = SystemTime::now();
    let cc = ("cache-control", "max-age=3600");

    origin.set_override("/news/aged", 200, &[cc, ("age", "7200")], "aged");
    assert!(!second_is_hit(&edge, "/news/aged").await);
    assert_eq!(
        origin.hits("/news/aged"),
        2,
        "older than its max-age: never fresh"
    );

    origin.set_override("/news/young", 200, &[cc, ("age", "30")], "young");
    get(&edge, "/news/young", Tok::None).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = get(&edge, "/news/young", Tok::None).await;
    assert!(hit.is_hit(), "{}", hit.cache_status());
    assert!(
        age(&hit) >= 31,
        "Age {} must include the stored 30 s",
        age(&hit)
    );

    for (path, bad) in [
        ("/news/age-text", "abc"),
        ("/news/age-neg", "-7200"),
        ("/news/age-float", "7200.0"),
    ] {
        origin.set_override(path, 200, &[cc, ("age", bad)], "x");
        assert!(second_is_hit(&edge, path).await, "Age: {bad} is ignored");
    }
    origin.set_override(
        "/news/age-first",
        200,
        &[cc, ("age", "7200, 0")],
        "first member counts",
    );
    assert!(!second_is_hit(&edge, "/news/age-first").await);

    let old = http_date(now - Duration::from_secs(7200));
    origin.set_override("/news/old-date", 200, &[cc, ("date", &old)], "old");
    assert!(
        !second_is_hit(&edge, "/news/old-date").await,
        "apparent age"
    );

    // Date 10 s fast, Expires 10 s after it: 10 s of freshness, already used up by Age: 15
    let date = http_date(now + Duration::from_secs(10));
    let expires = http_date(now + Duration::from_secs(20));
    let h = [("date", date.as_str()), ("expires", expires.as_str())];
    origin.set_override("/news/exp-aged", 200, &[h[0], h[1], ("age", "15")], "x");
    assert!(!second_is_hit(&edge, "/news/exp-aged").await);
    origin.set_override("/news/exp-fresh", 200, &h, "x");
    assert!(second_is_hit(&edge, "/news/exp-fresh").await);
}

/// `CDN-Cache-Control` (RFC 9213) and the edge's own `Tollgate-Cache-Control` decide over
/// `Cache-Control` and `Expires`; an invalid one is ignored as a whole.
#[tokio::test]
async fn targeted_cache_control_takes_precedence() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let cases: [Case; 6] = [
        (
            "/news/cdn-fresh",
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=600"),
            ],
            true,
        ),
        (
            "/news/cdn-nostore",
            &[
                ("cache-control", "max-age=600"),
                ("cdn-cache-control", "no-store"),
            ],
            false,
        ),
        (
            "/news/cdn-private",
            &[
                ("cache-control", "max-age=600"),
                ("cdn-cache-control", "private"),
            ],
            false,
        ),
        (
            "/news/cdn-invalid",
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=\"600\""),
            ],
            false,
        ),
        (
            "/news/cdn-zero",
            &[
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("cdn-cache-control", "max-age=0"),
            ],
            false,
        ),
        (
            "/news/own-field",
            &[
                ("tollgate-cache-control", "max-age=600"),
                ("cdn-cache-control", "no-store"),
            ],
            true,
        ),
    ];
    for (path, headers, hit) in cases {
        origin.set_override(path, 200, headers, "x");
        assert_eq!(second_is_hit(&edge, path).await, hit, "{path} {headers:?}");
    }
    // a short CDN-Cache-Control beats a long Cache-Control
    origin.set_override(
        "/news/cdn-short",
        200,
        &[
            ("cache-control", "max-age=3600"),
            ("cdn-cache-control", "max-age=1"),
        ],
        "x",
    );
    assert!(second_is_hit(&edge, "/news/cdn-short").await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(!get(&edge, "/news/cdn-short", Tok::None).await.is_hit());
    assert_eq!(origin.hits("/news/cdn-short"), 2);
}

/// `Vary: *`, alone, inside a list or on a line of its own, is never stored.
#[tokio::test]
async fn vary_star_in_any_list_form_is_never_stored() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let cc = ("cache-control", "max-age=600");
    let forms: [&[(&str, &str)]; 3] = [
        &[cc, ("vary", "*")],
        &[cc, ("vary", "accept-language, *")],
        &[cc, ("vary", "accept-language"), ("vary", "*")],
    ];
    for (i, headers) in forms.iter().enumerate() {
        let path = format!("/news/vary-{i}");
        origin.set_override(&path, 200, headers, "x");
        assert!(!second_is_hit(&edge, &path).await, "{headers:?}");
        assert_eq!(origin.hits(&path), 2);
    }
    // an ordinary Vary still caches, per request header value
    origin.set_override(
        "/news/vary-lang",
        200,
        &[cc, ("vary", "accept-language")],
        "x",
    );
    let c = client();
    let lang = |v: &'static str| {
        c.get(edge.url("/news/vary-lang"))
            .header("accept-language", v)
    };
    send(lang("en")).await;
    assert!(send(lang("en")).await.is_hit());
    assert!(!send(lang("fr")).await.is_hit());
}

/// `stale-while-revalidate` serves the stored response at once and refreshes it in the
/// background; the refreshed response is what the next reader gets.
#[tokio::test]
async fn stale_while_revalidate_refreshes_in_the_background() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let h = [
        ("cache-control", "max-age=1, stale-while-revalidate=60"),
        ("etag", "\"v1\""),
    ];
    origin.set_override("/news/swr", 200, &h, "version-1");
    get(&edge, "/news/swr", Tok::None).await;
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // (the refreshed response stays fresh for the rest of the test, however slow the machine)
    let v2 = [
        ("cache-control", "max-age=60, stale-while-revalidate=60"),
        ("etag", "\"v2\""),
    ];
    origin.set_override("/news/swr", 200, &v2, "version-2");
    let stale = get(&edge, "/news/swr", Tok::None).await;
    assert_eq!(stale.cache_status(), STALE);
    assert_eq!(stale.body, "version-1");
    let refreshed = support::eventually(Duration::from_secs(10), || async {
        origin.hits("/news/swr") == 2
    })
    .await;
    assert!(refreshed, "the background revalidation reached the origin");
    // the origin counts the request when it arrives, and the edge stores the answer after
    // that: a reader in between still gets the stale copy (CI met one)
    let stored = support::eventually(Duration::from_secs(10), || async {
        get(&edge, "/news/swr", Tok::None).await.cache_status() != STALE
    })
    .await;
    assert!(stored, "the refreshed response was stored");
    let fresh = get(&edge, "/news/swr", Tok::None).await;
    assert!(
        fresh.is_hit() && fresh.cache_status() != STALE,
        "{}",
        fresh.cache_status()
    );
    assert_eq!(fresh.body, "version-2");
    assert_eq!(origin.hits("/news/swr"), 2);
}

/// Stale on error: a 5xx only under `stale-if-error`; an unreachable origin unless the response
/// forbids stale (`must-revalidate`, `proxy-revalidate`, `no-cache`, `s-maxage`).
#[tokio::test]
async fn stale_if_error_and_when_the_origin_is_down() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let paths = [
        ("/news/sie", "max-age=1, stale-if-error=60"),
        ("/news/plain", "max-age=1"),
        ("/news/mr", "max-age=1, must-revalidate"),
        ("/news/pr", "max-age=1, proxy-revalidate"),
        ("/news/nc", "max-age=1, no-cache"),
        ("/news/sm", "s-maxage=1"),
    ];
    for (path, cc) in paths {
        origin.set_override(path, 200, &[("cache-control", cc)], "stored-body");
        assert_eq!(get(&edge, path, Tok::None).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1600)).await;

    for (path, _) in &paths[..2] {
        origin.set_override(path, 503, &[], "origin-error");
    }
    let r = get(&edge, "/news/sie", Tok::None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "stored-body"));
    let r = get(&edge, "/news/plain", Tok::None).await;
    assert_eq!((r.status, r.body.as_str()), (503, "origin-error"));

    drop(origin);
    let r = get(&edge, "/news/plain", Tok::None).await;
    assert_eq!(
        (r.status, r.body.as_str(), r.cache_status()),
        (200, "stored-body", STALE),
        "origin unreachable: stale is served"
    );
    for (path, cc) in &paths[2..] {
        let r = get(&edge, path, Tok::None).await;
        assert!(
            r.status >= 500,
            "{cc}: no stale when disconnected, got {}",
            r.status
        );
        assert_ne!(r.body, "stored-body", "{cc}");
    }
}

/// A `304` updates the stored header fields (all but framing) in memory and on disk, and the
/// response is served fresh again with them, its age counted from the `304`.
#[tokio::test]
async fn a_304_updates_the_stored_headers_in_both_tiers() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", dir.path(), "256MiB", "16MiB"),
    );
    origin.set_override(
        "/news/r",
        200,
        &[
            ("cache-control", "max-age=1"),
            ("age", "100"),
            ("etag", "\"v1\""),
            ("x-test", "a"),
            ("content-foo", "a"),
        ],
        "body-v1",
    );
    get(&edge, "/news/r", Tok::None).await;
    let (_, on_disk) = edge
        .poll_metric(
            "tollgate_cache_objects",
            &[("tier", "disk")],
            Duration::from_secs(10),
            |v| v >= 1.0,
        )
        .await;
    assert!(on_disk);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    origin.set_override(
        "/news/r",
        304,
        &[
            ("cache-control", "max-age=3600"),
            ("etag", "\"v1\""),
            ("x-test", "b"),
            ("content-foo", "b"),
        ],
        "",
    );
    let r = get(&edge, "/news/r", Tok::None).await;
    assert_eq!((r.status, r.body.as_str()), (200, "body-v1"));
    assert_eq!(r.header("x-test"), Some("b"));
    assert_eq!(r.header("content-foo"), Some("b"));
    assert_eq!(r.header("content-length"), Some("7"));
    assert!(
        age(&r) < 5,
        "age counts from the 304, not the old Age: {}",
        age(&r)
    );
    let conditional = origin.last_for("/news/r").unwrap();
    assert_eq!(
        conditional.header("if-none-match").as_deref(),
        Some("\"v1\"")
    );

    let hit = get(&edge, "/news/r", Tok::None).await;
    assert!(
        hit.is_hit(),
        "fresh again for an hour: {}",
        hit.cache_status()
    );
    assert_eq!(hit.header("x-test"), Some("b"));
    assert!(age(&hit) < 5, "{}", age(&hit));

    edge.restart_cold(dir.path());
    let from_disk = get(&edge, "/news/r", Tok::None).await;
    assert_eq!(from_disk.cache_status(), "tollgate; hit; detail=disk");
    assert_eq!(
        (from_disk.header("x-test"), from_disk.body.as_str()),
        (Some("b"), "body-v1")
    );
    assert_eq!(origin.hits("/news/r"), 2);
}

/// A successful unsafe request invalidates its target (every variant, both tiers, even right
/// after a restart) and the same-host `Location` / `Content-Location`; a failed one does not.
#[tokio::test]
async fn unsafe_requests_invalidate_every_variant_in_both_tiers() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", dir.path(), "256MiB", "16MiB"),
    );
    let sub = tokens::subscriber(&key, "reader-1");
    for p in ["/premium/a", "/premium/b"] {
        assert!(get(&edge, p, Tok::None).await.is_teaser());
        assert!(get(&edge, p, Tok::Bearer(&sub)).await.is_full());
    }
    let (_, on_disk) = edge
        .poll_metric(
            "tollgate_cache_objects",
            &[("tier", "disk")],
            Duration::from_secs(10),
            |v| v >= 4.0,
        )
        .await;
    assert!(on_disk);
    edge.restart_cold(dir.path());
    let b = get(&edge, "/premium/b", Tok::None).await;
    assert_eq!(
        b.cache_status(),
        "tollgate; hit; detail=disk",
        "stored before the restart"
    );

    let c = client();
    let post = send(c.post(edge.url("/premium/a")).body("edit")).await;
    assert_eq!(post.status, 200);
    let anon = get(&edge, "/premium/a", Tok::None).await;
    let full = get(&edge, "/premium/a", Tok::Bearer(&sub)).await;
    assert!(
        anon.is_miss() && anon.is_teaser(),
        "{}",
        anon.cache_status()
    );
    assert!(full.is_miss() && full.is_full(), "{}", full.cache_status());
    assert!(get(&edge, "/premium/b", Tok::Bearer(&sub)).await.is_hit());

    // Location and Content-Location on the same host; an error response invalidates nothing
    let cc = [("cache-control", "max-age=600")];
    for p in ["/news/item", "/news/other", "/news/unrelated"] {
        origin.set_override(p, 200, &cc, p);
        get(&edge, p, Tok::None).await;
    }
    let self_url = edge.url("/news/other");
    origin.set_override(
        "/news/form",
        201,
        &[("location", "/news/item"), ("content-location", &self_url)],
        "created",
    );
    let put = send(c.put(edge.url("/news/form")).body("x")).await;
    assert_eq!(put.status, 201);
    assert!(get(&edge, "/news/item", Tok::None).await.is_miss());
    assert!(get(&edge, "/news/other", Tok::None).await.is_miss());
    assert!(get(&edge, "/news/unrelated", Tok::None).await.is_hit());

    origin.set_override("/news/unrelated", 500, &[], "failed");
    let del = send(c.delete(edge.url("/news/unrelated"))).await;
    assert_eq!(del.status, 500);
    let still = get(&edge, "/news/unrelated", Tok::None).await;
    assert!(still.is_hit(), "{}", still.cache_status());
    assert_eq!(still.body, "/news/unrelated");
}

/// Fields named in `Connection` reach neither the client nor the cache.
#[tokio::test]
async fn connection_listed_fields_are_neither_forwarded_nor_stored() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], EdgeOptions::default());
    origin.set_override(
        "/news/hop",
        200,
        &[
            ("cache-control", "max-age=600"),
            ("connection", "x-hop, x-other-hop"),
            ("x-hop", "1"),
            ("x-other-hop", "2"),
            ("x-kept", "3"),
        ],
        "hop",
    );
    for expect_hit in [false, true] {
        let r = get(&edge, "/news/hop", Tok::None).await;
        assert_eq!(r.is_hit(), expect_hit);
        assert_eq!(r.header("x-kept"), Some("3"));
        assert!(r.header("x-hop").is_none() && r.header("x-other-hop").is_none());
    }
}

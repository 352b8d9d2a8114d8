//! Media tokens at the edge (access mode `token`, seed 002), end to end: a real origin, the real
//! `tollgate` binary, real signed tokens, clients on real loopback addresses.
//!
//! What a viewer, the publisher's origin and an operator would see: which source's token
//! decides, which paths and client addresses a token opens, that a revoked session is refused on
//! its next request (also after a restart, and no longer once the revocation lapses), that a
//! session shared across many addresses revokes itself, that keys rotate without one failed
//! request, and that the origin never sees a token while every viewer shares one cached copy.

mod support;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::tokens;
use support::{
    client, client_from, raw_get, send, write_atomic, Edge, EdgeOptions, Origin, RawResp, Recorded,
    Resp, VARIANT_HEADER,
};
use tollgate::auth::mint::SigningKey;

const AUTH: &str = "tollgate_auth_decisions_total";
const EDGE_403: &str = "tollgate; fwd=bypass; detail=edge";

/// A media route (`/vod/*`, access `token`), a public one, the default source order (path
/// first), a short SIGTERM grace period, and `extra` top-level YAML.
fn media_options(extra: &str) -> EdgeOptions {
    EdgeOptions {
        routes: vec![
            r#"{ match: "/vod/*", origin: news, access: token }"#.into(),
            r#"{ match: "/news/*", origin: news, access: public }"#.into(),
        ],
        token_sources: vec![
            "path".into(),
            "query:token".into(),
            "bearer".into(),
            "cookie:token".into(),
        ],
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(2),
        extra_yaml: extra.into(),
        ..EdgeOptions::default()
    }
}

/// Where a request carries tokens; any combination.
#[derive(Default, Clone, Copy)]
struct Carry<'a> {
    /// First path segment: `[<sid>.]<jwt>` exactly as given.
    path: Option<&'a str>,
    query: Option<&'a str>,
    bearer: Option<&'a str>,
    cookie: Option<&'a str>,
}

fn target(path: &str, carry: Carry<'_>) -> String {
    let mut t = match carry.path {
        Some(seg) => format!("/{seg}{path}"),
        None => path.to_owned(),
    };
    if let Some(q) = carry.query {
        t.push_str(if t.contains('?') { "&" } else { "?" });
        t.push_str("token=");
        t.push_str(q);
    }
    t
}

async fn fetch_with(c: &reqwest::Client, edge: &Edge, path: &str, carry: Carry<'_>) -> Resp {
    let mut rb = c.get(edge.url(&target(path, carry)));
    if let Some(b) = carry.bearer {
        rb = rb.bearer_auth(b);
    }
    if let Some(k) = carry.cookie {
        rb = rb.header("cookie", format!("lang=en; token={k}"));
    }
    send(rb).await
}

async fn fetch(edge: &Edge, path: &str, carry: Carry<'_>) -> Resp {
    fetch_with(&client(), edge, path, carry).await
}

/// A path token carrying nothing else.
fn in_path(seg: &str) -> Carry<'_> {
    Carry {
        path: Some(seg),
        ..Carry::default()
    }
}

/// The edge refused the request itself: 403, `forbidden`, the edge's `Cache-Status`.
#[track_caller]
fn assert_refused(r: &Resp, what: &str) {
    assert_eq!(r.status, 403, "{what}: expected 403, got {r:?}");
    assert_eq!(r.body, "forbidden\n", "{what}: 403 body");
    assert_eq!(r.cache_status(), EDGE_403, "{what}: Cache-Status");
}

/// A 200 with the origin's page for `origin_path` (the token-free path the origin rendered).
#[track_caller]
fn assert_served(r: &Resp, origin_path: &str, what: &str) {
    assert_eq!(r.status, 200, "{what}: expected 200, got {r:?}");
    assert_eq!(r.body, format!("PAGE:{origin_path}\n"), "{what}: body");
}

#[track_caller]
fn assert_raw_refused(r: &RawResp, what: &str) {
    assert_eq!(r.status, 403, "{what}: expected 403, got {r:?}");
    assert_eq!(r.body, "forbidden\n", "{what}: body");
    assert_eq!(
        r.header("cache-status"),
        Some(EDGE_403),
        "{what}: Cache-Status"
    );
}

/// Nothing the origin received carries a token or any part of one.
#[track_caller]
fn assert_token_free(reqs: &[Recorded], toks: &[&String]) {
    assert!(!reqs.is_empty(), "the origin saw no request at all");
    for r in reqs {
        for t in toks {
            assert!(!r.mentions(t), "the origin received a token: {r:?}");
            // the signature alone is unique to the token too
            let sig = t.rsplit('.').next().unwrap();
            assert!(
                !r.mentions(sig),
                "the origin received a token signature: {r:?}"
            );
        }
        assert!(
            !r.uri.contains("eyJ"),
            "a JWT reached the origin in {:?}",
            r.uri
        );
        assert!(
            r.query.as_deref().is_none_or(|q| !q.contains("token")),
            "a token parameter reached the origin: {:?}",
            r.uri
        );
        assert!(
            r.header("authorization").is_none(),
            "the bearer token reached the origin: {r:?}"
        );
        assert!(
            r.header_all("cookie").iter().all(|c| !c.contains("token=")),
            "the token cookie reached the origin: {r:?}"
        );
    }
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

// ---------------------------------------------------------------------------------------------
// 1. Sources and precedence
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_first_source_carrying_a_token_decides_and_a_bad_one_never_falls_back() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], media_options(""));
    let p = "/vod/abc/index.m3u8";

    let good = tokens::media(&key, None, &["/vod/abc"], None, 3600);
    // Valid, but for another title: refused here by its scope, not its signature.
    let elsewhere = tokens::media(&key, None, &["/vod/zzz"], None, 3600);
    let forged = tokens::forged(&key);
    let expired = tokens::expired(&key);
    let with_sid = tokens::media(&key, Some("s-1"), &["/vod/abc"], None, 3600);
    let all = [&good, &elsewhere, &forged, &expired, &with_sid];

    let none = Carry::default();
    let cases: Vec<(&str, Carry<'_>, bool)> = vec![
        (
            "good path token, out-of-scope query token",
            Carry {
                path: Some(&good),
                query: Some(&elsewhere),
                ..none
            },
            true,
        ),
        (
            "good path token, forged query, bearer and cookie",
            Carry {
                path: Some(&good),
                query: Some(&forged),
                bearer: Some(&forged),
                cookie: Some(&forged),
            },
            true,
        ),
        (
            "out-of-scope path token, good query token: no fallback",
            Carry {
                path: Some(&elsewhere),
                query: Some(&good),
                ..none
            },
            false,
        ),
        (
            "expired path token, good query, bearer and cookie: no fallback",
            Carry {
                path: Some(&expired),
                query: Some(&good),
                bearer: Some(&good),
                cookie: Some(&good),
            },
            false,
        ),
        (
            "forged path token, good query token",
            Carry {
                path: Some(&forged),
                query: Some(&good),
                ..none
            },
            false,
        ),
        (
            "good query token, forged bearer",
            Carry {
                query: Some(&good),
                bearer: Some(&forged),
                ..none
            },
            true,
        ),
        (
            "forged query token, good bearer",
            Carry {
                query: Some(&forged),
                bearer: Some(&good),
                ..none
            },
            false,
        ),
        (
            "good bearer, expired cookie",
            Carry {
                bearer: Some(&good),
                cookie: Some(&expired),
                ..none
            },
            true,
        ),
        (
            "expired bearer, good cookie",
            Carry {
                bearer: Some(&expired),
                cookie: Some(&good),
                ..none
            },
            false,
        ),
        (
            "good cookie alone",
            Carry {
                cookie: Some(&good),
                ..none
            },
            true,
        ),
        (
            "out-of-scope cookie alone",
            Carry {
                cookie: Some(&elsewhere),
                ..none
            },
            false,
        ),
        (
            "good bearer alone",
            Carry {
                bearer: Some(&good),
                ..none
            },
            true,
        ),
        (
            "good query alone",
            Carry {
                query: Some(&good),
                ..none
            },
            true,
        ),
        ("no token anywhere", none, false),
    ];
    for (what, carry, ok) in cases {
        let before = origin.total();
        let r = fetch(&edge, p, carry).await;
        if ok {
            assert_served(&r, p, what);
            assert_eq!(r.header("cache-control"), Some("private"), "{what}");
        } else {
            assert_refused(&r, what);
            assert_eq!(
                origin.total(),
                before,
                "{what}: the origin must not be asked"
            );
        }
    }

    // `<sid>.` in front of a path token is unsigned: it may repeat the signed sid, never differ.
    let malformed = edge.metric(AUTH, &[("result", "malformed")]).await;
    let same = format!("s-1.{with_sid}");
    assert_served(
        &fetch(&edge, p, in_path(&same)).await,
        p,
        "matching sid prefix",
    );
    let other = format!("s-2.{with_sid}");
    let r = fetch(
        &edge,
        p,
        Carry {
            path: Some(&other),
            query: Some(&good),
            ..none
        },
    )
    .await;
    assert_refused(&r, "sid prefix that differs from the signed sid");
    assert_eq!(
        edge.metric(AUTH, &[("result", "malformed")]).await,
        malformed + 1.0,
        "a sid prefix that differs from the signed sid counts as malformed"
    );

    // Every accepted viewer shared one cached copy.
    assert_eq!(origin.hits(p), 1, "one origin fetch for every viewer");
    // Other cookies pass to the origin, the token cookie does not.
    let q = "/vod/abc/cookie.ts";
    assert_served(
        &fetch(
            &edge,
            q,
            Carry {
                cookie: Some(&good),
                ..none
            },
        )
        .await,
        q,
        "cookie",
    );
    assert_eq!(
        origin.last_for(q).unwrap().header("cookie").as_deref(),
        Some("lang=en")
    );
    // The origin saw no token of any kind.
    assert_eq!(origin.total(), 2);
    let seen = origin.requests();
    assert_token_free(&seen, &all);
    assert_eq!(
        seen[0].uri, p,
        "the origin got the stripped path, no token query"
    );
    assert_eq!(
        seen[0].header(VARIANT_HEADER).as_deref(),
        Some("subscriber")
    );
    let m = edge.metrics().await;
    for (label, at_least) in [
        ("wrong_path", 2.0),
        ("expired", 2.0),
        ("bad_signature", 2.0),
        ("missing", 1.0),
    ] {
        let v = support::metric(&m, AUTH, &[("result", label)]);
        assert!(
            v >= at_least,
            "{AUTH}{{result={label}}} = {v}, want ≥ {at_least}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. `paths` scope
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn paths_match_on_segment_boundaries_after_normalization() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], media_options(""));
    let abc = tokens::media(&key, None, &["/vod/abc"], None, 3600);
    let below = tokens::media(&key, None, &["/vod/abc/"], None, 3600);
    let two = tokens::media(&key, None, &["/vod/a/", "/vod/b"], None, 3600);
    let whole = tokens::media(&key, None, &[], None, 3600);
    let wrong_path = edge.metric(AUTH, &[("result", "wrong_path")]).await;
    let mut refused_for_scope = 0.0;

    let cases: Vec<(&String, &str, bool)> = vec![
        (&abc, "/vod/abc/index.m3u8", true),
        (&abc, "/vod/abc", true),
        (&abc, "/vod/abc/v0/seg1.ts", true),
        (&abc, "/vod/abcdef/index.m3u8", false),
        (&abc, "/vod/abc-x", false),
        (&abc, "/vod/ab", false),
        (&abc, "/vod/other/abc/index.m3u8", false),
        (&below, "/vod/abc/deep/er/seg.ts", true),
        (&below, "/vod/abcdef/seg.ts", false),
        (&two, "/vod/a/1.ts", true),
        (&two, "/vod/b", true),
        (&two, "/vod/b/2.ts", true),
        (&two, "/vod/bb/2.ts", false),
        (&two, "/vod/c/3.ts", false),
        (&whole, "/vod/anything/at/all.ts", true),
        (&whole, "/vod/abcdef/index.m3u8", true),
    ];
    for (tok, path, ok) in cases {
        let what = format!(
            "{path} with paths of token #{}",
            [&abc, &below, &two, &whole]
                .iter()
                .position(|t| *t == tok)
                .unwrap()
        );
        let before = origin.total();
        let r = fetch(&edge, path, in_path(tok)).await;
        if ok {
            assert_served(&r, path, &what);
        } else {
            assert_refused(&r, &what);
            assert_eq!(
                origin.total(),
                before,
                "{what}: the origin must not be asked"
            );
            refused_for_scope += 1.0;
        }
    }
    assert_eq!(
        edge.metric(AUTH, &[("result", "wrong_path")]).await,
        wrong_path + refused_for_scope,
        "each out-of-scope request counts as wrong_path"
    );

    // Dot segments are resolved before the scope check, whichever source carries the token.
    let before = origin.total();
    let escapes = [
        format!("/{abc}/vod/abc/../abcdef/x"),
        format!("/{abc}/vod/abc/%2E%2E/abcdef/x"),
        format!("/{abc}/vod/abc/./../abcdef/x"),
        format!("/vod/abc/../abcdef/x?token={abc}"),
        // `..` may even consume the token segment: what is left carries no token at all
        format!("/{abc}/../vod/abcdef/x"),
    ];
    for t in &escapes {
        let r = raw_get(edge.port, t, &[]).expect("raw request");
        assert_raw_refused(&r, t);
    }
    let bearer = format!("Bearer {abc}");
    let r = raw_get(
        edge.port,
        "/vod/abc/../abcdef/x",
        &[("authorization", &bearer)],
    )
    .unwrap();
    assert_raw_refused(&r, "bearer token, /vod/abc/../abcdef/x");
    assert_eq!(
        origin.total(),
        before,
        "no escape attempt reached the origin"
    );
    assert_eq!(origin.hits("/vod/abcdef/x"), 0);

    // A `..` that stays inside the scope is fine, and the origin sees the normalized path.
    let r = raw_get(edge.port, &format!("/{abc}/vod/abc/v9/../seg.ts"), &[]).unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body, "PAGE:/vod/abc/seg.ts\n");
    assert_eq!(
        origin.last_for("/vod/abc/seg.ts").unwrap().uri,
        "/vod/abc/seg.ts"
    );

    // Percent-encoded letters are decoded before the scope check, in both directions.
    let r = raw_get(edge.port, &format!("/{abc}/vod/%61bc/index.m3u8"), &[]).unwrap();
    assert_eq!(r.status, 200, "/vod/%61bc is /vod/abc: {r:?}");
    let r = raw_get(edge.port, &format!("/{abc}/vod/abc%64ef/x"), &[]).unwrap();
    assert_raw_refused(&r, "/vod/abc%64ef/x is /vod/abcdef/x");

    // Encoded slashes are refused outright, before any token is looked at.
    for t in [
        format!("/{abc}/vod/abc%2F..%2Fabcdef/x"),
        format!("/{abc}/vod/abc%2fx"),
        format!("/vod/abc%2F..%2Fabcdef/x?token={abc}"),
    ] {
        let r = raw_get(edge.port, &t, &[]).unwrap();
        assert_eq!(r.status, 400, "{t}: {r:?}");
    }
    assert_eq!(
        origin.total(),
        before + 1,
        "only the in-scope request reached the origin"
    );
    assert_token_free(&origin.requests(), &[&abc, &below, &two, &whole]);

    // Scope claims the edge cannot read open nothing (fail closed), never everything.
    let malformed = edge.metric(AUTH, &[("result", "malformed")]).await;
    for (what, claim) in [
        ("paths as a string", serde_json::json!("/vod/abc")),
        ("paths empty", serde_json::json!([])),
        ("paths with a number", serde_json::json!(["/vod/abc", 7])),
    ] {
        let mut c = tokens::claims("viewer", &[], 3600);
        c["paths"] = claim;
        let tok = tokens::sign(&key, &c);
        assert_refused(
            &fetch(&edge, "/vod/abc/index.m3u8", in_path(&tok)).await,
            what,
        );
    }
    assert_eq!(
        edge.metric(AUTH, &[("result", "malformed")]).await,
        malformed + 3.0
    );
    let mut c = tokens::claims("viewer", &[], 3600);
    c["ip"] = serde_json::json!("somewhere");
    let tok = tokens::sign(&key, &c);
    assert_refused(
        &fetch(&edge, "/vod/abc/index.m3u8", in_path(&tok)).await,
        "an ip claim that is not an address",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. `ip` binding
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn ip_bound_tokens_work_only_from_their_address_or_network() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], media_options(""));
    let p = "/vod/ip/index.m3u8";
    let one = tokens::media(&key, None, &[], Some("127.0.0.1"), 3600);
    let net = tokens::media(&key, None, &[], Some("127.0.0.0/30"), 3600);
    let mapped = tokens::media(&key, None, &[], Some("::ffff:127.0.0.1"), 3600);
    let v6 = tokens::media(&key, None, &[], Some("::1"), 3600);
    let unbound = tokens::media(&key, None, &[], None, 3600);
    let wrong_ip = edge.metric(AUTH, &[("result", "wrong_ip")]).await;

    let cases: Vec<(&str, &String, u8, bool)> = vec![
        ("ip 127.0.0.1", &one, 1, true),
        ("ip 127.0.0.1", &one, 2, false),
        ("ip 127.0.0.0/30", &net, 1, true),
        ("ip 127.0.0.0/30", &net, 2, true),
        ("ip 127.0.0.0/30", &net, 3, true),
        ("ip 127.0.0.0/30", &net, 4, false),
        ("ip 127.0.0.0/30", &net, 5, false),
        ("ip ::ffff:127.0.0.1 (IPv4-mapped)", &mapped, 1, true),
        ("ip ::ffff:127.0.0.1 (IPv4-mapped)", &mapped, 2, false),
        ("ip ::1", &v6, 1, false),
        ("no ip claim", &unbound, 9, true),
    ];
    let mut refused = 0.0;
    for (what, tok, from, ok) in cases {
        let what = format!("{what} from 127.0.0.{from}");
        let r = fetch_with(&client_from(loopback(from)), &edge, p, in_path(tok)).await;
        if ok {
            assert_served(&r, p, &what);
        } else {
            assert_refused(&r, &what);
            refused += 1.0;
        }
    }
    // The client address is the TCP peer: forwarding headers a client sends change nothing.
    let spoofed = client_from(loopback(2))
        .get(edge.url(&format!("/{one}{p}")))
        .header("x-forwarded-for", "127.0.0.1")
        .header("x-real-ip", "127.0.0.1")
        .header("forwarded", "for=127.0.0.1");
    assert_refused(
        &send(spoofed).await,
        "ip 127.0.0.1 from 127.0.0.2 claiming 127.0.0.1",
    );
    refused += 1.0;
    assert_eq!(
        edge.metric(AUTH, &[("result", "wrong_ip")]).await,
        wrong_ip + refused,
        "each refusal counts as wrong_ip"
    );
    assert_eq!(origin.hits(p), 1, "accepted viewers share the cached copy");
}

#[tokio::test]
async fn ip_bound_tokens_over_ipv6() {
    // The edge listens on [::1] too. Without IPv6 loopback this test cannot run: say so loudly
    // and fail, unless the operator opted out explicitly.
    let port6 = match std::net::TcpListener::bind("[::1]:0") {
        Ok(l) => l.local_addr().unwrap().port(),
        Err(e) => {
            let msg = format!(
                "IPv6 loopback [::1] is not usable on this machine ({e}): the IPv6 part of ip \
                 binding could NOT be tested"
            );
            if std::env::var_os("TOLLGATE_TEST_NO_IPV6").is_some() {
                eprintln!("!!!!! SKIPPED: {msg} (TOLLGATE_TEST_NO_IPV6 is set) !!!!!");
                return;
            }
            panic!("{msg}. Set TOLLGATE_TEST_NO_IPV6=1 to skip it knowingly.");
        }
    };
    // And on [::] (dual stack, as most deployments listen): IPv4 clients arrive there as
    // IPv4-mapped addresses (::ffff:127.0.0.1).
    let dual = std::net::TcpListener::bind("[::]:0")
        .expect("bind [::]:0")
        .local_addr()
        .unwrap()
        .port();
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(
        &origin,
        &[&key],
        EdgeOptions {
            extra_listeners: vec![format!("[::1]:{port6}"), format!("[::]:{dual}")],
            ..media_options("")
        },
    );
    let p = "/vod/v6/index.m3u8";
    let v6_url = |tok: &str| format!("http://[::1]:{port6}/{tok}{p}");
    let get6 = |url: String| async move { send(client().get(url)).await };

    let exact = tokens::media(&key, None, &[], Some("::1"), 3600);
    let host_net = tokens::media(&key, None, &[], Some("::1/128"), 3600);
    let long_form = tokens::media(&key, None, &[], Some("0:0:0:0:0:0:0:1"), 3600);
    let wide = tokens::media(&key, None, &[], Some("::/64"), 3600);
    let other = tokens::media(&key, None, &[], Some("::2"), 3600);
    let v4 = tokens::media(&key, None, &[], Some("127.0.0.1"), 3600);
    let doc_net = tokens::media(&key, None, &[], Some("2001:db8::/32"), 3600);

    for (what, tok) in [
        ("ip ::1", &exact),
        ("ip ::1/128", &host_net),
        ("ip 0:0:0:0:0:0:0:1", &long_form),
        ("ip ::/64", &wide),
    ] {
        let r = get6(v6_url(tok)).await;
        assert_served(&r, p, &format!("{what} from [::1]"));
    }
    let wrong_ip = edge.metric(AUTH, &[("result", "wrong_ip")]).await;
    for (what, tok) in [
        ("ip ::2", &other),
        ("ip 127.0.0.1", &v4),
        ("ip 2001:db8::/32", &doc_net),
    ] {
        let r = get6(v6_url(tok)).await;
        assert_refused(&r, &format!("{what} from [::1]"));
    }
    // and the IPv6-bound token is no good from 127.0.0.1
    assert_refused(
        &fetch(&edge, p, in_path(&exact)).await,
        "ip ::1 from 127.0.0.1",
    );
    assert_eq!(
        edge.metric(AUTH, &[("result", "wrong_ip")]).await,
        wrong_ip + 4.0
    );
    assert_eq!(origin.hits(p), 1);
    let seen = origin.last_for(p).unwrap();
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("::1"));

    // Through the dual-stack listener an IPv4 client is still 127.0.0.1 to its token.
    let mapped = tokens::media(&key, None, &[], Some("::ffff:127.0.0.1"), 3600);
    let v4_net = tokens::media(&key, None, &[], Some("127.0.0.0/8"), 3600);
    let dual_url = |tok: &str| format!("http://127.0.0.1:{dual}/{tok}{p}");
    for (what, tok) in [
        ("ip 127.0.0.1", &v4),
        ("ip 127.0.0.0/8", &v4_net),
        ("ip ::ffff:127.0.0.1", &mapped),
    ] {
        let r = get6(dual_url(tok)).await;
        assert_served(&r, p, &format!("{what} from 127.0.0.1 via [::]:{dual}"));
    }
    let r = get6(dual_url(&exact)).await;
    assert_refused(&r, "ip ::1 from 127.0.0.1 via [::]");
    // (another Host, so another cache entry)
    assert_eq!(origin.hits(p), 2);
}

// ---------------------------------------------------------------------------------------------
// 4. Revocation by the operator
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn revoked_sessions_are_refused_survive_a_restart_and_lapse_after_their_ttl() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        media_options("state_dir: state\nrevocation: { default_ttl: 1d }\n"),
    );
    let p = "/vod/rev/seg0.ts";
    let s42 = tokens::media(&key, Some("s-42"), &["/vod/rev/"], None, 3600);
    let s43 = tokens::media(&key, Some("s-43"), &["/vod/rev/"], None, 3600);
    let s44 = tokens::media(&key, Some("s-44"), &["/vod/rev/"], None, 3600);
    let s45 = tokens::media(&key, Some("s-45"), &["/vod/rev/"], None, 3600);
    let (seg42, seg43) = (format!("s-42.{s42}"), format!("s-43.{s43}"));
    for seg in [&seg42, &seg43] {
        assert_served(
            &fetch(&edge, p, in_path(seg)).await,
            p,
            "before any revocation",
        );
    }

    // Without the admin token nothing is revoked.
    let r = client()
        .post(edge.admin_url("/admin/revoke"))
        .header("content-type", "application/json")
        .body(r#"{"sid": "s-42"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_served(
        &fetch(&edge, p, in_path(&seg42)).await,
        p,
        "after an unauthorized revoke",
    );
    // Nonsense is refused with 400 and revokes nothing.
    for body in [
        r#"{"sid": ""}"#,
        r#"{"sid": "s-42", "ttl_seconds": -5}"#,
        r#"{"sids": ["s-42"]}"#,
        "s-42",
    ] {
        let r = client()
            .post(edge.admin_url("/admin/revoke"))
            .bearer_auth(&edge.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "revoke with {body}");
    }
    assert!(edge.revocations().await.is_empty());
    assert_served(
        &fetch(&edge, p, in_path(&seg42)).await,
        p,
        "after bad revoke requests",
    );

    let revoked_before = edge.metric(AUTH, &[("result", "revoked")]).await;
    let t0 = tokens::now();
    let (status, answer) = edge.revoke("s-42", Some(3600)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["revoked"], "s-42", "{answer}");
    let expires_42 = answer["expires_at"]
        .as_i64()
        .unwrap_or_else(|| panic!("{answer}"));
    assert!(
        (t0 + 3600..=tokens::now() + 3600).contains(&expires_42),
        "expires_at {expires_42} is not now + 3600 (now = {t0})"
    );

    // The next request of s-42 is refused, though the object is cached; any token of the
    // session, from any source, is refused. Another session still plays.
    assert_refused(
        &fetch(&edge, p, in_path(&seg42)).await,
        "revoked session, cached object",
    );
    assert_refused(
        &fetch(&edge, "/vod/rev/seg1.ts", in_path(&s42)).await,
        "revoked, no sid prefix",
    );
    let fresh42 = tokens::media(&key, Some("s-42"), &["/vod/rev/"], None, 600);
    assert_refused(
        &fetch(
            &edge,
            p,
            Carry {
                query: Some(&fresh42),
                ..Carry::default()
            },
        )
        .await,
        "a newly minted token of the revoked session",
    );
    assert_served(
        &fetch(&edge, p, in_path(&seg43)).await,
        p,
        "another session",
    );
    assert_eq!(
        edge.metric(AUTH, &[("result", "revoked")]).await,
        revoked_before + 3.0
    );
    assert_eq!(edge.metric("tollgate_revoked_sessions", &[]).await, 1.0);

    // Without ttl_seconds: revocation.default_ttl (1d).
    let (status, answer) = edge.revoke("s-44", None).await;
    assert_eq!(status, 200, "{answer}");
    let expires_44 = answer["expires_at"].as_i64().unwrap();
    assert!(
        (t0 + 86_400..=tokens::now() + 86_400).contains(&expires_44),
        "default TTL: expires_at {expires_44}, now {t0}"
    );
    let list = edge.revocations().await;
    let entry =
        |list: &[serde_json::Value], sid: &str| list.iter().find(|e| e["sid"] == sid).cloned();
    let e42 = entry(&list, "s-42").unwrap_or_else(|| panic!("s-42 not listed: {list:?}"));
    assert_eq!(e42["reason"], "admin", "{e42}");
    assert_eq!(e42["expires_at"].as_i64(), Some(expires_42), "{e42}");
    assert!(entry(&list, "s-44").is_some(), "{list:?}");
    assert!(entry(&list, "s-43").is_none(), "{list:?}");
    let state = std::fs::read_to_string(edge.dir().join("state/revocations.json"))
        .expect("state_dir/revocations.json written");
    assert!(state.contains("s-42") && state.contains("s-44"), "{state}");

    // A restart on the same state_dir keeps both revocations.
    edge.restart();
    assert_refused(
        &fetch(&edge, p, in_path(&seg42)).await,
        "s-42 after a restart",
    );
    assert_refused(
        &fetch(&edge, p, in_path(&s44)).await,
        "s-44 after a restart",
    );
    assert_served(
        &fetch(&edge, p, in_path(&seg43)).await,
        p,
        "s-43 after a restart",
    );
    let list = edge.revocations().await;
    assert_eq!(
        entry(&list, "s-42").map(|e| e["expires_at"].clone()),
        Some(expires_42.into()),
        "{list:?}"
    );
    assert_eq!(
        entry(&list, "s-44").map(|e| e["expires_at"].clone()),
        Some(expires_44.into()),
        "{list:?}"
    );
    assert_eq!(edge.metric("tollgate_revoked_sessions", &[]).await, 2.0);
    // Even a crash (SIGKILL right after the revocation) keeps it: it was saved when answered.
    let (status, _) = edge.revoke("s-46", Some(3600)).await;
    assert_eq!(status, 200);
    edge.kill_hard();
    edge.start_again();
    let s46 = tokens::media(&key, Some("s-46"), &["/vod/rev/"], None, 3600);
    assert_refused(&fetch(&edge, p, in_path(&s46)).await, "s-46 after kill -9");
    assert_refused(
        &fetch(&edge, p, in_path(&seg42)).await,
        "s-42 after kill -9",
    );
    assert_eq!(edge.revocations().await.len(), 3);

    // A short revocation lapses: refused now, served again a little after its TTL.
    assert_served(&fetch(&edge, p, in_path(&s45)).await, p, "s-45 before");
    let (status, answer) = edge.revoke("s-45", Some(2)).await;
    assert_eq!(status, 200, "{answer}");
    let revoked_at = Instant::now();
    assert_refused(
        &fetch(&edge, p, in_path(&s45)).await,
        "s-45 just revoked for 2 s",
    );
    let back = support::eventually(Duration::from_secs(8), || async {
        fetch(&edge, p, in_path(&s45)).await.status == 200
    })
    .await;
    assert!(back, "s-45 still refused 8 s after a 2 s revocation");
    // Revocations expire on the whole-second clock: a 2 s TTL set late in a second lapses
    // between 1 and 2 s later, never sooner.
    assert!(
        revoked_at.elapsed() >= Duration::from_secs(1),
        "s-45 played again after {:?}: a 2 s TTL on the whole-second clock lasts at least 1 s",
        revoked_at.elapsed()
    );
    // The housekeeping sweep (every reload interval) drops it from the list and the gauge.
    let gone = support::eventually(Duration::from_secs(5), || async {
        entry(&edge.revocations().await, "s-45").is_none()
            && edge.metric("tollgate_revoked_sessions", &[]).await == 3.0
    })
    .await;
    assert!(
        gone,
        "lapsed s-45 still listed: {:?}",
        edge.revocations().await
    );
    assert_refused(
        &fetch(&edge, p, in_path(&seg42)).await,
        "s-42 still revoked",
    );
    assert_token_free(
        &origin.requests(),
        &[&s42, &s43, &s44, &s45, &s46, &fresh42],
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Auto-revocation
// ---------------------------------------------------------------------------------------------

async fn as_viewer(edge: &Edge, from: u8, ua: &str, path: &str, seg: &str) -> Resp {
    let c = client_from(loopback(from));
    send(
        c.get(edge.url(&format!("/{seg}{path}")))
            .header("user-agent", ua),
    )
    .await
}

#[tokio::test]
async fn a_session_seen_from_too_many_addresses_or_players_revokes_itself() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(
        &origin,
        &[&key],
        media_options(
            "state_dir: state\n\
             revocation: { default_ttl: 1d, auto: { window: 10m, max_ips: 4, max_user_agents: 3 } }\n",
        ),
    );
    let p = "/vod/auto/seg0.ts";
    let leaked = format!(
        "s-leak.{}",
        tokens::media(&key, Some("s-leak"), &["/vod/auto/"], None, 3600)
    );
    let home = format!(
        "s-home.{}",
        tokens::media(&key, Some("s-home"), &["/vod/auto/"], None, 3600)
    );
    let players = format!(
        "s-ua.{}",
        tokens::media(&key, Some("s-ua"), &["/vod/auto/"], None, 3600)
    );
    assert_eq!(
        edge.metric("tollgate_auto_revocations_total", &[]).await,
        0.0
    );

    // Four addresses are within the limit; the fifth trips it, and from then on the session is
    // refused everywhere, including where it started.
    for from in 1..=4 {
        let r = as_viewer(&edge, from, "player/1", p, &leaked).await;
        assert_served(&r, p, &format!("s-leak from 127.0.0.{from}"));
    }
    for from in [5, 6, 1, 2] {
        let r = as_viewer(&edge, from, "player/1", p, &leaked).await;
        assert_refused(
            &r,
            &format!("s-leak from 127.0.0.{from}, after the fifth address"),
        );
    }
    // (counted before the refusal is answered; polled, as a scrape under load can come late)
    edge.expect_metric(
        "tollgate_auto_revocations_total",
        &[],
        Duration::from_secs(5),
        |v| v >= 1.0,
    )
    .await;
    let list = edge.revocations().await;
    let e = list
        .iter()
        .find(|e| e["sid"] == "s-leak")
        .unwrap_or_else(|| panic!("s-leak not listed: {list:?}"));
    assert_eq!(e["reason"], "auto", "{e}");
    assert!(
        edge.stderr().contains("s-leak"),
        "the automatic revocation was not logged; stderr:\n{}",
        edge.stderr_tail(20)
    );

    // Too many players (user agents) for one session trips it as well.
    for ua in ["ua/1", "ua/2", "ua/3"] {
        assert_served(&as_viewer(&edge, 1, ua, p, &players).await, p, ua);
    }
    assert_refused(
        &as_viewer(&edge, 1, "ua/4", p, &players).await,
        "fourth user agent",
    );
    assert_refused(
        &as_viewer(&edge, 1, "ua/1", p, &players).await,
        "s-ua afterwards",
    );

    // A viewer hopping between Wi-Fi and mobile (two addresses) all evening is never revoked.
    for i in 0..40u8 {
        let from = 1 + i % 2;
        let r = as_viewer(&edge, from, "player/1", p, &home).await;
        assert_served(&r, p, &format!("s-home request {i} from 127.0.0.{from}"));
    }
    // One address claiming many in X-Forwarded-For is still one address.
    let proxied = format!(
        "s-xff.{}",
        tokens::media(&key, Some("s-xff"), &["/vod/auto/"], None, 3600)
    );
    for i in 1..=6 {
        let rb = client_from(loopback(1))
            .get(edge.url(&format!("/{proxied}{p}")))
            .header("user-agent", "player/1")
            .header("x-forwarded-for", format!("10.0.0.{i}"));
        assert_served(&send(rb).await, p, &format!("s-xff claiming 10.0.0.{i}"));
    }
    let list = edge.revocations().await;
    assert!(
        list.iter()
            .all(|e| e["sid"] != "s-home" && e["sid"] != "s-xff"),
        "{list:?}"
    );
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(edge.metric("tollgate_revoked_sessions", &[]).await, 2.0);
    drop(edge);

    // `auto: { enabled: false }` turns it off.
    let edge = Edge::start_with(
        &origin,
        &[&key],
        media_options("revocation: { auto: { enabled: false } }\n"),
    );
    let free = format!(
        "s-free.{}",
        tokens::media(&key, Some("s-free"), &["/vod/auto/"], None, 3600)
    );
    for from in 1..=6 {
        let r = as_viewer(&edge, from, &format!("ua/{from}"), p, &free).await;
        assert_served(&r, p, &format!("auto off: s-free from 127.0.0.{from}"));
    }
    assert_eq!(
        edge.metric("tollgate_auto_revocations_total", &[]).await,
        0.0
    );
    assert!(edge.revocations().await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// 6. Key rotation
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn keys_rotate_under_load_without_a_failed_request() {
    let k1 = Arc::new(tokens::es256("k1"));
    let k2 = Arc::new(tokens::es256("k2"));
    let origin = Origin::start();
    let edge = Arc::new(Edge::start_with(&origin, &[&*k1], media_options("")));
    let keys_loaded = || async { edge.metric("tollgate_keys_loaded", &[]).await };
    assert_eq!(keys_loaded().await, 1.0);

    // k2 is not trusted yet.
    let early_k2 = tokens::media(&k2, None, &["/vod/rot/"], None, 3600);
    assert_refused(
        &fetch(&edge, "/vod/rot/a.ts", in_path(&early_k2)).await,
        "k2 before it is published",
    );
    // A k1 token verified (and remembered) before the rotation.
    let old_k1 = tokens::media(&k1, None, &["/vod/rot/"], None, 3600);
    assert_served(
        &fetch(&edge, "/vod/rot/a.ts", in_path(&old_k1)).await,
        "/vod/rot/a.ts",
        "k1",
    );

    // Viewers keep playing, each request with a token from whichever key the token service
    // signs with at that moment.
    let signer: Arc<Mutex<Arc<SigningKey>>> = Arc::new(Mutex::new(k1.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let results: Arc<Mutex<Vec<(String, u16, String)>>> = Arc::default();
    let viewer = {
        let (edge, signer, stop, results) =
            (edge.clone(), signer.clone(), stop.clone(), results.clone());
        tokio::spawn(async move {
            let c = client();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let key = signer.lock().unwrap().clone();
                let tok = tokens::media(
                    &key,
                    Some(&format!("v-{}", i % 3)),
                    &["/vod/rot/"],
                    None,
                    600,
                );
                let path = format!("/vod/rot/seg{}.ts", i % 7);
                let r = fetch_with(&c, &edge, &path, in_path(&tok)).await;
                results.lock().unwrap().push((
                    key.kid.clone(),
                    r.status,
                    format!("{path}: {}", r.body.trim()),
                ));
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
    pause(600).await;

    // (a) publish k2 next to k1
    edge.rewrite_jwks(&[&*k1, &*k2]);
    let (n, ok) = edge
        .poll_metric("tollgate_keys_loaded", &[], Duration::from_secs(5), |v| {
            v == 2.0
        })
        .await;
    assert!(ok, "k2 not loaded within 5 s (keys_loaded = {n})");
    assert_served(
        &fetch(&edge, "/vod/rot/a.ts", in_path(&early_k2)).await,
        "/vod/rot/a.ts",
        "k2 once published",
    );
    pause(600).await;
    // (b) sign with k2
    *signer.lock().unwrap() = k2.clone();
    pause(1000).await;
    // (c) retire k1
    edge.rewrite_jwks(&[&*k2]);
    let (n, ok) = edge
        .poll_metric("tollgate_keys_loaded", &[], Duration::from_secs(5), |v| {
            v == 1.0
        })
        .await;
    assert!(ok, "k1 not dropped within 5 s (keys_loaded = {n})");
    pause(600).await;
    stop.store(true, Ordering::Relaxed);
    viewer.await.unwrap();

    let results = results.lock().unwrap().clone();
    let failed: Vec<_> = results.iter().filter(|r| r.1 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests with valid tokens failed during the rotation: {failed:?}",
        failed.len(),
        results.len()
    );
    let by = |kid: &str| results.iter().filter(|r| r.0 == kid).count();
    assert!(
        by("k1") >= 10 && by("k2") >= 10,
        "too little traffic to show anything: {} k1, {} k2 requests",
        by("k1"),
        by("k2")
    );

    // k1 is gone: its tokens are refused, the one verified earlier included.
    let unknown = edge.metric(AUTH, &[("result", "unknown_kid")]).await;
    assert_refused(
        &fetch(&edge, "/vod/rot/a.ts", in_path(&old_k1)).await,
        "k1 token verified before k1 was removed",
    );
    let new_k1 = tokens::media(&k1, None, &["/vod/rot/"], None, 3600);
    assert_refused(
        &fetch(&edge, "/vod/rot/b.ts", in_path(&new_k1)).await,
        "k1 token after removal",
    );
    assert_eq!(
        edge.metric(AUTH, &[("result", "unknown_kid")]).await,
        unknown + 2.0
    );

    // A broken jwks.json is reported and ignored: k2 keeps working.
    let errors = edge.metric("tollgate_key_reload_errors_total", &[]).await;
    write_atomic(&edge.jwks_path(), "{\"keys\": [ this is not json");
    let (e, ok) = edge
        .poll_metric(
            "tollgate_key_reload_errors_total",
            &[],
            Duration::from_secs(5),
            |v| v > errors,
        )
        .await;
    assert!(
        ok,
        "tollgate_key_reload_errors_total did not rise ({e}) after a malformed jwks.json"
    );
    for i in 0..5 {
        let tok = tokens::media(&k2, None, &["/vod/rot/"], None, 600);
        let r = fetch(&edge, &format!("/vod/rot/after{i}.ts"), in_path(&tok)).await;
        assert_served(
            &r,
            &format!("/vod/rot/after{i}.ts"),
            "k2 after a malformed jwks.json",
        );
    }
    assert_refused(
        &fetch(&edge, "/vod/rot/c.ts", in_path(&new_k1)).await,
        "k1 after a malformed jwks.json",
    );
    assert_eq!(keys_loaded().await, 1.0, "the previous key set stays");

    // A file that vanishes (a deploy tool between delete and write) is no different.
    let errors = edge.metric("tollgate_key_reload_errors_total", &[]).await;
    std::fs::remove_file(edge.jwks_path()).unwrap();
    let (e, ok) = edge
        .poll_metric(
            "tollgate_key_reload_errors_total",
            &[],
            Duration::from_secs(5),
            |v| v > errors,
        )
        .await;
    assert!(ok, "no reload error counted ({e}) for a missing jwks.json");
    let tok = tokens::media(&k2, None, &["/vod/rot/"], None, 600);
    assert_served(
        &fetch(&edge, "/vod/rot/gone.ts", in_path(&tok)).await,
        "/vod/rot/gone.ts",
        "k2 while jwks.json is missing",
    );

    // A good file again is picked up again.
    let k3 = tokens::rs256("k3");
    edge.rewrite_jwks(&[&*k2, &k3]);
    let (n, ok) = edge
        .poll_metric("tollgate_keys_loaded", &[], Duration::from_secs(5), |v| {
            v == 2.0
        })
        .await;
    assert!(
        ok,
        "a valid jwks.json after a broken one was not loaded (keys_loaded = {n})"
    );
    let tok = tokens::media(&k3, None, &["/vod/rot/"], None, 600);
    assert_served(
        &fetch(&edge, "/vod/rot/k3.ts", in_path(&tok)).await,
        "/vod/rot/k3.ts",
        "k3 (RS256) once published",
    );
    edge.assert_running();
}

// ---------------------------------------------------------------------------------------------
// 7. The origin never sees a token; viewers share segments
// ---------------------------------------------------------------------------------------------

/// Fetch a media playlist at `url` as a player does, then every segment it lists, resolved
/// relative to the playlist URL. Returns the segment URLs and their bodies.
async fn play(url: &str, cookie: Option<&str>) -> Vec<(String, Vec<u8>)> {
    let c = client();
    let get = |u: String| {
        let mut rb = c.get(u);
        if let Some(k) = cookie {
            rb = rb.header("cookie", format!("token={k}"));
        }
        rb
    };
    let r = get(url.to_owned()).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "playlist {url}");
    let playlist = r.text().await.unwrap();
    let base = reqwest::Url::parse(url).unwrap();
    let mut out = Vec::new();
    for line in playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let seg = base.join(line).unwrap().to_string();
        let r = get(seg.clone()).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200, "segment {seg}");
        out.push((seg, r.bytes().await.unwrap().to_vec()));
    }
    out
}

#[tokio::test]
async fn the_origin_never_sees_a_token_and_viewers_share_each_segment() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start_with(&origin, &[&key], media_options(""));
    let dir = "/vod/show7/";
    let playlist = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n\
                    #EXTINF:2.0,\nseg0.ts\n#EXTINF:2.0,\nseg1.ts\n#EXTINF:2.0,\nhd/seg2.ts\n\
                    #EXT-X-ENDLIST\n";
    origin.set_file(
        &format!("{dir}index.m3u8"),
        playlist,
        "application/vnd.apple.mpegurl",
        Duration::ZERO,
    );
    let segs = ["seg0.ts", "seg1.ts", "hd/seg2.ts"];
    let bodies: Vec<Vec<u8>> = segs
        .iter()
        .map(|s| {
            let body = support::pattern_body(s, 188 * 400).to_vec();
            origin.set_file(
                &format!("{dir}{s}"),
                body.clone(),
                "video/mp2t",
                Duration::ZERO,
            );
            body
        })
        .collect();

    let a = tokens::media(&key, Some("s-a"), &["/vod/show7/"], None, 3600);
    let b = tokens::media(&key, Some("s-b"), &["/vod/show7"], None, 3600);
    let c = tokens::media(&key, None, &[], None, 3600);
    let viewers = [
        (format!("s-a.{a}"), None),
        (b.clone(), None),
        (String::new(), Some(c.as_str())),
    ];
    for (seg, cookie) in &viewers {
        let url = if seg.is_empty() {
            edge.url(&format!("{dir}index.m3u8"))
        } else {
            edge.url(&format!("/{seg}{dir}index.m3u8"))
        };
        let got = play(&url, *cookie).await;
        assert_eq!(got.len(), segs.len());
        for (i, (u, body)) in got.iter().enumerate() {
            // relative URLs inherit the path token
            let want = if seg.is_empty() {
                edge.url(&format!("{dir}{}", segs[i]))
            } else {
                edge.url(&format!("/{seg}{dir}{}", segs[i]))
            };
            assert_eq!(u, &want);
            assert!(
                body == &bodies[i],
                "segment {u}: wrong bytes ({} bytes)",
                body.len()
            );
        }
    }

    // One origin request per object, for three viewers with three different tokens.
    assert_eq!(origin.hits(&format!("{dir}index.m3u8")), 1);
    for s in segs {
        assert_eq!(
            origin.hits(&format!("{dir}{s}")),
            1,
            "{s} fetched once for all viewers"
        );
    }
    let seen = origin.requests();
    assert_eq!(seen.len(), 1 + segs.len(), "{seen:?}");
    assert_token_free(&seen, &[&a, &b, &c]);
    for r in &seen {
        assert!(
            r.uri.starts_with(dir) && r.query.is_none(),
            "origin saw {:?}",
            r.uri
        );
        assert_eq!(r.header(VARIANT_HEADER).as_deref(), Some("subscriber"));
    }
    let valid = edge.metric(AUTH, &[("result", "valid")]).await;
    assert_eq!(valid, (viewers.len() * (1 + segs.len())) as f64);
    // and the segments are still protected: without a token, nothing
    let r = fetch(&edge, &format!("{dir}seg0.ts"), Carry::default()).await;
    assert_refused(&r, "segment without a token");
}

//! The paywall at the edge, end to end: a real origin, the real `tollgate` binary, real tokens.
//!
//! Each test starts its own origin and edge on free loopback ports and asserts what a reader,
//! the publisher's origin or an operator would see: which body comes back, what the origin
//! received, and what `Cache-Status`, `Age` and `/metrics` say.

mod support;

use std::time::Duration;

use support::tokens;
use support::{
    get, raw_get, send, Edge, Origin, Tok, SECRET_HEADER, SUBSCRIBER_MARK, VARIANT_HEADER,
};

const AUTH: &str = "tollgate_auth_decisions_total";

fn variants_seen(origin: &Origin, path: &str) -> Vec<String> {
    origin
        .requests_for(path)
        .iter()
        .map(|r| r.header_all(VARIANT_HEADER).join(","))
        .collect()
}

#[tokio::test]
async fn subscriber_and_anonymous_are_cached_apart_and_subscribers_share_one_entry() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let p = "/premium/story";

    let anon1 = get(&edge, p, Tok::None).await;
    assert!(
        anon1.is_teaser(),
        "anonymous reader must get the teaser: {anon1:?}"
    );
    assert!(
        anon1.is_miss(),
        "first request is a miss: {}",
        anon1.cache_status()
    );
    assert_eq!(anon1.cache_status(), "tollgate; fwd=miss; stored");
    let anon2 = get(&edge, p, Tok::None).await;
    assert!(anon2.is_teaser());
    assert_eq!(anon2.cache_status(), "tollgate; hit");
    assert_eq!(
        origin.hits(p),
        1,
        "the second anonymous request must be served from cache"
    );

    let alice = tokens::subscriber(&key, "alice");
    let a = get(&edge, p, Tok::Bearer(&alice)).await;
    assert!(
        a.is_full(),
        "entitled subscriber must get the full article: {a:?}"
    );
    assert!(
        a.is_miss(),
        "the subscriber variant is a separate entry: {}",
        a.cache_status()
    );
    assert_eq!(
        a.header("cache-control"),
        Some("private"),
        "subscriber responses are private"
    );
    assert_eq!(origin.hits(p), 2);

    // Bob: a different token (different sub), same entitlement → the same entry.
    let bob = tokens::valid(&key, "bob", &["sports", "premium"], 600);
    let b = get(&edge, p, Tok::Cookie(&bob)).await;
    assert!(b.is_full(), "{b:?}");
    assert!(
        b.is_hit(),
        "two subscribers share one entry: {}",
        b.cache_status()
    );
    assert_eq!(
        b.header("x-origin-seq"),
        a.header("x-origin-seq"),
        "bob got alice's stored copy"
    );
    assert_eq!(b.header("cache-control"), Some("private"));
    assert_eq!(
        origin.hits(p),
        2,
        "no origin request for the second subscriber"
    );
    assert_eq!(variants_seen(&origin, p), vec!["anonymous", "subscriber"]);

    // A valid token without the entitlement shares the anonymous entry.
    let carol = tokens::valid(&key, "carol", &["sports"], 600);
    let before = edge.metric(AUTH, &[("result", "not_entitled")]).await;
    let c = get(&edge, p, Tok::Query(&carol)).await;
    assert!(c.is_teaser(), "valid but not entitled → teaser: {c:?}");
    assert!(c.is_hit(), "{}", c.cache_status());
    assert_ne!(c.header("cache-control"), Some("private"));
    assert_eq!(
        edge.metric(AUTH, &[("result", "not_entitled")]).await,
        before + 1.0
    );

    let anon3 = get(&edge, p, Tok::None).await;
    assert!(anon3.is_teaser() && anon3.is_hit(), "{anon3:?}");
    assert_eq!(origin.hits(p), 2);
}

#[tokio::test]
async fn a_cache_hit_still_requires_a_valid_token() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let p = "/premium/warm";
    let sub = tokens::subscriber(&key, "alice");
    assert!(get(&edge, p, Tok::Bearer(&sub)).await.is_full());
    let warm = get(&edge, p, Tok::Bearer(&sub)).await;
    assert!(
        warm.is_full() && warm.is_hit(),
        "subscriber variant is warm: {warm:?}"
    );

    let bad = [
        ("no token", None),
        ("forged", Some(tokens::forged(&key))),
        ("expired", Some(tokens::expired(&key))),
        ("not yet valid", Some(tokens::not_yet_valid(&key))),
        ("alg none", Some(tokens::alg_none(&key))),
        ("malformed", Some(tokens::malformed())),
    ];
    for (what, tok) in &bad {
        for source in ["query", "bearer", "cookie"] {
            let t = match (tok, source) {
                (None, _) => Tok::None,
                (Some(t), "query") => Tok::Query(t),
                (Some(t), "bearer") => Tok::Bearer(t),
                (Some(t), _) => Tok::Cookie(t),
            };
            let r = get(&edge, p, t).await;
            assert!(
                r.is_teaser(),
                "{what} token in {source} must get the teaser while the full article is cached: {r:?}"
            );
            assert!(!r.body.contains(SUBSCRIBER_MARK));
        }
    }
    // The teaser came from its own entry: one origin request for it, one for the subscriber.
    assert_eq!(variants_seen(&origin, p), vec!["subscriber", "anonymous"]);
}

#[tokio::test]
async fn every_bad_token_gets_the_teaser_and_is_counted_by_reason() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let cases: Vec<(&str, String, &str)> = vec![
        ("expired", tokens::expired(&key), "expired"),
        (
            "nbf in the future",
            tokens::not_yet_valid(&key),
            "not_yet_valid",
        ),
        (
            "forged (right kid, other key)",
            tokens::forged(&key),
            "bad_signature",
        ),
        ("unknown kid", tokens::wrong_kid(&key), "unknown_kid"),
        ("wrong issuer", tokens::wrong_issuer(&key), "wrong_issuer"),
        (
            "wrong audience",
            tokens::wrong_audience(&key),
            "wrong_audience",
        ),
        ("alg none", tokens::alg_none(&key), "alg_mismatch"),
        (
            "HS256 keyed with the public key",
            tokens::hs256_with_public_key(&key),
            "alg_mismatch",
        ),
        (
            "DER-encoded ES256 signature",
            tokens::der_signature(&key),
            "bad_signature",
        ),
        ("not a JWT", tokens::malformed(), "malformed"),
    ];
    // Sanity: the same key does mint a token the edge accepts, so rejections below are about
    // the defect in each token, not about the key.
    let good = get(
        &edge,
        "/premium/control",
        Tok::Bearer(&tokens::subscriber(&key, "ok")),
    )
    .await;
    assert!(good.is_full(), "{good:?}");

    for (i, (what, token, label)) in cases.iter().enumerate() {
        let text = edge.metrics().await;
        let label = *label;
        let before = support::metric(&text, AUTH, &[("result", label)]);
        let valid_before = support::metric(&text, AUTH, &[("result", "valid")]);
        let path = format!("/premium/bad-{i}");
        let r = get(&edge, &path, Tok::Bearer(token)).await;
        assert_eq!(
            r.status, 200,
            "{what}: the paywall answers 200 with the teaser"
        );
        assert!(r.is_teaser(), "{what}: must get the teaser, got {r:?}");
        assert_ne!(r.header("cache-control"), Some("private"), "{what}");
        assert_eq!(
            origin
                .last_for(&path)
                .and_then(|r| r.header(VARIANT_HEADER))
                .as_deref(),
            Some("anonymous"),
            "{what}: the origin must be asked for the anonymous variant"
        );
        let text = edge.metrics().await;
        assert_eq!(
            support::metric(&text, AUTH, &[("result", label)]),
            before + 1.0,
            "{what}: tollgate_auth_decisions_total{{result=\"{label}\"}} must count it"
        );
        assert_eq!(
            support::metric(&text, AUTH, &[("result", "valid")]),
            valid_before,
            "{what}: must not count as valid"
        );
    }
    let before = edge.metric(AUTH, &[("result", "missing")]).await;
    assert!(get(&edge, "/premium/none", Tok::None).await.is_teaser());
    assert_eq!(
        edge.metric(AUTH, &[("result", "missing")]).await,
        before + 1.0
    );
}

#[tokio::test]
async fn rs256_tokens_work_alongside_es256() {
    let es = tokens::es256("k-es");
    let rs = tokens::rs256("k-rs");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&es, &rs]);
    assert!(get(
        &edge,
        "/premium/a",
        Tok::Bearer(&tokens::subscriber(&rs, "r"))
    )
    .await
    .is_full());
    assert!(get(
        &edge,
        "/premium/a",
        Tok::Bearer(&tokens::subscriber(&es, "e"))
    )
    .await
    .is_full());
    // The algorithm is pinned per key: an ES256 signature under the RSA key's kid fails.
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": "k-rs"});
    let confused =
        tollgate::auth::mint::sign_raw(&es, &header, &tokens::claims("x", &["premium"], 600))
            .expect("sign");
    assert!(get(&edge, "/premium/a", Tok::Bearer(&confused))
        .await
        .is_teaser());
    assert!(get(&edge, "/premium/a", Tok::Bearer(&tokens::forged(&rs)))
        .await
        .is_teaser());
}

#[tokio::test]
async fn token_in_query_bearer_or_cookie_and_no_fallback() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let good = tokens::subscriber(&key, "alice");
    let bad = tokens::forged(&key);

    for (what, t) in [
        ("query", Tok::Query(&good)),
        ("bearer", Tok::Bearer(&good)),
        ("cookie", Tok::Cookie(&good)),
    ] {
        let r = get(&edge, "/premium/src", t).await;
        assert!(
            r.is_full(),
            "a valid token in the {what} must unlock: {r:?}"
        );
    }

    let c = support::client();
    let url = |q: &str| edge.url(&format!("/premium/src{q}"));

    // A failing query token decides; the good cookie / bearer below it is not consulted.
    let r = send(
        c.get(url(&format!("?token={bad}")))
            .header("cookie", format!("token={good}")),
    )
    .await;
    assert!(
        r.is_teaser(),
        "bad query token + good cookie must not fall back: {r:?}"
    );
    let r = send(c.get(url(&format!("?token={bad}"))).bearer_auth(&good)).await;
    assert!(
        r.is_teaser(),
        "bad query token + good bearer must not fall back: {r:?}"
    );
    let r = send(
        c.get(url(""))
            .bearer_auth(&bad)
            .header("cookie", format!("token={good}")),
    )
    .await;
    assert!(
        r.is_teaser(),
        "bad bearer + good cookie must not fall back: {r:?}"
    );
    let expired = tokens::expired(&key);
    let r = send(
        c.get(url(&format!("?token={expired}")))
            .header("cookie", format!("token={good}")),
    )
    .await;
    assert!(r.is_teaser(), "expired query token + good cookie: {r:?}");

    // The other way round: the good token in the higher source wins.
    let r = send(
        c.get(url(&format!("?token={good}")))
            .header("cookie", format!("token={bad}")),
    )
    .await;
    assert!(r.is_full(), "good query token + bad cookie: {r:?}");
    let r = send(
        c.get(url(""))
            .bearer_auth(&good)
            .header("cookie", format!("token={bad}")),
    )
    .await;
    assert!(r.is_full(), "good bearer + bad cookie: {r:?}");
}

#[tokio::test]
async fn client_sent_variant_and_secret_headers_are_ignored() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let c = support::client();
    let p = "/premium/spoof";

    let r = send(
        c.get(edge.url(p))
            .header(VARIANT_HEADER, "subscriber")
            .header(VARIANT_HEADER, "public")
            .header(SECRET_HEADER, "spoofed-secret")
            .header("X-Api-Key", "spoofed-again"),
    )
    .await;
    assert!(
        r.is_teaser(),
        "a client cannot ask for the subscriber variant: {r:?}"
    );
    let seen = origin.last_for(p).expect("origin was asked");
    assert_eq!(
        seen.header_all(VARIANT_HEADER),
        vec!["anonymous".to_string()]
    );
    assert_eq!(
        seen.header_all(SECRET_HEADER),
        vec![edge.secret.clone()],
        "the origin must see exactly one copy of the real secret"
    );
    assert!(
        !seen.mentions("spoofed"),
        "no spoofed value reaches the origin: {seen:?}"
    );

    // Same with a not-entitled token, and on a request that hits the cache.
    let carol = tokens::valid(&key, "carol", &["sports"], 600);
    let r = send(
        c.get(edge.url(p))
            .bearer_auth(&carol)
            .header(VARIANT_HEADER, "subscriber"),
    )
    .await;
    assert!(r.is_teaser() && r.is_hit(), "{r:?}");

    // A subscriber spoofing `anonymous` still gets the right (full) content.
    let alice = tokens::subscriber(&key, "alice");
    let r = send(
        c.get(edge.url(p))
            .bearer_auth(&alice)
            .header(VARIANT_HEADER, "anonymous"),
    )
    .await;
    assert!(r.is_full(), "{r:?}");
    let seen = origin.last_for(p).unwrap();
    assert_eq!(
        seen.header_all(VARIANT_HEADER),
        vec!["subscriber".to_string()]
    );
}

#[tokio::test]
async fn the_origin_sees_the_secret_and_never_the_token() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let c = support::client();
    let good = tokens::subscriber(&key, "alice");

    // Query: token removed, other parameters kept in order.
    let r = send(c.get(edge.url(&format!("/premium/q?a=1&token={good}&b=2")))).await;
    assert!(r.is_full(), "{r:?}");
    let seen = origin.last_for("/premium/q").unwrap();
    assert_eq!(seen.uri, "/premium/q?a=1&b=2");

    // Bearer: Authorization removed.
    let r = send(c.get(edge.url("/premium/b?x=y")).bearer_auth(&good)).await;
    assert!(r.is_full(), "{r:?}");
    let seen = origin.last_for("/premium/b").unwrap();
    assert_eq!(seen.header_all("authorization"), Vec::<String>::new());
    assert_eq!(seen.uri, "/premium/b?x=y");

    // Cookie: the token cookie removed, the others kept.
    let r = send(
        c.get(edge.url("/premium/c"))
            .header("cookie", format!("theme=dark; token={good}; lang=en")),
    )
    .await;
    assert!(r.is_full(), "{r:?}");
    let seen = origin.last_for("/premium/c").unwrap();
    let cookies = seen.header_all("cookie").join("; ");
    assert!(
        cookies.contains("theme=dark") && cookies.contains("lang=en"),
        "other cookies kept: {cookies:?}"
    );
    assert!(
        !cookies.contains("token="),
        "token cookie stripped: {cookies:?}"
    );

    // Invalid tokens are not forwarded either.
    let forged = tokens::forged(&key);
    send(c.get(edge.url(&format!("/premium/f?token={forged}&k=v")))).await;
    send(c.get(edge.url("/premium/f2")).bearer_auth(&forged)).await;
    send(
        c.get(edge.url("/premium/f3"))
            .header("cookie", format!("token={forged}")),
    )
    .await;
    assert_eq!(origin.last_for("/premium/f").unwrap().uri, "/premium/f?k=v");

    let all = origin.requests();
    assert_eq!(all.len(), 6, "every request above was a miss: {all:#?}");
    for seen in &all {
        for t in [&good, &forged] {
            // The signature part alone must not reach the origin anywhere.
            let sig = t.rsplit('.').next().unwrap();
            assert!(
                !seen.mentions(sig),
                "the token reached the origin: {seen:#?}"
            );
        }
        assert!(!seen.uri.contains("token="), "{seen:?}");
        assert_eq!(
            seen.header_all(SECRET_HEADER),
            vec![edge.secret.clone()],
            "{seen:?}"
        );
    }
}

#[tokio::test]
async fn the_secret_never_appears_in_a_response() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let sub = tokens::subscriber(&key, "alice");

    // /leak echoes the received secret in x-echo, x-api-key and x-debug.
    for attempt in ["miss", "hit"] {
        let r = get(&edge, "/leak", Tok::None).await;
        assert_eq!(r.status, 200, "{r:?}");
        let headers = r.all_header_text();
        assert!(
            !headers.contains(&edge.secret) && !r.body.contains(&edge.secret),
            "the origin secret leaked on a {attempt}:\n{headers}{}",
            r.body
        );
        assert!(r.headers.get(SECRET_HEADER).is_none(), "{headers}");
    }
    // The test means something only if the origin really received (and echoed) the secret.
    assert_eq!(
        origin.requests_for("/leak")[0].header(SECRET_HEADER),
        Some(edge.secret.clone())
    );

    for (path, tok) in [
        ("/premium/s", Tok::None),
        ("/premium/s", Tok::Bearer(&sub)),
        ("/news/s", Tok::None),
        ("/nowhere", Tok::None),
    ] {
        let r = get(&edge, path, tok).await;
        assert!(!r.all_header_text().contains(&edge.secret), "{path}: {r:?}");
        assert!(!r.body.contains(&edge.secret), "{path}: {r:?}");
    }
}

#[tokio::test]
async fn the_query_without_token_params_is_part_of_the_cache_key() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let p = "/premium/k";
    let sub = tokens::subscriber(&key, "alice");
    let expired = tokens::expired(&key);

    assert!(get(&edge, &format!("{p}?a=1"), Tok::None).await.is_miss());
    assert!(
        get(&edge, &format!("{p}?a=2"), Tok::None).await.is_miss(),
        "?a=2 is another entry"
    );
    assert_eq!(origin.hits(p), 2);
    assert!(get(&edge, &format!("{p}?a=1"), Tok::None).await.is_hit());
    assert!(get(&edge, &format!("{p}?a=2"), Tok::None).await.is_hit());

    // A (failing) token in the query does not change the anonymous key.
    let r = get(&edge, &format!("{p}?token={expired}&a=1"), Tok::None).await;
    assert!(
        r.is_teaser() && r.is_hit(),
        "?token=X&a=1 shares ?a=1: {r:?}"
    );
    let r = get(&edge, &format!("{p}?a=1&token={expired}"), Tok::None).await;
    assert!(
        r.is_teaser() && r.is_hit(),
        "?a=1&token=X shares ?a=1: {r:?}"
    );

    // The subscriber variant of ?a=1 is filled through a bearer token, then shared by a
    // request carrying its token in the query.
    let r = get(&edge, &format!("{p}?a=1"), Tok::Bearer(&sub)).await;
    assert!(r.is_full() && r.is_miss(), "{r:?}");
    let r = get(&edge, &format!("{p}?token={sub}&a=1"), Tok::None).await;
    assert!(r.is_full() && r.is_hit(), "{r:?}");
    let r = get(&edge, &format!("{p}?a=2"), Tok::Query(&sub)).await;
    assert!(
        r.is_full() && r.is_miss(),
        "?a=2 subscriber is yet another entry: {r:?}"
    );
    assert_eq!(origin.hits(p), 4);
    let uris: Vec<String> = origin
        .requests_for(p)
        .iter()
        .map(|r| r.uri.clone())
        .collect();
    assert_eq!(
        uris,
        vec![
            format!("{p}?a=1"),
            format!("{p}?a=2"),
            format!("{p}?a=1"),
            format!("{p}?a=2")
        ]
    );
}

#[tokio::test]
async fn paths_are_normalized_before_routing() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let sub = tokens::subscriber(&key, "alice");
    let bearer = format!("Bearer {sub}");

    for target in [
        "/%70remium/x",
        "/news/../premium/x",
        "/premium/./x",
        "//premium//x",
        "/%70%72emium/x",
    ] {
        let r = raw_get(edge.port, target, &[]).unwrap();
        assert_eq!(r.status, 200, "{target}: {r:?}");
        assert!(
            r.body.starts_with("TEASER:/premium/x"),
            "{target} must be routed as /premium/x and get the teaser: {r:?}"
        );
        assert!(!r.body.contains(SUBSCRIBER_MARK));
        let r = raw_get(edge.port, target, &[("Authorization", bearer.as_str())]).unwrap();
        assert!(
            r.body.starts_with("FULL:/premium/x"),
            "{target} with a token: {r:?}"
        );
    }
    // All spellings share the two entries of /premium/x; the origin saw the normalized path.
    assert_eq!(origin.hits("/premium/x"), 2, "{:#?}", origin.requests());
    assert_eq!(origin.total(), 2);

    for target in [
        "/premium%2Fx",
        "/../premium/x",
        "/news/..%2Fpremium/x",
        "/premium/%zz",
    ] {
        let r = raw_get(edge.port, target, &[]).unwrap();
        assert_eq!(r.status, 400, "{target} must be refused: {r:?}");
        assert!(
            r.header("cache-status").is_some() && r.header("age").is_some(),
            "{target}: {r:?}"
        );
    }
    assert_eq!(origin.total(), 2, "refused paths never reach the origin");
}

#[tokio::test]
async fn key_rotation_removes_and_adds_keys_without_restart() {
    let k1 = tokens::es256("k1");
    let k2 = tokens::es256("k2");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&k1]);
    let p = "/premium/rot";
    let t1 = tokens::subscriber(&k1, "alice");
    let t2 = tokens::subscriber(&k2, "bob");

    assert!(get(&edge, p, Tok::Bearer(&t1)).await.is_full());
    let r = get(&edge, p, Tok::Bearer(&t1)).await;
    assert!(
        r.is_full() && r.is_hit(),
        "t1 verified, cached and served from cache: {r:?}"
    );
    assert!(
        get(&edge, p, Tok::Bearer(&t2)).await.is_teaser(),
        "k2 is not known yet"
    );

    // Add k2 next to k1: both live.
    edge.rewrite_jwks(&[&k1, &k2]);
    let added = support::eventually(Duration::from_secs(10), || async {
        get(&edge, p, Tok::Bearer(&t2)).await.is_full()
    })
    .await;
    assert!(
        added,
        "a token signed by the newly added key must start working after the reload"
    );
    assert!(
        get(&edge, p, Tok::Bearer(&t1)).await.is_full(),
        "k1 is still live"
    );

    // Remove k1.
    edge.rewrite_jwks(&[&k2]);
    let removed = support::eventually(Duration::from_secs(10), || async {
        get(&edge, p, Tok::Bearer(&t1)).await.is_teaser()
    })
    .await;
    assert!(
        removed,
        "a cached, verified token must stop working once its key is removed"
    );
    // And it stays refused, from every source.
    for t in [Tok::Bearer(&t1), Tok::Query(&t1), Tok::Cookie(&t1)] {
        let r = get(&edge, p, t).await;
        assert!(r.is_teaser(), "{t:?}: {r:?}");
    }
    assert!(get(&edge, p, Tok::Bearer(&t2)).await.is_full());
    assert!(edge.metric(AUTH, &[("result", "unknown_kid")]).await >= 2.0);
    assert_eq!(edge.metric("tollgate_keys_loaded", &[]).await, 1.0);
}

#[tokio::test]
async fn cache_status_and_age_on_every_response() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    origin.set_override("/news/gone", 404, &[], "gone\n");
    origin.set_override(
        "/news/nostore",
        200,
        &[("cache-control", "no-store")],
        "fresh\n",
    );
    let edge = Edge::start(&origin, &[&key]);
    let sub = tokens::subscriber(&key, "alice");
    let c = support::client();

    let mut seen = Vec::new();
    for (what, rb) in [
        ("anonymous miss", c.get(edge.url("/premium/cs"))),
        ("anonymous hit", c.get(edge.url("/premium/cs"))),
        (
            "subscriber miss",
            c.get(edge.url("/premium/cs")).bearer_auth(&sub),
        ),
        (
            "subscriber hit",
            c.get(edge.url("/premium/cs")).bearer_auth(&sub),
        ),
        ("public miss", c.get(edge.url("/news/cs"))),
        ("public hit", c.get(edge.url("/news/cs"))),
        ("no route (edge 404)", c.get(edge.url("/nowhere"))),
        ("origin 404", c.get(edge.url("/news/gone"))),
        ("origin no-store", c.get(edge.url("/news/nostore"))),
        ("POST", c.post(edge.url("/news/form")).body("x=1")),
    ] {
        let r = send(rb).await;
        let cs = r
            .header("cache-status")
            .unwrap_or_else(|| panic!("{what}: no Cache-Status: {r:?}"));
        assert!(cs.starts_with("tollgate;"), "{what}: Cache-Status {cs:?}");
        let age = r
            .header("age")
            .unwrap_or_else(|| panic!("{what}: no Age: {r:?}"));
        age.parse::<u64>()
            .unwrap_or_else(|_| panic!("{what}: Age {age:?} is not a number"));
        seen.push((what, r.status, cs.to_owned()));
    }
    let expect = [
        ("anonymous miss", 200, "tollgate; fwd=miss; stored"),
        ("anonymous hit", 200, "tollgate; hit"),
        ("subscriber miss", 200, "tollgate; fwd=miss; stored"),
        ("subscriber hit", 200, "tollgate; hit"),
        ("public miss", 200, "tollgate; fwd=miss; stored"),
        ("public hit", 200, "tollgate; hit"),
    ];
    for ((what, status, cs), (w, s, c)) in seen.iter().zip(expect) {
        assert_eq!((*what, *status, cs.as_str()), (w, s, c));
    }
    let (_, status, cs) = &seen[6];
    assert_eq!(*status, 404, "an unmatched path is a 404 from the edge");
    assert!(cs.contains("fwd=bypass"), "edge 404: {cs}");
    assert_eq!(
        origin.hits("/nowhere"),
        0,
        "the origin is never asked for an unmatched path"
    );
    assert_eq!(seen[7].1, 404, "the origin's 404 is passed on");
    assert!(
        seen[9].2.contains("fwd="),
        "POST is forwarded: {:?}",
        seen[9]
    );
    assert_eq!(origin.requests_for("/news/form")[0].body, b"x=1");

    // Age grows on a stored object.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = get(&edge, "/premium/cs", Tok::None).await;
    assert!(r.is_hit());
    let age: u64 = r.header("age").unwrap().parse().unwrap();
    assert!((2..=5).contains(&age), "Age after ~2 s in cache: {age}");
}

#[tokio::test]
async fn responses_the_origin_forbids_storing_are_forwarded_as_misses_not_stored() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    origin.set_override(
        "/news/nostore",
        200,
        &[("cache-control", "no-store")],
        "fresh\n",
    );
    origin.set_override(
        "/news/cookie",
        200,
        &[
            ("cache-control", "public, max-age=300"),
            ("set-cookie", "session=abc"),
        ],
        "personal\n",
    );
    let edge = Edge::start(&origin, &[&key]);
    for path in ["/news/nostore", "/news/cookie"] {
        let first = get(&edge, path, Tok::None).await;
        let second = get(&edge, path, Tok::None).await;
        assert_eq!((first.status, second.status), (200, 200));
        assert!(
            !second.is_hit(),
            "{path} must never be served from cache: {second:?}"
        );
        assert_eq!(
            origin.hits(path),
            2,
            "{path}: both requests reach the origin"
        );
        // SPEC: `fwd=miss` (looked up, not found) without `stored`; `fwd=bypass` would claim the
        // cache was not consulted at all, which is not what happened on a cacheable GET route.
        for r in [&first, &second] {
            assert_eq!(r.cache_status(), "tollgate; fwd=miss", "{path}");
        }
    }
}

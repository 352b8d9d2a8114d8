//! The admin listener and the CLI's config check, end to end: purges, the admin token,
//! `/metrics` in Prometheus text format, `/healthz`, and `tollgate check`.

mod support;

use std::process::Command;

use support::tokens;
use support::{get, send, Edge, Origin, Tok};

#[tokio::test]
async fn purge_removes_every_variant_of_a_path() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let sub = tokens::subscriber(&key, "alice");
    let p = "/premium/p";

    for _ in 0..2 {
        assert!(get(&edge, p, Tok::None).await.is_teaser());
        assert!(get(&edge, p, Tok::Bearer(&sub)).await.is_full());
    }
    assert!(get(&edge, "/premium/other", Tok::None).await.is_miss());
    assert!(get(&edge, p, Tok::None).await.is_hit());
    assert!(get(&edge, p, Tok::Bearer(&sub)).await.is_hit());
    assert_eq!(origin.hits(p), 2);

    let purged = edge.purge_ok(r#"{"paths": ["/premium/p"]}"#).await;
    assert_eq!(
        purged, 2,
        "both variants (anonymous and subscriber) of /premium/p"
    );

    let a = get(&edge, p, Tok::None).await;
    assert!(a.is_teaser() && a.is_miss(), "anonymous after purge: {a:?}");
    let s = get(&edge, p, Tok::Bearer(&sub)).await;
    assert!(s.is_full() && s.is_miss(), "subscriber after purge: {s:?}");
    assert_eq!(origin.hits(p), 4, "both variants refetched from the origin");
    assert!(
        get(&edge, "/premium/other", Tok::None).await.is_hit(),
        "other paths untouched"
    );

    // Purging again finds nothing new beyond the two refills; an unknown path purges 0.
    assert_eq!(
        edge.purge_ok(r#"{"paths": ["/premium/never-seen"]}"#).await,
        0
    );
}

#[tokio::test]
async fn purge_by_prefix() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let sub = tokens::subscriber(&key, "alice");
    for p in ["/news/a", "/news/b?x=1", "/premium/x"] {
        get(&edge, p, Tok::None).await;
        assert!(get(&edge, p, Tok::None).await.is_hit(), "{p} warm");
    }
    get(&edge, "/premium/x", Tok::Bearer(&sub)).await;

    let purged = edge.purge_ok(r#"{"prefixes": ["/news/"]}"#).await;
    assert_eq!(purged, 2, "/news/a and /news/b?x=1");
    assert!(get(&edge, "/news/a", Tok::None).await.is_miss());
    assert!(get(&edge, "/news/b?x=1", Tok::None).await.is_miss());
    assert!(
        get(&edge, "/premium/x", Tok::None).await.is_hit(),
        "outside the prefix"
    );
    assert_eq!(origin.hits("/news/a"), 2);

    let purged = edge
        .purge_ok(r#"{"prefixes": ["/premium/"], "paths": ["/news/a"]}"#)
        .await;
    assert_eq!(purged, 3, "both /premium/x variants and /news/a");
    assert!(get(&edge, "/premium/x", Tok::Bearer(&sub)).await.is_miss());
}

#[tokio::test]
async fn admin_endpoints_need_the_admin_token() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    get(&edge, "/news/a", Tok::None).await;
    let c = support::client();
    let body = r#"{"paths": ["/news/a"]}"#;
    let url = edge.admin_url("/admin/purge");
    let almost = &edge.admin_token[..edge.admin_token.len() - 1];
    let longer = format!("{}x", edge.admin_token);

    for (what, rb) in [
        ("no Authorization", c.post(&url).body(body)),
        (
            "wrong token",
            c.post(&url)
                .bearer_auth("not-the-admin-token-at-all")
                .body(body),
        ),
        ("token prefix", c.post(&url).bearer_auth(almost).body(body)),
        (
            "token plus a char",
            c.post(&url).bearer_auth(&longer).body(body),
        ),
        (
            "Basic scheme",
            c.post(&url)
                .header("authorization", format!("Basic {}", edge.admin_token))
                .body(body),
        ),
        (
            "a proxy token",
            c.post(&url)
                .bearer_auth(tokens::subscriber(&key, "a"))
                .body(body),
        ),
        (
            "GET other admin path",
            c.get(edge.admin_url("/admin/revocations")),
        ),
    ] {
        let r = send(rb).await;
        assert_eq!(r.status, 401, "{what}: {r:?}");
        assert!(!r.body.contains(&edge.admin_token), "{what}");
    }
    assert!(
        get(&edge, "/news/a", Tok::None).await.is_hit(),
        "nothing was purged"
    );

    // The right token works (so the 401s above are about the token).
    assert_eq!(edge.purge_ok(body).await, 1);
}

#[tokio::test]
async fn purge_rejects_bad_requests() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    for body in [
        "{not json",
        "",
        r#"{"paths": "/news/a"}"#,
        r#"{"paths": [1, 2]}"#,
        r#"{"pathz": ["/news/a"]}"#,
        "[]",
    ] {
        let (status, text) = edge.purge(body).await;
        assert_eq!(status, 400, "body {body:?} → {status} {text}");
    }
    let c = support::client();
    let r = send(
        c.get(edge.admin_url("/admin/purge"))
            .bearer_auth(&edge.admin_token),
    )
    .await;
    assert_eq!(r.status, 405, "GET /admin/purge: {r:?}");
}

#[tokio::test]
async fn healthz_and_metrics() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let edge = Edge::start(&origin, &[&key]);
    let c = support::client();

    let h = send(c.get(edge.admin_url("/healthz"))).await;
    assert_eq!(h.status, 200, "{h:?}");
    let unknown = send(c.get(edge.admin_url("/nope"))).await;
    assert_eq!(unknown.status, 404);

    let m = send(c.get(edge.admin_url("/metrics"))).await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type")
            .unwrap_or("")
            .starts_with("text/plain"),
        "Prometheus text: {:?}",
        m.header("content-type")
    );
    let samples = support::parse_metrics(&m.body).unwrap_or_else(|e| panic!("{e}\n{}", m.body));
    assert!(!samples.is_empty());
    assert_eq!(support::metric(&m.body, "tollgate_keys_loaded", &[]), 1.0);

    // A known request moves its counter by exactly one.
    let sub = tokens::subscriber(&key, "alice");
    let labels = [
        ("route", "/premium/*"),
        ("variant", "subscriber"),
        ("cache_status", "miss"),
        ("status_class", "2xx"),
    ];
    // (no request has been answered yet: the counter is exported from its first series on)
    assert!(!edge.metrics().await.contains("tollgate_requests_total"));
    let before = 0.0;
    let valid_before = edge
        .metric("tollgate_auth_decisions_total", &[("result", "valid")])
        .await;
    assert!(get(&edge, "/premium/m", Tok::Bearer(&sub)).await.is_full());
    let after = edge
        .wait_metric("tollgate_requests_total", &labels, before + 1.0)
        .await;
    assert_eq!(after, before + 1.0, "tollgate_requests_total{labels:?}");
    assert_eq!(
        edge.metric("tollgate_auth_decisions_total", &[("result", "valid")])
            .await,
        valid_before + 1.0
    );
    let hit = [
        ("route", "/premium/*"),
        ("variant", "subscriber"),
        ("cache_status", "hit"),
        ("status_class", "2xx"),
    ];
    get(&edge, "/premium/m", Tok::Bearer(&sub)).await;
    assert_eq!(
        edge.wait_metric("tollgate_requests_total", &hit, 1.0).await,
        1.0
    );
    // The token was verified once (the miss) and found in the token cache on each request after.
    get(&edge, "/premium/m", Tok::Bearer(&sub)).await;
    let lookups = "tollgate_token_cache_lookups_total";
    assert_eq!(edge.metric(lookups, &[("result", "miss")]).await, 1.0);
    assert_eq!(edge.metric(lookups, &[("result", "hit")]).await, 2.0);
    assert_eq!(
        edge.metric("tollgate_token_cache_evictions_total", &[])
            .await,
        0.0
    );

    // Every sample still parses after traffic, and the 404 is counted under 4xx.
    get(&edge, "/nowhere", Tok::None).await;
    let text = edge.metrics().await;
    support::parse_metrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    // Label-vector families appear once they have a series (the prometheus crate omits empty
    // vectors), so HELP/TYPE are checked after traffic.
    for family in [
        "tollgate_requests_total",
        "tollgate_auth_decisions_total",
        "tollgate_request_duration_seconds",
        "tollgate_keys_loaded",
        "tollgate_token_cache_lookups_total",
        "tollgate_token_cache_evictions_total",
    ] {
        let help = format!("# HELP {family} ");
        let ty = format!("# TYPE {family} ");
        assert!(
            text.lines().any(|l| l.starts_with(&help)),
            "{help} missing:\n{}",
            text
        );
        assert!(
            text.lines().any(|l| l.starts_with(&ty)),
            "{ty} missing:\n{}",
            text
        );
    }
    assert!(text
        .lines()
        .any(|l| l == "# TYPE tollgate_requests_total counter"));
    assert!(
        edge.wait_metric("tollgate_requests_total", &[("status_class", "4xx")], 1.0)
            .await
            >= 1.0
    );
}

#[test]
fn metrics_parser_rejects_what_prometheus_rejects() {
    // The parser itself must be able to fail, or the checks above prove nothing.
    assert!(support::parse_metrics("a_total{x=\"1\"} 3\n# HELP a_total x\nb 1.5e3\n").is_ok());
    for bad in [
        "a_total{x=1} 3",
        "a_total 3 4 5",
        "a_total{x=\"1\"}",
        "a_total{x=\"1\"} abc",
        "1a 2",
    ] {
        assert!(
            support::parse_metrics(bad).is_err(),
            "{bad:?} should not parse"
        );
    }
}

fn tollgate(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run tollgate")
}

#[test]
fn check_reports_every_problem_with_its_key_path() {
    let key = tokens::es256("k1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("jwks.json"),
        tollgate::auth::mint::jwks_json(&[&key]),
    )
    .unwrap();
    std::fs::write(dir.path().join("admin.token"), "short\n").unwrap();
    std::fs::write(
        dir.path().join("origin.secret"),
        "s3cret-value-for-origin\n",
    )
    .unwrap();
    // `check` binds nothing, but the ports are still never hard-coded.
    let [port, admin_port, origin_port] = support::free_ports::<3>();
    let good = format!(
        "\
listeners: [ {{ addr: 127.0.0.1:{port} }} ]
admin: {{ addr: 127.0.0.1:{admin_port}, token_file: good.token }}
origins:
  news: {{ url: http://127.0.0.1:{origin_port}, secret_header: x-api-key, secret_file: origin.secret }}
keys: {{ jwks_file: jwks.json }}
routes:
  - {{ match: \"/premium/*\", origin: news, access: paywall, require: [premium], cache: {{ default_ttl: 5m }} }}
  - {{ match: \"/*\", origin: news, access: public }}
"
    );
    std::fs::write(dir.path().join("good.token"), "0123456789abcdef0123\n").unwrap();
    let good_path = dir.path().join("good.yaml");
    std::fs::write(&good_path, &good).unwrap();
    let out = tollgate(&["check", "-c", good_path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "a valid config passes: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let broken = good
        .replace("token_file: good.token", "token_file: admin.token")
        .replace(
            "origin: news, access: paywall",
            "origin: nwes, access: paywall",
        )
        .replace("default_ttl: 5m", "default_ttl: 5 fortnights");
    let broken_path = dir.path().join("broken.yaml");
    std::fs::write(&broken_path, broken).unwrap();
    let out = tollgate(&["check", "-c", broken_path.to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "a broken config exits 1:\n{text}"
    );
    for (path, detail) in [
        ("routes[0].origin", "nwes"),
        ("routes[0].cache.default_ttl", "fortnights"),
        ("admin.token_file", "admin.token"),
    ] {
        let line = text
            .lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("no problem reported at {path}:\n{text}"));
        assert!(
            line.contains(detail),
            "{path} line should name {detail:?}: {line}"
        );
    }

    // Starting the edge with it fails the same way, before serving anything.
    let out = tollgate(&["-c", broken_path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes[0].origin"));
}

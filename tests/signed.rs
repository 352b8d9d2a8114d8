//! Issue 5: `access: signed` end to end. URLs and cookies were minted by an independent
//! implementation (botocore's CloudFrontSigner + `cryptography`,
//! `tests/fixtures/cloudfront/mint_e2e.py`) against the real clock; the live edge must accept
//! exactly the valid ones, keep signing parameters out of the cache key and the origin request,
//! and let URL parameters take precedence over cookies. The unit tests
//! (`src/auth/cloudfront_tests.rs`) cover 110 more vectors with an injected clock.

mod support;

use std::path::PathBuf;

use serde_json::Value;
use support::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudfront")
}

/// A string field of the fixture case called `name`.
fn case_field(doc: &Value, name: &str, field: &str) -> String {
    let case = doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"));
    case[field].as_str().unwrap().to_string()
}

fn signed_edge(origin: &Origin) -> (Edge, Value) {
    signed_edge_with_keys(origin, |path| path)
}

/// An edge with the fixture's keys; `place` may copy a key file elsewhere and return the path.
fn signed_edge_with_keys(origin: &Origin, place: impl Fn(PathBuf) -> PathBuf) -> (Edge, Value) {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("e2e.json")).unwrap())
            .unwrap();
    let keys: String = doc["keys"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(id, file)| {
            let path = place(fixtures().join(file.as_str().unwrap()));
            format!("  {id}: {:?}\n", path.to_string_lossy())
        })
        .collect();
    let mut routes = vec![r#"{ match: "/downloads/*", origin: news, access: signed }"#.to_string()];
    routes.extend(default_routes());
    let k = support::tokens::es256("k1");
    let edge = Edge::start_with(
        origin,
        &[&k],
        EdgeOptions {
            routes,
            extra_yaml: format!("signed_keys:\n{keys}"),
            ..EdgeOptions::default()
        },
    );
    (edge, doc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independently_minted_urls_and_cookies_are_judged_like_cloudfront() {
    let origin = Origin::start();
    let (edge, doc) = signed_edge(&origin);
    let host = doc["host"].as_str().unwrap();
    let c = client();
    let cases = doc["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    let (mut accepted, mut refused) = (0, 0);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let path = case["path"].as_str().unwrap();
        let mut rb = c.get(edge.url(path)).header("host", host);
        if let Some(cookie) = case["cookie"].as_str() {
            rb = rb.header("cookie", cookie);
        }
        let r = send(rb).await;
        let want = case["status"].as_u64().unwrap() as u16;
        assert_eq!(r.status, want, "{name}: {}", r.body);
        if want == 200 {
            accepted += 1;
            assert!(r.body.starts_with("PAGE:/downloads/"), "{name}: {}", r.body);
        } else {
            refused += 1;
            assert!(
                !r.body.contains("PAGE:"),
                "{name}: refused requests carry no content"
            );
        }
    }
    assert!(
        accepted >= 6 && refused >= 10,
        "{accepted} accepted, {refused} refused"
    );

    // What the origin saw: no signing parameter, no signed cookie, the entitled variant.
    let seen = origin.requests_for("/downloads/report.pdf");
    assert!(!seen.is_empty());
    for r in &seen {
        for needle in [
            "Signature",
            "Key-Pair-Id",
            "Expires=",
            "Policy=",
            "CloudFront-",
        ] {
            assert!(!r.uri.contains(needle), "origin uri {}", r.uri);
            assert!(
                !r.header("cookie").unwrap_or_default().contains(needle),
                "origin cookie {:?}",
                r.header("cookie")
            );
        }
        assert_eq!(r.header(VARIANT_HEADER).as_deref(), Some("subscriber"));
    }
    // Every accepted signature for /downloads/report.pdf shares one cache entry (the signing
    // parameters are not in the key): the origin was asked once for it (plus once for ?v=2).
    assert_eq!(
        origin.hits("/downloads/report.pdf"),
        2,
        "{:?}",
        seen.iter().map(|r| r.uri.clone()).collect::<Vec<_>>()
    );
    assert!(
        edge.metric(
            "tollgate_auth_decisions_total",
            &[("result", "wrong_resource")]
        )
        .await
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_hit_still_needs_a_valid_signature() {
    let origin = Origin::start();
    let (edge, doc) = signed_edge(&origin);
    let host = doc["host"].as_str().unwrap();
    let good = case_field(&doc, "canned_rsa_sha1", "path");
    let c = client();
    let r = send(c.get(edge.url(&good)).header("host", host)).await;
    assert_eq!((r.status, r.is_miss()), (200, true));
    let r = send(c.get(edge.url(&good)).header("host", host)).await;
    assert_eq!((r.status, r.is_hit()), (200, true));
    // The cached object, asked for without a signature or with a forged one: 403.
    let r = send(
        c.get(edge.url("/downloads/report.pdf"))
            .header("host", host),
    )
    .await;
    assert_eq!(r.status, 403);
    let forged = good.replacen("Signature=", "Signature=AAAA", 1);
    let r = send(c.get(edge.url(&forged)).header("host", host)).await;
    assert_eq!(r.status, 403);
    // Signed for media.test; presented for another host: the canned policy does not match.
    let r = send(c.get(edge.url(&good)).header("host", "evil.test")).await;
    assert_eq!(r.status, 403);
    assert_eq!(origin.hits("/downloads/report.pdf"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_key_file_takes_effect_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let (edge, doc) = signed_edge_with_keys(&origin, |path| {
        let copy = dir.path().join(path.file_name().unwrap());
        std::fs::copy(&path, &copy).unwrap();
        copy
    });
    let host = doc["host"].as_str().unwrap();
    let good = case_field(&doc, "canned_rsa_sha1", "path");
    let c = client();
    let status = || {
        let rb = c.get(edge.url(&good)).header("host", host);
        async move { send(rb).await.status }
    };
    assert_eq!(status().await, 200);
    // A URL signed by the EC key, presented under the RSA key pair's id (the Key-Pair-Id is not
    // part of the signed policy): refused while that id names the RSA key.
    let by_new_key = case_field(&doc, "canned_ecdsa_sha256", "path")
        .replace("Key-Pair-Id=KE2EECDSA", "Key-Pair-Id=KE2ERSA");
    assert_ne!(by_new_key, case_field(&doc, "canned_ecdsa_sha256", "path"));
    let status_of = |path: String| {
        let rb = c.get(edge.url(&path)).header("host", host);
        async move { send(rb).await.status }
    };
    assert_eq!(status_of(by_new_key.clone()).await, 403);
    let rsa = dir.path().join("e2e_rsa.pem");
    // Garbage in the key file: refused, the old key stays in force.
    write_atomic(
        &rsa,
        "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n",
    );
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(status().await, 200);
    assert!(edge.metric("tollgate_key_reload_errors_total", &[]).await >= 1.0);
    // The key pair rotated to another key: URLs signed by the old one stop working.
    let other = std::fs::read_to_string(fixtures().join("e2e_ec.pem")).unwrap();
    write_atomic(&rsa, &other);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status().await != 403 {
        assert!(
            std::time::Instant::now() < deadline,
            "rotated key never took effect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // ... and URLs signed by the new one work.
    assert_eq!(
        status_of(by_new_key).await,
        200,
        "a URL signed with the key now in the file is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_cookies_stay_at_the_edge_and_other_cookies_pass() {
    let origin = Origin::start();
    let (edge, doc) = signed_edge(&origin);
    let host = doc["host"].as_str().unwrap();
    let signed = case_field(&doc, "cookies_rsa", "cookie");
    // The cookie policy covers /downloads/*: any file there.
    let r = send(
        client()
            .get(edge.url("/downloads/with-cookies.txt"))
            .header("host", host)
            .header("cookie", format!("theme=dark; {signed}; lang=fr")),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = origin.last_for("/downloads/with-cookies.txt").unwrap();
    assert_eq!(
        seen.header("cookie").as_deref(),
        Some("theme=dark; lang=fr")
    );
}

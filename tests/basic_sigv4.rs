//! Issue 5: `access: basic` (htpasswd bcrypt realm, 401 + `WWW-Authenticate`) and origins signed
//! with AWS SigV4 (private S3 bucket), end to end through the real edge and a real origin.
//! The signature arithmetic is checked against botocore and the AWS test suite in the unit tests
//! (`src/sigv4_tests.rs`); here: the request the origin receives is exactly the signed one.

mod support;

use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use support::*;

fn basic(user: &str, pass: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    format!("Basic {b64}")
}

fn edge_with_realm(origin: &Origin, dir: &std::path::Path) -> Edge {
    // bcrypt hashes made with the bcrypt crate at the lowest cost (debug builds stay fast).
    let alice = bcrypt::hash("correct horse", 4).unwrap();
    let bob = bcrypt::hash("hunter2", 4).unwrap();
    let file = dir.join("editors.htpasswd");
    std::fs::write(&file, format!("# editors\nalice:{alice}\n\nbob:{bob}\n")).unwrap();
    let k = support::tokens::es256("k1");
    let mut routes =
        vec![r#"{ match: "/drafts/*", origin: news, access: basic, realm: editors }"#.to_string()];
    routes.extend(default_routes());
    Edge::start_with(
        origin,
        &[&k],
        EdgeOptions {
            routes,
            extra_yaml: format!("basic_auth:\n  editors: {:?}\n", file.to_string_lossy()),
            ..EdgeOptions::default()
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_challenges_refuses_and_admits() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let edge = edge_with_realm(&origin, dir.path());
    let c = client();
    let url = edge.url("/drafts/story");

    let r = send(c.get(&url)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Basic realm="editors", charset="UTF-8""#)
    );
    for bad in [
        basic("alice", "wrong"),
        basic("mallory", "correct horse"),
        basic("alice", ""),
        "Basic !!notbase64".to_string(),
        "Bearer abc".to_string(),
        basic("alice", "correct horse").replace("Basic ", "Basic  x"),
    ] {
        let r = send(c.get(&url).header("authorization", &bad)).await;
        assert_eq!(r.status, 401, "{bad}");
        assert!(r.header("www-authenticate").is_some());
        assert!(!r.body.contains("PAGE:"), "no content without credentials");
    }
    assert_eq!(
        origin.hits("/drafts/story"),
        0,
        "refused requests never reach the origin"
    );

    let r = send(
        c.get(&url)
            .header("authorization", basic("alice", "correct horse")),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "PAGE:/drafts/story\n");
    assert!(r.is_miss());
    let seen = origin.last_for("/drafts/story").unwrap();
    assert_eq!(
        seen.header("authorization"),
        None,
        "credentials stay at the edge"
    );
    assert_eq!(seen.header(VARIANT_HEADER).as_deref(), Some("subscriber"));

    // Another editor shares the entry; a hit still needs credentials.
    let r = send(c.get(&url).header("authorization", basic("bob", "hunter2"))).await;
    assert_eq!((r.status, r.is_hit()), (200, true));
    let r = send(c.get(&url)).await;
    assert_eq!(r.status, 401);
    let r = send(c.get(&url).header("authorization", basic("bob", "hunter3"))).await;
    assert_eq!(r.status, 401);
    assert_eq!(origin.hits("/drafts/story"), 1);

    assert!(
        edge.metric(
            "tollgate_auth_decisions_total",
            &[("result", "bad_credentials")]
        )
        .await
            >= 3.0
    );
    assert!(
        edge.metric("tollgate_auth_decisions_total", &[("result", "valid")])
            .await
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_or_plain_text_htpasswd_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.htpasswd");
    std::fs::write(&file, "alice:plaintext-password\n").unwrap();
    let config = dir.path().join("t.yaml");
    std::fs::write(
        &config,
        format!(
            "listeners: [{{ addr: '127.0.0.1:{}' }}]\norigins: {{ o: {{ url: 'http://127.0.0.1:9' }} }}\n\
             basic_auth: {{ editors: {:?} }}\n\
             routes: [{{ match: '/*', origin: o, access: basic, realm: editors }}]\n",
            free_port(),
            file.to_string_lossy()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check must fail: {text}");
    assert!(text.contains("basic_auth.editors"), "{text}");
    assert!(
        !text.contains("plaintext-password"),
        "never echo a secret: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_requests_are_signed_with_sigv4_and_sent_as_signed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("s3.secret");
    std::fs::write(&secret, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n").unwrap();
    let origin = Origin::start();
    let k = support::tokens::es256("k1");
    let edge = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            origin_extra: vec![format!(
                "sigv4: {{ region: eu-west-1, access_key_id: AKIDEXAMPLE, secret_access_key_file: {:?} }}",
                secret.to_string_lossy()
            )],
            ..EdgeOptions::default()
        },
    );
    let c = client();
    let r = send(
        c.get(edge.url("/news/a%20file(1).txt?b=2&a=1"))
            .header("x-amz-meta-evil", "client")
            .header("x-amz-date", "20000101T000000Z"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = origin.requests().into_iter().last().expect("origin asked");
    let auth = seen.header("authorization").expect("signed");
    let date = seen.header("x-amz-date").expect("x-amz-date");
    assert_ne!(
        date, "20000101T000000Z",
        "the client's x-amz-date is replaced"
    );
    assert_eq!(
        seen.header("x-amz-meta-evil"),
        None,
        "unsigned x-amz-* never reach S3"
    );
    assert!(
        auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/{}/eu-west-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=",
            &date[..8]
        )),
        "{auth}"
    );
    assert_eq!(
        seen.header("x-amz-content-sha256").as_deref(),
        Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    // Re-sign what the origin actually received, at the signed time: same Authorization.
    let t = chrono_like(&date);
    let signer = tollgate::sigv4::SigV4Signer::new(
        tollgate::sigv4::SigV4Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
        )
        .unwrap(),
        "eu-west-1",
        "s3",
    )
    .unwrap();
    let host = seen.header("host").unwrap();
    let again = signer
        .sign(
            &tollgate::sigv4::OriginRequest {
                method: &seen.method,
                host: &host,
                path_and_query: &seen.uri,
                payload: tollgate::sigv4::Payload::Empty,
                signed_headers: &[],
            },
            t,
        )
        .unwrap();
    assert_eq!(
        again.path_and_query, seen.uri,
        "the origin got the canonical path"
    );
    let expected = again
        .headers
        .iter()
        .find(|(k, _)| *k == "authorization")
        .map(|(_, v)| v.clone());
    assert_eq!(expected.as_deref(), Some(auth.as_str()));
}

/// `YYYYMMDDTHHMMSSZ` → SystemTime (days from civil, no calendar crate needed).
fn chrono_like(amz: &str) -> std::time::SystemTime {
    let n = |a: usize, b: usize| amz[a..b].parse::<i64>().unwrap();
    let (y, m, d) = (n(0, 4), n(4, 6), n(6, 8));
    let (hh, mm, ss) = (n(9, 11), n(11, 13), n(13, 15));
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    UNIX_EPOCH + Duration::from_secs((days * 86_400 + hh * 3600 + mm * 60 + ss) as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_htpasswd_file_is_picked_up_and_a_broken_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::start();
    let edge = edge_with_realm(&origin, dir.path());
    let file = dir.path().join("editors.htpasswd");
    let c = client();
    let url = edge.url("/drafts/rotated");
    let status = |auth: String| {
        let rb = c.get(&url).header("authorization", auth);
        async move { send(rb).await.status }
    };
    assert_eq!(status(basic("alice", "correct horse")).await, 200);

    // A broken file (plain-text password) is refused; the old credentials stay valid.
    write_atomic(&file, "alice:plain-text\n");
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(status(basic("alice", "correct horse")).await, 200);
    assert!(edge.metric("tollgate_key_reload_errors_total", &[]).await >= 1.0);

    // A new password for alice replaces the old one within a reload interval (1 s here).
    let new_hash = bcrypt::hash("new passphrase", 4).unwrap();
    write_atomic(&file, &format!("alice:{new_hash}\n"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while status(basic("alice", "new passphrase")).await != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "new password never accepted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        status(basic("alice", "correct horse")).await,
        401,
        "old password revoked"
    );
    assert_eq!(
        status(basic("bob", "hunter2")).await,
        401,
        "bob was removed"
    );
}

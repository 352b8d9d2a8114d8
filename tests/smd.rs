//! AWS Secure Media Delivery tokens through the real edge: a publisher moving from AWS keeps
//! its token service. The format itself is covered by known answers in `src/auth/smd_tests.rs`
//! (tokens minted by PyJWT); this proves the edge accepts, scopes, binds and revokes them.

mod support;

use ring::hmac;
use serde_json::{json, Value};
use support::{send, tokens, Edge, EdgeOptions, Origin};
use tollgate::auth::mint::b64url;

const KID: &str = "20240101_0123456789abcdef0123";
const SECRET: &str = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99";

/// An HS256 token as the AWS token service makes it. With `bind = Some((ip, sid))` it carries
/// `intsig` over the viewer IP and the session id (the `<sid>.` path prefix).
fn smd_token(secret: &str, paths: &[&str], ttl: i64, bind: Option<(&str, &str)>) -> String {
    let now = tokens::now();
    let mut payload = json!({ "paths": paths, "exp": now + ttl, "iat": now });
    if let Some((ip, sid)) = bind {
        let input = format!("{ip}:{sid}");
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
            input.as_bytes(),
        );
        payload["ip"] = Value::Bool(true);
        payload["ip_ver"] = json!(4);
        payload["ssn"] = Value::Bool(true);
        payload["intsig"] = Value::String(b64url(tag.as_ref()));
    }
    let h = b64url(
        json!({"alg": "HS256", "typ": "JWT", "kid": KID})
            .to_string()
            .as_bytes(),
    );
    let p = b64url(payload.to_string().as_bytes());
    let input = format!("{h}.{p}");
    let sig = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        input.as_bytes(),
    );
    let token = format!("{input}.{}", b64url(sig.as_ref()));
    match bind {
        Some((_, sid)) => format!("{sid}.{token}"),
        None => token,
    }
}

fn start(origin: &Origin, secrets_dir: &std::path::Path) -> Edge {
    let secrets = secrets_dir.join("smd-secrets.json");
    std::fs::write(&secrets, json!({ KID: SECRET }).to_string()).unwrap();
    let key = tokens::es256("k1");
    let opts = EdgeOptions {
        routes: vec![r#"{ match: "/vod/*", origin: news, access: token }"#.into()],
        token_sources: vec!["path".into(), "query:token".into()],
        extra_yaml: format!("smd: {{ secrets_file: {} }}\n", secrets.display()),
        ..EdgeOptions::default()
    };
    Edge::start_with(origin, &[&key], opts)
}

async fn status(client: &reqwest::Client, edge: &Edge, path: &str) -> u16 {
    send(client.get(edge.url(path))).await.status
}

#[tokio::test]
async fn aws_tokens_are_accepted_scoped_and_forged_ones_refused() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let edge = start(&origin, dir.path());
    let c = support::client();

    let ok = smd_token(SECRET, &["/vod/abc/"], 600, None);
    assert_eq!(
        status(&c, &edge, &format!("/{ok}/vod/abc/index.m3u8")).await,
        200
    );
    // segment boundary: AWS's prefix match would let /vod/abcdef through
    let narrow = smd_token(SECRET, &["/vod/abc"], 600, None);
    assert_eq!(
        status(&c, &edge, &format!("/{narrow}/vod/abc/1.ts")).await,
        200
    );
    assert_eq!(
        status(&c, &edge, &format!("/{narrow}/vod/abcdef/1.ts")).await,
        403
    );

    let forged = smd_token("not-the-secret", &["/vod/abc/"], 600, None);
    assert_eq!(
        status(&c, &edge, &format!("/{forged}/vod/abc/index.m3u8")).await,
        403
    );
    let expired = smd_token(SECRET, &["/vod/abc/"], -120, None);
    assert_eq!(
        status(&c, &edge, &format!("/{expired}/vod/abc/index.m3u8")).await,
        403
    );
    assert_eq!(status(&c, &edge, "/vod/abc/index.m3u8").await, 403);

    // the origin saw the path without the token, once
    let seen: Vec<String> = origin.requests().iter().map(|r| r.uri.clone()).collect();
    assert!(
        seen.iter().all(|u| !u.contains(KID) && !u.contains("eyJ")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|u| u == "/vod/abc/index.m3u8"), "{seen:?}");
}

#[tokio::test]
async fn aws_session_bound_tokens_check_the_viewer_and_can_be_revoked() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let edge = start(&origin, dir.path());
    let token = smd_token(
        SECRET,
        &["/vod/show/"],
        600,
        Some(("127.0.0.1", "sess-aws-1")),
    );
    let path = format!("/{token}/vod/show/seg1.ts");

    let here = support::client_from("127.0.0.1".parse().unwrap());
    let elsewhere = support::client_from("127.0.0.2".parse().unwrap());
    assert_eq!(status(&here, &edge, &path).await, 200);
    assert_eq!(
        status(&elsewhere, &edge, &path).await,
        403,
        "intsig binds the viewer IP"
    );
    // the unsigned session prefix is covered by intsig: changing it breaks the binding
    let renamed = path.replacen("sess-aws-1.", "sess-other.", 1);
    assert_eq!(status(&here, &edge, &renamed).await, 403);

    let (code, _) = edge.revoke("sess-aws-1", Some(600)).await;
    assert_eq!(code, 200);
    assert_eq!(
        status(&here, &edge, &path).await,
        403,
        "a revoked AWS session is refused"
    );
}

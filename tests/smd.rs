//! AWS Secure Media Delivery tokens through the real edge: a publisher moving from AWS keeps
//! its token service. The format itself is covered by known answers in `src/auth/smd_tests.rs`
//! (tokens minted by PyJWT); this proves the edge accepts, scopes, binds and revokes them.

mod support;

use serde_json::json;
use support::{send, tokens, Edge, EdgeOptions, Origin};

const KID: &str = "20240101_0123456789abcdef0123";
const SECRET: &str = "5f4dcc3b5aa765d61d8327deb882cf995f4dcc3b5aa765d61d8327deb882cf99";

/// An AWS Secure Media Delivery token under [`KID`] ([`tokens::smd`]).
fn smd_token(secret: &str, paths: &[&str], ttl: i64, bind: Option<(&str, &str)>) -> String {
    tokens::smd(KID, secret, paths, ttl, bind)
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

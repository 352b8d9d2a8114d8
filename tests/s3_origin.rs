//! A private S3 origin, end to end, against an S3 server that checks SigV4 itself: `s3s-fs`
//! (the `s3s` crate's file-system S3 server), run in the test with its own credential store.
//! Objects are served through the edge; a secret key the server does not accept is the edge's
//! configuration problem (502, nothing cached); a key rotated in the secret file is picked up
//! without a restart.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use s3s::auth::{S3Auth, SecretKey};
use s3s::S3Result;
use support::{get, tokens, Edge, EdgeOptions, Origin, Tok};

const ACCESS_KEY: &str = "AKIATOLLGATETEST";

/// The server's credential store: one access key whose secret the test changes.
#[derive(Clone)]
struct Keys(Arc<Mutex<String>>);

#[async_trait::async_trait]
impl S3Auth for Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key != ACCESS_KEY {
            return Err(s3s::s3_error!(InvalidAccessKeyId));
        }
        Ok(SecretKey::from(self.0.lock().unwrap().clone()))
    }
}

/// Run `s3s-fs` over `root` on 127.0.0.1 (its own thread and runtime); returns its port.
fn s3_server(root: &std::path::Path, keys: Keys) -> u16 {
    let fs = s3s_fs::FileSystem::new(root).expect("s3s-fs root");
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(keys);
    let service = builder.build();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
    });
    port
}

#[tokio::test]
async fn a_private_bucket_through_the_edge_with_real_sigv4_checks_and_a_rotated_key() {
    let data = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(data.path().join("news")).unwrap();
    std::fs::write(data.path().join("news/a.txt"), "object a from the bucket\n").unwrap();
    std::fs::write(data.path().join("news/b.txt"), "object b from the bucket\n").unwrap();
    let server_secret = Keys(Arc::new(Mutex::new("first-secret-key-0123456789".into())));
    let port = s3_server(data.path(), server_secret.clone());

    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("s3.secret");
    std::fs::write(&secret_file, "first-secret-key-0123456789\n").unwrap();
    let key = tokens::es256("k1");
    let placeholder = Origin::start(); // the edge's other routes; never asked here
    let edge = Edge::start_with(
        &placeholder,
        &[&key],
        EdgeOptions {
            origin_url: Some(format!("http://127.0.0.1:{port}")),
            origin_extra: vec![format!(
                "sigv4: {{ region: us-east-1, access_key_id: {ACCESS_KEY}, \
                 secret_access_key_file: {:?} }}",
                secret_file.display().to_string()
            )],
            reload_interval_seconds: 1,
            ..EdgeOptions::default()
        },
    );

    let r = get(&edge, "/news/a.txt", Tok::None).await;
    assert_eq!(r.status, 200, "{r:?}\n{}", edge.stderr_tail(10));
    assert_eq!(r.body, "object a from the bucket\n");
    assert!(get(&edge, "/news/a.txt", Tok::None).await.is_hit());

    // the bucket's key is rotated; the edge still signs with the old one
    *server_secret.0.lock().unwrap() = "second-secret-key-987654321".into();
    for _ in 0..2 {
        let r = get(&edge, "/news/b.txt", Tok::None).await;
        assert_eq!(r.status, 502, "{r:?}");
        assert!(
            !r.body.contains("SignatureDoesNotMatch"),
            "the bucket's error is not passed on"
        );
        assert!(!r.is_hit(), "a refused signature caches nothing");
    }
    assert!(edge.stderr().contains("refused the edge's SigV4 signature"));

    // the operator writes the new key into the secret file: used without a restart
    std::fs::write(&secret_file, "second-secret-key-987654321\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = get(&edge, "/news/b.txt", Tok::None).await;
        if r.status == 200 {
            assert_eq!(r.body, "object b from the bucket\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated key was not used within 10 s: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

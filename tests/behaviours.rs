//! CloudFront-style behaviours (issue 5): TLS listeners with HTTP/2 and SNI, HTTPS origins with a
//! pinned CA, query-string policies, viewer protocol policy, allowed methods, and the headers and
//! cookies forwarded to the origin. Real origin, real edge, real TLS clients (`curl`, built on
//! OpenSSL/GnuTLS independently of the edge) with certificates made in the test.

mod support;

use std::path::Path;
use std::process::Command;

use support::certs::Ca;
use support::*;
use tollgate::auth::SigningKey;

fn key() -> SigningKey {
    support::tokens::es256("k1")
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Run `curl` with `args` plus a `-w` trailer; returns (exit code, "http_version status", body).
fn curl(args: &[String]) -> (i32, String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-w",
            "\n%{http_version} %{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl (install it: apt-get install -y curl)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, meta) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    (
        out.status.code().unwrap_or(-1),
        meta.to_string(),
        body.to_string(),
    )
}

/// `curl` over TLS to `name:port` (resolved to 127.0.0.1), trusting only `ca`.
/// Returns (exit code, "http_version status", body).
fn curl_tls(ca: &Path, name: &str, port: u16, path: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "--cacert".to_string(),
        path_str(ca),
        "--resolve".to_string(),
        format!("{name}:{port}:127.0.0.1"),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push(format!("https://{name}:{port}{path}"));
    curl(&args)
}

/// A TLS listener mapping for `EdgeOptions::extra_listeners`.
fn tls_listener(port: u16, cert: &Path, key: &Path, sni: &[(&Path, &Path)]) -> String {
    let sni: Vec<String> = sni
        .iter()
        .map(|(c, k)| format!("{{ cert: {:?}, key: {:?} }}", path_str(c), path_str(k)))
        .collect();
    format!(
        "{{ addr: \"127.0.0.1:{port}\", tls: {{ cert: {:?}, key: {:?}, sni: [{}] }} }}",
        path_str(cert),
        path_str(key),
        sni.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_h2_and_picks_the_certificate_by_sni() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "Tollgate Test CA", "ca.pem");
    let (a_crt, a_key) = ca.leaf(dir.path(), "a", &["a.test"]);
    let (b_crt, b_key) = ca.leaf(dir.path(), "b", &["b.test", "*.b.test"]);
    let origin = Origin::start();
    let tls_port = free_port();
    let k = key();
    let edge = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            extra_listeners: vec![tls_listener(tls_port, &a_crt, &a_key, &[(&b_crt, &b_key)])],
            ..EdgeOptions::default()
        },
    );

    let (code, meta, body) = curl_tls(&ca.pem, "a.test", tls_port, "/news/tls", &["--http2"]);
    assert_eq!((code, meta.as_str()), (0, "2 200"), "body: {body}");
    assert_eq!(body, "PUBLIC:/news/tls\n");
    let seen = origin.last_for("/news/tls").expect("origin asked");
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));

    // The SNI certificate: curl checks the name, so a wrong certificate fails the request.
    let (code, meta, _) = curl_tls(&ca.pem, "b.test", tls_port, "/news/tls", &["--http2"]);
    assert_eq!((code, meta.as_str()), (0, "2 200"));
    let (code, meta, _) = curl_tls(&ca.pem, "img.b.test", tls_port, "/news/tls", &[]);
    assert_eq!((code, meta.as_str()), (0, "2 200"));
    // HTTP/1.1 still offered.
    let (code, meta, _) = curl_tls(&ca.pem, "b.test", tls_port, "/news/tls", &["--http1.1"]);
    assert_eq!((code, meta.as_str()), (0, "1.1 200"));
    // An unknown name gets the default certificate (a.test), which the client rightly refuses.
    let (code, _, _) = curl_tls(&ca.pem, "c.test", tls_port, "/news/tls", &[]);
    assert_eq!(
        code, 60,
        "curl must fail certificate verification (exit 60)"
    );
    // The plain listener still serves, and says the origin was asked over http.
    let r = get(&edge, "/news/plain", Tok::None).await;
    assert_eq!(r.status, 200);
    let seen = origin.last_for("/news/plain").expect("origin asked");
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_origin_works_with_its_ca_pinned_and_is_refused_without() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "Private Origin CA", "origin-ca.pem");
    let (crt, keyf) = ca.leaf(dir.path(), "origin", &["origin.test"]);
    let origin = Origin::start();
    let k = key();
    // The HTTPS origin: an edge with a TLS listener in front of the plain test origin.
    let tls_port = free_port();
    let _https_origin = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            extra_listeners: vec![tls_listener(tls_port, &crt, &keyf, &[])],
            ..EdgeOptions::default()
        },
    );
    let url = format!("https://127.0.0.1:{tls_port}");
    let pinned = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            origin_url: Some(url.clone()),
            origin_extra: vec![
                format!("ca_file: {:?}", path_str(&ca.pem)),
                "tls_name: origin.test".into(),
            ],
            ..EdgeOptions::default()
        },
    );
    let r = get(&pinned, "/news/over-tls", Tok::None).await;
    assert_eq!(r.status, 200, "body: {}", r.body);
    assert_eq!(r.body, "PUBLIC:/news/over-tls\n");
    assert_eq!(origin.hits("/news/over-tls"), 1);

    // Same origin, no pinned CA: the system roots do not know this CA, so no connection.
    let unpinned = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            origin_url: Some(url),
            origin_extra: vec!["tls_name: origin.test".into()],
            ..EdgeOptions::default()
        },
    );
    let r = get(&unpinned, "/news/refused", Tok::None).await;
    assert_eq!(r.status, 502, "an unverifiable origin must not be used");
    assert_eq!(origin.hits("/news/refused"), 0);
}

fn routes(extra: &[&str]) -> Vec<String> {
    let mut r: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    r.extend(default_routes());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_string_policies_shape_the_cache_key_and_the_origin_request() {
    let origin = Origin::start();
    let k = key();
    let edge = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            routes: routes(&[
                r#"{ match: "/qnone/*", origin: news, access: public, query: none }"#,
                r#"{ match: "/qallow/*", origin: news, access: public, query: [a, b] }"#,
                r#"{ match: "/qall/*", origin: news, access: public }"#,
            ]),
            ..EdgeOptions::default()
        },
    );
    // none: no query reaches the origin, all queries share one entry.
    assert!(get(&edge, "/qnone/x?u=1", Tok::None).await.is_miss());
    let seen = origin.last_for("/qnone/x").unwrap();
    assert_eq!(seen.query, None, "origin saw {:?}", seen.uri);
    assert!(get(&edge, "/qnone/x?u=2&v=3", Tok::None).await.is_hit());
    assert_eq!(origin.hits("/qnone/x"), 1);

    // allow-list: only a and b, in the client's order; others neither key nor forward.
    assert!(get(&edge, "/qallow/x?z=9&b=2&a=1", Tok::None)
        .await
        .is_miss());
    let seen = origin.last_for("/qallow/x").unwrap();
    assert_eq!(seen.query.as_deref(), Some("b=2&a=1"));
    assert!(get(&edge, "/qallow/x?b=2&z=8&a=1", Tok::None)
        .await
        .is_hit());
    assert!(get(&edge, "/qallow/x?b=3&a=1", Tok::None).await.is_miss());
    assert_eq!(origin.hits("/qallow/x"), 2);

    // all (default): every parameter matters.
    assert!(get(&edge, "/qall/x?u=1", Tok::None).await.is_miss());
    assert!(get(&edge, "/qall/x?u=2", Tok::None).await.is_miss());
    assert_eq!(
        origin.last_for("/qall/x").unwrap().query.as_deref(),
        Some("u=2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_protocol_policies_redirect_or_refuse_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "Tollgate Test CA", "ca.pem");
    let (crt, keyf) = ca.leaf(dir.path(), "site", &["site.test"]);
    let origin = Origin::start();
    let tls_port = free_port();
    let k = key();
    let edge = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            extra_listeners: vec![tls_listener(tls_port, &crt, &keyf, &[])],
            routes: routes(&[
                r#"{ match: "/secure/*", origin: news, access: public, viewer_protocol: redirect_to_https }"#,
                r#"{ match: "/only/*", origin: news, access: public, viewer_protocol: https_only }"#,
            ]),
            ..EdgeOptions::default()
        },
    );
    let c = client();
    let r = send(
        c.get(edge.url("/secure/page?x=1"))
            .header("host", "site.test"),
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        r.header("location"),
        Some(format!("https://site.test:{tls_port}/secure/page?x=1").as_str())
    );
    let r = send(
        c.post(edge.url("/secure/form"))
            .header("host", "site.test:8080"),
    )
    .await;
    assert_eq!(r.status, 307, "other methods keep their method");
    assert_eq!(
        r.header("location"),
        Some(format!("https://site.test:{tls_port}/secure/form").as_str())
    );
    let r = get(&edge, "/only/page", Tok::None).await;
    assert_eq!(r.status, 403);
    assert_eq!(origin.total(), 0, "nothing refused reached the origin");

    // Over TLS both are served.
    for path in ["/secure/page?x=1", "/only/page"] {
        let (code, meta, body) = curl_tls(&ca.pem, "site.test", tls_port, path, &[]);
        assert_eq!((code, meta.as_str()), (0, "2 200"), "{path}: {body}");
    }
    // Following the redirect with a real client lands on the TLS listener.
    let (code, meta, body) = curl(&[
        "-L".into(),
        "--cacert".into(),
        path_str(&ca.pem),
        "--resolve".into(),
        format!("site.test:{tls_port}:127.0.0.1"),
        "--resolve".into(),
        format!("site.test:{}:127.0.0.1", edge.port),
        format!("http://site.test:{}/secure/follow", edge.port),
    ]);
    assert_eq!((code, meta.as_str()), (0, "2 200"));
    assert_eq!(body, "PAGE:/secure/follow\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_methods_and_forwarding_lists() {
    let origin = Origin::start();
    let k = key();
    let edge = Edge::start_with(
        &origin,
        &[&k],
        EdgeOptions {
            routes: routes(&[
                r#"{ match: "/ro/*", origin: news, access: public, methods: [GET] }"#,
                r#"{ match: "/fw/*", origin: news, access: public, forward_headers: [x-keep, Accept-Language], forward_cookies: [keep] }"#,
                r#"{ match: "/nocookie/*", origin: news, access: public, forward_cookies: none }"#,
            ]),
            ..EdgeOptions::default()
        },
    );
    let c = client();
    let r = send(c.post(edge.url("/ro/x")).body("data")).await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    let r = send(c.delete(edge.url("/ro/x"))).await;
    assert_eq!(r.status, 405);
    assert_eq!(origin.hits("/ro/x"), 0);
    assert_eq!(get(&edge, "/ro/x", Tok::None).await.status, 200);
    assert_eq!(send(c.head(edge.url("/ro/y"))).await.status, 200);

    let r = send(
        c.get(edge.url("/fw/a"))
            .header("x-keep", "1")
            .header("x-drop", "2")
            .header("accept-language", "fr")
            .header("user-agent", "ua-should-not-pass")
            .header("cookie", "keep=1; drop=2; token=abc"),
    )
    .await;
    assert_eq!(r.status, 200);
    let seen = origin.last_for("/fw/a").unwrap();
    assert_eq!(seen.header("x-keep").as_deref(), Some("1"));
    assert_eq!(seen.header("accept-language").as_deref(), Some("fr"));
    assert_eq!(seen.header("x-drop"), None);
    assert_eq!(seen.header("user-agent"), None);
    assert_eq!(seen.header("cookie").as_deref(), Some("keep=1"));
    // The edge's own headers are still added.
    assert_eq!(
        seen.header(SECRET_HEADER).as_deref(),
        Some(edge.secret.as_str())
    );
    assert_eq!(seen.header(VARIANT_HEADER).as_deref(), Some("public"));

    let r = send(c.get(edge.url("/nocookie/a")).header("cookie", "a=1; b=2")).await;
    assert_eq!(r.status, 200);
    let seen = origin.last_for("/nocookie/a").unwrap();
    assert_eq!(seen.header("cookie"), None);
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("http"));
}

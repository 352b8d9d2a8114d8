//! `tollgate demo`, the embedded default: a demo origin with a few articles (full text for
//! subscribers, a teaser for everyone else), a fresh ES256 key, the edge on localhost, and the
//! `curl` lines that show the paywall working.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use pingora_core::services::listening::Service;

use crate::app::RunFlags;
use crate::auth::{mint, Alg};
use crate::edge::{unix_now, Edge, VARIANT_HEADER};

/// The header the demo origin requires (the edge adds it on every fill).
pub const DEMO_SECRET_HEADER: &str = "x-origin-secret";

/// Options of `tollgate demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Edge port on 127.0.0.1.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Demo origin port on 127.0.0.1.
    #[arg(long, default_value_t = 9000)]
    pub origin_port: u16,
    /// Admin port on 127.0.0.1.
    #[arg(long, default_value_t = 9100)]
    pub admin_port: u16,
    /// Where to write the generated keys and config (default: a new temporary directory).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl Default for DemoArgs {
    fn default() -> Self {
        DemoArgs {
            port: 8080,
            origin_port: 9000,
            admin_port: 9100,
            dir: None,
        }
    }
}

struct Article {
    slug: &'static str,
    title: &'static str,
    teaser: &'static str,
    full: &'static str,
}

const ARTICLES: &[Article] = &[
    Article {
        slug: "edge-paywalls",
        title: "Paywalls move to the edge",
        teaser: "Publishers are moving their paywall logic out of the origin...",
        full: "Publishers are moving their paywall logic out of the origin and into the CDN: \
               the edge verifies the reader's token, picks the subscriber or the teaser \
               variant, and serves both from cache. SUBSCRIBER-ONLY: the origin now sees a \
               fraction of the traffic it used to.",
    },
    Article {
        slug: "token-rotation",
        title: "Rotating signing keys without downtime",
        teaser: "Two keys live at once, and readers never notice...",
        full: "Two keys live at once, and readers never notice: new tokens are signed with the \
               new key while tokens signed with the old one stay valid until it is removed. \
               SUBSCRIBER-ONLY: the JWKS file is reloaded in place.",
    },
];

/// The demo origin: requires the edge's secret, renders by `x-tollgate-variant`, counts hits.
pub struct DemoOrigin {
    secret: String,
    hits: AtomicU64,
}

impl DemoOrigin {
    /// An origin that only answers requests carrying `secret` in [`DEMO_SECRET_HEADER`].
    pub fn new(secret: String) -> DemoOrigin {
        DemoOrigin {
            secret,
            hits: AtomicU64::new(0),
        }
    }
}

fn html(status: StatusCode, cache_control: &str, body: String) -> Response<Vec<u8>> {
    let body = body.into_bytes();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let len = r.body().len();
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(http::header::CONTENT_LENGTH, len.into());
    if let Ok(v) = http::HeaderValue::from_str(cache_control) {
        h.insert(http::header::CACHE_CONTROL, v);
    }
    r
}

#[async_trait]
impl ServeHttp for DemoOrigin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_owned();
        if path == "/__hits" {
            let n = self.hits.load(Ordering::Relaxed);
            return html(StatusCode::OK, "no-store", format!("{n}\n"));
        }
        let secret_ok = req
            .headers
            .get(DEMO_SECRET_HEADER)
            .is_some_and(|v| v.as_bytes() == self.secret.as_bytes());
        if !secret_ok {
            return html(
                StatusCode::FORBIDDEN,
                "no-store",
                "origin: requests must come through the edge\n".into(),
            );
        }
        self.hits.fetch_add(1, Ordering::Relaxed);
        let subscriber = req
            .headers
            .get(VARIANT_HEADER)
            .is_some_and(|v| v.as_bytes() == b"subscriber");
        let slug = path
            .strip_prefix("/premium/")
            .or_else(|| path.strip_prefix("/news/"));
        match slug.and_then(|s| ARTICLES.iter().find(|a| a.slug == s)) {
            Some(a) if path.starts_with("/premium/") => {
                let text = if subscriber { a.full } else { a.teaser };
                let cta = if subscriber {
                    ""
                } else {
                    "<p><a href=\"/subscribe\">Subscribe to read on</a></p>"
                };
                html(
                    StatusCode::OK,
                    "public, max-age=60",
                    format!("<h1>{}</h1>\n<p>{text}</p>{cta}\n", a.title),
                )
            }
            Some(a) => html(
                StatusCode::OK,
                "public, max-age=60",
                format!("<h1>{}</h1>\n<p>{}</p>\n", a.title, a.teaser),
            ),
            None if path == "/" => {
                let list: String = ARTICLES
                    .iter()
                    .map(|a| format!("<li><a href=\"/premium/{}\">{}</a></li>", a.slug, a.title))
                    .collect();
                html(
                    StatusCode::OK,
                    "public, max-age=10",
                    format!("<h1>Demo Times</h1><ul>{list}</ul>\n"),
                )
            }
            None => html(StatusCode::NOT_FOUND, "max-age=5", "not found\n".into()),
        }
    }
}

fn ensure_free(port: u16, flag: &str) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpListener::bind(addr)
        .map(drop)
        .with_context(|| format!("port {port} is busy: pick another with {flag}"))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// The demo config, in the same YAML a user would write.
fn demo_yaml(args: &DemoArgs) -> String {
    format!(
        r#"# generated by `tollgate demo`
listeners:
  - addr: 127.0.0.1:{port}
admin:
  addr: 127.0.0.1:{admin}
  token_file: admin.token
origins:
  demo:
    url: http://127.0.0.1:{origin}
    secret_header: {secret_header}
    secret_file: origin.secret
keys:
  jwks_file: keys/jwks.json
auth:
  leeway_seconds: 30
  subscriptions_claim: subs
  token_sources: ["query:token", bearer, "cookie:token"]
routes:
  - match: /premium/*
    origin: demo
    access: paywall
    require: [premium]
    cache: {{ default_ttl: 5m, min_ttl: 0s, max_ttl: 1d }}
  - match: /*
    origin: demo
    access: public
cache:
  memory: {{ max_size: 64MiB }}
"#,
        port = args.port,
        admin = args.admin_port,
        origin = args.origin_port,
        secret_header = DEMO_SECRET_HEADER,
    )
}

fn random_hex(n: usize) -> anyhow::Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| anyhow::anyhow!("no randomness available"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Run the demo until interrupted.
pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    ensure_free(args.port, "--port")?;
    ensure_free(args.origin_port, "--origin-port")?;
    ensure_free(args.admin_port, "--admin-port")?;
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir().join(format!("tollgate-demo-{}", std::process::id())),
    };
    std::fs::create_dir_all(dir.join("keys"))
        .with_context(|| format!("creating {}", dir.display()))?;
    let (pem, _) = mint::keygen_to_dir(Alg::ES256, "demo-1", &dir.join("keys"))?;
    let secret = random_hex(16)?;
    let admin_token = random_hex(16)?;
    write_private(&dir.join("origin.secret"), &secret)?;
    write_private(&dir.join("admin.token"), &admin_token)?;
    let conf_path = dir.join("tollgate.yaml");
    write_private(&conf_path, &demo_yaml(args))?;

    let config = crate::config::load(&conf_path)
        .map_err(|e| anyhow::anyhow!("demo config {}: {e}", conf_path.display()))?;
    let edge = Edge::new(config)?;
    let mut server = crate::app::build(edge, RunFlags::default())?;
    let mut origin = Service::new("demo origin".to_string(), DemoOrigin::new(secret));
    origin.add_tcp(&format!("127.0.0.1:{}", args.origin_port));
    server.add_service(origin);

    let key = mint::SigningKey::load("demo-1", &pem)?;
    let now = unix_now();
    let claims =
        serde_json::json!({"sub": "reader-1", "subs": ["premium"], "iat": now, "exp": now + 3600});
    let subscriber = key.sign(&claims)?;
    let free = key
        .sign(&serde_json::json!({"sub": "reader-2", "subs": [], "iat": now, "exp": now + 3600}))?;
    // A forgery: same kid and claims, signed by a key the edge has never seen.
    let forger = mint::SigningKey::generate(Alg::ES256, "demo-1")?;
    let forged = forger.sign(&claims)?;

    let edge_url = format!("http://127.0.0.1:{}", args.port);
    let article = format!("{edge_url}/premium/edge-paywalls");
    println!(
        r#"
Tollgate demo is running. Files (keys, config, secrets) are in {dir}.

  edge   {edge_url}      origin http://127.0.0.1:{origin}      admin http://127.0.0.1:{admin}

# A subscriber gets the full article (run it twice: the second answer says Cache-Status: tollgate; hit)
curl -si -H 'Authorization: Bearer {subscriber}' {article}

# An anonymous reader gets the teaser
curl -si {article}

# A forged token (right kid, wrong key) gets the teaser too
curl -si -H 'Authorization: Bearer {forged}' {article}

# A valid token without the 'premium' subscription gets the teaser
curl -si '{article}?token={free}'

# How many requests reached the origin (cache hits do not count)
curl http://127.0.0.1:{origin}/__hits

# Metrics, and a purge of every variant of the article
curl -s http://127.0.0.1:{admin}/metrics | grep tollgate_requests_total
curl -si -X POST -H 'Authorization: Bearer {admin_token}' -d '{{"paths":["/premium/edge-paywalls"]}}' http://127.0.0.1:{admin}/admin/purge

Ctrl-C to stop.
"#,
        dir = dir.display(),
        origin = args.origin_port,
        admin = args.admin_port,
    );
    server.run_forever()
}

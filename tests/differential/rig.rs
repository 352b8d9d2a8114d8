//! The rig: protocols and the clients that speak exactly them, the pair of edges (hit path on
//! and off) and the cases sent to both.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::certs::Ca;
use crate::support::{self, Edge, EdgeOptions, Origin, SUBSCRIBER_MARK};
use tollgate::auth::mint::SigningKey;

/// The name the TLS certificate is for; resolved to 127.0.0.1 by the clients.
pub const TLS_NAME: &str = "a.test";
/// Response headers that differ by the second, or per origin response (each edge stored its own).
pub const UNCOMPARED_HEADERS: [&str; 3] = ["date", "age", "x-origin-seq"];

// ---------------------------------------------------------------------------------------------
// Protocols and clients
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    /// HTTP/1.1 on the plain listener.
    H1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1` only).
    H1Tls,
    /// HTTP/2 over TLS (ALPN `h2` only).
    H2Tls,
}

/// How a case's request travels: the protocol, on a fresh connection or on one the client
/// keeps for all the cases (HTTP/1.1 keep-alive; one multiplexed HTTP/2 connection), so that a
/// connection also moves between the hit path and the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Via {
    pub proto: Proto,
    pub kept: bool,
}

pub const VIAS: [Via; 6] = [
    Via::fresh(Proto::H1),
    Via::fresh(Proto::H1Tls),
    Via::fresh(Proto::H2Tls),
    Via::kept(Proto::H1),
    Via::kept(Proto::H1Tls),
    Via::kept(Proto::H2Tls),
];

impl Via {
    pub const fn fresh(proto: Proto) -> Via {
        Via { proto, kept: false }
    }

    pub const fn kept(proto: Proto) -> Via {
        Via { proto, kept: true }
    }

    pub fn name(self) -> String {
        let kept = if self.kept { " kept" } else { "" };
        format!("{}{kept}", self.proto.name())
    }

    pub fn client(self, ca: &Path) -> reqwest::Client {
        self.proto.client(ca, self.kept)
    }
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H1Tls => "h1+tls",
            Proto::H2Tls => "h2+tls",
        }
    }

    pub fn version(self) -> reqwest::Version {
        match self {
            Proto::H1 | Proto::H1Tls => reqwest::Version::HTTP_11,
            Proto::H2Tls => reqwest::Version::HTTP_2,
        }
    }

    /// A client that speaks exactly this protocol (a fresh connection per request unless
    /// `kept`, no redirects, no proxies from the environment), trusting only `ca` for TLS.
    pub fn client(self, ca: &Path, kept: bool) -> reqwest::Client {
        let b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .pool_max_idle_per_host(if kept { 4 } else { 0 })
            .timeout(Duration::from_secs(20));
        let b = match self {
            Proto::H1 => b.http1_only(),
            Proto::H1Tls | Proto::H2Tls => {
                let pem = std::fs::read(ca).expect("read the test CA");
                let cert = reqwest::Certificate::from_pem(&pem).expect("test CA certificate");
                let b = b
                    .tls_built_in_root_certs(false)
                    .add_root_certificate(cert)
                    .https_only(true)
                    // the port comes from the URL
                    .resolve(TLS_NAME, "127.0.0.1:0".parse().unwrap());
                if self == Proto::H1Tls {
                    b.http1_only()
                } else {
                    // over TLS: ALPN offers h2 alone
                    b.http2_prior_knowledge()
                }
            }
        };
        b.build().expect("reqwest client")
    }
}

// ---------------------------------------------------------------------------------------------
// Two edges
// ---------------------------------------------------------------------------------------------

/// One edge of the pair, with its TLS port and its access log.
pub struct Side {
    pub edge: Edge,
    pub tls_port: u16,
    pub log: PathBuf,
}

impl Side {
    pub fn url(&self, proto: Proto, target: &str) -> String {
        match proto {
            Proto::H1 => self.edge.url(target),
            Proto::H1Tls | Proto::H2Tls => {
                format!("https://{TLS_NAME}:{}{target}", self.tls_port)
            }
        }
    }

    /// The edge's host as a request names it, for normalizing access-log records.
    pub fn ports(&self) -> [u16; 2] {
        [self.edge.port, self.tls_port]
    }
}

pub struct Pair {
    /// `fast_hits: true`.
    pub on: Side,
    /// `fast_hits: false`.
    pub off: Side,
    pub ca: PathBuf,
    pub _dir: tempfile::TempDir,
}

/// Two edges on `origin`, identical but for `fast_hits` (and, necessarily, their ports and
/// log files): `routes`, a TLS listener, the access log, and `extra_yaml`.
pub fn pair(origin: &Origin, key: &SigningKey, routes: Vec<String>, extra_yaml: &str) -> Pair {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "Tollgate Differential CA", "ca.pem");
    let (crt, tls_key) = ca.leaf(dir.path(), "a", &[TLS_NAME]);
    let side = |fast_hits: bool| {
        let tls_port = support::free_port();
        let log = dir.path().join(format!(
            "access-{}.log",
            if fast_hits { "on" } else { "off" }
        ));
        let listener = format!(
            "{{ addr: \"127.0.0.1:{tls_port}\", tls: {{ cert: {:?}, key: {:?} }} }}",
            crt.to_string_lossy(),
            tls_key.to_string_lossy()
        );
        let opts = EdgeOptions {
            routes: routes.clone(),
            token_sources: vec![
                "path".into(),
                "query:token".into(),
                "bearer".into(),
                "cookie:token".into(),
            ],
            extra_listeners: vec![listener],
            extra_yaml: format!(
                "{extra_yaml}\nlogging: {{ access_log: {} }}\n",
                serde_json::to_string(&log.to_string_lossy()).unwrap()
            ),
            fast_hits: Some(fast_hits),
            ..EdgeOptions::default()
        };
        let edge = Edge::start_with(origin, &[key], opts);
        assert_eq!(edge.fast_hits(), fast_hits);
        Side {
            edge,
            tls_port,
            log,
        }
    };
    let on = side(true);
    let off = side(false);
    Pair {
        on,
        off,
        ca: ca.pem.clone(),
        _dir: dir,
    }
}

/// What the protected objects are made of on the origin: subscriber content, cacheable.
pub fn serve_protected(origin: &Origin, path: &str) {
    origin.set_override(
        path,
        200,
        &[("cache-control", "public, max-age=300")],
        &format!("MEDIA:{path}:{SUBSCRIBER_MARK}\n"),
    );
}

// ---------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------

/// One request, sent as is over every protocol to both edges.
#[derive(Clone)]
pub struct Case {
    pub mode: &'static str,
    pub state: &'static str,
    pub head: bool,
    /// Path and query as sent (tokens and signatures included).
    pub target: String,
    pub headers: Vec<(&'static str, String)>,
    /// The status this case is about (a check of the test itself).
    pub want: u16,
    /// Subscriber content is the answer (else it must not be).
    pub subscriber: bool,
    /// A request body (to a method that has none: refused for its framing).
    pub body: Option<&'static str>,
}

impl Case {
    pub fn get(mode: &'static str, state: &'static str, target: impl Into<String>) -> Case {
        Case {
            mode,
            state,
            head: false,
            target: target.into(),
            headers: Vec::new(),
            want: 200,
            subscriber: false,
            body: None,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Case {
        self.headers.push((name, value.into()));
        self
    }

    pub fn bearer(self, token: &str) -> Case {
        self.header("authorization", format!("Bearer {token}"))
    }

    pub fn head(mut self) -> Case {
        self.head = true;
        self
    }

    pub fn refused(mut self, status: u16) -> Case {
        self.want = status;
        self
    }

    /// Send `body` with the request: refused with 400 for its framing, before routing.
    pub fn with_body(mut self, body: &'static str) -> Case {
        self.body = Some(body);
        self.want = 400;
        self
    }

    /// Whether the request gets a request-duration sample and an access-log line: every
    /// request, framing refusals over HTTP/1 (answered by the connection loop) included.
    pub fn logged(&self, _proto: Proto) -> bool {
        true
    }

    pub fn subscriber(mut self) -> Case {
        self.subscriber = true;
        self
    }

    pub fn name(&self, via: Via) -> String {
        let head = if self.head { " HEAD" } else { "" };
        format!("{}/{}/{}{head}", self.mode, via.name(), self.state)
    }
}

/// An answer as the client read it.
pub struct Answer {
    /// The client's port: which connection carried it.
    pub local_port: Option<u16>,
    pub status: u16,
    pub version: reqwest::Version,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Headers as sorted (name, value) pairs, without [`UNCOMPARED_HEADERS`].
    pub fn comparable_headers(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| !UNCOMPARED_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        v.sort();
        v
    }
}

pub async fn send(client: &reqwest::Client, side: &Side, via: Via, case: &Case) -> Answer {
    let url = side.url(via.proto, &case.target);
    let mut rb = if case.head {
        client.head(&url)
    } else {
        client.get(&url)
    };
    for (k, v) in &case.headers {
        rb = rb.header(*k, v.as_str());
    }
    if let Some(body) = case.body {
        rb = rb.body(body);
    }
    let r = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("{}: request failed: {e:?}", case.name(via)));
    let local_port = r
        .extensions()
        .get::<hyper_util::client::legacy::connect::HttpInfo>()
        .map(|info| info.local_addr().port());
    let status = r.status().as_u16();
    let version = r.version();
    let headers = r.headers().clone();
    let body = r
        .text()
        .await
        .unwrap_or_else(|e| panic!("{}: body: {e:?}", case.name(via)));
    Answer {
        local_port,
        status,
        version,
        headers,
        body,
    }
}

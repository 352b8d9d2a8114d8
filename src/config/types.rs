//! The validated configuration the rest of Tollgate codes against.
//!
//! Every value here has been checked by `validate`: addresses parsed, relative paths resolved
//! against the config file's directory, secrets read, defaults applied. Nothing downstream
//! needs to re-check or to know about YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::glob::Glob;

mod fleet;
pub use fleet::{Fleet, FleetNats, Peer, ResolverSettings};

/// The whole, validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Settings handed to Pingora's `ServerConf`.
    pub pingora: PingoraSettings,
    /// Where the edge accepts client traffic; at least one.
    pub listeners: Vec<Listener>,
    /// The admin listener (`/metrics`, `/healthz`, `/admin/*`), if configured.
    pub admin: Option<Admin>,
    /// Origins by name.
    pub origins: BTreeMap<String, Origin>,
    /// Where token-verification keys come from.
    pub keys: KeysSettings,
    /// Token verification settings.
    pub auth: AuthSettings,
    /// Routes in file order; the first whose glob matches wins.
    pub routes: Vec<Route>,
    /// Cache tiers and limits.
    pub cache: CacheSettings,
    /// Durable state (revocations). `None`: state lives in memory only.
    pub state_dir: Option<PathBuf>,
    /// Log filter and access log switch.
    pub logging: LoggingSettings,
    /// Session revocation settings.
    pub revocation: RevocationSettings,
    /// AWS Secure Media Delivery tokens, if accepted.
    pub smd: Option<SmdSettings>,
    /// `signed_keys:` CloudFront Key-Pair-Id → public key PEM file (resolved path).
    pub signed_keys: BTreeMap<String, PathBuf>,
    /// `basic_auth:` realm → htpasswd file (resolved path).
    pub basic_auth: BTreeMap<String, PathBuf>,
    /// `trusted_proxies:` — peers whose `X-Forwarded-For`/`-Proto` and PROXY headers are believed.
    pub trusted_proxies: Vec<crate::cidr::Cidr>,
    /// `limits:`.
    pub limits: Limits,
    /// `fleet:` — the NATS JetStream control plane; `None`: the node runs alone.
    pub fleet: Option<Fleet>,
    /// `resolver:` — origin name resolution.
    pub resolver: ResolverSettings,
}

/// `smd:` — also accept tokens of the AWS Secure Media Delivery solution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmdSettings {
    /// `{"<kid>": "<secret>", ...}`.
    pub secrets_file: PathBuf,
}

/// `revocation:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationSettings {
    /// How long a revocation without its own TTL lasts (and auto-revocations).
    pub default_ttl: Duration,
    /// Automatic revocation of sessions seen from too many places; `None` = off.
    pub auto: Option<AutoRevocation>,
}

/// `revocation.auto`: per session, distinct client IPs and user agents inside a sliding window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoRevocation {
    /// The sliding window.
    pub window: Duration,
    /// More distinct IPs than this inside the window → revoked.
    pub max_ips: usize,
    /// More distinct user agents than this inside the window → revoked.
    pub max_user_agents: usize,
}

impl Config {
    /// The route for a request path (without the query string): the first match wins.
    pub fn route_for(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|route| route.glob.matches(path))
    }
}

/// `pingora:` — passed on to Pingora's `ServerConf`. `None` means Pingora's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PingoraSettings {
    /// Worker threads per listener (1..=256); `None` = number of cores.
    pub threads: Option<usize>,
    /// PID file written when running as a daemon.
    pub pid_file: Option<PathBuf>,
    /// Socket used to hand listeners to the next process on graceful upgrade.
    pub upgrade_sock: Option<PathBuf>,
    /// Where Pingora writes its error log when daemonized.
    pub error_log: Option<PathBuf>,
    /// Seconds the old process keeps serving after an upgrade/shutdown signal.
    pub grace_period_seconds: Option<u64>,
    /// Seconds to wait for in-flight work after the grace period.
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    /// Run in the background (same as `-d`).
    pub daemon: bool,
}

/// `listeners[]` entry: a listening address, plain HTTP or TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// Address to bind, e.g. `0.0.0.0:8080`.
    pub addr: SocketAddr,
    /// TLS (HTTP/2 + HTTP/1.1 by ALPN) when set.
    pub tls: Option<super::ListenerTls>,
    /// Every connection starts with a PROXY protocol header (v1 or v2), believed when the
    /// connecting peer is in `trusted_proxies`.
    pub proxy_protocol: bool,
}

/// `limits:` — edge limits (SPEC §10).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// A request head must be complete this long after its first byte arrived (408).
    pub header_timeout: Duration,
    /// Keep-alive: how long a connection may wait for the next request's first byte.
    pub idle_timeout: Duration,
    /// Budget of failed credential checks per client address; `None` = off.
    pub failed_auth: Option<FailedAuthLimit>,
}

/// `limits.failed_auth`: a token bucket per client address, spent by failed credential checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailedAuthLimit {
    /// Refill rate.
    pub per_second: f64,
    /// Bucket size.
    pub burst: u32,
}

/// `admin:` — the admin listener.
///
/// `/metrics` and `/healthz` are always served. `/admin/*` needs `Authorization: Bearer
/// <token>`; without `token_file` there is no token and `/admin/*` is disabled (every request
/// gets 401), so an admin listener never exposes purge/revoke unauthenticated.
#[derive(Clone, PartialEq, Eq)]
pub struct Admin {
    /// Address to bind, e.g. `127.0.0.1:9100`.
    pub addr: SocketAddr,
    /// The bearer token for `/admin/*` (trimmed, at least 16 characters), or `None`: disabled.
    pub token: Option<String>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `origins.<name>`: an upstream and the shared secret that proves requests come from the edge.
#[derive(Clone, PartialEq, Eq)]
pub struct Origin {
    /// The key under `origins:`.
    pub name: String,
    /// The URL as written, e.g. `http://127.0.0.1:9000`.
    pub url: String,
    /// `true` for `https://`.
    pub scheme_https: bool,
    /// Host name (lower-cased) or IP literal, without brackets; use for `Host`/SNI.
    pub host: String,
    /// Port from the URL, or 80/443.
    pub port: u16,
    /// `host:port` ready to connect to (IPv6 literals in brackets).
    pub addr: String,
    /// Lower-case header name the secret is sent in, e.g. `x-api-key`.
    pub secret_header: Option<String>,
    /// The secret value (from `secret_file` or `secret_env`). Never logged.
    pub secret: Option<String>,
    /// CA file an `https://` origin's certificate must chain to (else the system roots).
    pub ca_file: Option<PathBuf>,
    /// SNI and certificate name for an `https://` origin, when not the URL's host.
    pub tls_name: Option<String>,
    /// Sign origin requests with AWS Signature Version 4.
    pub sigv4: Option<SigV4Settings>,
}

/// `origins.<name>.sigv4`: credentials and scope for AWS Signature Version 4.
#[derive(Clone, PartialEq, Eq)]
pub struct SigV4Settings {
    /// e.g. `us-east-1`.
    pub region: String,
    /// e.g. `s3`.
    pub service: String,
    /// Access key id (not secret).
    pub access_key_id: String,
    /// Secret access key. Never logged.
    pub secret_access_key: String,
    /// Session token for temporary credentials. Never logged.
    pub session_token: Option<String>,
    /// The file the secret key was read from (`secret_access_key_file`), read again when it
    /// changes (a rotation needs no restart).
    pub secret_access_key_file: Option<PathBuf>,
}

impl fmt::Debug for SigV4Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Settings")
            .field("region", &self.region)
            .field("service", &self.service)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl fmt::Debug for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Origin")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("scheme_https", &self.scheme_https)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("addr", &self.addr)
            .field("secret_header", &self.secret_header)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("tls_name", &self.tls_name)
            .field("sigv4", &self.sigv4)
            .finish()
    }
}

/// `keys:` — where verification keys are loaded from (parsed by the keys module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysSettings {
    /// A JWK Set file (RFC 7517).
    pub jwks_file: Option<PathBuf>,
    /// Individual PEM public keys.
    pub pem: Vec<PemKeyConf>,
    /// How often the files are checked for changes.
    pub reload_interval_seconds: u64,
}

impl KeysSettings {
    /// Is at least one key source configured?
    pub fn any(&self) -> bool {
        self.jwks_file.is_some() || !self.pem.is_empty()
    }
}

/// `keys.pem[]`: one PEM public key with its pinned algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemKeyConf {
    /// Key id matched against the token header's `kid`.
    pub kid: String,
    /// `ES256` or `RS256`.
    pub alg: String,
    /// The PEM file (exists at validation time).
    pub path: PathBuf,
}

/// `auth:` — token verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// Required `iss`, if set.
    pub issuer: Option<String>,
    /// Required `aud`, if set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp`/`nbf`, in seconds (0..=3600).
    pub leeway_seconds: u64,
    /// Claim holding the subscriptions (`subs`; Cognito style `custom:subs` works too).
    pub subscriptions_claim: String,
    /// Where to look for a token, in precedence order; the first source carrying one decides.
    pub token_sources: Vec<TokenSource>,
    /// Tokens longer than this are rejected unparsed.
    pub max_token_bytes: usize,
    /// Verified tokens remembered; 0 disables the cache.
    pub token_cache_entries: usize,
}

/// One place a token can arrive (`auth.token_sources`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TokenSource {
    /// First path segment, `[<sid>.]<jwt>` (`path`).
    Path,
    /// Query parameter with this name (`query:NAME`).
    Query(String),
    /// `Authorization: Bearer <jwt>` (`bearer`).
    Bearer,
    /// Cookie with this name (`cookie:NAME`).
    Cookie(String),
}

impl TokenSource {
    /// Parses the YAML form: `path`, `query:NAME`, `bearer`, `cookie:NAME`.
    pub fn parse(s: &str) -> Result<TokenSource, String> {
        const FORMS: &str = "Fix: use one of path, query:NAME, bearer, cookie:NAME";
        match s {
            "path" => return Ok(TokenSource::Path),
            "bearer" => return Ok(TokenSource::Bearer),
            _ => {}
        }
        let (kind, name) = match s.split_once(':') {
            Some(parts) => parts,
            None if s == "query" || s == "cookie" => {
                return Err(format!("'{s}' needs a name. Fix: write e.g. '{s}:token'"))
            }
            None => return Err(format!("unknown token source '{s}'. {FORMS}")),
        };
        match kind {
            "query" => {
                // RFC 3986 unreserved: safe in a query without percent-encoding.
                if name.is_empty() {
                    return Err(format!(
                        "'{s}' has an empty name. Fix: write e.g. 'query:token'"
                    ));
                }
                if let Some(c) = name
                    .chars()
                    .find(|&c| !(c.is_ascii_alphanumeric() || "-._~".contains(c)))
                {
                    return Err(format!(
                        "query parameter name '{name}' contains {c:?}. Fix: use letters, digits, '-', '.', '_' or '~'"
                    ));
                }
                Ok(TokenSource::Query(name.to_owned()))
            }
            "cookie" => {
                if name.is_empty() {
                    return Err(format!(
                        "'{s}' has an empty name. Fix: write e.g. 'cookie:token'"
                    ));
                }
                if let Some(c) = name.chars().find(|&c| !is_tchar(c)) {
                    return Err(format!(
                        "cookie name '{name}' contains {c:?}, which is not allowed in a cookie name (RFC 6265). \
                         Fix: use letters, digits and '-', '_', '.'"
                    ));
                }
                Ok(TokenSource::Cookie(name.to_owned()))
            }
            _ => Err(format!("unknown token source '{s}'. {FORMS}")),
        }
    }
}

impl fmt::Display for TokenSource {
    /// The YAML form, so `parse(x.to_string()) == x`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Path => f.write_str("path"),
            TokenSource::Query(name) => write!(f, "query:{name}"),
            TokenSource::Bearer => f.write_str("bearer"),
            TokenSource::Cookie(name) => write!(f, "cookie:{name}"),
        }
    }
}

/// RFC 7230 `tchar`: the characters of a header name or cookie name.
pub fn is_tchar(c: char) -> bool {
    c.is_ascii() && crate::request::tchar(c as u8)
}

/// One `routes[]` entry.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in `routes:` (0-based); also a stable label for logs.
    pub index: usize,
    /// The `match` pattern as written.
    pub pattern: String,
    /// The compiled pattern.
    pub glob: Glob,
    /// Name of the origin (a key of `Config::origins`).
    pub origin: String,
    /// How access is decided.
    pub access: AccessMode,
    /// Subscriptions that entitle; empty = any valid token.
    pub require: Vec<String>,
    /// Basic-auth realm (`access: basic`).
    pub realm: Option<String>,
    /// Caching policy.
    pub cache: RouteCache,
    /// Query-string policy, viewer protocol, methods, forwarded headers and cookies.
    pub behaviour: super::Behaviour,
}

/// `routes[].access`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessMode {
    /// Everyone gets variant `public`.
    Public,
    /// Teaser for anonymous, full page for entitled subscribers (seed 001).
    Paywall,
    /// Media tokens: 403 without a valid, entitled token (seed 002).
    Token,
    /// CloudFront-style signed URLs/cookies (seed 004).
    Signed,
    /// HTTP Basic auth (seed 003).
    Basic,
}

impl AccessMode {
    /// Every mode, in documentation order.
    pub const ALL: [AccessMode; 5] = [
        AccessMode::Public,
        AccessMode::Paywall,
        AccessMode::Token,
        AccessMode::Signed,
        AccessMode::Basic,
    ];

    /// The YAML name, also used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            AccessMode::Public => "public",
            AccessMode::Paywall => "paywall",
            AccessMode::Token => "token",
            AccessMode::Signed => "signed",
            AccessMode::Basic => "basic",
        }
    }

    /// Parses the YAML name (lower case).
    pub fn parse(s: &str) -> Option<AccessMode> {
        AccessMode::ALL.into_iter().find(|mode| mode.as_str() == s)
    }
}

impl fmt::Display for AccessMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `routes[].cache`: freshness policy for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteCache {
    /// TTL when the origin gives no freshness information.
    pub default_ttl: Duration,
    /// Lower bound on the origin's TTL.
    pub min_ttl: Duration,
    /// Upper bound on the origin's TTL.
    pub max_ttl: Duration,
    /// `false`: never cache this route.
    pub enabled: bool,
}

/// `cache.disk`: the disk tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSettings {
    /// Directory of the disk tier (created if missing).
    pub path: PathBuf,
    /// Bytes on disk, metadata included.
    pub max_size: u64,
}

/// `cache:` — tiers and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// The disk tier, if configured.
    pub disk: Option<DiskSettings>,
    /// Memory tier capacity in bytes.
    pub memory_max_size: u64,
    /// `cache.memory.fast_hits` (default on): answer fresh memory hits on public and paywall
    /// routes straight from the connection loop (`crate::app::front`), without Pingora's proxy
    /// phases. Off: every request goes through the proxy.
    pub fast_hits: bool,
    /// Larger responses are passed through uncached.
    pub max_object_size: u64,
    /// How long a request waits for another request filling the same entry.
    pub lock_timeout: Duration,
}

/// `logging:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    /// `env_logger`-style filter, e.g. `info` or `info,tollgate=debug`; `RUST_LOG` overrides it.
    pub level: String,
    /// Where the access log (one JSON line per request) goes.
    pub access_log: AccessLogTarget,
}

/// `logging.access_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// No access log (the default).
    Off,
    /// Standard output (the journal, under systemd).
    Stdout,
    /// Appended to this file; reopened on `SIGUSR1` (log rotation).
    File(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources_parse_and_print() {
        let cases = [
            ("path", TokenSource::Path),
            ("bearer", TokenSource::Bearer),
            ("query:token", TokenSource::Query("token".into())),
            ("query:t.k-1_~", TokenSource::Query("t.k-1_~".into())),
            (
                "cookie:__Host-token",
                TokenSource::Cookie("__Host-token".into()),
            ),
        ];
        for (text, source) in cases {
            assert_eq!(TokenSource::parse(text).as_ref(), Ok(&source), "{text}");
            assert_eq!(source.to_string(), text);
        }
        for bad in [
            "",
            "Path",
            "query",
            "cookie",
            "query:",
            "cookie:",
            "query:a b",
            "cookie:a=b",
            "header:x",
            "bearer:x",
        ] {
            assert!(
                TokenSource::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[test]
    fn access_modes_round_trip() {
        for mode in AccessMode::ALL {
            assert_eq!(AccessMode::parse(mode.as_str()), Some(mode));
        }
        assert_eq!(AccessMode::parse("Paywall"), None);
    }
}

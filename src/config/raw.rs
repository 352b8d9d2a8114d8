//! Raw configuration: serde structs that mirror `conf/tollgate.yaml` key for key.
//!
//! These types only describe the *shape* of the file. serde rejects unknown keys
//! (`deny_unknown_fields` everywhere) and wrong scalar types, with line and column. Everything
//! else — required keys, value ranges, cross references, files on disk — is checked by
//! `validate`, which reports every problem in one pass. That is why most fields are `Option`s
//! and values with units (sizes, durations) are kept as text here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Default key reload interval (`keys.reload_interval_seconds`).
pub const DEFAULT_KEYS_RELOAD_INTERVAL_SECONDS: u64 = 5;
/// Default clock leeway for `exp`/`nbf` (`auth.leeway_seconds`).
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;
/// Largest accepted `auth.leeway_seconds`: more than an hour defeats short-lived tokens.
pub const MAX_LEEWAY_SECONDS: u64 = 3600;
/// Default name of the subscriptions claim (`auth.subscriptions_claim`).
pub const DEFAULT_SUBSCRIPTIONS_CLAIM: &str = "subs";
/// Default token sources, in precedence order (`auth.token_sources`).
pub const DEFAULT_TOKEN_SOURCES: [&str; 4] = ["path", "query:token", "bearer", "cookie:token"];
/// Default cap on a token's length in bytes (`auth.max_token_bytes`).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
/// Smallest accepted `auth.max_token_bytes`: a signed ES256 JWT is already ~200 bytes.
pub const MIN_MAX_TOKEN_BYTES: usize = 256;
/// Largest accepted `auth.max_token_bytes`: beyond this, header limits bite first.
pub const MAX_MAX_TOKEN_BYTES: usize = 65536;
/// Default number of verified tokens remembered (`auth.token_cache_entries`; 0 disables).
pub const DEFAULT_TOKEN_CACHE_ENTRIES: usize = 100_000;
/// Default memory cache size (`cache.memory.max_size`): 256 MiB.
pub const DEFAULT_CACHE_MEMORY_MAX_SIZE: u64 = 256 * 1024 * 1024;
/// `cache.disk.max_size` when the disk tier is configured without one.
pub const DEFAULT_CACHE_DISK_MAX_SIZE: u64 = 10 * 1024 * 1024 * 1024;
/// `revocation.auto.window` default.
pub const DEFAULT_AUTO_REVOCATION_WINDOW_SECONDS: u64 = 600;
/// `revocation.auto.max_ips` default: a viewer moving between Wi-Fi, mobile and a hotspot stays under it.
pub const DEFAULT_AUTO_REVOCATION_MAX_IPS: usize = 4;
/// `revocation.auto.max_user_agents` default.
pub const DEFAULT_AUTO_REVOCATION_MAX_USER_AGENTS: usize = 3;
/// `revocation.default_ttl`: how long a revocation without its own TTL lasts.
pub const DEFAULT_REVOCATION_TTL_SECONDS: u64 = 86_400;
/// The smallest disk tier accepted.
pub const MIN_CACHE_DISK_MAX_SIZE: u64 = 1024 * 1024;
/// Largest cacheable object (`cache.max_object_size`) by default without a disk tier: 16 MiB, or
/// a quarter of the memory tier if smaller.
pub const DEFAULT_CACHE_MAX_OBJECT_SIZE: u64 = 16 * 1024 * 1024;
/// Largest cacheable object by default with a disk tier: 1 GiB, or a quarter of the disk tier if
/// smaller.
pub const DEFAULT_CACHE_DISK_MAX_OBJECT_SIZE: u64 = 1 << 30;
/// Default cache lock timeout (`cache.lock_timeout`), in seconds.
pub const DEFAULT_CACHE_LOCK_TIMEOUT_SECONDS: u64 = 10;
/// Default route TTL when the origin sends no freshness (`routes[].cache.default_ttl`): 5 minutes.
pub const DEFAULT_ROUTE_DEFAULT_TTL_SECONDS: u64 = 5 * 60;
/// Default lower TTL bound (`routes[].cache.min_ttl`).
pub const DEFAULT_ROUTE_MIN_TTL_SECONDS: u64 = 0;
/// Default upper TTL bound (`routes[].cache.max_ttl`): 1 day.
pub const DEFAULT_ROUTE_MAX_TTL_SECONDS: u64 = 24 * 60 * 60;
/// Highest accepted `pingora.threads`.
pub const MAX_THREADS: usize = 256;
/// Minimum length of the admin token read from `admin.token_file`.
pub const MIN_ADMIN_TOKEN_LEN: usize = 16;
/// Default `limits.header_timeout`: a request head must arrive within this (HAProxy's usual
/// `timeout http-request`; nginx's `client_header_timeout` is 60 s).
pub const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 10;
/// Default `limits.idle_timeout`: keep-alive between requests (nginx's `keepalive_timeout` is 75 s).
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 60;
/// Default `limits.failed_auth.per_address_per_second`.
pub const DEFAULT_FAILED_AUTH_PER_SECOND: f64 = 20.0;
/// Default `limits.failed_auth.burst`.
pub const DEFAULT_FAILED_AUTH_BURST: u32 = 100;
/// Default `fleet.replay_timeout`: how long a starting fleet node waits to replay the control
/// events it missed before it opens its listeners anyway.
pub const DEFAULT_FLEET_REPLAY_TIMEOUT_SECONDS: u64 = 10;
/// Default `fleet.retention`: how long the control stream keeps events (a node offline longer
/// than this cannot replay what it missed).
pub const DEFAULT_FLEET_RETENTION_DAYS: u64 = 7;
/// Default `resolver.min_ttl`: an origin's name is looked up again at most this often.
pub const DEFAULT_RESOLVER_MIN_TTL_SECONDS: u64 = 10;
/// Default `resolver.max_ttl`: and at least this often, whatever its record's TTL says.
pub const DEFAULT_RESOLVER_MAX_TTL_SECONDS: u64 = 600;
/// Default log filter (`logging.level`).
pub const DEFAULT_LOG_LEVEL: &str = "info";

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub pingora: RawPingora,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub origins: BTreeMap<String, RawOrigin>,
    #[serde(default)]
    pub keys: RawKeys,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub cache: RawCache,
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub logging: RawLogging,
    #[serde(default)]
    pub revocation: RawRevocation,
    pub smd: Option<RawSmd>,
    /// `signed_keys:` — CloudFront Key-Pair-Id → public key PEM file.
    #[serde(default)]
    pub signed_keys: BTreeMap<String, PathBuf>,
    /// `basic_auth:` — realm → htpasswd file of bcrypt hashes.
    #[serde(default)]
    pub basic_auth: BTreeMap<String, PathBuf>,
    /// `trusted_proxies:` — CIDRs whose `X-Forwarded-For`/`-Proto` and PROXY headers are believed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// `limits:` — edge limits (SPEC §10).
    #[serde(default)]
    pub limits: RawLimits,
    /// `fleet:` — NATS JetStream control plane (SPEC §9).
    pub fleet: Option<RawFleet>,
    /// `resolver:` — how origin host names are resolved, and re-resolved.
    #[serde(default)]
    pub resolver: RawResolver,
}

/// `resolver:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    #[serde(default)]
    pub servers: Vec<String>,
    pub min_ttl: Option<UnitValue>,
    pub max_ttl: Option<UnitValue>,
}

/// `fleet:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleet {
    pub node_id: Option<String>,
    pub nats: Option<RawFleetNats>,
    pub subject_prefix: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub replay_timeout: Option<UnitValue>,
    pub retention: Option<UnitValue>,
    #[serde(default)]
    pub peers: Vec<RawPeer>,
    pub shield: Option<RawShield>,
}

/// `fleet.peers[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub id: String,
    pub addr: String,
}

/// `fleet.shield`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShield {
    pub enabled: Option<bool>,
    pub hash: Option<String>,
}

/// `fleet.nats`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetNats {
    pub url: OneOrMany,
    pub creds_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub tls: Option<RawFleetTls>,
}

/// `fleet.nats.tls`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFleetTls {
    pub ca_file: Option<PathBuf>,
}

/// One string or a list of them.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub header_timeout: Option<UnitValue>,
    pub idle_timeout: Option<UnitValue>,
    pub failed_auth: Option<RawFailedAuth>,
}

/// `limits.failed_auth`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailedAuth {
    pub per_address_per_second: Option<f64>,
    pub burst: Option<u32>,
    pub enabled: Option<bool>,
}

/// `smd:` — accept AWS Secure Media Delivery tokens.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSmd {
    pub secrets_file: Option<PathBuf>,
}

/// `revocation:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRevocation {
    pub auto: Option<RawAutoRevocation>,
    pub default_ttl: Option<UnitValue>,
}

/// `revocation.auto`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAutoRevocation {
    pub window: Option<UnitValue>,
    pub max_ips: Option<usize>,
    pub max_user_agents: Option<usize>,
    pub enabled: Option<bool>,
}

/// `pingora:` — passed on to Pingora's `ServerConf`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPingora {
    pub threads: Option<usize>,
    pub pid_file: Option<PathBuf>,
    pub upgrade_sock: Option<PathBuf>,
    pub error_log: Option<PathBuf>,
    pub grace_period_seconds: Option<u64>,
    pub graceful_shutdown_timeout_seconds: Option<u64>,
    pub daemon: Option<bool>,
}

/// `listeners[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub addr: Option<String>,
    pub tls: Option<RawTls>,
    /// Expect a PROXY protocol (v1 or v2) header at the start of every connection.
    pub proxy_protocol: Option<bool>,
}

/// `listeners[].tls`: the default certificate, more certificates chosen by SNI, HTTP/2.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub sni: Vec<RawCertPair>,
    pub http2: Option<bool>,
}

/// `listeners[].tls.sni[]`: a certificate served to clients asking for one of its names.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertPair {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `admin:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub addr: Option<String>,
    pub token_file: Option<PathBuf>,
}

/// `origins.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOrigin {
    pub url: Option<String>,
    pub secret_header: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub secret_env: Option<String>,
    /// PEM file of the CA(s) that must have signed an `https://` origin's certificate.
    pub ca_file: Option<PathBuf>,
    /// Name sent as SNI and checked against the origin's certificate (default: the URL's host).
    pub tls_name: Option<String>,
    /// `origins.<name>.sigv4`: sign origin requests (private S3-compatible bucket).
    pub sigv4: Option<RawSigV4>,
}

/// `origins.<name>.sigv4`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSigV4 {
    pub region: Option<String>,
    pub service: Option<String>,
    pub access_key_id: Option<String>,
    pub access_key_id_env: Option<String>,
    pub secret_access_key_file: Option<PathBuf>,
    pub secret_access_key_env: Option<String>,
    pub session_token_env: Option<String>,
}

/// `keys:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeys {
    pub jwks_file: Option<PathBuf>,
    #[serde(default)]
    pub pem: Vec<RawPemKey>,
    pub reload_interval_seconds: Option<u64>,
}

/// `keys.pem[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPemKey {
    pub kid: Option<String>,
    pub alg: Option<String>,
    pub path: Option<PathBuf>,
}

/// `auth:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub leeway_seconds: Option<u64>,
    pub subscriptions_claim: Option<String>,
    pub token_sources: Option<Vec<String>>,
    pub max_token_bytes: Option<usize>,
    pub token_cache_entries: Option<usize>,
}

/// `routes[]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    #[serde(rename = "match")]
    pub pattern: Option<String>,
    pub origin: Option<String>,
    pub access: Option<String>,
    pub require: Option<Vec<String>>,
    pub realm: Option<String>,
    pub cache: Option<RawRouteCache>,
    /// Query-string policy: `all` (default), `none`, or a list of parameter names to keep.
    pub query: Option<RawNames>,
    /// `allow_all` (default), `redirect_to_https` or `https_only`.
    pub viewer_protocol: Option<String>,
    /// Allowed methods, e.g. `[GET, HEAD]`; default: every method.
    pub methods: Option<Vec<String>>,
    /// Request headers forwarded to the origin: `all` (default) or a list.
    pub forward_headers: Option<RawNames>,
    /// Cookies forwarded to the origin: `all` (default), `none` or a list.
    pub forward_cookies: Option<RawNames>,
}

/// `all`, `none`, or a list of names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawNames {
    Word(String),
    List(Vec<String>),
}

/// `routes[].cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    pub default_ttl: Option<UnitValue>,
    pub min_ttl: Option<UnitValue>,
    pub max_ttl: Option<UnitValue>,
    pub enabled: Option<bool>,
}

/// `cache:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub memory: Option<RawCacheMemory>,
    pub disk: Option<RawCacheDisk>,
    pub max_object_size: Option<UnitValue>,
    pub lock_timeout: Option<UnitValue>,
}

/// `cache.memory`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheMemory {
    pub max_size: Option<UnitValue>,
    pub fast_hits: Option<bool>,
}

/// `cache.disk`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCacheDisk {
    pub path: Option<PathBuf>,
    pub max_size: Option<UnitValue>,
}

/// `logging:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLogging {
    pub level: Option<String>,
    pub access_log: Option<RawAccessLog>,
}

/// `logging.access_log` as written: `off`, `stdout`, a file path, or a boolean (`true` is
/// `stdout`, `false` is `off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAccessLog(pub String);

impl<'de> Deserialize<'de> for RawAccessLog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AccessLogVisitor;

        impl Visitor<'_> for AccessLogVisitor {
            type Value = RawAccessLog;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("off, stdout, a file path, true or false")
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawAccessLog, E> {
                Ok(RawAccessLog(if v { "stdout" } else { "off" }.to_owned()))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawAccessLog, E> {
                Ok(RawAccessLog(v.to_owned()))
            }
        }

        deserializer.deserialize_any(AccessLogVisitor)
    }
}

/// A size or duration as written: `256MiB`, `5m`, or a bare number (`1024`, `30`).
///
/// YAML gives bare numbers as integers; they are kept as text so that `validate` parses both
/// forms with the same function and reports problems with the key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitValue(pub String);

impl<'de> Deserialize<'de> for UnitValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct UnitVisitor;

        impl Visitor<'_> for UnitVisitor {
            type Value = UnitValue;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a string with a unit, like 256MiB or 5m")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<UnitValue, E> {
                Ok(UnitValue(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<UnitValue, E> {
                Ok(UnitValue(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<UnitValue, E> {
                Ok(UnitValue(v.to_string()))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<UnitValue, E> {
                Ok(UnitValue(v.to_owned()))
            }
        }

        deserializer.deserialize_any(UnitVisitor)
    }
}

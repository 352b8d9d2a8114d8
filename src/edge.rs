//! The edge's runtime state, built once from a validated [`Config`]: keys, token cache, cache
//! store, resolved origins and metrics. Shared by the proxy, the admin listener and the
//! background services through an `Arc<Edge>`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use pingora_cache::lock::CacheKeyLockImpl;

use crate::auth::{Alg, CacheCounters, KeySet, PemKeySpec, Policy, TokenCache};
use crate::cache::{DiskErrors, DiskStore, LookupMetrics, MemoryStore, TierMetrics, TieredStore};
use crate::config::{Config, TokenSource};
use crate::metrics::Metrics;
use crate::revocation::{AutoRevoker, Revocations};

/// The header that carries the entitlement variant to the origin.
pub const VARIANT_HEADER: &str = "x-tollgate-variant";

/// Why the edge could not be built from a (valid) config.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// A key file could not be loaded.
    #[error("loading keys: {0}")]
    Keys(#[from] crate::auth::KeyError),
    /// The disk tier's directory could not be prepared.
    #[error("cache.disk.path {path}: {source}")]
    Disk {
        /// directory
        path: PathBuf,
        /// why
        #[source]
        source: std::io::Error,
    },
    /// The revocation list could not be loaded.
    #[error("revocations: {0}")]
    State(#[from] crate::revocation::StateError),
    /// The AWS Secure Media Delivery secrets could not be loaded.
    #[error("smd.secrets_file: {0}")]
    Smd(#[from] crate::auth::smd::SmdError),
    /// An origin could not be prepared.
    #[error(transparent)]
    Origin(#[from] crate::origins::OriginError),
    /// Metric registration failed.
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// A PEM key names an algorithm the verifier does not know.
    #[error("keys.pem: unsupported alg {0:?} (use ES256 or RS256)")]
    Alg(String),
    /// A credentials or key file for `access: basic` / `signed` could not be loaded.
    #[error("{0}: {1}")]
    Credentials(String, String),
    /// The shield ring could not be set up.
    #[error("fleet.shield: {0}")]
    Shield(String),
}

/// Counters bumped on every request, resolved once: `with_label_values` hashes every label
/// value on each call.
pub struct HotCounters {
    /// `tollgate_auth_decisions_total` by result label, in [`AuthResult::all_labels`] order:
    /// `valid` (the common case) is found by the first comparison, nothing is hashed.
    ///
    /// [`AuthResult::all_labels`]: crate::access::AuthResult::all_labels
    pub auth: Vec<(&'static str, prometheus::IntCounter)>,
    /// `tollgate_requests_total{route, variant, cache_status="hit", status_class="2xx"}` by
    /// route index and variant ([`crate::cache::Variant::ALL`] order), resolved on first use.
    pub hits_2xx: Vec<[std::sync::OnceLock<prometheus::IntCounter>; 3]>,
}

/// Everything the request path needs, shared by all workers.
pub struct Edge {
    /// Per-request counters, resolved.
    pub hot: HotCounters,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Verification keys: the configured files' keys plus the fleet's (see
    /// [`Edge::install_fleet_keys`]); swapped whole on reload.
    pub keys: ArcSwap<KeySet>,
    /// The keys of the configured files alone.
    local_keys: ArcSwap<KeySet>,
    /// The key set published to the fleet (empty on a node alone).
    fleet_keys: ArcSwap<KeySet>,
    /// Held while the two are combined into `keys`, so a reload and a fleet update at once
    /// cannot store a stale combination.
    combine_lock: parking_lot::Mutex<()>,
    /// Where the keys came from, for reloads.
    pub key_sources: (Option<PathBuf>, Vec<PemKeySpec>),
    /// Claim checks.
    pub policy: Policy,
    /// Verified-token cache.
    pub tokens: TokenCache,
    /// The cache: memory tier, and the disk tier when configured.
    pub store: &'static TieredStore,
    /// Request coalescing for cache fills.
    pub cache_lock: &'static CacheKeyLockImpl,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Origins by name.
    pub origins: HashMap<String, crate::origins::OriginRuntime>,
    /// Port of the first TLS listener, for `redirect_to_https` Location headers.
    pub https_port: Option<u16>,
    /// Headers removed from every client request (variant + every origin secret header).
    pub strip_headers: Vec<http::HeaderName>,
    /// Query parameter names that carry tokens (never in the key, never forwarded).
    pub query_token_names: Vec<String>,
    /// Cookie names that carry tokens (never forwarded).
    pub cookie_token_names: Vec<String>,
    /// Whether `Authorization: Bearer` is a token source (then it is never forwarded).
    pub bearer_source: bool,
    /// Whether path tokens are a source.
    pub path_source: bool,
    /// Revoked sessions.
    pub revocations: Revocations,
    /// Automatic revocation, if enabled.
    pub auto_revoker: Option<AutoRevoker>,
    /// AWS Secure Media Delivery secrets, when such tokens are accepted.
    pub smd: Option<crate::auth::smd::SmdSecrets>,
    /// `signed_keys:` CloudFront key pairs (`access: signed`).
    /// Replaced when a key file changes (polled with the key files); a bad file keeps the old set.
    pub signed_keys: ArcSwap<crate::auth::cloudfront::SignedKeys>,
    /// `basic_auth:` realms and their credential files (`access: basic`).
    /// Replaced when the file changes (polled with the key files); a bad file keeps the old one.
    pub realms: HashMap<String, ArcSwap<crate::auth::htpasswd::Htpasswd>>,
    /// `trusted_proxies`: whose forwarding headers and PROXY headers are believed.
    pub trusted_proxies: crate::viewer::TrustedProxies,
    /// The failed-credential budget (`limits.failed_auth`), unless turned off.
    pub budget: Option<crate::budget::FailureBudget>,
    /// The shield ring (`fleet.shield`), when enabled: where misses go.
    pub shield: Option<crate::shield::Shield>,
}

impl Edge {
    /// A normalized path split into its path token (when path tokens are a source: the token
    /// and its `<sid>.` prefix) and the path the routes and the cache see.
    pub fn split_token<'a>(
        &self,
        normalized: &'a str,
    ) -> (Option<(&'a str, Option<&'a str>)>, &'a str) {
        match self
            .path_source
            .then(|| crate::request::split_path_token(normalized))
            .flatten()
        {
            Some((tok, sid, rest)) => (Some((tok, sid)), rest),
            None => (None, normalized),
        }
    }

    /// The first route whose glob matches `path`, with its index.
    pub fn route_for(&self, path: &str) -> Option<(usize, &crate::config::Route)> {
        self.config
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| r.glob.matches(path))
    }

    /// Count an answered request in `tollgate_requests_total` (route `none` when no route
    /// matched). The busiest series, 2xx hits, use counters resolved once per route and variant.
    pub fn count_request(
        &self,
        route: Option<usize>,
        variant: crate::cache::Variant,
        cache_status: &str,
        status: u16,
    ) {
        let class = crate::metrics::status_class(status);
        let pattern = route
            .and_then(|i| self.config.routes.get(i))
            .map_or("none", |r| r.pattern.as_str());
        let labels = [pattern, variant.as_str(), cache_status, class];
        let requests = &self.metrics.requests;
        match route.and_then(|i| self.hot.hits_2xx.get(i)) {
            Some(slots) if cache_status == "hit" && class == "2xx" => slots[variant.index()]
                .get_or_init(|| requests.with_label_values(&labels))
                .inc(),
            _ => requests.with_label_values(&labels).inc(),
        }
    }

    /// Count an access decision in `tollgate_auth_decisions_total`; a failed credential also
    /// spends `client`'s failed-credential budget.
    pub fn count_auth(&self, result: crate::access::AuthResult, client: Option<IpAddr>) {
        if let Some(budget) = &self.budget {
            if result.failed_credential() {
                budget.charge(client, std::time::Instant::now());
            }
        }
        let label = result.as_str();
        match self.hot.auth.iter().find(|(l, _)| *l == label) {
            Some((_, counter)) => counter.inc(),
            None => self
                .metrics
                .auth_decisions
                .with_label_values(&[label])
                .inc(),
        }
    }

    /// Whether a credential that is not already known good may be verified for `client`:
    /// `false` once its failed-credential budget is spent (then it is answered 429).
    pub fn may_verify(&self, client: Option<IpAddr>) -> bool {
        self.budget
            .as_ref()
            .is_none_or(|b| !b.exhausted(client, std::time::Instant::now()))
    }

    /// Count a request or connection refused for its framing (`tollgate_refused_requests_total`).
    pub fn count_refusal(&self, refusal: crate::http1::Refusal) {
        self.metrics
            .refused_requests
            .with_label_values(&[refusal.as_str()])
            .inc();
    }

    /// Build the runtime state: load keys, resolve origins, size the cache.
    pub fn new(config: Config) -> Result<Arc<Edge>, EdgeError> {
        let metrics = Arc::new(Metrics::new()?);
        let auth_counters = crate::access::AuthResult::all_labels()
            .map(|label| (label, metrics.auth_decisions.with_label_values(&[label])))
            .collect();
        for origin in config.origins.keys() {
            metrics.upstream_duration.with_label_values(&[origin]);
        }
        let mut pem = Vec::with_capacity(config.keys.pem.len());
        for p in &config.keys.pem {
            pem.push(PemKeySpec {
                kid: p.kid.clone(),
                alg: Alg::parse(&p.alg).ok_or_else(|| EdgeError::Alg(p.alg.clone()))?,
                path: p.path.clone(),
            });
        }
        let jwks = config.keys.jwks_file.clone();
        let keys = KeySet::load(jwks.as_deref(), &pem)?;
        metrics.keys_loaded.set(keys.len() as i64);

        let policy = Policy {
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            leeway_secs: config.auth.leeway_seconds,
            subscriptions_claim: config.auth.subscriptions_claim.clone(),
            max_token_bytes: config.auth.max_token_bytes,
        };

        let store = cache_store(&config, &metrics)?;
        let lock: &'static CacheKeyLockImpl = Box::leak(Box::new(
            crate::cache::lock::RecheckingLock::new(config.cache.lock_timeout, store.memory()),
        ));

        let (origins, secret_headers) = crate::origins::prepare(&config.origins, &config.resolver)?;
        // a client may send neither the variant, a shield signature, nor any origin's secret
        let mut strip_headers = vec![
            http::HeaderName::from_static(VARIANT_HEADER),
            http::HeaderName::from_static(crate::shield::SHIELD_HEADER),
        ];
        strip_headers.extend(secret_headers.into_iter().filter(|h| h != VARIANT_HEADER));

        let mut query_token_names = Vec::new();
        let mut cookie_token_names = Vec::new();
        let mut bearer_source = false;
        let mut path_source = false;
        for s in &config.auth.token_sources {
            match s {
                TokenSource::Query(n) => query_token_names.push(n.clone()),
                TokenSource::Cookie(n) => cookie_token_names.push(n.clone()),
                TokenSource::Bearer => bearer_source = true,
                TokenSource::Path => path_source = true,
            }
        }

        if let Some(dir) = &config.state_dir {
            std::fs::create_dir_all(dir).map_err(|source| crate::revocation::StateError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let revocations = Revocations::open(config.state_dir.as_deref(), unix_now())?;
        metrics.revoked_sessions.set(revocations.len() as i64);
        let auto_revoker = config
            .revocation
            .auto
            .clone()
            .map(|limits| AutoRevoker::new(limits, sighting_key(config.fleet.as_ref())));

        let smd = match &config.smd {
            Some(s) => Some(crate::auth::smd::SmdSecrets::load(&s.secrets_file)?),
            None => None,
        };

        let mut realms = HashMap::new();
        for (realm, path) in &config.basic_auth {
            let file = crate::auth::htpasswd::Htpasswd::load(path).map_err(|e| {
                EdgeError::Credentials(format!("basic_auth.{realm}"), e.to_string())
            })?;
            realms.insert(realm.clone(), ArcSwap::from_pointee(file));
        }

        let signed_keys = crate::auth::cloudfront::SignedKeys::load(&config.signed_keys)
            .map_err(|e| EdgeError::Credentials("signed_keys".into(), e.to_string()))?;

        let shield = match &config.fleet {
            Some(fleet) => {
                crate::shield::Shield::new(fleet, &metrics).map_err(EdgeError::Shield)?
            }
            None => None,
        };
        let tokens = TokenCache::with_counters(
            config.auth.token_cache_entries,
            CacheCounters::in_families(
                &metrics.token_cache_lookups,
                &metrics.token_cache_evictions,
            ),
        );
        let hot = HotCounters {
            auth: auth_counters,
            hits_2xx: config.routes.iter().map(|_| Default::default()).collect(),
        };
        Ok(Arc::new(Edge {
            trusted_proxies: crate::viewer::TrustedProxies::new(config.trusted_proxies.clone()),
            budget: config
                .limits
                .failed_auth
                .map(crate::budget::FailureBudget::new),
            hot,
            shield,
            smd,
            realms,
            signed_keys: ArcSwap::from_pointee(signed_keys),
            revocations,
            auto_revoker,
            tokens,
            local_keys: ArcSwap::from_pointee(keys.clone()),
            fleet_keys: ArcSwap::from_pointee(KeySet::empty()),
            combine_lock: parking_lot::Mutex::new(()),
            keys: ArcSwap::from_pointee(keys),
            key_sources: (jwks, pem),
            policy,
            store,
            cache_lock: lock,
            metrics,
            origins,
            https_port: config
                .listeners
                .iter()
                .find(|l| l.tls.is_some())
                .map(|l| l.addr.port()),
            strip_headers,
            query_token_names,
            cookie_token_names,
            bearer_source,
            path_source,
            config: Arc::new(config),
        }))
    }

    /// Reload the `signed_keys` files and every `basic_auth` realm's htpasswd file. Whatever
    /// fails to load keeps its previous version; returns the problems ("section.name: error").
    pub fn reload_credentials(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match crate::auth::cloudfront::SignedKeys::load(&self.config.signed_keys) {
            Ok(keys) => self.signed_keys.store(Arc::new(keys)),
            Err(e) => problems.push(format!("signed_keys: {e}")),
        }
        for (realm, path) in &self.config.basic_auth {
            let Some(slot) = self.realms.get(realm) else {
                continue;
            };
            match crate::auth::htpasswd::Htpasswd::load(path) {
                Ok(file) => slot.store(Arc::new(file)),
                Err(e) => problems.push(format!("basic_auth.{realm}: {e}")),
            }
        }
        problems
    }

    /// Reload the key set from its files. On error the old keys stay and the error metric rises.
    pub fn reload_keys(&self) -> Result<usize, crate::auth::KeyError> {
        let (jwks, pem) = &self.key_sources;
        match KeySet::load(jwks.as_deref(), pem) {
            Ok(keys) => {
                self.local_keys.store(Arc::new(keys));
                Ok(self.combine_keys())
            }
            Err(e) => {
                self.metrics.key_reload_errors.inc();
                Err(e)
            }
        }
    }

    /// Use `set` as the fleet's key set (beside the configured files' keys, which win a `kid`
    /// both have); returns the number of keys now in force.
    pub fn install_fleet_keys(&self, set: KeySet) -> usize {
        self.fleet_keys.store(Arc::new(set));
        self.combine_keys()
    }

    /// The configured keys plus the fleet's, swapped in; unchanged keys keep their identity,
    /// so their verified tokens stay cached.
    fn combine_keys(&self) -> usize {
        let _combining = self.combine_lock.lock();
        let (keys, shadowed) = self.local_keys.load().merged(&self.fleet_keys.load());
        if !shadowed.is_empty() {
            log::warn!(
                "fleet key set: kid(s) {shadowed:?} are also in the configured key files, \
                 which win"
            );
        }
        let keys = keys.carry_over(&self.keys.load());
        let n = keys.len();
        self.keys.store(Arc::new(keys));
        self.metrics.keys_loaded.set(n as i64);
        n
    }

    /// Revoke `sid` automatically (a `revocation.auto` limit crossed, on this node or across
    /// the fleet) until its token expires (`token_exp`), and at least `revocation.default_ttl`;
    /// shared with the fleet when this node is in one, and counted. Returns the expiry.
    pub fn revoke_automatically(&self, sid: &str, token_exp: u64, now: u64) -> u64 {
        let default_ttl = self.config.revocation.default_ttl.as_secs();
        let until = token_exp.max(now.saturating_add(default_ttl));
        let until = self
            .revocations
            .revoke_until(sid, until, "auto", now)
            .unwrap_or_else(|e| {
                // in force in memory; the next save retries
                log::error!("saving revocations: {e}");
                until
            });
        if let Some(auto) = &self.auto_revoker {
            auto.share_revocation(sid, until);
        }
        self.metrics.auto_revocations.inc();
        self.metrics
            .revoked_sessions
            .set(self.revocations.len() as i64);
        until
    }

    /// Purge every variant of the given exact paths and path prefixes from every tier;
    /// returns objects removed.
    pub async fn purge(&self, paths: Vec<String>, prefixes: Vec<String>) -> usize {
        let n = self.store.purge(paths, prefixes).await;
        self.metrics.cache_purged.inc_by(n as u64);
        n
    }
}

/// The key of the hashes auto-revocation counts addresses and user agents by: shared by the
/// nodes of a fleet (from the fleet secret, or else the subject prefix), random on a node alone.
fn sighting_key(fleet: Option<&crate::config::Fleet>) -> [u8; 16] {
    let mut key = [0u8; 16];
    match fleet {
        Some(f) => {
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            ctx.update(b"tollgate sightings\0");
            match &f.secret {
                Some(secret) => ctx.update(secret),
                None => ctx.update(f.subject_prefix.as_bytes()),
            }
            key.copy_from_slice(&ctx.finish().as_ref()[..16]);
        }
        None => {
            use ring::rand::SecureRandom;
            if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
                log::warn!("no system randomness for the sightings key; using a fixed one");
            }
        }
    }
    key
}

/// Every problem with the configured key files, in one pass (for `tollgate check`), plus an
/// empty key set in front of paywall routes (which would deny every reader).
pub fn key_problems(config: &Config) -> Vec<String> {
    let mut pem = Vec::new();
    let mut problems = Vec::new();
    for p in &config.keys.pem {
        match Alg::parse(&p.alg) {
            Some(alg) => pem.push(PemKeySpec {
                kid: p.kid.clone(),
                alg,
                path: p.path.clone(),
            }),
            None => problems.push(format!("keys.pem: unsupported alg {:?}", p.alg)),
        }
    }
    let jwks = config.keys.jwks_file.as_deref();
    problems.extend(KeySet::check(jwks, &pem).iter().map(ToString::to_string));
    for e in crate::auth::cloudfront::SignedKeys::check(&config.signed_keys) {
        problems.push(format!("signed_keys: {e}"));
    }
    for (realm, path) in &config.basic_auth {
        if let Err(e) = crate::auth::htpasswd::Htpasswd::load(path) {
            problems.push(format!("basic_auth.{realm}: {e}"));
        }
    }
    let paywalled = config
        .routes
        .iter()
        .any(|r| r.access == crate::config::AccessMode::Paywall);
    if problems.is_empty() && paywalled {
        if let Ok(set) = KeySet::load(jwks, &pem) {
            if set.is_empty() {
                problems.push(
                    "keys: the key set is empty, so paywall routes would treat every reader as \
                     anonymous. Fix: add a key (tollgate keygen writes a JWKS)"
                        .to_string(),
                );
            }
        }
    }
    problems
}

/// The cache: the memory tier, the disk tier if configured, and the store over both, with their
/// metrics. Lives as long as the process (Pingora's cache wants `'static` storage).
fn cache_store(config: &Config, metrics: &Metrics) -> Result<&'static TieredStore, EdgeError> {
    let tier = |name: &str| TierMetrics {
        objects: metrics.cache_objects.with_label_values(&[name]),
        bytes: metrics.cache_bytes.with_label_values(&[name]),
        evictions: metrics.cache_evictions.with_label_values(&[name]),
    };
    let lookups = LookupMetrics {
        memory_hit: metrics.cache_lookups.with_label_values(&["memory", "hit"]),
        memory_miss: metrics.cache_lookups.with_label_values(&["memory", "miss"]),
        disk_hit: metrics.cache_lookups.with_label_values(&["disk", "hit"]),
        disk_miss: metrics.cache_lookups.with_label_values(&["disk", "miss"]),
    };
    // The memory tier keeps objects up to an eighth of its size (and TinyUFO's limit);
    // larger ones live on disk only.
    let memory_object_limit = config
        .cache
        .max_object_size
        .min(config.cache.memory_max_size / 8)
        .min(crate::cache::memory::MAX_OBJECT_BYTES);
    metrics
        .cache_max_bytes
        .with_label_values(&["memory"])
        .set(i64::try_from(config.cache.memory_max_size).unwrap_or(i64::MAX));
    let memory = MemoryStore::new(
        config.cache.memory_max_size,
        memory_object_limit,
        Some(tier("memory")),
    )
    .leak();
    crate::cache::body_file::report_large_folios();
    if let Some(d) = &config.cache.disk {
        metrics
            .cache_max_bytes
            .with_label_values(&["disk"])
            .set(i64::try_from(d.max_size).unwrap_or(i64::MAX));
    }
    let disk = match &config.cache.disk {
        Some(d) => Some(
            DiskStore::open(
                &d.path,
                d.max_size,
                config.cache.max_object_size,
                Some(tier("disk")),
                Some(DiskErrors(metrics.cache_disk_errors.clone())),
            )
            .map_err(|source| EdgeError::Disk {
                path: d.path.clone(),
                source,
            })?
            .leak(),
        ),
        None => None,
    };
    Ok(TieredStore::new(memory, disk, Some(lookups)).leak())
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    unix_secs(SystemTime::now())
}

/// `time` in whole seconds since the Unix epoch (0 before it).
pub fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

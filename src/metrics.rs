//! Every metric Tollgate exports, in one place (SPEC §7).
//!
//! Names carry the `tollgate_` prefix and base units (seconds, bytes). Label values always come
//! from bounded sets: route patterns from the config, `as_str()` of enums, status classes. The
//! registry is per [`Metrics`] instance rather than the process-global default so that tests can
//! build several edges in one process without name clashes.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Histogram buckets that resolve sub-millisecond cache hits as well as slow origin fills.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// The node's metrics and the registry that serves them on `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// `tollgate_requests_total{route,variant,cache_status,status_class}`
    pub requests: IntCounterVec,
    /// `tollgate_auth_decisions_total{result}`
    pub auth_decisions: IntCounterVec,
    /// `tollgate_request_duration_seconds`
    pub request_duration: Histogram,
    /// `tollgate_upstream_duration_seconds{origin}`
    pub upstream_duration: HistogramVec,
    /// `tollgate_cache_objects{tier}`
    pub cache_objects: IntGaugeVec,
    /// `tollgate_cache_bytes{tier}`
    pub cache_bytes: IntGaugeVec,
    /// `tollgate_cache_max_bytes{tier}`: the tier's configured size bound.
    pub cache_max_bytes: IntGaugeVec,
    /// `tollgate_cache_evictions_total{tier}`
    pub cache_evictions: IntCounterVec,
    /// `tollgate_cache_lookups_total{tier,result}`
    pub cache_lookups: IntCounterVec,
    /// `tollgate_cache_disk_errors_total{op}`
    pub cache_disk_errors: IntCounterVec,
    /// `tollgate_keys_loaded`
    pub keys_loaded: IntGauge,
    /// `tollgate_key_reload_errors_total`
    pub key_reload_errors: IntCounter,
    /// `tollgate_revoked_sessions`
    pub revoked_sessions: IntGauge,
    /// `tollgate_auto_revocations_total`
    pub auto_revocations: IntCounter,
    /// `tollgate_token_cache_entries`
    pub token_cache_entries: IntGauge,
    /// `tollgate_token_cache_lookups_total{result}`
    pub token_cache_lookups: IntCounterVec,
    /// `tollgate_token_cache_evictions_total`
    pub token_cache_evictions: IntCounter,
    /// `tollgate_cache_purged_total`
    pub cache_purged: IntCounter,
    /// `tollgate_access_log_dropped_total{reason}`
    pub access_log_dropped: IntCounterVec,
    /// `tollgate_fast_path_total{outcome}`: fresh memory hits the hit path answered, any
    /// protocol (`served`), and requests a connection loop (HTTP/1 or HTTP/2) handed to the
    /// proxy (`proxied`).
    pub fast_path: IntCounterVec,
    /// `tollgate_fast_path_total{outcome="served"}`
    pub fast_served: IntCounter,
    /// `tollgate_fast_path_total{outcome="proxied"}`
    pub fast_proxied: IntCounter,
    /// `tollgate_fast_path_sendfile_bytes_total`: body bytes the hit path sent with
    /// `sendfile` from the memory tier's sealed files.
    pub fast_sendfile_bytes: IntCounter,
    /// `tollgate_fast_path_yields_total`: hit-path answers whose decision checked a signature,
    /// written after the other ready connections' turn (`proxy::fast::FastHit::checked_in_full`).
    pub fast_yields: IntCounter,
    /// `tollgate_refused_requests_total{reason}`: requests (and PROXY connections) refused
    /// before anything acted on them (SPEC §10), by [`crate::http1::Refusal`] label.
    pub refused_requests: IntCounterVec,
    /// `tollgate_failed_auth_throttled_addresses`: client addresses whose failed-credential
    /// budget is spent right now.
    pub failed_auth_throttled: IntGauge,
}

impl Metrics {
    /// Register every metric in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tollgate_requests_total",
                "Requests answered, by route pattern, entitlement variant, cache status and status class.",
            ),
            &["route", "variant", "cache_status", "status_class"],
        )?;
        let auth_decisions = IntCounterVec::new(
            Opts::new(
                "tollgate_auth_decisions_total",
                "Access decisions on routes that check tokens, by result.",
            ),
            &["result"],
        )?;
        let request_duration = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_request_duration_seconds",
                "Time from request start to the end of the response, in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_upstream_duration_seconds",
                "Time from choosing the origin to its response header, in seconds.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["origin"],
        )?;
        let cache_objects = IntGaugeVec::new(
            Opts::new("tollgate_cache_objects", "Objects stored, by cache tier."),
            &["tier"],
        )?;
        let cache_bytes = IntGaugeVec::new(
            Opts::new(
                "tollgate_cache_bytes",
                "Bytes stored (bodies and headers), by cache tier.",
            ),
            &["tier"],
        )?;
        let cache_max_bytes = IntGaugeVec::new(
            Opts::new(
                "tollgate_cache_max_bytes",
                "The size bound of the cache tier (cache.memory.max_size, cache.disk.max_size), in \
                 bytes; tollgate_cache_bytes stays under it by evicting.",
            ),
            &["tier"],
        )?;
        let cache_evictions = IntCounterVec::new(
            Opts::new(
                "tollgate_cache_evictions_total",
                "Objects evicted to stay within the size bound, by cache tier.",
            ),
            &["tier"],
        )?;
        let cache_lookups = IntCounterVec::new(
            Opts::new(
                "tollgate_cache_lookups_total",
                "Cache lookups, by tier and result (a memory miss goes on to the disk tier).",
            ),
            &["tier", "result"],
        )?;
        let cache_disk_errors = IntCounterVec::new(
            Opts::new(
                "tollgate_cache_disk_errors_total",
                "Disk tier problems, by operation; each degraded to a miss or an unstored fill.",
            ),
            &["op"],
        )?;
        let keys_loaded = IntGauge::new(
            "tollgate_keys_loaded",
            "Token verification keys currently loaded.",
        )?;
        let key_reload_errors = IntCounter::new(
            "tollgate_key_reload_errors_total",
            "Key set reloads that failed; the previous keys stay in force.",
        )?;
        let revoked_sessions = IntGauge::new(
            "tollgate_revoked_sessions",
            "Sessions currently on the revocation list.",
        )?;
        let auto_revocations = IntCounter::new(
            "tollgate_auto_revocations_total",
            "Sessions revoked automatically for being seen from too many addresses or user agents.",
        )?;
        let token_cache_entries = IntGauge::new(
            "tollgate_token_cache_entries",
            "Verified tokens held in the token cache.",
        )?;
        let token_cache_lookups = IntCounterVec::new(
            Opts::new(
                "tollgate_token_cache_lookups_total",
                "Token lookups in the verified-token cache: hit (no signature check) or miss \
                 (verified in full, or refused by the failed-credential budget).",
            ),
            &["result"],
        )?;
        let token_cache_evictions = IntCounter::new(
            "tollgate_token_cache_evictions_total",
            "Verified tokens dropped from the token cache to make room (expired ones aside).",
        )?;
        let cache_purged = IntCounter::new(
            "tollgate_cache_purged_total",
            "Objects removed by /admin/purge.",
        )?;
        let access_log_dropped = IntCounterVec::new(
            Opts::new(
                "tollgate_access_log_dropped_total",
                "Access log lines lost: queue_full (the writer fell behind) or write_error.",
            ),
            &["reason"],
        )?;
        for reason in ["queue_full", "write_error"] {
            access_log_dropped.with_label_values(&[reason]);
        }
        let fast_path = IntCounterVec::new(
            Opts::new(
                "tollgate_fast_path_total",
                "Fresh memory hits answered by the hit path, any protocol (served), and requests \
                 a connection loop (HTTP/1.1 or HTTP/2) handed to the proxy (proxied).",
            ),
            &["outcome"],
        )?;
        let fast_served = fast_path.with_label_values(&["served"]);
        let fast_proxied = fast_path.with_label_values(&["proxied"]);
        let fast_sendfile_bytes = IntCounter::new(
            "tollgate_fast_path_sendfile_bytes_total",
            "Body bytes the connection-level hit path sent with sendfile from the memory tier's \
             sealed body files (bodies of 64 KiB and more).",
        )?;
        let fast_yields = IntCounter::new(
            "tollgate_fast_path_yields_total",
            "Answers of the connection-level hit path whose decision checked a signature, \
             written after the other ready connections had their turn (so that such answers \
             leave together).",
        )?;
        let refused_requests = IntCounterVec::new(
            Opts::new(
                "tollgate_refused_requests_total",
                "HTTP/1 requests refused before routing for their framing (malformed, bad_host, \
                 body_not_allowed, bad_framing, head_too_large, header_timeout) and connections \
                 without a valid PROXY header (proxy_protocol).",
            ),
            &["reason"],
        )?;
        for r in crate::http1::Refusal::ALL {
            refused_requests.with_label_values(&[r.as_str()]);
        }
        let failed_auth_throttled = IntGauge::new(
            "tollgate_failed_auth_throttled_addresses",
            "Client addresses (IPv6: /64s) whose failed-credential budget is spent: new \
             credentials from them are answered 429 until it refills.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(refused_requests.clone()))?;
        registry.register(Box::new(fast_yields.clone()))?;
        registry.register(Box::new(failed_auth_throttled.clone()))?;
        registry.register(Box::new(auth_decisions.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(cache_objects.clone()))?;
        registry.register(Box::new(cache_bytes.clone()))?;
        registry.register(Box::new(cache_max_bytes.clone()))?;
        registry.register(Box::new(cache_evictions.clone()))?;
        registry.register(Box::new(cache_lookups.clone()))?;
        registry.register(Box::new(cache_disk_errors.clone()))?;
        registry.register(Box::new(keys_loaded.clone()))?;
        registry.register(Box::new(key_reload_errors.clone()))?;
        registry.register(Box::new(revoked_sessions.clone()))?;
        registry.register(Box::new(auto_revocations.clone()))?;
        registry.register(Box::new(token_cache_entries.clone()))?;
        registry.register(Box::new(token_cache_lookups.clone()))?;
        registry.register(Box::new(token_cache_evictions.clone()))?;
        registry.register(Box::new(cache_purged.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        registry.register(Box::new(fast_path.clone()))?;
        registry.register(Box::new(fast_sendfile_bytes.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            auth_decisions,
            request_duration,
            upstream_duration,
            cache_objects,
            cache_bytes,
            cache_max_bytes,
            cache_evictions,
            cache_lookups,
            cache_disk_errors,
            keys_loaded,
            key_reload_errors,
            revoked_sessions,
            auto_revocations,
            token_cache_entries,
            token_cache_lookups,
            token_cache_evictions,
            cache_purged,
            access_log_dropped,
            fast_path,
            fast_served,
            fast_proxied,
            fast_sendfile_bytes,
            refused_requests,
            failed_auth_throttled,
            fast_yields,
        })
    }

    /// Register a collector defined elsewhere (the fleet's metrics) in the same registry.
    pub fn register(
        &self,
        collector: Box<dyn prometheus::core::Collector>,
    ) -> prometheus::Result<()> {
        self.registry.register(collector)
    }

    /// Render every metric in the Prometheus text exposition format.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed families.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            log::error!("encoding metrics failed: {e}");
        }
        out
    }
}

/// The status class label for a status code: `2xx`, `4xx`, ...
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

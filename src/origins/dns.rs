//! Origin names looked up again as their records expire (`resolver:`): S3 endpoints and cloud
//! load balancers rotate addresses. Each name is looked up when its record's TTL runs out,
//! bounded below by `resolver.min_ttl` and above by `resolver.max_ttl`; a failed lookup keeps
//! the last good address and tries again after `min_ttl`. Lookups use `hickory-resolver`, with
//! `resolver.servers` or the system's configuration.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;
use pingora_core::server::ShutdownWatch;

use super::OriginRuntime;
use crate::config::ResolverSettings;

/// A resolver asking `servers` (UDP, then TCP), or the system's name servers when empty.
fn resolver(servers: &[SocketAddr]) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let builder = if servers.is_empty() {
        TokioResolver::builder(provider).map_err(|e| format!("system resolver: {e}"))?
    } else {
        let name_servers = servers
            .iter()
            .map(|s| {
                let mut udp = ConnectionConfig::udp();
                udp.port = s.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = s.port();
                NameServerConfig::new(s.ip(), true, vec![udp, tcp])
            })
            .collect();
        TokioResolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            provider,
        )
    };
    builder.build().map_err(|e| format!("resolver: {e}"))
}

/// One lookup: the first address and how long the answer is valid.
async fn lookup(
    resolver: &TokioResolver,
    host: &str,
    port: u16,
) -> Result<(SocketAddr, Duration), String> {
    let answer = resolver.lookup_ip(host).await.map_err(|e| e.to_string())?;
    let valid = answer
        .valid_until()
        .saturating_duration_since(Instant::now());
    let ip = answer.iter().next().ok_or("no address in the answer")?;
    Ok((SocketAddr::new(ip, port), valid))
}

/// Resolve `host` now with `servers` (at start-up, before any runtime runs: on a thread of its
/// own with a runtime of its own).
pub fn lookup_now(servers: &[SocketAddr], host: &str, port: u16) -> Result<SocketAddr, String> {
    let (servers, host) = (servers.to_vec(), host.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let r = resolver(&servers)?;
            lookup(&r, &host, port).await.map(|(addr, _)| addr)
        })
    })
    .join()
    .map_err(|_| "the lookup thread panicked".to_string())?
}

/// The wait before the next lookup: the record's validity within the configured bounds.
fn next_wait(valid: Duration, settings: &ResolverSettings) -> Duration {
    valid.clamp(settings.min_ttl, settings.max_ttl)
}

/// `tollgate_origin_resolve_errors_total{origin}`, registered in `metrics`; `None` when every
/// origin is an IP literal (nothing to look up again).
pub fn errors_metric(
    origins: &HashMap<String, OriginRuntime>,
    metrics: &crate::metrics::Metrics,
) -> prometheus::Result<Option<prometheus::IntCounterVec>> {
    if origins.values().all(|o| o.lookup.is_none()) {
        return Ok(None);
    }
    let errors = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "tollgate_origin_resolve_errors_total",
            "Failed lookups of an origin's name; the last good address stays in use.",
        ),
        &["origin"],
    )?;
    for (name, o) in origins {
        if o.lookup.is_some() {
            errors.with_label_values(&[name]);
        }
    }
    metrics.register(Box::new(errors.clone()))?;
    Ok(Some(errors))
}

/// Keep every named origin's address fresh until `shutdown` (a background service's body).
pub async fn keep_fresh(
    origins: &HashMap<String, OriginRuntime>,
    settings: &ResolverSettings,
    errors: &prometheus::IntCounterVec,
    shutdown: &mut ShutdownWatch,
) {
    let resolver = match resolver(&settings.servers) {
        Ok(r) => r,
        Err(e) => {
            log::error!("origin names will not be looked up again: {e}");
            return;
        }
    };
    // the start-up lookup said nothing of the TTL: look again after min_ttl
    let mut due: Vec<(&str, Instant)> = origins
        .iter()
        .filter(|(_, o)| o.lookup.is_some())
        .map(|(name, _)| (name.as_str(), Instant::now() + settings.min_ttl))
        .collect();
    loop {
        let Some(next) = due.iter().map(|(_, at)| *at).min() else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => {}
            _ = shutdown.changed() => return,
        }
        let now = Instant::now();
        for (name, at) in due.iter_mut().filter(|(_, at)| *at <= now) {
            let Some(origin) = origins.get(*name) else {
                continue;
            };
            let Some((host, port)) = &origin.lookup else {
                continue;
            };
            match lookup(&resolver, host, *port).await {
                Ok((addr, valid)) => {
                    let old = origin.addr();
                    if old != addr {
                        log::info!("origin '{name}': {host} now resolves to {addr} (was {old})");
                        origin.set_addr(addr);
                    }
                    *at = Instant::now() + next_wait(valid, settings);
                }
                Err(e) => {
                    log::warn!(
                        "origin '{name}': looking up {host} failed ({e}); keeping {}",
                        origin.addr()
                    );
                    errors.with_label_values(&[name]).inc();
                    *at = Instant::now() + settings.min_ttl;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_the_records_ttl_within_the_bounds() {
        let s = ResolverSettings {
            servers: vec![],
            min_ttl: Duration::from_secs(10),
            max_ttl: Duration::from_secs(600),
        };
        assert_eq!(
            next_wait(Duration::from_secs(0), &s),
            Duration::from_secs(10)
        );
        assert_eq!(
            next_wait(Duration::from_secs(60), &s),
            Duration::from_secs(60)
        );
        assert_eq!(
            next_wait(Duration::from_secs(86_400), &s),
            Duration::from_secs(600)
        );
    }
}

//! `limits:` and `trusted_proxies:` (SPEC §10): timeouts, the failed-credential budget, and the
//! peers whose forwarding headers are believed.

use std::time::Duration;

use super::problems::{duration_or, Problems};
use super::raw::*;
use super::types::{FailedAuthLimit, Limits, Listener};
use crate::cidr::Cidr;

pub(super) fn validate_limits(raw: RawLimits, p: &mut Problems) -> Limits {
    let header_timeout = duration_or(
        raw.header_timeout,
        Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECONDS),
        "limits.header_timeout",
        p,
    );
    let idle_timeout = duration_or(
        raw.idle_timeout,
        Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECONDS),
        "limits.idle_timeout",
        p,
    );
    for (key, value, example) in [
        ("limits.header_timeout", header_timeout, "10s"),
        ("limits.idle_timeout", idle_timeout, "60s"),
    ] {
        if value.is_zero() {
            p.add(
                key,
                format!("0s would close every connection at once. Fix: use e.g. {example}"),
            );
        }
    }
    let raw_failed = raw.failed_auth.unwrap_or_default();
    let per_second = raw_failed
        .per_address_per_second
        .unwrap_or(DEFAULT_FAILED_AUTH_PER_SECOND);
    let burst = raw_failed.burst.unwrap_or(DEFAULT_FAILED_AUTH_BURST);
    if !(per_second.is_finite() && per_second > 0.0) {
        p.add(
            "limits.failed_auth.per_address_per_second",
            format!(
                "{per_second} would never refill an address's budget. Fix: a positive rate, \
                 e.g. {DEFAULT_FAILED_AUTH_PER_SECOND}, or enabled: false to turn the budget off"
            ),
        );
    }
    if burst == 0 {
        p.add(
            "limits.failed_auth.burst",
            format!(
                "0 would refuse every credential check that is not already known good. Fix: \
                 at least 1, e.g. {DEFAULT_FAILED_AUTH_BURST}"
            ),
        );
    }
    let failed_auth = raw_failed
        .enabled
        .unwrap_or(true)
        .then_some(FailedAuthLimit { per_second, burst });
    Limits {
        header_timeout,
        idle_timeout,
        failed_auth,
    }
}

pub(super) fn validate_trusted_proxies(
    raw: Vec<String>,
    listeners: &[Listener],
    p: &mut Problems,
) -> Vec<Cidr> {
    let mut out = Vec::with_capacity(raw.len());
    for (i, text) in raw.iter().enumerate() {
        match Cidr::parse(text.trim()) {
            Some(c) => out.push(c),
            None => p.add(
                format!("trusted_proxies[{i}]"),
                format!(
                    "{text:?} is not an address block. Fix: write an IP address or a CIDR, \
                     e.g. 10.0.0.0/8 or 2001:db8::/32"
                ),
            ),
        }
    }
    if raw.is_empty() {
        for (i, l) in listeners.iter().enumerate() {
            if l.proxy_protocol {
                p.add(
                    format!("listeners[{i}].proxy_protocol"),
                    "a PROXY header is believed only from a peer in trusted_proxies, and \
                     trusted_proxies is empty, so no client address would ever be taken from \
                     it. Fix: list the load balancers' addresses, e.g. trusted_proxies: \
                     [10.0.0.0/8]",
                );
            }
        }
    }
    out
}

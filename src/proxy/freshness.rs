//! HTTP caching semantics of the edge, as pure functions over headers and times: which
//! responses are stored, how long they stay fresh, how old they are, when a stale one may be
//! served, and how a `304` updates a stored response.
//!
//! - Directives come from the first valid targeted field (RFC 9213: `Tollgate-Cache-Control`,
//!   then `CDN-Cache-Control`); when one is present, `Cache-Control` and `Expires` are ignored.
//! - Age follows RFC 9111 §4.2.3: `corrected_initial_age = max(apparent_age, Age + response_delay)`.
//!   It is kept in the meta as pingora's epoch (`now - corrected_initial_age`), so both freshness
//!   and the `Age` of every hit count the time spent upstream of this cache.
//! - `must-revalidate`, `proxy-revalidate`, `s-maxage` and `no-cache` forbid serving stale;
//!   otherwise stale may be served while revalidating (`stale-while-revalidate`), on a 5xx
//!   (`stale-if-error`), or when the origin cannot be reached at all (RFC 9111 §4.2.4,
//!   "disconnected"), for at most [`STALE_ON_DISCONNECT`] unless the origin says otherwise.

use std::time::{Duration, SystemTime};

use http::header::{self, HeaderName};
use http::HeaderValue;
use pingora_cache::cache_control::{CacheControl, Cacheable, InterpretCacheControl};
use pingora_cache::{CacheMeta, NoCacheReason, RespCacheable};
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;

use crate::config::RouteCache;

/// Targeted cache-control fields this edge obeys, most specific first (RFC 9213 §2.2).
pub const TARGETED_FIELDS: [&str; 2] = ["tollgate-cache-control", "cdn-cache-control"];

/// A stale response may be served for this long after it went stale when the origin cannot be
/// reached and the response neither forbids it nor names its own `stale-if-error` window.
pub const STALE_ON_DISCONNECT: Duration = Duration::from_secs(3600);

/// The largest `Age` value (RFC 9111 §1.2.2: larger values are sent as 2^31).
pub const MAX_AGE_VALUE: u64 = 1 << 31;

/// Fields a `304` never replaces in a stored response: framing and content coding describe the
/// stored body, hop-by-hop fields are not stored at all, and a cookie set for one reader must
/// never be replayed to another (RFC 9111 §3.2).
const NOT_UPDATED_BY_304: [&str; 11] = [
    "content-length",
    "content-encoding",
    "content-range",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "set-cookie",
];

/// Status codes cacheable by default when the origin gives no explicit freshness (RFC 9110
/// §15.1 "heuristically cacheable"); the route's `default_ttl` applies to them.
fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// The caching directives that govern a response at this edge.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// `no-store`, or `private` without field names: never stored.
    pub forbidden: bool,
    /// Explicit freshness lifetime (`s-maxage`, `max-age`, zero for `no-cache`).
    pub lifetime: Option<Duration>,
    /// Stale must never be served (`must-revalidate`, `proxy-revalidate`, `s-maxage`,
    /// `no-cache`).
    pub revalidate: bool,
    /// `stale-while-revalidate` seconds.
    pub stale_while_revalidate: Option<u32>,
    /// `stale-if-error` seconds.
    pub stale_if_error: Option<u32>,
    /// From a targeted field: `Cache-Control` and `Expires` are ignored.
    pub targeted: bool,
}

impl Policy {
    /// The policy of a response: its first valid targeted field, else `Cache-Control`.
    pub fn of(resp: &ResponseHeader) -> Policy {
        TARGETED_FIELDS
            .iter()
            .find_map(|name| targeted(resp, name))
            .unwrap_or_else(|| from_cache_control(CacheControl::from_resp_headers(resp).as_ref()))
    }
}

fn from_cache_control(cc: Option<&CacheControl>) -> Policy {
    let Some(cc) = cc else {
        return Policy::default();
    };
    let revalidate =
        cc.must_revalidate() || cc.proxy_revalidate() || cc.has_key("s-maxage") || cc.no_cache();
    Policy {
        forbidden: cc.is_cacheable() == Cacheable::No,
        lifetime: cc.fresh_duration(),
        revalidate,
        stale_while_revalidate: cc.stale_while_revalidate().ok().flatten(),
        stale_if_error: cc.stale_if_error().ok().flatten(),
        targeted: false,
    }
}

/// Parse a targeted field (an RFC 8941 Dictionary). `None` when absent, empty or invalid —
/// including a delta-seconds directive that is not a non-negative Integer — so the caller falls
/// back to the next field and finally to `Cache-Control` (RFC 9213 §2.1).
fn targeted(resp: &ResponseHeader, name: &str) -> Option<Policy> {
    let lines: Vec<&[u8]> = resp
        .headers
        .get_all(name)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if lines.is_empty() {
        return None;
    }
    let joined = lines.join(&b", "[..]);
    let dict = sfv::Parser::parse_dictionary(&joined).ok()?;
    if dict.is_empty() {
        return None;
    }
    let mut p = Policy {
        targeted: true,
        ..Policy::default()
    };
    let mut max_age = None;
    let mut s_maxage = None;
    let mut no_cache = false;
    for (key, entry) in &dict {
        let seconds = || -> Option<u32> {
            match entry {
                sfv::ListEntry::Item(sfv::Item {
                    bare_item: sfv::BareItem::Integer(n),
                    ..
                }) if *n >= 0 => Some((*n).min(i64::from(u32::MAX)) as u32),
                _ => None,
            }
        };
        let present = !matches!(
            entry,
            sfv::ListEntry::Item(sfv::Item {
                bare_item: sfv::BareItem::Boolean(false),
                ..
            })
        );
        match key.as_str() {
            "max-age" => max_age = Some(seconds()?),
            "s-maxage" => s_maxage = Some(seconds()?),
            "stale-while-revalidate" => p.stale_while_revalidate = Some(seconds()?),
            "stale-if-error" => p.stale_if_error = Some(seconds()?),
            "no-store" | "private" if present => p.forbidden = true,
            "no-cache" if present => no_cache = true,
            "must-revalidate" | "proxy-revalidate" if present => p.revalidate = true,
            _ => {}
        }
    }
    p.revalidate |= no_cache || s_maxage.is_some();
    p.lifetime = if no_cache {
        Some(Duration::ZERO)
    } else {
        s_maxage
            .or(max_age)
            .map(|s| Duration::from_secs(u64::from(s)))
    };
    Some(p)
}

/// The `Age` value (RFC 9111 §5.1): the first member of the first line, if it is a non-negative
/// integer (clamped to [`MAX_AGE_VALUE`]); anything else is ignored (0).
pub fn age_value(resp: &ResponseHeader) -> u64 {
    let Some(first) = resp.headers.get(header::AGE) else {
        return 0;
    };
    let member = first
        .as_bytes()
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    // all digits: the only possible parse error is overflow
    std::str::from_utf8(member)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(MAX_AGE_VALUE, |n| n.min(MAX_AGE_VALUE))
}

/// The `Date` of a response, when it has exactly one valid one.
pub fn date_value(resp: &ResponseHeader) -> Option<SystemTime> {
    let mut dates = resp.headers.get_all(header::DATE).iter();
    let date = dates.next()?;
    if dates.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(date.to_str().ok()?).ok()
}

/// `corrected_initial_age` (RFC 9111 §4.2.3) of a response received at `response_time` for a
/// request sent at `request_time`.
pub fn initial_age(
    resp: &ResponseHeader,
    request_time: SystemTime,
    response_time: SystemTime,
) -> Duration {
    let apparent = date_value(resp)
        .and_then(|d| response_time.duration_since(d).ok())
        .unwrap_or_default();
    let delay = response_time
        .duration_since(request_time)
        .unwrap_or_default();
    let corrected = Duration::from_secs(age_value(resp)).saturating_add(delay);
    apparent.max(corrected)
}

/// Freshness from `Expires` (RFC 9111 §4.2.1): `Expires - Date`, with the receipt time standing
/// in for a missing `Date`; an invalid `Expires` means already expired.
fn expires_lifetime(
    resp: &ResponseHeader,
    date: Option<SystemTime>,
    response_time: SystemTime,
) -> Option<Duration> {
    let expires = pingora_cache::filters::calculate_expires_header_time(resp)?;
    let date = date.unwrap_or(response_time);
    Some(expires.duration_since(date).unwrap_or(Duration::ZERO))
}

/// When a response was received and the request for it sent.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    /// When the request left for the origin (an upper bound on the response delay is fine).
    pub request: SystemTime,
    /// When the response arrived.
    pub response: SystemTime,
}

/// Whether (and how) to store `resp` on a route with cache bounds `bounds`: the meta carries the
/// freshness deadline, the age-corrected epoch and the stale windows. `resp` must already be
/// free of hop-by-hop fields ([`strip_connection_fields`]). The age comes from `received`: the
/// response itself, or the `304` that revalidated it (the stored `Age` and `Date` describe the
/// old response).
pub fn verdict(
    bounds: &RouteCache,
    resp: &ResponseHeader,
    received: &ResponseHeader,
    times: Times,
) -> RespCacheable {
    let uncacheable = RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    if resp.headers.contains_key(header::SET_COOKIE) || vary_names(resp).any(|n| n == "*") {
        return uncacheable;
    }
    let policy = Policy::of(resp);
    if policy.forbidden {
        return uncacheable;
    }
    let explicit = if policy.targeted {
        policy.lifetime
    } else {
        policy
            .lifetime
            .or_else(|| expires_lifetime(resp, date_value(received), times.response))
    };
    let lifetime = match explicit {
        // `no-cache` is a revalidation requirement, not a TTL: min_ttl does not lift it
        Some(ttl) if ttl.is_zero() && policy.revalidate => Duration::ZERO,
        Some(ttl) => ttl.clamp(bounds.min_ttl, bounds.max_ttl),
        None if heuristically_cacheable(resp.status.as_u16()) => bounds.default_ttl,
        None => return uncacheable,
    };
    let now = times.response;
    let age = initial_age(received, times.request, now);
    // pingora's meta serializes times as seconds since 1970
    let epoch = now
        .checked_sub(age)
        .filter(|t| *t >= SystemTime::UNIX_EPOCH)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut fresh_until = epoch.checked_add(lifetime).unwrap_or(now);
    if lifetime <= age {
        // stored already stale: the next request revalidates
        let just_before = now.checked_sub(Duration::from_millis(1)).unwrap_or(now);
        fresh_until = fresh_until.min(just_before);
    }
    let (swr, sie) = if policy.revalidate {
        (0, 0)
    } else {
        (
            policy.stale_while_revalidate.unwrap_or(0),
            policy
                .stale_if_error
                .unwrap_or(STALE_ON_DISCONNECT.as_secs() as u32),
        )
    };
    let mut header = resp.clone();
    if let Some(cc) = CacheControl::from_resp_headers(resp) {
        cc.strip_private_headers(&mut header);
    }
    let mut meta = CacheMeta::new(fresh_until, now, swr, sie, header);
    meta.set_epoch_override(epoch);
    RespCacheable::Cacheable(meta)
}

/// Whether a stored response (`stored`, already known to be within pingora's stale window) may
/// be served stale: `error` is `None` while revalidating in the background, else why the origin
/// failed. A 5xx allows it only under an explicit `stale-if-error` (RFC 5861 §4); an origin that
/// cannot be reached allows it unless the response forbids stale (RFC 9111 §4.2.4).
pub fn may_serve_stale(stored: &ResponseHeader, error: Option<&Error>) -> bool {
    let policy = Policy::of(stored);
    if policy.revalidate {
        return false;
    }
    match error {
        None => policy.stale_while_revalidate.is_some(),
        Some(e) => match e.etype() {
            ErrorType::HTTPStatus(code) => {
                matches!(code, 500 | 502 | 503 | 504) && policy.stale_if_error.is_some()
            }
            _ => e.esource() == &ErrorSource::Upstream,
        },
    }
}

/// Remove hop-by-hop fields a cache must neither store nor forward: every field named in
/// `Connection` (RFC 9110 §7.6.1) plus `Keep-Alive` and `Proxy-Connection`. Framing fields are
/// left to the HTTP layer, which rewrites them anyway.
pub fn strip_connection_fields(resp: &mut ResponseHeader) {
    let listed: Vec<HeaderName> = resp
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| {
            *n != header::CONTENT_LENGTH
                && *n != header::TRANSFER_ENCODING
                && *n != header::CONNECTION
        })
        .collect();
    for name in listed {
        resp.remove_header(&name);
    }
    resp.remove_header("keep-alive");
    resp.remove_header("proxy-connection");
}

/// Apply a `304`'s fields to the stored response header (RFC 9111 §3.2 / §4.3.4): each field in
/// the 304 replaces the stored field of that name, except [`NOT_UPDATED_BY_304`].
pub fn merge_not_modified(stored: &mut ResponseHeader, not_modified: &ResponseHeader) {
    let names: Vec<&HeaderName> = not_modified
        .headers
        .keys()
        .filter(|n| !NOT_UPDATED_BY_304.contains(&n.as_str()))
        .collect();
    for name in names {
        let mut values = not_modified.headers.get_all(name).iter();
        if let Some(first) = values.next() {
            // names and values come from a parsed header, so inserting them cannot fail
            let _ = stored.insert_header(name.clone(), first.clone());
        }
        for v in values {
            let _ = stored.append_header(name.clone(), v.clone());
        }
    }
}

/// The field names listed in the response's `Vary` fields, trimmed and lower-cased.
pub fn vary_names(resp: &ResponseHeader) -> impl Iterator<Item = String> + '_ {
    resp.headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
#[path = "freshness_tests.rs"]
mod tests;

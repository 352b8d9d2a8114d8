//! What the proxy reads from a Pingora session and rewrites in a request it forwards: the
//! viewer, cookies, the route's forwarding lists.

use crate::config::{Forward, ALWAYS_FORWARDED};
use crate::request::retain_cookies;

/// Did the request arrive over TLS?
pub fn is_tls(session: &pingora_proxy::Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

/// The viewer of a request the proxy serves: its connection's peer (after a trusted PROXY
/// header) and scheme, resolved through `trusted_proxies` ([`crate::viewer`]).
pub fn viewer(
    trusted: &crate::viewer::TrustedProxies,
    session: &pingora_proxy::Session,
) -> crate::viewer::Viewer {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let headers = &session.req_header().headers;
    trusted.viewer(
        peer,
        is_tls(session),
        || {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .map(http::HeaderValue::as_bytes)
                .collect()
        },
        || {
            headers
                .get_all("x-forwarded-proto")
                .iter()
                .next_back()
                .map(http::HeaderValue::as_bytes)
        },
    )
}

/// Replace the request's `Cookie` headers by one holding the cookies whose names pass `keep`
/// (none at all if no cookie is left).
pub fn rewrite_cookies(req: &mut pingora_http::RequestHeader, keep: impl Fn(&str) -> bool) {
    let joined: Vec<u8> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .map(http::HeaderValue::as_bytes)
        .collect::<Vec<_>>()
        .join(&b"; "[..]);
    req.remove_header(&http::header::COOKIE);
    if let Some(kept) = retain_cookies(&joined, keep) {
        if let Ok(v) = http::HeaderValue::from_str(&kept) {
            let _ = req.insert_header(http::header::COOKIE, v);
        }
    }
}

/// Apply a route's `forward_headers` / `forward_cookies` to the origin request. Headers the
/// edge needs (framing, conditionals, ranges: [`ALWAYS_FORWARDED`]) always pass; `Cookie` is
/// governed by `forward_cookies` alone.
pub fn apply_forwarding(
    req: &mut pingora_http::RequestHeader,
    headers: &Forward,
    cookies: &Forward,
) {
    if *headers != Forward::All {
        let drop: Vec<http::HeaderName> = req
            .headers
            .keys()
            .filter(|k| {
                let k = k.as_str();
                k != "cookie" && !ALWAYS_FORWARDED.contains(&k) && !headers.allows(k)
            })
            .cloned()
            .collect();
        for k in drop {
            req.remove_header(&k);
        }
    }
    match cookies {
        Forward::All => {}
        Forward::None => {
            req.remove_header(&http::header::COOKIE);
        }
        Forward::Only(names) => rewrite_cookies(req, |k| names.iter().any(|n| n == k)),
    }
}

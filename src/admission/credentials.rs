//! The credentials of `basic` routes (htpasswd, bcrypt off the request path) and `signed`
//! routes (CloudFront signed URLs and cookies).

use super::RequestFacts;
use crate::edge::{unix_secs, Edge};

/// HTTP Basic credentials against the realm's file. bcrypt costs milliseconds, so a check the
/// file's cache of verified credentials cannot answer runs on the blocking pool — unless the
/// client has spent its failed-credential budget ("throttled").
pub(super) async fn basic_check(
    edge: &Edge,
    realm: &str,
    facts: &RequestFacts<'_>,
) -> Result<String, &'static str> {
    let Some(file) = edge.realms.get(realm).map(|f| f.load_full()) else {
        return Err("unknown_realm");
    };
    let authorization = facts.authorization;
    let verdict = match file.check_cached(authorization) {
        Some(verdict) => verdict,
        None if !facts.may_check_in_full(edge) => return Err("throttled"),
        None => {
            let header = authorization.map(<[u8]>::to_vec);
            tokio::task::spawn_blocking(move || file.check(header.as_deref()))
                .await
                .unwrap_or(Err(crate::auth::htpasswd::BasicDenial::BadCredentials))
        }
    };
    verdict.map_err(|d| d.as_str())
}

/// A CloudFront signed URL or signed cookies, for the URL as the viewer requested it.
pub(super) fn signed_check(edge: &Edge, facts: &RequestFacts<'_>) -> Result<(), &'static str> {
    use crate::auth::cloudfront;
    let host = facts.host.to_ascii_lowercase();
    let cookies: Vec<&str> = facts
        .headers
        .all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .collect();
    let signed = cloudfront::SignedRequest {
        scheme: if facts.viewer.https { "https" } else { "http" },
        host: &host,
        path: facts.path,
        query: facts.query,
        cookie_headers: &cookies,
        client_ip: facts.viewer.addr,
    };
    let may_verify = || facts.may_check_in_full(edge);
    cloudfront::verify_gated(
        &signed,
        &edge.signed_keys.load(),
        unix_secs(facts.now),
        &may_verify,
    )
    .map(|_| ())
    .map_err(|d| d.as_str())
}

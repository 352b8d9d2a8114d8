//! Tokens of `paywall` and `token` routes: found by the configured source precedence,
//! verified (the token cache first; AWS Secure Media Delivery tokens too), checked against the
//! route and revocations, and the session watched for sharing.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::{Headers, RequestFacts};
use crate::access::{self, AuthResult, Decision};
use crate::auth::{Claims, Denial, PackedNames, Verified};
use crate::cache::Variant;
use crate::config::{AccessMode, TokenSource};
use crate::edge::{unix_secs, Edge};
use crate::request::{bearer_token, cookie_value, query_param};

/// A token found in a request, and where. Borrows the request: finding a token allocates only
/// for a percent-encoded query value (a hit with a bearer token allocates nothing here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken<'a> {
    /// The compact JWS, as sent: bytes, checked for UTF-8 only if it has to be verified (a
    /// cached token's bytes are those of a token that verified, [`crate::auth::TokenCache`]).
    pub token: Cow<'a, [u8]>,
    /// The source label (`path`, `query`, `bearer`, `cookie`).
    pub source: &'static str,
    /// The session id prefix of a path token (`<sid>.<jwt>`), if any.
    pub path_sid: Option<&'a str>,
}

/// What the request carries, in the terms [`find_token`] needs.
pub struct RequestParts<'a> {
    /// Path token, if the path source is configured and the first segment is one.
    pub path_token: Option<(&'a str, Option<&'a str>)>,
    /// The raw query string.
    pub query: &'a str,
    /// The `Authorization` field.
    pub authorization: Option<&'a [u8]>,
    /// The request's fields, for `Cookie`: looked up only when a cookie source's turn comes
    /// (a bearer hit never reads its cookies).
    pub headers: Headers<'a>,
}

/// Find the token by the configured precedence. The first source that carries a token decides;
/// a failing token never falls back to a lower source (the caller verifies only this one).
pub fn find_token<'a>(sources: &[TokenSource], parts: &RequestParts<'a>) -> Option<FoundToken<'a>> {
    for source in sources {
        let found = match source {
            TokenSource::Path => parts.path_token.map(|(t, sid)| FoundToken {
                token: Cow::Borrowed(t.as_bytes()),
                source: "path",
                path_sid: sid,
            }),
            TokenSource::Query(name) => query_param(parts.query, name).map(|t| FoundToken {
                token: match t {
                    Cow::Borrowed(t) => Cow::Borrowed(t.as_bytes()),
                    Cow::Owned(t) => Cow::Owned(t.into_bytes()),
                },
                source: "query",
                path_sid: None,
            }),
            TokenSource::Bearer => parts
                .authorization
                .and_then(bearer_token)
                .map(|t| FoundToken {
                    token: Cow::Borrowed(t),
                    source: "bearer",
                    path_sid: None,
                }),
            TokenSource::Cookie(name) => parts
                .headers
                .all("cookie")
                .find_map(|c| cookie_value(c, name))
                .map(|t| FoundToken {
                    token: Cow::Borrowed(t),
                    source: "cookie",
                    path_sid: None,
                }),
        };
        if found.is_some() {
            return found;
        }
    }
    None
}

/// The decision of a `paywall` or `token` route: find the token in the configured sources,
/// verify it (token cache first), check entitlement and revocation, watch the session.
pub(super) fn token_decision(
    edge: &Edge,
    mode: AccessMode,
    require: &[String],
    parts: &RequestParts<'_>,
    path: &str,
    query: &str,
    facts: &RequestFacts<'_>,
) -> Decision {
    let now = unix_secs(facts.now);
    let client = facts.viewer.addr;
    let presented = find_token(&edge.config.auth.token_sources, parts)
        .map(|t| present(edge, &t, path, client, now, facts, query));
    let decision = if mode == AccessMode::Paywall {
        access::paywall(require, presented)
    } else {
        access::token(require, presented)
    };
    watch_session(edge, mode, decision, client, facts.headers, now)
}

/// Verify a found token and gather what its claims are checked against.
fn present<'p>(
    edge: &Edge,
    found: &FoundToken<'_>,
    path: &'p str,
    client: Option<IpAddr>,
    now: u64,
    facts: &RequestFacts<'_>,
    query: &str,
) -> access::Presented<'p> {
    let mut verified = edge.tokens.verify_remembering(
        &found.token,
        facts.token_memo,
        &edge.keys.load(),
        &edge.policy,
        now,
        || facts.may_check_in_full(edge),
    );
    // Not one of ours: maybe a token of the AWS Secure Media Delivery service (HS256 with its
    // own kids), if the publisher migrates with its token service unchanged.
    if let (Err(Denial::UnknownKid | Denial::AlgMismatch), Some(secrets)) = (&verified, &edge.smd) {
        if let Some(result) = smd_verify(secrets, found, path, client, now, facts.headers, query) {
            verified = result;
        }
    }
    // The `<sid>.` prefix of a path token is outside the signature: it may only repeat the
    // signed `sid`, never replace it (revocation is keyed on the signed one).
    if let (Ok(claims), Some(prefix)) = (&verified, &found.path_sid) {
        if claims.sid().is_some_and(|sid| sid != *prefix) {
            verified = Err(Denial::Malformed);
        }
    }
    let revoked = verified
        .as_ref()
        .ok()
        .and_then(Verified::sid)
        .is_some_and(|sid| edge.revocations.is_revoked(sid, now));
    access::Presented {
        verified,
        revoked,
        path,
        client,
    }
}

/// Verify an AWS Secure Media Delivery token; `None` if it is not one (the JWT denial stands).
fn smd_verify(
    secrets: &crate::auth::smd::SmdSecrets,
    found: &FoundToken<'_>,
    path: &str,
    client: Option<IpAddr>,
    now: u64,
    headers: Headers<'_>,
    query: &str,
) -> Option<Result<Verified, Denial>> {
    use crate::auth::smd;
    // (it failed as a JWT before this: an SMD token is ASCII too)
    let token = std::str::from_utf8(&found.token).ok()?;
    let token = match &found.path_sid {
        Some(sid) => Cow::Owned(format!("{sid}.{token}")),
        None => Cow::Borrowed(token),
    };
    // CloudFront adds trusted `cloudfront-viewer-*` geo headers; here they could only come from
    // the client, so they are never believed.
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(k, _)| {
            !k.get(..18)
                .is_some_and(|p| p.eq_ignore_ascii_case("cloudfront-viewer-"))
        })
        .collect();
    let facts = smd::SmdRequest {
        path,
        client_ip: client,
        headers: &headers,
        query,
    };
    match smd::verify(&token, secrets, &facts, now) {
        Ok(c) => Some(Ok(Verified::Claims(Arc::new(Claims {
            kid: c.kid,
            key_id: 0,
            exp: c.exp,
            nbf: c.nbf,
            iat: c.iat,
            sub: None,
            subs: Vec::new(),
            subs_packed: PackedNames::default(),
            sid: c.sid,
            // scope and viewer binding were enforced by the SMD rules themselves
            paths: Vec::new(),
            ip: None,
        })))),
        Err(Denial::UnknownKid) => None,
        Err(d) => Some(Err(d)),
    }
}

/// Auto-revocation: count where an admitted session is seen from; over the limits, revoke it
/// (this request included). The `User-Agent` is looked up only for a session that is watched.
fn watch_session(
    edge: &Edge,
    mode: AccessMode,
    decision: Decision,
    client: Option<IpAddr>,
    headers: Headers<'_>,
    now: u64,
) -> Decision {
    let (Some(auto), Some(claims)) = (&edge.auto_revoker, &decision.claims) else {
        return decision;
    };
    let Some(sid) = claims.sid.as_deref() else {
        return decision;
    };
    if decision.result != Some(AuthResult::Valid) {
        return decision;
    }
    let user_agent = headers.first("user-agent").unwrap_or_default();
    let Some(trip) = auto.observe(sid, client, user_agent, claims.exp, now) else {
        return decision;
    };
    log::warn!("session {sid:?} revoked automatically: {trip:?} inside the window");
    edge.revoke_automatically(sid, claims.exp, now);
    Decision {
        // paywall readers fall back to the teaser, media viewers are refused
        variant: (mode == AccessMode::Paywall).then_some(Variant::Anonymous),
        result: Some(AuthResult::Revoked),
        claims: decision.claims,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carrying<'a>(
        query: &'a str,
        authorization: Option<&'a [u8]>,
        fields: &'a [(&'a str, &'a [u8])],
    ) -> RequestParts<'a> {
        RequestParts {
            path_token: None,
            query,
            authorization,
            headers: Headers::List(fields),
        }
    }

    #[test]
    fn first_source_with_a_token_decides() {
        let sources = vec![
            TokenSource::Query("token".into()),
            TokenSource::Bearer,
            TokenSource::Cookie("token".into()),
        ];
        let fields: [(&str, &[u8]); 2] =
            [("Cookie", b"token=fromcookie"), ("cookie", b"token=second")];
        let parts = carrying("", Some(b"Bearer frombearer"), &fields);
        let t = find_token(&sources, &parts).unwrap();
        assert_eq!((&*t.token, t.source), (&b"frombearer"[..], "bearer"));
        let parts = carrying("token=fromquery", Some(b"Bearer frombearer"), &fields);
        assert_eq!(
            find_token(&sources, &parts).unwrap().token,
            &b"fromquery"[..]
        );
        // no bearer (another scheme): the first Cookie field that carries the token
        let parts = carrying("", Some(b"Basic dTpw"), &fields);
        assert_eq!(
            find_token(&sources, &parts).unwrap().token,
            &b"fromcookie"[..]
        );
        let parts = carrying(
            "",
            None,
            &[("cookie", b"other=1"), ("COOKIE", b"token=later")],
        );
        assert_eq!(find_token(&sources, &parts).unwrap().token, &b"later"[..]);
        let parts = carrying("", None, &[("cookie", b"other=1")]);
        assert!(find_token(&sources, &parts).is_none());
    }
}

//! Admission, steps 1–3 of the request flow: normalize the path, find and strip the token,
//! route, and decide access (with revocation and auto-revocation). Runs in `request_filter`,
//! before any cache lookup.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use pingora_proxy::Session;

use super::request::{self, find_token, normalize_path, strip_query_params, RequestParts};
use super::respond::Answer;
use super::{Ctx, TollgateProxy};
use crate::access::{self, Decision};
use crate::auth::Denial;
use crate::cache::Variant;
use crate::config::{AccessMode, Route, ViewerProtocol};
use crate::edge::unix_now;

/// Verify an AWS Secure Media Delivery token; `None` if it is not one (the JWT denial stands).
fn smd_verify(
    secrets: &crate::auth::smd::SmdSecrets,
    found: &request::FoundToken<'_>,
    path: &str,
    client: Option<std::net::IpAddr>,
    now: u64,
    req: &pingora_http::RequestHeader,
    query: &str,
) -> Option<std::result::Result<Arc<crate::auth::Claims>, Denial>> {
    use crate::auth::smd;
    let token = match &found.path_sid {
        Some(sid) => Cow::Owned(format!("{sid}.{}", found.token)),
        None => Cow::Borrowed(&*found.token),
    };
    // CloudFront adds trusted `cloudfront-viewer-*` geo headers; here they could only come from
    // the client, so they are never believed.
    let headers: Vec<(&str, &[u8])> = req
        .headers
        .iter()
        .filter(|(k, _)| !k.as_str().starts_with("cloudfront-viewer-"))
        .map(|(k, v)| (k.as_str(), v.as_bytes()))
        .collect();
    let facts = smd::SmdRequest {
        path,
        client_ip: client,
        headers: &headers,
        query,
    };
    match smd::verify(&token, secrets, &facts, now) {
        Ok(c) => Some(Ok(Arc::new(crate::auth::Claims {
            kid: c.kid,
            key_id: 0,
            exp: c.exp,
            nbf: c.nbf,
            iat: c.iat,
            sub: None,
            subs: Vec::new(),
            sid: c.sid,
            // scope and viewer binding were enforced by the SMD rules themselves
            paths: Vec::new(),
            ip: None,
        }))),
        Err(Denial::UnknownKid) => None,
        Err(d) => Some(Err(d)),
    }
}

/// What the framing checks of [`crate::http1`] refuse, for requests that did not come through
/// the connection loop (HTTP/2) — and again for those that did: a body on a method that has
/// none, and a `Host`/`:authority` that is not a plain host name.
fn refused_framing(session: &mut Session) -> Option<crate::http1::Refusal> {
    use crate::http1::{bodyless, valid_host, Refusal};
    let req = session.req_header();
    let host = req
        .headers
        .get(http::header::HOST)
        .map(HeaderValue::as_bytes)
        .or_else(|| req.uri.authority().map(|a| a.as_str().as_bytes()));
    if host.is_some_and(|h| !valid_host(h)) {
        return Some(Refusal::BadHost);
    }
    let bodyless = bodyless(req.method.as_str());
    if bodyless && !session.is_body_empty() {
        return Some(Refusal::BodyNotAllowed);
    }
    None
}

/// Read and drop a refused request's body (HTTP/2: up to [`DISCARD_LIMIT`] bytes, briefly), so
/// that the refusal ends the stream cleanly instead of resetting it under a client still
/// sending. Nothing of it goes anywhere.
async fn discard_body(session: &mut Session) {
    let mut seen = 0;
    while seen <= DISCARD_LIMIT {
        let read = tokio::time::timeout(DISCARD_WAIT, session.read_request_body()).await;
        match read {
            Ok(Ok(Some(chunk))) => seen += chunk.len(),
            _ => return,
        }
    }
}

/// Most of a refused body read before answering (see [`discard_body`]).
const DISCARD_LIMIT: usize = 64 * 1024;
/// Longest wait for the next piece of a refused body.
const DISCARD_WAIT: Duration = Duration::from_secs(1);

fn request_host(session: &Session) -> String {
    let req = session.req_header();
    let raw = req
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    raw.to_ascii_lowercase()
}

/// What a token decision reads from a request, however the request was parsed.
pub(super) struct TokenFacts<'a> {
    /// A path token and its session prefix, when path tokens are a source.
    pub path_token: Option<(&'a str, Option<&'a str>)>,
    /// The query as sent (token parameters included).
    pub raw_query: &'a str,
    /// The first `Authorization` header.
    pub authorization: Option<&'a [u8]>,
    /// Every `Cookie` header.
    pub cookies: &'a [&'a [u8]],
    /// The client's address.
    pub client: Option<std::net::IpAddr>,
    /// `User-Agent`, empty when absent.
    pub user_agent: &'a [u8],
}

impl TollgateProxy {
    /// Steps 1–3 of the request flow. Returns the answer to give locally, if any.
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Option<Answer> {
        let edge = &*self.edge;
        ctx.viewer = request::viewer(&edge.trusted_proxies, session);
        if let Some(refusal) = refused_framing(session) {
            log::debug!("refused request: {}", refusal.as_str());
            edge.count_refusal(refusal);
            if refusal == crate::http1::Refusal::BodyNotAllowed {
                discard_body(session).await;
            }
            return Some(Answer::Status(refusal.status()));
        }
        let req = session.req_header();
        let raw_path = req.uri.path();
        let raw_query = req.uri.query().unwrap_or("");
        let normalized = match normalize_path(raw_path) {
            Ok(p) => p,
            Err(why) => {
                log::debug!("refused path {raw_path:?}: {}", why.as_str());
                return Some(Answer::Status(400));
            }
        };
        let (path_token, path) = edge.split_token(&normalized);
        let Some((route_index, route)) = edge.route_for(path) else {
            return Some(Answer::Status(404));
        };
        ctx.route = Some(route_index);
        if let Some(answer) = self.behaviour_gate(session, route, ctx.viewer.https) {
            return Some(answer);
        }
        let query = strip_query_params(raw_query, &edge.query_token_names);
        // CloudFront signing parameters are never part of the cache key or the origin request.
        let query = match route.access {
            AccessMode::Signed => {
                Cow::Owned(crate::auth::cloudfront::strip_signing_params(&query).into_owned())
            }
            _ => query,
        };

        let decision: Decision = match route.access {
            AccessMode::Public => access::public(),
            AccessMode::Paywall | AccessMode::Token => {
                let cookies: Vec<&[u8]> = req
                    .headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .map(HeaderValue::as_bytes)
                    .collect();
                let facts = TokenFacts {
                    path_token,
                    raw_query,
                    authorization: req
                        .headers
                        .get(http::header::AUTHORIZATION)
                        .map(HeaderValue::as_bytes),
                    cookies: &cookies,
                    client: ctx.viewer.addr,
                    user_agent: req
                        .headers
                        .get(http::header::USER_AGENT)
                        .map_or(&b""[..], HeaderValue::as_bytes),
                };
                self.token_decision(route, &facts, path, &query, Some(req))
            }
            AccessMode::Basic => {
                let realm = route.realm.as_deref().unwrap_or_default();
                match self.basic_check(realm, req, ctx.viewer.addr).await {
                    Ok(_user) => access::granted(),
                    Err(label) => {
                        let result = access::AuthResult::Refused(label);
                        self.edge.count_auth(result, ctx.viewer.addr);
                        ctx.auth = Some(result);
                        return Some(match self.throttled(result) {
                            Some(answer) => answer,
                            None => Answer::Challenge(realm.to_owned()),
                        });
                    }
                }
            }
            AccessMode::Signed => {
                match self.signed_check(session, raw_path, raw_query, ctx.viewer) {
                    Ok(()) => access::granted(),
                    Err(label) => {
                        let result = access::AuthResult::Refused(label);
                        self.edge.count_auth(result, ctx.viewer.addr);
                        ctx.auth = Some(result);
                        return Some(self.throttled(result).unwrap_or(Answer::Status(403)));
                    }
                }
            }
        };
        if let Some(result) = decision.result {
            self.edge.count_auth(result, ctx.viewer.addr);
        }
        (ctx.auth, ctx.claims) = (decision.result, decision.claims);
        let Some(variant) = decision.variant else {
            let throttled = decision.result.and_then(|r| self.throttled(r));
            return Some(throttled.unwrap_or(Answer::Status(403)));
        };
        ctx.variant = variant;
        ctx.path = path.to_owned();
        ctx.query = request::policy_query(&route.behaviour.query, query);
        let uri_changed = ctx.path != raw_path || ctx.query != raw_query;
        ctx.host = request_host(session);
        self.sanitize(session, ctx, uri_changed);
        None
    }

    /// The decision of a `paywall` or `token` route: find the token in the configured sources,
    /// verify it (token cache first), check entitlement and revocation, watch the session.
    /// `req` is consulted only for AWS Secure Media Delivery tokens (their rules read request
    /// headers); without it such tokens are not tried, so callers that pass `None` must not
    /// run with SMD secrets configured.
    pub(super) fn token_decision(
        &self,
        route: &Route,
        facts: &TokenFacts<'_>,
        path: &str,
        query: &str,
        req: Option<&pingora_http::RequestHeader>,
    ) -> Decision {
        let edge = &*self.edge;
        let parts = RequestParts {
            path_token: facts.path_token,
            query: facts.raw_query,
            authorization: facts.authorization,
            cookies: facts.cookies,
        };
        let now = unix_now();
        let presented = find_token(&edge.config.auth.token_sources, &parts)
            .map(|t| self.present(&t, path, facts.client, now, req, query));
        let decision = if route.access == AccessMode::Paywall {
            access::paywall(&route.require, presented)
        } else {
            access::token(&route.require, presented)
        };
        self.watch_session(route.access, decision, facts.client, facts.user_agent, now)
    }

    /// The 429 for a check the failed-credential budget refused.
    fn throttled(&self, result: access::AuthResult) -> Option<Answer> {
        let budget = self.edge.budget.as_ref()?;
        result
            .throttled()
            .then(|| Answer::Throttled(budget.retry_after()))
    }

    /// HTTP Basic credentials against the realm's file. bcrypt costs milliseconds, so a check
    /// the file's cache of verified credentials cannot answer runs on the blocking pool — unless
    /// `client` has spent its failed-credential budget ("throttled").
    async fn basic_check(
        &self,
        realm: &str,
        req: &pingora_http::RequestHeader,
        client: Option<std::net::IpAddr>,
    ) -> Result<String, &'static str> {
        let Some(file) = self.edge.realms.get(realm).map(|f| f.load_full()) else {
            return Err("unknown_realm");
        };
        let header = req.headers.get(http::header::AUTHORIZATION);
        let verdict = match file.check_cached(header.map(HeaderValue::as_bytes)) {
            Some(verdict) => verdict,
            None if !self.edge.may_verify(client) => return Err("throttled"),
            None => {
                let header = header.map(|h| h.as_bytes().to_vec());
                tokio::task::spawn_blocking(move || file.check(header.as_deref()))
                    .await
                    .unwrap_or(Err(crate::auth::htpasswd::BasicDenial::BadCredentials))
            }
        };
        verdict.map_err(|d| d.as_str())
    }

    /// A CloudFront signed URL or signed cookies, for the URL as the viewer requested it.
    fn signed_check(
        &self,
        session: &Session,
        raw_path: &str,
        raw_query: &str,
        viewer: crate::viewer::Viewer,
    ) -> Result<(), &'static str> {
        use crate::auth::cloudfront;
        let req = session.req_header();
        let host = request_host(session);
        let cookies: Vec<&str> = req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let signed = cloudfront::SignedRequest {
            scheme: if viewer.https { "https" } else { "http" },
            host: &host,
            path: raw_path,
            query: raw_query,
            cookie_headers: &cookies,
            client_ip: viewer.addr,
        };
        let may_verify = || self.edge.may_verify(viewer.addr);
        cloudfront::verify_gated(
            &signed,
            &self.edge.signed_keys.load(),
            unix_now(),
            &may_verify,
        )
        .map(|_| ())
        .map_err(|d| d.as_str())
    }

    /// Viewer protocol policy and allowed methods, checked before any token work. `https`:
    /// the viewer's scheme.
    fn behaviour_gate(&self, session: &Session, route: &Route, https: bool) -> Option<Answer> {
        let b = &route.behaviour;
        let req = session.req_header();
        if !https {
            match b.viewer_protocol {
                ViewerProtocol::AllowAll => {}
                ViewerProtocol::HttpsOnly => return Some(Answer::Status(403)),
                ViewerProtocol::RedirectToHttps => {
                    let host = request_host(session);
                    let name = request::host_name(&host);
                    if name.is_empty() {
                        return Some(Answer::Status(400));
                    }
                    let port = match self.edge.https_port {
                        Some(443) | None => String::new(),
                        Some(p) => format!(":{p}"),
                    };
                    let pq = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
                    // GET/HEAD as CloudFront (301); 307 keeps the method and body of others.
                    let code = if matches!(req.method, http::Method::GET | http::Method::HEAD) {
                        301
                    } else {
                        307
                    };
                    return Some(Answer::Redirect(code, format!("https://{name}{port}{pq}")));
                }
            }
        }
        if let Some(methods) = &b.methods {
            if !methods.contains(&req.method) {
                let allow: Vec<&str> = methods.iter().map(|m| m.as_str()).collect();
                return Some(Answer::NotAllowed(allow.join(", ")));
            }
        }
        None
    }

    /// Verify a found token and gather what its claims are checked against.
    fn present<'a>(
        &self,
        found: &request::FoundToken<'_>,
        path: &'a str,
        client: Option<std::net::IpAddr>,
        now: u64,
        req: Option<&pingora_http::RequestHeader>,
        query: &str,
    ) -> access::Presented<'a> {
        let edge = &*self.edge;
        let mut verified =
            edge.tokens
                .verify_gated(&found.token, &edge.keys.load(), &edge.policy, now, || {
                    edge.may_verify(client)
                });
        // Not one of ours: maybe a token of the AWS Secure Media Delivery service (HS256 with
        // its own kids), if the publisher migrates with its token service unchanged.
        if let (Err(Denial::UnknownKid | Denial::AlgMismatch), Some(secrets), Some(req)) =
            (&verified, &edge.smd, req)
        {
            if let Some(result) = smd_verify(secrets, found, path, client, now, req, query) {
                verified = result;
            }
        }
        // The `<sid>.` prefix of a path token is outside the signature: it may only repeat the
        // signed `sid`, never replace it (revocation is keyed on the signed one).
        if let (Ok(claims), Some(prefix)) = (&verified, &found.path_sid) {
            if claims.sid.as_deref().is_some_and(|sid| sid != *prefix) {
                verified = Err(Denial::Malformed);
            }
        }
        let revoked = verified
            .as_ref()
            .ok()
            .and_then(|c| c.sid.as_deref())
            .is_some_and(|sid| edge.revocations.is_revoked(sid, now));
        access::Presented {
            verified,
            revoked,
            path,
            client,
        }
    }

    /// Auto-revocation: count where an admitted session is seen from; over the limits, revoke it
    /// (this request included).
    fn watch_session(
        &self,
        mode: AccessMode,
        decision: Decision,
        client: Option<std::net::IpAddr>,
        user_agent: &[u8],
        now: u64,
    ) -> Decision {
        let edge = &*self.edge;
        let (Some(auto), Some(claims)) = (&edge.auto_revoker, &decision.claims) else {
            return decision;
        };
        let Some(sid) = claims.sid.as_deref() else {
            return decision;
        };
        if decision.result != Some(access::AuthResult::Valid) {
            return decision;
        }
        let Some(trip) = auto.observe(sid, client, user_agent, now) else {
            return decision;
        };
        let ttl = Duration::from_secs(claims.exp.saturating_sub(now))
            .max(edge.config.revocation.default_ttl);
        log::warn!("session {sid:?} revoked automatically: {trip:?} inside the window");
        if let Err(e) = edge.revocations.revoke(sid, ttl, "auto", now) {
            log::error!("saving revocations: {e}");
        }
        edge.metrics.auto_revocations.inc();
        edge.metrics
            .revoked_sessions
            .set(edge.revocations.len() as i64);
        Decision {
            // paywall readers fall back to the teaser, media viewers are refused
            variant: (mode == AccessMode::Paywall).then_some(Variant::Anonymous),
            result: Some(access::AuthResult::Revoked),
            claims: decision.claims,
        }
    }

    /// Remove every client-sent copy of the variant and secret headers and the token itself,
    /// and rewrite the URI to the normalized, token-free form the cache and origin see.
    fn sanitize(&self, session: &mut Session, ctx: &Ctx, uri_changed: bool) {
        let edge = &*self.edge;
        let req = session.req_header_mut();
        for h in &edge.strip_headers {
            req.remove_header(h);
        }
        // Upgrades are not offered: a tunnel to the origin would carry requests the edge never
        // sees (h2c smuggling). Without the request's Upgrade the origin answers plainly.
        for h in [
            http::header::UPGRADE,
            http::HeaderName::from_static("http2-settings"),
        ] {
            req.remove_header(&h);
        }
        let access = ctx.route(edge).map(|r| r.access);
        if access == Some(AccessMode::Basic) {
            // Credentials are for the edge; the origin never sees them.
            req.remove_header(&http::header::AUTHORIZATION);
        }
        if edge.bearer_source {
            let is_bearer = req
                .headers
                .get(http::header::AUTHORIZATION)
                .is_some_and(|v| request::bearer_token(v.as_bytes()).is_some());
            if is_bearer {
                req.remove_header(&http::header::AUTHORIZATION);
            }
        }
        // Cookies meant for the edge: token cookies, and on signed routes CloudFront's signed
        // cookies. The Cookie header is rebuilt only when it carries one of them.
        let signed_names: &[&str] = if access == Some(AccessMode::Signed) {
            &crate::auth::cloudfront::SIGNED_COOKIE_NAMES
        } else {
            &[]
        };
        let edge_cookie = |name: &str| {
            edge.cookie_token_names.iter().any(|n| n == name) || signed_names.contains(&name)
        };
        let carries_edge_cookie = edge
            .cookie_token_names
            .iter()
            .map(String::as_str)
            .chain(signed_names.iter().copied())
            .any(|name| {
                req.headers
                    .get_all(http::header::COOKIE)
                    .iter()
                    .any(|v| request::cookie_value(v.as_bytes(), name).is_some())
            });
        if carries_edge_cookie {
            request::rewrite_cookies(req, |name| !edge_cookie(name));
        }
        if uri_changed {
            let pq = if ctx.query.is_empty() {
                Cow::Borrowed(ctx.path.as_str())
            } else {
                Cow::Owned(format!("{}?{}", ctx.path, ctx.query))
            };
            match http::Uri::builder().path_and_query(pq.as_ref()).build() {
                Ok(uri) => req.set_uri(uri),
                Err(e) => log::warn!("cannot rewrite uri {pq}: {e}"),
            }
        }
    }
}

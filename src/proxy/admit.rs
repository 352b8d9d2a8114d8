//! The proxy's side of admission ([`crate::admission`], steps 1–3 of the request flow): the
//! framing checks HTTP/2 needs, the decision (taken here, or handed over by the connection
//! loop), and the request rewritten to what the cache and the origin may see. Runs in
//! `request_filter`, before any cache lookup.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::HeaderValue;
use pingora_proxy::Session;

use super::handovers::{Handovers, HANDOVER_HEADER};
use super::respond::Answer;
use super::session;
use super::{Ctx, TollgateProxy};
use crate::admission::{self, Handover, Headers, RequestFacts};
use crate::config::AccessMode;
use crate::http1::one_request::OneRequest;
use crate::request;

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

/// `Host`, or HTTP/2's `:authority`, as sent.
fn request_host(req: &pingora_http::RequestHeader) -> &str {
    req.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri.authority().map(|a| a.as_str()))
        .unwrap_or("")
}

/// The admission a connection loop decided for this request, if one did: inside the stream
/// (HTTP/1), or left in `handovers` under the nonce the request names (HTTP/2). The nonce
/// field is removed from every request, whichever way it came.
fn handed_over(session: &mut Session, handovers: &Handovers) -> Option<Handover> {
    let nonce = session.req_header_mut().remove_header(HANDOVER_HEADER);
    if session.as_downstream().is_http2() {
        return handovers.take(nonce?.as_bytes());
    }
    session
        .downstream_session
        .stream()?
        .as_any()
        .downcast_ref::<OneRequest>()?
        .take_handover()?
        .downcast()
        .ok()
}

impl TollgateProxy {
    /// Steps 1–3 of the request flow ([`admission::admit`], or the connection loop's decision
    /// of it). Returns the answer to give locally, if any.
    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut Ctx) -> Option<Answer> {
        let edge = &*self.edge;
        ctx.viewer = session::viewer(&edge.trusted_proxies, session);
        if let Some(refusal) = refused_framing(session) {
            log::debug!("refused request: {}", refusal.as_str());
            edge.count_refusal(refusal);
            if refusal == crate::http1::Refusal::BodyNotAllowed {
                discard_body(session).await;
            }
            return Some(Answer::Status(refusal.status()));
        }
        let outcome = match handed_over(session, &self.handovers) {
            Some(decided) => *decided,
            None => {
                let req = session.req_header();
                let facts = RequestFacts {
                    method: &req.method,
                    target: req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                    path: req.uri.path(),
                    query: req.uri.query().unwrap_or(""),
                    host: request_host(req),
                    headers: Headers::Map(&req.headers),
                    authorization: req
                        .headers
                        .get(http::header::AUTHORIZATION)
                        .map(http::HeaderValue::as_bytes),
                    viewer: ctx.viewer,
                    now: SystemTime::now(),
                    // (Pingora's sessions keep no state of ours from request to request)
                    token_memo: None,
                    checked_in_full: std::sync::atomic::AtomicBool::new(false),
                };
                admission::admit(edge, &facts).await
            }
        };
        let admitted = match outcome {
            Ok(admitted) => admitted,
            Err(refused) => {
                (ctx.route, ctx.auth, ctx.claims) = (refused.route, refused.auth, refused.claims);
                return Some(refused.answer);
            }
        };
        let req = session.req_header();
        let uri_changed =
            admitted.path != req.uri.path() || admitted.query != req.uri.query().unwrap_or("");
        ctx.route = Some(admitted.route);
        ctx.from_peer = admitted.from_peer;
        (ctx.variant, ctx.auth, ctx.claims) = (admitted.variant, admitted.auth, admitted.claims);
        (ctx.host, ctx.path, ctx.query) = (admitted.host, admitted.path, admitted.query);
        self.sanitize(session, ctx, uri_changed);
        None
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
            session::rewrite_cookies(req, |name| !edge_cookie(name));
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

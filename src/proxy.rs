//! The Pingora proxy: each phase is a few lines that call pure functions.
//!
//! - `request_filter`: admission ([`crate::admission`], or the connection loop's decision handed
//!   over with the request; [`admit`]), then a fresh memory hit answered at once for HTTP/2
//!   ([`fast`]). Runs before the cache lookup, so a hit is never served without a decision.
//! - `request_cache_filter` / `cache_key_callback`: cache GET/HEAD keyed by content + variant.
//! - `upstream_request_filter` (misses only): origin `Host`, secret header, variant header.
//! - `response_cache_filter`: HTTP caching semantics ([`freshness`]): targeted fields, age,
//!   freshness clamped to the route's TTL bounds, stale windows, `304` updates.
//! - `response_filter`: `Cache-Status`, `Age`, never the secret; an unsafe request's success
//!   invalidates what it changed ([`invalidate`]).
//! - `logging`: counted and logged in the one place every path finishes a request ([`finish`]).

mod access_record;
pub mod admit;
mod caching;
pub mod fast;
mod finish;
pub mod freshness;
pub mod handovers;
pub mod invalidate;
pub mod respond;
pub mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::Method;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::{CacheKey, CacheMeta, RespCacheable};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::{FailToProxy, ProxyHttp, Session};

use crate::access::AuthResult;
use crate::access_log::AccessLog;
use crate::auth::Claims;
use crate::cache::{cache_key, Variant};
use crate::config::Route;
use crate::edge::{Edge, VARIANT_HEADER};
use finish::Finished;

/// The Tollgate proxy logic.
#[derive(Clone)]
pub struct TollgateProxy {
    edge: Arc<Edge>,
    access_log: Option<AccessLog>,
    /// Decisions the HTTP/2 loop hands to the proxy (shared by every clone).
    handovers: Arc<handovers::Handovers>,
}

impl TollgateProxy {
    /// A proxy over the given edge state.
    pub fn new(edge: Arc<Edge>) -> TollgateProxy {
        TollgateProxy {
            edge,
            access_log: None,
            handovers: Arc::default(),
        }
    }

    /// Decisions the HTTP/2 loop leaves for the proxy ([`handovers`]).
    pub fn handovers(&self) -> &handovers::Handovers {
        &self.handovers
    }

    /// The edge state this proxy serves from.
    pub fn edge(&self) -> &Edge {
        &self.edge
    }

    /// Send one [`crate::access_log::Record`] per request to this access log.
    pub fn with_access_log(mut self, log: Option<AccessLog>) -> TollgateProxy {
        self.access_log = log;
        self
    }
}

/// Per-request state.
pub struct Ctx {
    start: Instant,
    route: Option<usize>,
    variant: Variant,
    host: String,
    path: String,
    query: String,
    stored: bool,
    cache_enabled: bool,
    disk_hit: bool,
    /// A fresh memory hit answered from `request_filter` ([`fast`]).
    memory_hit: bool,
    local_status: Option<u16>,
    upstream_start: Option<Instant>,
    // for the access log
    auth: Option<AuthResult>,
    claims: Option<Arc<Claims>>,
    origin_time: Option<Duration>,
    /// The origin's `304` while revalidating, applied to the stored header.
    not_modified: Option<Box<ResponseHeader>>,
    /// The client address and scheme every decision uses (SPEC §10).
    viewer: crate::viewer::Viewer,
    /// A miss forwarded by a peer of the shield ring ([`crate::shield`]).
    from_peer: bool,
    /// The shield ring peer this miss was sent to.
    shield_peer: Option<String>,
    /// Peers that could not be reached for this request: the next node on the ring is tried,
    /// after two the origin.
    shield_failed: Vec<String>,
}

impl Ctx {
    fn route<'a>(&self, edge: &'a Edge) -> Option<&'a Route> {
        self.route.and_then(|i| edge.config.routes.get(i))
    }
}

/// Sign an origin request with AWS SigV4 (private S3 bucket). Client `Authorization` and
/// `x-amz-*` headers are removed first: S3 refuses unsigned `x-amz-*` headers, and a client
/// must never choose what the edge signs.
fn sign_origin_request(
    signer: &crate::sigv4::SigV4Signer,
    host: &http::HeaderValue,
    req: &mut pingora_http::RequestHeader,
) -> Result<()> {
    use crate::sigv4::{OriginRequest, Payload};
    let drop: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| *k == http::header::AUTHORIZATION || k.as_str().starts_with("x-amz-"))
        .cloned()
        .collect();
    for k in drop {
        req.remove_header(&k);
    }
    let pq = req
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let payload = if matches!(req.method, Method::GET | Method::HEAD) {
        Payload::Empty
    } else {
        Payload::Unsigned
    };
    let signed = signer
        .sign(
            &OriginRequest {
                method: req.method.as_str(),
                host: host.to_str().unwrap_or_default(),
                path_and_query: &pq,
                payload,
                signed_headers: &[],
            },
            std::time::SystemTime::now(),
        )
        .map_err(|e| Error::explain(ErrorType::InternalError, format!("sigv4: {e}")))?;
    if signed.path_and_query != pq {
        let uri = http::Uri::builder()
            .path_and_query(signed.path_and_query.as_str())
            .build()
            .map_err(|e| Error::explain(ErrorType::InternalError, format!("sigv4 uri: {e}")))?;
        req.set_uri(uri);
    }
    for (name, value) in signed.headers {
        req.insert_header(name, value)?;
    }
    Ok(())
}

/// The peer of the shield ring this miss goes to, if it goes to one: cacheable misses of client
/// requests (a peer's forwarded miss goes to the origin), to the key's owner on the ring; after
/// two peers failed to answer, the origin.
fn shield_owner<'e>(edge: &'e Edge, ctx: &Ctx) -> Option<&'e crate::config::Peer> {
    let shield = edge.shield.as_ref()?;
    if !ctx.cache_enabled || ctx.from_peer || ctx.shield_failed.len() >= 2 {
        return None;
    }
    let key = cache_key(&ctx.host, &ctx.path, &ctx.query, ctx.variant);
    match shield.owner(&key.primary_bin(), &ctx.shield_failed) {
        crate::shield::Owner::Me => None,
        crate::shield::Owner::Peer(peer) => Some(peer),
    }
}

/// What every upstream request carries, to the origin or to a shield peer: the route's
/// forwarding policy, the variant this node decided, and the viewer as resolved (never what the
/// client claimed).
fn forward_decided(edge: &Edge, req: &mut pingora_http::RequestHeader, ctx: &Ctx) -> Result<()> {
    if let Some(route) = ctx.route(edge) {
        let b = &route.behaviour;
        session::apply_forwarding(req, &b.forward_headers, &b.forward_cookies);
    }
    req.insert_header(VARIANT_HEADER, ctx.variant.as_str())?;
    match ctx.viewer.addr {
        Some(addr) => req.insert_header("x-forwarded-for", addr.to_string())?,
        None => {
            req.remove_header("x-forwarded-for");
        }
    }
    let proto = if ctx.viewer.https { "https" } else { "http" };
    req.insert_header("x-forwarded-proto", proto)?;
    Ok(())
}

/// The request to a shield peer: the client's host and token-free target and the signature of
/// the variant this node decided (never the origin's secret: the owner adds its own).
fn to_shield_peer(edge: &Edge, req: &mut pingora_http::RequestHeader, ctx: &Ctx) -> Result<()> {
    let shield = edge
        .shield
        .as_ref()
        .ok_or_else(|| Error::explain(ErrorType::InternalError, "no shield"))?;
    forward_decided(edge, req, ctx)?;
    req.insert_header(http::header::HOST, ctx.host.as_str())?;
    let signature = shield.sign(
        req.method.as_str(),
        &ctx.host,
        req.uri.path_and_query().map_or("/", |pq| pq.as_str()),
        ctx.variant,
        crate::edge::unix_now(),
    );
    req.insert_header(crate::shield::SHIELD_HEADER, signature)?;
    Ok(())
}

#[async_trait]
impl ProxyHttp for TollgateProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            start: Instant::now(),
            route: None,
            variant: Variant::Public,
            host: String::new(),
            path: String::new(),
            query: String::new(),
            stored: false,
            cache_enabled: false,
            disk_hit: false,
            memory_hit: false,
            local_status: None,
            upstream_start: None,
            auth: None,
            claims: None,
            origin_time: None,
            not_modified: None,
            viewer: crate::viewer::Viewer {
                addr: None,
                https: false,
            },
            from_peer: false,
            shield_peer: None,
            shield_failed: Vec::new(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match self.admit(session, ctx).await {
            None => Ok(false),
            Some(answer) => {
                ctx.local_status = Some(answer.status());
                respond::answer(session, &answer).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        let Some(route) = ctx.route(&self.edge) else {
            return Ok(());
        };
        let method = &session.req_header().method;
        if !route.cache.enabled || !(method == Method::GET || method == Method::HEAD) {
            return Ok(());
        }
        let edge = &*self.edge;
        session
            .cache
            .enable(edge.store, None, None, Some(edge.cache_lock), None);
        ctx.cache_enabled = true;
        session
            .cache
            .set_max_file_size_bytes(edge.store.max_object_size() as usize);
        Ok(())
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        hit_handler: &mut pingora_cache::HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        ctx.disk_hit = hit_handler.as_any().is::<crate::cache::DiskHit>();
        Ok(None)
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        Ok(cache_key(&ctx.host, &ctx.path, &ctx.query, ctx.variant))
    }

    /// Secondary keys for `Vary` (within the entitlement variant, which is in the primary key).
    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &pingora_http::RequestHeader,
    ) -> Option<HashBinary> {
        caching::vary_key(meta, req)
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(self.cache_verdict(session, resp, ctx))
    }

    fn should_serve_stale(
        &self,
        session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        session
            .cache
            .maybe_cache_meta()
            .is_some_and(|m| freshness::may_serve_stale(m.response_header(), error))
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.shield_peer = None;
        if let Some(peer) = shield_owner(&self.edge, ctx) {
            ctx.upstream_start = Some(Instant::now());
            ctx.shield_peer = Some(peer.id.clone());
            let mut peer = HttpPeer::new(peer.addr, false, String::new());
            peer.options.connection_timeout = Some(Duration::from_secs(1));
            peer.options.read_timeout = Some(Duration::from_secs(60));
            return Ok(Box::new(peer));
        }
        let origin = ctx
            .route(&self.edge)
            .and_then(|r| self.edge.origins.get(&r.origin))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no origin"))?;
        ctx.upstream_start = Some(Instant::now());
        let mut peer = HttpPeer::new(origin.addr(), origin.tls, origin.host.clone());
        peer.options.ca = origin.ca.clone();
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.read_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora_http::RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.shield_peer.is_some() {
            return to_shield_peer(&self.edge, upstream_request, ctx);
        }
        let origin = ctx
            .route(&self.edge)
            .and_then(|r| self.edge.origins.get(&r.origin))
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "request has no origin"))?;
        forward_decided(&self.edge, upstream_request, ctx)?;
        if !ctx.host.is_empty() {
            upstream_request.insert_header("x-forwarded-host", ctx.host.as_str())?;
        }
        upstream_request.insert_header(http::header::HOST, origin.host_header.clone())?;
        if let Some((name, value)) = &origin.secret {
            upstream_request.insert_header(name.clone(), value.clone())?;
        }
        if let Some(signer) = &origin.sigv4 {
            sign_origin_request(&signer.load(), &origin.host_header, upstream_request)?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start.take() {
            ctx.origin_time = Some(start.elapsed());
            let origin = ctx
                .route(&self.edge)
                .map(|r| r.origin.as_str())
                .unwrap_or("");
            self.edge
                .metrics
                .upstream_duration
                .with_label_values(&[origin])
                .observe(ctx.origin_time.unwrap_or_default().as_secs_f64());
        }
        let origin = ctx
            .route(&self.edge)
            .and_then(|r| self.edge.origins.get(&r.origin));
        // Never store or return the origin secret, whatever header the origin echoes it in.
        if let Some(origin) = origin {
            if let Some((name, value)) = &origin.secret {
                upstream_response.remove_header(name);
                let leaking: Vec<http::HeaderName> = upstream_response
                    .headers
                    .iter()
                    .filter(|(_, v)| {
                        v.as_bytes()
                            .windows(value.len().max(1))
                            .any(|w| w == value.as_bytes())
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in leaking {
                    log::warn!("origin echoed its secret in response header {k}; removed");
                    upstream_response.remove_header(&k);
                }
            }
        }
        upstream_response.remove_header(VARIANT_HEADER);
        // (a shield peer answered instead of the origin: its refusals are its own)
        let signed_origin = ctx.shield_peer.is_none() && origin.is_some_and(|o| o.sigv4.is_some());
        if signed_origin && matches!(upstream_response.status.as_u16(), 401 | 403) {
            // A private bucket refusing the edge's own signature is the edge's problem, not
            // the reader's: a bad gateway, never cached, the bucket's error body not passed on.
            log::error!(
                "origin refused the edge's SigV4 signature ({}): check the origin's sigv4 \
                 credentials",
                upstream_response.status
            );
            return Error::e_explain(
                ErrorType::HTTPStatus(502),
                "origin refused the edge's SigV4 signature",
            );
        }
        if let (Some(peer), Some(shield)) = (&ctx.shield_peer, &self.edge.shield) {
            let hit = upstream_response
                .headers
                .get("cache-status")
                .is_some_and(|v| v.as_bytes().starts_with(b"tollgate; hit"));
            shield.count(peer, if hit { "hit" } else { "miss" });
            // the hop is this node's to report (`fwd-peer`); the owner's entry is not stored
            upstream_response.remove_header("cache-status");
        }
        caching::upstream_fields(upstream_response, ctx);
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if let (Some(peer), Some(shield)) = (ctx.shield_peer.take(), &self.edge.shield) {
            log::warn!("shield peer {peer} unreachable ({e}); trying the next node or the origin");
            shield.count(&peer, "error");
            ctx.shield_failed.push(peer);
            e.set_retry(true);
        }
        e
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let (label, status) =
            respond::cache_status(session.cache.phase(), ctx.stored, ctx.cache_enabled);
        let status = if ctx.disk_hit && label == "hit" {
            "tollgate; hit; detail=disk"
        } else {
            status
        };
        match &ctx.shield_peer {
            // RFC 9211: the hop that filled this miss
            Some(peer) if label != "hit" => upstream_response
                .insert_header("cache-status", format!("{status}; fwd-peer=\"{peer}\""))?,
            _ => upstream_response.insert_header("cache-status", status)?,
        }
        caching::set_age(session, upstream_response)?;
        if upstream_response.version < http::Version::HTTP_11 {
            // An intermediary sends its own HTTP-version (RFC 9110 §6.2). Pingora passes an
            // HTTP/1.0 origin's status line through on a `Content-Length` answer, so a miss
            // said `HTTP/1.0` to an HTTP/1.1 client while the hit after it said `HTTP/1.1`.
            upstream_response.set_version(http::Version::HTTP_11);
        }
        self.invalidate_after_unsafe(session, upstream_response, ctx)
            .await;
        if ctx.variant == Variant::Subscriber && !ctx.from_peer {
            // Entitled content must not land in shared caches downstream of the edge (a peer of
            // the shield ring stores it, and says `private` to its own reader).
            upstream_response.insert_header(http::header::CACHE_CONTROL, "private")?;
        }
        Ok(())
    }

    /// A HEAD is filled with a GET (pingora-cache stores the body for later GETs); its answer
    /// carries no content. Over HTTP/1 Pingora's session drops it; over HTTP/2 it would send
    /// the body as DATA frames on a HEAD stream, which clients reset as a protocol error (found
    /// by `tests/leak_scale.rs`). The body is dropped here, after the cache has stored it.
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        _end_of_stream: bool,
        _ctx: &mut Ctx,
    ) -> Result<Option<Duration>> {
        if session.req_header().method == Method::HEAD {
            *body = None;
        }
        Ok(None)
    }

    /// Errors (origin unreachable, bad upstream response, ...) answered with the same headers as
    /// every other response: `Cache-Status`, `Age`, a short body that names no internals.
    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && session.response_written().is_none() {
            ctx.local_status = Some(code);
            if let Err(write_err) = respond::local(session, code).await {
                log::debug!("could not send the {code} response: {write_err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut Ctx) {
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .or(ctx.local_status)
            .unwrap_or(0);
        let cache_status = if ctx.local_status.is_some() {
            "edge"
        } else if ctx.memory_hit {
            "hit"
        } else {
            respond::cache_status(session.cache.phase(), ctx.stored, ctx.cache_enabled).0
        };
        let finished = Finished {
            route: ctx.route,
            variant: ctx.variant,
            cache: cache_status,
            status,
            duration: ctx.start.elapsed(),
        };
        self.finish(&finished, || {
            self.access_record(session, ctx, status, cache_status)
        });
    }
}

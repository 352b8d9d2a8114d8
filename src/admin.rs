//! The admin listener (SPEC §6): `/metrics` and `/healthz` are open; `/admin/*` needs
//! `Authorization: Bearer <admin token>`, compared in constant time.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::edge::Edge;
use crate::fleet::{Applied, Event, Fleet, FleetError};

/// Largest admin request body accepted.
const MAX_BODY: usize = 1 << 20;

/// The admin HTTP app.
pub struct AdminApp {
    edge: Arc<Edge>,
    /// On a fleet node, purges and revocations are published to the fleet (and applied here
    /// from the stream, like everywhere else).
    fleet: Option<Arc<Fleet>>,
}

impl AdminApp {
    /// An admin app over the edge state (and the node's fleet membership, if any).
    pub fn new(edge: Arc<Edge>, fleet: Option<Arc<Fleet>>) -> AdminApp {
        AdminApp { edge, fleet }
    }
}

/// `POST /admin/unrevoke` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnrevokeRequest {
    sid: String,
}

/// `POST /admin/purge` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
}

/// `POST /admin/revoke` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    sid: String,
    ttl_seconds: Option<u64>,
}

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let len = resp.body().len();
    let headers = resp.headers_mut();
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        headers.insert(http::header::CONTENT_TYPE, v);
    }
    headers.insert(http::header::CONTENT_LENGTH, len.into());
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Vec<u8>> {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    reply(status, "application/json", body)
}

fn error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json(status, serde_json::json!({ "error": message }))
}

fn fleet_error(e: FleetError) -> Response<Vec<u8>> {
    match e {
        FleetError::Invalid(why) => error(StatusCode::BAD_REQUEST, &why),
        unavailable @ FleetError::Unavailable(_) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, &unavailable.to_string());
            r.headers_mut().insert(
                http::header::RETRY_AFTER,
                http::HeaderValue::from_static("5"),
            );
            r
        }
    }
}

/// Whether the request carries the admin token. No configured token → admin API disabled.
fn authorized(session: &ServerSession, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return false;
    };
    let presented = session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| crate::request::bearer_token(v.as_bytes()))
        .unwrap_or_default();
    bool::from(presented.ct_eq(token.as_bytes()))
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err("request body too large".into());
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(format!("reading body: {e}")),
        }
    }
}

impl AdminApp {
    async fn purge(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let req: PurgeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"paths\": [...], \"prefixes\": [...]}}: {e}"),
                )
            }
        };
        if req.paths.is_empty() && req.prefixes.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "give at least one of paths, prefixes",
            );
        }
        let mut paths = Vec::with_capacity(req.paths.len());
        for p in &req.paths {
            match crate::request::normalize_path(p) {
                Ok(n) => paths.push(n.into_owned()),
                Err(why) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!("path {p:?} is not a valid path ({})", why.as_str()),
                    )
                }
            }
        }
        if let Some(bad) = req.prefixes.iter().find(|p| !p.starts_with('/')) {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("prefix {bad:?} must start with '/'"),
            );
        }
        if let Some(fleet) = &self.fleet {
            let event = Event::Purge {
                paths,
                prefixes: req.prefixes,
            };
            return self.publish(fleet, &event).await;
        }
        let what = format!("paths {paths:?}, prefixes {:?}", req.prefixes);
        let purged = self.edge.purge(paths, req.prefixes).await;
        log::info!("purged {purged} objects ({what})");
        json(StatusCode::OK, serde_json::json!({ "purged": purged }))
    }
}

impl AdminApp {
    async fn revoke(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let req: RevokeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"sid\": \"...\", \"ttl_seconds\": N}}: {e}"),
                )
            }
        };
        if req.sid.is_empty() || req.sid.len() > crate::revocation::MAX_SID_LEN {
            return error(StatusCode::BAD_REQUEST, "sid must be 1 to 256 characters");
        }
        let edge = &self.edge;
        let ttl = req
            .ttl_seconds
            .map(std::time::Duration::from_secs)
            .unwrap_or(edge.config.revocation.default_ttl);
        let now = crate::edge::unix_now();
        if let Some(fleet) = &self.fleet {
            let event = Event::Revoke {
                sid: req.sid,
                expires_at: now.saturating_add(ttl.as_secs()),
                reason: "admin".into(),
            };
            return self.publish(fleet, &event).await;
        }
        match edge.revocations.revoke(&req.sid, ttl, "admin", now) {
            Ok(expires_at) => {
                edge.metrics
                    .revoked_sessions
                    .set(edge.revocations.len() as i64);
                log::info!("session {:?} revoked until {expires_at}", req.sid);
                json(
                    StatusCode::OK,
                    serde_json::json!({ "revoked": req.sid, "expires_at": expires_at }),
                )
            }
            Err(e) => {
                // In force in memory, but it would not survive a restart: say so.
                log::error!("revocation of {:?} not saved: {e}", req.sid);
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    serde_json::json!({
                        "revoked": req.sid,
                        "error": "revoked in memory, but saving the list failed; see the log",
                    }),
                )
            }
        }
    }

    async fn unrevoke(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let req: UnrevokeRequest = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"sid\": \"...\"}}: {e}"),
                )
            }
        };
        let event = Event::Unrevoke { sid: req.sid };
        if let Some(fleet) = &self.fleet {
            return self.publish(fleet, &event).await;
        }
        if let Err(e) = event.check() {
            return error(StatusCode::BAD_REQUEST, &e);
        }
        match event.apply(&self.edge).await {
            Applied::Unrevoked(was) => {
                json(StatusCode::OK, serde_json::json!({ "unrevoked": was }))
            }
            other => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("unexpected result {other:?}"),
            ),
        }
    }

    /// Publish `event` to the fleet; answer with its sequence and, once this node applied it
    /// (waited for briefly), what it did here.
    async fn publish(&self, fleet: &Fleet, event: &Event) -> Response<Vec<u8>> {
        let seq = match fleet.publish(event, None).await {
            Ok(seq) => seq,
            Err(e) => return fleet_error(e),
        };
        log::info!("fleet: {} published as event {seq}", event.kind());
        let mut answer = serde_json::json!({ "seq": seq, "applied_here": false });
        if let Some(here) = fleet.applied_here(seq).await {
            answer["applied_here"] = true.into();
            match here {
                Some(Applied::Purged(n)) => answer["purged"] = n.into(),
                Some(Applied::Revoked(until)) => answer["expires_at"] = until.into(),
                Some(Applied::Unrevoked(was)) => answer["unrevoked"] = was.into(),
                None => {}
            }
        }
        match event {
            Event::Revoke { sid, .. } => answer["revoked"] = sid.as_str().into(),
            Event::Unrevoke { sid } => answer["sid"] = sid.as_str().into(),
            Event::Purge { .. } => {}
        }
        json(StatusCode::OK, answer)
    }

    async fn fleet_status(&self) -> Response<Vec<u8>> {
        match &self.fleet {
            Some(fleet) => json(StatusCode::OK, fleet.status().await),
            None => error(
                StatusCode::NOT_FOUND,
                "this node is not in a fleet (no fleet: in its config)",
            ),
        }
    }

    async fn put_keys(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let Some(fleet) = &self.fleet else {
            return error(
                StatusCode::NOT_FOUND,
                "this node is not in a fleet (no fleet: in its config): edit keys.jwks_file",
            );
        };
        let body = match read_body(session).await {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e),
        };
        let Ok(text) = std::str::from_utf8(&body) else {
            return error(StatusCode::BAD_REQUEST, "the JWK Set is not UTF-8");
        };
        match fleet.publish_keys(text).await {
            Ok(revision) => json(StatusCode::OK, serde_json::json!({ "revision": revision })),
            Err(e) => fleet_error(e),
        }
    }

    fn revocations(&self) -> Response<Vec<u8>> {
        let list = self.edge.revocations.list(crate::edge::unix_now());
        json(StatusCode::OK, serde_json::json!({ "revocations": list }))
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_owned();
        match (method.as_str(), path.as_str()) {
            ("GET", "/metrics") => {
                let edge = &self.edge;
                edge.metrics
                    .token_cache_entries
                    .set(edge.tokens.len() as i64);
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    edge.metrics.render(),
                )
            }
            ("GET", "/healthz") => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            (_, p) if p.starts_with("/admin/") => {
                if !authorized(
                    session,
                    self.edge
                        .config
                        .admin
                        .as_ref()
                        .and_then(|a| a.token.as_deref()),
                ) {
                    let mut r = error(StatusCode::UNAUTHORIZED, "admin token required");
                    r.headers_mut().insert(
                        http::header::WWW_AUTHENTICATE,
                        http::HeaderValue::from_static("Bearer realm=\"tollgate-admin\""),
                    );
                    return r;
                }
                match (method.as_str(), p) {
                    ("POST", "/admin/purge") => self.purge(session).await,
                    (_, "/admin/purge") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                    ("POST", "/admin/revoke") => self.revoke(session).await,
                    (_, "/admin/revoke") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                    ("POST", "/admin/unrevoke") => self.unrevoke(session).await,
                    (_, "/admin/unrevoke") => error(StatusCode::METHOD_NOT_ALLOWED, "use POST"),
                    ("GET", "/admin/fleet") => self.fleet_status().await,
                    (_, "/admin/fleet") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
                    ("PUT", "/admin/keys") => self.put_keys(session).await,
                    (_, "/admin/keys") => error(StatusCode::METHOD_NOT_ALLOWED, "use PUT"),
                    ("GET", "/admin/revocations") => self.revocations(),
                    (_, "/admin/revocations") => error(StatusCode::METHOD_NOT_ALLOWED, "use GET"),
                    _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
                }
            }
            _ => error(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

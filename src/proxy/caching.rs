//! The cache phases of the proxy: the glue between pingora's hooks and the pure rules of
//! [`super::freshness`] and [`super::invalidate`].

use std::time::SystemTime;

use http::HeaderValue;
use pingora_cache::cache_control::{CacheControl, InterpretCacheControl};
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::{CacheMeta, CachePhase, NoCacheReason, RespCacheable, VarianceBuilder};
use pingora_error::Result;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::Session;

use super::{freshness, invalidate, Ctx, TollgateProxy};
use crate::cache::{cache_key, Variant};

/// The `Vary` secondary key of a request for a stored response (within the entitlement variant,
/// which is in the primary key).
pub(super) fn vary_key(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let names: Vec<String> = freshness::vary_names(meta.response_header()).collect();
    if names.is_empty() {
        return None;
    }
    let mut vb = VarianceBuilder::new();
    for name in names {
        let value = req
            .headers
            .get_all(name.as_str())
            .iter()
            .map(HeaderValue::as_bytes)
            .collect::<Vec<_>>()
            .join(&b","[..]);
        vb.add_owned_name_value(name, value);
    }
    vb.finalize()
}

/// On every origin response header: drop hop-by-hop fields, and keep a `304` (a revalidation)
/// so that all its fields update the stored response.
pub(super) fn upstream_fields(resp: &mut ResponseHeader, ctx: &mut Ctx) {
    freshness::strip_connection_fields(resp);
    if resp.status == http::StatusCode::NOT_MODIFIED {
        ctx.not_modified = Some(Box::new(resp.clone()));
    }
}

/// The `Age` of a response: pingora sets it on hits; a response revalidated with a `304` gets
/// its age from the refreshed meta (not the stored response's old `Age` field); anything else
/// without one gets `0`.
pub(super) fn set_age(session: &Session, resp: &mut ResponseHeader) -> Result<()> {
    let age = match session.cache.phase() {
        CachePhase::Revalidated => session
            .cache
            .maybe_cache_meta()
            .map(|m| m.age().as_secs().to_string()),
        CachePhase::RevalidatedNoCache(_) => Some("0".to_owned()),
        _ => None,
    };
    match age {
        Some(age) => resp.insert_header(http::header::AGE, age)?,
        None if !resp.headers.contains_key(http::header::AGE) => {
            resp.insert_header(http::header::AGE, "0")?
        }
        None => {}
    }
    Ok(())
}

impl TollgateProxy {
    /// `response_cache_filter`: whether and how long to store an origin response (or the stored
    /// response merged with a `304`).
    pub(super) fn cache_verdict(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> RespCacheable {
        let Some(route) = ctx.route(&self.edge) else {
            return RespCacheable::Uncacheable(NoCacheReason::NeverEnabled);
        };
        // A client Authorization header that reached the origin (not our bearer token, which is
        // stripped) makes the response private unless the origin says otherwise.
        if session
            .req_header()
            .headers
            .contains_key(http::header::AUTHORIZATION)
        {
            let cc = CacheControl::from_resp_headers(resp);
            if !cc.is_some_and(|c| c.allow_caching_authorized_req()) {
                return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
            }
        }
        // revalidation: pingora merged only a few of the 304's fields; apply all of them
        let not_modified = ctx.not_modified.take();
        let merged;
        let (resp, received) = match &not_modified {
            Some(not_modified) => {
                let mut m = resp.clone();
                freshness::merge_not_modified(&mut m, not_modified);
                merged = m;
                (&merged, &**not_modified)
            }
            None => (resp, resp),
        };
        let now = SystemTime::now();
        let times = freshness::Times {
            request: now.checked_sub(ctx.start.elapsed()).unwrap_or(now),
            response: now,
        };
        let verdict = freshness::verdict(&route.cache, resp, received, times);
        ctx.stored = matches!(verdict, RespCacheable::Cacheable(_));
        verdict
    }

    /// `response_filter`: a successful unsafe request invalidates the stored responses of its
    /// target and of the same-host `Location` / `Content-Location`, every variant, both tiers.
    pub(super) async fn invalidate_after_unsafe(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &Ctx,
    ) {
        if ctx.route.is_none() || !invalidate::is_unsafe(&session.req_header().method) {
            return;
        }
        let paths = invalidate::targets(&ctx.host, &ctx.path, resp);
        if paths.is_empty() {
            return;
        }
        let keys = Variant::ALL
            .iter()
            .map(|v| cache_key(&ctx.host, &ctx.path, &ctx.query, *v).combined_bin())
            .collect();
        self.edge.store.invalidate(paths, keys).await;
    }
}

//! The access-log record of a finished request (see [`crate::access_log`]).
//!
//! Admitted requests already carry the token-free path and query in the context. Refused ones
//! (400/403/404) never got that far, so their path and query are derived here the same way
//! admission does: normalize, split off a path token, strip token query parameters. The raw
//! request target is never logged as is.

use std::time::SystemTime;

use pingora_proxy::Session;

use super::{Ctx, TollgateProxy};
use crate::access_log::Record;
use crate::request::{normalize_path, strip_query_params};

impl TollgateProxy {
    /// The record for this request; moves the path, query and host out of `ctx` (this is the
    /// last phase).
    pub(super) fn access_record(
        &self,
        session: &Session,
        ctx: &mut Ctx,
        status: u16,
        cache: &'static str,
    ) -> Record {
        let req = session.req_header();
        let admitted = !ctx.path.is_empty();
        let (path, query) = if admitted {
            (
                std::mem::take(&mut ctx.path),
                std::mem::take(&mut ctx.query),
            )
        } else {
            let raw_query = req.uri.query().unwrap_or("");
            (
                self.token_free_path(req.uri.path()),
                strip_query_params(raw_query, &self.edge.query_token_names).into_owned(),
            )
        };
        let host = if ctx.host.is_empty() {
            req.headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_ascii_lowercase()
        } else {
            std::mem::take(&mut ctx.host)
        };
        let tier = (cache == "hit").then_some(if ctx.disk_hit { "disk" } else { "memory" });
        Record {
            time: SystemTime::now(),
            client: ctx.viewer.addr,
            method: req.method.clone(),
            host,
            path,
            query,
            status,
            bytes: session.body_bytes_sent() as u64,
            duration: ctx.start.elapsed(),
            cache,
            tier,
            variant: admitted.then(|| ctx.variant.as_str()),
            auth: ctx.auth.map(|a| a.as_str()),
            route: ctx.route,
            claims: ctx.claims.take(),
            origin_time: ctx.origin_time,
        }
    }

    /// The path of a refused request as admission would have seen it, without a path token.
    /// A path that does not normalize is logged raw, minus a leading token segment.
    pub(super) fn token_free_path(&self, raw: &str) -> String {
        let normalized = normalize_path(raw);
        self.edge
            .split_token(normalized.as_deref().unwrap_or(raw))
            .1
            .to_owned()
    }
}

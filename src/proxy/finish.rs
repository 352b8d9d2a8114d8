//! How every answered request is finished, whichever path answered it: counted
//! (`tollgate_requests_total`, the duration histogram) and written to the access log —
//! [`TollgateProxy::finish`], used by the proxy's `logging` phase and by the connection loop
//! for its hits, its 429s and its refusals.

use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use super::fast::{FastHit, Throttled};
use super::TollgateProxy;
use crate::access_log::Record;
use crate::cache::Variant;
use crate::http1::Refusal;
use crate::request::strip_query_params;

/// What every answered request is counted by, whichever path answered it.
pub(crate) struct Finished {
    /// The route, when one matched.
    pub route: Option<usize>,
    /// The variant counted (`public` for requests refused before a variant was decided).
    pub variant: Variant,
    /// The cache-status label (`hit`, `miss`, `edge`, ...).
    pub cache: &'static str,
    /// The status sent.
    pub status: u16,
    /// From the request's head to the end of its answer.
    pub duration: Duration,
}

impl TollgateProxy {
    /// Count an answered request and write its access-log record — the one place both the
    /// proxy (`logging`) and the hit path ([`fast`]) finish a request. `record` is built only
    /// when the access log is on.
    pub(crate) fn finish(&self, done: &Finished, record: impl FnOnce() -> Record) {
        self.edge
            .count_request(done.route, done.variant, done.cache, done.status);
        self.edge
            .metrics
            .request_duration
            .observe(done.duration.as_secs_f64());
        if let Some(log) = &self.access_log {
            log.log(record());
        }
    }
}

impl Finished {
    /// The access-log record of this request, for a request the connection loop answered:
    /// what every such record has; callers fill in what their kind of answer adds.
    fn record(
        &self,
        method: http::Method,
        (host, path, query): (String, String, String),
        body_bytes: usize,
        client: Option<IpAddr>,
    ) -> Record {
        Record {
            time: SystemTime::now(),
            client,
            method,
            host,
            path,
            query,
            status: self.status,
            bytes: body_bytes as u64,
            duration: self.duration,
            cache: self.cache,
            tier: None,
            variant: None,
            auth: None,
            route: self.route,
            claims: None,
            origin_time: None,
        }
    }
}

/// The method of a request the connection loop answered as a hit or a 429.
fn get_or_head(head_only: bool) -> http::Method {
    if head_only {
        http::Method::HEAD
    } else {
        http::Method::GET
    }
}

impl TollgateProxy {
    /// Count and log a `429` the connection loop wrote, as the proxy counts its own.
    pub fn throttled_done(&self, t: Throttled, body_bytes: usize, client: Option<IpAddr>) {
        // (the decision itself was counted by admission)
        let done = Finished {
            route: Some(t.route),
            variant: Variant::Public,
            cache: "edge",
            status: 429,
            duration: t.start.elapsed(),
        };
        self.finish(&done, || Record {
            auth: Some(t.result.as_str()),
            ..done.record(
                get_or_head(t.head_only),
                (t.host, t.path, t.query),
                body_bytes,
                client,
            )
        });
    }

    /// Finish a request the connection loop refused for its framing (or whose head timed
    /// out), as `logging` finishes one the proxy refused: counted, and an access-log record
    /// with the method and token-free target as far as `buf` parses (`-` where it does not).
    pub fn refused(
        &self,
        refusal: Refusal,
        buf: &[u8],
        body_bytes: usize,
        client: Option<IpAddr>,
        start: Instant,
    ) {
        let edge = &*self.edge;
        edge.count_refusal(refusal);
        let done = Finished {
            route: None,
            variant: Variant::Public,
            cache: "edge",
            status: refusal.status(),
            duration: start.elapsed(),
        };
        self.finish(&done, || {
            // httparse fills the request line before it reads the fields: a head refused for
            // its fields still names its method and target
            let mut fields = [httparse::EMPTY_HEADER; crate::http1::MAX_HEADERS];
            let mut req = httparse::Request::new(&mut fields);
            let _ = req.parse(buf);
            let method = req
                .method
                .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok())
                .unwrap_or_else(|| http::Method::from_bytes(b"-").expect("a token"));
            let target = req.path.unwrap_or("-");
            let (path, query) = target.split_once('?').unwrap_or((target, ""));
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .unwrap_or("")
                .to_ascii_lowercase();
            let path = self.token_free_path(path);
            let query = strip_query_params(query, &edge.query_token_names).into_owned();
            done.record(method, (host, path, query), body_bytes, client)
        });
    }

    /// Count a request the connection loop handed to the proxy.
    pub fn count_proxied(&self) {
        self.edge.metrics.fast_proxied.inc();
    }

    /// Count and log a hit this path wrote (`body_bytes` of body sent, `from_file` of them
    /// with `sendfile`), as `logging` does for the proxy's requests.
    pub fn fast_done(
        &self,
        hit: FastHit,
        body_bytes: usize,
        from_file: usize,
        client: Option<IpAddr>,
    ) {
        let edge = &*self.edge;
        edge.store.count_memory_hit();
        edge.metrics.fast_served.inc();
        if from_file > 0 {
            edge.metrics.fast_sendfile_bytes.inc_by(from_file as u64);
        }
        let done = Finished {
            route: Some(hit.route),
            variant: hit.variant,
            cache: "hit",
            status: hit.object.status(),
            duration: hit.start.elapsed(),
        };
        self.finish(&done, || Record {
            tier: Some("memory"),
            variant: Some(hit.variant.as_str()),
            auth: hit.auth.map(|r| r.as_str()),
            claims: hit.claims,
            ..done.record(
                get_or_head(hit.head_only),
                (hit.host, hit.path, hit.query),
                body_bytes,
                client,
            )
        });
    }
}

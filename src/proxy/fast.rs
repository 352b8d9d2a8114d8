//! The hit path: fresh memory hits answered without Pingora's proxy phases, by the connection
//! loops in front of the proxy — `app::front` for HTTP/1, `app::h2` for HTTP/2.
//!
//! Why: on a warm hit, Pingora's HTTP/1 session and proxy state machine cost about twice what
//! the answer itself costs — the request is parsed into a header map, a cache key, a `CacheMeta`
//! and a response header are built and dropped, each phase is a boxed future. `perf` on the
//! 1 KiB public hit (benches/peers, issue 7) showed Tollgate's user space at ~21 µs a request
//! against HAProxy's ~9 µs. This path does only what a fresh hit needs: parse the head
//! (`httparse`), admit it ([`crate::admission::admit`], the proxy's own admission, every
//! access mode), look the object up in the memory tier, and write its stored head plus the
//! shared body. Benchmarks: `benches/peers/run.sh` and `benches/wrk/run.sh`.
//!
//! It answers only a GET or HEAD without body, range, conditional or request cache directives
//! ([`eligible`]) whose admission let it in, for a fresh memory-tier object without `Vary` for
//! the variant decided. Anything else goes to the proxy ([`Parse::Proxy`], or
//! [`Fast::Proxy`] with the admission already decided, which the proxy does not decide again).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::respond::{self, Answer};
use super::TollgateProxy;
use crate::access::AuthResult;
use crate::admission::{self, Handover, Headers, Refused, RequestFacts};
use crate::auth::{Claims, TokenMemo};
use crate::cache::body_file::BodyFile;
use crate::cache::memory::FreshObject;
use crate::cache::{hit_hash, Variant};
use crate::request::strip_query_params;
use crate::viewer::Viewer;

mod eligible;
pub use eligible::{hit_request_h2, parse, HitRequest, Parse};

/// What the connection loop does with a request it parsed.
pub enum Fast {
    /// Answer this fresh memory hit.
    Hit(FastHit),
    /// Answer `429`: the client's failed-credential budget is spent, and this request's
    /// credential is not one already known good (see [`crate::budget`]). Answered here, with
    /// the connection kept, because a flood of them is what the budget is for: through the
    /// proxy each cost as much as several hits.
    Throttled(Box<Throttled>),
    /// Anything else: the proxy answers it, with the admission already decided here (the
    /// proxy does not decide again, [`crate::admission`]).
    Proxy(Handover),
}

/// A `429` about to be written, and what its access-log line and metrics need.
pub struct Throttled {
    /// The admission's refusal, for a loop that has the proxy answer it ([`Throttled::handover`]).
    pub(super) refused: Refused,
    pub(super) start: Instant,
    pub(super) route: usize,
    pub(super) result: AuthResult,
    /// `Retry-After`, seconds.
    pub retry_after: u64,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) query: String,
    /// The request was a HEAD (no body in the answer).
    pub head_only: bool,
}

impl Throttled {
    /// The refusal, for the proxy to answer without deciding again ([`crate::admission`]).
    pub fn handover(self) -> Handover {
        Box::new(Err(self.refused))
    }
}

/// A hit about to be written, and what its access-log line and metrics need afterwards.
pub struct FastHit {
    pub(super) start: Instant,
    pub(super) route: usize,
    pub(super) variant: Variant,
    pub(super) auth: Option<AuthResult>,
    pub(super) claims: Option<Arc<Claims>>,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) query: String,
    pub(super) head_only: bool,
    pub(super) object: FreshObject,
    /// The object's stored head ([`crate::cache::head`]), shared
    pub(super) stored_head: Bytes,
    pub(super) age: u64,
    /// The decision checked a credential in full ([`RequestFacts::checked_in_full`]).
    pub(super) checked_in_full: bool,
}

impl FastHit {
    /// The response head into `out` (cleared first): the stored head, then `Age`,
    /// `Cache-Status`, `Date`, `Connection`. A body of up to [`INLINE_BODY`] bytes follows in
    /// the same buffer. The connection keeps `out` from answer to answer: a 1 KiB answer is
    /// larger than glibc's per-thread cache of freed chunks, so a fresh `Vec` per answer went
    /// through `_int_malloc` and `_int_free` (callgrind: 115 to 350 + 300 instructions of a
    /// 12,000-instruction hit, depending on heap layout).
    pub fn write_head(&self, close: bool, out: &mut Vec<u8>) {
        let stored = &self.stored_head;
        let date = pingora_core::protocols::http::date::get_cached_date();
        out.clear();
        out.reserve(stored.len() + 160 + self.inline_body().len());
        out.extend_from_slice(stored);
        // (`write!` went through `fmt::write`: ~280 instructions of a hit, callgrind)
        let mut digits = [0u8; 20];
        out.extend_from_slice(b"Age: ");
        out.extend_from_slice(decimal(self.age, &mut digits));
        out.extend_from_slice(b"\r\ncache-status: ");
        out.extend_from_slice(respond::HIT.as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(if close {
            &b"\r\nConnection: close\r\n\r\n"[..]
        } else {
            &b"\r\nConnection: keep-alive\r\n\r\n"[..]
        });
        out.extend_from_slice(self.inline_body());
    }

    /// The response as an HTTP/2 header block into `out` (appended): the stored head's block
    /// ([`crate::cache::head::StoredHead::sendable_h2`]), then `age`, `cache-status` and
    /// `date`, as the proxy's HTTP/2 answer to a hit has them. `false` if the stored head has
    /// no such block (it always has one when it has an HTTP/1 head to send).
    pub fn write_h2_head(&self, out: &mut BytesMut) -> bool {
        use crate::http2::hpack;
        let Some(block) = self.object.sendable_h2() else {
            return false;
        };
        out.extend_from_slice(block);
        let mut digits = [0u8; 20];
        hpack::put_indexed_name(out, hpack::AGE, decimal(self.age, &mut digits));
        hpack::put_literal(out, b"cache-status", respond::HIT.as_bytes());
        let date = pingora_core::protocols::http::date::get_cached_date();
        hpack::put_indexed_name(out, hpack::DATE, date.as_bytes());
        true
    }

    /// A body small enough to copy behind the head (one write); empty otherwise.
    fn inline_body(&self) -> &[u8] {
        match self.body() {
            Some(b) if b.len() <= INLINE_BODY => b,
            _ => b"",
        }
    }

    /// A body sent as its own buffer after the head (vectored write), if any.
    pub fn trailing_body(&self) -> Option<&Bytes> {
        self.body().filter(|b| b.len() > INLINE_BODY)
    }

    /// The sealed file holding the trailing body, when the memory tier keeps it in one: the
    /// connection loop then sends the body with `sendfile` (see [`crate::cache::body_file`]).
    pub fn trailing_file(&self) -> Option<&BodyFile> {
        self.trailing_body().and(self.object.file().map(|f| &**f))
    }

    /// When the request's head had been read.
    pub fn started(&self) -> Instant {
        self.start
    }

    /// Whether the decision checked a credential in full (a signature not remembered: an
    /// ES256 verification is ~75 µs here, `benches/verify.rs`, where a decision from the caches
    /// is well under 1 µs). The HTTP/1 loop writes such an answer after the other ready
    /// connections have had their turn (`yield_now`: tokio runs the task again after its next
    /// poll for I/O), so answers that each cost a verification go out together rather than one
    /// every ~75 µs. Why: a client waiting on its socket is woken per answer; with answers
    /// spread out it goes back to sleep between them, and every wake-up was the sender's kernel
    /// time. Measured with never-seen ES256 tokens (`wrk -t1 -c50`, node on CPU 0,
    /// `/usr/bin/time -v` on wrk, node's `utime`/`stime` from `/proc`): wrk slept 35,878 times
    /// for 37,809 answers without the yield, 4,670 times for 46,665 with it, and the node's
    /// system time fell from 22 % to 14 % of its CPU. (Until issue 20's fourteenth session
    /// this was a decision longer than 20 µs: a clock read per credential hit, and under
    /// callgrind, ~50 times slower, cached decisions passed for slow ones.)
    pub fn checked_in_full(&self) -> bool {
        self.checked_in_full
    }

    /// Body bytes this answer carries (0 for HEAD).
    pub fn body_len(&self) -> usize {
        self.body().map_or(0, Bytes::len)
    }

    /// The body to send, if any (none for HEAD).
    pub fn body(&self) -> Option<&Bytes> {
        (!self.head_only).then(|| self.object.body())
    }
}

/// `n` in decimal, written at the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Bodies up to this size are copied behind the head: one buffer, one `send`. Larger bodies
/// go out as a second buffer of the same `writev`, never copied.
const INLINE_BODY: usize = 16 * 1024;

impl TollgateProxy {
    /// Whether fresh memory hits are answered by the connection loop.
    pub fn fast_hits(&self) -> bool {
        self.edge.config.cache.fast_hits
    }

    /// Admit `req` ([`crate::admission::admit`], the proxy's own admission) and answer it
    /// from the memory tier if a fresh object is there; anything else goes to the proxy with
    /// the admission. Nothing is counted or logged here but the admission's own decision.
    pub async fn fast_hit(
        &self,
        req: &HitRequest<'_>,
        viewer: Viewer,
        token_memo: &TokenMemo,
    ) -> Fast {
        let start = Instant::now();
        let now = SystemTime::now();
        let edge = &*self.edge;
        let facts = RequestFacts {
            method: if req.head {
                &admission::HEAD
            } else {
                &admission::GET
            },
            target: req.target,
            path: req.path,
            query: req.query,
            host: req.host,
            headers: Headers::List(&req.headers),
            authorization: req.authorization,
            viewer,
            now,
            token_memo: Some(token_memo),
            checked_in_full: AtomicBool::new(false),
        };
        let admitted = match admission::admit(edge, &facts).await {
            Ok(admitted) => admitted,
            Err(refused) => {
                let throttled = match (&refused.answer, refused.route, refused.auth) {
                    (&Answer::Throttled(retry_after), Some(route), Some(result)) => {
                        Some((retry_after, route, result))
                    }
                    _ => None,
                };
                return match throttled {
                    Some((retry_after, route, result)) => Fast::Throttled(Box::new(Throttled {
                        refused,
                        start,
                        route,
                        result,
                        retry_after,
                        host: req.host.to_ascii_lowercase(),
                        path: self.token_free_path(req.path),
                        query: strip_query_params(req.query, &edge.query_token_names).into_owned(),
                        head_only: req.head,
                    })),
                    None => Fast::Proxy(Box::new(Err(refused))),
                };
            }
        };
        let object = admitted
            .cacheable
            .then(|| {
                let hash = hit_hash(
                    &admitted.host,
                    &admitted.path,
                    &admitted.query,
                    admitted.variant,
                );
                edge.store.memory().fresh(&hash, now)
            })
            .flatten();
        let Some((object, stored_head)) =
            object.and_then(|o| o.sendable_head().map(|head| (o, head)))
        else {
            return Fast::Proxy(Box::new(Ok(admitted)));
        };
        Fast::Hit(FastHit {
            start,
            route: admitted.route,
            variant: admitted.variant,
            auth: admitted.auth,
            claims: admitted.claims,
            host: admitted.host,
            path: admitted.path,
            query: admitted.query,
            head_only: req.head,
            age: object.age(now),
            object,
            stored_head,
            checked_in_full: facts.checked_in_full.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;

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
//! ([`PROXY_ONLY`]) whose admission let it in, for a fresh memory-tier object without `Vary`
//! for the variant decided. Anything else goes to the proxy ([`Parse::Proxy`], or
//! [`Fast::Proxy`] with the admission already decided, which the proxy does not decide again).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};

use super::respond::{self, Answer};
use super::TollgateProxy;
use crate::access::AuthResult;
use crate::admission::{self, Handover, Headers, Refused, RequestFacts};
use crate::auth::{Claims, TokenMemo};
use crate::cache::body_file::BodyFile;
use crate::cache::memory::FreshObject;
use crate::cache::{hit_hash, Variant};
use crate::http1::{self, Body, Refusal};
use crate::request::strip_query_params;
use crate::viewer::Viewer;

/// Cookie headers kept for the token lookup; more and the proxy takes the request.
const MAX_COOKIE_HEADERS: usize = 8;

/// Request fields whose answer is more than a stored object's: ranges, conditionals, request
/// cache directives, expectations and upgrades. A request carrying one goes through the
/// proxy's whole pipeline, on every protocol.
/// (A miss forwarded by a peer of the shield ring, `x-tollgate-shield`, is answered by the proxy
/// too: without `Cache-Control: private`, and from the origin on a miss.)
const PROXY_ONLY: [&str; 12] = [
    crate::shield::SHIELD_HEADER,
    "expect",
    "upgrade",
    "range",
    "if-range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "cache-control",
    "pragma",
    "http2-settings",
];

/// One request head, as far as a hit needs it. Borrows the connection's read buffer.
#[derive(Debug)]
pub struct HitRequest<'a> {
    /// HEAD (else GET).
    pub head: bool,
    /// The request target as sent.
    pub target: &'a str,
    /// The path as sent (before `?`).
    pub path: &'a str,
    /// The query as sent (after the first `?`), empty when none.
    pub query: &'a str,
    /// The `Host` header.
    pub host: &'a str,
    /// Every header field, `(name as sent, value)`, for admission ([`crate::admission`]).
    /// A small allocation per request, on purpose: borrowing the parser's slots instead saves
    /// ~250 of ~12,700 instructions per public hit (callgrind, marginal per request between
    /// 3 s and 9 s `wrk -t1 -c10` runs: 12,733 → 12,485; a valid-token hit 16,194 → 15,858),
    /// but the 128 slots (4 KiB) then live in every connection's task across its awaits:
    /// an idle keep-alive connection grew from 21 to 25 KiB of RSS (3,000 connections).
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// `Authorization` (at most one: a request with more is the proxy's).
    pub authorization: Option<&'a [u8]>,
    /// `X-Forwarded-For` (believed only from a trusted proxy, [`crate::viewer`]).
    pub forwarded_for: Option<&'a [u8]>,
    /// `X-Forwarded-Proto` (likewise).
    pub forwarded_proto: Option<&'a [u8]>,
    /// The client asked to close the connection after this answer.
    pub close: bool,
}

impl<'a> HitRequest<'a> {
    /// A request for `target` (a HEAD if `head`), its fields still to be added (room for
    /// `fields`).
    fn new(head: bool, target: &'a str, fields: usize) -> HitRequest<'a> {
        let (path, query) = crate::request::split_at_ascii(target, b'?').unwrap_or((target, ""));
        HitRequest {
            head,
            target,
            path,
            query,
            host: "",
            headers: Vec::with_capacity(fields),
            authorization: None,
            forwarded_for: None,
            forwarded_proto: None,
            close: false,
        }
    }
}

/// What the bytes at the start of a connection's buffer are.
#[derive(Debug)]
pub enum Parse<'a> {
    /// A complete head of `len` bytes this path may answer.
    Hit(HitRequest<'a>, usize),
    /// A complete, acceptable head of `head` bytes for the proxy to answer, with its body's
    /// framing (other methods, bodies, ranges, conditionals, odd headers).
    Proxy {
        /// Bytes of the head.
        head: usize,
        /// How its body is framed.
        body: Body,
    },
    /// The head is not complete yet.
    Partial,
    /// A head the edge refuses ([`crate::http1`]): answered with its status, connection closed.
    Refuse(Refusal),
}

/// Every byte of an HTTP/1 request target is visible ASCII and not `#`. Without branches per
/// byte, so that it compiles to vector compares: a token-bearing target is 280 bytes, and
/// `all` with a range test stopped at each byte (callgrind, benches/peers/instructions.sh's
/// plaintext rotating-token row: 2,229 instructions of a 17,578-instruction hit).
fn visible_ascii(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| {
        ok & (b.wrapping_sub(0x21) <= 0x7e - 0x21) & (b != b'#')
    })
}

/// Parse the head at the start of `buf` ([`crate::http1`]: every HTTP/1 request is read this
/// way, hit or not) and decide whether this path may answer it.
pub fn parse(buf: &[u8]) -> Parse<'_> {
    let mut slots = http1::header_slots();
    let head = match http1::parse(buf, &mut slots) {
        Ok(Some(head)) => head,
        Ok(None) => return Parse::Partial,
        Err(refusal) => return Parse::Refuse(refusal),
    };
    let body = match http1::framing(&head.req) {
        Ok(body) => body,
        Err(refusal) => return Parse::Refuse(refusal),
    };
    match hit_request(&head.req) {
        Some(req) if body == Body::None => Parse::Hit(req, head.len),
        _ => Parse::Proxy {
            head: head.len,
            body,
        },
    }
}

/// The request as this path needs it, if it is one this path may answer.
fn hit_request<'a>(req: &httparse::Request<'_, 'a>) -> Option<HitRequest<'a>> {
    let head = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    // HTTP/1.1, and HTTP/1.0 (answered as the proxy does: `HTTP/1.1`, and the connection
    // closed after it unless the client asked to keep it)
    let (Some(target), Some(version @ (0 | 1))) = (req.path, req.version) else {
        return None;
    };
    if !target.starts_with('/') || !visible_ascii(target.as_bytes()) {
        return None;
    }
    let mut out = HitRequest::new(head, target, req.headers.len());
    let (mut cookies, mut keep_alive) = (0, false);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value;
        let is = |n: &str| name.eq_ignore_ascii_case(n.as_bytes());
        out.headers.push((h.name, value));
        if is("host") {
            // valid and alone: checked by `http1::framing`
            out.host = std::str::from_utf8(value).ok()?;
        } else if is("authorization") {
            if out.authorization.replace(value).is_some() {
                return None;
            }
        } else if is("cookie") {
            cookies += 1;
            if cookies > MAX_COOKIE_HEADERS {
                return None;
            }
        } else if is("x-forwarded-for") {
            if out.forwarded_for.replace(value).is_some() {
                return None;
            }
        } else if is("x-forwarded-proto") {
            if out.forwarded_proto.replace(value).is_some() {
                return None;
            }
        } else if is("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    out.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive = true;
                } else {
                    return None;
                }
            }
        } else if PROXY_ONLY.iter().any(|n| is(n)) {
            return None;
        }
    }
    if version == 0 && !keep_alive {
        out.close = true;
    }
    (!out.host.is_empty()).then_some(out)
}

/// [`plain_byte`]'s set as a table, which its test holds it equal to.
#[cfg(test)]
const PLAIN_PATH_BYTES: [bool; 256] = crate::request::alnum_and(b"-._~!$&'()*+,;=:@/?%");

/// The visible ASCII bytes RFC 3986 leaves out of a URI.
const NOT_IN_URIS: [u8; 12] = *b"\"#<>[\\]^`{|}";

/// A byte HTTP/2's `:path` may carry for this path to answer: what every URI parser reads alike
/// (RFC 3986 unreserved, sub-delims, `:@/?%`), that is visible ASCII and none of
/// [`NOT_IN_URIS`]. Others go to the proxy, which refuses what Pingora's HTTP/2 session refuses.
/// Comparisons rather than a table, so that [`plain_path`] compiles to vector compares.
#[inline(always)]
fn plain_byte(b: u8) -> bool {
    let visible = b.wrapping_sub(b'!') <= b'~' - b'!';
    NOT_IN_URIS
        .iter()
        .fold(visible, |plain, &x| plain & (b != x))
}

/// Every byte of `path` is a [`plain_byte`]. Without branches per byte: a signed or
/// token-bearing path is 200 bytes and more. Against the table lookup per byte, on the HTTP/2
/// rotating-token row (8 interleaved restarts x 3 cells): 3.38 -> 3.33 µs a request (means).
fn plain_path(path: &[u8]) -> bool {
    path.iter().fold(true, |plain, &b| plain & plain_byte(b))
}

/// Fields HTTP/2 forbids, or that make a request more than a stored object's answer: the
/// proxy answers a request with one (and Pingora's HTTP/2 session refuses what it refuses).
const H2_PROXY_ONLY: [&str; 6] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "content-length",
];

/// The request of an HTTP/2 header block that ended its stream (`fields` decoded, in order,
/// names as sent), as this path needs it, if it is one this path may answer: pseudo-header
/// fields first and once each, `GET` or `HEAD`, an `http`/`https` scheme, an origin-form
/// `:path`, valid lower-case names and values, and the same fields as over HTTP/1 (one
/// `Authorization`, at most [`MAX_COOKIE_HEADERS`] `Cookie`s, none of [`PROXY_ONLY`]).
/// `Host`, else `:authority`, is the host, as the proxy reads it.
pub fn hit_request_h2<'a, I>(fields: I) -> Option<HitRequest<'a>>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let (mut method, mut scheme, mut target, mut authority) = (None, None, None, None);
    let mut pseudo = 0;
    for (name, value) in fields.clone() {
        let Some(which) = name.strip_prefix(b":") else {
            break;
        };
        let slot = match which {
            b"method" => &mut method,
            b"scheme" => &mut scheme,
            b"path" => &mut target,
            b"authority" => &mut authority,
            _ => return None,
        };
        if slot.replace(value).is_some() {
            return None;
        }
        pseudo += 1;
    }
    let head = match method? {
        b"GET" => false,
        b"HEAD" => true,
        _ => return None,
    };
    if !matches!(scheme?, b"http" | b"https") {
        return None;
    }
    let target = target?;
    if target.first() != Some(&b'/') || !plain_path(target) {
        return None;
    }
    let target = std::str::from_utf8(target).ok()?;
    let mut out = HitRequest::new(head, target, fields.size_hint().0.saturating_sub(pseudo));
    let (mut host, mut cookies, mut repeated) = (None, 0, false);
    for (name, value) in fields.skip(pseudo) {
        if !crate::http2::field_name(name) || !crate::http2::field_value(value) {
            return None;
        }
        // The names this path reads are matched as bytes and kept as `'static` strings:
        // `from_utf8` on `authorization` was ~130 instructions (callgrind, HTTP/2 bearer hit).
        let name = match name {
            b"host" => {
                repeated |= host.replace(value).is_some();
                "host"
            }
            b"authorization" => {
                repeated |= out.authorization.replace(value).is_some();
                "authorization"
            }
            b"cookie" => {
                cookies += 1;
                "cookie"
            }
            b"x-forwarded-for" => {
                repeated |= out.forwarded_for.replace(value).is_some();
                "x-forwarded-for"
            }
            b"x-forwarded-proto" => {
                repeated |= out.forwarded_proto.replace(value).is_some();
                "x-forwarded-proto"
            }
            b"user-agent" => "user-agent",
            b"accept" => "accept",
            b"accept-encoding" => "accept-encoding",
            b"accept-language" => "accept-language",
            _ => {
                // ASCII: checked by `field_name` above
                let name = std::str::from_utf8(name).ok()?;
                if name.starts_with(':')
                    || PROXY_ONLY.contains(&name)
                    || H2_PROXY_ONLY.contains(&name)
                {
                    return None;
                }
                name
            }
        };
        out.headers.push((name, value));
    }
    if repeated || cookies > MAX_COOKIE_HEADERS {
        return None;
    }
    let host = host.or(authority)?;
    if !http1::valid_host(host) {
        return None;
    }
    out.host = std::str::from_utf8(host).ok()?;
    Some(out)
}

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
        // io::Write on a Vec cannot fail; formats the number without a String
        let _ = write!(out, "Age: {}", self.age);
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

    /// Whether the answer took longer than [`SLOW_DECISION`] to decide (a signature was
    /// checked): the HTTP/1 loop then lets the other ready connections run before it writes
    /// it. Read when asked, so that only that loop reads the clock for it; only a credential
    /// check can be slow, and a public hit reads no clock here.
    pub fn slow(&self) -> bool {
        self.auth.is_some() && self.start.elapsed() > SLOW_DECISION
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

/// A decision taking longer than this checked a signature (an ES256 verification is ~75 µs
/// here, `benches/verify.rs`; a decision from the token cache adds ~1,800 instructions to a
/// hit, well under 1 µs). Its answer is written after the
/// other connections that are ready have had their turn (`yield_now`: tokio runs the task
/// again after its next poll for I/O), so answers that each cost a verification go out
/// together rather than one every ~75 µs. Why: a client waiting on its socket is woken per
/// answer; with answers spread out it goes back to sleep between them, and every wake-up was
/// the sender's kernel time. Measured with never-seen ES256 tokens (`wrk -t1 -c50`, node on
/// CPU 0, `/usr/bin/time -v` on wrk, node's `utime`/`stime` from `/proc`): wrk slept 35,878
/// times for 37,809 answers without the yield, 4,670 times for 46,665 with it, and the node's
/// system time fell from 22 % to 14 % of its CPU. Cache hits never wait: their decision is
/// far below this.
const SLOW_DECISION: Duration = Duration::from_micros(20);

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
        })
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;

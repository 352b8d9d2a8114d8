//! HTTP/1 request heads as the edge reads them, and what it refuses (SPEC §10).
//!
//! Every HTTP/1.x request on a proxy listener, plain or TLS, is read here first, by the
//! connection loop ([`crate::app`]), before the hit path or Pingora's proxy sees it. A request
//! whose framing an origin could read differently from the edge is an attack — a body the edge
//! forwards and the origin takes for the next request runs a request the edge never decided —
//! so what is ambiguous is refused with a `4xx` and the connection closed, never forwarded:
//!
//! - a head that does not parse strictly: bare LF line ends, obs-fold, spaces before a colon,
//!   control bytes, a request target that is not origin-, absolute- or asterisk-form
//!   ([`Refusal::Malformed`]);
//! - HTTP/1.1 without exactly one `Host`, or a `Host` that is not a plain `name[:port]` or
//!   `[v6][:port]` ([`Refusal::BadHost`]);
//! - a body (any `Content-Length` but 0, any `Transfer-Encoding`) on a method that has none:
//!   GET, HEAD, TRACE ([`Refusal::BodyNotAllowed`]; CloudFront answers a GET
//!   with a body with 403);
//! - `Content-Length` and `Transfer-Encoding` together, more than one of either, a length that
//!   is not plain digits, a `Transfer-Encoding` other than exactly `chunked`, or one on
//!   HTTP/1.0 ([`Refusal::BadFraming`]); a chunked body is held to the same strictness as it
//!   streams ([`chunked`]);
//! - a head over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields ([`Refusal::HeadTooLarge`], 431).
//!
//! What passes has exactly one reading, [`Body`], and the connection loop hands the proxy the
//! bytes of that one request and no more, so what reaches the origin is what was decided.

pub mod chunked;
pub mod one_request;

use std::mem::MaybeUninit;

/// The largest request head read (nginx's default `large_client_header_buffers` is 4 × 8 KiB;
/// tokens are capped at 64 KiB by `auth.max_token_bytes`).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields one request may carry.
pub const MAX_HEADERS: usize = 128;

/// Why a request (or a connection) was refused before anything acted on it; the label of
/// `tollgate_refused_requests_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The head does not parse strictly.
    Malformed,
    /// `Host` missing (HTTP/1.1), repeated, or not a plain host name.
    BadHost,
    /// A body on a method that has none.
    BodyNotAllowed,
    /// Conflicting or non-canonical `Content-Length` / `Transfer-Encoding`, or a malformed
    /// chunked body.
    BadFraming,
    /// Head larger than [`MAX_HEAD`] or more than [`MAX_HEADERS`] fields.
    HeadTooLarge,
    /// The head was not complete within `limits.header_timeout`.
    HeaderTimeout,
    /// A connection on a `proxy_protocol` listener did not start with a valid PROXY header.
    ProxyProtocol,
}

impl Refusal {
    /// Every reason, for metrics that expose each series from the start.
    pub const ALL: [Refusal; 7] = [
        Refusal::Malformed,
        Refusal::BadHost,
        Refusal::BodyNotAllowed,
        Refusal::BadFraming,
        Refusal::HeadTooLarge,
        Refusal::HeaderTimeout,
        Refusal::ProxyProtocol,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::BadHost => "bad_host",
            Refusal::BodyNotAllowed => "body_not_allowed",
            Refusal::BadFraming => "bad_framing",
            Refusal::HeadTooLarge => "head_too_large",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::ProxyProtocol => "proxy_protocol",
        }
    }

    /// The status answered (when an answer can still be written).
    pub fn status(self) -> u16 {
        match self {
            Refusal::HeadTooLarge => 431,
            Refusal::HeaderTimeout => 408,
            _ => 400,
        }
    }
}

/// How the body of an accepted request is framed: its one reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body: the request ends with its head.
    None,
    /// `Content-Length: n` (n > 0).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete head: the parsed request and its length in bytes.
pub struct Head<'h, 'b> {
    /// The parsed request line and fields.
    pub req: httparse::Request<'h, 'b>,
    /// Bytes of the head, up to and including the blank line.
    pub len: usize,
}

/// Uninitialized header slots for [`parse`]: no per-request zeroing of the array.
pub type HeaderSlots<'b> = [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS];

/// Fresh slots for [`parse`].
pub fn header_slots<'b>() -> HeaderSlots<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Parse the head at the start of `buf`. `Ok(None)`: not complete yet (and not too large).
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    slots: &'h mut HeaderSlots<'b>,
) -> Result<Option<Head<'h, 'b>>, Refusal> {
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, slots) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return Err(Refusal::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::HeadTooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    if len > MAX_HEAD {
        return Err(Refusal::HeadTooLarge);
    }
    // httparse accepts a bare LF as a line end; origins disagree, so nothing passes with one.
    if !lines_end_in_crlf(buf, len, &req) {
        return Err(Refusal::Malformed);
    }
    Ok(Some(Head { req, len }))
}

/// Whether every line of the parsed head `buf[..len]` ends in CRLF, without scanning it:
/// httparse leaves no other line breaks in a head it accepts (a CR must be followed by LF,
/// obs-fold is refused), so the line ends are the blank lines it skipped before the request
/// line, the two bytes before each field name, and the last four bytes.
fn lines_end_in_crlf(buf: &[u8], len: usize, req: &httparse::Request<'_, '_>) -> bool {
    let skipped = buf
        .iter()
        .take_while(|&&b| b == b'\r' || b == b'\n')
        .count();
    if !buf[..skipped].chunks(2).all(|pair| pair == b"\r\n") {
        return false;
    }
    let base = buf.as_ptr() as usize;
    let each_field = req.headers.iter().all(|h| {
        // every field name is a slice of `buf`, at least two bytes in (after a line end)
        let at = (h.name.as_ptr() as usize).wrapping_sub(base);
        (2..=len).contains(&at) && &buf[at - 2..at] == b"\r\n"
    });
    each_field && len >= 4 && &buf[len - 4..len] == b"\r\n\r\n"
}

/// Whether `buf` may hold a complete head (or one too large): the line before the blank line
/// that ends a head ends in LF, and the blank line is LF or CRLF, so a head is complete (or
/// malformed) once `\n\n` or `\n\r\n` follows the blank lines a request may start with.
/// A cheap scan (a `memchr` per line), so that a head is parsed once, when it can be.
pub fn head_end_seen(buf: &[u8]) -> bool {
    if buf.len() > MAX_HEAD {
        return true;
    }
    // the usual case, one request read whole: it ends the buffer
    if buf.ends_with(b"\r\n\r\n") && !matches!(buf.first(), Some(b'\r' | b'\n')) {
        return true;
    }
    let Some(start) = buf.iter().position(|&b| b != b'\r' && b != b'\n') else {
        return false;
    };
    let rest = &buf[start..];
    memchr::memchr_iter(b'\n', rest).any(|i| match rest.get(i + 1) {
        Some(b'\n') => true,
        Some(b'\r') => rest.get(i + 2) == Some(&b'\n'),
        _ => false,
    })
}

/// Whether the request at the start of `buf` is a HEAD (so that even a refusal's answer has
/// no body), read from its first bytes alone: the head may not have parsed.
pub fn is_head(buf: &[u8]) -> bool {
    let start = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    buf[start..].starts_with(b"HEAD ")
}

/// Methods whose requests carry no body; one that does is refused.
pub fn bodyless(method: &str) -> bool {
    // (DELETE and OPTIONS may carry content, RFC 9110 §9.3.5, §9.3.7: it is forwarded, framed
    // by Pingora as it was read here; TRACE must not, §9.3.8)
    matches!(method, "GET" | "HEAD" | "TRACE")
}

/// Bytes of a host name or IPv4 address: letters, digits, `-`, `.`, `_`.
const NAME_BYTES: [bool; 256] = crate::request::alnum_and(b"-._");

/// A `Host` value the cache key and signed-URL resource can rely on: a registered name or IPv4
/// address (letters, digits, `-`, `.`, `_`) or a bracketed IPv6 literal, with an optional
/// non-empty decimal port. No lists, spaces, userinfo or paths.
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(end) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return false;
        }
        (&value[..=end], &value[end + 1..])
    } else {
        // one pass: name bytes up to the first ':' (any other byte refuses the value)
        let split = value
            .iter()
            .position(|&b| !NAME_BYTES[usize::from(b)])
            .unwrap_or(value.len());
        if split == 0 || (split < value.len() && value[split] != b':') {
            return false;
        }
        (&value[..split], &value[split..])
    };
    debug_assert!(!host.is_empty());
    match port {
        [] => true,
        [b':', digits @ ..] => {
            (1..=5).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// The request target forms a proxy listener accepts: origin-form, absolute-form for http(s)
/// (Pingora then checks its authority against `Host`), and `*` for OPTIONS.
fn valid_target(method: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return true;
    }
    // on bytes: slicing the `str` could cut a character in two (a panic, found by fuzzing)
    let lower = |prefix: &str| {
        target.len() > prefix.len()
            && target.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
    };
    (lower("http://") || lower("https://")) || (target == "*" && method == "OPTIONS")
}

/// The one reading of a parsed head's framing, or why it has none.
pub fn framing(req: &httparse::Request<'_, '_>) -> Result<Body, Refusal> {
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Refusal::Malformed);
    };
    if method == "CONNECT" || !valid_target(method, target) {
        return Err(Refusal::Malformed);
    }
    let (mut hosts, mut length, mut lengths, mut chunked, mut encodings) =
        (0usize, None, 0usize, false, 0usize);
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        // (the length first: most fields are none of these three, and cost no comparison)
        if !matches!(name.len(), 4 | 14 | 17) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if !valid_host(h.value) {
                return Err(Refusal::BadHost);
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            let v = h.value;
            if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::BadFraming);
            }
            // at most 18 digits: fits in a u64
            length = Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            chunked = h.value.eq_ignore_ascii_case(b"chunked");
            if !chunked {
                return Err(Refusal::BadFraming);
            }
        }
    }
    let required = if version == 1 { 1 } else { 0 };
    if hosts > 1 || hosts < required {
        return Err(Refusal::BadHost);
    }
    if lengths > 1 || encodings > 1 || (lengths == 1 && encodings == 1) {
        return Err(Refusal::BadFraming);
    }
    if chunked && version == 0 {
        return Err(Refusal::BadFraming);
    }
    let body = match (length, chunked) {
        (Some(0) | None, false) => Body::None,
        (Some(n), false) => Body::Length(n),
        (_, true) => Body::Chunked,
    };
    if body != Body::None && bodyless(method) {
        return Err(Refusal::BodyNotAllowed);
    }
    Ok(body)
}

#[cfg(test)]
#[path = "http1_tests.rs"]
mod tests;

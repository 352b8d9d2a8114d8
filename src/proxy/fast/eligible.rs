//! Which requests the hit path may answer ([`super`]): an HTTP/1 head parsed from the
//! connection's buffer ([`parse`]), or an HTTP/2 header block's fields ([`hit_request_h2`]),
//! made into the [`HitRequest`] that admission reads — or handed to the proxy.

use crate::http1::{self, Body, Refusal};

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
pub(super) fn visible_ascii(s: &[u8]) -> bool {
    crate::request::every_byte(s, b'/', |b| {
        (b.wrapping_sub(0x21) <= 0x7e - 0x21) & (b != b'#')
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
            out.host = ascii_str(value)?;
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
pub(super) const PLAIN_PATH_BYTES: [bool; 256] = crate::request::alnum_and(b"-._~!$&'()*+,;=:@/?%");

/// The visible ASCII bytes RFC 3986 leaves out of a URI.
const NOT_IN_URIS: [u8; 12] = *b"\"#<>[\\]^`{|}";

/// A byte HTTP/2's `:path` may carry for this path to answer: what every URI parser reads alike
/// (RFC 3986 unreserved, sub-delims, `:@/?%`), that is visible ASCII and none of
/// [`NOT_IN_URIS`]. Others go to the proxy, which refuses what Pingora's HTTP/2 session refuses.
/// Comparisons rather than a table, so that [`plain_path`] compiles to vector compares.
#[inline(always)]
pub(super) fn plain_byte(b: u8) -> bool {
    let visible = b.wrapping_sub(b'!') <= b'~' - b'!';
    NOT_IN_URIS
        .iter()
        .fold(visible, |plain, &x| plain & (b != x))
}

/// Every byte of `path` is a [`plain_byte`]. Without branches per byte: a signed or
/// token-bearing path is 200 bytes and more. Against the table lookup per byte, on the HTTP/2
/// rotating-token row (8 interleaved restarts x 3 cells): 3.38 -> 3.33 µs a request (means).
pub(super) fn plain_path(path: &[u8]) -> bool {
    crate::request::every_byte(path, b'/', plain_byte)
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
    let target = ascii_str(target)?; // (`plain_path`: ASCII)
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
                let name = ascii_str(name)?;
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
    out.host = ascii_str(host)?;
    Some(out)
}

/// `bytes` as a `str` if they are ASCII: how this module takes a target, a name or a `Host`
/// it has checked. `str::from_utf8` takes a byte at a time below 16 bytes: ~130 instructions
/// for a `Host` such as `127.0.0.1:18080`, on every request (callgrind); `is_ascii` reads a
/// word at a time.
pub(super) fn ascii_str(bytes: &[u8]) -> Option<&str> {
    // SAFETY: ASCII is UTF-8, and that is checked first.
    bytes
        .is_ascii()
        .then(|| unsafe { std::str::from_utf8_unchecked(bytes) })
}

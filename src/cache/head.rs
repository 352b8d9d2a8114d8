//! A stored response head, kept once and compactly: one exact-size buffer of HTTP/1 header
//! lines, which is also what the connection-level hit path writes (issue 19).
//!
//! Why: a parsed [`ResponseHeader`] kept per object cost ~4 KiB of memory for a 200-byte page.
//! Pingora parses origin headers without copying, so every value was a slice of the whole read
//! buffer of the origin connection, which it kept alive; and a `ResponseHeader` carries two
//! header maps (values, and the names' original case). Here the head is serialized once, when
//! the object is stored, and parsed again only when the proxy needs a [`ResponseHeader`] (a hit
//! it serves itself: HTTP/2, ranges, conditional requests, revalidation).
//!
//! The bytes are the head the hit path sends (see [`StoredHead::new`]): the status line and
//! the stored fields, without `Age`, `Date` and `Connection` (written per answer), with
//! `Accept-Ranges: bytes` on a `200`, and `Cache-Control: private` in place of the origin's on
//! subscriber content. Those changes are what the proxy itself does to a hit's header; the one
//! thing the proxy still needs from the origin's head, its `Cache-Control` for the freshness
//! rules, is kept beside the bytes when it was replaced.

use std::sync::OnceLock;

use bytes::{BufMut, Bytes, BytesMut};
use pingora_http::ResponseHeader;

use super::key::Variant;

/// Fields a hit answers per request, never stored.
const PER_ANSWER: [http::HeaderName; 3] = [
    http::header::AGE,
    http::header::DATE,
    http::header::CONNECTION,
];

/// Fields a stored head's HTTP/2 block leaves out: those HTTP/2 forbids (Pingora's HTTP/2
/// writer drops them), and those a hit answers per request.
const H2_DROPPED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "age",
    "date",
    "cache-status",
];

/// The most fields a stored head is parsed back with (as many as a request head may carry).
const MAX_FIELDS: usize = crate::http1::MAX_HEADERS;

/// A response head as stored: see the module docs.
#[derive(Debug, Clone)]
pub struct StoredHead {
    /// `HTTP/1.1 <status> <reason>\r\n`, one `name: value\r\n` line per field, `\r\n`.
    bytes: Bytes,
    /// The hit path may send `bytes` as is (the stored body length matches a
    /// `Content-Length` and the status has a body).
    sendable: bool,
    /// The origin's `Cache-Control` lines (as in `bytes`), when `bytes` says `private` instead.
    origin_cache_control: Option<Bytes>,
    /// Subscriber content (`bytes` says `Cache-Control: private`).
    private: bool,
    /// The sendable head as an HTTP/2 header block ([`StoredHead::sendable_h2`]), encoded on
    /// the first HTTP/2 hit.
    h2: OnceLock<Option<Bytes>>,
}

impl StoredHead {
    /// The head of `header` for an object of `variant` with a body of `body_len` bytes.
    pub fn new(header: &ResponseHeader, variant: Variant, body_len: usize) -> StoredHead {
        let status = header.status;
        let length_matches = header
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|l| {
                let l = l.as_bytes();
                l.iter().all(u8::is_ascii_digit) && l == body_len.to_string().as_bytes()
            });
        let sendable =
            length_matches && !status.is_informational() && !matches!(status.as_u16(), 204 | 304);
        let private = variant == Variant::Subscriber;
        let reason = header
            .get_reason_phrase()
            .or(status.canonical_reason())
            .unwrap_or("");
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut origin_cc = Vec::new();
        // the fields as pingora writes them to HTTP/1 (names in the case the origin used)
        let mut fields = Vec::with_capacity(256);
        header.header_to_h1_wire(&mut fields);
        for line in fields.split_inclusive(|&b| b == b'\n') {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let is = |n: &http::HeaderName| name.eq_ignore_ascii_case(n.as_str().as_bytes());
            if PER_ANSWER.iter().any(is) || is(&http::header::ACCEPT_RANGES) {
                continue;
            }
            if private && is(&http::header::CACHE_CONTROL) {
                origin_cc.extend_from_slice(line);
                continue;
            }
            out.extend_from_slice(line);
        }
        if status == http::StatusCode::OK {
            out.extend_from_slice(b"Accept-Ranges: bytes\r\n");
        } else if let Some(v) = header.headers.get(http::header::ACCEPT_RANGES) {
            push_line(&mut out, "Accept-Ranges", v.as_bytes());
        }
        if private {
            // as `response_filter`: entitled content must not land in shared caches downstream
            out.extend_from_slice(b"Cache-Control: private\r\n");
        }
        out.extend_from_slice(b"\r\n");
        StoredHead {
            // exact size: an object keeps no spare capacity
            bytes: Bytes::copy_from_slice(&out),
            sendable,
            origin_cache_control: (!origin_cc.is_empty()).then(|| Bytes::from(origin_cc)),
            private,
            h2: OnceLock::new(),
        }
    }

    /// Whether this is subscriber content.
    pub fn private(&self) -> bool {
        self.private
    }

    /// The head the hit path writes before `Age`, `Cache-Status`, `Date`, `Connection` and the
    /// body, if it may answer with it.
    pub fn sendable(&self) -> Option<Bytes> {
        self.sendable
            .then(|| self.bytes.slice(..self.bytes.len().saturating_sub(2)))
    }

    /// Bytes this head keeps alive.
    pub fn len(&self) -> usize {
        self.bytes.len() + self.origin_cache_control.as_ref().map_or(0, Bytes::len)
    }

    /// Whether the head holds nothing (never, for a stored response).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        // "HTTP/1.1 " is 9 bytes, then three digits (written by `new`)
        self.bytes
            .get(9..12)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.parse().ok())
            .unwrap_or(0)
    }

    /// The head as a [`ResponseHeader`] for the proxy: the stored fields with the origin's
    /// `Cache-Control`. Values are slices of the stored bytes (nothing is copied). `None` only
    /// if the bytes do not parse, which `new` rules out (the caller then treats it as a miss).
    pub fn header(&self) -> Option<ResponseHeader> {
        self.parsed(self.origin_cache_control.as_ref())
    }

    /// The head the hit path answers with ([`StoredHead::sendable`]) as a [`ResponseHeader`],
    /// for hits answered over HTTP/2: the stored fields as they are, `Cache-Control: private`
    /// on subscriber content included.
    pub fn sendable_header(&self) -> Option<ResponseHeader> {
        self.sendable.then(|| self.parsed(None)).flatten()
    }

    /// The sendable head ([`StoredHead::sendable_header`]) as an HTTP/2 header block of
    /// literals ([`crate::http2::hpack`]): `:status`, then the fields in the order Pingora's
    /// HTTP/2 writer sends that header, without those HTTP/2 forbids (which that writer drops)
    /// and without a stored `Cache-Status` (the hit's own replaces it). The hit path adds
    /// `age`, `cache-status` and `date` per answer. Encoded once, on the first HTTP/2 hit.
    pub fn sendable_h2(&self) -> Option<&Bytes> {
        self.h2
            .get_or_init(|| {
                let header = self.sendable_header()?;
                let mut out = BytesMut::with_capacity(self.bytes.len());
                crate::http2::hpack::put_status(&mut out, header.status.as_u16());
                for (name, value) in header.headers.iter() {
                    if !H2_DROPPED.contains(&name.as_str()) {
                        crate::http2::hpack::put_field(
                            &mut out,
                            name.as_str().as_bytes(),
                            value.as_bytes(),
                        );
                    }
                }
                Some(out.freeze())
            })
            .as_ref()
    }

    /// The stored fields, with `origin_cc` (the origin's `Cache-Control` lines) in place of the
    /// stored `Cache-Control` when given.
    fn parsed(&self, origin_cc: Option<&Bytes>) -> Option<ResponseHeader> {
        let mut slots = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut resp = httparse::Response::new(&mut slots);
        let Ok(httparse::Status::Complete(_)) = resp.parse(&self.bytes) else {
            return None;
        };
        let mut header = ResponseHeader::build(resp.code?, Some(resp.headers.len() + 1)).ok()?;
        if let Some(reason) = resp.reason {
            let canonical = header.status.canonical_reason();
            if canonical != Some(reason) {
                let _ = header.set_reason_phrase(Some(reason));
            }
        }
        let private = origin_cc.is_some();
        for h in resp.headers.iter() {
            if private && h.name.eq_ignore_ascii_case("cache-control") {
                continue;
            }
            append(&mut header, h.name, self.bytes.slice_ref(h.value));
        }
        if let Some(cc) = origin_cc {
            for line in cc.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if let Some(colon) = line.iter().position(|&b| b == b':') {
                    let value = line[colon + 1..].trim_ascii();
                    let name = std::str::from_utf8(&line[..colon]).unwrap_or("cache-control");
                    append(&mut header, name, cc.slice_ref(value));
                }
            }
        }
        Some(header)
    }
}

fn push_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

fn append(header: &mut ResponseHeader, name: &str, value: Bytes) {
    // the name keeps the case it was stored with (HTTP/1 answers write it back as it came)
    if let Ok(value) = http::HeaderValue::from_maybe_shared(value) {
        let _ = header.append_header(name.to_owned(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(status: u16, fields: &[(&str, &str)]) -> ResponseHeader {
        let mut h = ResponseHeader::build(status, None).expect("status");
        for (k, v) in fields {
            h.append_header(k.to_string(), *v).expect("field");
        }
        h
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).expect("utf-8")
    }

    #[test]
    fn the_hit_head_is_stored_once_and_sent_as_is() {
        let h = origin(
            200,
            &[
                ("Content-Type", "text/html"),
                ("Content-Length", "5"),
                ("Cache-Control", "max-age=60"),
                ("Age", "3"),
                ("Date", "Sat, 21 Nov 2026 10:00:00 GMT"),
                ("X-Custom", "a"),
                ("X-Custom", "b"),
            ],
        );
        let head = StoredHead::new(&h, Variant::Public, 5);
        let sent = head.sendable().expect("sendable");
        let sent = text(&sent);
        assert_eq!(
            sent,
            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5\r\n\
             Cache-Control: max-age=60\r\nX-Custom: a\r\nX-Custom: b\r\nAccept-Ranges: bytes\r\n"
        );
        assert_eq!(head.status(), 200);
        assert_eq!(head.len(), sent.len() + 2);
        let back = head.header().expect("parses");
        assert_eq!(back.status, 200);
        assert_eq!(back.headers.get("cache-control").unwrap(), "max-age=60");
        let custom: Vec<_> = back.headers.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["a", "b"]);
        assert!(back.headers.get("age").is_none() && back.headers.get("date").is_none());
        // original case is kept for HTTP/1 answers
        let mut wire = bytes::BytesMut::new();
        back.header_to_h1_wire(&mut wire);
        assert!(text(&wire.freeze()).contains("X-Custom: a\r\n"));
    }

    #[test]
    fn subscriber_heads_say_private_and_keep_the_origins_rules() {
        let h = origin(
            200,
            &[
                ("Content-Length", "2"),
                ("Cache-Control", "max-age=60, stale-if-error=30"),
                ("Cache-Control", "must-revalidate"),
            ],
        );
        let head = StoredHead::new(&h, Variant::Subscriber, 2);
        let sent = head.sendable().expect("sendable");
        let sent = text(&sent);
        assert!(sent.contains("Cache-Control: private\r\n"), "{sent}");
        assert!(!sent.contains("max-age"), "{sent}");
        let back = head.header().expect("parses");
        let cc: Vec<_> = back.headers.get_all("cache-control").iter().collect();
        assert_eq!(cc, ["max-age=60, stale-if-error=30", "must-revalidate"]);
    }

    #[test]
    fn heads_without_matching_framing_are_not_sendable() {
        for (status, fields, body_len) in [
            (200, vec![("Content-Length", "6")], 5),
            (200, vec![], 5),
            (204, vec![("Content-Length", "0")], 0),
            (304, vec![("Content-Length", "0")], 0),
            (200, vec![("Content-Length", "+5")], 5),
        ] {
            let h = origin(status, &fields);
            let head = StoredHead::new(&h, Variant::Public, body_len);
            assert!(head.sendable().is_none(), "{status} {fields:?} {body_len}");
            assert_eq!(head.header().expect("parses").status, status);
        }
        let h = origin(404, &[("Content-Length", "3")]);
        let head = StoredHead::new(&h, Variant::Anonymous, 3);
        assert!(!text(&head.sendable().expect("404 has a body")).contains("Accept-Ranges"));
    }

    #[test]
    fn a_reason_phrase_of_the_origins_survives() {
        let mut h = origin(200, &[("Content-Length", "0")]);
        h.set_reason_phrase(Some("Fine")).expect("reason");
        let head = StoredHead::new(&h, Variant::Public, 0);
        assert!(text(&head.sendable().unwrap()).starts_with("HTTP/1.1 200 Fine\r\n"));
        assert_eq!(head.header().unwrap().get_reason_phrase(), Some("Fine"));
    }
}

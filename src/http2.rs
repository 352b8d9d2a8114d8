//! HTTP/2 framing as the connection-level hit path needs it (RFC 9113): frame heads, the
//! frames a server writes, SETTINGS, and HPACK (RFC 7541).
//!
//! Header blocks this edge writes never touch the peer's dynamic table: every field is a
//! literal without indexing (a static-table name where one exists). Such a block means the
//! same whatever was sent before it on the connection, so blocks from two writers — the hit
//! path's own and those of Pingora's HTTP/2 session behind it (`app::h2`) — can share one
//! connection. The client's blocks, which do use the dynamic table, are decoded by
//! [`hpack::Decoder`] (with the Huffman code of [`huffman`]).
//!
//! Ground floor: imports nothing from the crate but `request`'s byte classes.

use bytes::{BufMut, Bytes, BytesMut};

/// The client connection preface.
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes of a frame head.
pub const HEAD_LEN: usize = 9;
/// The smallest (and default) SETTINGS_MAX_FRAME_SIZE.
pub const DEFAULT_MAX_FRAME: u32 = 16_384;
/// The default SETTINGS_INITIAL_WINDOW_SIZE, and the connection's first window.
pub const DEFAULT_WINDOW: u32 = 65_535;
/// The default SETTINGS_HEADER_TABLE_SIZE.
pub const DEFAULT_TABLE_SIZE: usize = 4096;
/// The largest window (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;

/// Frame types.
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// Error codes.
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const PROTOCOL_ERROR: u32 = 0x1;
    pub const INTERNAL_ERROR: u32 = 0x2;
    pub const FLOW_CONTROL_ERROR: u32 = 0x3;
    pub const STREAM_CLOSED: u32 = 0x5;
    pub const FRAME_SIZE_ERROR: u32 = 0x6;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const CANCEL: u32 = 0x8;
    pub const COMPRESSION_ERROR: u32 = 0x9;
}

/// SETTINGS identifiers.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// A frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Payload length.
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// The head at the start of `buf`, if all nine bytes are there.
    pub fn parse(buf: &[u8]) -> Option<Head> {
        let b: &[u8; HEAD_LEN] = buf.get(..HEAD_LEN)?.try_into().ok()?;
        Some(Head {
            len: (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        })
    }

    /// Whether `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// A frame whose payload is larger than the receiver allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversized;

/// The whole frame at the start of `buf`, taken off it (head and payload, one shared buffer);
/// `Ok(None)` until all of it is there (room for the rest is reserved).
pub fn take_frame(buf: &mut BytesMut, max_len: usize) -> Result<Option<(Head, Bytes)>, Oversized> {
    let Some(head) = Head::parse(buf) else {
        return Ok(None);
    };
    if head.len > max_len {
        return Err(Oversized);
    }
    if buf.len() < HEAD_LEN + head.len {
        buf.reserve(HEAD_LEN + head.len - buf.len());
        return Ok(None);
    }
    Ok(Some((head, buf.split_to(HEAD_LEN + head.len).freeze())))
}

/// Append a frame head.
pub fn put_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    debug_assert!(len < 1 << 24);
    out.put_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.put_u32(stream & 0x7fff_ffff);
}

/// Append a whole frame.
pub fn put_frame(out: &mut BytesMut, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    put_head(out, payload.len(), kind, flags, stream);
    out.put_slice(payload);
}

/// Append a header block as HEADERS (and CONTINUATION frames past `max_frame` bytes).
pub fn put_headers(
    out: &mut BytesMut,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: usize,
) {
    let mut chunks = block.chunks(max_frame.max(1));
    let first = chunks.next().unwrap_or_default();
    let rest = chunks.len();
    let mut flags = if end_stream { flag::END_STREAM } else { 0 };
    if rest == 0 {
        flags |= flag::END_HEADERS;
    }
    put_frame(out, kind::HEADERS, flags, stream, first);
    for (i, chunk) in chunks.enumerate() {
        let flags = if i + 1 == rest { flag::END_HEADERS } else { 0 };
        put_frame(out, kind::CONTINUATION, flags, stream, chunk);
    }
}

/// Append RST_STREAM.
pub fn put_rst(out: &mut BytesMut, stream: u32, error: u32) {
    put_frame(out, kind::RST_STREAM, 0, stream, &error.to_be_bytes());
}

/// Append WINDOW_UPDATE.
pub fn put_window_update(out: &mut BytesMut, stream: u32, increment: u32) {
    put_frame(
        out,
        kind::WINDOW_UPDATE,
        0,
        stream,
        &increment.to_be_bytes(),
    );
}

/// Append GOAWAY.
pub fn put_goaway(out: &mut BytesMut, last_stream: u32, error: u32, debug: &[u8]) {
    put_head(out, 8 + debug.len(), kind::GOAWAY, 0, 0);
    out.put_u32(last_stream & 0x7fff_ffff);
    out.put_u32(error);
    out.put_slice(debug);
}

/// Append a SETTINGS frame with these (identifier, value) pairs.
pub fn put_settings(out: &mut BytesMut, settings: &[(u16, u32)]) {
    put_head(out, settings.len() * 6, kind::SETTINGS, 0, 0);
    for &(id, value) in settings {
        out.put_u16(id);
        out.put_u32(value);
    }
}

/// The (identifier, value) pairs of a SETTINGS payload; `None` if its length is not a
/// multiple of six.
pub fn settings(payload: &[u8]) -> Option<impl Iterator<Item = (u16, u32)> + '_> {
    payload.len().is_multiple_of(6).then(|| {
        payload.chunks_exact(6).map(|s| {
            (
                u16::from_be_bytes([s[0], s[1]]),
                u32::from_be_bytes([s[2], s[3], s[4], s[5]]),
            )
        })
    })
}

/// The 31-bit value at the start of `payload` (WINDOW_UPDATE's increment, GOAWAY's last
/// stream), if it has four bytes.
pub fn u31(payload: &[u8]) -> Option<u32> {
    let b: [u8; 4] = payload.get(..4)?.try_into().ok()?;
    Some(u32::from_be_bytes(b) & 0x7fff_ffff)
}

/// What remains of a HEADERS or DATA payload once its padding (and a HEADERS frame's
/// priority fields) are taken off; `None` if the frame is shorter than they say.
pub fn unpadded(head: &Head, payload: &[u8]) -> Option<core::ops::Range<usize>> {
    let (mut start, mut end) = (0, payload.len());
    if head.has(flag::PADDED) {
        let pad = usize::from(*payload.first()?);
        start = 1;
        end = end.checked_sub(pad)?;
    }
    if head.kind == kind::HEADERS && head.has(flag::PRIORITY) {
        start += 5;
    }
    (start <= end).then_some(start..end)
}

/// A field name HTTP/2 allows: a token, in lower case. By table (one load a byte): the
/// `tchar` tests per byte were ~10 instructions a byte of every name of every request.
pub fn field_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| FIELD_NAME[usize::from(b)])
}

/// The bytes of [`field_name`]: `tchar` without the upper-case letters.
static FIELD_NAME: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = crate::request::tchar(b as u8) && !(b as u8).is_ascii_uppercase();
        b += 1;
    }
    table
};

/// A field value `http::HeaderValue` takes as it is: no control byte but tab.
pub fn field_value(value: &[u8]) -> bool {
    // in vectors (a bearer token is 250 bytes)
    crate::request::every_byte(value, b'a', |b| (b >= 0x20) & (b != 0x7f) | (b == b'\t'))
}

pub mod hpack;
pub mod huffman;

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(block: &[u8]) -> Vec<(String, String)> {
        let mut d = loona_hpack::Decoder::new();
        d.decode(block)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn literals_decode_as_written_with_long_values_and_every_status() {
        let mut out = BytesMut::new();
        hpack::put_status(&mut out, 200);
        hpack::put_status(&mut out, 429);
        hpack::put_field(&mut out, b"content-type", b"text/html");
        hpack::put_field(&mut out, b"x-long", "v".repeat(300).as_bytes());
        hpack::put_field(&mut out, &[b'n'; 200], b"");
        let fields = decode(&out);
        assert_eq!(fields[0], (":status".into(), "200".into()));
        assert_eq!(fields[1], (":status".into(), "429".into()));
        assert_eq!(fields[2], ("content-type".into(), "text/html".into()));
        assert_eq!(fields[3], ("x-long".into(), "v".repeat(300)));
        assert_eq!(fields[4], ("n".repeat(200), String::new()));
    }

    #[test]
    fn literals_leave_the_dynamic_table_alone() {
        // a decoder that saw our block first decodes an indexed reference to its first
        // dynamic entry as whatever the peer put there, not as one of ours
        let mut d = loona_hpack::Decoder::new();
        let mut out = BytesMut::new();
        hpack::put_field(&mut out, b"x-ours", b"1");
        d.decode(&out).unwrap();
        assert!(d.decode(&[0xbe]).is_err(), "index 62 must still be empty");
    }

    #[test]
    fn frames_round_trip_and_headers_split_into_continuations() {
        let mut out = BytesMut::new();
        put_headers(&mut out, 3, &[7u8; 40], true, 16);
        let h = Head::parse(&out).unwrap();
        assert_eq!(
            (h.len, h.kind, h.flags, h.stream),
            (16, kind::HEADERS, flag::END_STREAM, 3)
        );
        let c = Head::parse(&out[9 + 16..]).unwrap();
        assert_eq!((c.kind, c.flags), (kind::CONTINUATION, 0));
        let last = Head::parse(&out[2 * (9 + 16)..]).unwrap();
        assert_eq!(
            (last.len, last.kind, last.flags),
            (8, kind::CONTINUATION, flag::END_HEADERS)
        );
        let mut s = BytesMut::new();
        put_settings(&mut s, &[(setting::MAX_CONCURRENT_STREAMS, 100)]);
        let v: Vec<_> = settings(&s[9..]).unwrap().collect();
        assert_eq!(v, vec![(setting::MAX_CONCURRENT_STREAMS, 100)]);
        assert!(settings(&[0; 5]).is_none());
    }

    #[test]
    fn field_names_are_lower_case_tokens() {
        for good in [&b"authorization"[..], b"x-a_b.c~1!#$%&'*+^`|", b"0"] {
            assert!(field_name(good), "{good:?}");
        }
        for bad in [
            &b""[..],
            b"Authorization",
            b"a b",
            b"a:b",
            b"x\xff",
            b"a\tb",
            b"(x)",
        ] {
            assert!(!field_name(bad), "{bad:?}");
        }
        for b in 0..=255u8 {
            let expected = crate::request::tchar(b) && !b.is_ascii_uppercase();
            assert_eq!(field_name(&[b]), expected, "{b:#04x}");
        }
    }

    #[test]
    fn padding_and_priority_are_taken_off_and_bad_padding_is_refused() {
        let head = Head {
            len: 10,
            kind: kind::HEADERS,
            flags: flag::PADDED | flag::PRIORITY,
            stream: 1,
        };
        let payload = [2u8, 0, 0, 0, 1, 16, b'a', b'b', 0, 0];
        assert_eq!(unpadded(&head, &payload), Some(6..8));
        assert_eq!(unpadded(&head, &[9u8, 1, 2]), None);
        let data = Head {
            len: 3,
            kind: kind::DATA,
            flags: 0,
            stream: 1,
        };
        assert_eq!(unpadded(&data, b"abc"), Some(0..3));
    }
}

//! HPACK (RFC 7541): the literals this edge writes, and the decoder of the client's blocks.
//!
//! Written blocks are literals without indexing (§6.2.2), never Huffman-coded: they mean the
//! same whatever was sent before them (see [`super`]). The decoder is the whole of the spec:
//! the static and dynamic tables, size updates, and Huffman-coded strings ([`super::huffman`]).

use std::collections::VecDeque;

use bytes::{BufMut, BytesMut};

use super::huffman;

/// An integer with an `n`-bit prefix whose high bits are `first`.
pub fn put_int(out: &mut BytesMut, first: u8, n: u32, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.put_u8(first | value as u8);
        return;
    }
    out.put_u8(first | max as u8);
    value -= max;
    while value >= 128 {
        out.put_u8((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.put_u8(value as u8);
}

fn put_string(out: &mut BytesMut, s: &[u8]) {
    put_int(out, 0, 7, s.len());
    out.put_slice(s);
}

/// A field whose name is entry `index` of the static table.
pub fn put_indexed_name(out: &mut BytesMut, index: usize, value: &[u8]) {
    put_int(out, 0, 4, index);
    put_string(out, value);
}

/// A field with a literal name (lower-case, as HTTP/2 requires).
pub fn put_field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    match static_name(name) {
        Some(index) => put_indexed_name(out, index, value),
        None => put_literal(out, name, value),
    }
}

/// A field with a literal name, not looked up in the static table (a name known not to be
/// there).
pub fn put_literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    put_string(out, name);
    put_string(out, value);
}

/// The static table's index of `age`.
pub const AGE: usize = 21;
/// The static table's index of `date`.
pub const DATE: usize = 33;

/// `:status`: the static table's entry for the common ones, else a literal.
pub fn put_status(out: &mut BytesMut, status: u16) {
    let indexed = match status {
        200 => 8,
        204 => 9,
        206 => 10,
        304 => 11,
        400 => 12,
        404 => 13,
        500 => 14,
        _ => 0,
    };
    if indexed != 0 {
        out.put_u8(0x80 | indexed);
    } else {
        let digits = [
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ];
        put_indexed_name(out, 8, &digits);
    }
}

/// The static table's names (RFC 7541 Appendix A) a response is likely to carry, with
/// their first index.
const STATIC_NAMES: [(&[u8], usize); 27] = [
    (b"accept-ranges", 18),
    (b"access-control-allow-origin", 20),
    (b"age", 21),
    (b"allow", 22),
    (b"cache-control", 24),
    (b"content-disposition", 25),
    (b"content-encoding", 26),
    (b"content-language", 27),
    (b"content-length", 28),
    (b"content-location", 29),
    (b"content-range", 30),
    (b"content-type", 31),
    (b"date", 33),
    (b"etag", 34),
    (b"expires", 36),
    (b"last-modified", 44),
    (b"link", 45),
    (b"location", 46),
    (b"refresh", 52),
    (b"retry-after", 53),
    (b"server", 54),
    (b"set-cookie", 55),
    (b"strict-transport-security", 56),
    (b"transfer-encoding", 57),
    (b"vary", 59),
    (b"via", 60),
    (b"www-authenticate", 61),
];

fn static_name(name: &[u8]) -> Option<usize> {
    STATIC_NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, i)| i)
}

/// The static table (RFC 7541 Appendix A), index 1 first.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// A header block HPACK refuses (a COMPRESSION_ERROR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid(pub &'static str);

/// Bytes an entry counts for in the dynamic table's size.
const ENTRY_OVERHEAD: usize = 32;

/// The decoding side of one connection: its dynamic table.
pub struct Decoder {
    table: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
    /// The most `max_size` may be set to (our SETTINGS_HEADER_TABLE_SIZE).
    allowed: usize,
    /// Huffman-decoded strings of the current field.
    name: Vec<u8>,
    value: Vec<u8>,
    /// The last long Huffman-coded values of this connection: (as sent, decoded).
    repeated: [(Vec<u8>, Vec<u8>); 2],
    /// The slot of `repeated` the next new value replaces.
    next_repeated: usize,
}

/// Shortest Huffman-coded value (in bytes as sent) [`Decoder`] remembers decoded. nghttp2's
/// clients (`h2load`, curl) send `authorization` never-indexed, as RFC 7541 §7.1.3 advises,
/// so a returning viewer's bearer token (250 characters) came Huffman-coded on every request
/// and decoding it was the largest cost of an HTTP/2 token hit (`perf`, issue 20 closing
/// note); equal bytes on the same connection now cost a comparison and a copy.
const REPEATED_MIN: usize = 64;
/// Longest value (as sent) [`Decoder`] remembers: a connection keeps at most two, 4 KiB as
/// sent and 6.5 KiB decoded each, not the 64 KiB a header list may hold.
const REPEATED_MAX: usize = 4096;

/// Where a decoded string is.
#[derive(Clone, Copy)]
enum Str {
    /// In the block, at this range.
    Raw(usize, usize),
    /// In the decoder's buffer.
    Decoded,
    /// A value decoded before, in this slot of the remembered ones (not copied again).
    Repeated(usize),
}

impl Decoder {
    /// A decoder whose table may hold `allowed` bytes (and does at first).
    pub fn new(allowed: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: allowed,
            allowed,
            name: Vec::new(),
            value: Vec::new(),
            repeated: Default::default(),
            next_repeated: 0,
        }
    }

    /// Decode `block`, calling `field(name, value)` for each field in order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Invalid> {
        let mut at = 0;
        let mut fields = 0;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                let index = int(block, &mut at, 7)?;
                let (n, v) = self.entry(index)?;
                field(n, v);
            } else if first & 0xe0 == 0x20 {
                // a size update: only before the first field (§4.2)
                if fields > 0 {
                    return Err(Invalid("a table size update after a field"));
                }
                let size = int(block, &mut at, 5)?;
                if size > self.allowed {
                    return Err(Invalid("a table size over the allowed"));
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                let (prefix, index) = if first & 0xc0 == 0x40 {
                    (6, true)
                } else {
                    (4, false)
                };
                let name_index = int(block, &mut at, prefix)?;
                let name = if name_index == 0 {
                    Some(self.string(block, &mut at, true)?)
                } else {
                    // checked now: an index past the table is refused
                    self.entry(name_index)?;
                    None
                };
                let value = self.string(block, &mut at, false)?;
                let value = match value {
                    Str::Raw(a, b) => &block[a..b],
                    Str::Decoded => &self.value[..],
                    Str::Repeated(slot) => &self.repeated[slot].1[..],
                };
                let name: &[u8] = match name {
                    Some(Str::Raw(a, b)) => &block[a..b],
                    Some(Str::Decoded) => &self.name[..],
                    // (names are never remembered)
                    Some(Str::Repeated(slot)) => &self.repeated[slot].1[..],
                    None => self.entry(name_index)?.0,
                };
                field(name, value);
                if index {
                    let entry = (name.to_vec(), value.to_vec());
                    self.insert(entry);
                }
            }
            fields += 1;
        }
        Ok(())
    }

    /// Entry `index` (1-based: the static table, then the dynamic one, newest first).
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), Invalid> {
        match index {
            0 => Err(Invalid("index 0")),
            1..=61 => Ok(STATIC[index - 1]),
            _ => self
                .table
                .get(index - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(Invalid("an index past the table")),
        }
    }

    /// A string at `at`: raw in the block, or Huffman-decoded into the name or value buffer.
    fn string(&mut self, block: &[u8], at: &mut usize, name: bool) -> Result<Str, Invalid> {
        let huffman = block.get(*at).ok_or(Invalid("a truncated string"))? & 0x80 != 0;
        let len = int(block, at, 7)?;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= block.len())
            .ok_or(Invalid("a string past the block"))?;
        let start = std::mem::replace(at, end);
        if !huffman {
            return Ok(Str::Raw(start, end));
        }
        let sent = &block[start..end];
        let remember = !name && (REPEATED_MIN..=REPEATED_MAX).contains(&sent.len());
        if remember {
            if let Some(slot) = self.repeated.iter().position(|(s, _)| s[..] == *sent) {
                return Ok(Str::Repeated(slot));
            }
        }
        let buf = if name {
            &mut self.name
        } else {
            &mut self.value
        };
        buf.clear();
        huffman::decode(sent, buf).map_err(|_| Invalid("a bad Huffman string"))?;
        if !remember {
            return Ok(Str::Decoded);
        }
        let at = self.next_repeated;
        self.next_repeated = (at + 1) % self.repeated.len();
        let slot = &mut self.repeated[at];
        slot.0.clear();
        slot.0.extend_from_slice(sent);
        slot.1.clear();
        slot.1.extend_from_slice(buf);
        Ok(Str::Decoded)
    }

    fn insert(&mut self, entry: (Vec<u8>, Vec<u8>)) {
        let size = entry.0.len() + entry.1.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            // an entry larger than the table empties it (§4.4)
            self.table.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.table.push_front(entry);
    }

    /// Evict the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.table.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }
}

/// An integer with an `n`-bit prefix at `*at` (§5.1), at most 2^28.
fn int(block: &[u8], at: &mut usize, n: u32) -> Result<usize, Invalid> {
    let max = (1usize << n) - 1;
    let first = *block.get(*at).ok_or(Invalid("a truncated integer"))? as usize & max;
    *at += 1;
    if first < max {
        return Ok(first);
    }
    let mut value = max;
    let mut shift = 0;
    loop {
        let b = *block.get(*at).ok_or(Invalid("a truncated integer"))?;
        *at += 1;
        value += usize::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
        shift += 7;
        if shift > 21 {
            return Err(Invalid("an integer too large"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, Invalid> {
        let mut out = Vec::new();
        d.decode(block, |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })?;
        Ok(out)
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// RFC 7541 Appendix C.4: three requests, Huffman-coded, sharing the dynamic table.
    #[test]
    fn rfc_7541_c4_requests_decode_with_their_table() {
        let mut d = Decoder::new(4096);
        let c41 = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        assert_eq!(
            decode_all(&mut d, &c41).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        let c42 = [
            0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
        ];
        assert_eq!(
            decode_all(&mut d, &c42).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        let c43 = [
            0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
            0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
        ];
        assert_eq!(
            decode_all(&mut d, &c43).unwrap(),
            pairs(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.size, 164);
    }

    #[test]
    fn it_reads_what_loona_hpack_writes_and_what_it_writes_itself() {
        let mut enc = loona_hpack::Encoder::new();
        let headers: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":path", b"/premium/article"),
            (b"authorization", b"Bearer abc.def.ghi"),
            (b"cookie", b"a=1"),
        ];
        let mut d = Decoder::new(4096);
        for _ in 0..3 {
            let block = enc.encode(headers.iter().copied());
            let got = decode_all(&mut d, &block).unwrap();
            let want: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into_owned(),
                        String::from_utf8_lossy(v).into_owned(),
                    )
                })
                .collect();
            assert_eq!(got, want);
        }
        let mut out = BytesMut::new();
        put_indexed_name(&mut out, AGE, b"7");
        put_indexed_name(&mut out, DATE, b"today");
        let got = decode_all(&mut d, &out).unwrap();
        assert_eq!(got, pairs(&[("age", "7"), ("date", "today")]));
        let mut out = BytesMut::new();
        put_status(&mut out, 503);
        put_field(&mut out, b"x-long", &[b'v'; 200]);
        let got = decode_all(&mut d, &out).unwrap();
        assert_eq!(got[0], (":status".into(), "503".into()));
        assert_eq!(got[1].1.len(), 200);
    }

    /// Long Huffman-coded values, repeated and alternating on one connection, as nghttp2 sends
    /// a bearer token (never indexed): each decodes to its own bytes, whichever slot it is in.
    #[test]
    fn repeated_long_values_decode_to_themselves() {
        let token = |i: usize| format!("Bearer {}.{i}", "eyJhbGciOiJFUzI1NiJ9".repeat(6));
        let block = |name: &str, value: &str| {
            let mut out = BytesMut::new();
            out.extend_from_slice(&[0x10]); // literal never indexed, new name
            put_int(&mut out, 0x00, 7, name.len());
            out.extend_from_slice(name.as_bytes());
            let coded = crate::http2::huffman::encode(value.as_bytes());
            assert!(coded.len() >= REPEATED_MIN);
            put_int(&mut out, 0x80, 7, coded.len());
            out.extend_from_slice(&coded);
            out
        };
        let mut d = Decoder::new(4096);
        for i in [0, 0, 1, 0, 2, 2, 1, 3, 0, 3, 3] {
            let value = token(i);
            let got = decode_all(&mut d, &block("authorization", &value)).unwrap();
            assert_eq!(got, pairs(&[("authorization", &value)]), "token {i}");
        }
        // a value too long to remember is decoded every time
        let long = format!("Bearer {}", "x".repeat(8000));
        for _ in 0..2 {
            let got = decode_all(&mut d, &block("authorization", &long)).unwrap();
            assert_eq!(got, pairs(&[("authorization", &long)]));
        }
        assert!(d
            .repeated
            .iter()
            .all(|(sent, _)| sent.len() <= REPEATED_MAX));
        // a value one byte off is decoded afresh, and a bad one is still refused
        let mut bad = block("authorization", &token(0)).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        assert!(decode_all(&mut d, &bad).is_err());
        assert!(
            d.table.is_empty(),
            "never-indexed fields stay out of the table"
        );
    }

    #[test]
    fn bad_blocks_are_refused() {
        let mut d = Decoder::new(4096);
        for block in [
            &[0x80][..],                           // index 0
            &[0xff, 0x80, 0x01],                   // an index past the table
            &[0x41],                               // a truncated string
            &[0x40, 0x85, 0x61],                   // a string past the block
            &[0x3f, 0xe1, 0x7f],                   // a table size over the allowed (4096 + ...)
            &[0x82, 0x20],                         // a size update after a field
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff], // an integer too large
        ] {
            assert!(d.decode(block, |_, _| {}).is_err(), "{block:02x?}");
        }
        // a size update to 0 empties the table; its entries are gone
        let mut d = Decoder::new(4096);
        d.decode(&[0x40, 0x01, b'a', 0x01, b'b'], |_, _| {})
            .unwrap();
        assert!(d.decode(&[0xbe], |_, _| {}).is_ok());
        d.decode(&[0x20], |_, _| {}).unwrap();
        assert!(d.decode(&[0xbe], |_, _| {}).is_err());
    }
}

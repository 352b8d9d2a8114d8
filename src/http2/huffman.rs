//! HPACK's Huffman code (RFC 7541 §5.2, Appendix B): the decoder, and an encoder for tests
//! and benches.
//!
//! The code is canonical — within one length, codes rise with the symbol — so the 257 code
//! lengths define it. Decoding looks the next 13 bits up in a table of the one or two whole
//! codes they open ([`PAIRS`], 32 KiB: most URL and token characters have codes of 5 to 8
//! bits), and falls back to comparing the next bits, length by length, with the first code of
//! each length (as zlib's `puff` does) for longer codes and the string's end; the input is read
//! eight bytes at a time, and four lookups follow each read without a branch on what they
//! decoded ([`decode_into`]). `cargo bench --bench hpack`, per string:
//!
//! | decoder | 190-character signed URL | 266-character token path, 1,000 in turn |
//! |---|---|---|
//! | this one | ~290 ns | ~465 ns |
//! | 12-bit table, a branch on one or two codes per lookup | ~375 ns | ~1,120 ns |
//! | 12-bit table without that branch | ~340 ns | ~570 ns |
//! | 14-bit table (64 KiB) without it | ~265 ns | ~460 ns |
//!
//! The token paths are what a rotating-token request sends over HTTP/2 (a distinct `:path`
//! each time, whose random characters the branch mispredicted about every other lookup); the
//! 14-bit table gains nothing on them and is twice the size. On the node (`h2load -c50 -m10
//! -i` over 10,000 token paths, benches/peers' rotating row, one server core), 3.57–3.60 µs of
//! server CPU per request became 3.27–3.30 µs and the row 275–279k req/s became 300–303k.
//! A one-step table of single codes up to 9 bits gave 550 ns on the signed URL, byte by byte
//! 700. Why not `loona-hpack`'s decoder, the first
//! used here: it builds a `HashMap` of the whole code for every string it decodes, and
//! nghttp2's clients (`h2load`, curl) send `:path` Huffman-coded and unindexed on every
//! request — `perf` showed 70 % of the
//! HTTP/2 hit path's CPU in that construction (`h2load -c50 -m10 -t1`, 1 KiB public hit over
//! TLS, one server core: 44.6k req/s with it, 336k with this decoder).

/// Bits of each symbol's code; symbol 256 is EOS.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The longest code.
const MAX_LEN: usize = 30;

/// The code, arranged for decoding.
struct Code {
    /// The first code of each length.
    first: [u32; MAX_LEN + 1],
    /// How many codes have each length.
    count: [u32; MAX_LEN + 1],
    /// Where each length's symbols start in `symbols`.
    offset: [u16; MAX_LEN + 1],
    /// Symbols by (length, symbol).
    symbols: [u16; 257],
}

const fn arrange() -> Code {
    let mut c = Code {
        first: [0; MAX_LEN + 1],
        count: [0; MAX_LEN + 1],
        offset: [0; MAX_LEN + 1],
        symbols: [0; 257],
    };
    let mut s = 0;
    while s < 257 {
        c.count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let (mut code, mut at, mut len) = (0u32, 0u16, 1);
    while len <= MAX_LEN {
        c.first[len] = code;
        c.offset[len] = at;
        code = (code + c.count[len]) << 1;
        at += c.count[len] as u16;
        len += 1;
    }
    let mut next = c.offset;
    let mut s = 0;
    while s < 257 {
        let l = LENGTHS[s] as usize;
        c.symbols[next[l] as usize] = s as u16;
        next[l] += 1;
        s += 1;
    }
    c
}

const CODE: Code = arrange();

/// Bits of input [`PAIRS`] is indexed by.
const PAIR_BITS: usize = 13;
/// [`decode_into`]'s unchecked lookups after a refill, which leaves at least 56 bits: each
/// takes at most [`PAIR_BITS`], and the last must still find that many.
const LOOKUPS_PER_REFILL: usize = 4;
const _: () = assert!(PAIR_BITS * LOOKUPS_PER_REFILL <= 56 && PAIR_BITS <= 15);

/// For every [`PAIR_BITS`]-bit window of input: the symbols whose whole codes open it (none,
/// one, or two; never EOS) in bits 0..8 and 8..16, their number in bits 16..18, and the bits
/// they take from bit 20. Most characters of a URL or a token have codes of 5 to 8 bits, so
/// one lookup often yields two of them.
static PAIRS: [u32; 1 << PAIR_BITS] = pairs();

/// The symbol whose code opens the `width`-bit `window`, and the code's length.
const fn first_symbol(window: u32, width: usize) -> Option<(u32, usize)> {
    let mut len = 5;
    while len <= width {
        let d = (window >> (width - len)).wrapping_sub(CODE.first[len]);
        if d < CODE.count[len] {
            let symbol = CODE.symbols[CODE.offset[len] as usize + d as usize] as u32;
            return if symbol == 256 {
                None
            } else {
                Some((symbol, len))
            };
        }
        len += 1;
    }
    None
}

const fn pairs() -> [u32; 1 << PAIR_BITS] {
    let mut table = [0u32; 1 << PAIR_BITS];
    let mut w = 0;
    while w < table.len() {
        if let Some((one, len)) = first_symbol(w as u32, PAIR_BITS) {
            let rest = w as u32 & ((1 << (PAIR_BITS - len)) - 1);
            table[w] = match first_symbol(rest, PAIR_BITS - len) {
                Some((two, len2)) => one | two << 8 | 2 << 16 | ((len + len2) as u32) << 20,
                None => one | 1 << 16 | (len as u32) << 20,
            };
        }
        w += 1;
    }
    table
}

/// A string HPACK refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// The EOS symbol inside the string.
    Eos,
    /// Padding longer than 7 bits, or not EOS's leading ones.
    Padding,
}

/// Decode `src`, appending to `dst` (on error `dst` is left as it was).
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Invalid> {
    let start = dst.len();
    // every 5 bits give at most one byte; the fast loop stores two bytes per lookup whatever
    // it decodes, so one more may be written past the last
    dst.resize(start + src.len() * 8 / 5 + 2, 0);
    match decode_into(src, &mut dst[start..]) {
        Ok(n) => {
            dst.truncate(start + n);
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

/// Decode `src` into `out` (room for `src.len() * 8 / 5 + 2` bytes), returning how many.
///
/// While eight bytes of input remain, a refill leaves 56 to 63 bits in `acc` and
/// [`LOOKUPS_PER_REFILL`] [`PAIRS`] lookups follow without a test between them: each takes at
/// most [`PAIR_BITS`] bits, so each has that many real bits under its window. Each stores both
/// of its entry's bytes and advances by the entry's count, and a window that opens no short
/// code (count 0) takes no bits, so the lookups after it change nothing. No branch depends on
/// the decoded text: with one per lookup, on whether it held one or two codes, a token's
/// random characters mispredicted about every other lookup (figures in the module's notes).
fn decode_into(src: &[u8], out: &mut [u8]) -> Result<usize, Invalid> {
    // the next bits, from the top; `bits` of them are valid (below them may sit copies of the
    // bytes that follow, which the next refill ORs in again, unchanged)
    let (mut acc, mut bits, mut i, mut o) = (0u64, 0usize, 0, 0);
    while let Some(word) = src.get(i..i + 8) {
        // as many whole bytes as fit, in one load: `bits` reaches 56..=63
        let word = u64::from_be_bytes(word.try_into().unwrap_or_default());
        acc |= word >> bits;
        let take = (63 - bits) >> 3;
        i += take;
        bits += take << 3;
        if codes_in(pair_at(acc)) == 0 {
            // a code longer than the window (or EOS): 56 bits hold any code
            long_code(&mut acc, &mut bits, out, &mut o)?;
            continue;
        }
        for _ in 0..LOOKUPS_PER_REFILL {
            take_pair(pair_at(acc), &mut acc, &mut bits, out, &mut o);
        }
    }
    // the last bytes, one at a time, testing every lookup
    loop {
        while bits <= 56 && i < src.len() {
            acc |= u64::from(src[i]) << (56 - bits);
            bits += 8;
            i += 1;
        }
        let pair = pair_at(acc);
        if bits >= PAIR_BITS && codes_in(pair) > 0 {
            take_pair(pair, &mut acc, &mut bits, out, &mut o);
        } else if bits == 0 || !long_code(&mut acc, &mut bits, out, &mut o)? {
            return Ok(o);
        }
    }
}

/// The [`PAIRS`] entry of the window at the top of `acc`.
fn pair_at(acc: u64) -> u32 {
    PAIRS[(acc >> (64 - PAIR_BITS)) as usize]
}

/// How many codes a [`PAIRS`] entry holds (0: none short enough, or EOS).
fn codes_in(pair: u32) -> usize {
    (pair >> 16 & 3) as usize
}

/// Store both of `pair`'s bytes at `out[o]` and advance past the codes it holds: `o` by their
/// number, `acc` and `bits` by their bits (nothing for an entry of none).
fn take_pair(pair: u32, acc: &mut u64, bits: &mut usize, out: &mut [u8], o: &mut usize) {
    out[*o] = pair as u8;
    out[*o + 1] = (pair >> 8) as u8;
    *o += codes_in(pair);
    let used = (pair >> 20) as usize;
    *acc <<= used;
    *bits -= used;
}

/// Decode one code from the top of `acc` length by length, comparing with the first code of
/// each (as zlib's `puff` does): a code longer than [`PAIR_BITS`], or one among the input's
/// last bits. Returns false when what is left is the final padding (fewer than eight bits,
/// all ones: the start of EOS).
fn long_code(
    acc: &mut u64,
    bits: &mut usize,
    out: &mut [u8],
    o: &mut usize,
) -> Result<bool, Invalid> {
    let mut len = 5;
    loop {
        if len > *bits {
            // the input is over: what is left is padding, EOS's first bits (all ones)
            let ones = *acc >> (64 - *bits) == (1 << *bits) - 1;
            return if *bits < 8 && ones {
                Ok(false)
            } else {
                Err(Invalid::Padding)
            };
        }
        let code = (*acc >> (64 - len)) as u32;
        let d = code.wrapping_sub(CODE.first[len]);
        if d < CODE.count[len] {
            let symbol = CODE.symbols[CODE.offset[len] as usize + d as usize];
            if symbol == 256 {
                return Err(Invalid::Eos);
            }
            out[*o] = symbol as u8;
            *o += 1;
            *acc <<= len;
            *bits -= len;
            return Ok(true);
        }
        len += 1;
        if len > MAX_LEN {
            // every 30-bit pattern is some code's prefix or a code: unreachable
            return Err(Invalid::Padding);
        }
    }
}

/// Encode `src`. Not used by the edge (its blocks are never Huffman-coded): for tests and
/// benches, and a second reading of the code, checked against `loona-hpack`'s.
pub fn encode(src: &[u8]) -> Vec<u8> {
    let mut codes = [0u32; 257];
    let mut next = CODE.first;
    for &s in CODE.symbols.iter() {
        let l = LENGTHS[s as usize] as usize;
        codes[s as usize] = next[l];
        next[l] += 1;
    }
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u64, 0u32);
    for &b in src {
        let l = u32::from(LENGTHS[b as usize]);
        acc = (acc << l) | u64::from(codes[b as usize]);
        bits += l;
        while bits >= 8 {
            out.push((acc >> (bits - 8)) as u8);
            bits -= 8;
        }
    }
    if bits > 0 {
        out.push(((acc << (8 - bits)) | ((1 << (8 - bits)) - 1)) as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_round_trips_and_agrees_with_loona_hpack() {
        let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let encoded = encode(&all);
        let mut out = Vec::new();
        decode(&encoded, &mut out).unwrap();
        assert_eq!(out, all);
        // an independent decoder of the RFC's table reads the same bytes
        let theirs = loona_hpack::huffman::HuffmanDecoder::new()
            .decode(&encoded)
            .unwrap();
        assert_eq!(theirs, all);
        for s in [
            "/premium/article?token=abc",
            "www.example.com",
            "custom-key",
            "",
        ] {
            let mut out = Vec::new();
            decode(&encode(s.as_bytes()), &mut out).unwrap();
            assert_eq!(out, s.as_bytes());
        }
    }

    #[test]
    fn random_strings_and_random_bytes_agree_with_loona_hpack() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(20);
        let loona = |input: &[u8]| loona_hpack::huffman::HuffmanDecoder::new().decode(input);
        for round in 0..3_000 {
            let len = rng.gen_range(0..300);
            // mostly URL and token characters, sometimes any byte (long codes)
            let text: Vec<u8> = (0..len)
                .map(|_| match rng.gen_range(0..10) {
                    0 => rng.gen(),
                    _ => {
                        b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~/?=&"
                            [rng.gen_range(0..70)]
                    }
                })
                .collect();
            let mut out = Vec::new();
            decode(&encode(&text), &mut out).unwrap_or_else(|e| panic!("round {round}: {e:?}"));
            assert_eq!(out, text, "round {round}");
            // arbitrary input: refused by both, or the same bytes from both
            let junk: Vec<u8> = (0..rng.gen_range(0..40)).map(|_| rng.gen()).collect();
            let mut ours = Vec::new();
            match (decode(&junk, &mut ours), loona(&junk)) {
                (Ok(()), Ok(theirs)) => assert_eq!(ours, theirs, "{junk:02x?}"),
                (Err(_), Err(_)) => {}
                (a, b) => panic!("{junk:02x?}: ours {a:?}, loona-hpack {b:?}"),
            }
        }
    }

    #[test]
    fn long_codes_anywhere_in_a_long_string_decode() {
        // a byte with a long code at every offset of a token-like string, so that it falls at
        // every place of the four unchecked lookups after a refill, and at the string's end
        let base: Vec<u8> = b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImVzIn0.Zm9vYmFyQUJDREVG_-xyz"
            .iter()
            .cycle()
            .take(300)
            .copied()
            .collect();
        for long in [0u8, 0x7f, 0xfe, b'\\', b'^'] {
            for at in (0..40).chain(290..300) {
                let mut text = base.clone();
                text[at] = long;
                let mut out = b"kept".to_vec();
                decode(&encode(&text), &mut out).unwrap();
                assert_eq!(&out[..4], b"kept", "appends to what dst held");
                assert_eq!(&out[4..], &text[..], "byte {long:#04x} at {at}");
            }
        }
    }

    #[test]
    fn eos_inside_a_long_string_is_refused_and_dst_is_left_as_it_was() {
        // '0' is 00000: eight of them fill five bytes; then EOS (thirty ones), then more text,
        // so that EOS is met by the unchecked lookups' fallback, not at the string's end
        let mut sent = encode(&[b'0'; 8]);
        sent.extend_from_slice(&[0xff, 0xff, 0xff, 0xfc]);
        sent.extend_from_slice(&encode(&[b'a'; 40]));
        let mut out = b"kept".to_vec();
        assert_eq!(decode(&sent, &mut out), Err(Invalid::Eos));
        assert_eq!(out, b"kept");
    }

    #[test]
    fn rfc_7541_examples_decode() {
        // Appendix C.4.1: "www.example.com"
        let www = [
            0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff,
        ];
        let mut out = Vec::new();
        decode(&www, &mut out).unwrap();
        assert_eq!(out, b"www.example.com");
        // Appendix C.4.2: "no-cache"
        let mut out = Vec::new();
        decode(&[0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf], &mut out).unwrap();
        assert_eq!(out, b"no-cache");
    }

    #[test]
    fn bad_padding_and_eos_are_refused() {
        let mut out = Vec::new();
        // '0' (00000) then three zero bits of padding
        assert_eq!(decode(&[0x00], &mut out), Err(Invalid::Padding));
        // a whole byte of ones is padding longer than 7 bits
        let mut a = encode(b"a");
        a.push(0xff);
        assert_eq!(decode(&a, &mut Vec::new()), Err(Invalid::Padding));
        // EOS itself: thirty ones, then two of padding
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut Vec::new()),
            Err(Invalid::Eos)
        );
    }
}

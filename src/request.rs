//! What a request says, read the same way by every layer (the ground floor: it imports
//! nothing of the crate): path normalization, scopes, path tokens, query parameters, cookies,
//! bearer tokens, host names.
//!
//! Everything here is a plain function over strings so it can be unit-tested and benchmarked
//! without a proxy. Normalization matters for security: routing, the cache key and the origin
//! request all use the same normalized path, so `/%70remium/a` cannot slip past `/premium/*`.

use std::borrow::Cow;

/// Why a request was refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRequest {
    /// Path is not origin-form (`/...`).
    NotOriginForm,
    /// Invalid percent-encoding.
    BadEscape,
    /// `%2F`, `%5C`, `%00` or a backslash: ambiguous between edge and origin.
    AmbiguousPath,
    /// `..` above the root.
    EscapesRoot,
}

impl BadRequest {
    /// Label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            BadRequest::NotOriginForm => "not_origin_form",
            BadRequest::BadEscape => "bad_escape",
            BadRequest::AmbiguousPath => "ambiguous_path",
            BadRequest::EscapesRoot => "escapes_root",
        }
    }
}

/// The value of one hexadecimal digit (either case).
pub fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalize a request path (RFC 3986 §6.2.2): decode percent-encoded unreserved characters,
/// upper-case the hex of the rest, remove `.`/`..` segments and merge repeated slashes.
/// Encoded slashes, backslashes and NULs are refused rather than guessed at.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, BadRequest> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(BadRequest::NotOriginForm);
    }
    // Paths are short, and `memchr` pays its set-up on every call: the searches these replace
    // (a backslash, a `%`, each `/`) made five calls for `/public/article`, 389 instructions of
    // a hit (callgrind). A backslash is refused; a `%`, or a `/` before `/` or `.`, means work.
    let plain = every_byte(bytes, b'a', |b| (b != b'\\') & (b != b'%'));
    if !plain && memchr::memchr(b'\\', bytes).is_some() {
        return Err(BadRequest::AmbiguousPath);
    }
    let needs_work = !plain
        || bytes
            .windows(2)
            .any(|w| (w[0] == b'/') & ((w[1] == b'/') | (w[1] == b'.')));
    if !needs_work {
        return Ok(Cow::Borrowed(raw));
    }
    // 1. percent-decoding of unreserved characters, on bytes: only ASCII is decoded or
    // rewritten, so the UTF-8 of everything else passes through untouched (pushing each byte as
    // a `char` re-encoded non-ASCII characters as Latin-1: found by fuzzing, `token_sources`)
    let mut decoded: Vec<u8> = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex_digit),
                bytes.get(i + 2).copied().and_then(hex_digit),
            ) else {
                return Err(BadRequest::BadEscape);
            };
            let v = h * 16 + l;
            if matches!(v, b'/' | b'\\' | 0) {
                return Err(BadRequest::AmbiguousPath);
            }
            if is_unreserved(v) {
                decoded.push(v);
            } else {
                decoded.push(b'%');
                decoded.push(b"0123456789ABCDEF"[(v >> 4) as usize]);
                decoded.push(b"0123456789ABCDEF"[(v & 15) as usize]);
            }
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    // (ASCII replaced ASCII in valid UTF-8: still valid)
    let decoded = String::from_utf8(decoded).map_err(|_| BadRequest::BadEscape)?;
    // 2. dot segments and empty segments
    let trailing = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(BadRequest::EscapesRoot);
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if trailing || path.is_empty() {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

/// If the first path segment is a token (`[<sid>.]<jwt>`), split it off: returns the token, the
/// sid prefix and the remaining path.
pub fn split_path_token(path: &str) -> Option<(&str, Option<&str>, &str)> {
    let rest = path.strip_prefix('/')?;
    let (seg, remainder) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let dots = seg.bytes().filter(|&b| b == b'.').count();
    let (sid, jwt) = match dots {
        2 => (None, seg),
        3 => {
            let i = seg.find('.')?;
            (Some(&seg[..i]), &seg[i + 1..])
        }
        _ => return None,
    };
    if !jwt.starts_with("eyJ") || sid.is_some_and(str::is_empty) {
        return None;
    }
    Some((jwt, sid, remainder))
}

/// Whether the normalized request `path` lies inside `prefix` on a segment boundary:
/// `/vod/abc` covers `/vod/abc` and `/vod/abc/...`, never `/vod/abcdef`; a prefix ending in `/`
/// covers everything below it. The path was normalized first (dot segments resolved, encoded
/// slashes refused), so `..` and `%2F` cannot escape a prefix.
pub fn path_in_scope(path: &str, prefix: &str) -> bool {
    if prefix.is_empty() || !prefix.starts_with('/') {
        return false;
    }
    if prefix.ends_with('/') {
        return path.starts_with(prefix);
    }
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// RFC 9110 `tchar`: a byte of a token (a header name, a cookie name).
pub const fn tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `ok` holds for every byte of `bytes`, without a branch per byte: the multiple of 16
/// folded as one slice (which compiles to vector compares), the rest copied into a 16-byte array
/// padded with `pad`, a byte `ok` accepts, and folded whole. A `fold` over the slice alone takes
/// its last `len % 16` bytes, and all of an input shorter than 16, one at a time. Per call
/// (callgrind, a standalone loop of the three shapes): 15 bytes 149 -> 64 instructions,
/// 17 bytes 86 -> 94, 251 bytes 303 -> 270; folding each 16-byte chunk as an array instead
/// was 707 at 251 bytes.
#[inline(always)]
pub fn every_byte(bytes: &[u8], pad: u8, ok: impl Fn(u8) -> bool + Copy) -> bool {
    debug_assert!(ok(pad));
    let (chunks, rest) = bytes.as_chunks::<16>();
    let bulk = chunks
        .as_flattened()
        .iter()
        .fold(true, |all, &b| all & ok(b));
    let mut last = [pad; 16];
    last[..rest.len()].copy_from_slice(rest);
    bulk & last.iter().fold(true, |all, &b| all & ok(b))
}

/// A lookup table of the ASCII letters and digits and the bytes of `others`, for checks that
/// run over every byte of a request line or field.
pub const fn alnum_and(others: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < others.len() {
        table[others[i] as usize] = true;
        i += 1;
    }
    table
}

/// The `&`-separated pairs of `query`, as `str::split('&')` gives them (empty ones included).
///
/// With the `memchr` crate's vector search: `str::split` scans a word at a time, and a
/// rotating-token request over HTTP/2 carries a ~250-byte query that the token decision, the
/// cache key and the access record each walk. benches/peers' HTTP/2 rotating-token row on one
/// server core (after its flood of never-seen tokens; 4 restarts of each build, interleaved,
/// 3 cells of 5 s each): 3.57 µs of server CPU per request became 3.47 (means), 279k req/s 285k
/// (medians), with `query_param`'s `%` test and `strip_query_params` on it too.
pub fn query_pairs(query: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(query);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'&', r.as_bytes()) {
            Some(i) => {
                rest = Some(&r[i + 1..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// A query pair's name: what precedes its first `=`, or all of it.
pub fn pair_name(pair: &str) -> &str {
    split_at_ascii(pair, b'=').map_or(pair, |(k, _)| k)
}

/// `s` split around its first `delimiter` (an ASCII byte, so both sides are `str`s), found with
/// `memchr`: `str::split_once` with a `char` took ~140 instructions to find the `=` of a token
/// pair and the `?` of a target (callgrind, rotating-token hit), most of it setting up its search.
pub fn split_at_ascii(s: &str, delimiter: u8) -> Option<(&str, &str)> {
    debug_assert!(delimiter.is_ascii());
    let i = memchr::memchr(delimiter, s.as_bytes())?;
    Some((&s[..i], &s[i + 1..]))
}

/// The value of the first query parameter called `name`, raw (tokens are base64url and need no
/// decoding; a `%`-escaped token is decoded).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    query_pairs(query).find_map(|pair| {
        let (k, v) = split_at_ascii(pair, b'=').unwrap_or((pair, ""));
        // most values have nothing to decode: found by `memchr`, not byte by byte
        (k == name).then(|| match memchr::memchr(b'%', v.as_bytes()) {
            None => Cow::Borrowed(v),
            Some(_) => percent_encoding::percent_decode_str(v).decode_utf8_lossy(),
        })
    })
}

/// The query without any parameter named in `names`, preserving the order of the rest.
pub fn strip_query_params<'a, S: AsRef<str>>(query: &'a str, names: &[S]) -> Cow<'a, str> {
    if names.is_empty() {
        return Cow::Borrowed(query);
    }
    let is_token = |pair: &str| {
        let k = pair_name(pair);
        names.iter().any(|n| n.as_ref() == k)
    };
    if !query_pairs(query).any(is_token) {
        return Cow::Borrowed(query);
    }
    Cow::Owned(joined(
        query_pairs(query).filter(|p| !p.is_empty() && !is_token(p)),
    ))
}

/// `pairs` joined with `&`, without a `Vec` of them first (a query of nothing but a token
/// allocates nothing).
fn joined<'a>(pairs: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for pair in pairs {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    out
}

/// The query with only the parameters named in `names` (query-string allow-list), in order.
pub fn keep_query_params<S: AsRef<str>>(query: &str, names: &[S]) -> String {
    joined(query_pairs(query).filter(|pair| {
        let k = pair_name(pair);
        !pair.is_empty() && names.iter().any(|n| n.as_ref() == k)
    }))
}

/// The host name of a `Host` value, without the port (IPv6 literals keep their brackets).
pub fn host_name(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_inclusive(']').next().unwrap_or("");
    }
    host.split(':').next().unwrap_or("")
}

/// The token of an `Authorization: Bearer <token>` header value, as bytes (a token is checked
/// for UTF-8 only when it is verified: [`crate::admission::FoundToken`]).
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    // On bytes: a `str` search for the space and a Unicode trim were ~190 of the ~2,000
    // instructions a token adds to a hit, and the token's UTF-8 check ~150 (callgrind).
    let (scheme, rest) = value.split_at_checked(7)?;
    // `bearer` in any case: a letter's case is its 0x20 bit, and no other byte matches a
    // letter with that bit set (compared without a branch per byte)
    let lower = scheme[..6]
        .iter()
        .zip(b"bearer")
        .fold(true, |same, (&b, &l)| same & (b | 0x20 == l));
    if !lower || scheme[6] != b' ' {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// The value of cookie `name` in a `Cookie` header value: the first `name=value` pair (blanks
/// around a pair and quotes around its value taken off), as bytes, as [`bearer_token`].
///
/// On bytes, pairs found with `memchr`: with `str::split(';')`, a Unicode trim and the whole
/// header's UTF-8 check, and the Cookie fields gathered in a `Vec` before (`admission`), an
/// HTTP/2 cookie hit cost ~1,300 instructions more (callgrind, as
/// benches/peers/instructions.sh loads it; a 270-byte token cookie: 18,000 → 16,680).
pub fn cookie_value<'a>(header: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let name = name.as_bytes();
    let mut rest = header;
    loop {
        let (pair, next) = match memchr::memchr(b';', rest) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let pair = pair.trim_ascii();
        if let Some(value) = pair
            .strip_prefix(name)
            .and_then(|after| after.strip_prefix(b"="))
        {
            let start = value.iter().position(|&b| b != b'"').unwrap_or(value.len());
            let end = value
                .iter()
                .rposition(|&b| b != b'"')
                .map_or(start, |i| i + 1);
            return Some(&value[start..end]);
        }
        rest = next?;
    }
}

/// A `Cookie` header value without the cookies named in `names`; `None` if nothing is left.
pub fn strip_cookies<S: AsRef<str>>(header: &[u8], names: &[S]) -> Option<String> {
    retain_cookies(header, |k| !names.iter().any(|n| n.as_ref() == k))
}

/// The cookies of a `Cookie` header value whose names pass `keep`; `None` if none is left.
pub fn retain_cookies(header: &[u8], keep: impl Fn(&str) -> bool) -> Option<String> {
    let v = String::from_utf8_lossy(header);
    let kept: Vec<&str> = v
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty() && keep(c.split_once('=').map_or(*c, |(k, _)| k)))
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tchar_is_the_rfc_list_and_alnum_and_builds_its_table() {
        for b in 0..=255u8 {
            let listed = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(tchar(b), listed, "{b:#04x}");
            assert_eq!(
                alnum_and(b"-.")[usize::from(b)],
                b.is_ascii_alphanumeric() || b"-.".contains(&b)
            );
        }
    }

    #[test]
    fn the_one_pass_check_agrees_with_the_searches_it_replaced() {
        use rand::{Rng, SeedableRng};
        // the definition before, with `memchr`
        let before = |bytes: &[u8]| {
            if memchr::memchr(b'\\', bytes).is_some() {
                return Err(BadRequest::AmbiguousPath);
            }
            Ok(memchr::memchr(b'%', bytes).is_some()
                || memchr::memchr_iter(b'/', bytes)
                    .any(|i| matches!(bytes.get(i + 1), Some(b'/' | b'.'))))
        };
        let (mut rng, alphabet) = (rand::rngs::StdRng::seed_from_u64(7), b"/.%\\a1");
        let mut seen = [0usize; 3];
        for _ in 0..20_000 {
            let len = rng.gen_range(0..40);
            let mut path = vec![b'/'];
            path.extend((0..len).map(|_| alphabet[rng.gen_range(0..alphabet.len())]));
            let raw = std::str::from_utf8(&path).unwrap();
            let got = normalize_path(raw);
            match before(&path) {
                Err(e) => {
                    seen[0] += 1;
                    assert_eq!(got, Err(e), "{raw}");
                }
                // a path that needs no work comes back as it was, borrowed
                Ok(false) => {
                    seen[1] += 1;
                    assert!(matches!(got, Ok(Cow::Borrowed(p)) if p == raw), "{raw}");
                }
                // one that does is rewritten (or refused: a bad escape, `..` above the root)
                Ok(true) => {
                    seen[2] += 1;
                    assert!(!matches!(got, Ok(Cow::Borrowed(_))), "{raw}");
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 500), "{seen:?}");
    }

    #[test]
    fn normalizes_paths() {
        let ok = |raw: &str, want: &str| assert_eq!(normalize_path(raw).unwrap(), want, "{raw}");
        ok("/premium/a", "/premium/a");
        ok("/%70remium/a", "/premium/a");
        ok("/premium//a", "/premium/a");
        ok("/x/../premium/./a", "/premium/a");
        ok("/a/b/", "/a/b/");
        ok("/a/%c3%a9", "/a/%C3%A9");
        ok("/a/..", "/");
        ok("/", "/");
        // raw UTF-8 comes out as it went in, also when the path needed work (fuzzing found it
        // re-encoded as Latin-1), and the result is a fixed point
        ok("/caf\u{e9}/%41", "/caf\u{e9}/A");
        ok("/caf\u{e9}//x/./", "/caf\u{e9}/x/");
        ok("/\u{1f600}/../b", "/b");
        for raw in ["/caf\u{e9}/%41", "/\u{e9}/.", "/a//\u{2603}"] {
            let once = normalize_path(raw).unwrap().into_owned();
            assert_eq!(normalize_path(&once).unwrap(), once, "{raw}");
        }
        let bad = |raw: &str, why| assert_eq!(normalize_path(raw), Err(why), "{raw}");
        bad("/..", BadRequest::EscapesRoot);
        bad("/a/../../b", BadRequest::EscapesRoot);
        bad("/a%2Fb", BadRequest::AmbiguousPath);
        bad("/a%5cb", BadRequest::AmbiguousPath);
        bad("/a%00", BadRequest::AmbiguousPath);
        bad("/a\\b", BadRequest::AmbiguousPath);
        bad("/a%zz", BadRequest::BadEscape);
        bad("/a%4", BadRequest::BadEscape);
        bad("a", BadRequest::NotOriginForm);
    }

    #[test]
    fn path_tokens() {
        assert_eq!(
            split_path_token("/eyJa.eyJb.sig/video/x.m3u8"),
            Some(("eyJa.eyJb.sig", None, "/video/x.m3u8"))
        );
        assert_eq!(
            split_path_token("/s-1.eyJa.eyJb.sig/v"),
            Some(("eyJa.eyJb.sig", Some("s-1"), "/v"))
        );
        assert_eq!(
            split_path_token("/eyJa.eyJb.sig"),
            Some(("eyJa.eyJb.sig", None, "/"))
        );
        assert_eq!(split_path_token("/news/a.b.c"), None);
        assert_eq!(split_path_token("/a.b.c/x"), None);
        assert_eq!(split_path_token("/.eyJa.b.c/x"), None);
    }

    #[test]
    fn every_byte_is_all_at_every_length_and_position() {
        let ok = |b: u8| b.is_ascii_lowercase();
        for len in 0..50 {
            let good = vec![b'q'; len];
            assert!(every_byte(&good, b'a', ok), "{len}");
            for at in 0..len {
                let mut bad = good.clone();
                bad[at] = b'Q';
                assert!(!every_byte(&bad, b'a', ok), "{len} {at}");
            }
        }
    }

    #[test]
    fn query_pairs_are_what_split_gives() {
        for q in [
            "",
            "&",
            "&&",
            "a",
            "a=1",
            "a=1&",
            "&a=1",
            "a=1&&b=2",
            "token=x%2Fy&b",
            "é=ü&ß",
        ] {
            assert_eq!(
                query_pairs(q).collect::<Vec<_>>(),
                q.split('&').collect::<Vec<_>>(),
                "{q:?}"
            );
            for pair in query_pairs(q) {
                assert_eq!(split_at_ascii(pair, b'='), pair.split_once('='), "{pair:?}");
                assert_eq!(split_at_ascii(q, b'&'), q.split_once('&'), "{q:?}");
            }
        }
        assert_eq!(query_param("b&token=x%2Fy", "token").unwrap(), "x/y");
        assert_eq!(query_param("token", "token").unwrap(), "");
        assert_eq!(strip_query_params("&token=1&&a=2&", &["token"]), "a=2");
        assert_eq!(keep_query_params("a=1&b=2&a&c", &["a"]), "a=1&a");
    }

    #[test]
    fn query_and_cookies() {
        assert_eq!(query_param("a=1&token=xyz&b=2", "token").unwrap(), "xyz");
        assert_eq!(query_param("tokenx=1", "token"), None);
        assert_eq!(
            strip_query_params("a=1&token=xyz&b=2", &["token"]),
            "a=1&b=2"
        );
        assert_eq!(strip_query_params("token=xyz", &["token"]), "");
        assert_eq!(strip_query_params("a=1", &["token"]), "a=1");
        assert_eq!(bearer_token(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"Basic abc"), None);
        assert_eq!(bearer_token(b"Bearez abc"), None);
        assert_eq!(bearer_token(b"Be\x01rer abc"), None);
        assert_eq!(bearer_token(b"BEARER abc"), Some(&b"abc"[..]));
        assert_eq!(bearer_token(b"BEARER\tabc"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer    "), None);
        assert_eq!(bearer_token(b"Bearerabc"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        // found as sent; a token that is not UTF-8 fails its verification (`Malformed`)
        assert_eq!(bearer_token(b"Bearer \xff\xfe"), Some(&b"\xff\xfe"[..]));
        assert_eq!(bearer_token(b"bEaReR a.b.c\r"), Some(&b"a.b.c"[..]));
        assert_eq!(
            cookie_value(b"a=1; token=t1; b=2", "token"),
            Some(&b"t1"[..])
        );
        assert_eq!(cookie_value(b"xtoken=1", "token"), None);
        assert_eq!(cookie_value(b"token", "token"), None);
        assert_eq!(cookie_value(b"token =1; token=2", "token"), Some(&b"2"[..]));
        assert_eq!(
            cookie_value(b" a=1 ;\ttoken=\"t2\" ; b", "token"),
            Some(&b"t2"[..])
        );
        assert_eq!(cookie_value(b"token=\"\"", "token"), Some(&b""[..]));
        assert_eq!(
            cookie_value(b"token=a=b;token=c", "token"),
            Some(&b"a=b"[..])
        );
        assert_eq!(cookie_value(b";;token=;", "token"), Some(&b""[..]));
        // another cookie's bytes (not UTF-8) do not hide the token; the first pair decides
        assert_eq!(cookie_value(b"x=\xff; token=t3", "token"), Some(&b"t3"[..]));
        assert_eq!(
            cookie_value(b"token=\xff; token=t4", "token"),
            Some(&b"\xff"[..])
        );
        assert_eq!(
            strip_cookies(b"a=1; token=t1; b=2", &["token"]).as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(strip_cookies(b"token=t1", &["token"]), None);
    }
}

//! What the connection-level hit path takes and what it leaves to the proxy.

use super::{parse, Parse};
use crate::http1::{Body, Refusal};

fn hit(raw: &str) -> super::HitRequest<'_> {
    match parse(raw.as_bytes()) {
        Parse::Hit(req, len) => {
            assert_eq!(len, raw.len(), "head length of {raw:?}");
            req
        }
        other => panic!("{raw:?} should be a hit candidate, got {other:?}"),
    }
}

fn proxied(raw: &str) {
    assert!(
        matches!(parse(raw.as_bytes()), Parse::Proxy { .. }),
        "{raw:?} must go to the proxy"
    );
}

fn refused(raw: &str, why: Refusal) {
    match parse(raw.as_bytes()) {
        Parse::Refuse(r) => assert_eq!(r, why, "{raw:?}"),
        other => panic!("{raw:?} must be refused ({why:?}), got {other:?}"),
    }
}

#[test]
fn plain_gets_and_heads_are_candidates() {
    let r = hit("GET /a/b?x=1&t=2 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: ua\r\n\r\n");
    assert!(!r.head);
    assert_eq!(
        (r.path, r.query, r.host),
        ("/a/b", "x=1&t=2", "Example.COM:8080")
    );
    let headers = crate::admission::Headers::List(&r.headers);
    assert_eq!(headers.first("user-agent"), Some(&b"ua"[..]));
    assert_eq!(headers.first("host"), Some(&b"Example.COM:8080"[..]));
    assert!(!r.close);

    let r = hit(
        "HEAD /x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer abc\r\ncookie: a=1\r\nCookie: b=2\r\n\
         connection: Keep-Alive, close\r\ncontent-length: 0\r\n\r\n",
    );
    assert!(r.head);
    assert_eq!(r.query, "");
    let headers = crate::admission::Headers::List(&r.headers);
    assert_eq!(headers.first("authorization"), Some(&b"Bearer abc"[..]));
    let cookies: Vec<&[u8]> = headers.all("cookie").collect();
    assert_eq!(cookies, vec![&b"a=1"[..], &b"b=2"[..]]);
    assert_eq!(r.headers.len(), 6, "every field kept, as sent");
    assert!(r.close);
}

#[test]
fn http_1_0_is_a_candidate_that_closes_unless_asked_to_keep_alive() {
    let r = hit("GET /a HTTP/1.0\r\nHost: h\r\n\r\n");
    assert!(r.close, "HTTP/1.0 closes by default");
    let r = hit("HEAD /a HTTP/1.0\r\nHost: h\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(!r.close && r.head);
    let r = hit("GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(!r.close, "HTTP/1.1 keeps the connection by default");
    // without Host, HTTP/1.0 is the proxy's
    proxied("GET /a HTTP/1.0\r\n\r\n");
}

#[test]
fn an_incomplete_head_waits_for_more() {
    assert!(matches!(parse(b""), Parse::Partial));
    assert!(matches!(
        parse(b"GET /a HTTP/1.1\r\nHost: h\r\n"),
        Parse::Partial
    ));
}

#[test]
fn pipelined_requests_are_taken_one_at_a_time() {
    let two = "GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n";
    match parse(two.as_bytes()) {
        Parse::Hit(r, len) => {
            assert_eq!(r.path, "/1");
            assert_eq!(&two[len..], "GET /2 HTTP/1.1\r\nHost: h\r\n\r\n");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn everything_else_goes_to_the_proxy() {
    for raw in [
        // methods, versions, targets
        "POST /a HTTP/1.1\r\nHost: h\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a HTTP/1.0\r\n\r\n",
        "GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        // what the proxy's cache answers differently
        "GET /a HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: h\r\nIf-None-Match: \"x\"\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: h\r\nIf-Modified-Since: Sat, 21 Nov 2026 10:00:00 GMT\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: h\r\nCache-Control: no-cache\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: h\r\nPragma: no-cache\r\n\r\n",
        // connection management
        "GET /a HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, x-hop\r\n\r\n",
        // two Authorization headers: which one counts is the proxy's business
        "GET /a HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n",
        // two X-Forwarded-For lines: read as one list by the proxy
        "GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: a\r\nX-Forwarded-For: b\r\n\r\n",
    ] {
        proxied(raw);
    }
    let post = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    match parse(post.as_bytes()) {
        Parse::Proxy { head, body } => assert_eq!((head, body), (post.len() - 5, Body::Length(5))),
        other => panic!("{other:?}"),
    }
}

#[test]
fn what_no_path_may_take_is_refused() {
    for (raw, why) in [
        ("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Refusal::Malformed),
        ("garbage\r\n\r\n", Refusal::Malformed),
        ("GET /a HTTP/1.1\nHost: h\n\n", Refusal::Malformed),
        ("GET /a HTTP/1.1\r\n\r\n", Refusal::BadHost),
        ("GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", Refusal::BadHost),
        ("GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n", Refusal::BadHost),
        ("GET /a HTTP/1.1\r\nHost: user@a\r\n\r\n", Refusal::BadHost),
        ("GET /a HTTP/1.1\r\nHost: \r\n\r\n", Refusal::BadHost),
        (
            "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
            Refusal::BodyNotAllowed,
        ),
        (
            "GET /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Refusal::BodyNotAllowed,
        ),
        (
            "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            Refusal::BadFraming,
        ),
    ] {
        refused(raw, why);
    }
}

#[test]
fn many_headers_are_fine_too_many_are_refused_many_cookies_go_to_the_proxy() {
    let many: String = (0..60).map(|i| format!("X-{i}: v\r\n")).collect();
    hit(&format!("GET /a HTTP/1.1\r\nHost: h\r\n{many}\r\n"));
    let too_many: String = (0..130).map(|i| format!("X-{i}: v\r\n")).collect();
    refused(
        &format!("GET /a HTTP/1.1\r\nHost: h\r\n{too_many}\r\n"),
        Refusal::HeadTooLarge,
    );
    let cookies: String = (0..9).map(|i| format!("Cookie: c{i}=v\r\n")).collect();
    proxied(&format!("GET /a HTTP/1.1\r\nHost: h\r\n{cookies}\r\n"));
}

#[test]
fn forwarding_headers_are_kept_for_the_viewer() {
    let r = hit("GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n\r\n");
    assert_eq!(r.forwarded_for, Some(&b"203.0.113.7"[..]));
    assert_eq!(r.forwarded_proto, Some(&b"https"[..]));
}

#[test]
fn plain_byte_is_the_plain_path_table() {
    use super::eligible::{plain_byte, plain_path, PLAIN_PATH_BYTES};
    for b in 0..=255u8 {
        assert_eq!(plain_byte(b), PLAIN_PATH_BYTES[usize::from(b)], "{b:#04x}");
    }
    assert!(plain_path(
        b"/premium/article?token=a.b-c_d~e%2F&x=(1)*+,;=:@!$'"
    ));
    for bad in [
        &b"/a b"[..],
        b"/a#b",
        b"/a\x7f",
        b"/\xc3\xa9",
        b"/a\\b",
        b"/a{b}",
    ] {
        assert!(!plain_path(bad), "{bad:?}");
    }
}

#[test]
fn an_http1_target_is_visible_ascii_without_a_fragment() {
    use super::eligible::visible_ascii;
    for b in 0..=255u8 {
        let expected = (0x21..=0x7e).contains(&b) && b != b'#';
        assert_eq!(visible_ascii(&[b'/', b, b'a']), expected, "{b:#04x}");
    }
    assert!(visible_ascii(
        format!("/p?token={}", "aB9-_.".repeat(50)).as_bytes()
    ));
    assert!(!visible_ascii(
        format!("/p?token={} ", "a".repeat(250)).as_bytes()
    ));
}

#[test]
fn a_host_is_taken_as_a_str_only_when_it_is_ascii() {
    use super::eligible::ascii_str;
    for b in 0..=255u8 {
        // every length around the word-at-a-time reads, the byte first, inside and last
        for len in [1, 7, 8, 9, 15, 16, 17, 31] {
            for at in [0, len / 2, len - 1] {
                let mut v = vec![b'a'; len];
                v[at] = b;
                let want = std::str::from_utf8(&v).ok().filter(|s| s.is_ascii());
                assert_eq!(ascii_str(&v), want, "{b:#04x} at {at} of {len}");
            }
        }
    }
    assert_eq!(ascii_str(b""), Some(""));
    assert_eq!(ascii_str("caf\u{e9}.test".as_bytes()), None);
}

#[test]
fn ages_are_written_in_decimal() {
    let mut digits = [0u8; 20];
    for n in [0, 1, 9, 10, 99, 100, 86_400, 1 << 32, u64::MAX] {
        assert_eq!(super::decimal(n, &mut digits), n.to_string().as_bytes());
    }
}

//! What the connection-level hit path takes and what it leaves to the proxy.

use super::{parse, Parse};

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
        matches!(parse(raw.as_bytes()), Parse::Proxy),
        "{raw:?} must go to the proxy"
    );
}

#[test]
fn plain_gets_and_heads_are_candidates() {
    let r = hit("GET /a/b?x=1&t=2 HTTP/1.1\r\nHost: Example.COM:8080\r\nUser-Agent: ua\r\n\r\n");
    assert!(!r.head);
    assert_eq!(
        (r.path, r.query, r.host),
        ("/a/b", "x=1&t=2", "Example.COM:8080")
    );
    assert_eq!(r.user_agent, b"ua");
    assert!(!r.close);

    let r = hit(
        "HEAD /x HTTP/1.1\r\nhost: h\r\nauthorization: Bearer abc\r\ncookie: a=1\r\nCookie: b=2\r\n\
         connection: Keep-Alive, close\r\ncontent-length: 0\r\n\r\n",
    );
    assert!(r.head);
    assert_eq!(r.query, "");
    assert_eq!(r.authorization, Some(&b"Bearer abc"[..]));
    assert_eq!(r.cookies, vec![&b"a=1"[..], &b"b=2"[..]]);
    assert!(r.close);
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
        "GET /a HTTP/1.0\r\nHost: h\r\n\r\n",
        "GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n",
        "GET /caf\u{e9} HTTP/1.1\r\nHost: h\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "garbage\r\n\r\n",
        // host
        "GET /a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: user@a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: \r\n\r\n",
        // bodies and framing
        "GET /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        "GET /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
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
    ] {
        proxied(raw);
    }
}

#[test]
fn too_many_headers_or_cookies_go_to_the_proxy() {
    let many: String = (0..60).map(|i| format!("X-{i}: v\r\n")).collect();
    proxied(&format!("GET /a HTTP/1.1\r\nHost: h\r\n{many}\r\n"));
    let cookies: String = (0..9).map(|i| format!("Cookie: c{i}=v\r\n")).collect();
    proxied(&format!("GET /a HTTP/1.1\r\nHost: h\r\n{cookies}\r\n"));
}

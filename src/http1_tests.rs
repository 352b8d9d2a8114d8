use super::*;

fn read(head: &str) -> Result<Option<(Body, usize)>, Refusal> {
    let mut slots = header_slots();
    match parse(head.as_bytes(), &mut slots)? {
        None => Ok(None),
        Some(h) => framing(&h.req).map(|b| Some((b, h.len))),
    }
}

fn body_of(head: &str) -> Result<Body, Refusal> {
    read(head).map(|r| r.expect("complete head").0)
}

#[test]
fn plain_requests_pass_with_their_one_reading() {
    let get = "GET /news/a?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
    assert_eq!(read(get), Ok(Some((Body::None, get.len()))));
    let with_rest = format!("{get}GET /next HTTP/1.1\r\n");
    assert_eq!(read(&with_rest), Ok(Some((Body::None, get.len()))));
    assert_eq!(
        body_of("POST /f HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"),
        Ok(Body::Length(12))
    );
    assert_eq!(
        body_of("PUT /f HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"),
        Ok(Body::Chunked)
    );
    assert_eq!(
        body_of("GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n"),
        Ok(Body::None)
    );
    assert_eq!(body_of("GET /a HTTP/1.0\r\n\r\n"), Ok(Body::None));
    assert_eq!(
        body_of("GET http://a:8080/x HTTP/1.1\r\nHost: a:8080\r\n\r\n"),
        Ok(Body::None)
    );
    assert_eq!(
        body_of("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ok(Body::None)
    );
    // one empty line before the request line is tolerated (RFC 9112 §2.2)
    assert_eq!(
        body_of("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ok(Body::None)
    );
}

#[test]
fn partial_heads_wait_for_more() {
    assert_eq!(read("GET /news/a HTTP/1.1\r\nHost: a\r\n"), Ok(None));
    assert_eq!(read("GET"), Ok(None));
    assert_eq!(read(""), Ok(None));
}

#[test]
fn bodies_on_bodyless_methods_are_refused() {
    for method in ["GET", "HEAD", "TRACE"] {
        for framing in ["Content-Length: 5", "Transfer-Encoding: chunked"] {
            let head = format!("{method} /a HTTP/1.1\r\nHost: a\r\n{framing}\r\n\r\n");
            assert_eq!(body_of(&head), Err(Refusal::BodyNotAllowed), "{head:?}");
        }
    }
    // content is allowed on DELETE and OPTIONS (RFC 9110 §9.3.5, §9.3.7)
    for method in ["DELETE", "OPTIONS", "POST", "PUT", "PATCH"] {
        let head = format!("{method} /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(body_of(&head), Ok(Body::Length(5)), "{head:?}");
    }
}

#[test]
fn ambiguous_framing_is_refused() {
    let cases = [
        "Content-Length: 5\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: +5",
        "Content-Length: -5",
        "Content-Length: 0x5",
        "Content-Length: 5,5",
        "Content-Length: 5 5",
        "Content-Length: ",
        "Content-Length: 1000000000000000000000",
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: gzip, chunked",
        "Transfer-Encoding: identity",
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
    ];
    for case in cases {
        let head = format!("POST /a HTTP/1.1\r\nHost: a\r\n{case}\r\n\r\n");
        assert_eq!(body_of(&head), Err(Refusal::BadFraming), "{case:?}");
    }
    assert_eq!(
        body_of("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Err(Refusal::BadFraming)
    );
}

#[test]
fn malformed_heads_are_refused() {
    let cases = [
        "GET /a HTTP/1.1\nHost: a\n\n",
        "GET /a HTTP/1.1\r\nHost: a\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nX-A: 1\n\r\n",
        "\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nX-Fold: a\r\n b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost : a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHo st: a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\rb\r\n\r\n",
        "GET /a HTTP/1.1\r\nX: \x00\r\nHost: a\r\n\r\n",
        "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET  /a HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/2.0\r\nHost: a\r\n\r\n",
        "GET a HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "G@T /a HTTP/1.1\r\nHost: a\r\n\r\n",
    ];
    for case in cases {
        assert_eq!(read(case), Err(Refusal::Malformed), "{case:?}");
    }
}

#[test]
fn host_must_be_one_plain_authority() {
    for bad in [
        "GET /a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a, b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: user@a\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: \r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a:\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a:123456\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a:8x\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: []\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: [::1]x\r\n\r\n",
        "GET /a HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        assert_eq!(read(bad), Err(Refusal::BadHost), "{bad:?}");
    }
    for good in [
        "a",
        "A.example.COM",
        "a-b_c.d:8080",
        "10.0.0.1:80",
        "[::1]",
        "[2001:db8::1]:443",
    ] {
        assert!(valid_host(good.as_bytes()), "{good}");
    }
}

#[test]
fn heads_too_large_are_refused() {
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    let head = format!("GET /a HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    assert_eq!(read(&head), Err(Refusal::HeadTooLarge));
    let long = format!(
        "GET /a HTTP/1.1\r\nHost: a\r\nX: {}\r\n",
        "v".repeat(MAX_HEAD)
    );
    assert_eq!(read(&long), Err(Refusal::HeadTooLarge));
    let complete_but_long = format!("{long}\r\n");
    assert_eq!(read(&complete_but_long), Err(Refusal::HeadTooLarge));
}

#[test]
fn refusal_labels_and_statuses() {
    let labels: Vec<&str> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
    let mut unique = labels.clone();
    unique.dedup();
    assert_eq!(labels.len(), unique.len());
    assert_eq!(Refusal::HeaderTimeout.status(), 408);
    assert_eq!(Refusal::HeadTooLarge.status(), 431);
    assert_eq!(Refusal::BodyNotAllowed.status(), 400);
}

#[test]
fn the_end_of_a_head_is_seen_exactly_when_it_parses() {
    let heads = [
        "GET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.1\r\n\r\n",
        "\r\n\r\nGET /a HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a HTTP/1.1\nHost: a\n\n",
        "GET /a HTTP/1.1\r\nHost: a\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\n\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "garbage\n\n",
    ];
    for head in heads {
        let bytes = head.as_bytes();
        for cut in 0..bytes.len() {
            let part = &bytes[..cut];
            let mut slots = header_slots();
            let partial = matches!(parse(part, &mut slots), Ok(None));
            if head_end_seen(part) {
                assert!(!partial, "{part:?}: end seen but the head is partial");
            }
        }
        assert!(head_end_seen(bytes), "{head:?}");
        let mut slots = header_slots();
        assert!(!matches!(parse(bytes, &mut slots), Ok(None)), "{head:?}");
    }
    assert!(!head_end_seen(b"\r\n\r\n"));
    assert!(!head_end_seen(b"GET /a HTTP/1.1\r\nHost: a\r\n"));
}

#[test]
fn raw_utf8_in_the_target_is_read_as_sent() {
    let head = "GET /caf\u{e9}/x HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut slots = header_slots();
    let h = parse(head.as_bytes(), &mut slots)
        .expect("parses")
        .expect("complete");
    assert_eq!(h.req.path, Some("/caf\u{e9}/x"));
}

#[test]
fn a_target_that_is_not_a_path_never_panics_on_multibyte_text() {
    // "lE0/café" cut at 7 bytes falls inside "é" (found by fuzzing)
    for target in [
        "lE0/caf\u{e9}/%41",
        "\u{e9}\u{e9}\u{e9}\u{e9}",
        "htt\u{e9}://x",
    ] {
        let head = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(read(&head), Err(Refusal::Malformed), "{target:?}");
    }
}

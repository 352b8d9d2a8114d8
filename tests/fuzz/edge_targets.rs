//! Fuzz target bodies for what the connection loop reads off the wire (issue 18): HTTP/1 request
//! heads and their framing (`tollgate::http1`, `tollgate::proxy::fast::parse`), chunked bodies
//! (`tollgate::http1::chunked`), PROXY protocol headers (`tollgate::app::proxy_protocol`) and
//! `X-Forwarded-For` chains (`tollgate::viewer`). Shared, like `targets.rs`, by the cargo-fuzz
//! binary `http1` and by the corpus replay test `tests/fuzz_corpora.rs`.
//!
//! Properties asserted (a failed one is a finding):
//! - a head is accepted only if it is complete, every line of it ends in CRLF, it carries at
//!   most one framing header and not both, and exactly one `Host` on HTTP/1.1;
//! - once the connection loop's cheap end-of-head scan says a head can be parsed, parsing it
//!   never says "incomplete" (the loop would refuse a valid request);
//! - a hit candidate has no body and an origin-form target; a proxied head's length is the
//!   head's;
//! - the chunked scanner gives the same answer however the body is cut into reads, and never
//!   ends a body past the bytes it was given;
//! - a PROXY header's length is within the input and stays the same when more bytes follow;
//!   "incomplete" never outlives the longest header;
//! - the viewer behind trusted proxies is the peer or an address written in the chain.

#![allow(dead_code)]

use std::net::IpAddr;

use tollgate::app::proxy_protocol::{self, Parsed};
use tollgate::cidr::Cidr;
use tollgate::http1::{self, chunked::Chunked, Body, Refusal};
use tollgate::proxy::fast::{self, Parse};
use tollgate::viewer::TrustedProxies;

/// `data[0] % 4` picks a part: 0 request heads, 1 chunked bodies, 2 PROXY headers,
/// 3 forwarding chains.
pub fn http1(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    match first % 4 {
        0 => heads(rest),
        1 => chunked(rest),
        2 => proxy_header(rest),
        _ => forwarded(rest),
    }
}

fn header_values<'a>(head: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    head.split(|&b| b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let colon = line.iter().position(|&b| b == b':')?;
            line[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| &line[colon + 1..])
        })
        .collect()
}

fn heads(data: &[u8]) {
    let parsed = fast::parse(data);
    if http1::head_end_seen(data) {
        assert!(
            !matches!(parsed, Parse::Partial),
            "the end of the head was seen, then the head did not parse: {:?}",
            String::from_utf8_lossy(data)
        );
    }
    let accepted = match &parsed {
        Parse::Hit(req, len) => {
            assert!(
                req.path.starts_with('/'),
                "hit with a target {:?}",
                req.path
            );
            assert!(!req.host.is_empty() && http1::valid_host(req.host.as_bytes()));
            Some((*len, Body::None))
        }
        Parse::Proxy { head, body } => Some((*head, *body)),
        Parse::Partial => None,
        Parse::Refuse(r) => {
            assert!(matches!(r.status(), 400 | 408 | 431), "{r:?}");
            assert_ne!(*r, Refusal::HeaderTimeout, "a parse never times out");
            assert_ne!(*r, Refusal::ProxyProtocol);
            None
        }
    };
    let Some((len, body)) = accepted else {
        return;
    };
    assert!(len <= data.len() && len <= http1::MAX_HEAD);
    let head = &data[..len];
    assert!(
        head.ends_with(b"\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(head)
    );
    for (i, &b) in head.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && head[i - 1] == b'\r', "bare LF accepted at {i}");
        }
    }
    let lengths = header_values(head, "content-length");
    let encodings = header_values(head, "transfer-encoding");
    assert!(
        lengths.len() <= 1 && encodings.len() <= 1,
        "repeated framing accepted"
    );
    assert!(
        lengths.is_empty() || encodings.is_empty(),
        "CL and TE accepted together"
    );
    match body {
        Body::None => {}
        Body::Length(n) => {
            assert!(n > 0);
            assert_eq!(lengths.len(), 1);
        }
        Body::Chunked => assert_eq!(encodings.len(), 1),
    }
    let hosts = header_values(head, "host");
    assert!(hosts.len() <= 1, "two Host fields accepted");
    let first_line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    if first_line.ends_with(b"HTTP/1.1") {
        assert_eq!(hosts.len(), 1, "HTTP/1.1 without Host accepted");
    }
    let method = first_line.split(|&b| b == b' ').next().unwrap_or_default();
    if matches!(method, b"GET" | b"HEAD" | b"TRACE") {
        assert_eq!(
            body,
            Body::None,
            "a body on {:?}",
            String::from_utf8_lossy(method)
        );
    }
}

fn chunked(data: &[u8]) {
    // the whole input at once, then in pieces cut where the input's bytes say
    let whole = Chunked::new().feed(data);
    let mut c = Chunked::new();
    let mut at = 0usize;
    let mut pieces = data.iter().map(|&b| usize::from(b % 7) + 1);
    let cut = loop {
        if at >= data.len() {
            break Ok(None);
        }
        let step = pieces.next().unwrap_or(1).min(data.len() - at);
        match c.feed(&data[at..at + step]) {
            Ok(Some(n)) => {
                assert!(n <= step);
                break Ok(Some(at + n));
            }
            Ok(None) => at += step,
            Err(e) => break Err(e),
        }
    };
    assert_eq!(whole, cut, "the answer depends on how the body was read");
    if let Ok(Some(end)) = whole {
        assert!(end <= data.len());
        let mut done = Chunked::new();
        assert_eq!(done.feed(&data[..end]), Ok(Some(end)));
        assert!(done.done());
        assert_eq!(done.feed(b"anything"), Ok(Some(0)));
    }
}

fn proxy_header(data: &[u8]) {
    match proxy_protocol::parse(data) {
        Parsed::Header { len, .. } => {
            assert!(len > 0 && len <= data.len());
            // what follows the header does not change it
            let mut more = data.to_vec();
            more.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            assert!(
                matches!(proxy_protocol::parse(&more), Parsed::Header { len: l, .. } if l == len),
                "a longer input changed the header"
            );
        }
        Parsed::Partial => assert!(data.len() < proxy_protocol::MAX_HEADER),
        Parsed::Invalid => {}
    }
}

fn forwarded(data: &[u8]) {
    let mut fields = data.split(|&b| b == b'\n');
    let trusted: Vec<Cidr> = fields
        .next()
        .map(|line| {
            String::from_utf8_lossy(line)
                .split(',')
                .filter_map(|c| Cidr::parse(c.trim()))
                .collect()
        })
        .unwrap_or_default();
    let chain: Vec<&[u8]> = fields.by_ref().take(4).collect();
    let proto = fields.next();
    let proxies = TrustedProxies::new(trusted);
    let peer: IpAddr = "127.0.0.1".parse().expect("ip");
    let viewer = proxies.viewer(Some(peer), false, || chain.clone(), || proto);
    let addr = viewer.addr.expect("a peer was given");
    if !proxies.trusts(peer) {
        assert_eq!(addr, peer);
        assert!(!viewer.https);
        return;
    }
    let written = chain
        .iter()
        .flat_map(|v| v.split(|&b| b == b','))
        .filter_map(|hop| std::str::from_utf8(hop).ok())
        .filter_map(|hop| hop.trim_matches([' ', '\t']).parse::<IpAddr>().ok())
        .any(|ip| ip.to_canonical() == addr);
    assert!(
        addr == peer || written,
        "viewer {addr} is neither the peer nor in the chain"
    );
}

//! Tests for `cloudfront.rs` (continued): the request helpers (signing parameters and
//! cookies stripped, wildcards, CIDR, CloudFront base64, epoch times) and the denial labels.

use super::*;

#[test]
fn strip_signing_params_keeps_other_params_verbatim() {
    assert!(matches!(
        strip_signing_params("a=1&b=%20x"),
        Cow::Borrowed("a=1&b=%20x")
    ));
    assert_eq!(strip_signing_params(""), "");
    assert_eq!(
        strip_signing_params(
            "Expires=1&b=%2F&Signature=x~y&a=&Key-Pair-Id=K&Hash-Algorithm=SHA256&c"
        ),
        "b=%2F&a=&c"
    );
    assert_eq!(
        strip_signing_params("Policy=abc&Signature=s&Key-Pair-Id=K"),
        ""
    );
    // Names are exact and case-sensitive, like CloudFront's.
    assert_eq!(
        strip_signing_params("expires=1&Expires2=3"),
        "expires=1&Expires2=3"
    );
    assert_eq!(strip_signing_params("Signature"), "");
    assert!(has_signing_params("x=1&Key-Pair-Id"));
    assert!(!has_signing_params("x=1&Key-Pair-Idx=2"));
}

#[test]
fn strip_signed_cookies_keeps_the_rest() {
    assert!(matches!(
        strip_signed_cookies("a=1; b=2"),
        Cow::Borrowed("a=1; b=2")
    ));
    assert_eq!(
        strip_signed_cookies("a=1; CloudFront-Policy=x; b=2;CloudFront-Signature=y"),
        "a=1; b=2"
    );
    assert_eq!(
        strip_signed_cookies("CloudFront-Key-Pair-Id=K; CloudFront-Hash-Algorithm=SHA256"),
        ""
    );
    assert_eq!(SIGNED_COOKIE_NAMES.len(), SIGNING_PARAMS.len());
}

#[test]
fn wildcards_follow_cloudfront_rules() {
    let m = |p: &str, s: &str| wildcard_match(p.as_bytes(), s.as_bytes());
    assert!(m("*", ""));
    assert!(m("*", "https://h/x?y=1"));
    assert!(m("https://h/a*", "https://h/a"));
    assert!(m("https://h/*.jpg", "https://h/x/y.jpg"));
    assert!(!m("https://h/*.jpg", "https://h/x/y.jpg?w=1"));
    assert!(m("https://h/*.jpg*", "https://h/x/y.jpg?w=1"));
    assert!(m("http*://h/*", "https://h/"));
    assert!(m("a?c", "abc") && !m("a?c", "ac") && !m("a?c", "abbc"));
    assert!(m("a*b*c", "aXbYbZc") && !m("a*b*c", "aXbYbZ"));
    assert!(m("**a**", "a") && !m("A", "a"));
    assert!(m("https://h/p?x=1", "https://h/p?x=1"));
    assert!(!m("", "a") && m("", ""));
}

#[test]
fn cidr_parsing_and_matching() {
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    let c = Cidr::parse("192.0.2.77/24").expect("cidr");
    assert!(c.contains(ip("192.0.2.1")) && !c.contains(ip("192.0.3.1")));
    assert!(c.contains(ip("::ffff:192.0.2.200")));
    assert!(Cidr::parse("0.0.0.0/0")
        .expect("all")
        .contains(ip("203.0.113.9")));
    assert!(!Cidr::parse("0.0.0.0/0")
        .expect("all")
        .contains(ip("2001:db8::1")));
    assert!(Cidr::parse("203.0.113.5")
        .expect("bare")
        .contains(ip("203.0.113.5")));
    assert!(!Cidr::parse("203.0.113.5/32")
        .expect("/32")
        .contains(ip("203.0.113.6")));
    let v6 = Cidr::parse("2001:db8::/32").expect("v6");
    assert!(v6.contains(ip("2001:db8:ffff::1")) && !v6.contains(ip("2001:db9::1")));
    assert!(Cidr::parse("::/0").expect("all6").contains(ip("::1")));
    for bad in [
        "192.0.2.0/33",
        "192.0.2.0/",
        "192.0.2.0/+8",
        "192.0.2.0/08",
        "1.2.3/8",
        "010.0.0.1/8",
        "2001:db8::/129",
        "host/8",
        "",
        "/8",
    ] {
        assert!(Cidr::parse(bad).is_none(), "{bad:?} parsed");
    }
}

#[test]
fn cloudfront_base64_is_strict() {
    assert_eq!(cf_b64_decode("AQID", 100), Ok(vec![1, 2, 3]));
    assert_eq!(
        cf_b64_decode("-~8_", 100),
        Ok(vec![0xfb, 0xff]),
        "+/8= in CloudFront form"
    );
    assert_eq!(cf_b64_decode("AQ__", 100), Ok(vec![1]));
    assert_eq!(cf_b64_decode("AQ", 100), Ok(vec![1]), "padding is optional");
    assert_eq!(
        cf_b64_decode("%41QID", 100),
        Ok(vec![1, 2, 3]),
        "percent-encoded"
    );
    for bad in ["", "AQ==", "+/8A", "AQ I", "AR__", "A", "%ZZ", "AQID\n"] {
        assert_eq!(
            cf_b64_decode(bad, 100),
            Err(SignedDenial::Malformed),
            "{bad:?}"
        );
    }
    assert_eq!(
        cf_b64_decode("AQID", 3),
        Err(SignedDenial::Malformed),
        "too long"
    );
}

#[test]
fn epoch_times_are_plain_digits() {
    assert_eq!(parse_epoch("2000000000"), Ok(2_000_000_000));
    for bad in [
        "",
        "-1",
        "+1",
        "1.0",
        "1e9",
        " 1",
        "99999999999999999999999",
    ] {
        assert_eq!(parse_epoch(bad), Err(SignedDenial::Malformed), "{bad:?}");
    }
}

#[test]
fn denial_labels_are_unique_snake_case() {
    let labels: BTreeSet<&str> = SignedDenial::ALL.iter().map(|d| d.as_str()).collect();
    assert_eq!(labels.len(), SignedDenial::ALL.len());
    for l in labels {
        assert!(
            l.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{l}"
        );
    }
    assert_eq!(
        SignedDenial::BadHashAlgorithm.to_string(),
        "bad_hash_algorithm"
    );
}

#[test]
fn key_set_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<SignedKeys>();
    assert_send_sync::<SignedGrant>();
}

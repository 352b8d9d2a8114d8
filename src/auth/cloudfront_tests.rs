//! Tests for `auth::cloudfront`. The vectors are minted by an independent
//! implementation (botocore's `CloudFrontSigner` + `cryptography`, see
//! `tests/fixtures/cloudfront/mint.py`) and verified here with an injected clock.

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::*;

const VECTORS: &str = include_str!("../../tests/fixtures/cloudfront/vectors.json");

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudfront")
}

fn vectors() -> Value {
    serde_json::from_str(VECTORS).expect("vectors.json is valid JSON")
}

/// The key set the vectors were minted for, loaded from the PEM files on disk.
fn fixture_keys() -> SignedKeys {
    let v = vectors();
    let entries: Vec<(String, PathBuf)> = v["keys"]
        .as_object()
        .expect("keys object")
        .iter()
        .map(|(id, file)| {
            (
                id.clone(),
                fixture_dir().join(file.as_str().expect("file name")),
            )
        })
        .collect();
    SignedKeys::load(entries).expect("fixture keys load")
}

/// The vector named `name`.
fn case<'v>(v: &'v Value, name: &str) -> &'v Value {
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("vector {name}"))
}

fn str_field<'a>(case: &'a Value, name: &str) -> &'a str {
    case[name]
        .as_str()
        .unwrap_or_else(|| panic!("{}: missing {name}", case["name"]))
}

/// Run one vector; `Ok(())` if the outcome is what the vector expects.
fn run_case(case: &Value, keys: &SignedKeys) -> Result<(), String> {
    let name = str_field(case, "name");
    let cookies: Vec<&str> = case["cookies"]
        .as_array()
        .expect("cookies array")
        .iter()
        .map(|c| c.as_str().expect("cookie string"))
        .collect();
    let client_ip = case["client_ip"]
        .as_str()
        .map(|ip| ip.parse::<IpAddr>().expect("client_ip"));
    let req = SignedRequest {
        scheme: str_field(case, "scheme"),
        host: str_field(case, "host"),
        path: str_field(case, "path"),
        query: str_field(case, "query"),
        cookie_headers: &cookies,
        client_ip,
    };
    let now = case["now"].as_u64().expect("now");
    let expect = str_field(case, "expect");
    let outcome = verify(&req, keys, now);
    let got = match &outcome {
        Ok(_) => "ok",
        Err(denial) => denial.as_str(),
    };
    if got != expect {
        return Err(format!("{name}: expected {expect}, got {got}"));
    }
    if let Ok(grant) = outcome {
        if let Some(key) = case["key"].as_str() {
            if &*grant.key_pair_id != key {
                return Err(format!("{name}: key {} != {key}", grant.key_pair_id));
            }
        }
        if let Some(source) = case["source"].as_str() {
            let want = if source == "url" {
                SignedSource::Url
            } else {
                SignedSource::Cookie
            };
            if grant.source != want {
                return Err(format!("{name}: source {:?} != {source}", grant.source));
            }
        }
        if let Some(exp) = case["expires"].as_u64() {
            if grant.expires != exp {
                return Err(format!("{name}: expires {} != {exp}", grant.expires));
            }
        }
        if grant.not_before != case["not_before"].as_u64() {
            return Err(format!("{name}: not_before {:?}", grant.not_before));
        }
        if grant.expires <= now {
            return Err(format!(
                "{name}: granted with expires {} <= now",
                grant.expires
            ));
        }
    }
    if let Some(stripped) = case["stripped_query"].as_str() {
        let got = strip_signing_params(req.query);
        if got != stripped {
            return Err(format!("{name}: stripped query {got:?} != {stripped:?}"));
        }
    }
    Ok(())
}

#[test]
fn botocore_vectors_accept_and_deny_exactly() {
    let v = vectors();
    let keys = fixture_keys();
    let cases = v["cases"].as_array().expect("cases");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run_case(c, &keys).err())
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(cases.len(), 110, "vector count changed; update this test");

    // The vectors exercise every denial and every key type and digest.
    let expected: BTreeSet<&str> = cases.iter().map(|c| str_field(c, "expect")).collect();
    // (Throttled comes from the failed-credential budget, not from a request: see
    // `a_spent_budget_refuses_only_unremembered_signatures`)
    for denial in SignedDenial::ALL {
        if denial != SignedDenial::Throttled {
            assert!(expected.contains(denial.as_str()), "no vector for {denial}");
        }
    }
    let accepted = cases.iter().filter(|c| c["expect"] == "ok").count();
    let cookie_ok = cases
        .iter()
        .filter(|c| c["expect"] == "ok" && c["source"] == "cookie")
        .count();
    assert!(
        accepted >= 30 && cookie_ok >= 4,
        "{accepted} accepted, {cookie_ok} by cookie"
    );
}

#[test]
fn vectors_cover_every_key_and_digest() {
    let v = vectors();
    let keys = fixture_keys();
    let mut seen = HashSet::new();
    for case in v["cases"].as_array().expect("cases") {
        if case["expect"] != "ok" {
            continue;
        }
        let cookies: Vec<&str> = case["cookies"]
            .as_array()
            .expect("cookies")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let req = SignedRequest {
            scheme: str_field(case, "scheme"),
            host: str_field(case, "host"),
            path: str_field(case, "path"),
            query: str_field(case, "query"),
            cookie_headers: &cookies,
            client_ip: case["client_ip"].as_str().and_then(|s| s.parse().ok()),
        };
        let grant = verify(&req, &keys, v["now"].as_u64().expect("now")).expect("accepted");
        let kind = keys.get(&grant.key_pair_id).expect("key").kind();
        let alg = matches!(kind, SignedKeyKind::EcdsaP256);
        seen.insert((alg, grant.hash, grant.policy, grant.source));
    }
    for ecdsa in [false, true] {
        for hash in [HashAlgorithm::Sha1, HashAlgorithm::Sha256] {
            for policy in [PolicyKind::Canned, PolicyKind::Custom] {
                assert!(
                    seen.contains(&(ecdsa, hash, policy, SignedSource::Url)),
                    "no accepted URL vector for ecdsa={ecdsa} {hash:?} {policy:?}"
                );
            }
        }
    }
    assert!(seen
        .iter()
        .any(|s| s.3 == SignedSource::Cookie && s.2 == PolicyKind::Canned));
    assert!(seen
        .iter()
        .any(|s| s.3 == SignedSource::Cookie && s.0 && s.1 == HashAlgorithm::Sha256));
}

#[test]
fn canned_policy_bytes_match_botocore() {
    let v = vectors();
    let samples = v["canned_policy_samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 3);
    for s in samples {
        let url = str_field(s, "url");
        let exp = s["expires"].as_u64().expect("expires");
        assert_eq!(
            canned_policy(url, exp),
            str_field(s, "policy"),
            "url {url:?}"
        );
    }
}

#[test]
fn empty_key_set_denies_valid_signatures() {
    let v = vectors();
    let case = case(&v, "canned_rsa_sha1");
    assert!(run_case(case, &fixture_keys()).is_ok());
    let err = run_case(case, &SignedKeys::empty()).unwrap_err();
    assert!(err.contains("got unknown_key"), "{err}");
}

#[test]
fn remembered_signatures_change_no_verdict() {
    let v = vectors();
    let keys = fixture_keys();
    let cases = v["cases"].as_array().expect("cases");
    assert_eq!(keys.remembered(), 0);
    for pass in ["first (verify)", "second (remembered)"] {
        let failures: Vec<String> = cases
            .iter()
            .filter_map(|c| run_case(c, &keys).err())
            .collect();
        assert!(failures.is_empty(), "{pass} pass: {failures:?}");
    }
    let remembered = keys.remembered();
    assert!(remembered >= 30, "only {remembered} signatures remembered");
    // A remembered URL with one signature character changed is verified afresh, and fails.
    let mut case = case(&v, "canned_rsa_sha1").clone();
    let query = str_field(&case, "query").to_string();
    let i = query.find("Signature=").expect("signature") + "Signature=".len();
    let flipped = if &query[i..i + 1] == "A" { "B" } else { "A" };
    case["query"] = format!("{}{flipped}{}", &query[..i], &query[i + 1..]).into();
    case["expect"] = "bad_signature".into();
    run_case(&case, &keys).unwrap();
    assert_eq!(
        keys.remembered(),
        remembered,
        "failures are never remembered"
    );
    // A reloaded key set remembers nothing.
    assert_eq!(fixture_keys().remembered(), 0);
}

#[test]
fn a_spent_budget_refuses_only_unremembered_signatures() {
    let v = vectors();
    let keys = fixture_keys();
    let case = case(&v, "canned_rsa_sha1");
    let cookies: Vec<&str> = Vec::new();
    let req = SignedRequest {
        scheme: str_field(case, "scheme"),
        host: str_field(case, "host"),
        path: str_field(case, "path"),
        query: str_field(case, "query"),
        cookie_headers: &cookies,
        client_ip: None,
    };
    let now = case["now"].as_u64().expect("now");
    let asked = std::cell::Cell::new(0);
    let refuse = || {
        asked.set(asked.get() + 1);
        false
    };
    // not remembered yet: the budget is asked, and refuses
    assert_eq!(
        verify_gated(&req, &keys, now, &refuse).err(),
        Some(SignedDenial::Throttled)
    );
    assert_eq!(asked.get(), 1);
    // verified once (budget allows), then remembered: a spent budget is never even asked
    assert!(verify_gated(&req, &keys, now, &|| true).is_ok());
    assert!(verify_gated(&req, &keys, now, &refuse).is_ok());
    assert_eq!(asked.get(), 1);
    // a request that fails before any signature check is not throttled
    let bare = SignedRequest { query: "", ..req };
    assert_eq!(
        verify_gated(&bare, &keys, now, &refuse).err(),
        Some(SignedDenial::Missing)
    );
}

#[test]
fn expiry_follows_the_injected_clock() {
    let v = vectors();
    let keys = fixture_keys();
    let mut case = case(&v, "custom_date_greater_than_and_ip").clone();
    // DateGreaterThan = 1_800_000_000, DateLessThan = 2_000_000_000.
    for (now, expect) in [
        (1_800_000_000u64, "not_yet_valid"),
        (1_800_000_001, "ok"),
        (1_999_999_999, "ok"),
        (2_000_000_000, "expired"),
    ] {
        case["now"] = now.into();
        case["expect"] = expect.into();
        run_case(&case, &keys).unwrap_or_else(|e| panic!("now={now}: {e}"));
    }
}

#[test]
fn key_files_load_with_their_types() {
    let keys = fixture_keys();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        keys.key_pair_ids().collect::<Vec<_>>(),
        ["K2JCJMDEHXQW5F", "KECDSAP256EXAMPLE", "KPKCS1RSAEXAMPLE"]
    );
    let rsa = SignedKeyKind::Rsa { bits: 2048 };
    assert_eq!(keys.get("K2JCJMDEHXQW5F").expect("spki").kind(), rsa);
    assert_eq!(keys.get("KPKCS1RSAEXAMPLE").expect("pkcs1").kind(), rsa);
    assert_eq!(
        keys.get("KECDSAP256EXAMPLE").expect("ec").kind(),
        SignedKeyKind::EcdsaP256
    );
    assert!(
        keys.get("k2jcjmdehxqw5f").is_none(),
        "ids are case-sensitive"
    );
}

#[test]
fn key_load_errors_are_all_reported_with_id_and_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    };
    let spki = std::fs::read_to_string(fixture_dir().join("rsa_spki.pem")).expect("spki");
    let private = write(
        "private.pem",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let cert = write(
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    let two = write("two.pem", &format!("{spki}{spki}"));
    let garbage = write("garbage.pem", "not a key at all\n");
    let entries: Vec<(&str, PathBuf)> = vec![
        ("KP384", fixture_dir().join("bad_ec_p384.pem")),
        ("KRSA1024", fixture_dir().join("bad_rsa_1024.pem")),
        ("KMISSING", dir.path().join("nope.pem")),
        ("KPRIVATE", private),
        ("KCERT", cert),
        ("KTWO", two),
        ("KGARBAGE", garbage),
        ("bad id!", fixture_dir().join("rsa_spki.pem")),
        ("KGOOD", fixture_dir().join("ec_p256.pem")),
    ];
    let errors: Vec<String> = SignedKeys::check(entries.clone())
        .iter()
        .map(ToString::to_string)
        .collect();
    let expect = [
        ("KP384", "P-256"),
        ("KRSA1024", "1024 bits"),
        ("KMISSING", "cannot read"),
        ("KPRIVATE", "private key"),
        ("KCERT", "openssl x509 -pubkey"),
        ("KTWO", "2 PEM blocks"),
        ("KGARBAGE", "no PEM block"),
        ("bad id!", "ASCII letters"),
    ];
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
    for ((id, needle), msg) in expect.iter().zip(&errors) {
        assert!(
            msg.contains(&format!("{id:?}")) && msg.contains(needle),
            "{msg}"
        );
    }
    assert!(errors[0].contains("bad_ec_p384.pem"), "{}", errors[0]);
    // `load` fails on the first problem; without the bad entries it loads.
    assert!(SignedKeys::load(entries.clone()).is_err());
    let good = SignedKeys::load(entries.into_iter().filter(|e| e.0 == "KGOOD")).expect("load");
    assert_eq!(good.len(), 1);
}

#[test]
fn duplicate_key_pair_ids_are_refused() {
    let pem = std::fs::read_to_string(fixture_dir().join("ec_p256.pem")).expect("pem");
    let a = SignedKey::from_pem("KDUP", &pem).expect("key");
    let err = SignedKeys::from_keys([a.clone(), a]).unwrap_err();
    assert!(err.to_string().contains("configured twice"), "{err}");
    let path = fixture_dir().join("ec_p256.pem");
    let errs = SignedKeys::check([("KDUP", &path), ("KDUP", &path)]);
    assert_eq!(errs.len(), 1, "{errs:?}");
}

#[test]
fn off_curve_ec_point_is_refused_at_load() {
    let pem = std::fs::read_to_string(fixture_dir().join("ec_p256.pem")).expect("pem");
    let mut der = crate::auth::pem::parse_pem(&pem).expect("pem")[0]
        .der
        .clone();
    let last = der.len() - 1;
    der[last] ^= 1; // y no longer matches x
    let bad = crate::auth::pem::encode_pem("PUBLIC KEY", &der);
    let err = SignedKey::from_pem("KEC", &bad).unwrap_err().to_string();
    assert!(err.contains("not a valid P-256 public key"), "{err}");
}

#[test]
fn garbage_requests_never_panic() {
    let keys = fixture_keys();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let pieces = [
        "Expires=",
        "Policy=",
        "Signature=",
        "Key-Pair-Id=",
        "Hash-Algorithm=",
        "&",
        "=",
        "%",
        "%7E",
        "~",
        "_",
        "-",
        "K2JCJMDEHXQW5F",
        "SHA256",
        "eyJTdGF0ZW1lbnQiOltdfQ__",
        "\u{e9}",
        "CloudFront-Policy=",
        "CloudFront-Signature=",
        "; ",
        "\"",
        "2000000000",
        "AAAA",
        "*",
    ];
    for _ in 0..3000 {
        let mut q = String::new();
        let mut c = String::new();
        for _ in 0..(next() % 12) {
            q.push_str(pieces[(next() % pieces.len() as u64) as usize]);
            c.push_str(pieces[(next() % pieces.len() as u64) as usize]);
        }
        let cookies = [c.as_str()];
        let req = SignedRequest {
            scheme: "https",
            host: "h",
            path: "/p",
            query: &q,
            cookie_headers: &cookies,
            client_ip: None,
        };
        // random bytes never make a signature of the fixture keys: every request is refused
        let verdict = verify(&req, &keys, 1_900_000_000);
        assert!(
            verdict.is_err(),
            "garbage accepted: query {q:?}, cookie {c:?}"
        );
        // what the cache key and the origin see carries no signing parameter or cookie
        let stripped = strip_signing_params(&q);
        assert!(
            !has_signing_params(&stripped),
            "{q:?} kept signing parameters: {stripped:?}"
        );
        let cookie = strip_signed_cookies(&c);
        let names = stripped_cookie_names(&cookie);
        assert!(
            !names
                .iter()
                .any(|n| SIGNED_COOKIE_NAMES.contains(&n.as_str())),
            "{c:?} kept a signed cookie: {cookie:?}"
        );
    }
}

/// The cookie names of a `Cookie` header value.
fn stripped_cookie_names(header: &str) -> Vec<String> {
    header
        .split(';')
        .filter_map(|c| c.split_once('=').map(|(k, _)| k.trim().to_string()))
        .collect()
}

#[test]
fn a_granted_url_is_remembered_and_its_clock_and_address_checked_again() {
    let v = vectors();
    let keys = fixture_keys();
    let case = case(&v, "custom_date_greater_than_and_ip");
    // DateGreaterThan 1_800_000_000, DateLessThan 2_000_000_000, IpAddress 192.0.2.0/24
    let cookies: Vec<&str> = Vec::new();
    let req = |ip: &str| SignedRequest {
        scheme: str_field(case, "scheme"),
        host: str_field(case, "host"),
        path: str_field(case, "path"),
        query: str_field(case, "query"),
        cookie_headers: &cookies,
        client_ip: Some(ip.parse().expect("ip")),
    };
    let never = || -> bool { panic!("a remembered URL is not verified again") };
    let outcome = |ip: &str, now: u64| match verify_gated(&req(ip), &keys, now, &never) {
        Ok(_) => "ok",
        Err(d) => d.as_str(),
    };
    assert!(verify(&req("192.0.2.77"), &keys, 1_900_000_000).is_ok());
    assert_eq!(keys.granted_urls(), 1);
    let signatures = keys.remembered();
    for (ip, now, expect) in [
        ("192.0.2.78", 1_900_000_000, "ok"),
        ("198.51.100.1", 1_900_000_000, "wrong_ip"),
        ("192.0.2.77", 1_800_000_000, "not_yet_valid"),
        ("192.0.2.77", 2_000_000_000, "expired"),
    ] {
        assert_eq!(outcome(ip, now), expect, "{ip} at {now}");
    }
    assert_eq!(
        keys.remembered(),
        signatures,
        "answered from the grant alone"
    );
    // each part of the URL is in the digest: a changed one is checked in full
    for (scheme, host, path) in [
        ("http", str_field(case, "host"), str_field(case, "path")),
        ("https", "other.example", str_field(case, "path")),
        ("https", str_field(case, "host"), "/vod/a.m3u8"),
    ] {
        let other = SignedRequest {
            scheme,
            host,
            path,
            ..req("192.0.2.77")
        };
        assert_eq!(
            verify(&other, &keys, 1_900_000_000).err(),
            Some(SignedDenial::WrongResource),
            "{scheme}://{host}{path}"
        );
    }
    let mut query = str_field(case, "query").to_string();
    query.push_str("&x=1");
    let longer = SignedRequest {
        query: &query,
        ..req("192.0.2.77")
    };
    assert!(verify(&longer, &keys, 1_900_000_000).is_ok());
    assert_eq!(keys.granted_urls(), 2, "another query is another entry");
    // a reloaded key set remembers nothing
    assert_eq!(fixture_keys().granted_urls(), 0);
}

#[path = "cloudfront_parts_tests.rs"]
mod parts;

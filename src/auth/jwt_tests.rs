//! Tests for `jwt.rs`: RFC 7515 known answers, every denial, and a
//! fuzz-style pass over garbled tokens.

use super::*;
use crate::auth::keys::{Alg, KeySet, VerifyKey};
use crate::auth::mint::{
    b64url, es256_fixed_to_der, jwks_json, sign_raw, sign_segments, SigningKey,
};
use serde_json::json;

const NOW: u64 = 1_700_000_000;

// RFC 7515 Appendix A.2 (RS256), key from A.2.1.
const A2_N: &str = "ofgWCuLjybRlzo0tZWJjNiuSfb4p4fAkd_wWJcyQoTbji9k0l8W26mPddxHmfHQp-Vaw-4qPCJrcS2mJPMEzP1Pt0Bm4d4QlL-yRT-SFd2lZS-pCgNMsD1W_YpRPEwOWvG6b32690r2jZ47soMZo9wGzjb_7OMg0LOL-bSf63kpaSHSXndS5z5rexMdbBYUsLA9e-KXBdQOS-UTo7WTBEMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6_I5IhlJH7aGhyxXFvUK-DWNmoudF8NAco9_h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXpoQ";
const A2_E: &str = "AQAB";
const A2_JWS: &str = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw";
// RFC 7515 Appendix A.3 (ES256), key from A.3.1.
const A3_X: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
const A3_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";
const A3_JWS: &str = "eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q";
const RFC_EXP: u64 = 1_300_819_380;

fn rfc_keys() -> KeySet {
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rfc-a2", "n": A2_N, "e": A2_E},
        {"kty": "EC", "kid": "rfc-a3", "crv": "P-256", "x": A3_X, "y": A3_Y},
    ]});
    KeySet::from_jwks_json(&jwks.to_string()).unwrap()
}

fn split_sig(token: &str) -> (&str, Vec<u8>) {
    let (input, sig) = token.rsplit_once('.').unwrap();
    (input, B64URL_STRICT.decode(sig).unwrap())
}

#[test]
fn rfc7515_a2_rs256_known_answer() {
    let keys = rfc_keys();
    let key = keys.get("rfc-a2").unwrap();
    assert_eq!(key.alg, Alg::RS256);
    let (input, sig) = split_sig(A2_JWS);
    assert!(key.verify(input.as_bytes(), &sig));
    assert!(!key.verify(b"eyJhbGciOiJSUzI1NiJ9.e30", &sig));
    let mut bad = sig.clone();
    bad[10] ^= 1;
    assert!(!key.verify(input.as_bytes(), &bad));
    // The same n, e built directly.
    let direct = VerifyKey::rs256(
        "x",
        &B64URL_STRICT.decode(A2_N).unwrap(),
        &B64URL_STRICT.decode(A2_E).unwrap(),
    )
    .unwrap();
    assert!(direct.verify(input.as_bytes(), &sig));
}

#[test]
fn rfc7515_a3_es256_known_answer() {
    let keys = rfc_keys();
    let key = keys.get("rfc-a3").unwrap();
    assert_eq!(key.alg, Alg::ES256);
    let (input, sig) = split_sig(A3_JWS);
    assert_eq!(sig.len(), 64);
    assert!(key.verify(input.as_bytes(), &sig));
    assert!(!key.verify(b"eyJhbGciOiJFUzI1NiJ9.e30", &sig));
    // The DER form of the very same valid signature is refused.
    assert!(!key.verify(input.as_bytes(), &es256_fixed_to_der(&sig)));
    assert!(!key.verify(input.as_bytes(), &sig[..63]));
}

#[test]
fn rfc7515_vectors_full_verify_with_injected_clock() {
    let keys = rfc_keys();
    let p = Policy::default();
    for (jws, kid) in [(A2_JWS, "rfc-a2"), (A3_JWS, "rfc-a3")] {
        let key = keys.get(kid).unwrap();
        let c = verify_with_key(jws, key, &p, RFC_EXP - 380).unwrap();
        assert_eq!(c.exp, RFC_EXP);
        assert_eq!(c.kid, kid);
        assert_eq!(c.key_id, key.id);
        assert!(c.subs.is_empty());
        // Boundary: valid at exactly exp + leeway, expired one second later.
        assert!(verify_with_key(jws, key, &p, RFC_EXP + 30).is_ok());
        assert_eq!(
            verify_with_key(jws, key, &p, RFC_EXP + 31),
            Err(Denial::Expired)
        );
        // Without a kid in the header, the kid-lookup path refuses it.
        assert_eq!(
            verify(jws, &keys, &p, RFC_EXP - 380),
            Err(Denial::Malformed)
        );
    }
    // Alg pinning holds in verify_with_key too: RS256 token, ES256 key.
    let es = keys.get("rfc-a3").unwrap();
    assert_eq!(
        verify_with_key(A2_JWS, es, &p, RFC_EXP - 380),
        Err(Denial::AlgMismatch)
    );
}

// ---- helpers for minted tokens ----

fn es(kid: &str) -> SigningKey {
    SigningKey::generate(Alg::ES256, kid).unwrap()
}

fn set(keys: &[&SigningKey]) -> KeySet {
    KeySet::from_jwks_json(&jwks_json(keys)).unwrap()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({"sub": "u1", "exp": NOW + 3600, "iat": NOW});
    if let (Some(m), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            m.insert(k.clone(), v.clone());
        }
    }
    c
}

fn header(key: &SigningKey) -> serde_json::Value {
    json!({"alg": key.alg.as_str(), "typ": "JWT", "kid": key.kid})
}

#[test]
fn valid_es256_and_rs256_tokens() {
    let e = es("e1");
    let r = SigningKey::generate(Alg::RS256, "r1").unwrap();
    let keys = set(&[&e, &r]);
    let p = Policy::default();
    for k in [&e, &r] {
        let t = k.sign(&claims(json!({"subs": ["premium"]}))).unwrap();
        let c = verify(&t, &keys, &p, NOW).unwrap();
        assert_eq!(c.kid, k.kid);
        assert_eq!(c.sub.as_deref(), Some("u1"));
        assert_eq!(c.subs, vec!["premium".to_string()]);
        assert_eq!(c.iat, Some(NOW));
        assert!(c.entitled(&["premium".to_string()]));
        assert!(!c.entitled(&["gold".to_string()]));
        assert!(c.entitled(&[]));
    }
}

#[test]
fn alg_none_is_refused() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let h = b64url(br#"{"alg":"none","kid":"k1"}"#);
    let c = b64url(claims(json!({})).to_string().as_bytes());
    assert_eq!(
        verify(&format!("{h}.{c}."), &keys, &p, NOW),
        Err(Denial::AlgMismatch)
    );
    // Even carrying a signature that is valid for the key.
    let t = sign_segments(&e, &h, &c).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::AlgMismatch));
    // Case variants are not the pinned alg either.
    let t = sign_raw(
        &e,
        &json!({"alg": "es256", "kid": "k1"}),
        &claims(json!({})),
    )
    .unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::AlgMismatch));
}

#[test]
fn hs256_with_public_key_as_secret_is_refused() {
    let e = es("k1");
    let keys = set(&[&e]);
    let point = keys.get("k1").unwrap().ec_point().unwrap().to_vec();
    for secret in [point, jwks_json(&[&e]).into_bytes()] {
        let h = b64url(br#"{"alg":"HS256","typ":"JWT","kid":"k1"}"#);
        let c = b64url(claims(json!({})).to_string().as_bytes());
        let input = format!("{h}.{c}");
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret),
            input.as_bytes(),
        );
        let t = format!("{input}.{}", b64url(mac.as_ref()));
        assert_eq!(
            verify(&t, &keys, &Policy::default(), NOW),
            Err(Denial::AlgMismatch)
        );
    }
}

#[test]
fn der_encoded_es256_signature_is_bad_signature() {
    let e = es("k1");
    let keys = set(&[&e]);
    let t = e.sign(&claims(json!({}))).unwrap();
    assert!(verify(&t, &keys, &Policy::default(), NOW).is_ok());
    let (input, sig) = split_sig(&t);
    let forged = format!("{input}.{}", b64url(&es256_fixed_to_der(&sig)));
    assert_eq!(
        verify(&forged, &keys, &Policy::default(), NOW),
        Err(Denial::BadSignature)
    );
}

#[test]
fn wrong_kid_and_alg_mismatch_under_kid() {
    let e = es("k1");
    let other = es("k2");
    let keys = set(&[&e]);
    let p = Policy::default();
    let t = other.sign(&claims(json!({}))).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::UnknownKid));
    assert_eq!(
        verify(&t, &KeySet::empty(), &p, NOW),
        Err(Denial::UnknownKid)
    );
    // An ES256 token naming a kid that is pinned to RS256.
    let r = SigningKey::generate(Alg::RS256, "k2").unwrap();
    assert_eq!(verify(&t, &set(&[&r]), &p, NOW), Err(Denial::AlgMismatch));
    // Missing or non-string kid is malformed.
    let t = sign_raw(&e, &json!({"alg": "ES256"}), &claims(json!({}))).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed));
    let t = sign_raw(&e, &json!({"alg": "ES256", "kid": 1}), &claims(json!({}))).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed));
}

#[test]
fn tampered_payload_or_signature() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let t = e.sign(&claims(json!({"subs": ["basic"]}))).unwrap();
    let parts: Vec<&str> = t.split('.').collect();
    let forged_payload = b64url(claims(json!({"subs": ["premium"]})).to_string().as_bytes());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(verify(&forged, &keys, &p, NOW), Err(Denial::BadSignature));
    let mut sig = B64URL_STRICT.decode(parts[2]).unwrap();
    sig[5] ^= 0x40;
    let forged = format!("{}.{}.{}", parts[0], parts[1], b64url(&sig));
    assert_eq!(verify(&forged, &keys, &p, NOW), Err(Denial::BadSignature));
    let forged = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(verify(&forged, &keys, &p, NOW), Err(Denial::BadSignature));
}

/// Flip the lowest bit of the last base64url character (a trailing bit when
/// the segment's byte length is not a multiple of 3).
fn set_trailing_bit(seg: &str) -> String {
    const ALPHA: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let (head, last) = seg.split_at(seg.len() - 1);
    let i = ALPHA.iter().position(|&c| c == last.as_bytes()[0]).unwrap();
    format!("{head}{}", ALPHA[i ^ 1] as char)
}

#[test]
fn strict_base64url() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let h = b64url(header(&e).to_string().as_bytes());
    let mut payload = claims(json!({})).to_string();
    while payload.len().is_multiple_of(3) {
        payload.push(' ');
    }
    let c = b64url(payload.as_bytes());
    assert!(verify(&sign_segments(&e, &h, &c).unwrap(), &keys, &p, NOW).is_ok());
    // Padding, validly signed over the padded text: still malformed.
    let padded = format!("{c}{}", "=".repeat((4 - c.len() % 4) % 4));
    assert_ne!(padded, c);
    let t = sign_segments(&e, &h, &padded).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed));
    // Non-canonical encoding (trailing bits set), validly signed.
    let t = sign_segments(&e, &h, &set_trailing_bit(&c)).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed));
    // Standard-alphabet characters and padding on the signature.
    let good = sign_segments(&e, &h, &c).unwrap();
    assert_eq!(
        verify(&format!("{good}="), &keys, &p, NOW),
        Err(Denial::Malformed)
    );
    let std_alpha = good.replace('-', "+").replace('_', "/");
    if std_alpha != good {
        assert_eq!(verify(&std_alpha, &keys, &p, NOW), Err(Denial::Malformed));
    }
    // Non-canonical signature: the ES256 signature is 64 bytes → 4 trailing bits.
    let (input, sig) = good.rsplit_once('.').unwrap();
    let t = format!("{input}.{}", set_trailing_bit(sig));
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed));
}

#[test]
fn segment_count_and_length_cap() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let t = e.sign(&claims(json!({}))).unwrap();
    for bad in [
        format!("{t}.{}", b64url(b"x")),
        format!("{t}."),
        t.rsplit_once('.').unwrap().0.to_string(),
        String::new(),
        "..".to_string(),
        "...".to_string(),
    ] {
        assert_eq!(
            verify(&bad, &keys, &p, NOW),
            Err(Denial::Malformed),
            "{bad}"
        );
    }
    let tight = Policy {
        max_token_bytes: t.len(),
        ..Policy::default()
    };
    assert!(verify(&t, &keys, &tight, NOW).is_ok());
    let tighter = Policy {
        max_token_bytes: t.len() - 1,
        ..Policy::default()
    };
    assert_eq!(verify(&t, &keys, &tighter, NOW), Err(Denial::TooLong));
    let huge = "a".repeat(DEFAULT_MAX_TOKEN_BYTES + 1);
    assert_eq!(verify(&huge, &keys, &p, NOW), Err(Denial::TooLong));
}

#[test]
fn forbidden_and_crit_headers() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    for name in ["jku", "jwk", "x5u", "x5c"] {
        for value in [json!("https://evil.example/jwks"), json!(null), json!({})] {
            let mut h = header(&e);
            h[name] = value;
            let t = sign_raw(&e, &h, &claims(json!({}))).unwrap();
            assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed), "{name}");
        }
    }
    let mut h = header(&e);
    h["crit"] = json!(["exp"]);
    let t = sign_raw(&e, &h, &claims(json!({}))).unwrap();
    assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::UnsupportedCrit));
}

#[test]
fn header_shape() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let c = b64url(claims(json!({})).to_string().as_bytes());
    let cases: [&[u8]; 6] = [
        br#"["ES256","k1"]"#,
        br#"{"alg":"ES256","kid":"k1","alg":"ES256"}"#,
        br#"{"alg":"ES256","kid":"k1""#,
        br#"{"alg":null,"kid":"k1"}"#,
        br#""ES256""#,
        b"\xff\xfe",
    ];
    for h in cases {
        let t = sign_segments(&e, &b64url(h), &c).unwrap();
        assert_eq!(verify(&t, &keys, &p, NOW), Err(Denial::Malformed));
    }
    // Leading whitespace and unknown members are fine.
    let t = sign_segments(&e, &b64url(br#"  {"kid":"k1","x":[1],"alg":"ES256"}"#), &c).unwrap();
    assert!(verify(&t, &keys, &p, NOW).is_ok());
}

#[test]
fn denial_labels_are_stable_and_unique() {
    let labels: Vec<&str> = Denial::ALL.iter().map(Denial::as_str).collect();
    assert_eq!(
        labels,
        [
            "malformed",
            "unknown_kid",
            "alg_mismatch",
            "bad_signature",
            "expired",
            "not_yet_valid",
            "wrong_issuer",
            "wrong_audience",
            "too_long",
            "unsupported_crit",
            "throttled"
        ]
    );
    assert_eq!(Denial::Expired.to_string(), "expired");
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz pass.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn garbled_tokens_never_panic_or_pass() {
    let e = es("k1");
    let keys = set(&[&e]);
    let p = Policy::default();
    let good = e.sign(&claims(json!({"subs": ["premium"]}))).unwrap();
    assert!(verify(&good, &keys, &p, NOW).is_ok());
    let alphabet = b"ABCxyz019-_.=+/ \x00{}\"";
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for i in 0..3000 {
        let mut t: Vec<u8> = good.as_bytes().to_vec();
        match i % 5 {
            0 => {
                let n = rng.below(6) + 1;
                for _ in 0..n {
                    let pos = rng.below(t.len());
                    t[pos] = alphabet[rng.below(alphabet.len())];
                }
            }
            1 => t.truncate(rng.below(t.len())),
            2 => {
                let pos = rng.below(t.len());
                t.insert(pos, alphabet[rng.below(alphabet.len())]);
            }
            3 => {
                let pos = rng.below(t.len());
                t.remove(pos);
            }
            _ => {
                let len = rng.below(300);
                t = (0..len).map(|_| (rng.next() >> 33) as u8).collect();
            }
        }
        let s = String::from_utf8_lossy(&t);
        let r = verify(&s, &keys, &p, NOW);
        if s != good {
            // A change confined to a segment's trailing bits cannot survive
            // strict decoding, so no mutation may verify.
            assert!(r.is_err(), "mutated token verified: {s}");
        }
    }
    // Random header/payload JSON with a valid signature: never panics.
    for i in 0..200u64 {
        let h = json!({"alg": "ES256", "kid": "k1", "n": i, "deep": [[[[{"a": i}]]]]});
        let c = json!({"exp": i.wrapping_mul(0x1234_5678_9abc), "subs": i, "nbf": -(i as i64)});
        let t = sign_raw(&e, &h, &c).unwrap();
        let _ = verify(&t, &keys, &p, NOW);
    }
}

#[path = "jwt_claims_tests.rs"]
mod claims;

//! Tokens minted in the test with real keys: valid ones and every kind of bad one the edge must
//! refuse. Claims carry the default [`ISSUER`](super::ISSUER) and [`AUDIENCE`](super::AUDIENCE).

use std::time::{SystemTime, UNIX_EPOCH};

use ring::hmac;
use serde_json::{json, Value};
use tollgate::auth::mint::{self, SigningKey};
use tollgate::auth::Alg;

use super::{AUDIENCE, ISSUER};

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A fresh ES256 key.
pub fn es256(kid: &str) -> SigningKey {
    SigningKey::generate(Alg::ES256, kid).expect("generate ES256 key")
}

/// A fresh RS256 (2048-bit) key.
pub fn rs256(kid: &str) -> SigningKey {
    SigningKey::generate(Alg::RS256, kid).expect("generate RS256 key")
}

/// Claims with `sub`, `subs`, the default issuer and audience, `iat = now`, `exp = now + ttl`.
pub fn claims(sub: &str, subs: &[&str], ttl_secs: i64) -> Value {
    let now = now();
    json!({
        "sub": sub,
        "subs": subs,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ttl_secs,
    })
}

/// Sign `claims` with `key` (header `{alg, typ, kid}`).
pub fn sign(key: &SigningKey, claims: &Value) -> String {
    key.sign(claims).expect("sign token")
}

/// A valid token for `sub` with subscriptions `subs`, living `ttl_secs`.
pub fn valid(key: &SigningKey, sub: &str, subs: &[&str], ttl_secs: i64) -> String {
    sign(key, &claims(sub, subs, ttl_secs))
}

/// A valid, entitled (`premium`) token.
pub fn subscriber(key: &SigningKey, sub: &str) -> String {
    valid(key, sub, &["premium"], 3600)
}

/// Expired an hour ago (far beyond the 30 s leeway).
pub fn expired(key: &SigningKey) -> String {
    let mut c = claims("late", &["premium"], 0);
    c["iat"] = json!(now() - 7200);
    c["exp"] = json!(now() - 3600);
    sign(key, &c)
}

/// `nbf` an hour in the future.
pub fn not_yet_valid(key: &SigningKey) -> String {
    let mut c = claims("early", &["premium"], 7200);
    c["nbf"] = json!(now() + 3600);
    sign(key, &c)
}

/// Signed by `key` but naming a kid the edge does not know.
pub fn wrong_kid(key: &SigningKey) -> String {
    let header = json!({"alg": key.alg.as_str(), "typ": "JWT", "kid": "no-such-kid"});
    mint::sign_raw(key, &header, &claims("kidless", &["premium"], 3600)).expect("sign")
}

/// Claims the kid of `key` but is signed by a different key of the same type.
pub fn forged(key: &SigningKey) -> String {
    let forger = SigningKey::generate(key.alg, &key.kid).expect("generate forger key");
    valid(&forger, "mallory", &["premium"], 3600)
}

/// `alg: none` with an empty signature, naming a real kid.
pub fn alg_none(key: &SigningKey) -> String {
    let h = mint::b64url(
        json!({"alg": "none", "typ": "JWT", "kid": key.kid})
            .to_string()
            .as_bytes(),
    );
    let p = mint::b64url(claims("mallory", &["premium"], 3600).to_string().as_bytes());
    format!("{h}.{p}.")
}

/// HS256 "signed" with the key's public JWK text as the HMAC secret (the classic key-confusion
/// attack: the verifier's own public key used as a shared secret).
pub fn hs256_with_public_key(key: &SigningKey) -> String {
    let secret = key.public_jwk().to_string();
    let h = mint::b64url(
        json!({"alg": "HS256", "typ": "JWT", "kid": key.kid})
            .to_string()
            .as_bytes(),
    );
    let p = mint::b64url(claims("mallory", &["premium"], 3600).to_string().as_bytes());
    let input = format!("{h}.{p}");
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
        input.as_bytes(),
    );
    format!("{input}.{}", mint::b64url(tag.as_ref()))
}

/// A genuine ES256 signature by `key`, but ASN.1 DER encoded instead of JWS's fixed `r||s`.
pub fn der_signature(key: &SigningKey) -> String {
    assert_eq!(key.alg, Alg::ES256, "DER signatures are an ECDSA thing");
    let h = mint::b64url(
        json!({"alg": "ES256", "typ": "JWT", "kid": key.kid})
            .to_string()
            .as_bytes(),
    );
    let p = mint::b64url(claims("der", &["premium"], 3600).to_string().as_bytes());
    let input = format!("{h}.{p}");
    let fixed = key.sign_bytes(input.as_bytes()).expect("sign");
    format!(
        "{input}.{}",
        mint::b64url(&mint::es256_fixed_to_der(&fixed))
    )
}

/// Valid except for the issuer.
pub fn wrong_issuer(key: &SigningKey) -> String {
    let mut c = claims("iss", &["premium"], 3600);
    c["iss"] = json!("https://evil.example.net");
    sign(key, &c)
}

/// Valid except for the audience.
pub fn wrong_audience(key: &SigningKey) -> String {
    let mut c = claims("aud", &["premium"], 3600);
    c["aud"] = json!("some-other-service");
    sign(key, &c)
}

/// Not a JWS at all.
pub fn malformed() -> String {
    "this.is-not.a-jwt".to_string()
}

/// A media token (access mode `token`): [`claims`] for sub `viewer` (no subscriptions) plus `sid`,
/// `paths` (no claim at all when empty) and `ip`, each only when given.
pub fn media(
    key: &SigningKey,
    sid: Option<&str>,
    paths: &[&str],
    ip: Option<&str>,
    ttl_secs: i64,
) -> String {
    let mut c = claims("viewer", &[], ttl_secs);
    if let Some(sid) = sid {
        c["sid"] = json!(sid);
    }
    if !paths.is_empty() {
        c["paths"] = json!(paths);
    }
    if let Some(ip) = ip {
        c["ip"] = json!(ip);
    }
    sign(key, &c)
}

/// An AWS Secure Media Delivery token under `kid` (HS256, as the AWS token service makes it),
/// as it goes in the first path segment. With `bind = Some((ip, sid))` it carries `intsig`
/// over the viewer address and the session id, and the segment is `<sid>.<token>`.
pub fn smd(
    kid: &str,
    secret: &str,
    paths: &[&str],
    ttl: i64,
    bind: Option<(&str, &str)>,
) -> String {
    let now = now();
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    // issued before it expires, also for an expired token
    let mut payload = json!({ "paths": paths, "exp": now + ttl, "iat": now.min(now + ttl - 60) });
    if let Some((ip, sid)) = bind {
        let tag = hmac::sign(&key, format!("{ip}:{sid}").as_bytes());
        payload["ip"] = Value::Bool(true);
        payload["ip_ver"] = json!(4);
        payload["ssn"] = Value::Bool(true);
        payload["intsig"] = Value::String(mint::b64url(tag.as_ref()));
    }
    let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid}).to_string();
    let input = format!(
        "{}.{}",
        mint::b64url(header.as_bytes()),
        mint::b64url(payload.to_string().as_bytes())
    );
    let sig = hmac::sign(&key, input.as_bytes());
    let token = format!("{input}.{}", mint::b64url(sig.as_ref()));
    match bind {
        Some((_, sid)) => format!("{sid}.{token}"),
        None => token,
    }
}

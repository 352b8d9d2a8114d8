//! RFC 7517 JWK Set parsing for [`KeySet`](crate::auth::keys::KeySet).
//!
//! Rules (SPEC §3): each key needs `kid` and `kty`; `EC` keys must be P-256
//! with 32-byte `x` and `y`, `RSA` keys need `n` (2048..=8192 bits) and `e`.
//! `alg`, if present, must be the one the key type implies (ES256 for EC,
//! RS256 for RSA) and is inferred from `kty` otherwise. `use`, if present,
//! must be `sig`; `key_ops`, if present, must include `verify`. Keys with a
//! `d` member (private material) and symmetric `oct` keys are refused, and so
//! are duplicate `kid`s. Every problem is reported with the key's index and kid.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

use crate::auth::key::{ec_point_key, rsa_key, Alg, KeyError, VerifyKey};

/// Key material in JWKs is base64url; tolerate padding, but not stray bits.
pub(crate) const JWK_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parse a JWK Set; the first problem is the error.
pub(crate) fn parse_jwks(json: &str, origin: &str) -> Result<Vec<VerifyKey>, KeyError> {
    let (keys, mut errors) = parse_jwks_collecting(json, origin);
    if errors.is_empty() {
        Ok(keys.into_iter().map(|(_, k)| k).collect())
    } else {
        Err(errors.swap_remove(0))
    }
}

/// Parse every JWK, returning the good ones (with their index) and all errors.
pub(crate) fn parse_jwks_collecting(
    json: &str,
    origin: &str,
) -> (Vec<(usize, VerifyKey)>, Vec<KeyError>) {
    let not_jwks = |reason: &str| KeyError::NotJwks {
        origin: origin.to_string(),
        reason: reason.to_string(),
    };
    let doc: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(source) => {
            let err = KeyError::Json {
                origin: origin.to_string(),
                source,
            };
            return (Vec::new(), vec![err]);
        }
    };
    let Some(obj) = doc.as_object() else {
        return (Vec::new(), vec![not_jwks("top level is not an object")]);
    };
    let Some(list) = obj.get("keys").and_then(Value::as_array) else {
        return (Vec::new(), vec![not_jwks("missing \"keys\" array")]);
    };
    let mut keys: Vec<(usize, VerifyKey)> = Vec::with_capacity(list.len());
    let mut errors = Vec::new();
    for (index, jwk) in list.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
        let bad = |reason: String| KeyError::BadJwk {
            origin: origin.to_string(),
            index,
            kid: kid.clone(),
            reason,
        };
        let result = match jwk.as_object() {
            None => Err("not a JSON object".to_string()),
            Some(obj) => jwk_to_key(obj),
        };
        match result {
            Err(reason) => errors.push(bad(reason)),
            Ok(key) => {
                if let Some((first, _)) = keys.iter().find(|(_, k)| k.kid == key.kid) {
                    errors.push(bad(format!(
                        "duplicate kid: key #{first} already uses it; every kid must be unique"
                    )));
                } else {
                    keys.push((index, key));
                }
            }
        }
    }
    (keys, errors)
}

fn jwk_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match obj.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("\"{name}\" must be a string")),
    }
}

fn jwk_bytes(obj: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk_str(obj, name)?.ok_or_else(|| format!("missing \"{name}\""))?;
    JWK_B64
        .decode(s)
        .map_err(|e| format!("\"{name}\" is not valid base64url: {e}"))
}

/// One JWK object to a key; the error is a human reason.
fn jwk_to_key(obj: &Map<String, Value>) -> Result<VerifyKey, String> {
    let kid = match jwk_str(obj, "kid")? {
        Some(k) if !k.is_empty() => k,
        _ => return Err("missing \"kid\" (every key needs a kid tokens can name)".to_string()),
    };
    if obj.contains_key("d") {
        return Err(
            "private key in a public key set (has \"d\"); publish only the public part".to_string(),
        );
    }
    let kty = jwk_str(obj, "kty")?.ok_or("missing \"kty\"")?;
    if let Some(u) = jwk_str(obj, "use")? {
        if u != "sig" {
            return Err(format!("\"use\" is {u:?}; only \"sig\" keys verify tokens"));
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops
            .as_array()
            .is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Err("\"key_ops\" does not include \"verify\"".to_string());
        }
    }
    let expected = match kty {
        "EC" => Alg::ES256,
        "RSA" => Alg::RS256,
        "oct" => return Err("symmetric (kty \"oct\") keys are not accepted".to_string()),
        other => return Err(format!("kty {other:?} is not supported (use EC or RSA)")),
    };
    if let Some(alg) = jwk_str(obj, "alg")? {
        match Alg::parse(alg) {
            None => return Err(format!("alg {alg:?} is not supported (ES256 or RS256)")),
            Some(a) if a != expected => {
                return Err(format!("alg {alg:?} does not match kty {kty:?}"))
            }
            Some(_) => {}
        }
    }
    match expected {
        Alg::ES256 => {
            match jwk_str(obj, "crv")? {
                Some("P-256") => {}
                Some(c) => return Err(format!("crv {c:?} is not supported (only P-256)")),
                None => return Err("missing \"crv\"".to_string()),
            }
            let x = jwk_bytes(obj, "x")?;
            let y = jwk_bytes(obj, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("P-256 \"x\" and \"y\" must each be 32 bytes".to_string());
            }
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ec_point_key(kid, &point)
        }
        Alg::RS256 => {
            let n = jwk_bytes(obj, "n")?;
            let e = jwk_bytes(obj, "e")?;
            rsa_key(kid, &n, &e)
        }
    }
}

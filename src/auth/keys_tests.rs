//! Tests for `keys.rs`: JWK Set rules, PEM formats (including the SPKI trap
//! for RSA), error messages, ids and carry-over.

use super::*;
use crate::auth::jwt::{verify, Policy};
use crate::auth::mint::{b64url, jwks_json, SigningKey};
use serde_json::json;

const NOW: u64 = 1_700_000_000;

fn es(kid: &str) -> SigningKey {
    SigningKey::generate(Alg::ES256, kid).unwrap()
}

fn rs(kid: &str) -> SigningKey {
    SigningKey::generate(Alg::RS256, kid).unwrap()
}

/// A scratch directory under the system temp dir, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-keys-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn err_of(jwk: serde_json::Value) -> String {
    let doc = json!({"keys": [jwk]}).to_string();
    KeySet::from_jwks_json(&doc).unwrap_err().to_string()
}

fn verifies(keys: &KeySet, signer: &SigningKey) -> bool {
    let t = signer.sign(&json!({"exp": NOW + 60})).unwrap();
    verify(&t, keys, &Policy::default(), NOW).is_ok()
}

#[test]
fn jwks_with_ec_and_rsa_keys() {
    let (e, r) = (es("e1"), rs("r1"));
    let keys = KeySet::from_jwks_json(&jwks_json(&[&r, &e])).unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.kids().collect::<Vec<_>>(), ["e1", "r1"]);
    assert_eq!(keys.get("e1").unwrap().alg, Alg::ES256);
    assert_eq!(keys.get("r1").unwrap().alg, Alg::RS256);
    assert!(keys.get("nope").is_none());
    assert!(verifies(&keys, &e) && verifies(&keys, &r));
    assert!(KeySet::empty().is_empty());
    assert!(KeySet::from_jwks_json(r#"{"keys": []}"#)
        .unwrap()
        .is_empty());
}

#[test]
fn alg_is_inferred_from_kty_and_extra_members_ignored() {
    let e = es("e1");
    let mut jwk = e.public_jwk();
    let m = jwk.as_object_mut().unwrap();
    m.remove("alg");
    m.remove("use");
    m.insert("x5t".into(), json!("ignored"));
    let keys = KeySet::from_jwks_json(&json!({"keys": [jwk]}).to_string()).unwrap();
    assert_eq!(keys.get("e1").unwrap().alg, Alg::ES256);
    assert!(verifies(&keys, &e));
}

#[test]
fn jwk_rule_violations_name_the_key() {
    let good = es("k1").public_jwk();
    let with = |name: &str, v: serde_json::Value| {
        let mut j = good.clone();
        j[name] = v;
        j
    };
    let without = |name: &str| {
        let mut j = good.clone();
        j.as_object_mut().unwrap().remove(name);
        j
    };
    let cases = [
        (without("kid"), "missing \"kid\""),
        (with("kid", json!("")), "missing \"kid\""),
        (without("kty"), "missing \"kty\""),
        (with("use", json!("enc")), "only \"sig\""),
        (with("alg", json!("RS256")), "does not match kty"),
        (with("alg", json!("HS256")), "not supported"),
        (with("alg", json!("none")), "not supported"),
        (with("d", json!("AAAA")), "private key in a public key set"),
        (with("kty", json!("oct")), "symmetric"),
        (with("kty", json!("OKP")), "not supported"),
        (with("crv", json!("P-384")), "only P-256"),
        (with("x", json!(b64url(&[1u8; 31]))), "32 bytes"),
        (with("y", json!("!!")), "not valid base64url"),
        (with("key_ops", json!(["encrypt"])), "key_ops"),
        (json!("a string"), "not a JSON object"),
    ];
    for (jwk, want) in cases {
        let msg = err_of(jwk.clone());
        assert!(msg.contains(want), "{jwk} → {msg} (wanted {want:?})");
        assert!(msg.contains("key #0"), "{msg}");
    }
    // The kid is quoted when there is one.
    assert!(err_of(with("use", json!("enc"))).contains("(kid \"k1\")"));
}

#[test]
fn rsa_rules() {
    let r = rs("r1");
    let jwk = r.public_jwk();
    let mut rsa_alg_on_ec = jwk.clone();
    rsa_alg_on_ec["alg"] = json!("ES256");
    assert!(err_of(rsa_alg_on_ec).contains("does not match kty"));
    // 1024-bit modulus.
    let small = openssl::rsa::Rsa::generate(1024).unwrap();
    let short = json!({"kty": "RSA", "kid": "short", "n": b64url(&small.n().to_vec()),
                       "e": b64url(&small.e().to_vec())});
    assert!(err_of(short).contains("1024 bits; at least 2048"));
    // Leading zero bytes on n are stripped, not counted.
    let mut n = vec![0u8, 0u8];
    n.extend(crate::auth::pem::strip_leading_zeros(
        &B64URL_DECODE.decode(jwk["n"].as_str().unwrap()).unwrap(),
    ));
    let padded = json!({"kty": "RSA", "kid": "r1", "n": b64url(&n), "e": jwk["e"]});
    let keys = KeySet::from_jwks_json(&json!({"keys": [padded]}).to_string()).unwrap();
    assert!(verifies(&keys, &r));
    // Even exponent, private members.
    let mut even = jwk.clone();
    even["e"] = json!(b64url(&[1, 0, 0]));
    assert!(err_of(even).contains("exponent"));
    let mut private = jwk.clone();
    private["d"] = json!("AQAB");
    assert!(err_of(private).contains("private key"));
}

use crate::auth::jwks::JWK_B64 as B64URL_DECODE;
use base64::Engine;

#[test]
fn jwks_document_errors() {
    let bad_json = KeySet::from_jwks_json("{").unwrap_err();
    assert!(matches!(bad_json, KeyError::Json { .. }));
    for doc in ["[]", "{}", r#"{"keys": {}}"#] {
        assert!(matches!(
            KeySet::from_jwks_json(doc).unwrap_err(),
            KeyError::NotJwks { .. }
        ));
    }
    let (a, b) = (es("dup"), es("dup"));
    let doc = json!({"keys": [a.public_jwk(), b.public_jwk()]}).to_string();
    let msg = KeySet::from_jwks_json(&doc).unwrap_err().to_string();
    assert!(
        msg.contains("key #1") && msg.contains("duplicate kid") && msg.contains("#0"),
        "{msg}"
    );
}

#[test]
fn pem_formats_all_verify() {
    use openssl::ec::{EcGroup, EcKey};
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    let dir = scratch("pem-formats");
    let mut specs = Vec::new();
    let mut signers = Vec::new();

    // EC: SPKI public key.
    let e = es("ec-spki");
    let ec_pkey = PKey::private_key_from_pkcs8(
        &crate::auth::pem::parse_pem(&e.private_pem()).unwrap()[0].der,
    )
    .unwrap();
    let files: Vec<(&str, Alg, Vec<u8>)> = {
        let r = rs("rsa");
        let r_pkey = PKey::private_key_from_pkcs8(
            &crate::auth::pem::parse_pem(&r.private_pem()).unwrap()[0].der,
        )
        .unwrap();
        let rsa = r_pkey.rsa().unwrap();
        let v = vec![
            ("ec-spki", Alg::ES256, ec_pkey.public_key_to_pem().unwrap()),
            ("rsa-spki", Alg::RS256, r_pkey.public_key_to_pem().unwrap()),
            (
                "rsa-pkcs1",
                Alg::RS256,
                rsa.public_key_to_pem_pkcs1().unwrap(),
            ),
            (
                "rsa-pkcs8-private",
                Alg::RS256,
                r.private_pem().into_bytes(),
            ),
            (
                "rsa-pkcs1-private",
                Alg::RS256,
                rsa.private_key_to_pem().unwrap(),
            ),
            ("ec-pkcs8-private", Alg::ES256, e.private_pem().into_bytes()),
        ];
        for (kid, _, _) in &v {
            let pem = if kid.starts_with("ec") {
                e.private_pem()
            } else {
                r.private_pem()
            };
            signers.push(SigningKey::from_pkcs8_pem(kid, &pem).unwrap());
        }
        v
    };
    for (kid, alg, pem) in &files {
        let path = dir.join(format!("{kid}.pem"));
        std::fs::write(&path, pem).unwrap();
        specs.push(PemKeySpec {
            kid: kid.to_string(),
            alg: *alg,
            path,
        });
    }
    let keys = KeySet::load(None, &specs).unwrap();
    assert_eq!(keys.len(), files.len());
    for s in &signers {
        assert!(verifies(&keys, s), "PEM key {} does not verify", s.kid);
    }
    // The SPKI trap: the RSA SPKI key must verify (not silently fail).
    let rsa_spki = keys.get("rsa-spki").unwrap();
    assert!(rsa_spki.rsa_components().is_some());
    // An EC SEC1 private key is explained, not mis-parsed.
    let sec1 = EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap())
        .unwrap()
        .private_key_to_pem()
        .unwrap();
    let err = VerifyKey::from_pem("x", Alg::ES256, std::str::from_utf8(&sec1).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("SEC1"), "{err}");
    // P-384 SPKI is refused.
    let p384 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
    let p384 = PKey::from_ec_key(p384)
        .unwrap()
        .public_key_to_pem()
        .unwrap();
    let err = VerifyKey::from_pem("x", Alg::ES256, std::str::from_utf8(&p384).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("P-256"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn load_reports_files_kids_and_all_problems() {
    let dir = scratch("load");
    let e = es("shared");
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, jwks_json(&[&e])).unwrap();
    let pem_path = dir.join("shared.pem");
    std::fs::write(&pem_path, e.private_pem()).unwrap();
    let wrong_alg = PemKeySpec {
        kid: "wrong".into(),
        alg: Alg::RS256,
        path: pem_path.clone(),
    };
    let dup = PemKeySpec {
        kid: "shared".into(),
        alg: Alg::ES256,
        path: pem_path.clone(),
    };
    let missing = PemKeySpec {
        kid: "gone".into(),
        alg: Alg::ES256,
        path: dir.join("missing.pem"),
    };
    let specs = [wrong_alg, dup, missing];
    let problems = KeySet::check(Some(&jwks), &specs);
    assert_eq!(problems.len(), 3, "{problems:?}");
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert!(
        text[0].contains("shared.pem")
            && text[0].contains("\"wrong\"")
            && text[0].contains("configured alg is RS256"),
        "{}",
        text[0]
    );
    assert!(
        text[1].contains("duplicate kid \"shared\"") && text[1].contains("jwks.json"),
        "{}",
        text[1]
    );
    assert!(text[2].contains("missing.pem"), "{}", text[2]);
    assert!(matches!(
        KeySet::load(Some(&jwks), &specs),
        Err(KeyError::BadPem { .. })
    ));
    // The good parts load on their own.
    let keys = KeySet::load(Some(&jwks), &[]).unwrap();
    assert!(verifies(&keys, &e));
    let missing_jwks = KeySet::load(Some(&dir.join("nope.json")), &[]).unwrap_err();
    assert!(matches!(missing_jwks, KeyError::Read { .. }));
    assert!(KeySet::load(None, &[]).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ids_are_unique_and_carry_over_keeps_unchanged_keys() {
    let (a, b) = (es("a"), es("b"));
    let doc = jwks_json(&[&a, &b]);
    let first = KeySet::from_jwks_json(&doc).unwrap();
    let second = KeySet::from_jwks_json(&doc).unwrap();
    let ids: std::collections::HashSet<u64> =
        first.iter().chain(second.iter()).map(|k| k.id).collect();
    assert_eq!(ids.len(), 4, "every parse gets fresh ids");
    let carried = second.carry_over(&first);
    assert_eq!(carried.get("a").unwrap().id, first.get("a").unwrap().id);
    let b2 = es("b");
    let rotated = KeySet::from_jwks_json(&jwks_json(&[&a, &b2]))
        .unwrap()
        .carry_over(&first);
    assert_eq!(rotated.get("a").unwrap().id, first.get("a").unwrap().id);
    assert_ne!(rotated.get("b").unwrap().id, first.get("b").unwrap().id);
    assert!(verifies(&rotated, &b2) && !verifies(&rotated, &b));
    assert!(format!("{:?}", rotated.get("a").unwrap()).contains("kid: \"a\""));
}

#[test]
fn from_keys_rejects_duplicates() {
    let a = es("a");
    let k1 = a.verify_key().unwrap();
    let k2 = a.verify_key().unwrap();
    assert_ne!(k1.id, k2.id);
    assert!(matches!(
        KeySet::from_keys([k1, k2]),
        Err(KeyError::DuplicateKid { .. })
    ));
    assert_eq!(Alg::parse("ES256"), Some(Alg::ES256));
    assert_eq!(Alg::parse("es256"), None);
    assert_eq!(Alg::RS256.to_string(), "RS256");
}

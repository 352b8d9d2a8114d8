//! Tests for `mint.rs`: key generation, PEM round trips, `keygen_to_dir`
//! and the DER signature helper.

use super::*;
use crate::auth::jwt::{verify, Policy};
use crate::auth::keys::KeySet;

const NOW: u64 = 1_700_000_000;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-mint-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

#[test]
fn generate_sign_verify_both_algs() {
    for alg in [Alg::ES256, Alg::RS256] {
        let k = SigningKey::generate(alg, "k1").unwrap();
        assert_eq!(k.alg, alg);
        let jwk = k.public_jwk();
        assert_eq!(jwk["kid"], "k1");
        assert_eq!(jwk["alg"], alg.as_str());
        assert_eq!(jwk["use"], "sig");
        let keys = KeySet::from_jwks_json(&jwks_json(&[&k])).unwrap();
        let t = k
            .sign(&json!({"exp": NOW + 60, "subs": ["premium"]}))
            .unwrap();
        let c = verify(&t, &keys, &Policy::default(), NOW).unwrap();
        assert_eq!(c.subs, ["premium"]);
        // Header is exactly {"alg","typ","kid"}.
        let h = t.split('.').next().unwrap();
        let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
        assert_eq!(h, json!({"alg": alg.as_str(), "typ": "JWT", "kid": "k1"}));
        // verify_key matches the published JWK.
        let vk = k.verify_key().unwrap();
        assert!(vk.same_material(keys.get("k1").unwrap()));
        assert!(format!("{k:?}").contains("k1"));
    }
}

#[test]
fn private_pem_round_trip_and_legacy_formats() {
    for alg in [Alg::ES256, Alg::RS256] {
        let k = SigningKey::generate(alg, "k1").unwrap();
        let pem_text = k.private_pem();
        assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = SigningKey::from_pkcs8_pem("k1", &pem_text).unwrap();
        assert_eq!(back.alg, alg);
        assert_eq!(back.public_jwk(), k.public_jwk());
    }
    let ec = openssl::ec::EcKey::generate(
        &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
    )
    .unwrap();
    let sec1 = String::from_utf8(ec.private_key_to_pem().unwrap()).unwrap();
    assert!(sec1.contains("EC PRIVATE KEY"));
    assert_eq!(
        SigningKey::from_pkcs8_pem("e", &sec1).unwrap().alg,
        Alg::ES256
    );
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let pkcs1 = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
    assert!(pkcs1.contains("RSA PRIVATE KEY"));
    assert_eq!(
        SigningKey::from_pkcs8_pem("r", &pkcs1).unwrap().alg,
        Alg::RS256
    );
    // Public keys and garbage are refused with a reason.
    let public = String::from_utf8(rsa.public_key_to_pem().unwrap()).unwrap();
    assert!(SigningKey::from_pkcs8_pem("r", &public)
        .unwrap_err()
        .to_string()
        .contains("not an unencrypted private key"));
    assert!(SigningKey::from_pkcs8_pem("r", "hello").is_err());
    let junk = pem::encode_pem("PRIVATE KEY", b"junk");
    assert!(matches!(
        SigningKey::from_pkcs8_pem("r", &junk),
        Err(MintError::BadKey { .. })
    ));
}

#[test]
fn keygen_to_dir_writes_and_merges() {
    let dir = scratch("keygen");
    let (pem1, jwks) = keygen_to_dir(Alg::ES256, "k1", &dir).unwrap();
    assert_eq!(pem1, dir.join("k1.pem"));
    assert_eq!(jwks, dir.join("jwks.json"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&pem1).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (pem2, _) = keygen_to_dir(Alg::RS256, "k2", &dir).unwrap();
    let keys = KeySet::load(Some(&jwks), &[]).unwrap();
    assert_eq!(keys.kids().collect::<Vec<_>>(), ["k1", "k2"]);
    for (kid, path) in [("k1", &pem1), ("k2", &pem2)] {
        let signer = SigningKey::load(kid, path).unwrap();
        let t = signer.sign(&json!({"exp": NOW + 60})).unwrap();
        assert!(verify(&t, &keys, &Policy::default(), NOW).is_ok());
    }
    // Same kid again: the private key is never overwritten.
    assert!(matches!(
        keygen_to_dir(Alg::ES256, "k1", &dir),
        Err(MintError::Exists { .. })
    ));
    // Same kid after its PEM was moved away: replaced in the JWK Set.
    fs::remove_file(&pem1).unwrap();
    keygen_to_dir(Alg::ES256, "k1", &dir).unwrap();
    let keys2 = KeySet::load(Some(&jwks), &[]).unwrap();
    assert_eq!(keys2.len(), 2);
    assert!(!keys2
        .get("k1")
        .unwrap()
        .same_material(keys.get("k1").unwrap()));
    // Unsafe kids.
    for kid in ["", "../x", ".hidden", "a/b", "a b"] {
        assert!(matches!(
            keygen_to_dir(Alg::ES256, kid, &dir),
            Err(MintError::BadKid { .. })
        ));
    }
    // A corrupt jwks.json is reported and no orphan private key is written.
    fs::write(&jwks, "{not json").unwrap();
    assert!(matches!(
        keygen_to_dir(Alg::ES256, "k3", &dir),
        Err(MintError::BadJwks { .. })
    ));
    assert!(!dir.join("k3.pem").exists());
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn es256_der_conversion_is_real_der() {
    let k = SigningKey::generate(Alg::ES256, "k1").unwrap();
    let sig = k.sign_bytes(b"hello").unwrap();
    assert_eq!(sig.len(), 64);
    let der = es256_fixed_to_der(&sig);
    assert_eq!(der[0], 0x30);
    let parsed = openssl::ecdsa::EcdsaSig::from_der(&der).unwrap();
    assert_eq!(parsed.r().to_vec(), pem::strip_leading_zeros(&sig[..32]));
    assert_eq!(parsed.s().to_vec(), pem::strip_leading_zeros(&sig[32..]));
    // High-bit and leading-zero edge cases.
    let mut edge = [0u8; 64];
    edge[0] = 0x80;
    edge[63] = 1;
    let der = es256_fixed_to_der(&edge);
    let parsed = openssl::ecdsa::EcdsaSig::from_der(&der).unwrap();
    assert_eq!(parsed.r().num_bytes(), 32);
    assert_eq!(parsed.s().to_vec(), [1]);
}

#[test]
fn token_spec_claims() {
    let spec = TokenSpec {
        sub: Some("u1".into()),
        subs: vec!["premium".into()],
        ttl_secs: 3600,
        sid: Some("s1".into()),
        paths: vec!["/video/a/".into()],
        ..TokenSpec::default()
    };
    let c = spec.claims(NOW);
    assert_eq!(
        c,
        json!({"iat": NOW, "exp": NOW + 3600, "subs": ["premium"], "sub": "u1",
               "sid": "s1", "paths": ["/video/a/"]})
    );
    let k = SigningKey::generate(Alg::ES256, "k1").unwrap();
    let keys = KeySet::from_jwks_json(&jwks_json(&[&k])).unwrap();
    let claims = verify(&k.sign(&c).unwrap(), &keys, &Policy::default(), NOW).unwrap();
    assert_eq!(claims.paths, ["/video/a/"]);
    assert_eq!(claims.exp, NOW + 3600);
}

//! The signing side: key generation and token minting.
//!
//! Used by `tollgate keygen` / `tollgate token`, by `tollgate demo`, and by
//! tests that need real tokens — including deliberately bad ones, through
//! [`sign_raw`] and [`sign_segments`]. Never on the request path.
//!
//! ES256 keys are generated with `ring`; RS256 (2048-bit) with OpenSSL, since
//! `ring` cannot generate RSA keys. Private keys are stored as PKCS#8
//! `PRIVATE KEY` PEM; `EC PRIVATE KEY` (SEC1) and `RSA PRIVATE KEY` (PKCS#1)
//! files are also read, converted to PKCS#8 with OpenSSL.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents, ECDSA_P256_SHA256_FIXED_SIGNING,
    RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

use crate::auth::keys::{Alg, KeyError, VerifyKey};
use crate::auth::pem;

/// RSA modulus size for generated RS256 keys.
pub const GENERATED_RSA_BITS: u32 = 2048;

/// Why a key could not be made, read, written or used to sign.
#[derive(thiserror::Error, Debug)]
pub enum MintError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The private key is unusable.
    #[error("key {kid:?}: {reason}")]
    BadKey {
        /// The kid it was loaded under.
        kid: String,
        /// What is wrong.
        reason: String,
    },
    /// The kid would not make a safe file name.
    #[error("kid {kid:?} cannot name a key file: use 1-64 letters, digits, '.', '_' or '-', not starting with '.'")]
    BadKid {
        /// The kid.
        kid: String,
    },
    /// Refusing to overwrite an existing private key.
    #[error("{} already exists; refusing to overwrite a private key (choose another kid or move it away)", path.display())]
    Exists {
        /// The existing file.
        path: PathBuf,
    },
    /// An existing `jwks.json` could not be merged into.
    #[error("{}: existing JWK Set cannot be updated: {reason}", path.display())]
    BadJwks {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// OpenSSL failed (RSA generation or key conversion).
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
    /// `ring` refused to generate or sign.
    #[error("{0} failed")]
    Crypto(&'static str),
    /// JSON serialization failed.
    #[error("cannot serialize JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The public half could not be turned into a verification key.
    #[error(transparent)]
    Key(#[from] KeyError),
}

enum Pair {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A private key that signs tokens under one `kid`.
pub struct SigningKey {
    /// Key id written into each token header.
    pub kid: String,
    /// ES256 or RS256, from the key type.
    pub alg: Alg,
    pair: Pair,
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// From PKCS#8 DER; detects EC P-256 vs RSA.
    pub fn from_pkcs8_der(kid: &str, der: &[u8]) -> Result<SigningKey, MintError> {
        let rng = SystemRandom::new();
        let (alg, pair) =
            if let Ok(p) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
                (Alg::ES256, Pair::Ec(p))
            } else if let Ok(p) = RsaKeyPair::from_pkcs8(der) {
                (Alg::RS256, Pair::Rsa(p))
            } else {
                return Err(MintError::BadKey {
                    kid: kid.to_string(),
                    reason: "PKCS#8 key is neither EC P-256 nor RSA 2048..4096-bit".to_string(),
                });
            };
        Ok(SigningKey {
            kid: kid.to_string(),
            alg,
            pair,
            pkcs8: der.to_vec(),
        })
    }

    /// From PEM text: `PRIVATE KEY` (PKCS#8), or `EC PRIVATE KEY` /
    /// `RSA PRIVATE KEY` (converted to PKCS#8). Detects EC P-256 vs RSA.
    pub fn from_pkcs8_pem(kid: &str, pem_text: &str) -> Result<SigningKey, MintError> {
        let bad = |reason: String| MintError::BadKey {
            kid: kid.to_string(),
            reason,
        };
        let blocks = pem::parse_pem(pem_text).map_err(bad)?;
        let block = blocks
            .iter()
            .find(|b| b.label != "EC PARAMETERS")
            .ok_or_else(|| bad("PEM holds no key block".to_string()))?;
        let pkcs8 = match block.label.as_str() {
            "PRIVATE KEY" => block.der.clone(),
            "EC PRIVATE KEY" => {
                let ec = openssl::ec::EcKey::private_key_from_der(&block.der)?;
                openssl::pkey::PKey::from_ec_key(ec)?.private_key_to_pkcs8()?
            }
            "RSA PRIVATE KEY" => {
                let rsa = openssl::rsa::Rsa::private_key_from_der(&block.der)?;
                openssl::pkey::PKey::from_rsa(rsa)?.private_key_to_pkcs8()?
            }
            other => {
                return Err(bad(format!(
                    "PEM block \"{other}\" is not an unencrypted private key"
                )))
            }
        };
        SigningKey::from_pkcs8_der(kid, &pkcs8)
    }

    /// Read a private key PEM file (see [`SigningKey::from_pkcs8_pem`]).
    pub fn load(kid: &str, path: &Path) -> Result<SigningKey, MintError> {
        let text = fs::read_to_string(path).map_err(|source| MintError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SigningKey::from_pkcs8_pem(kid, &text)
    }

    /// A fresh key: ES256 via `ring`, RS256 (2048-bit) via OpenSSL.
    pub fn generate(alg: Alg, kid: &str) -> Result<SigningKey, MintError> {
        let pkcs8 = match alg {
            Alg::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
                    .map_err(|_| MintError::Crypto("EC key generation"))?
                    .as_ref()
                    .to_vec()
            }
            Alg::RS256 => {
                let rsa = openssl::rsa::Rsa::generate(GENERATED_RSA_BITS)?;
                openssl::pkey::PKey::from_rsa(rsa)?.private_key_to_pkcs8()?
            }
        };
        SigningKey::from_pkcs8_der(kid, &pkcs8)
    }

    /// The private key as PKCS#8 `PRIVATE KEY` PEM.
    pub fn private_pem(&self) -> String {
        pem::encode_pem("PRIVATE KEY", &self.pkcs8)
    }

    /// The public key as a JWK with `kid`, `alg` and `"use": "sig"`.
    pub fn public_jwk(&self) -> Value {
        match &self.pair {
            Pair::Ec(p) => {
                let point = p.public_key().as_ref();
                // 0x04 || x || y
                let coords = point.get(1..).unwrap_or_default();
                let (x, y) = coords.split_at(coords.len() / 2);
                json!({"kty": "EC", "crv": "P-256", "x": b64url(x), "y": b64url(y),
                       "kid": self.kid, "alg": self.alg.as_str(), "use": "sig"})
            }
            Pair::Rsa(p) => {
                let c: RsaPublicKeyComponents<Vec<u8>> = p.public().into();
                json!({"kty": "RSA", "n": b64url(&c.n), "e": b64url(&c.e),
                       "kid": self.kid, "alg": self.alg.as_str(), "use": "sig"})
            }
        }
    }

    /// The matching verification key (with a fresh [`VerifyKey::id`]).
    pub fn verify_key(&self) -> Result<VerifyKey, MintError> {
        Ok(match &self.pair {
            Pair::Ec(p) => VerifyKey::es256(&self.kid, p.public_key().as_ref())?,
            Pair::Rsa(p) => {
                let c: RsaPublicKeyComponents<Vec<u8>> = p.public().into();
                VerifyKey::rs256(&self.kid, &c.n, &c.e)?
            }
        })
    }

    /// Sign raw bytes: ES256 gives 64-byte `r||s`, RS256 a PKCS#1 v1.5 signature.
    pub fn sign_bytes(&self, msg: &[u8]) -> Result<Vec<u8>, MintError> {
        let rng = SystemRandom::new();
        match &self.pair {
            Pair::Ec(p) => p
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| MintError::Crypto("ES256 signing")),
            Pair::Rsa(p) => {
                let mut sig = vec![0u8; p.public().modulus_len()];
                p.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig)
                    .map_err(|_| MintError::Crypto("RS256 signing"))?;
                Ok(sig)
            }
        }
    }

    /// Sign `claims` with header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign(&self, claims: &Value) -> Result<String, MintError> {
        let header = json!({"alg": self.alg.as_str(), "typ": "JWT", "kid": self.kid});
        sign_raw(self, &header, claims)
    }
}

/// Low level: sign an arbitrary header+payload (tests build bad tokens with it).
pub fn sign_raw(key: &SigningKey, header: &Value, payload: &Value) -> Result<String, MintError> {
    let h = b64url(&serde_json::to_vec(header)?);
    let p = b64url(&serde_json::to_vec(payload)?);
    sign_segments(key, &h, &p)
}

/// Lowest level: sign the given segment *text* as-is and append the
/// signature, so tests can mint tokens with padded or non-canonical base64.
pub fn sign_segments(
    key: &SigningKey,
    header_b64: &str,
    payload_b64: &str,
) -> Result<String, MintError> {
    let signing_input = format!("{header_b64}.{payload_b64}");
    let sig = key.sign_bytes(signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{}", b64url(&sig)))
}

/// Unpadded base64url, as JWS uses.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Convert a fixed `r||s` ECDSA signature to ASN.1 DER
/// (`SEQUENCE { INTEGER r, INTEGER s }`), e.g. to forge the DER-signature case.
pub fn es256_fixed_to_der(sig: &[u8]) -> Vec<u8> {
    let (r, s) = sig.split_at(sig.len() / 2);
    let mut body = Vec::with_capacity(sig.len() + 8);
    for int in [r, s] {
        let mut v = pem::strip_leading_zeros(int).to_vec();
        if v.first().is_none_or(|b| b & 0x80 != 0) {
            v.insert(0, 0);
        }
        body.push(0x02);
        push_der_len(&mut body, v.len());
        body.extend_from_slice(&v);
    }
    let mut out = vec![0x30];
    push_der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn push_der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let trimmed = pem::strip_leading_zeros(&bytes);
        out.push(0x80 | trimmed.len() as u8);
        out.extend_from_slice(trimmed);
    }
}

/// A JWK Set (`{"keys": [...]}`, pretty-printed) of the keys' public halves.
pub fn jwks_json(keys: &[&SigningKey]) -> String {
    let list: Vec<Value> = keys.iter().map(|k| k.public_jwk()).collect();
    serde_json::to_string_pretty(&json!({ "keys": list })).unwrap_or_default()
}

/// What `tollgate token` puts in a token; [`TokenSpec::claims`] makes the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenSpec {
    /// `sub`.
    pub sub: Option<String>,
    /// Subscriptions, written as an array under `subs_claim` (default `subs`).
    pub subs: Vec<String>,
    /// Subscriptions claim name; empty means `subs`.
    pub subs_claim: String,
    /// Lifetime: `exp = now + ttl_secs`.
    pub ttl_secs: u64,
    /// `sid`.
    pub sid: Option<String>,
    /// `paths` (omitted when empty).
    pub paths: Vec<String>,
    /// `ip` (address or CIDR).
    pub ip: Option<String>,
    /// `iss`.
    pub iss: Option<String>,
    /// `aud`.
    pub aud: Option<String>,
}

impl TokenSpec {
    /// The claims object, with `iat = now_unix` and `exp = now_unix + ttl_secs`.
    pub fn claims(&self, now_unix: u64) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("iat".into(), now_unix.into());
        m.insert("exp".into(), now_unix.saturating_add(self.ttl_secs).into());
        let subs_claim = if self.subs_claim.is_empty() {
            "subs"
        } else {
            &self.subs_claim
        };
        m.insert(subs_claim.into(), self.subs.clone().into());
        let optional = [
            ("sub", &self.sub),
            ("sid", &self.sid),
            ("ip", &self.ip),
            ("iss", &self.iss),
            ("aud", &self.aud),
        ];
        for (name, v) in optional {
            if let Some(v) = v {
                m.insert(name.into(), v.clone().into());
            }
        }
        if !self.paths.is_empty() {
            m.insert("paths".into(), self.paths.clone().into());
        }
        Value::Object(m)
    }
}

fn valid_kid_filename(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && !kid.starts_with('.')
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Write `<out>/<kid>.pem` (0600) and merge the public JWK into
/// `<out>/jwks.json` (create or replace same kid). Returns (pem_path, jwks_path).
///
/// An existing `<kid>.pem` is never overwritten. `jwks.json` is replaced
/// atomically (temp file + rename), so a node reloading it never sees half a
/// file; other keys in it are kept, which is how rotation adds a second key.
pub fn keygen_to_dir(alg: Alg, kid: &str, out: &Path) -> Result<(PathBuf, PathBuf), MintError> {
    if !valid_kid_filename(kid) {
        return Err(MintError::BadKid {
            kid: kid.to_string(),
        });
    }
    let pem_path = out.join(format!("{kid}.pem"));
    let jwks_path = out.join("jwks.json");
    if pem_path.exists() {
        return Err(MintError::Exists { path: pem_path });
    }
    fs::create_dir_all(out).map_err(|source| MintError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let key = SigningKey::generate(alg, kid)?;

    // Build the merged JWK Set before writing anything, so a bad existing
    // file leaves no orphan private key behind.
    let mut keys: Vec<Value> = match fs::read_to_string(&jwks_path) {
        Ok(text) => {
            let bad = |reason: &str| MintError::BadJwks {
                path: jwks_path.clone(),
                reason: reason.to_string(),
            };
            let doc: Value = serde_json::from_str(&text).map_err(|e| bad(&e.to_string()))?;
            doc.get("keys")
                .and_then(Value::as_array)
                .cloned()
                .ok_or_else(|| bad("no \"keys\" array"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(MintError::Read {
                path: jwks_path,
                source,
            })
        }
    };
    keys.retain(|k| k.get("kid").and_then(Value::as_str) != Some(kid));
    keys.push(key.public_jwk());
    let jwks_text = serde_json::to_string_pretty(&json!({ "keys": keys }))? + "\n";

    write_private(&pem_path, key.private_pem().as_bytes())?;
    let tmp = out.join(format!(".jwks.json.tmp-{}", std::process::id()));
    let write_err = |source| MintError::Write {
        path: jwks_path.clone(),
        source,
    };
    fs::write(&tmp, jwks_text).map_err(write_err)?;
    fs::rename(&tmp, &jwks_path).map_err(write_err)?;
    Ok((pem_path, jwks_path))
}

/// Create `path` (must not exist) with mode 0600 and write `data`.
fn write_private(path: &Path, data: &[u8]) -> Result<(), MintError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let err = |source| MintError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

#[cfg(test)]
#[path = "mint_tests.rs"]
mod tests;

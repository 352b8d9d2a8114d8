//! One verification key, pinned to one algorithm ([`Alg`]): built from a JWK's parameters or a
//! PEM file, and the errors of loading keys ([`KeyError`]). The sets they are loaded into are in
//! [`super::keys`].

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, RsaPublicKeyComponents, UnparsedPublicKey,
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_2048_8192_SHA256,
};

use crate::auth::pem::{self, PublicKeyDer};

/// Smallest RSA modulus accepted, in bits (SPEC §3).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus `ring` verifies with `RSA_PKCS1_2048_8192_SHA256`.
pub const MAX_RSA_BITS: usize = 8192;

/// Source of [`VerifyKey::id`]; starts at 1 so 0 never names a live key.
static NEXT_KEY_ID: AtomicU64 = AtomicU64::new(1);

fn next_key_id() -> u64 {
    NEXT_KEY_ID.fetch_add(1, Ordering::Relaxed)
}

/// A signature algorithm Tollgate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// ECDSA on P-256 with SHA-256, fixed 64-byte `r||s` signatures.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, modulus 2048..=8192 bits.
    RS256,
}

impl Alg {
    /// The JOSE name: `"ES256"` or `"RS256"`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Alg::ES256 => "ES256",
            Alg::RS256 => "RS256",
        }
    }

    /// Parse a JOSE name exactly (case-sensitive, as in a JWS header).
    pub fn parse(s: &str) -> Option<Alg> {
        match s {
            "ES256" => Some(Alg::ES256),
            "RS256" => Some(Alg::RS256),
            _ => None,
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Public key material in the form `ring` verifies fastest from.
#[derive(Clone)]
enum Material {
    /// Uncompressed P-256 point, 65 bytes.
    Ec(Box<[u8]>),
    /// RSA modulus and exponent without leading zeros.
    Rsa(RsaPublicKeyComponents<Box<[u8]>>),
}

/// One public key, pinned to one algorithm.
#[derive(Clone)]
pub struct VerifyKey {
    /// Key id, matched exactly against a token header's `kid`.
    pub kid: String,
    /// The only algorithm tokens under this key may use.
    pub alg: Alg,
    /// Process-unique id, new each time a key is loaded or parsed.
    pub id: u64,
    material: Material,
}

impl fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl VerifyKey {
    /// An ES256 key from an uncompressed P-256 point (`0x04 || x || y`).
    ///
    /// Only the encoding is checked here; a point that is not on the curve
    /// is accepted and then fails every verification.
    pub fn es256(kid: &str, point: &[u8]) -> Result<VerifyKey, KeyError> {
        ec_point_key(kid, point).map_err(|reason| KeyError::BadKey {
            kid: kid.to_string(),
            reason,
        })
    }

    /// An RS256 key from big-endian modulus and exponent bytes.
    pub fn rs256(kid: &str, n: &[u8], e: &[u8]) -> Result<VerifyKey, KeyError> {
        rsa_key(kid, n, e).map_err(|reason| KeyError::BadKey {
            kid: kid.to_string(),
            reason,
        })
    }

    /// A key from PEM text: `PUBLIC KEY` (SPKI), `RSA PUBLIC KEY` (PKCS#1),
    /// or a private key (`PRIVATE KEY` PKCS#8, `RSA PRIVATE KEY` PKCS#1) whose
    /// public half is derived, so a demo can point at the signing key file.
    /// The key type must match `alg`.
    pub fn from_pem(kid: &str, alg: Alg, pem_text: &str) -> Result<VerifyKey, KeyError> {
        pem_key(kid, alg, pem_text).map_err(|reason| KeyError::BadKey {
            kid: kid.to_string(),
            reason,
        })
    }

    /// Check `signature` over `signing_input` (the ASCII `header.payload`).
    ///
    /// ES256 signatures must be exactly 64 bytes (`r||s`); a DER-encoded
    /// ECDSA signature is therefore rejected.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Ec(point) => {
                signature.len() == 64
                    && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point)
                        .verify(signing_input, signature)
                        .is_ok()
            }
            Material::Rsa(components) => components
                .verify(&RSA_PKCS1_2048_8192_SHA256, signing_input, signature)
                .is_ok(),
        }
    }

    /// The uncompressed EC point (ES256) or `None` (RS256).
    pub fn ec_point(&self) -> Option<&[u8]> {
        match &self.material {
            Material::Ec(p) => Some(p),
            Material::Rsa(_) => None,
        }
    }

    /// True if both keys have the same algorithm and public key material
    /// (kid and id are not compared).
    pub fn same_material(&self, other: &VerifyKey) -> bool {
        self.alg == other.alg
            && self.ec_point() == other.ec_point()
            && self.rsa_components() == other.rsa_components()
    }

    /// RSA `(n, e)` without leading zeros (RS256) or `None` (ES256).
    pub fn rsa_components(&self) -> Option<(&[u8], &[u8])> {
        match &self.material {
            Material::Ec(_) => None,
            Material::Rsa(c) => Some((&c.n, &c.e)),
        }
    }
}

pub(crate) fn ec_point_key(kid: &str, point: &[u8]) -> Result<VerifyKey, String> {
    if point.len() != 65 || point[0] != 0x04 {
        return Err("EC public key must be an uncompressed P-256 point (65 bytes)".to_string());
    }
    Ok(VerifyKey {
        kid: kid.to_string(),
        alg: Alg::ES256,
        id: next_key_id(),
        material: Material::Ec(point.into()),
    })
}

pub(crate) fn rsa_key(kid: &str, n: &[u8], e: &[u8]) -> Result<VerifyKey, String> {
    let n = pem::strip_leading_zeros(n);
    let e = pem::strip_leading_zeros(e);
    let bits = bit_len(n);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "RSA modulus is {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "RSA modulus is {bits} bits; at most {MAX_RSA_BITS} are supported"
        ));
    }
    // ring accepts odd exponents from 3 up to 2^33 - 1; 65537 is the norm.
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if e.is_empty() || e.len() > 4 || !odd || (e.len() == 1 && e[0] < 3) {
        return Err("RSA public exponent must be odd, at least 3 and fit in 32 bits".to_string());
    }
    Ok(VerifyKey {
        kid: kid.to_string(),
        alg: Alg::RS256,
        id: next_key_id(),
        material: Material::Rsa(RsaPublicKeyComponents {
            n: n.into(),
            e: e.into(),
        }),
    })
}

/// Bit length of a big-endian unsigned integer without leading zeros.
fn bit_len(be: &[u8]) -> usize {
    match be.first() {
        None => 0,
        Some(&b) => (be.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

pub(crate) fn pem_key(kid: &str, alg: Alg, pem_text: &str) -> Result<VerifyKey, String> {
    let blocks = pem::parse_pem(pem_text)?;
    // `openssl ecparam -genkey` writes an "EC PARAMETERS" block first.
    let block = blocks
        .iter()
        .find(|b| b.label != "EC PARAMETERS")
        .ok_or("PEM holds no key block")?;
    let key = match block.label.as_str() {
        "PUBLIC KEY" => match pem::parse_spki(&block.der)? {
            PublicKeyDer::EcP256(point) => ec_point_key(kid, &point)?,
            PublicKeyDer::Rsa { n, e } => rsa_key(kid, &n, &e)?,
        },
        "RSA PUBLIC KEY" => match pem::parse_pkcs1_public(&block.der)? {
            PublicKeyDer::Rsa { n, e } => rsa_key(kid, &n, &e)?,
            PublicKeyDer::EcP256(_) => return Err("not an RSA public key".to_string()),
        },
        "PRIVATE KEY" => {
            let rng = SystemRandom::new();
            if let Ok(pair) =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &block.der, &rng)
            {
                ec_point_key(kid, pair.public_key().as_ref())?
            } else if let Ok(pair) = RsaKeyPair::from_pkcs8(&block.der) {
                let c: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                rsa_key(kid, &c.n, &c.e)?
            } else {
                return Err(
                    "PKCS#8 private key is neither EC P-256 nor RSA 2048..4096-bit".to_string(),
                );
            }
        }
        "RSA PRIVATE KEY" => {
            let pair = RsaKeyPair::from_der(&block.der)
                .map_err(|e| format!("cannot read PKCS#1 RSA private key: {e}"))?;
            let c: RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
            rsa_key(kid, &c.n, &c.e)?
        }
        "EC PRIVATE KEY" => {
            return Err(
                "SEC1 \"EC PRIVATE KEY\" is not supported; give the public key \
                 (`openssl ec -pubout`) or convert to PKCS#8 (`openssl pkcs8 -topk8 -nocrypt`)"
                    .to_string(),
            )
        }
        "ENCRYPTED PRIVATE KEY" => {
            return Err("encrypted private keys are not supported; give the public key".to_string())
        }
        "CERTIFICATE" => {
            return Err(
                "certificates are not accepted; extract the public key with \
                 `openssl x509 -pubkey -noout`"
                    .to_string(),
            )
        }
        other => return Err(format!("unsupported PEM block \"{other}\"")),
    };
    if key.alg != alg {
        return Err(format!(
            "file holds a {} key but the configured alg is {alg}",
            key.alg
        ));
    }
    Ok(key)
}

/// Why a key set could not be loaded. Each variant names the file or source,
/// the key (index and/or `kid`) and what is wrong.
#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JWK Set is not valid JSON.
    #[error("{origin}: not valid JSON: {source}")]
    Json {
        /// The file path, or "JWK Set" for inline JSON.
        origin: String,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// Valid JSON, but not shaped like a JWK Set.
    #[error("{origin}: not a JWK Set: {reason}")]
    NotJwks {
        /// The file path, or "JWK Set" for inline JSON.
        origin: String,
        /// What is missing.
        reason: String,
    },
    /// One JWK in a set is invalid.
    #[error("{origin}: key #{index}{}: {reason}", kid_label(.kid.as_deref()))]
    BadJwk {
        /// The file path, or "JWK Set" for inline JSON.
        origin: String,
        /// Zero-based position in the `keys` array.
        index: usize,
        /// The key's `kid`, if it had a string one.
        kid: Option<String>,
        /// What is wrong and, where possible, how to fix it.
        reason: String,
    },
    /// A configured PEM key file is invalid.
    #[error("{}: key {kid:?}: {reason}", path.display())]
    BadPem {
        /// The file.
        path: PathBuf,
        /// The kid it was configured under.
        kid: String,
        /// What is wrong.
        reason: String,
    },
    /// Key material passed directly (not from a file) is invalid.
    #[error("key {kid:?}: {reason}")]
    BadKey {
        /// The kid.
        kid: String,
        /// What is wrong.
        reason: String,
    },
    /// Two keys share a `kid`; a token could not say which one it means.
    #[error("duplicate kid {kid:?}: defined in {first} and again in {second}")]
    DuplicateKid {
        /// The kid.
        kid: String,
        /// Where it was first defined.
        first: String,
        /// Where it was defined again.
        second: String,
    },
}

fn kid_label(kid: Option<&str>) -> String {
    kid.map(|k| format!(" (kid {k:?})")).unwrap_or_default()
}

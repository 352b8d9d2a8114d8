//! Public keys for CloudFront-style signatures, by key-pair id.
//!
//! Configured as `signed_keys: {K2JCJMDEHXQW5F: /etc/tollgate/cf-k2.pem}`.
//! A file holds one public key: RSA 2048..=8192 bits as `BEGIN PUBLIC KEY`
//! (SPKI) or `BEGIN RSA PUBLIC KEY` (PKCS#1), or ECDSA P-256 as `BEGIN PUBLIC
//! KEY`. Private keys are refused: the edge only verifies.
//!
//! RSA keys are kept as `(n, e)` because `ring` silently fails every
//! verification when handed an SPKI. ECDSA with SHA-256 is verified by
//! `ring`; ECDSA with SHA-1 (CloudFront's default digest, which `ring` does
//! not offer) by OpenSSL, which also checks at load time that the point is on
//! the curve.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::bn::BigNumContext;
use openssl::ec::{EcGroup, EcKey, EcPoint};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::Public;
use ring::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_ASN1,
    RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY, RSA_PKCS1_2048_8192_SHA256,
};

use super::HashAlgorithm;
use crate::auth::pem::{self, PublicKeyDer};

/// Smallest RSA modulus accepted, in bits (CloudFront uses 2048).
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus `ring` verifies.
pub const MAX_RSA_BITS: usize = 8192;
/// Longest key-pair id accepted (CloudFront's are 14 characters).
pub const MAX_KEY_PAIR_ID_LEN: usize = 128;

/// The type of a [`SignedKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedKeyKind {
    /// RSA PKCS#1 v1.5 signatures; the modulus size in bits.
    Rsa {
        /// Modulus length in bits.
        bits: usize,
    },
    /// ECDSA on P-256 with DER signatures.
    EcdsaP256,
}

#[derive(Clone)]
enum Material {
    Rsa(RsaPublicKeyComponents<Box<[u8]>>),
    Ec {
        /// Uncompressed point, for `ring`.
        point: Box<[u8]>,
        /// The same key, for OpenSSL's ECDSA-SHA1.
        key: EcKey<Public>,
    },
}

/// One configured public key.
#[derive(Clone)]
pub struct SignedKey {
    key_pair_id: Arc<str>,
    kind: SignedKeyKind,
    material: Material,
}

impl fmt::Debug for SignedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedKey")
            .field("key_pair_id", &self.key_pair_id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl SignedKey {
    /// Parse a PEM public key for `key_pair_id`.
    pub fn from_pem(key_pair_id: &str, pem_text: &str) -> Result<SignedKey, SignedKeyError> {
        check_key_pair_id(key_pair_id)?;
        key_from_pem(key_pair_id, pem_text).map_err(|reason| SignedKeyError::BadKey {
            key_pair_id: key_pair_id.to_string(),
            path: None,
            reason,
        })
    }

    /// The key-pair id that requests name in `Key-Pair-Id`.
    pub fn key_pair_id(&self) -> &str {
        &self.key_pair_id
    }

    pub(super) fn key_pair_id_arc(&self) -> &Arc<str> {
        &self.key_pair_id
    }

    /// RSA or ECDSA P-256.
    pub fn kind(&self) -> SignedKeyKind {
        self.kind
    }

    /// Check `signature` over `message` with the digest `hash`.
    pub fn verify(&self, hash: HashAlgorithm, message: &[u8], signature: &[u8]) -> bool {
        match (&self.material, hash) {
            (Material::Rsa(c), HashAlgorithm::Sha1) => c
                .verify(
                    &RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                    message,
                    signature,
                )
                .is_ok(),
            (Material::Rsa(c), HashAlgorithm::Sha256) => c
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            (Material::Ec { point, .. }, HashAlgorithm::Sha256) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, signature)
                    .is_ok()
            }
            (Material::Ec { key, .. }, HashAlgorithm::Sha1) => {
                ecdsa_sha1_verify(key, message, signature)
            }
        }
    }
}

/// ECDSA-SHA1 with a DER signature, through OpenSSL. Only canonical DER is
/// accepted (as `ring` does for SHA-256), and OpenSSL's thread-local error
/// queue is left empty so a failure here cannot surface in a later TLS call.
fn ecdsa_sha1_verify(key: &EcKey<Public>, message: &[u8], signature: &[u8]) -> bool {
    let ok = EcdsaSig::from_der(signature).is_ok_and(|sig| {
        let canonical = sig.to_der().is_ok_and(|der| der == signature);
        let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, message);
        canonical && sig.verify(digest.as_ref(), key).unwrap_or(false)
    });
    drop(openssl::error::ErrorStack::get());
    ok
}

/// Why a configured key could not be loaded; names the key-pair id and file.
#[derive(thiserror::Error, Debug)]
pub enum SignedKeyError {
    /// The key-pair id itself is unusable.
    #[error("key pair id {key_pair_id:?}: {reason}")]
    BadKeyPairId {
        /// The id as configured.
        key_pair_id: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file could not be read.
    #[error("key pair {key_pair_id:?}: cannot read {}: {source}", path.display())]
    Read {
        /// The key-pair id.
        key_pair_id: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file (or text) does not hold a usable public key.
    #[error("key pair {key_pair_id:?}{}: {reason}", path_label(.path.as_deref()))]
    BadKey {
        /// The key-pair id.
        key_pair_id: String,
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// What is wrong and, where possible, how to fix it.
        reason: String,
    },
    /// The same key-pair id was given twice.
    #[error("key pair {key_pair_id:?} is configured twice")]
    Duplicate {
        /// The key-pair id.
        key_pair_id: String,
    },
}

fn path_label(path: Option<&Path>) -> String {
    path.map(|p| format!(" ({})", p.display()))
        .unwrap_or_default()
}

/// The configured keys, by key-pair id. Immutable; reload by building a new
/// set. An empty set is valid and denies every request (`unknown_key`).
#[derive(Debug, Clone, Default)]
pub struct SignedKeys {
    keys: BTreeMap<Arc<str>, SignedKey>,
    /// Signatures that verified, as SHA-256 digests of (key-pair id, hash algorithm, signed
    /// message, signature): a returning viewer costs a hash, not an RSA/ECDSA verify. Only
    /// successes; every input of the check is in the digest (a malleated signature is another
    /// entry, verified afresh); a reloaded set starts empty; cleared when full.
    verified: dashmap::DashSet<[u8; 32], ahash::RandomState>,
    /// Signed URLs that were granted, by [`digest_of`] the scheme, host, path and
    /// query as the viewer sent them (signing parameters included). Everything a URL's check
    /// reads except the clock and the client address is in the digest, so a returning viewer
    /// costs one digest and a lookup: no query parsing, base64, policy rebuild or signature
    /// memo. The clock and address are checked again on every hit ([`RememberedGrant`]).
    /// Only grants (a refusal is never remembered); a reloaded set starts empty; cleared when
    /// full. Why: a signed-URL hit spent 1.6 µs in the check, against 0.1 µs for a cached
    /// bearer token (`perf record` on the node under `wrk`, issue 20 closing note).
    granted: dashmap::DashMap<[u8; 32], RememberedGrant, ahash::RandomState>,
}

/// A granted signed URL, with the conditions that depend on when and from where it is used.
#[derive(Debug, Clone)]
pub(super) struct RememberedGrant {
    /// The grant as the full check returned it.
    pub(super) grant: super::SignedGrant,
    /// The custom policy's `IpAddress` condition, if it had one.
    pub(super) source_ip: Option<crate::cidr::Cidr>,
}

/// SHA-256 over each part, length first: how both memos of [`SignedKeys`] name what they hold.
pub(super) fn digest_of<'p>(parts: impl IntoIterator<Item = &'p [u8]>) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(ctx.finish().as_ref());
    digest
}

/// Remembered signatures per key set before the memo is cleared.
const MAX_VERIFIED_SIGNATURES: usize = 100_000;

impl SignedKeys {
    /// A set with no keys.
    pub fn empty() -> SignedKeys {
        SignedKeys::default()
    }

    /// Build a set from parsed keys; a repeated key-pair id is an error.
    pub fn from_keys(
        keys: impl IntoIterator<Item = SignedKey>,
    ) -> Result<SignedKeys, SignedKeyError> {
        let mut set = SignedKeys::empty();
        for key in keys {
            if set.keys.contains_key(&key.key_pair_id) {
                return Err(SignedKeyError::Duplicate {
                    key_pair_id: key.key_pair_id.to_string(),
                });
            }
            set.keys.insert(Arc::clone(&key.key_pair_id), key);
        }
        Ok(set)
    }

    /// Load every `(key_pair_id, pem_path)`; the first problem is returned.
    /// Use [`SignedKeys::check`] to list every problem at once.
    pub fn load<I, K, P>(entries: I) -> Result<SignedKeys, SignedKeyError>
    where
        I: IntoIterator<Item = (K, P)>,
        K: AsRef<str>,
        P: AsRef<Path>,
    {
        let (set, mut errors) = load_collecting(entries);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// Every problem [`SignedKeys::load`] would hit (for `tollgate check`).
    pub fn check<I, K, P>(entries: I) -> Vec<SignedKeyError>
    where
        I: IntoIterator<Item = (K, P)>,
        K: AsRef<str>,
        P: AsRef<Path>,
    {
        load_collecting(entries).1
    }

    /// `key.verify(hash, message, signature)`, remembering successes (see the `verified` field).
    /// A signature not remembered is verified only if `may_verify()` says so; `None` when it
    /// did not (the failed-credential budget, [`crate::budget`]).
    pub fn verify_remembered(
        &self,
        key: &SignedKey,
        hash: HashAlgorithm,
        message: &[u8],
        signature: &[u8],
        may_verify: &dyn Fn() -> bool,
    ) -> Option<bool> {
        let alg: &[u8] = match hash {
            HashAlgorithm::Sha1 => b"1",
            HashAlgorithm::Sha256 => b"256",
        };
        let digest = digest_of([key.key_pair_id().as_bytes(), alg, message, signature]);
        if self.verified.contains(&digest) {
            return Some(true);
        }
        if !may_verify() {
            return None;
        }
        let ok = key.verify(hash, message, signature);
        if ok {
            if self.verified.len() >= MAX_VERIFIED_SIGNATURES {
                self.verified.clear();
            }
            self.verified.insert(digest);
        }
        Some(ok)
    }

    /// The grant remembered for a signed URL's digest, if any.
    pub(super) fn granted(&self, digest: &[u8; 32]) -> Option<RememberedGrant> {
        self.granted.get(digest).map(|g| g.clone())
    }

    /// Remember a signed URL's grant (see the `granted` field).
    pub(super) fn remember_grant(&self, digest: [u8; 32], grant: RememberedGrant) {
        if self.granted.len() >= MAX_VERIFIED_SIGNATURES {
            self.granted.clear();
        }
        self.granted.insert(digest, grant);
    }

    /// How many granted signed URLs are remembered.
    pub fn granted_urls(&self) -> usize {
        self.granted.len()
    }

    /// How many verified signatures are remembered.
    pub fn remembered(&self) -> usize {
        self.verified.len()
    }

    /// The key for `key_pair_id`, if configured.
    pub fn get(&self, key_pair_id: &str) -> Option<&SignedKey> {
        self.keys.get(key_pair_id)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if there are no keys (every request is denied).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key-pair ids, sorted.
    pub fn key_pair_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(|k| &**k)
    }
}

fn load_collecting<I, K, P>(entries: I) -> (SignedKeys, Vec<SignedKeyError>)
where
    I: IntoIterator<Item = (K, P)>,
    K: AsRef<str>,
    P: AsRef<Path>,
{
    let mut set = SignedKeys::empty();
    let mut errors = Vec::new();
    for (id, path) in entries {
        let (id, path) = (id.as_ref(), path.as_ref());
        if let Err(e) = check_key_pair_id(id) {
            errors.push(e);
            continue;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(source) => {
                errors.push(SignedKeyError::Read {
                    key_pair_id: id.to_string(),
                    path: path.to_path_buf(),
                    source,
                });
                continue;
            }
        };
        match key_from_pem(id, &text) {
            Ok(key) if set.keys.contains_key(id) => errors.push(SignedKeyError::Duplicate {
                key_pair_id: key.key_pair_id.to_string(),
            }),
            Ok(key) => {
                set.keys.insert(Arc::clone(&key.key_pair_id), key);
            }
            Err(reason) => errors.push(SignedKeyError::BadKey {
                key_pair_id: id.to_string(),
                path: Some(path.to_path_buf()),
                reason,
            }),
        }
    }
    (set, errors)
}

/// Key-pair ids travel in URLs and cookies: ASCII letters, digits, `_`, `-`.
fn check_key_pair_id(id: &str) -> Result<(), SignedKeyError> {
    let reason = if id.is_empty() {
        "is empty"
    } else if id.len() > MAX_KEY_PAIR_ID_LEN {
        "is longer than 128 characters"
    } else if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        "may hold only ASCII letters, digits, '_' and '-'"
    } else {
        return Ok(());
    };
    Err(SignedKeyError::BadKeyPairId {
        key_pair_id: id.to_string(),
        reason: reason.to_string(),
    })
}

fn key_from_pem(id: &str, pem_text: &str) -> Result<SignedKey, String> {
    let blocks = pem::parse_pem(pem_text)?;
    let [block] = blocks.as_slice() else {
        return Err(format!(
            "the file holds {} PEM blocks; give exactly one public key",
            blocks.len()
        ));
    };
    let parsed = match block.label.as_str() {
        "PUBLIC KEY" => pem::parse_spki(&block.der)?,
        "RSA PUBLIC KEY" => pem::parse_pkcs1_public(&block.der)?,
        "CERTIFICATE" => {
            return Err(
                "certificates are not accepted; extract the public key with \
                        `openssl x509 -pubkey -noout -in cert.pem`"
                    .to_string(),
            )
        }
        label if label.contains("PRIVATE KEY") => {
            return Err(format!(
                "this is a private key (\"{label}\"); the edge needs only the public key: \
                 `openssl pkey -in key.pem -pubout`"
            ))
        }
        other => return Err(format!("unsupported PEM block \"{other}\"")),
    };
    let (kind, material) = match parsed {
        PublicKeyDer::Rsa { n, e } => rsa_material(&n, &e)?,
        PublicKeyDer::EcP256(point) => ec_material(&point)?,
    };
    Ok(SignedKey {
        key_pair_id: Arc::from(id),
        kind,
        material,
    })
}

fn rsa_material(n: &[u8], e: &[u8]) -> Result<(SignedKeyKind, Material), String> {
    let n = pem::strip_leading_zeros(n);
    let e = pem::strip_leading_zeros(e);
    let bits = n
        .first()
        .map_or(0, |&b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
    if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
        return Err(format!(
            "RSA modulus is {bits} bits; {MIN_RSA_BITS}..={MAX_RSA_BITS} are supported"
        ));
    }
    // ring accepts odd exponents from 3 up to 2^33 - 1; 65537 is the norm.
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    if e.is_empty() || e.len() > 4 || !odd || (e.len() == 1 && e[0] < 3) {
        return Err("RSA public exponent must be odd, at least 3 and fit in 32 bits".to_string());
    }
    let components = RsaPublicKeyComponents {
        n: n.into(),
        e: e.into(),
    };
    Ok((SignedKeyKind::Rsa { bits }, Material::Rsa(components)))
}

fn ec_material(point: &[u8]) -> Result<(SignedKeyKind, Material), String> {
    let key = (|| {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let mut ctx = BigNumContext::new()?;
        let p = EcPoint::from_bytes(&group, point, &mut ctx)?;
        let key = EcKey::from_public_key(&group, &p)?;
        key.check_key()?;
        Ok::<_, openssl::error::ErrorStack>(key)
    })()
    .map_err(|e| format!("not a valid P-256 public key: {e}"))?;
    let material = Material::Ec {
        point: point.into(),
        key,
    };
    Ok((SignedKeyKind::EcdsaP256, material))
}

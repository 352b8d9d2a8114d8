//! Verification keys: JWK Set (RFC 7517) and PEM loading into a [`KeySet`].
//!
//! The algorithm is pinned per key: a JWK's `alg` (or its `kty` when `alg` is
//! absent) and a PEM key's configured [`Alg`] decide, once, how tokens under
//! that `kid` are verified. A token never chooses its own algorithm.
//!
//! Loading is strict because a key set is a security boundary: private key
//! material, symmetric keys, short RSA moduli, unknown curves, `use` other than
//! `sig` and duplicate `kid`s are all errors that name the file, the key (index
//! and `kid`) and what is wrong. Every loaded key gets a process-unique
//! [`VerifyKey::id`], so a cache can tell a key that was removed and re-added,
//! or replaced under the same `kid`, from the key that verified a token.
//!
//! A `KeySet` is immutable; reload by building a new one and swapping it in
//! (e.g. behind an `ArcSwap`). An empty set is valid and denies every token.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::auth::jwks::{parse_jwks, parse_jwks_collecting};
use crate::auth::key::pem_key;
pub use crate::auth::key::{Alg, KeyError, VerifyKey, MAX_RSA_BITS, MIN_RSA_BITS};

/// A PEM key file named in the configuration, with its pinned algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemKeySpec {
    /// Key id that tokens name in their header.
    pub kid: String,
    /// Algorithm the key is pinned to; must match the key type in the file.
    pub alg: Alg,
    /// Path of the PEM file (public key, or a private key whose public half is used).
    pub path: PathBuf,
}

/// The live verification keys, by `kid`.
#[derive(Debug, Clone)]
pub struct KeySet {
    keys: BTreeMap<String, Arc<VerifyKey>>,
    /// Names this set's contents: every set built or changed gets a number no other set had
    /// ([`KeySet::generation`]); a clone keeps it, as it keeps the keys.
    generation: u64,
}

/// The next [`KeySet::generation`].
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

fn next_generation() -> u64 {
    NEXT_GENERATION.fetch_add(1, Ordering::Relaxed)
}

impl Default for KeySet {
    fn default() -> KeySet {
        KeySet {
            keys: BTreeMap::new(),
            generation: next_generation(),
        }
    }
}

impl KeySet {
    /// A set with no keys: every token is denied (`unknown_kid`).
    pub fn empty() -> KeySet {
        KeySet::default()
    }

    /// A number that names this set's contents: two sets with the same generation hold the
    /// same keys (one is a clone of the other). The token cache records it with each entry, so
    /// a hit under an unchanged set knows its key is still live without looking it up.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Build a set from keys already parsed; duplicate `kid`s are an error.
    pub fn from_keys(keys: impl IntoIterator<Item = VerifyKey>) -> Result<KeySet, KeyError> {
        let mut set = KeySet::empty();
        for key in keys {
            if set.keys.contains_key(&key.kid) {
                return Err(KeyError::DuplicateKid {
                    kid: key.kid,
                    first: "the key list".to_string(),
                    second: "the key list".to_string(),
                });
            }
            set.keys.insert(key.kid.clone(), Arc::new(key));
        }
        Ok(set)
    }

    /// Parse an RFC 7517 JWK Set (`{"keys": [...]}`).
    pub fn from_jwks_json(json: &str) -> Result<KeySet, KeyError> {
        let keys = parse_jwks(json, "JWK Set")?;
        KeySet::from_keys(keys)
    }

    /// Load the JWK Set file (if any) and each PEM key; the first problem is
    /// returned. Use [`KeySet::check`] to list every problem at once.
    pub fn load(jwks_file: Option<&Path>, pem_keys: &[PemKeySpec]) -> Result<KeySet, KeyError> {
        let (set, mut errors) = load_collecting(jwks_file, pem_keys);
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors.swap_remove(0))
        }
    }

    /// Every problem [`KeySet::load`] would hit (for `tollgate check`).
    pub fn check(jwks_file: Option<&Path>, pem_keys: &[PemKeySpec]) -> Vec<KeyError> {
        load_collecting(jwks_file, pem_keys).1
    }

    /// The key for `kid`, if any.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyKey>> {
        self.keys.get(kid)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True if there are no keys (every token is denied).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The `kid`s, in sorted order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Keep the previous set's key (and so its [`VerifyKey::id`]) for every
    /// `kid` whose algorithm and material did not change. Use on reload, so
    /// an unchanged key keeps its cached tokens while a removed or replaced
    /// one invalidates them.
    pub fn carry_over(mut self, previous: &KeySet) -> KeySet {
        for (kid, key) in self.keys.iter_mut() {
            if let Some(old) = previous.keys.get(kid) {
                if old.same_material(key) {
                    *key = Arc::clone(old);
                }
            }
        }
        self.generation = next_generation();
        self
    }

    /// This set plus the keys of `other` whose `kid` this set does not have (this set wins a
    /// `kid` both have); also returns the `kid`s of `other` left out.
    pub fn merged(&self, other: &KeySet) -> (KeySet, Vec<String>) {
        let mut keys = self.keys.clone();
        let mut shadowed = Vec::new();
        for (kid, key) in &other.keys {
            if keys.contains_key(kid) {
                shadowed.push(kid.clone());
            } else {
                keys.insert(kid.clone(), Arc::clone(key));
            }
        }
        let generation = next_generation();
        (KeySet { keys, generation }, shadowed)
    }

    /// The keys, in `kid` order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<VerifyKey>> {
        self.keys.values()
    }
}

/// Load everything, collecting every error; keys that loaded are kept.
fn load_collecting(jwks_file: Option<&Path>, pem_keys: &[PemKeySpec]) -> (KeySet, Vec<KeyError>) {
    let mut set = KeySet::empty();
    let mut origins: BTreeMap<String, String> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut add = |key: VerifyKey, origin: String, errors: &mut Vec<KeyError>| {
        if let Some(first) = origins.get(&key.kid) {
            errors.push(KeyError::DuplicateKid {
                kid: key.kid.clone(),
                first: first.clone(),
                second: origin,
            });
        } else {
            origins.insert(key.kid.clone(), origin);
            set.keys.insert(key.kid.clone(), Arc::new(key));
        }
    };
    if let Some(path) = jwks_file {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(source) => errors.push(KeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
            Ok(text) => {
                let (keys, errs) = parse_jwks_collecting(&text, &origin);
                errors.extend(errs);
                for (index, key) in keys {
                    add(key, format!("{origin} (key #{index})"), &mut errors);
                }
            }
        }
    }
    for spec in pem_keys {
        let text = match std::fs::read_to_string(&spec.path) {
            Ok(t) => t,
            Err(source) => {
                errors.push(KeyError::Read {
                    path: spec.path.clone(),
                    source,
                });
                continue;
            }
        };
        match pem_key(&spec.kid, spec.alg, &text) {
            Ok(key) => {
                if text.contains("PRIVATE KEY-----") {
                    log::warn!(
                        "{}: kid {:?} is a private key file; only its public half is used. \
                         Give the edge the public key in production.",
                        spec.path.display(),
                        spec.kid
                    );
                }
                add(key, spec.path.display().to_string(), &mut errors);
            }
            Err(reason) => errors.push(KeyError::BadPem {
                path: spec.path.clone(),
                kid: spec.kid.clone(),
                reason,
            }),
        }
    }
    (set, errors)
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;

//! The secrets file of AWS Secure Media Delivery tokens: HMAC keys by `kid`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use ring::hmac;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Error loading the secrets file.
#[derive(Debug, thiserror::Error)]
pub enum SmdError {
    /// The file could not be read.
    #[error("cannot read SMD secrets file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The JSON is not a non-empty `{"<kid>": "<secret>"}` object.
    #[error("invalid SMD secrets: {0}")]
    Invalid(String),
}

/// The HMAC secrets by `kid` (the validator's `secrets` map).
#[derive(Clone)]
pub struct SmdSecrets {
    keys: HashMap<String, hmac::Key>,
}

impl fmt::Debug for SmdSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&str> = self.kids().collect();
        kids.sort_unstable();
        f.debug_struct("SmdSecrets").field("kids", &kids).finish()
    }
}

/// `{"kid": "secret", ...}` with string values, rejecting duplicate kids.
struct SecretMap(Vec<(String, String)>);

impl<'de> Deserialize<'de> for SecretMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of kid to secret strings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<SecretMap, A::Error> {
                let mut out: Vec<(String, String)> = Vec::new();
                while let Some((kid, secret)) = m.next_entry::<String, String>()? {
                    if out.iter().any(|(k, _)| *k == kid) {
                        return Err(de::Error::custom(format!("duplicate kid {kid:?}")));
                    }
                    out.push((kid, secret));
                }
                Ok(SecretMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl SmdSecrets {
    /// Parses `{"<kid>": "<secret>", ...}` (the `smd.secrets_file` format). Each secret is
    /// used as the HMAC key as its UTF-8 bytes, as the AWS solution does. At least one
    /// entry; kids and secrets non-empty; duplicate kids are an error.
    pub fn from_json(json: &str) -> Result<SmdSecrets, SmdError> {
        let SecretMap(entries) =
            serde_json::from_str(json).map_err(|e| SmdError::Invalid(e.to_string()))?;
        if entries.is_empty() {
            return Err(SmdError::Invalid("no secrets".into()));
        }
        let mut keys = HashMap::with_capacity(entries.len());
        for (kid, secret) in entries {
            if kid.is_empty() {
                return Err(SmdError::Invalid("empty kid".into()));
            }
            if secret.is_empty() {
                return Err(SmdError::Invalid(format!("empty secret for kid {kid:?}")));
            }
            let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
            keys.insert(kid, key);
        }
        Ok(SmdSecrets { keys })
    }

    /// Reads and parses a secrets file (see [`SmdSecrets::from_json`]).
    pub fn load(path: &Path) -> Result<SmdSecrets, SmdError> {
        let text = std::fs::read_to_string(path).map_err(|source| SmdError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text)
    }

    /// The configured key ids (for logs; secrets are never printed).
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Number of secrets.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Never true for a parsed set; here for completeness.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(super) fn get(&self, kid: &str) -> Option<&hmac::Key> {
        self.keys.get(kid)
    }
}

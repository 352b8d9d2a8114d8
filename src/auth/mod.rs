//! Token authentication at the edge (SPEC §3).
//!
//! - [`key`]: one verification key, pinned to one algorithm; [`keys`]: the JWK Set / PEM
//!   key set.
//! - [`jwks`]: the RFC 7517 JWK Set parser behind [`KeySet::from_jwks_json`].
//! - [`jwt`]: strict JWS compact parsing, signature check and claims policy;
//!   a refused token is a [`Denial`] value with a stable metric label.
//! - [`cache`]: verified-token cache, so a returning reader costs a lookup
//!   instead of a signature check; it never lets a token outlive its key.
//! - [`mint`]: key generation and token signing for the CLI, the demo and tests.
//! - [`pem`]: the small PEM/DER reader the key loaders share.
//!
//! - [`verified`]: what a verified token lets the edge check ([`Verified`]).
//!
//! Typical request path: `cache.verify(token, &keys.load(), &policy, now)`,
//! then the caller checks `verified.sid()` against revocations and
//! `verified.entitled(&route.require)`.

pub mod cache;
pub mod cloudfront;
pub mod htpasswd;
pub mod jwks;
pub mod jwt;
pub mod key;
pub mod keys;
pub mod mint;
pub mod pem;
pub mod smd;
pub mod verified;

pub use cache::{CacheCounters, CacheStats, TokenCache, TokenMemo};
pub use jwt::{verify, verify_with_key, Claims, Denial, PackedNames, Policy};
pub use keys::{Alg, KeyError, KeySet, PemKeySpec, VerifyKey};
pub use mint::{MintError, SigningKey, TokenSpec};
pub use verified::Verified;

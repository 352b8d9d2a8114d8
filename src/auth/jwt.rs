//! Strict JWS compact (JWT) verification and the claims policy (SPEC §3).
//!
//! Order of checks, cheapest and most hostile-input-proof first:
//! 1. length cap (`Policy::max_token_bytes`) before anything else;
//! 2. exactly three `.`-separated segments, each strict base64url (no
//!    padding, canonical: trailing bits must be zero);
//! 3. header: a JSON object with string `alg` and `kid`; `jku`/`jwk`/`x5u`/
//!    `x5c` are rejected (keys never come from the token), any `crit` is
//!    unsupported; duplicate header members are malformed;
//! 4. `kid` → key; the token's `alg` must equal the key's pinned alg exactly
//!    (so `none`, `HS256`, `ES256K`... are `alg_mismatch`, never verified);
//! 5. signature over the ASCII `header.payload` (ES256: exactly 64 bytes `r||s`);
//! 6. only then the payload: `exp` required, `nbf`, `iss`, `aud`, and the
//!    entitlement claims.
//!
//! Time rules, with `leeway` from the policy: a token is expired iff
//! `now > exp + leeway` (so it is still valid at exactly `exp + leeway`), and
//! not yet valid iff `nbf > now + leeway`. `iat` is recorded, not checked.
//! Numeric dates may be integers or floats (floored); negative values count as 0.
//!
//! A denied token is an expected outcome, so the result is a [`Denial`]
//! value whose `as_str()` is a stable metric label. Nothing here panics or
//! allocates without bound on any input.

use std::borrow::Cow;
use std::fmt;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::auth::keys::{Alg, KeySet, VerifyKey};

/// Strict base64url for token segments: no padding, canonical encodings only.
pub const B64URL_STRICT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Default clock-skew allowance, seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Default subscriptions claim name.
pub const DEFAULT_SUBSCRIPTIONS_CLAIM: &str = "subs";
/// Default maximum token length, bytes (8 KiB).
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;

/// What a valid token must satisfy beyond its signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Required `iss`, if configured.
    pub issuer: Option<String>,
    /// Required member of `aud` (string or array), if configured.
    pub audience: Option<String>,
    /// Clock-skew allowance for `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// Name of the claim listing subscriptions (`subs`, or e.g. `custom:subs`).
    pub subscriptions_claim: String,
    /// Tokens longer than this are rejected before any parsing.
    pub max_token_bytes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            issuer: None,
            audience: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            subscriptions_claim: DEFAULT_SUBSCRIPTIONS_CLAIM.to_string(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

/// The claims of a verified token that access decisions use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `kid` of the key that verified the token.
    pub kid: String,
    /// [`VerifyKey::id`] of that key (a cache checks it is still live).
    pub key_id: u64,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not-before, if present.
    pub nbf: Option<u64>,
    /// Issued-at, if present (not checked).
    pub iat: Option<u64>,
    /// Subject (user id), if present.
    pub sub: Option<String>,
    /// Subscriptions from the policy's subscriptions claim; empty if absent
    /// or not an array of strings / comma-separated string.
    pub subs: Vec<String>,
    /// `subs` again, packed for [`Claims::entitled`]; built from `subs` by
    /// [`PackedNames::new`] wherever claims are made.
    pub(crate) subs_packed: PackedNames,
    /// Session id (revocable), if present.
    pub sid: Option<String>,
    /// Allowed path prefixes (media tokens); empty means the claim is absent.
    /// An explicitly empty array is rejected as malformed, so "empty" never
    /// has to be guessed as "nothing" or "everything".
    pub paths: Vec<String>,
    /// Client IP or CIDR the token is bound to, if present (parsed by the caller).
    pub ip: Option<String>,
}

impl Claims {
    /// Entitled iff `require` is empty or shares a name with `subs`.
    pub fn entitled(&self, require: &[String]) -> bool {
        entitled_by(require, |r| {
            self.subs_packed
                .contains(r)
                .unwrap_or_else(|| self.subs.iter().any(|s| s == r))
        })
    }
}

/// The entitlement rule: `require` is empty, or `has` one of its names.
pub(crate) fn entitled_by(require: &[String], has: impl Fn(&str) -> bool) -> bool {
    require.is_empty() || require.iter().any(|r| has(r))
}

/// Bytes of names a [`PackedNames`] holds.
const PACKED_BYTES: usize = 47;

/// A few short names (a token's subscriptions) in one fixed array, each after its length, so
/// that looking one up reads the memory of the struct that holds them. Why: a cached token's
/// entitlement check searched `subs`, a `Vec` of `String`s: two more pointers to follow after
/// the claims, each a cache miss when 10,000 readers take turns (the rotating-token rows of
/// `benches/peers/run.sh`; issue 20 closing note).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackedNames {
    /// Bytes of `names` in use; [`PackedNames::DID_NOT_FIT`] if the names did not fit.
    used: u8,
    names: [u8; PACKED_BYTES],
}

impl PackedNames {
    /// `used` of names that did not fit: [`PackedNames::contains`] cannot answer.
    const DID_NOT_FIT: u8 = u8::MAX;

    /// `names` packed, if together they fit.
    pub fn new(names: &[String]) -> PackedNames {
        let mut packed = PackedNames {
            used: 0,
            names: [0; PACKED_BYTES],
        };
        for name in names {
            let (at, name) = (usize::from(packed.used), name.as_bytes());
            let end = at + 1 + name.len();
            if end > PACKED_BYTES {
                packed.used = Self::DID_NOT_FIT;
                return packed;
            }
            packed.names[at] = name.len() as u8; // < PACKED_BYTES
            packed.names[at + 1..end].copy_from_slice(name);
            packed.used = end as u8;
        }
        packed
    }

    /// Whether every name fit, so that [`PackedNames::contains`] always answers.
    pub fn fits(&self) -> bool {
        self.used != Self::DID_NOT_FIT
    }

    /// The names as six words (the token cache's front holds them so, [`super::cache`]):
    /// `used`, then the name bytes, little-endian.
    pub fn to_words(&self) -> [u64; 6] {
        let mut bytes = [0u8; 48];
        bytes[0] = self.used;
        bytes[1..].copy_from_slice(&self.names);
        std::array::from_fn(|i| {
            u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
        })
    }

    /// Names from [`PackedNames::to_words`]; `None` unless they fit and every length stays
    /// inside them, so that [`PackedNames::contains`] cannot read past its array.
    pub fn from_words(words: [u64; 6]) -> Option<PackedNames> {
        let mut bytes = [0u8; 48];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        let packed = PackedNames {
            used: bytes[0],
            names: bytes[1..].try_into().expect("47 bytes"),
        };
        let used = usize::from(packed.used);
        let mut at = 0;
        while at < used && at < PACKED_BYTES {
            at += 1 + usize::from(packed.names[at]);
        }
        (used <= PACKED_BYTES && at == used).then_some(packed)
    }

    /// Whether `name` is one of the names; `None` if they did not fit (ask the list).
    pub fn contains(&self, name: &str) -> Option<bool> {
        if self.used == Self::DID_NOT_FIT {
            return None;
        }
        let (mut at, want) = (0, name.as_bytes());
        while at < usize::from(self.used) {
            let end = at + 1 + usize::from(self.names[at]);
            if self.names[at + 1..end] == *want {
                return Some(true);
            }
            at = end;
        }
        Some(false)
    }
}

impl Default for PackedNames {
    /// No names.
    fn default() -> PackedNames {
        PackedNames::new(&[])
    }
}

/// Why a token was refused. Values, not errors: denial is an expected outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    /// Not a well-formed JWS/JWT (segments, base64, JSON, required fields, forbidden headers).
    Malformed,
    /// No key with the header's `kid`.
    UnknownKid,
    /// The header's `alg` is not the key's pinned algorithm.
    AlgMismatch,
    /// The signature does not verify.
    BadSignature,
    /// `now > exp + leeway`.
    Expired,
    /// `nbf > now + leeway`.
    NotYetValid,
    /// `iss` missing or not the configured issuer.
    WrongIssuer,
    /// `aud` missing or does not contain the configured audience.
    WrongAudience,
    /// Longer than `Policy::max_token_bytes`.
    TooLong,
    /// The header has a `crit` member (no extensions are supported).
    UnsupportedCrit,
    /// Not verified: the client address spent its budget of failed checks
    /// (`limits.failed_auth`, [`crate::budget`]) and the token is not one already verified.
    Throttled,
}

impl Denial {
    /// Every variant, e.g. to pre-register metric label values.
    pub const ALL: [Denial; 11] = [
        Denial::Malformed,
        Denial::UnknownKid,
        Denial::AlgMismatch,
        Denial::BadSignature,
        Denial::Expired,
        Denial::NotYetValid,
        Denial::WrongIssuer,
        Denial::WrongAudience,
        Denial::TooLong,
        Denial::UnsupportedCrit,
        Denial::Throttled,
    ];

    /// Stable metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Denial::Malformed => "malformed",
            Denial::UnknownKid => "unknown_kid",
            Denial::AlgMismatch => "alg_mismatch",
            Denial::BadSignature => "bad_signature",
            Denial::Expired => "expired",
            Denial::NotYetValid => "not_yet_valid",
            Denial::WrongIssuer => "wrong_issuer",
            Denial::WrongAudience => "wrong_audience",
            Denial::TooLong => "too_long",
            Denial::UnsupportedCrit => "unsupported_crit",
            Denial::Throttled => "throttled",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Verify `token` against `keys` (by its header `kid`) and `policy` at `now_unix`.
pub fn verify(
    token: &str,
    keys: &KeySet,
    policy: &Policy,
    now_unix: u64,
) -> Result<Claims, Denial> {
    let parts = split(token, policy)?;
    let header = parse_header(parts.header)?;
    let kid = header.kid.as_deref().ok_or(Denial::Malformed)?;
    let key = keys.get(kid).ok_or(Denial::UnknownKid)?;
    check_signed(&parts, &header, key, policy, now_unix)
}

/// Verify `token` with one given key, ignoring the header's `kid` (which may
/// be absent) but still pinning `alg` to the key's. For callers that already
/// chose the key, and for test vectors without a `kid`.
pub fn verify_with_key(
    token: &str,
    key: &VerifyKey,
    policy: &Policy,
    now_unix: u64,
) -> Result<Claims, Denial> {
    let parts = split(token, policy)?;
    let header = parse_header(parts.header)?;
    check_signed(&parts, &header, key, policy, now_unix)
}

/// The three segments of a compact JWS, still base64url text.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'a str,
}

fn split<'a>(token: &'a str, policy: &Policy) -> Result<Parts<'a>, Denial> {
    if token.len() > policy.max_token_bytes {
        return Err(Denial::TooLong);
    }
    let mut it = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(Denial::Malformed);
    };
    // header and payload are ASCII-adjacent in `token`; slice them together.
    let signing_input = &token[..header.len() + 1 + payload.len()];
    Ok(Parts {
        header,
        payload,
        signature,
        signing_input,
    })
}

/// `true` for any present member, whatever its value (even `null`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// The JOSE header members Tollgate looks at. Unknown members are ignored;
/// duplicate members make deserialization fail (→ malformed).
#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kid: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
    #[serde(default, deserialize_with = "present")]
    jku: bool,
    #[serde(default, deserialize_with = "present")]
    jwk: bool,
    #[serde(default, deserialize_with = "present")]
    x5u: bool,
    #[serde(default, deserialize_with = "present")]
    x5c: bool,
}

/// The header members the signature check needs.
struct ParsedHeader {
    alg: String,
    kid: Option<String>,
}

fn decode(segment: &str) -> Result<Vec<u8>, Denial> {
    B64URL_STRICT.decode(segment).map_err(|_| Denial::Malformed)
}

/// JSON must be an object (serde would also accept an array for a struct).
fn is_json_object(bytes: &[u8]) -> bool {
    // UTF-8 checked whole: serde skips the strings of ignored members without looking at them
    // (fuzzing found a header with invalid UTF-8 in an unknown member accepted)
    std::str::from_utf8(bytes).is_ok()
        && bytes
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{')
}

fn parse_header(segment: &str) -> Result<ParsedHeader, Denial> {
    let bytes = decode(segment)?;
    if !is_json_object(&bytes) {
        return Err(Denial::Malformed);
    }
    let h: Header<'_> = serde_json::from_slice(&bytes).map_err(|_| Denial::Malformed)?;
    if h.jku || h.jwk || h.x5u || h.x5c {
        return Err(Denial::Malformed);
    }
    if h.crit {
        return Err(Denial::UnsupportedCrit);
    }
    let alg = h.alg.ok_or(Denial::Malformed)?.into_owned();
    Ok(ParsedHeader {
        alg,
        kid: h.kid.map(Cow::into_owned),
    })
}

/// Alg pinning, signature, then claims.
fn check_signed(
    parts: &Parts<'_>,
    header: &ParsedHeader,
    key: &VerifyKey,
    policy: &Policy,
    now: u64,
) -> Result<Claims, Denial> {
    if Alg::parse(&header.alg) != Some(key.alg) {
        return Err(Denial::AlgMismatch);
    }
    let signature = decode(parts.signature)?;
    if !key.verify(parts.signing_input.as_bytes(), &signature) {
        return Err(Denial::BadSignature);
    }
    let payload = decode(parts.payload)?;
    if !is_json_object(&payload) {
        return Err(Denial::Malformed);
    }
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| Denial::Malformed)?;
    check_claims(&claims, key, policy, now)
}

/// A NumericDate: integer or float, floored; negative → 0; absent → None.
fn numeric_date(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                Ok(Some(u))
            } else if n.as_i64().is_some() {
                Ok(Some(0))
            } else {
                // `as` saturates: huge floats → u64::MAX, negatives → 0.
                Ok(Some(n.as_f64().map_or(0, |f| f.floor() as u64)))
            }
        }
        Some(_) => Err(Denial::Malformed),
    }
}

/// An optional string claim; present with another type is malformed, since
/// these claims restrict access and must not be silently dropped.
fn opt_string(claims: &Map<String, Value>, name: &str) -> Result<Option<String>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Denial::Malformed),
    }
}

/// Subscriptions: an array of strings, or a comma-separated string. Anything
/// else means "no subscriptions" (fails closed without being malformed).
fn subscriptions(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        _ => Vec::new(),
    }
}

fn check_claims(
    claims: &Map<String, Value>,
    key: &VerifyKey,
    policy: &Policy,
    now: u64,
) -> Result<Claims, Denial> {
    let exp = numeric_date(claims, "exp")?.ok_or(Denial::Malformed)?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    if now > exp.saturating_add(policy.leeway_secs) {
        return Err(Denial::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(policy.leeway_secs)) {
        return Err(Denial::NotYetValid);
    }
    if let Some(want) = &policy.issuer {
        if claims.get("iss").and_then(Value::as_str) != Some(want.as_str()) {
            return Err(Denial::WrongIssuer);
        }
    }
    if let Some(want) = &policy.audience {
        let ok = match claims.get("aud") {
            Some(Value::String(a)) => a == want,
            Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(want.as_str())),
            _ => false,
        };
        if !ok {
            return Err(Denial::WrongAudience);
        }
    }
    let paths = match claims.get("paths") {
        None => Vec::new(),
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|p| p.as_str().map(str::to_string).ok_or(Denial::Malformed))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(Denial::Malformed),
    };
    let subs = subscriptions(claims.get(&policy.subscriptions_claim));
    Ok(Claims {
        kid: key.kid.clone(),
        key_id: key.id,
        exp,
        nbf,
        iat,
        sub: opt_string(claims, "sub")?,
        subs_packed: PackedNames::new(&subs),
        subs,
        sid: opt_string(claims, "sid")?,
        paths,
        ip: opt_string(claims, "ip")?,
    })
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;

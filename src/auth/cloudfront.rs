//! CloudFront-compatible signed URLs and signed cookies (access mode `signed`).
//!
//! A publisher moving off CloudFront keeps its signing code: this verifies
//! exactly what CloudFront verifies.
//!
//! - Signed URL parameters: `Expires` (canned policy) or `Policy` (custom),
//!   plus `Signature`, `Key-Pair-Id` and optional `Hash-Algorithm`.
//! - Signed cookies: `CloudFront-Expires` or `CloudFront-Policy`, plus
//!   `CloudFront-Signature`, `CloudFront-Key-Pair-Id` and optional
//!   `CloudFront-Hash-Algorithm`.
//! - If any signing parameter is in the URL, only the URL is used (CloudFront:
//!   "signed URLs take precedence over signed cookies").
//! - The signature covers the policy bytes. A canned policy is rebuilt from
//!   the request URL (minus the signing parameters) and `Expires`, byte for
//!   byte as botocore's `CloudFrontSigner` writes it; a custom policy is the
//!   base64-decoded `Policy`. Values use CloudFront's base64 (`+`→`-`, `=`→`_`,
//!   `/`→`~`) and may be percent-encoded.
//! - `Hash-Algorithm` absent or `SHA1`: RSA-SHA1 / ECDSA-SHA1 (what
//!   `openssl sha1 -sign` makes); `SHA256`: RSA-SHA256 / ECDSA-SHA256. ECDSA
//!   signatures are DER, as openssl writes them. Anything else is denied.
//! - Custom policy conditions: `DateLessThan` (required, `now < t`),
//!   `DateGreaterThan` (`now > t`), `IpAddress.AWS:SourceIp` (IPv4 or IPv6
//!   CIDR) and `Resource` matched against `scheme://host/path[?query]` with
//!   `*` (any run, also empty) and `?` (one byte). A policy without
//!   `Resource` applies to every URL, as in CloudFront.
//!
//! The signature is checked before the policy JSON is parsed, so only
//! publisher-signed JSON reaches the parser and the wildcard matcher.
//! Denials are values ([`SignedDenial`]) with stable metric labels; nothing
//! here panics on any input.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use percent_encoding::percent_decode_str;

mod keys;
mod policy;
use crate::cidr::Cidr;
use crate::request::{pair_name, query_pairs};
use keys::RememberedGrant;
pub use keys::{SignedKey, SignedKeyError, SignedKeyKind, SignedKeys};
use policy::{canned_policy, parse_policy, wildcard_match};

/// Query parameters CloudFront reads from a signed URL. They are neither part
/// of the signed resource nor forwarded to the origin.
pub const SIGNING_PARAMS: [&str; 5] = [
    "Expires",
    "Policy",
    "Signature",
    "Key-Pair-Id",
    "Hash-Algorithm",
];

/// Cookies CloudFront reads for signed cookies (same order as
/// [`SIGNING_PARAMS`]); strip them before forwarding to the origin.
pub const SIGNED_COOKIE_NAMES: [&str; 5] = [
    "CloudFront-Expires",
    "CloudFront-Policy",
    "CloudFront-Signature",
    "CloudFront-Key-Pair-Id",
    "CloudFront-Hash-Algorithm",
];

/// Longest accepted `Policy` value, in characters (before decoding).
pub const MAX_POLICY_CHARS: usize = 8192;
/// Longest accepted `Signature` value, in characters (RSA-8192 needs 1368).
pub const MAX_SIGNATURE_CHARS: usize = 2048;

const EXPIRES: usize = 0;
const POLICY: usize = 1;
const SIGNATURE: usize = 2;
const KEY_PAIR_ID: usize = 3;
const HASH_ALGORITHM: usize = 4;

/// Standard-alphabet base64, after CloudFront's three characters are mapped
/// back. Padding may be present or not; non-canonical trailing bits are not.
const CF_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(false),
);

/// The parts of a request that signed-URL / signed-cookie checks read.
#[derive(Debug, Clone, Copy)]
pub struct SignedRequest<'a> {
    /// `http` or `https`, as the viewer used it.
    pub scheme: &'a str,
    /// The `Host` (authority) the viewer used, with a port if it sent one.
    pub host: &'a str,
    /// The raw request path, as received (still percent-encoded).
    pub path: &'a str,
    /// The raw query string without `?`, signing parameters included.
    pub query: &'a str,
    /// Every `Cookie` header value (HTTP/2 may send several).
    pub cookie_headers: &'a [&'a str],
    /// The viewer's address, for `IpAddress` conditions.
    pub client_ip: Option<IpAddr>,
}

/// Where the accepted signature came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignedSource {
    /// Query parameters of the URL.
    Url,
    /// `CloudFront-*` cookies.
    Cookie,
}

/// Which kind of policy was signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// `Expires` given; the policy is rebuilt from the URL.
    Canned,
    /// `Policy` given as base64 JSON.
    Custom,
}

/// Digest named by `Hash-Algorithm` (absent means SHA-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlgorithm {
    /// SHA-1, CloudFront's default.
    Sha1,
    /// SHA-256 (`Hash-Algorithm=SHA256`).
    Sha256,
}

impl HashAlgorithm {
    /// Parse a `Hash-Algorithm` value; exact and case-sensitive.
    pub fn parse(value: &str) -> Option<HashAlgorithm> {
        match value {
            "SHA1" => Some(HashAlgorithm::Sha1),
            "SHA256" => Some(HashAlgorithm::Sha256),
            _ => None,
        }
    }
}

/// A request that passed the check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedGrant {
    /// The key pair whose key verified the signature.
    pub key_pair_id: Arc<str>,
    /// Unix time from which the grant is no longer valid (`Expires` or `DateLessThan`).
    pub expires: u64,
    /// `DateGreaterThan`, if the policy had one.
    pub not_before: Option<u64>,
    /// URL parameters or cookies.
    pub source: SignedSource,
    /// Canned or custom policy.
    pub policy: PolicyKind,
    /// Digest used by the signature.
    pub hash: HashAlgorithm,
}

/// Why a request was refused. `as_str()` is a stable metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignedDenial {
    /// No signing parameter in the URL and no `CloudFront-*` cookie.
    Missing,
    /// Incomplete, duplicated or undecodable signing values, or a signed
    /// policy that is not a valid policy document.
    Malformed,
    /// `Key-Pair-Id` names no configured key.
    UnknownKey,
    /// `Hash-Algorithm` is neither `SHA1` nor `SHA256`.
    BadHashAlgorithm,
    /// The signature does not verify (for a canned policy this includes a
    /// URL or `Expires` other than the signed one).
    BadSignature,
    /// `now` is at or past `Expires` / `DateLessThan`.
    Expired,
    /// `now` is at or before `DateGreaterThan`.
    NotYetValid,
    /// The client address is outside `IpAddress`, or unknown.
    WrongIp,
    /// The URL does not match the policy's `Resource`.
    WrongResource,
    /// Not verified: the client address spent its budget of failed checks (`limits.failed_auth`)
    /// and the signature is not one already verified.
    Throttled,
}

impl SignedDenial {
    /// Every variant, e.g. to pre-register metric label values.
    pub const ALL: [SignedDenial; 10] = [
        SignedDenial::Missing,
        SignedDenial::Malformed,
        SignedDenial::UnknownKey,
        SignedDenial::BadHashAlgorithm,
        SignedDenial::BadSignature,
        SignedDenial::Expired,
        SignedDenial::NotYetValid,
        SignedDenial::WrongIp,
        SignedDenial::WrongResource,
        SignedDenial::Throttled,
    ];

    /// Stable metric label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            SignedDenial::Missing => "missing",
            SignedDenial::Malformed => "malformed",
            SignedDenial::UnknownKey => "unknown_key",
            SignedDenial::BadHashAlgorithm => "bad_hash_algorithm",
            SignedDenial::BadSignature => "bad_signature",
            SignedDenial::Expired => "expired",
            SignedDenial::NotYetValid => "not_yet_valid",
            SignedDenial::WrongIp => "wrong_ip",
            SignedDenial::WrongResource => "wrong_resource",
            SignedDenial::Throttled => "throttled",
        }
    }
}

impl fmt::Display for SignedDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Check a request's signed URL parameters or, if it has none, its signed
/// cookies, at Unix time `now` (seconds).
pub fn verify(
    req: &SignedRequest<'_>,
    keys: &SignedKeys,
    now: u64,
) -> Result<SignedGrant, SignedDenial> {
    verify_gated(req, keys, now, &|| true)
}

/// [`verify`], asking `may_verify` before a signature that is not remembered as good is
/// checked: `false` refuses with [`SignedDenial::Throttled`] (the failed-credential budget,
/// [`crate::budget`]).
pub fn verify_gated(
    req: &SignedRequest<'_>,
    keys: &SignedKeys,
    now: u64,
    may_verify: &dyn Fn() -> bool,
) -> Result<SignedGrant, SignedDenial> {
    // A signed URL granted before: only what depends on when and from where is checked again.
    let digest = (!req.query.is_empty())
        .then(|| keys::digest_of([req.scheme, req.host, req.path, req.query].map(str::as_bytes)));
    if let Some(remembered) = digest.as_ref().and_then(|d| keys.granted(d)) {
        return recheck(remembered, req.client_ip, now);
    }
    let (grant, source_ip) = verify_in_full(req, keys, now, may_verify)?;
    if let (Some(digest), SignedSource::Url) = (digest, grant.source) {
        let remembered = RememberedGrant {
            grant: grant.clone(),
            source_ip,
        };
        keys.remember_grant(digest, remembered);
    }
    Ok(grant)
}

/// A remembered grant, checked against the clock and the client address with the checks
/// [`verify_in_full`] runs, in its order, so that a refusal has the same label either way.
fn recheck(
    remembered: RememberedGrant,
    client_ip: Option<IpAddr>,
    now: u64,
) -> Result<SignedGrant, SignedDenial> {
    let RememberedGrant { grant, source_ip } = remembered;
    in_time(grant.expires, grant.not_before, now)?;
    from_address(source_ip, client_ip)?;
    Ok(grant)
}

/// `now` is before `expires` and, if given, after `not_before`.
fn in_time(expires: u64, not_before: Option<u64>, now: u64) -> Result<(), SignedDenial> {
    if now >= expires {
        return Err(SignedDenial::Expired);
    }
    if not_before.is_some_and(|t| now <= t) {
        return Err(SignedDenial::NotYetValid);
    }
    Ok(())
}

/// The client is inside the policy's `IpAddress` range, if it has one.
fn from_address(source_ip: Option<Cidr>, client_ip: Option<IpAddr>) -> Result<(), SignedDenial> {
    match source_ip {
        Some(cidr) if !client_ip.is_some_and(|c| cidr.contains(c)) => Err(SignedDenial::WrongIp),
        _ => Ok(()),
    }
}

/// Every check of [`verify_gated`], with the custom policy's `IpAddress` condition.
fn verify_in_full(
    req: &SignedRequest<'_>,
    keys: &SignedKeys,
    now: u64,
    may_verify: &dyn Fn() -> bool,
) -> Result<(SignedGrant, Option<Cidr>), SignedDenial> {
    let remembered = |key, hash, message: &[u8], signature: &[u8]| {
        keys.verify_remembered(key, hash, message, signature, may_verify)
            .ok_or(SignedDenial::Throttled)
    };
    let from_url = Fields::from_query(req.query);
    let (fields, source) = if from_url.any() {
        (from_url, SignedSource::Url)
    } else {
        let from_cookies = Fields::from_cookies(req.cookie_headers);
        if !from_cookies.any() {
            return Err(SignedDenial::Missing);
        }
        (from_cookies, SignedSource::Cookie)
    };
    if fields.conflict {
        return Err(SignedDenial::Malformed);
    }
    let v = &fields.values;
    let (Some(signature), Some(key_pair_id)) = (v[SIGNATURE], v[KEY_PAIR_ID]) else {
        return Err(SignedDenial::Malformed);
    };
    let kind = match (v[EXPIRES], v[POLICY]) {
        (Some(_), None) => PolicyKind::Canned,
        (None, Some(_)) => PolicyKind::Custom,
        _ => return Err(SignedDenial::Malformed),
    };
    let hash = match v[HASH_ALGORITHM] {
        None => HashAlgorithm::Sha1,
        Some(raw) => {
            HashAlgorithm::parse(&pct_decode(raw)?).ok_or(SignedDenial::BadHashAlgorithm)?
        }
    };
    let key = keys
        .get(&pct_decode(key_pair_id)?)
        .ok_or(SignedDenial::UnknownKey)?;
    let signature = cf_b64_decode(signature, MAX_SIGNATURE_CHARS)?;

    let url = resource_url(req);
    let grant = |expires, not_before| SignedGrant {
        key_pair_id: Arc::clone(key.key_pair_id_arc()),
        expires,
        not_before,
        source,
        policy: kind,
        hash,
    };
    if let Some(expires) = v[EXPIRES] {
        let expires = parse_epoch(&pct_decode(expires)?)?;
        if !remembered(
            key,
            hash,
            canned_policy(&url, expires).as_bytes(),
            &signature,
        )? {
            return Err(SignedDenial::BadSignature);
        }
        in_time(expires, None, now)?;
        return Ok((grant(expires, None), None));
    }
    let policy = v[POLICY].ok_or(SignedDenial::Malformed)?;
    let policy = cf_b64_decode(policy, MAX_POLICY_CHARS)?;
    if !remembered(key, hash, &policy, &signature)? {
        return Err(SignedDenial::BadSignature);
    }
    let statement = parse_policy(&policy)?;
    let cond = &statement.condition;
    let expires = cond.date_less_than.time;
    let not_before = cond.date_greater_than.as_ref().map(|t| t.time);
    in_time(expires, not_before, now)?;
    let source_ip = match &cond.ip_address {
        Some(ip) => Some(Cidr::parse(&ip.source_ip).ok_or(SignedDenial::Malformed)?),
        None => None,
    };
    from_address(source_ip, req.client_ip)?;
    if let Some(resource) = &statement.resource {
        if !wildcard_match(resource.as_bytes(), url.as_bytes()) {
            return Err(SignedDenial::WrongResource);
        }
    }
    Ok((grant(expires, not_before), source_ip))
}

/// True if `query` holds any CloudFront signing parameter (then only the URL
/// is checked, never the cookies).
pub fn has_signing_params(query: &str) -> bool {
    Fields::from_query(query).any()
}

/// `query` without the [`SIGNING_PARAMS`], other parameters kept in order and
/// in their original encoding. Borrows when there is nothing to remove.
pub fn strip_signing_params(query: &str) -> Cow<'_, str> {
    if !has_signing_params(query) {
        return Cow::Borrowed(query);
    }
    let kept: Vec<&str> = query_pairs(query)
        .filter(|seg| !SIGNING_PARAMS.contains(&pair_name(seg)))
        .collect();
    Cow::Owned(kept.join("&"))
}

/// A `Cookie` header value without the [`SIGNED_COOKIE_NAMES`] cookies. An
/// empty result means no cookie is left and the header should be dropped.
pub fn strip_signed_cookies(cookie_header: &str) -> Cow<'_, str> {
    let is_signed = |pair: &str| SIGNED_COOKIE_NAMES.contains(&cookie_pair(pair).0);
    if !cookie_header.split(';').any(is_signed) {
        return Cow::Borrowed(cookie_header);
    }
    let kept: Vec<&str> = cookie_header
        .split(';')
        .filter(|p| !is_signed(p) && !p.trim().is_empty())
        .map(str::trim)
        .collect();
    Cow::Owned(kept.join("; "))
}

/// Signing values found in the URL or the cookies, by field index.
struct Fields<'a> {
    values: [Option<&'a str>; 5],
    /// A field was given twice (URL), or twice with different values (cookies).
    conflict: bool,
}

impl<'a> Fields<'a> {
    fn from_query(query: &'a str) -> Fields<'a> {
        let mut f = Fields {
            values: [None; 5],
            conflict: false,
        };
        if query.is_empty() {
            return f;
        }
        for seg in query_pairs(query) {
            let name = pair_name(seg);
            if let Some(i) = SIGNING_PARAMS.iter().position(|p| *p == name) {
                let value = seg.get(name.len() + 1..).unwrap_or("");
                f.conflict |= f.values[i].is_some();
                f.values[i] = Some(value);
            }
        }
        f
    }

    fn from_cookies(headers: &[&'a str]) -> Fields<'a> {
        let mut f = Fields {
            values: [None; 5],
            conflict: false,
        };
        for pair in headers.iter().flat_map(|h| h.split(';')) {
            let (name, value) = cookie_pair(pair);
            if let Some(i) = SIGNED_COOKIE_NAMES.iter().position(|c| *c == name) {
                // A browser sends every matching cookie (e.g. set under two
                // paths); the same value twice is harmless, two values are not.
                f.conflict |= f.values[i].is_some_and(|old| old != value);
                f.values[i] = Some(value);
            }
        }
        f
    }

    fn any(&self) -> bool {
        self.conflict || self.values.iter().any(Option::is_some)
    }
}

/// `name=value` from one `;`-separated cookie pair: whitespace trimmed and a
/// DQUOTE-wrapped value unwrapped (RFC 6265 §4.1.1).
fn cookie_pair(pair: &str) -> (&str, &str) {
    let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    (name.trim(), value)
}

fn pct_decode(raw: &str) -> Result<Cow<'_, str>, SignedDenial> {
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| SignedDenial::Malformed)
}

/// Decode CloudFront's URL-safe base64 (`-`, `_`, `~` for `+`, `=`, `/`),
/// percent-encoded or not. The standard `+`, `=`, `/` are not accepted.
fn cf_b64_decode(raw: &str, max_chars: usize) -> Result<Vec<u8>, SignedDenial> {
    let text = pct_decode(raw)?;
    if text.is_empty() || text.len() > max_chars {
        return Err(SignedDenial::Malformed);
    }
    let mapped = text
        .bytes()
        .map(|b| match b {
            b'-' => Ok(b'+'),
            b'_' => Ok(b'='),
            b'~' => Ok(b'/'),
            b if b.is_ascii_alphanumeric() => Ok(b),
            _ => Err(SignedDenial::Malformed),
        })
        .collect::<Result<Vec<u8>, _>>()?;
    match CF_B64.decode(mapped) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(SignedDenial::Malformed),
    }
}

/// A Unix time as CloudFront writes it: decimal digits only.
fn parse_epoch(text: &str) -> Result<u64, SignedDenial> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SignedDenial::Malformed);
    }
    text.parse().map_err(|_| SignedDenial::Malformed)
}

/// `scheme://host/path[?query]` with the signing parameters removed: the
/// resource a canned policy names and a custom policy's `Resource` matches.
fn resource_url(req: &SignedRequest<'_>) -> String {
    let query = strip_signing_params(req.query);
    let mut url = String::with_capacity(
        req.scheme.len() + 3 + req.host.len() + req.path.len() + 1 + query.len(),
    );
    url.push_str(req.scheme);
    url.push_str("://");
    url.push_str(req.host);
    url.push_str(req.path);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    url
}

#[cfg(test)]
#[path = "cloudfront_tests.rs"]
mod tests;

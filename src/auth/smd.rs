//! Optional verifier for the token format of "Secure Media Delivery at the Edge on AWS"
//! (issue 4: a publisher can move to Tollgate without changing its token service).
//!
//! Re-implemented in Rust from a reading of the solution's source,
//! <https://github.com/aws-solutions/secure-media-delivery-at-the-edge> at commit `1e17e14`
//! (release v1.2.6); no code was copied. Files read:
//!
//! - `source/lambda/generate_secret_update_cff/cff.js`: the CloudFront Function validator
//!   ("the validator" below);
//! - `source/resources/sdk/node/v1/aws-secure-media-delivery.js`: the token generator
//!   library, class `Token` ("the generator");
//! - `source/lambda/generate_token/nodejs/index.js`: the API Lambda feeding the generator
//!   (where co/reg/cty values and the viewer IP come from);
//! - `source/lambda/generate_secret_update_cff/index.js`: secret and key id formats;
//! - `source/resources/mock/assets.json`, `source/test/check_token_cff.test.ts`: example
//!   policies (`paths: ["/out/v1/<id>/"]`, `exc: ["/ads/"]`).
//!
//! # What is matched
//!
//! **Token location.** The token is the first segment of the URL path:
//! `/<auth>/<original path>`, where `<auth>` is `<header>.<payload>.<signature>` or, for
//! session-bound tokens, `<session id>.<header>.<payload>.<signature>` (four `.`-parts: the
//! first is the session id). The validator checks the token against the path with that
//! segment removed, and forwards that path to the origin. [`split_token_from_path`] does the
//! split; [`verify`] takes `<auth>` (three or four parts) and [`SmdRequest::path`] the rest.
//! Media players resolve relative segment URLs against the manifest URL, so the token
//! segment carries over to every segment request without rewriting manifests.
//!
//! **JWS.** Compact JWS, `alg` `HS256` only, header `kid` names the secret. Secrets are the
//! validator's `{ "<kid>": "<secret>", ... }` map (the solution keeps two, primary and
//! secondary, for rotation; kids look like `20240101_<20 hex>`, secrets are 128 hex
//! characters). The HMAC key is the secret *string's bytes* (not hex-decoded).
//!
//! **Claims** (as the generator emits them): `exp` (seconds), optional `nbf`, `iat` (set by
//! the JWT library, not checked), booleans `ip`, `co`, `cty`, `reg`, `ssn`, `co_fallback`,
//! `reg_fallback`, `cty_fallback`, `ip_ver` (4 or 6, present when `ip`), string arrays
//! `headers` (header names), `qs` (query parameter names), `paths`, `exc`, and `intsig`.
//!
//! **Time.** Expired iff `now > exp`, not yet valid iff `now < nbf`: still valid at exactly
//! `exp` and from exactly `nbf`, and no clock leeway, as the validator (`Date.now()` against
//! `exp*1000` / `nbf*1000`). [`verify_with_leeway`] adds one if wanted.
//!
//! **Order of checks** as the validator: signature, `exp`, `nbf`, `exc`, `paths`, viewer
//! binding (`ip_ver`, `intsig`).
//!
//! **`exc`.** If the request path is under any `exc` entry the token is accepted right there:
//! signature and time were checked, `paths` and `intsig` are skipped (for ads, keys and other
//! shared objects). Reported as [`Binding::Excluded`].
//!
//! **`paths`.** The request path must be under one of the entries, else denied.
//!
//! **`intsig`** (internal signature binding the token to the viewer). Its input is built from
//! these values, in this order, each *followed by `:`*, and the final `:` removed:
//! 1. `ip`: the viewer IP, IPv4 as dotted quad, IPv6 fully expanded: eight hextets of four
//!    lower-case hex digits (`2001:0db8:0000:0000:0000:0000:0000:0001`), the generator's
//!    form; `ip_ver` must equal the viewer's IP version;
//! 2. `co`: the `cloudfront-viewer-country` header value;
//! 3. `cty`: the `cloudfront-viewer-city` header value (see the fixes);
//! 4. `reg`: the `cloudfront-viewer-country-region` header value;
//! 5. `ssn`: the session id from the token's path segment;
//! 6. for each name in `headers`, in token order: that request header's value, *skipped*
//!    when the header is absent or empty;
//! 7. for each name in `qs`, in token order: that query parameter's value, likewise skipped.
//!
//! `intsig` = base64url (no padding) of HMAC-SHA256 over that input with the same secret as
//! the JWS (the `kid`'s). If `co` (`reg`, `cty`) is set, its header is missing and the
//! matching `*_fallback` is true, the validator skips the whole `intsig` check and accepts;
//! that is kept ([`Binding::GeoFallback`]) so tokens keep working where no geo data exists,
//! but note that it also skips the IP and session binding: Tollgate must set the
//! `cloudfront-viewer-*` headers itself from trusted data (and drop client-sent ones)
//! before calling [`verify`], or a client can trigger the fallback by omission.
//! A missing geo header without fallback, a missing session id, a missing client IP or an
//! IP version different from `ip_ver` deny the request.
//!
//! Header names are looked up case-insensitively (the validator sees lower-case names only,
//! so a token naming `User-Agent` never verified there; it does here). The first occurrence
//! of a header or query parameter is used. Query parameter names and values are
//! form-decoded (`+` is a space, then `%XX`), as the generator read them (Node's
//! `querystring.parse` / API Gateway's decoded parameters).
//!
//! # Defects fixed (not copied)
//!
//! - `paths` were matched with `startsWith`, so `/vod/abc` unlocked `/vod/abcdef`. Here an
//!   entry covers itself and what lies below it on a `/` boundary (an entry ending in `/`
//!   covers everything below it), via [`crate::request::path_in_scope`]. The same
//!   rule applies to `exc`, since an exclusion widens access.
//! - The validator expanded IPv6 viewer addresses by padding hextets but left `::` in
//!   place, while the generator expanded `::`, so compressed IPv6 viewers never matched.
//!   Here the client address is parsed ([`IpAddr`]), an IPv4-mapped IPv6 address
//!   (`::ffff:a.b.c.d`, from dual-stack sockets) becomes its IPv4 address, and the string
//!   that enters `intsig` is the canonical expanded form, so every spelling of the same
//!   address matches (and the check does not depend on the proxy's formatting).
//! - Signature and `intsig` were compared with `===` on base64 strings. Here both are
//!   strictly base64url-decoded and checked with `ring::hmac::verify` (constant time).
//! - When every listed header and query parameter was absent, the validator's recomputed
//!   input was empty and it accepted without checking `intsig` (strip the headers to
//!   bypass). Here a present `intsig` is always verified; an empty input fails.
//! - `cty` is in the generator's input but not in the validator's, so `cty` tokens could
//!   never verify on AWS. Here `cty` is honoured at the generator's position.
//! - A token with `ip`/`co`/`cty`/`reg`/`ssn` set but no `intsig` was accepted unbound; the
//!   generator never produces one, so here it is malformed (fail closed).
//! - `exp` was optional (checked only if present); here it is required. `paths` missing is
//!   malformed (the validator crashed, i.e. denied); `exc` missing means no exclusions.
//! - `ip_ver` validation was broken by a misplaced parenthesis; here it must be 4 or 6.
//! - Base64url and JSON are parsed strictly: padding, non-canonical encodings, duplicate
//!   claim names and wrongly typed claims are malformed; `crit` is unsupported; the whole
//!   `<auth>` is capped at [`MAX_TOKEN_BYTES`].
//! - The session id is reported ([`SmdClaims::sid`], the revocation key) only when `ssn` is
//!   set and `intsig` verified it; otherwise it is client-chosen and `None`.
//!
//! The `:`-joined `intsig` input is ambiguous (a value containing `:` can stand for two), and
//! absent headers are skipped rather than marked; both are part of the wire format and kept.
//!
//! # Denials
//!
//! [`Denial`] has no SMD-specific reasons; mapping: `intsig` mismatch, or a binding input
//! that is missing (client IP, IP version, geo header, session id) → `BadSignature`; path not
//! under any `paths` entry → `WrongAudience` (the token is not meant for this resource);
//! bad `ip_ver`, undecodable `intsig`, binding flags without `intsig` → `Malformed`.

use std::net::IpAddr;

use base64::Engine;
use ring::hmac;
use serde::de::{Deserializer, IgnoredAny};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::jwt::{Denial, B64URL_STRICT};

mod secrets;
use crate::request::path_in_scope;
pub use secrets::{SmdError, SmdSecrets};

/// The only JWS algorithm of the format.
pub const ALG: &str = "HS256";
/// Longest `<auth>` path segment accepted, bytes.
pub const MAX_TOKEN_BYTES: usize = 8192;
/// Header carrying the viewer's country (`co`).
pub const HEADER_COUNTRY: &str = "cloudfront-viewer-country";
/// Header carrying the viewer's city (`cty`).
pub const HEADER_CITY: &str = "cloudfront-viewer-city";
/// Header carrying the viewer's region (`reg`).
pub const HEADER_REGION: &str = "cloudfront-viewer-country-region";

/// The request facts the token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct SmdRequest<'a> {
    /// Normalized request path with the token segment removed (what the origin sees).
    pub path: &'a str,
    /// The viewer's address (any spelling; canonicalized here).
    pub client_ip: Option<IpAddr>,
    /// Request headers, lower-case names; first occurrence wins. The
    /// `cloudfront-viewer-*` geo headers must come from the edge, not the client.
    pub headers: &'a [(&'a str, &'a [u8])],
    /// Raw query string without `?` and without any token parameter.
    pub query: &'a str,
}

/// How the viewer binding (`intsig`) was settled for an accepted token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// `intsig` present and verified against this request.
    Verified,
    /// The token carries no `intsig` (not bound to the viewer).
    Unbound,
    /// The path is under an `exc` entry: `paths` and `intsig` were not checked.
    Excluded,
    /// A geo header was missing and the token's `*_fallback` allowed skipping `intsig`.
    GeoFallback,
}

/// The facts of an accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmdClaims {
    /// `kid` of the secret that verified it.
    pub kid: String,
    /// Session id, only when `ssn` is set and `intsig` verified it (revocation key).
    pub sid: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not-before, if present.
    pub nbf: Option<u64>,
    /// Issued-at, if present (not checked).
    pub iat: Option<u64>,
    /// Allowed path prefixes (segment boundaries).
    pub paths: Vec<String>,
    /// Excluded path prefixes (no binding checks there).
    pub exc: Vec<String>,
    /// How the viewer binding was settled.
    pub binding: Binding,
}

/// Splits `/<auth>/<rest>` into `(<auth>, "/<rest>")`, as the validator reads the URI: the
/// first path segment is the token, and there must be a `/` after it. `None` when there is
/// no such segment.
pub fn split_token_from_path(path: &str) -> Option<(&str, &str)> {
    let after = path.strip_prefix('/')?;
    let end = after.find('/')?;
    let (auth, rest) = after.split_at(end);
    if auth.is_empty() {
        return None;
    }
    Some((auth, rest))
}

/// Verifies an SMD `<auth>` (`[sid.]header.payload.signature`) for `req` at `now_unix`,
/// with no clock leeway (as the AWS validator).
pub fn verify(
    token: &str,
    secrets: &SmdSecrets,
    req: &SmdRequest<'_>,
    now_unix: u64,
) -> Result<SmdClaims, Denial> {
    verify_with_leeway(token, secrets, req, now_unix, 0)
}

/// [`verify`] allowing `leeway_secs` of clock skew on `exp` and `nbf`.
pub fn verify_with_leeway(
    token: &str,
    secrets: &SmdSecrets,
    req: &SmdRequest<'_>,
    now_unix: u64,
    leeway_secs: u64,
) -> Result<SmdClaims, Denial> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Denial::TooLong);
    }
    let parts = split(token)?;
    let (kid, key) = check_header(parts.header, secrets)?;
    let signature = decode(parts.signature)?;
    if hmac::verify(key, parts.signing_input.as_bytes(), &signature).is_err() {
        return Err(Denial::BadSignature);
    }
    let payload = parse_payload(parts.payload)?;

    let exp = payload.exp.as_ref().ok_or(Denial::Malformed)?;
    let exp = numeric_date(exp)?;
    let nbf = payload.nbf.as_ref().map(numeric_date).transpose()?;
    let iat = payload.iat.as_ref().map(numeric_date).transpose()?;
    if now_unix > exp.saturating_add(leeway_secs) {
        return Err(Denial::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now_unix.saturating_add(leeway_secs)) {
        return Err(Denial::NotYetValid);
    }
    let paths = payload.paths.clone().ok_or(Denial::Malformed)?;
    let exc = payload.exc.clone().unwrap_or_default();

    let mut claims = SmdClaims {
        kid: kid.to_string(),
        sid: None,
        exp,
        nbf,
        iat,
        paths,
        exc,
        binding: Binding::Unbound,
    };
    if claims.exc.iter().any(|p| path_in_scope(req.path, p)) {
        claims.binding = Binding::Excluded;
        return Ok(claims);
    }
    if !claims.paths.iter().any(|p| path_in_scope(req.path, p)) {
        return Err(Denial::WrongAudience);
    }

    let intsig = payload.intsig.as_deref().filter(|s| !s.is_empty());
    let Some(intsig) = intsig else {
        if payload.viewer_bound() {
            return Err(Denial::Malformed);
        }
        return Ok(claims);
    };
    let tag = decode(intsig)?;
    match intsig_input(&payload, req, parts.sid)? {
        Input::GeoFallback => claims.binding = Binding::GeoFallback,
        Input::Data(data) => {
            if hmac::verify(key, &data, &tag).is_err() {
                return Err(Denial::BadSignature);
            }
            claims.binding = Binding::Verified;
            if payload.ssn == Some(true) {
                claims.sid = parts.sid.map(str::to_string);
            }
        }
    }
    Ok(claims)
}

/// The `<auth>` pieces, still base64url text.
struct Parts<'a> {
    sid: Option<&'a str>,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
}

fn split(auth: &str) -> Result<Parts<'_>, Denial> {
    let (sid, token) = match auth.matches('.').count() {
        2 => (None, auth),
        3 => {
            let (sid, token) = auth.split_once('.').ok_or(Denial::Malformed)?;
            // An empty prefix is no session id (the validator treats "" as absent).
            (Some(sid).filter(|s| !s.is_empty()), token)
        }
        _ => return Err(Denial::Malformed),
    };
    let mut it = token.splitn(3, '.');
    let (Some(header), Some(payload), Some(signature)) = (it.next(), it.next(), it.next()) else {
        return Err(Denial::Malformed);
    };
    Ok(Parts {
        sid,
        header,
        payload,
        signature,
        signing_input: &token[..header.len() + 1 + payload.len()],
    })
}

fn decode(segment: &str) -> Result<Vec<u8>, Denial> {
    B64URL_STRICT.decode(segment).map_err(|_| Denial::Malformed)
}

/// JSON must be an object (serde would also accept an array for a struct), and UTF-8 all
/// through: serde skips the strings of ignored members without checking them (fuzzing found a
/// payload with invalid UTF-8 in an unknown member accepted).
fn json_object<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, Denial> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') || std::str::from_utf8(bytes).is_err() {
        return Err(Denial::Malformed);
    }
    serde_json::from_slice(bytes).map_err(|_| Denial::Malformed)
}

/// `true` for any present member, whatever its value.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    #[serde(default, deserialize_with = "present")]
    crit: bool,
}

fn check_header<'s>(
    segment: &str,
    secrets: &'s SmdSecrets,
) -> Result<(String, &'s hmac::Key), Denial> {
    let bytes = decode(segment)?;
    let h: Header = json_object(&bytes)?;
    if h.crit {
        return Err(Denial::UnsupportedCrit);
    }
    if h.alg.ok_or(Denial::Malformed)? != ALG {
        return Err(Denial::AlgMismatch);
    }
    let kid = h.kid.ok_or(Denial::Malformed)?;
    let key = secrets.get(&kid).ok_or(Denial::UnknownKid)?;
    Ok((kid, key))
}

/// The claims the format defines; unknown members are ignored, duplicates and wrong types
/// are malformed, `null` counts as absent.
#[derive(Deserialize, Default)]
struct Payload {
    exp: Option<Value>,
    nbf: Option<Value>,
    iat: Option<Value>,
    ip: Option<bool>,
    ip_ver: Option<Value>,
    co: Option<bool>,
    cty: Option<bool>,
    reg: Option<bool>,
    ssn: Option<bool>,
    co_fallback: Option<bool>,
    cty_fallback: Option<bool>,
    reg_fallback: Option<bool>,
    headers: Option<Vec<String>>,
    qs: Option<Vec<String>>,
    intsig: Option<String>,
    paths: Option<Vec<String>>,
    exc: Option<Vec<String>>,
}

impl Payload {
    /// Whether a viewer attribute other than headers/query parameters is bound.
    fn viewer_bound(&self) -> bool {
        [self.ip, self.co, self.cty, self.reg, self.ssn].contains(&Some(true))
    }
}

fn parse_payload(segment: &str) -> Result<Payload, Denial> {
    let bytes = decode(segment)?;
    json_object(&bytes)
}

/// A NumericDate: integer or float (floored); negative → 0; anything else malformed.
fn numeric_date(v: &Value) -> Result<u64, Denial> {
    let Value::Number(n) = v else {
        return Err(Denial::Malformed);
    };
    if let Some(u) = n.as_u64() {
        Ok(u)
    } else if n.as_i64().is_some() {
        Ok(0)
    } else {
        // `as` saturates: huge floats → u64::MAX, negatives → 0.
        Ok(n.as_f64().map_or(0, |f| f.floor() as u64))
    }
}

/// The recomputed `intsig` input, or the validator's geo fallback (skip the check).
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Data(Vec<u8>),
    GeoFallback,
}

/// `ip_ver`: 4 or 6, as a number or a numeric string (the validator compares loosely).
fn ip_version(v: Option<&Value>) -> Result<u8, Denial> {
    match v {
        Some(Value::Number(n)) if n.as_u64() == Some(4) => Ok(4),
        Some(Value::Number(n)) if n.as_u64() == Some(6) => Ok(6),
        Some(Value::String(s)) if s == "4" => Ok(4),
        Some(Value::String(s)) if s == "6" => Ok(6),
        _ => Err(Denial::Malformed),
    }
}

/// The generator's IP text: dotted quad, or eight 4-digit lower-case hextets. IPv4-mapped
/// IPv6 is the IPv4 address.
fn ip_text(ip: IpAddr) -> (u8, String) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (4, v4.to_string()),
        IpAddr::V6(v6) => {
            let hextets: Vec<String> = v6.segments().iter().map(|s| format!("{s:04x}")).collect();
            (6, hextets.join(":"))
        }
    }
}

fn header<'a>(req: &SmdRequest<'a>, name: &str) -> Option<&'a [u8]> {
    req.headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Form-decodes one query component: `+` is a space, then `%XX` escapes.
fn form_decode(s: &str) -> Vec<u8> {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus).collect()
}

/// The first value of query parameter `name` (names compared after form-decoding).
fn query_param(query: &str, name: &str) -> Option<Vec<u8>> {
    crate::request::query_pairs(query)
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .find(|(k, _)| form_decode(k) == name.as_bytes())
        .map(|(_, v)| form_decode(v))
}

fn intsig_input(p: &Payload, req: &SmdRequest<'_>, sid: Option<&str>) -> Result<Input, Denial> {
    let mut values: Vec<Vec<u8>> = Vec::new();
    if p.ip == Some(true) {
        let want = ip_version(p.ip_ver.as_ref())?;
        let client = req.client_ip.ok_or(Denial::BadSignature)?;
        let (ver, text) = ip_text(client);
        if ver != want {
            return Err(Denial::BadSignature);
        }
        values.push(text.into_bytes());
    }
    let geo = [
        (p.co, p.co_fallback, HEADER_COUNTRY),
        (p.cty, p.cty_fallback, HEADER_CITY),
        (p.reg, p.reg_fallback, HEADER_REGION),
    ];
    for (flag, fallback, name) in geo {
        if flag != Some(true) {
            continue;
        }
        match header(req, name) {
            Some(v) => values.push(v.to_vec()),
            None if fallback == Some(true) => return Ok(Input::GeoFallback),
            None => return Err(Denial::BadSignature),
        }
    }
    if p.ssn == Some(true) {
        values.push(sid.ok_or(Denial::BadSignature)?.as_bytes().to_vec());
    }
    for name in p.headers.iter().flatten() {
        if let Some(v) = header(req, name).filter(|v| !v.is_empty()) {
            values.push(v.to_vec());
        }
    }
    for name in p.qs.iter().flatten() {
        if let Some(v) = query_param(req.query, name).filter(|v| !v.is_empty()) {
            values.push(v);
        }
    }
    Ok(Input::Data(values.join(&b':')))
}

#[cfg(test)]
#[path = "smd_tests.rs"]
mod tests;

//! AWS Signature Version 4 for origin requests to private S3-compatible
//! buckets (the CloudFront "origin access control" role): the edge signs each
//! origin request with configured credentials, so the bucket stays private.
//!
//! The signature itself comes from the `aws-sigv4` crate (the AWS SDK for
//! Rust's signer; built without its default features, with `sign-http` and
//! `http1`, so no HTTP client or async runtime comes with it). This module
//! decides what the canonical request covers and makes sure the request the
//! edge sends is exactly the one that was signed:
//!
//! - **Path and query as sent.** For `s3`, the canonical URI is the path
//!   as sent, encoded once, never normalized (`//a/./b` is a valid key). An
//!   incoming path may use any legal encoding (`(`, `!`, lowercase `%c3%a9`,
//!   `+`), and whether S3 re-encodes it before checking would then matter;
//!   so [`SigV4Signer::sign`] rewrites each path segment and each query
//!   key/value into one canonical form (percent-decode, then encode every
//!   byte outside RFC 3986 unreserved `A-Za-z0-9-._~`, uppercase hex), signs
//!   that, and returns it in [`Signed::path_and_query`] for the caller to
//!   send. Canonical input comes back unchanged. `+` is a literal plus (RFC
//!   3986), sent as `%2B`. Empty `&&` pairs and a bare trailing `?` are
//!   dropped; a key without `=` stays so (it signs as `key=`).
//! - **Other services** (`lambda`, `execute-api`, `mediapackagev2`, ...) sign
//!   the path as sent, dot segments and `//` removed, then encoded a second
//!   time (`%3D` signs as `%253D`), which is how those services check it; the
//!   path is sent unchanged and must be a valid URI path. The query is
//!   canonicalized as for `s3`.
//! - **Signed headers:** `host`, `x-amz-date`, `x-amz-security-token` (with
//!   session credentials), `x-amz-content-sha256` (always for `s3`; for other
//!   services only when the payload is not [`Payload::Empty`], as botocore
//!   does) and any [`OriginRequest::signed_headers`] the caller adds (e.g.
//!   `range`). S3 rejects a request carrying an unsigned `x-amz-*` header, so
//!   the caller removes every client-sent `x-amz-*` and `authorization`
//!   header before applying [`Signed::headers`].
//! - **Payload:** origin requests are GET/HEAD without a body; use
//!   [`Payload::Empty`] (signs the SHA-256 of the empty body, what botocore
//!   sends) or [`Payload::Unsigned`] (`UNSIGNED-PAYLOAD`).
//!
//! Known-answer tests (`sigv4_tests.rs`) compare every header with what
//! botocore's `S3SigV4Auth`/`SigV4Auth` computes (`tests/fixtures/sigv4/mint.py`)
//! and run the AWS SigV4 test-suite vectors for the non-S3 rules.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    self, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use percent_encoding::{percent_decode_str, percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Bytes left as they are in a canonical path segment or query key/value:
/// RFC 3986 unreserved characters. Everything else is `%XX`, uppercase.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Latest instant the signer accepts: 9999-12-31T23:59:59Z (the date
/// formatting has four-digit years).
const MAX_UNIX_SECS: u64 = 253_402_300_799;

/// Headers this module sets itself; a caller may not pass them as extra signed headers.
const RESERVED_HEADERS: [&str; 5] = [
    "host",
    "authorization",
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
];

/// Why a request could not be signed. All are caller/config mistakes, never retryable.
#[derive(Debug, thiserror::Error)]
pub enum SigV4Error {
    /// Credentials missing or not printable ASCII (the message names the field, never its value).
    #[error("invalid SigV4 credentials: {0}")]
    Credentials(&'static str),
    /// Region or service name not of the form `[a-z0-9-]+`.
    #[error("invalid SigV4 {what} {value:?}: expected lowercase letters, digits and '-'")]
    Scope {
        /// `"region"` or `"service"`.
        what: &'static str,
        /// The refused value.
        value: String,
    },
    /// The Host value is empty or holds characters not allowed in a host[:port].
    #[error("invalid origin host {0:?} for SigV4 signing")]
    Host(String),
    /// The path does not start with `/` or is not a valid URI path.
    #[error("invalid origin path for SigV4 signing: {0}")]
    Path(&'static str),
    /// An extra signed header is reserved by the signer or has an invalid name or value.
    #[error("header {0:?} cannot be signed: reserved by the signer or not a valid header")]
    Header(String),
    /// The method is not an uppercase token such as `GET`.
    #[error("invalid HTTP method {0:?} for SigV4 signing")]
    Method(String),
    /// The signing time is before 1970 or after year 9999.
    #[error("signing time out of range")]
    Time,
    /// The signer refused the request.
    #[error("SigV4 signing failed")]
    Signing(#[source] http_request::SigningError),
}

/// AWS credentials for signing. `Debug` never shows the secret or the token.
#[derive(Clone)]
pub struct SigV4Credentials {
    access_key_id: String,
    identity: Identity,
}

impl SigV4Credentials {
    /// Credentials from an access key id, a secret key and, for temporary
    /// (STS) credentials, a session token, sent as `x-amz-security-token`.
    pub fn new(
        access_key_id: &str,
        secret_access_key: &str,
        session_token: Option<&str>,
    ) -> Result<Self, SigV4Error> {
        let printable = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !printable(access_key_id) {
            return Err(SigV4Error::Credentials(
                "access key id is empty or not printable ASCII",
            ));
        }
        if !printable(secret_access_key) {
            return Err(SigV4Error::Credentials(
                "secret key is empty or not printable ASCII",
            ));
        }
        if session_token.is_some_and(|t| !printable(t)) {
            return Err(SigV4Error::Credentials(
                "session token is empty or not printable ASCII",
            ));
        }
        let creds = Credentials::new(
            access_key_id,
            secret_access_key,
            session_token.map(str::to_owned),
            None,
            "tollgate-config",
        );
        Ok(Self {
            access_key_id: access_key_id.to_owned(),
            identity: creds.into(),
        })
    }

    /// The access key id (not secret; it appears in every `Authorization` header).
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }
}

impl fmt::Debug for SigV4Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigV4Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .finish_non_exhaustive()
    }
}

/// What the signature says about the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload<'a> {
    /// No body (GET/HEAD): signs the SHA-256 of the empty string.
    Empty,
    /// `UNSIGNED-PAYLOAD`: the body is not covered by the signature.
    Unsigned,
    /// A body whose SHA-256 is signed.
    Bytes(&'a [u8]),
}

/// One origin request to sign.
#[derive(Debug, Clone, Copy)]
pub struct OriginRequest<'a> {
    /// HTTP method as sent, e.g. `GET`.
    pub method: &'a str,
    /// The `Host` header value the origin will receive (`bucket.s3.eu-central-1.amazonaws.com`,
    /// `127.0.0.1:9000`); returned in [`Signed::headers`] so the caller sends exactly it.
    pub host: &'a str,
    /// Path and query as the edge would forward them (already stripped of tokens).
    pub path_and_query: &'a str,
    /// Body treatment.
    pub payload: Payload<'a>,
    /// Further headers to sign, sent by the caller with exactly these values (e.g. `range`).
    pub signed_headers: &'a [(&'a str, &'a str)],
}

/// The result: send `path_and_query` and set (replace) every header in `headers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The path and query to send, in the canonical form that was signed.
    pub path_and_query: String,
    /// `host`, `x-amz-date`, `authorization`, and `x-amz-content-sha256` /
    /// `x-amz-security-token` when they apply. Lowercase names.
    pub headers: Vec<(&'static str, String)>,
}

/// Signs origin requests for one origin: credentials, region and service.
#[derive(Debug, Clone)]
pub struct SigV4Signer {
    creds: SigV4Credentials,
    region: String,
    service: String,
}

impl SigV4Signer {
    /// A signer for `service` (`"s3"` for buckets) in `region` (`"eu-central-1"`).
    pub fn new(creds: SigV4Credentials, region: &str, service: &str) -> Result<Self, SigV4Error> {
        for (what, value) in [("region", region), ("service", service)] {
            let ok = !value.is_empty()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(SigV4Error::Scope {
                    what,
                    value: value.to_owned(),
                });
            }
        }
        Ok(Self {
            creds,
            region: region.to_owned(),
            service: service.to_owned(),
        })
    }

    /// Whether S3 path rules apply (single encoding, no normalization, content hash header).
    fn is_s3(&self) -> bool {
        self.service == "s3"
    }

    /// Signs `req` as of `time` and returns what to send. Cost: a few SHA-256/HMAC
    /// computations and small allocations, paid once per origin request (cache miss).
    pub fn sign(&self, req: &OriginRequest<'_>, time: SystemTime) -> Result<Signed, SigV4Error> {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .map_err(|_| SigV4Error::Time)?
            .as_secs();
        if secs > MAX_UNIX_SECS {
            return Err(SigV4Error::Time);
        }
        // SigV4 dates have whole seconds; drop the fraction so the date cannot round.
        let time = UNIX_EPOCH + Duration::from_secs(secs);

        let host = req.host.trim();
        let host_ok = !host.is_empty()
            && host.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']')
            });
        if !host_ok {
            return Err(SigV4Error::Host(req.host.to_owned()));
        }
        if !req.method.bytes().all(|b| b.is_ascii_uppercase()) || req.method.is_empty() {
            return Err(SigV4Error::Method(req.method.to_owned()));
        }
        for (name, _) in req.signed_headers {
            let lower = name.to_ascii_lowercase();
            if RESERVED_HEADERS.contains(&lower.as_str())
                || http::HeaderName::from_bytes(name.as_bytes()).is_err()
            {
                return Err(SigV4Error::Header((*name).to_owned()));
            }
        }

        let path_and_query = canonical_path_and_query(req.path_and_query, self.is_s3())?;

        let mut settings = SigningSettings::default();
        if self.is_s3() {
            settings.percent_encoding_mode = PercentEncodingMode::Single;
            settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        } else if req.payload != Payload::Empty {
            settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        }
        let params = v4::SigningParams::builder()
            .identity(&self.creds.identity)
            .region(&self.region)
            .name(&self.service)
            .time(time)
            .settings(settings)
            .build()
            .map_err(|_| SigV4Error::Credentials("signing parameters incomplete"))?
            .into();
        let body = match req.payload {
            Payload::Empty => SignableBody::Bytes(&[]),
            Payload::Unsigned => SignableBody::UnsignedPayload,
            Payload::Bytes(b) => SignableBody::Bytes(b),
        };
        let headers = std::iter::once(("host", host)).chain(req.signed_headers.iter().copied());
        let signable = SignableRequest::new(req.method, path_and_query.as_str(), headers, body)
            .map_err(|_| SigV4Error::Path("not a valid URI path and query"))?;
        let (instructions, _signature) = http_request::sign(signable, &params)
            .map_err(SigV4Error::Signing)?
            .into_parts();
        let (signing_headers, _params) = instructions.into_parts();

        let mut headers = Vec::with_capacity(signing_headers.len() + 1);
        headers.push(("host", host.to_owned()));
        headers.extend(
            signing_headers
                .into_iter()
                .map(|h| (h.name(), h.value().to_owned())),
        );
        Ok(Signed {
            path_and_query,
            headers,
        })
    }
}

/// The canonical form of one path segment or query key/value.
fn canonical_component(raw: &str, out: &mut String) {
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    out.extend(percent_encode(&bytes, ENCODE));
}

/// The path and query to send and sign: for S3 each path segment is
/// re-encoded canonically; for other services the path is kept (it is
/// double-encoded by the signer); the query is re-encoded for both.
pub fn canonical_path_and_query(input: &str, s3: bool) -> Result<String, SigV4Error> {
    let (path, query) = match input.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (input, None),
    };
    if !path.starts_with('/') {
        return Err(SigV4Error::Path("must start with '/'"));
    }
    let mut out = String::with_capacity(input.len() + 16);
    if s3 {
        for (i, segment) in path.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            canonical_component(segment, &mut out);
        }
    } else {
        if path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || !b.is_ascii())
        {
            return Err(SigV4Error::Path("not a valid URI path"));
        }
        out.push_str(path);
    }
    let mut first = true;
    for pair in crate::request::query_pairs(query.unwrap_or("")).filter(|p| !p.is_empty()) {
        out.push(if first { '?' } else { '&' });
        first = false;
        match pair.split_once('=') {
            Some((k, v)) => {
                canonical_component(k, &mut out);
                out.push('=');
                canonical_component(v, &mut out);
            }
            None => canonical_component(pair, &mut out),
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "sigv4_tests.rs"]
mod tests;

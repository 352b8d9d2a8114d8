//! Policy statements for `auth::cloudfront`: the canned statement rebuilt
//! byte for byte as botocore writes it, strict parsing of a signed custom
//! policy, `AWS:SourceIp` blocks and `Resource` wildcards.

use serde::Deserialize;

use super::SignedDenial;

/// The canned policy statement, exactly as botocore's
/// `CloudFrontSigner.build_policy` writes it (`json.dumps` with
/// `separators=(',', ':')` and the default `ensure_ascii`).
pub(super) fn canned_policy(url: &str, expires: u64) -> String {
    let mut out = String::with_capacity(url.len() + 96);
    out.push_str(r#"{"Statement":[{"Resource":""#);
    push_json_ascii(&mut out, url);
    out.push_str(r#"","Condition":{"DateLessThan":{"AWS:EpochTime":"#);
    out.push_str(&expires.to_string());
    out.push_str("}}}]}");
    out
}

/// Append `s` JSON-escaped the way Python's `json.dumps` does by default:
/// printable ASCII kept, everything else `\uXXXX` (UTF-16) or a short escape.
fn push_json_ascii(out: &mut String, s: &str) {
    use std::fmt::Write;
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
}

/// The one statement of a custom policy.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyDocument {
    #[serde(rename = "Statement")]
    statement: Vec<Statement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Statement {
    #[serde(rename = "Resource", default)]
    pub(super) resource: Option<String>,
    #[serde(rename = "Condition")]
    pub(super) condition: Condition,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Condition {
    #[serde(rename = "DateLessThan")]
    pub(super) date_less_than: EpochTime,
    #[serde(rename = "DateGreaterThan", default)]
    pub(super) date_greater_than: Option<EpochTime>,
    #[serde(rename = "IpAddress", default)]
    pub(super) ip_address: Option<SourceIp>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EpochTime {
    #[serde(rename = "AWS:EpochTime")]
    pub(super) time: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SourceIp {
    #[serde(rename = "AWS:SourceIp")]
    pub(super) source_ip: String,
}

/// Parse a signed custom policy strictly: unknown members, duplicate members,
/// wrong types and anything but exactly one statement are malformed.
pub(super) fn parse_policy(json: &[u8]) -> Result<Statement, SignedDenial> {
    let doc: PolicyDocument = serde_json::from_slice(json).map_err(|_| SignedDenial::Malformed)?;
    let mut statements = doc.statement.into_iter();
    match (statements.next(), statements.next()) {
        (Some(statement), None) => Ok(statement),
        _ => Err(SignedDenial::Malformed),
    }
}

/// CloudFront's `Resource` wildcards: `*` matches any run of bytes (also
/// none), `?` exactly one byte; everything else matches itself,
/// case-sensitively. Greedy with one backtrack point: O(pattern × input) at
/// worst, and the pattern is publisher-signed.
pub(super) fn wildcard_match(pattern: &[u8], input: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while i < input.len() {
        match pattern.get(p) {
            Some(b'*') => {
                backtrack = Some((p, i));
                p += 1;
            }
            Some(&c) if c == b'?' || c == input[i] => {
                p += 1;
                i += 1;
            }
            _ => match backtrack {
                Some((star, from)) => {
                    p = star + 1;
                    i = from + 1;
                    backtrack = Some((star, from + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

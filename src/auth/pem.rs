//! Minimal PEM (RFC 7468) and DER reading for key files.
//!
//! Key loading needs only a little ASN.1: find the PEM blocks, unwrap a
//! `SubjectPublicKeyInfo` (RFC 5280) to the EC point or the PKCS#1
//! `RSAPublicKey`, and read that key's two INTEGERs. `ring` does not do this
//! for us: its RSA verifier wants PKCS#1 or `(n, e)`, and an SPKI handed to it
//! silently fails every verification. So this small reader does it, carefully:
//! every length is bounds-checked, only definite minimal-length DER is
//! accepted, and every failure is an error value, never a panic.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// PEM bodies use the standard alphabet; accept them with or without padding.
const PEM_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// DER tags used here.
const TAG_INTEGER: u8 = 0x02;
const TAG_BIT_STRING: u8 = 0x03;
const TAG_NULL: u8 = 0x05;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;

/// OID 1.2.840.10045.2.1 (id-ecPublicKey), content bytes.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01];
/// OID 1.2.840.10045.3.1.7 (prime256v1 / P-256), content bytes.
const OID_P256: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
/// OID 1.2.840.113549.1.1.1 (rsaEncryption), content bytes.
const OID_RSA_ENCRYPTION: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01];

/// One `-----BEGIN <label>----- ... -----END <label>-----` block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// The label, e.g. `PUBLIC KEY`, `PRIVATE KEY`, `RSA PUBLIC KEY`.
    pub label: String,
    /// The base64-decoded body (DER).
    pub der: Vec<u8>,
}

/// Parse every PEM block in `text`, in order. Text outside blocks is ignored
/// (RFC 7468 allows explanatory text). Encrypted legacy PEM (with
/// `Proc-Type:` headers) is rejected.
pub fn parse_pem(text: &str) -> Result<Vec<PemBlock>, String> {
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(begin) = rest.find("-----BEGIN ") {
        let after_begin = &rest[begin + "-----BEGIN ".len()..];
        let label_end = after_begin
            .find("-----")
            .ok_or("unterminated BEGIN line in PEM")?;
        let label = &after_begin[..label_end];
        if label.contains('\n') {
            return Err("malformed BEGIN line in PEM".to_string());
        }
        let body_and_rest = &after_begin[label_end + "-----".len()..];
        let end_marker = format!("-----END {label}-----");
        let body_end = body_and_rest
            .find(&end_marker)
            .ok_or_else(|| format!("missing \"{end_marker}\""))?;
        let body = &body_and_rest[..body_end];
        if body.contains(':') {
            return Err(format!(
                "PEM block \"{label}\" has headers (encrypted legacy PEM?); not supported"
            ));
        }
        let b64: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der = PEM_B64
            .decode(b64.as_bytes())
            .map_err(|e| format!("PEM block \"{label}\" is not valid base64: {e}"))?;
        blocks.push(PemBlock {
            label: label.to_string(),
            der,
        });
        rest = &body_and_rest[body_end + end_marker.len()..];
    }
    if blocks.is_empty() {
        return Err("no PEM block found (expected \"-----BEGIN ...-----\")".to_string());
    }
    Ok(blocks)
}

/// Encode `der` as a PEM block with 64-character lines and a final newline.
pub fn encode_pem(label: &str, der: &[u8]) -> String {
    let b64 = PEM_B64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // base64 output is ASCII, so slicing at any byte index is on a char boundary.
    let mut i = 0;
    while i < b64.len() {
        let end = (i + 64).min(b64.len());
        out.push_str(&b64[i..end]);
        out.push('\n');
        i = end;
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A public key as found in an SPKI or PKCS#1 structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKeyDer {
    /// Uncompressed P-256 point: `0x04 || x || y`, 65 bytes.
    EcP256(Vec<u8>),
    /// RSA modulus and exponent, big-endian, leading zeros stripped.
    Rsa {
        /// Modulus.
        n: Vec<u8>,
        /// Public exponent.
        e: Vec<u8>,
    },
}

/// A forward-only DER reader over a byte slice.
struct Der<'a> {
    input: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(input: &'a [u8]) -> Self {
        Der { input }
    }

    fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.input.first().copied()
    }

    /// Read one TLV with the given tag and return its contents.
    fn read(&mut self, tag: u8) -> Result<&'a [u8], String> {
        let (&got, rest) = self
            .input
            .split_first()
            .ok_or("truncated DER: expected more data")?;
        if got != tag {
            return Err(format!(
                "unexpected DER tag 0x{got:02x}, expected 0x{tag:02x}"
            ));
        }
        let (&first, mut rest) = rest.split_first().ok_or("truncated DER length")?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return Err("unsupported DER length encoding".to_string());
            }
            if rest.len() < n {
                return Err("truncated DER length".to_string());
            }
            let (len_bytes, after) = rest.split_at(n);
            if len_bytes[0] == 0 {
                return Err("non-minimal DER length".to_string());
            }
            let len = len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            if len < 0x80 {
                return Err("non-minimal DER length".to_string());
            }
            rest = after;
            len
        };
        if rest.len() < len {
            return Err("truncated DER value".to_string());
        }
        let (value, after) = rest.split_at(len);
        self.input = after;
        Ok(value)
    }

    /// Read a non-negative INTEGER, returned without leading zero bytes.
    fn read_unsigned(&mut self) -> Result<Vec<u8>, String> {
        let v = self.read(TAG_INTEGER)?;
        match v.first() {
            None => Err("empty DER INTEGER".to_string()),
            Some(b) if b & 0x80 != 0 => Err("negative DER INTEGER".to_string()),
            Some(_) => Ok(strip_leading_zeros(v).to_vec()),
        }
    }

    fn finish(&self, what: &str) -> Result<(), String> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(format!("trailing data after {what}"))
        }
    }
}

/// Strip leading zero bytes (big-endian unsigned integers).
pub fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Parse a DER `SubjectPublicKeyInfo` holding an EC P-256 or RSA key.
pub fn parse_spki(der: &[u8]) -> Result<PublicKeyDer, String> {
    let mut outer = Der::new(der);
    let mut spki = Der::new(outer.read(TAG_SEQUENCE)?);
    outer.finish("SubjectPublicKeyInfo")?;
    let mut alg_id = Der::new(spki.read(TAG_SEQUENCE)?);
    let oid = alg_id.read(TAG_OID)?;
    let bits = spki.read(TAG_BIT_STRING)?;
    spki.finish("SubjectPublicKeyInfo")?;
    let key = match bits.split_first() {
        Some((0, key)) => key,
        Some(_) => return Err("BIT STRING with unused bits".to_string()),
        None => return Err("empty BIT STRING".to_string()),
    };
    if oid == OID_EC_PUBLIC_KEY {
        let curve = alg_id.read(TAG_OID)?;
        alg_id.finish("EC AlgorithmIdentifier")?;
        if curve != OID_P256 {
            return Err("EC key is not on curve P-256 (only P-256 is supported)".to_string());
        }
        if key.len() != 65 || key[0] != 0x04 {
            return Err("EC public key is not an uncompressed P-256 point".to_string());
        }
        Ok(PublicKeyDer::EcP256(key.to_vec()))
    } else if oid == OID_RSA_ENCRYPTION {
        // Parameters must be NULL (RFC 3279); tolerate them being absent.
        if alg_id.peek_tag() == Some(TAG_NULL) {
            let params = alg_id.read(TAG_NULL)?;
            if !params.is_empty() {
                return Err("RSA AlgorithmIdentifier has non-empty NULL".to_string());
            }
        }
        alg_id.finish("RSA AlgorithmIdentifier")?;
        parse_pkcs1_public(key)
    } else {
        Err("public key algorithm is neither EC (P-256) nor rsaEncryption".to_string())
    }
}

/// Parse a DER PKCS#1 `RSAPublicKey ::= SEQUENCE { n INTEGER, e INTEGER }`.
pub fn parse_pkcs1_public(der: &[u8]) -> Result<PublicKeyDer, String> {
    let mut outer = Der::new(der);
    let mut seq = Der::new(outer.read(TAG_SEQUENCE)?);
    outer.finish("RSAPublicKey")?;
    let n = seq.read_unsigned()?;
    let e = seq.read_unsigned()?;
    seq.finish("RSAPublicKey")?;
    Ok(PublicKeyDer::Rsa { n, e })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_roundtrip_and_text_around() {
        let der: Vec<u8> = (0..=200u8).collect();
        let pem = encode_pem("PUBLIC KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let text = format!("comment line\n{pem}trailing\n");
        let blocks = parse_pem(&text).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "PUBLIC KEY");
        assert_eq!(blocks[0].der, der);
    }

    #[test]
    fn pem_errors() {
        assert!(parse_pem("").is_err());
        assert!(parse_pem("-----BEGIN X-----\nAAAA\n").is_err());
        assert!(parse_pem("-----BEGIN X-----\n!!!!\n-----END X-----\n").is_err());
        assert!(
            parse_pem("-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END X-----\n")
                .is_err()
        );
    }

    #[test]
    fn der_rejects_bad_lengths() {
        // Indefinite length, non-minimal long form, truncated value.
        assert!(parse_pkcs1_public(&[0x30, 0x80, 0x00, 0x00]).is_err());
        assert!(parse_pkcs1_public(&[0x30, 0x81, 0x06, 2, 1, 1, 2, 1, 3]).is_err());
        assert!(parse_pkcs1_public(&[0x30, 0x05, 2, 1, 1]).is_err());
        assert_eq!(
            parse_pkcs1_public(&[0x30, 0x07, 2, 2, 0, 0xC5, 2, 1, 3]).unwrap(),
            PublicKeyDer::Rsa {
                n: vec![0xC5],
                e: vec![3]
            }
        );
        // Negative integer and trailing garbage.
        assert!(parse_pkcs1_public(&[0x30, 0x06, 2, 1, 0x81, 2, 1, 3]).is_err());
        assert!(parse_pkcs1_public(&[0x30, 0x06, 2, 1, 1, 2, 1, 3, 0]).is_err());
    }

    #[test]
    fn der_never_panics_on_garbage() {
        let mut seed = 0x1234_5678_9abc_def0u64;
        for len in 0..400usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 24) as u8
                })
                .collect();
            let mut b = bytes.clone();
            if let Some(f) = b.first_mut() {
                *f = 0x30;
            }
            let _ = parse_spki(&bytes);
            let _ = parse_spki(&b);
            let _ = parse_pkcs1_public(&b);
        }
    }
}

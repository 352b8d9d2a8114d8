//! `listeners[].tls`: certificates checked at load time (readable PEM, key matches the
//! certificate), with the DNS names each certificate serves for SNI.

use std::path::{Path, PathBuf};

use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use super::problems::{existing_file, Problems};
use super::raw::{RawCertPair, RawTls};

/// One certificate chain and its key, with the names it is valid for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Lower-case DNS names from the leaf's subjectAltName (or its CN when it has none);
    /// may hold wildcards like `*.example.com`.
    pub names: Vec<String>,
}

impl CertPair {
    /// Does this certificate serve `sni` (lower-case)? `*.example.com` covers one label.
    pub fn serves(&self, sni: &str) -> bool {
        self.names.iter().any(|n| match n.strip_prefix("*.") {
            Some(suffix) => sni
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
            None => n == sni,
        })
    }
}

/// A TLS listener: the default certificate, more by SNI, and HTTP/2 via ALPN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Served when the client sends no SNI or a name no `sni` certificate has.
    pub default: CertPair,
    /// Chosen when the client's SNI is one of their names (first match wins).
    pub sni: Vec<CertPair>,
    /// Offer `h2` in ALPN (default on).
    pub http2: bool,
}

pub(super) fn validate_tls(
    raw: RawTls,
    i: usize,
    base_dir: &Path,
    p: &mut Problems,
) -> Option<ListenerTls> {
    let at = format!("listeners[{i}].tls");
    let default = cert_pair(
        RawCertPair {
            cert: raw.cert,
            key: raw.key,
        },
        &at,
        base_dir,
        p,
    );
    let sni: Vec<Option<CertPair>> = raw
        .sni
        .into_iter()
        .enumerate()
        .map(|(j, pair)| cert_pair(pair, &format!("{at}.sni[{j}]"), base_dir, p))
        .collect();
    let sni: Option<Vec<CertPair>> = sni.into_iter().collect();
    Some(ListenerTls {
        default: default?,
        sni: sni?,
        http2: raw.http2.unwrap_or(true),
    })
}

fn cert_pair(raw: RawCertPair, at: &str, base_dir: &Path, p: &mut Problems) -> Option<CertPair> {
    let file = |path: Option<PathBuf>, field: &str, what: &str, p: &mut Problems| match path {
        None => {
            p.add(
                format!("{at}.{field}"),
                format!("missing. Fix: set it to the {what}"),
            );
            None
        }
        Some(path) => existing_file(base_dir, &path, &format!("{at}.{field}"), what, p),
    };
    let cert_path = file(raw.cert, "cert", "PEM certificate chain", p);
    let key_path = file(raw.key, "key", "PEM private key", p);
    let (cert_path, key_path) = (cert_path?, key_path?);
    let cert = match std::fs::read(&cert_path)
        .map_err(|e| e.to_string())
        .and_then(|pem| X509::from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(cert) => cert,
        Err(err) => {
            p.add(
                format!("{at}.cert"),
                format!(
                    "{} is not a PEM certificate ({err}). Fix: point it at the certificate chain",
                    cert_path.display()
                ),
            );
            return None;
        }
    };
    let key: PKey<Private> = match std::fs::read(&key_path)
        .map_err(|e| e.to_string())
        .and_then(|pem| PKey::private_key_from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(key) => key,
        Err(_) => {
            p.add(
                format!("{at}.key"),
                format!(
                    "{} is not a readable PEM private key. Fix: point it at the unencrypted key",
                    key_path.display()
                ),
            );
            return None;
        }
    };
    let matches = cert.public_key().is_ok_and(|pubkey| pubkey.public_eq(&key));
    if !matches {
        p.add(
            format!("{at}.key"),
            format!(
                "{} does not belong to the certificate {}. Fix: pair each cert with its own key",
                key_path.display(),
                cert_path.display()
            ),
        );
        return None;
    }
    Some(CertPair {
        names: cert_names(&cert),
        cert: cert_path,
        key: key_path,
    })
}

/// DNS names of a certificate: subjectAltName entries, else the subject CN.
pub fn cert_names(cert: &X509) -> Vec<String> {
    let mut names: Vec<String> = cert
        .subject_alt_names()
        .map(|sans| {
            sans.iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        names = cert
            .subject_name()
            .entries_by_nid(openssl::nid::Nid::COMMONNAME)
            .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()))
            .collect();
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> CertPair {
        CertPair {
            cert: PathBuf::new(),
            key: PathBuf::new(),
            names: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn sni_matching_handles_exact_and_one_label_wildcards() {
        let c = pair(&["a.example.com", "*.cdn.example.com"]);
        assert!(c.serves("a.example.com"));
        assert!(c.serves("img.cdn.example.com"));
        assert!(!c.serves("cdn.example.com"));
        assert!(!c.serves("x.img.cdn.example.com"));
        assert!(!c.serves("b.example.com"));
        assert!(!c.serves(".cdn.example.com"));
    }
}

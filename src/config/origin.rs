//! `origins:` validation: the URL, the secret header name and the secret itself.
//!
//! The origin secret proves to the publisher's origin that a request came through the edge, so
//! it is read at load time (a missing secret is a config problem, not a runtime 5xx) and must
//! be sendable as an HTTP header value.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::problems::{check_secret, existing_file, read_secret_file, Problems};
use super::raw::{RawOrigin, RawSigV4};
use super::types::{is_tchar, Origin, SigV4Settings};

/// Headers the proxy itself manages (hop-by-hop, framing, routing, the variant it sets): the
/// secret cannot travel in them.
const RESERVED_HEADERS: [&str; 11] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "cookie",
    "x-tollgate-variant",
];

/// Validates every `origins.<name>` entry.
pub(super) fn validate_origins(
    raw: BTreeMap<String, RawOrigin>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> BTreeMap<String, Origin> {
    let mut origins = BTreeMap::new();
    for (name, origin) in raw {
        if let Some(origin) = validate_origin(&name, origin, base_dir, env, p) {
            origins.insert(name, origin);
        }
    }
    origins
}

fn validate_origin(
    name: &str,
    raw: RawOrigin,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<Origin> {
    let at = |field: &str| format!("origins.{name}.{field}");
    let problems_before = p.0.len();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        p.add(
            format!("origins.{name}"),
            format!(
                "origin name '{name}' is not usable (it becomes a log and metric label). Fix: \
                 use letters, digits, '-', '_' or '.'"
            ),
        );
    }

    let url = match raw.url {
        None => {
            p.add(
                at("url"),
                "missing. Fix: add url: http://HOST:PORT (the origin server to forward to)",
            );
            None
        }
        Some(url) => match parse_origin_url(&url) {
            Ok(parsed) => Some((url, parsed)),
            Err(err) => {
                p.add(at("url"), err);
                None
            }
        },
    };

    let header_given = raw.secret_header.is_some();
    let secret_header = raw.secret_header.and_then(|header| {
        let lower = header.to_ascii_lowercase();
        if lower.is_empty() || !lower.chars().all(is_tchar) {
            p.add(
                at("secret_header"),
                format!(
                    "'{header}' is not a valid HTTP header name (RFC 7230 token). Fix: use \
                     letters, digits and '-', e.g. x-origin-secret"
                ),
            );
            None
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            p.add(
                at("secret_header"),
                format!(
                    "'{lower}' is managed by the proxy and cannot carry the origin secret. Fix: \
                     use a dedicated header such as x-origin-secret"
                ),
            );
            None
        } else {
            Some(lower)
        }
    });

    let secret = match (raw.secret_file, raw.secret_env) {
        (Some(_), Some(_)) => {
            p.add(
                format!("origins.{name}"),
                "secret_file and secret_env are both set. Fix: keep exactly one",
            );
            None
        }
        (Some(file), None) => {
            read_secret_file(&file, &at("secret_file"), "origin secret file", base_dir, p)
        }
        (None, Some(var)) => read_secret_env(&var, &at("secret_env"), env, p),
        (None, None) => {
            if header_given {
                p.add(
                    at("secret_header"),
                    "is set but there is no secret to send in it. Fix: add secret_file: PATH \
                     or secret_env: NAME",
                );
            }
            None
        }
    };
    if secret.is_some() && !header_given {
        p.add(
            format!("origins.{name}"),
            "a secret is configured but no secret_header, so it would never be sent. Fix: add \
             secret_header: x-origin-secret (the header your origin checks), or remove the secret",
        );
    }

    let ca_file = raw.ca_file.and_then(|f| {
        let full = existing_file(base_dir, &f, &at("ca_file"), "PEM CA certificate file", p)?;
        let ok = std::fs::read(&full)
            .ok()
            .and_then(|pem| openssl::x509::X509::stack_from_pem(&pem).ok())
            .is_some_and(|certs| !certs.is_empty());
        if !ok {
            p.add(
                at("ca_file"),
                format!(
                    "{} holds no PEM certificate. Fix: point it at the CA certificate(s)",
                    full.display()
                ),
            );
        }
        Some(full)
    });
    let sigv4 = raw
        .sigv4
        .and_then(|s| validate_sigv4(s, &at("sigv4"), base_dir, env, p));
    let tls_name = raw.tls_name.and_then(|n| {
        let valid = !n.is_empty()
            && n.len() <= 253
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
        if !valid {
            p.add(
                at("tls_name"),
                format!("'{n}' is not a DNS name. Fix: write e.g. origin.example.com"),
            );
        }
        valid.then(|| n.to_ascii_lowercase())
    });
    let (url, (scheme_https, host, port, addr)) = url?;
    if (ca_file.is_some() || tls_name.is_some()) && !scheme_https {
        p.add(
            at("ca_file"),
            "ca_file and tls_name are only used for https:// origins. Fix: use an https:// url, \
             or remove them",
        );
    }
    if p.0.len() > problems_before {
        return None;
    }
    Some(Origin {
        name: name.to_owned(),
        url,
        scheme_https,
        host,
        port,
        addr,
        secret_header,
        secret,
        ca_file,
        tls_name,
        sigv4,
    })
}

fn validate_sigv4(
    raw: RawSigV4,
    at: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<SigV4Settings> {
    let key = |f: &str| format!("{at}.{f}");
    let scope_part = |v: Option<String>, f: &str, default: Option<&str>, p: &mut Problems| match v
        .or(default.map(str::to_owned))
    {
        Some(v)
            if !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
        {
            Some(v)
        }
        Some(v) => {
            p.add(
                key(f),
                format!("'{v}' is not a valid name (lower case, digits, '-'). Fix: write e.g. us-east-1 / s3"),
            );
            None
        }
        None => {
            p.add(
                key(f),
                "missing. Fix: set the bucket's region, e.g. region: eu-west-1",
            );
            None
        }
    };
    let region = scope_part(raw.region, "region", None, p);
    let service = scope_part(raw.service, "service", Some("s3"), p);
    let access_key_id = match (raw.access_key_id, raw.access_key_id_env) {
        (Some(id), None) => Some(id),
        (None, Some(var)) => read_secret_env(&var, &key("access_key_id_env"), env, p),
        _ => {
            p.add(
                key("access_key_id"),
                "set exactly one of access_key_id and access_key_id_env",
            );
            None
        }
    };
    let secret_file = raw
        .secret_access_key_file
        .as_ref()
        .map(|f| super::problems::resolve(base_dir, f));
    let secret_access_key = match (raw.secret_access_key_file, raw.secret_access_key_env) {
        (Some(file), None) => read_secret_file(
            &file,
            &key("secret_access_key_file"),
            "origin secret file",
            base_dir,
            p,
        ),
        (None, Some(var)) => read_secret_env(&var, &key("secret_access_key_env"), env, p),
        _ => {
            p.add(
                key("secret_access_key_file"),
                "set exactly one of secret_access_key_file and secret_access_key_env",
            );
            None
        }
    };
    let session_token = match raw.session_token_env {
        Some(var) => Some(read_secret_env(&var, &key("session_token_env"), env, p)?),
        None => None,
    };
    Some(SigV4Settings {
        region: region?,
        service: service?,
        access_key_id: access_key_id?,
        secret_access_key: secret_access_key?,
        session_token,
        secret_access_key_file: secret_file,
    })
}

/// Checks a secret is non-empty and can be sent as a header value (visible ASCII, inner
/// spaces allowed).
fn read_secret_env(
    var: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
    p: &mut Problems,
) -> Option<String> {
    if var.is_empty() || var.contains(['=', '\0']) {
        p.add(
            key,
            format!("'{var}' is not an environment variable name. Fix: write e.g. ORIGIN_SECRET"),
        );
        return None;
    }
    match env(var) {
        None => {
            p.add(
                key,
                format!(
                    "environment variable {var} is not set. Fix: set it in the service \
                     environment (systemd: Environment= or EnvironmentFile=)"
                ),
            );
            None
        }
        Some(secret) => {
            check_secret(&secret, key, &format!("environment variable {var}"), p).then_some(secret)
        }
    }
}

/// Parses `http[s]://host[:port][/]` into (https, host, port, connect address).
pub(super) fn parse_origin_url(url: &str) -> Result<(bool, String, u16, String), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!(
            "'{url}' has no scheme. Fix: write http://{url} or https://{url}"
        ));
    };
    let https = if scheme.eq_ignore_ascii_case("http") {
        false
    } else if scheme.eq_ignore_ascii_case("https") {
        true
    } else {
        return Err(format!(
            "scheme '{scheme}' in '{url}' is not supported. Fix: use http:// or https://"
        ));
    };
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if !tail.is_empty() && tail != "/" {
        return Err(format!(
            "'{url}' has a path, query or fragment ('{tail}'); an origin URL names a server only \
             and requests keep their own path. Fix: write {scheme}://{authority}"
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "'{url}' contains user info; credentials do not belong in the URL. Fix: remove it \
             and use secret_header with secret_file or secret_env"
        ));
    }
    let default_port = if https { 443 } else { 80 };
    let (host, port_text, ipv6) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((inside, after)) = bracketed.split_once(']') else {
            return Err(format!("'{url}' has an unclosed '[' in its IPv6 address"));
        };
        if inside.parse::<Ipv6Addr>().is_err() {
            return Err(format!("'[{inside}]' in '{url}' is not an IPv6 address"));
        }
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(format!("'{url}' has '{after}' after the IPv6 address")),
        };
        (inside.to_ascii_lowercase(), port, true)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(format!(
                "'{url}' looks like an IPv6 address without brackets. Fix: write e.g. http://[::1]:9000"
            ));
        }
        (host.to_ascii_lowercase(), port, false)
    };
    if host.is_empty() {
        return Err(format!(
            "'{url}' has no host. Fix: write e.g. http://127.0.0.1:9000"
        ));
    }
    if !ipv6
        && host.parse::<Ipv4Addr>().is_err()
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(format!(
            "host '{host}' in '{url}' is not a valid host name or IP address"
        ));
    }
    let port = match port_text {
        None => default_port,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                return Err(format!(
                    "port '{text}' in '{url}' is not a number from 1 to 65535"
                ))
            }
        },
    };
    let addr = if ipv6 {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((https, host, port, addr))
}

#[cfg(test)]
mod tests {
    use super::parse_origin_url;

    #[test]
    fn origin_urls() {
        let ok = |url: &str| parse_origin_url(url).expect(url);
        assert_eq!(
            ok("http://127.0.0.1:9000"),
            (false, "127.0.0.1".into(), 9000, "127.0.0.1:9000".into())
        );
        assert_eq!(
            ok("https://Origin.Example.com/"),
            (
                true,
                "origin.example.com".into(),
                443,
                "origin.example.com:443".into()
            )
        );
        assert_eq!(
            ok("http://news"),
            (false, "news".into(), 80, "news:80".into())
        );
        assert_eq!(
            ok("http://[::1]:9000"),
            (false, "::1".into(), 9000, "[::1]:9000".into())
        );
        assert_eq!(
            ok("HTTPS://[::1]"),
            (true, "::1".into(), 443, "[::1]:443".into())
        );
    }

    #[test]
    fn bad_origin_urls() {
        let err = |url: &str| parse_origin_url(url).expect_err(url);
        assert!(err("127.0.0.1:9000").contains("no scheme"));
        assert!(err("ftp://x").contains("not supported"));
        assert!(err("http://x/api").contains("Fix: write http://x"));
        assert!(err("http://x?a=1").contains("path, query or fragment"));
        assert!(err("http://u:p@x").contains("user info"));
        assert!(err("http://").contains("no host"));
        assert!(err("http://:80").contains("no host"));
        assert!(err("http://x:0").contains("1 to 65535"));
        assert!(err("http://x:99999").contains("1 to 65535"));
        assert!(err("http://x:abc").contains("1 to 65535"));
        assert!(err("http://::1:80").contains("without brackets"));
        assert!(err("http://[::1").contains("unclosed"));
        assert!(err("http://[zz]:80").contains("not an IPv6"));
        assert!(err("http://a_b").contains("not a valid host"));
    }
}

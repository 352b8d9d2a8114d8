//! The configured origins, ready for the request path: each resolved at start-up and again as its
//! record expires ([`dns`]), with
//! its `Host` header, secret header, pinned CA and AWS SigV4 signer.

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

use http::HeaderValue;

use crate::config::Origin;

/// Why an origin could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// An origin host did not resolve.
    #[error("origin '{name}': cannot resolve {addr}: {reason}")]
    Resolve {
        /// origin name
        name: String,
        /// host:port
        addr: String,
        /// resolver message
        reason: String,
    },
    /// An origin's SigV4 settings were refused by the signer.
    #[error("origin '{0}': sigv4: {1}")]
    SigV4(String, String),
    /// An origin's `ca_file` could not be read.
    #[error("origin '{0}': cannot read ca_file: {1}")]
    Ca(String, String),
    /// A configured header value is not valid in HTTP.
    #[error("origin '{0}': the secret or host is not a valid header value")]
    HeaderValue(String),
}

pub mod dns;

/// An origin, ready for the request path.
pub struct OriginRuntime {
    /// Origin name from the config.
    pub name: String,
    /// The address in use: resolved at start-up, then again as the name's record expires
    /// ([`dns`]); a failed lookup keeps it.
    addr: arc_swap::ArcSwap<SocketAddr>,
    /// The host name to look up again, with the port; `None` for an IP literal.
    pub lookup: Option<(String, u16)>,
    /// Whether to speak TLS to it.
    pub tls: bool,
    /// Host name for SNI and the `Host` header.
    pub host: String,
    /// The `Host` header value sent to the origin.
    pub host_header: HeaderValue,
    /// The secret header and its value.
    pub secret: Option<(http::HeaderName, HeaderValue)>,
    /// Pinned CA certificates for an `https://` origin (`ca_file`); `None`: system roots.
    pub ca: Option<Arc<Box<[openssl::x509::X509]>>>,
    /// AWS SigV4 signing of origin requests; replaced when the secret key's file changes.
    pub sigv4: Option<arc_swap::ArcSwap<crate::sigv4::SigV4Signer>>,
}

/// A SigV4 signer for `settings` with `secret`.
fn signer(
    settings: &crate::config::SigV4Settings,
    secret: &str,
) -> Result<crate::sigv4::SigV4Signer, String> {
    let creds = crate::sigv4::SigV4Credentials::new(
        &settings.access_key_id,
        secret,
        settings.session_token.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    crate::sigv4::SigV4Signer::new(creds, &settings.region, &settings.service)
        .map_err(|e| e.to_string())
}

/// Read every origin's SigV4 secret key file again and use what it holds now; a file that
/// cannot be read or holds no usable key keeps the previous signer. Returns the problems
/// ("origins.<name>.sigv4: ...").
pub fn reload_sigv4(
    config: &BTreeMap<String, Origin>,
    origins: &HashMap<String, OriginRuntime>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, o) in config {
        let (Some(settings), Some(runtime)) = (&o.sigv4, origins.get(name)) else {
            continue;
        };
        let (Some(file), Some(slot)) = (&settings.secret_access_key_file, &runtime.sigv4) else {
            continue;
        };
        let read = std::fs::read_to_string(file)
            .map_err(|e| format!("{}: {e}", file.display()))
            .and_then(|text| {
                let secret = text.trim();
                if secret.is_empty() {
                    return Err(format!("{} is empty", file.display()));
                }
                signer(settings, secret)
            });
        match read {
            Ok(s) => slot.store(Arc::new(s)),
            Err(e) => problems.push(format!("origins.{name}.sigv4: {e}")),
        }
    }
    problems
}

/// The SigV4 secret key files of every origin (watched for rotations).
pub fn sigv4_files(config: &BTreeMap<String, Origin>) -> Vec<std::path::PathBuf> {
    config
        .values()
        .filter_map(|o| o.sigv4.as_ref()?.secret_access_key_file.clone())
        .collect()
}

impl OriginRuntime {
    /// Where to connect now.
    pub fn addr(&self) -> SocketAddr {
        **self.addr.load()
    }

    /// Use `addr` from now on (a fresh lookup's answer).
    pub fn set_addr(&self, addr: SocketAddr) {
        self.addr.store(Arc::new(addr));
    }
}

/// Every origin of the config, ready; and the origins' secret header names (each once), which a
/// client may never send: the edge removes them from every request. Names are resolved with
/// `resolver.servers` when given, else by the system (`/etc/hosts`, `/etc/resolv.conf`).
pub fn prepare(
    config: &BTreeMap<String, Origin>,
    resolver: &crate::config::ResolverSettings,
) -> Result<(HashMap<String, OriginRuntime>, Vec<http::HeaderName>), OriginError> {
    let mut origins = HashMap::new();
    let mut strip_headers: Vec<http::HeaderName> = Vec::new();
    for (name, o) in config {
        let literal = o.host.parse::<std::net::IpAddr>().is_ok();
        let resolved = if literal || resolver.servers.is_empty() {
            o.addr
                .to_socket_addrs()
                .map_err(|e| e.to_string())
                .and_then(|mut it| it.next().ok_or_else(|| "no address".to_string()))
        } else {
            dns::lookup_now(&resolver.servers, &o.host, o.port)
        };
        let addr = resolved.map_err(|reason| OriginError::Resolve {
            name: name.clone(),
            addr: o.addr.clone(),
            reason,
        })?;
        let default_port = if o.scheme_https { 443 } else { 80 };
        let host_header = if o.port == default_port {
            o.host.clone()
        } else {
            format!("{}:{}", o.host, o.port)
        };
        let host_header = HeaderValue::from_str(&host_header)
            .map_err(|_| OriginError::HeaderValue(name.clone()))?;
        let secret = match (&o.secret_header, &o.secret) {
            (Some(h), Some(s)) => {
                let hn = http::HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| OriginError::HeaderValue(name.clone()))?;
                let hv =
                    HeaderValue::from_str(s).map_err(|_| OriginError::HeaderValue(name.clone()))?;
                if !strip_headers.contains(&hn) {
                    strip_headers.push(hn.clone());
                }
                Some((hn, hv))
            }
            _ => None,
        };
        let ca = match &o.ca_file {
            None => None,
            Some(path) => {
                let certs = std::fs::read(path)
                    .map_err(|e| e.to_string())
                    .and_then(|pem| {
                        openssl::x509::X509::stack_from_pem(&pem).map_err(|e| e.to_string())
                    })
                    .map_err(|e| OriginError::Ca(name.clone(), e))?;
                Some(Arc::new(certs.into_boxed_slice()))
            }
        };
        let sigv4 = match &o.sigv4 {
            None => None,
            Some(s) => Some(arc_swap::ArcSwap::from_pointee(
                signer(s, &s.secret_access_key).map_err(|e| OriginError::SigV4(name.clone(), e))?,
            )),
        };
        origins.insert(
            name.clone(),
            OriginRuntime {
                ca,
                sigv4,
                name: name.clone(),
                addr: arc_swap::ArcSwap::from_pointee(addr),
                lookup: (!literal).then(|| (o.host.clone(), o.port)),
                tls: o.scheme_https,
                host: o.tls_name.clone().unwrap_or_else(|| o.host.clone()),
                host_header,
                secret,
            },
        );
    }
    Ok((origins, strip_headers))
}

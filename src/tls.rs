//! TLS listeners: Pingora's openssl acceptor (Mozilla intermediate settings) with the default
//! certificate, more certificates chosen by SNI, and HTTP/2 offered by ALPN.

use anyhow::Context;
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslContext, SslFiletype, SslMethod, SslRef,
};
use pingora_core::listeners::tls::TlsSettings;

use crate::config::{CertPair, ListenerTls};

/// ALPN protocol lists in wire format.
const H2_H1: &[u8] = b"\x02h2\x08http/1.1";
const H1: &[u8] = b"\x08http/1.1";

fn alpn_select(
    http2: bool,
) -> impl for<'a> Fn(&mut SslRef, &'a [u8]) -> Result<&'a [u8], AlpnError> + Send + Sync + 'static {
    move |_ssl, client| {
        let ours = if http2 { H2_H1 } else { H1 };
        // No overlap: carry on without ALPN (HTTP/1.1), as nginx does.
        select_next_proto(ours, client).ok_or(AlpnError::NOACK)
    }
}

/// An SSL context for one SNI certificate, with the same ALPN choice as the listener.
fn sni_context(pair: &CertPair, http2: bool) -> anyhow::Result<SslContext> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_private_key_file(&pair.key, SslFiletype::PEM)
        .with_context(|| format!("reading {}", pair.key.display()))?;
    b.set_certificate_chain_file(&pair.cert)
        .with_context(|| format!("reading {}", pair.cert.display()))?;
    b.check_private_key()?;
    // The ALPN callback is looked up on the context in force, so each SNI context needs it.
    b.set_alpn_select_callback(alpn_select(http2));
    Ok(b.build().into_context())
}

/// Pingora TLS settings for a listener.
pub fn settings(tls: &ListenerTls) -> anyhow::Result<TlsSettings> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut settings = TlsSettings::intermediate(&path(&tls.default.cert), &path(&tls.default.key))
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", tls.default.cert.display()))?;
    settings.set_alpn_select_callback(alpn_select(tls.http2));
    let contexts: Vec<(CertPair, SslContext)> = tls
        .sni
        .iter()
        .map(|pair| Ok((pair.clone(), sni_context(pair, tls.http2)?)))
        .collect::<anyhow::Result<_>>()?;
    if !contexts.is_empty() {
        settings.set_servername_callback(move |ssl, _alert| {
            let name = ssl
                .servername(NameType::HOST_NAME)
                .map(str::to_ascii_lowercase);
            if let Some(name) = name {
                if let Some((_, ctx)) = contexts.iter().find(|(pair, _)| pair.serves(&name)) {
                    // Failing to switch leaves the default certificate: the client's name
                    // check then fails, which is the right outcome.
                    let _ = ssl.set_ssl_context(ctx);
                }
            }
            Ok(())
        });
    }
    Ok(settings)
}

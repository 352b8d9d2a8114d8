//! TLS listeners: Pingora's openssl acceptor (Mozilla intermediate settings) with the default
//! certificate, more certificates chosen by SNI, and HTTP/2 offered by ALPN; their
//! connections are read and written through [`quiet`].

use anyhow::Context;
use openssl::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslContext, SslFiletype, SslMethod, SslRef,
};
use pingora_core::listeners::tls::TlsSettings;

use crate::config::{CertPair, ListenerTls};

pub mod quiet;

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
    keep_buffers(&b);
    // (as the listener's context: `settings`)
    b.set_read_ahead(true);
    Ok(b.build().into_context())
}

/// Pingora TLS settings for a listener.
pub fn settings(tls: &ListenerTls) -> anyhow::Result<TlsSettings> {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let mut settings = TlsSettings::intermediate(&path(&tls.default.cert), &path(&tls.default.key))
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", tls.default.cert.display()))?;
    settings.set_alpn_select_callback(alpn_select(tls.http2));
    keep_buffers(&settings);
    // OpenSSL reads what the socket holds at once instead of each record's 5-byte header and
    // then its body, each through the BIO (tokio-openssl, Pingora's buffered stream): a TLS
    // hit 26,593 -> 26,294 instructions (callgrind, `h2load --h1 -c10`, 1 KiB hit; with
    // [`quiet`] as well, an HTTP/2 hit 14,499 -> 14,337 with `h2load -c10 -m10`).
    settings.set_read_ahead(true);
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

/// `SSL_CTRL_CLEAR_MODE` (`SSL_CTX_clear_mode` is a C macro over `SSL_CTX_ctrl`).
const SSL_CTRL_CLEAR_MODE: std::os::raw::c_int = 78;

/// Connections of `ctx` keep OpenSSL's read and write buffers between records, instead of
/// freeing them after each record and allocating them again for the next (`openssl`'s
/// acceptor sets `SSL_MODE_RELEASE_BUFFERS`, as nginx and HAProxy do). A keep-alive TLS hit
/// cost ~0.3 µs more of server CPU with the release (`benches/peers` method, `wrk` over TLS on
/// one core: 10.4-10.6 against 10.1-10.2 µs per 1 KiB hit; issue 20 closing note). The memory
/// comes back when a connection idles: see [`free_buffers`].
fn keep_buffers(ctx: &openssl::ssl::SslContextBuilder) {
    let release = openssl::ssl::SslMode::RELEASE_BUFFERS.bits();
    // SAFETY: `ctx` is a live context; CLEAR_MODE only clears bits of its mode.
    unsafe {
        openssl_sys::SSL_CTX_ctrl(
            ctx.as_ptr(),
            SSL_CTRL_CLEAR_MODE,
            release as std::os::raw::c_long,
            std::ptr::null_mut(),
        )
    };
}

/// How long a connection waits with nothing to do (HTTP/1: for its next request; HTTP/2: with
/// no open stream) before its TLS buffers are freed ([`free_buffers`]).
pub const BUFFERS_KEPT: std::time::Duration = std::time::Duration::from_secs(1);

extern "C" {
    // libssl >= 1.1.1; not declared by `openssl-sys`
    fn SSL_free_buffers(ssl: *mut openssl_sys::SSL) -> std::os::raw::c_int;
}

/// Free the read and write buffers of an idle TLS connection (about 34 KiB); OpenSSL allocates
/// them again when the connection is used. Does nothing while data is pending in them, or
/// when `ssl` is `None` (plaintext).
pub fn free_buffers(ssl: Option<&openssl::ssl::SslRef>) {
    use foreign_types_shared::ForeignTypeRef as _;
    if let Some(ssl) = ssl {
        // SAFETY: `ssl` is a live connection not in the middle of a call (the caller awaits
        // nothing on it); OpenSSL refuses, returning 0, when buffered data is pending.
        unsafe { SSL_free_buffers(ssl.as_ptr()) };
    }
}

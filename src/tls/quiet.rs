//! A server TLS stream read and written without Pingora's sweep of the OpenSSL error queue
//! before every call.
//!
//! OpenSSL reports a failed `SSL_read`/`SSL_write` by the thread's error queue, which must be
//! empty when the call starts (`SSL_get_error(3)`): an error some other code left there turns
//! a plain "would block" into a fatal error. Pingora's `SslStream` therefore empties the queue
//! before every read, write and flush. In OpenSSL 3 each look at the queue reaches the
//! thread's error state through `OPENSSL_init_crypto` and a thread-local lookup: ~250
//! instructions, four times a request on an HTTP/1.1 keep-alive connection (two reads, a
//! write, a flush). Without it a TLS public hit took 26,593 instructions instead of 27,665,
//! a subscriber hit 28,376 instead of 29,426 (callgrind, `h2load --h1 -c10`, 20,000 requests
//! of a 1 KiB hit, 10 handshakes included).
//!
//! [`Quiet`] calls the same `tokio-openssl` stream without the sweep, and empties the queue
//! only after a call failed, then makes the call once more: a failure that an error left by
//! someone else caused becomes what the call really returns, and a real failure (the TLS
//! session is broken) fails again. A failed call consumed nothing and wrote nothing, so making
//! it again is what OpenSSL asks of a caller anyway. Everything else (digests, shutdown, ALPN)
//! is Pingora's stream's own.
//!
//! A read also skips OpenSSL when OpenSSL holds no bytes: it waits at the socket instead. A
//! keep-alive connection used to make two `SSL_read`s a request, one for the request and one
//! that went down to the socket only to learn it would block; now it makes one. That was 730
//! instructions of a 26,264-instruction TLS public hit (the same callgrind method). The read
//! of no bytes it waits with fills the connection's read buffer (Pingora's listeners give
//! each connection one, 64 KiB), so it makes no system call of its own; over a connection
//! without a read buffer it would be a `recv` of no bytes: still correct, not cheaper.

use std::any::Any;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use foreign_types_shared::ForeignTypeRef as _;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, SslStream, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TLS connection of one of our listeners, as Pingora's listener made it.
type Tls = SslStream<L4Stream>;
/// The `tokio-openssl` stream inside it, which does no sweep of its own.
type Inner = pingora_core::tls::tokio_ssl::SslStream<L4Stream>;

/// See the module: Pingora's server TLS stream, read and written without the sweep.
#[derive(Debug)]
pub struct Quiet(Tls);

/// `stream` as a [`Quiet`] one if it is a TLS connection of a listener; otherwise as it was.
pub fn quiet(stream: Stream) -> Stream {
    if !stream.as_any().is::<Tls>() {
        return stream;
    }
    let stream: Box<dyn Any> = stream.into_any();
    match stream.downcast::<Tls>() {
        Ok(tls) => Box::new(Quiet(*tls)),
        // (`is` said it is one)
        Err(_) => unreachable!("a stream that is a TLS stream did not downcast to one"),
    }
}

/// Empty this thread's OpenSSL error queue (what Pingora does before every call).
fn sweep() {
    let left = openssl::error::ErrorStack::get();
    if !left.errors().is_empty() {
        log::debug!("TLS call failed with OpenSSL errors queued: {left}");
    }
}

/// `call` on the `tokio-openssl` stream; after a failure, the queue emptied and `call` made
/// once more.
fn quietly<T>(
    tls: &mut Tls,
    mut call: impl FnMut(Pin<&mut Inner>) -> Poll<io::Result<T>>,
) -> Poll<io::Result<T>> {
    match call(Pin::new(&mut **tls)) {
        Poll::Ready(Err(_)) => {
            sweep();
            call(Pin::new(&mut **tls))
        }
        done => done,
    }
}

extern "C" {
    // In every OpenSSL since 1.1.0 (and the vendored one we link); `openssl-sys` does not
    // declare it.
    fn SSL_has_pending(ssl: *const openssl_sys::SSL) -> std::ffi::c_int;
}

/// Whether OpenSSL holds bytes it has read and not yet handed out: decrypted data, or records
/// it read ahead and has not opened. (Once the peer's close_notify is read it says so too, and
/// a read ends at once: `after_the_peers_close_notify_a_read_ends_at_once`.)
fn holds_bytes(tls: &Tls) -> bool {
    // SAFETY: the pointer is the live `SSL` of `tls`, borrowed for the call, which only reads
    // it.
    unsafe { SSL_has_pending(tls.ssl().as_ptr()) == 1 }
}

impl AsyncRead for Quiet {
    /// When OpenSSL holds nothing, only new bytes from the socket can make a read progress:
    /// wait for them at the socket (a read of no bytes, which fills the connection's read
    /// buffer), not through an `SSL_read` that goes down to the same socket to learn it would
    /// block. That is the second `SSL_read` of every keep-alive request.
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !holds_bytes(&self.0) {
            let waited = Pin::new(self.0.get_mut()).poll_read(cx, &mut ReadBuf::new(&mut []));
            // on bytes buffered, or the end of the stream, `SSL_read` takes over
            if !matches!(waited, Poll::Ready(Ok(()))) {
                return waited;
            }
        }
        quietly(&mut self.0, |tls| tls.poll_read(cx, buf))
    }
}

impl AsyncWrite for Quiet {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        quietly(&mut self.0, |tls| tls.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        quietly(&mut self.0, |tls| tls.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    /// (a flush only writes out the socket's buffer: no OpenSSL call, so no retry)
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    /// Pingora's own (once a connection, with the sweep).
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Quiet {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut self.0).await
    }
}

impl UniqueID for Quiet {
    fn id(&self) -> UniqueIDType {
        self.0.id()
    }
}

impl Ssl for Quiet {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.0.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.0.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.0.selected_alpn_proto()
    }
}

impl GetTimingDigest for Quiet {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.0.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.0.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.0.get_write_pending_time()
    }
}

impl GetProxyDigest for Quiet {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.0.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.0.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Quiet {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.0.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.0.set_socket_digest(socket_digest)
    }
}

#[async_trait]
impl Peek for Quiet {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.0.try_peek(buf).await
    }
}

#[cfg(test)]
#[path = "quiet_tests.rs"]
mod tests;

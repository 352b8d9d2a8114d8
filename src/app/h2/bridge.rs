//! The stream Pingora's HTTP/2 session is given for the requests the loop does not answer:
//! one end of an in-memory pipe whose other end the loop writes those requests' frames into
//! (`super`), with the client connection's digests — its address, its TLS session, its
//! timings — so that the proxy sees the request as it would have on the client's own
//! connection (`X-Forwarded-For`, the viewer's protocol, the access log).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};

/// Pingora's end of the pipe (see the module docs).
#[derive(Debug)]
pub struct Bridged {
    io: DuplexStream,
    id: UniqueIDType,
    ssl: Option<Arc<SslDigest>>,
    socket: Option<Arc<SocketDigest>>,
    timing: Vec<Option<TimingDigest>>,
    proxy: Option<Arc<ProxyDigest>>,
}

impl Bridged {
    /// `io`, standing for the client connection `of`.
    pub fn new(io: DuplexStream, of: &Stream) -> Bridged {
        Bridged {
            io,
            id: of.id(),
            ssl: of.get_ssl_digest(),
            socket: of.get_socket_digest(),
            timing: of.get_timing_digest(),
            proxy: of.get_proxy_digest(),
        }
    }
}

impl AsyncRead for Bridged {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Bridged {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Bridged {
    async fn shutdown(&mut self) {
        let _ = AsyncWriteExt::shutdown(&mut self.io).await;
    }
}

impl UniqueID for Bridged {
    fn id(&self) -> UniqueIDType {
        self.id
    }
}

impl Ssl for Bridged {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.ssl.clone()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        Some(ALPN::H2)
    }
}

impl GetTimingDigest for Bridged {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.timing.clone()
    }
}

impl GetProxyDigest for Bridged {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.proxy.clone()
    }
}

impl GetSocketDigest for Bridged {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.socket.clone()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket = Some(Arc::new(digest));
    }
}

#[async_trait]
impl Peek for Bridged {}

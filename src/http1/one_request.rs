//! The stream the proxy is given for one HTTP/1 request: it reads that request's bytes and
//! not one more.
//!
//! The connection loop (`app::front`) reads every request head itself and decides its
//! framing ([`crate::http1`]). When it hands a request to Pingora's proxy it gives it the head
//! (and whatever of the body was already read) as the session's pipelined prefix, and this
//! wrapper around the connection for the rest: reads stop where the request's body ends, as
//! the connection loop read it. Bytes that arrive beyond it — the client's next, pipelined
//! request — are kept here, never seen by the proxy, and go back to the connection loop with
//! the connection, which reads them as the next request. So a pipelined request is answered
//! in order, whichever path served the one before it, and no request reaches the origin that
//! the connection loop did not read and decide first.
//!
//! Once the request is over, a read waits: it answers end-of-stream if the client closes
//! (Pingora uses this to notice a client that went away), keeps any bytes that arrive, and
//! otherwise stays pending until the proxy is done.

use std::any::Any;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::{BufMut, BytesMut};
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::{SslDigest, TlsRef};
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http1::chunked::{Chunked, Malformed};

/// What is left of the current request, beyond what the proxy already has.
#[derive(Debug)]
pub enum Left {
    /// Nothing: the request is complete.
    Done,
    /// This many body bytes.
    Bytes(u64),
    /// The rest of a chunked body.
    Chunked(Chunked),
}

/// A connection limited to one request (see the module docs).
#[derive(Debug)]
pub struct OneRequest {
    inner: Stream,
    left: Left,
    /// Bytes read past the request: the start of the next one.
    next: BytesMut,
    /// The client closed its side after the request.
    closed: bool,
    /// What the connection loop decided about the request (its admission), for the proxy to
    /// take ([`OneRequest::take_handover`]) instead of deciding again. Opaque here.
    handover: Mutex<Option<Box<dyn Any + Send>>>,
}

impl OneRequest {
    /// `inner` limited to `left` more bytes of the current request.
    pub fn new(inner: Stream, left: Left) -> OneRequest {
        OneRequest {
            inner,
            left,
            next: BytesMut::new(),
            closed: false,
            handover: Mutex::new(None),
        }
    }

    /// The request comes with what the connection loop decided about it.
    pub fn with_handover(self, handover: Option<Box<dyn Any + Send>>) -> OneRequest {
        *self.handover.lock().unwrap_or_else(PoisonError::into_inner) = handover;
        self
    }

    /// What the connection loop decided about this request, once.
    pub fn take_handover(&self) -> Option<Box<dyn Any + Send>> {
        self.handover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// The connection back, with the bytes read past the request.
    pub fn into_parts(self) -> (Stream, BytesMut) {
        (self.inner, self.next)
    }

    /// After the request: watch the connection without handing anything to the proxy.
    fn poll_after(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.closed || !self.next.is_empty() {
            // the proxy is done reading: nothing more for it, ever (it is woken by its
            // other work, the upstream and the write side)
            return Poll::Pending;
        }
        self.next.reserve(4096);
        let spare = self.next.spare_capacity_mut();
        let mut rb = ReadBuf::uninit(spare);
        match Pin::new(&mut self.inner).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    self.closed = true;
                    // end of stream: the proxy may see that the client left
                    return Poll::Ready(Ok(()));
                }
                // SAFETY: `n` bytes of the spare capacity were just initialized by the read.
                unsafe { self.next.advance_mut(n) };
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncRead for OneRequest {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if matches!(this.left, Left::Done) {
            return this.poll_after(cx);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let fresh = &buf.filled()[before..];
        if fresh.is_empty() {
            return Poll::Ready(Ok(())); // end of stream inside the request: the proxy's error
        }
        let keep = match &mut this.left {
            Left::Done => unreachable!("checked above"),
            Left::Bytes(n) => {
                let keep = (*n).min(fresh.len() as u64) as usize;
                *n -= keep as u64;
                if *n == 0 {
                    this.left = Left::Done;
                }
                keep
            }
            Left::Chunked(body) => match body.feed(fresh) {
                Ok(None) => fresh.len(),
                Ok(Some(end)) => {
                    this.left = Left::Done;
                    end
                }
                Err(Malformed) => {
                    return Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "malformed chunked request body",
                    )))
                }
            },
        };
        if keep < fresh.len() {
            this.next.extend_from_slice(&fresh[keep..]);
            buf.set_filled(before + keep);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for OneRequest {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for OneRequest {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for OneRequest {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for OneRequest {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for OneRequest {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> std::time::Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> std::time::Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for OneRequest {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for OneRequest {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.inner.set_socket_digest(socket_digest)
    }
}

/// Peeking would look past the request: not offered.
#[async_trait]
impl Peek for OneRequest {}

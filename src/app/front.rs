//! The connection loop in front of the proxy: HTTP/1.1 requests that are fresh memory hits
//! are answered here ([`crate::proxy::fast`]); every other request — and every HTTP/2
//! connection — goes to Pingora's proxy, on the same connection, with the bytes already read.
//!
//! A request handed over is given to a new Pingora HTTP/1 session with what was read of it
//! as the session's pipelined prefix; when the proxy is done and the connection can be reused,
//! it comes back here for the next request. Keep-alive matches the proxy's: 60 s idle, and
//! once shutdown begins an idle connection lingers for [`super::drain::IDLE_LINGER`] so that a
//! request already on its way is answered (with `Connection: close`) instead of reset.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use rustix::io::Errno;
use rustix::net::SendFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::cache::body_file::BodyFile;
use crate::proxy::fast::{self, Parse};
use crate::proxy::TollgateProxy;

/// Idle time allowed between requests, and for one request head or answer to cross.
const KEEPALIVE: Duration = Duration::from_secs(60);
/// A head this long that is still incomplete is left to the proxy (and its limits).
const MAX_FAST_HEAD: usize = 16 * 1024;
/// The answer buffer a connection keeps between answers (`FastHit::write_head`) is dropped
/// after an answer that grew it beyond this (bodies up to 16 KiB are copied into it), so
/// thousands of idle keep-alive connections do not each hold 16 KiB.
const KEPT_ANSWER_BUFFER: usize = 4096;

/// The edge's listening app: the hit path in front of `inner` (the proxy).
pub struct Front<A> {
    inner: Arc<A>,
    fast: TollgateProxy,
    linger: Duration,
}

impl<A> Front<A> {
    /// `inner` answers everything `fast` does not; `linger` as in [`super::drain`].
    pub fn new(inner: A, fast: TollgateProxy, linger: Duration) -> Front<A> {
        Front {
            inner: Arc::new(inner),
            fast,
            linger,
        }
    }
}

enum Read {
    /// More bytes are in the buffer.
    More,
    /// The peer closed, the connection idled out, or it failed: drop it.
    Done,
}

/// Read more of the next request into `buf`, waiting at most until `deadline` — or, once
/// shutdown begins, at most `linger` more.
async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    shutdown: &mut ShutdownWatch,
    mut deadline: Instant,
    linger: Duration,
) -> Read {
    if *shutdown.borrow() {
        deadline = deadline.min(Instant::now() + linger);
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    // Watch for shutdown until it begins, or until the watch's sender is gone (the server is
    // exiting): then the linger applies and the watch is not polled again.
    let mut watching = !*shutdown.borrow();
    loop {
        tokio::select! {
            r = stream.read_buf(buf) => {
                return match r {
                    Ok(0) | Err(_) => Read::Done,
                    Ok(_) => Read::More,
                };
            }
            () = tokio::time::sleep_until(deadline) => return Read::Done,
            changed = shutdown.changed(), if watching => {
                if changed.is_err() || *shutdown.borrow() {
                    watching = false;
                    deadline = deadline.min(Instant::now() + linger);
                }
            }
        }
    }
}

/// The socket under a plain (not TLS, not virtual) stream.
fn socket_of(stream: &Stream) -> Option<BorrowedFd<'_>> {
    let l4 = stream.as_ref().as_any().downcast_ref::<L4Stream>()?;
    let fd = l4.as_raw_fd();
    // SAFETY: `fd` is the open socket `stream` owns; the borrow cannot outlive `stream`.
    (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Send what the socket takes now of an answer whose body is in a sealed file: the head with
/// `MSG_MORE` (it leaves with the body's first pages), then the body with `sendfile`, which
/// hands the socket the file's pages instead of copying them. Returns how many head and body
/// bytes went out; the caller writes the rest the usual way, which waits for the socket.
/// Nothing is sent for a stream that is not a plain socket.
fn send_from_file(
    stream: &Stream,
    head: &[u8],
    file: &BodyFile,
) -> std::io::Result<(usize, usize)> {
    let Some(sock) = socket_of(stream) else {
        return Ok((0, 0));
    };
    let flags = SendFlags::MORE | SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
    let sent_head = match rustix::net::send(sock, head, flags) {
        Ok(n) => n,
        Err(Errno::AGAIN | Errno::INTR) => 0,
        Err(e) => return Err(e.into()),
    };
    if sent_head < head.len() {
        return Ok((sent_head, 0));
    }
    let mut offset = 0u64;
    let len = file.len() as u64;
    while offset < len {
        let left = (len - offset) as usize;
        // the socket is non-blocking: a full socket answers EAGAIN rather than waiting
        match rustix::fs::sendfile(sock, file.fd(), Some(&mut offset), left) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(Errno::AGAIN | Errno::INTR) => break,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((sent_head, offset as usize))
}

/// Write the head (with any inline body) and a trailing body, by `deadline`; a trailing body
/// kept in a sealed file goes out with `sendfile` as far as the socket takes it. Returns the
/// body bytes sent that way.
async fn write_answer(
    stream: &mut Stream,
    head: &[u8],
    body: &[u8],
    file: Option<&BodyFile>,
    deadline: Instant,
) -> std::io::Result<usize> {
    let write = async {
        let (mut head, mut body) = (head, body);
        let mut from_file = 0;
        // (the file's length is checked here, where the body is sliced by what it sent)
        if let Some(file) = file.filter(|f| f.len() == body.len()) {
            // nothing of an earlier answer may still sit in the stream's write buffer
            stream.flush().await?;
            let (h, b) = send_from_file(stream, head, file)?;
            from_file = b;
            (head, body) = (&head[h..], &body[b..]);
        }
        if body.is_empty() {
            stream.write_all(head).await?;
        } else {
            while !head.is_empty() {
                let n = stream
                    .write_vectored(&[IoSlice::new(head), IoSlice::new(body)])
                    .await?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                let from_head = n.min(head.len());
                head = &head[from_head..];
                body = &body[n - from_head..];
            }
            stream.write_all(body).await?;
        }
        stream.flush().await?;
        Ok(from_file)
    };
    match tokio::time::timeout_at(deadline, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

impl<A: HttpServerApp + Send + Sync + 'static> Front<A> {
    /// HTTP/1.x on one connection, request after request.
    async fn serve_h1(&self, mut stream: Stream, shutdown: &ShutdownWatch) {
        let tls = stream.get_ssl_digest().is_some();
        let client = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut watch = shutdown.clone();
        let mut buf = BytesMut::with_capacity(4096);
        let mut head = Vec::new();
        loop {
            let deadline = Instant::now() + KEEPALIVE;
            // Complete the next head, answer it here if it is a fresh hit.
            let hit = loop {
                match fast::parse(&buf) {
                    Parse::Hit(req, len) => match self.fast.fast_hit(&req, tls, client) {
                        Some(hit) => break Some((hit, len, req.close)),
                        None => break None,
                    },
                    Parse::Proxy => break None,
                    Parse::Partial if buf.len() > MAX_FAST_HEAD => break None,
                    Parse::Partial => {}
                }
                match read_more(&mut stream, &mut buf, &mut watch, deadline, self.linger).await {
                    Read::More => {}
                    Read::Done => {
                        if !buf.is_empty() {
                            // a request cut short: let the proxy answer it (400) or drop it
                            break None;
                        }
                        return;
                    }
                }
            };
            match hit {
                Some((hit, len, client_close)) => {
                    if hit.slow() {
                        // answers that each cost a signature check go out together: see
                        // `fast::SLOW_DECISION`
                        tokio::task::yield_now().await;
                    }
                    let close = client_close || *watch.borrow();
                    hit.write_head(close, &mut head);
                    let body = hit.trailing_body().cloned().unwrap_or_default();
                    // measured from the request's start: no extra clock read
                    let by = Instant::from_std(hit.started() + KEEPALIVE);
                    let file = hit.trailing_file();
                    let written = write_answer(&mut stream, &head, &body, file, by).await;
                    let ok = written.is_ok();
                    if head.capacity() > KEPT_ANSWER_BUFFER {
                        // an idle keep-alive connection holds no more than this
                        head = Vec::new();
                    }
                    let sent = if ok { hit.body_len() } else { 0 };
                    self.fast.fast_done(hit, sent, written.unwrap_or(0), client);
                    if !ok {
                        return;
                    }
                    if close {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    buf.advance(len);
                }
                None => {
                    self.fast.count_proxied();
                    match self.proxy_one(stream, &mut buf, shutdown).await {
                        Some(s) => stream = s,
                        None => return,
                    }
                }
            }
        }
    }

    /// Hand the request at the start of `buf` (and anything after it) to the proxy; the
    /// connection back if it may be reused.
    async fn proxy_one(
        &self,
        stream: Stream,
        buf: &mut BytesMut,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut session = ServerSession::new_http1(stream);
        session.set_keepalive(if *shutdown.borrow() { None } else { Some(60) });
        if !buf.is_empty() {
            session.set_pipelined_prefix(buf.split());
        }
        let reused = self.inner.process_new_http(session, shutdown).await?;
        // Pingora returns read-ahead bytes only with pipelining enabled (off here): a client
        // that pipelines behind a proxied request gets the connection closed after it.
        let (stream, _settings) = reused.consume();
        Some(stream)
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> ServerApp for Front<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let h2c = self.inner.server_options().is_some_and(|o| o.h2c);
        let h1 = matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1));
        if !self.fast.fast_hits() || h2c || !h1 {
            return self.inner.process_new(stream, shutdown).await;
        }
        self.serve_h1(stream, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

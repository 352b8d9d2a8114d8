//! The connection loop in front of the proxy: every HTTP/1.x request on a proxy listener,
//! plain or TLS, is read here first ([`crate::http1`]: what is ambiguous is refused with a 4xx
//! and the connection closed). Fresh memory hits are answered here ([`crate::proxy::fast`]);
//! every other request — and every HTTP/2 connection — goes to Pingora's proxy, on the same
//! connection, given exactly that request's bytes ([`crate::http1::one_request`]): whatever the client
//! pipelined behind it stays here and is read as the next request when the proxy is done.
//!
//! Timeouts (`limits`, SPEC §10): a connection waits at most `idle_timeout` for the first byte
//! of its next request, and a request head must be complete `header_timeout` after its first
//! byte, or the client gets a `408` and the connection is closed. Once shutdown begins an idle
//! connection lingers for [`super::drain::IDLE_LINGER`] so that a request already on its way is
//! answered (with `Connection: close`) instead of reset. On a `proxy_protocol` listener a
//! plain connection first yields its PROXY header ([`super::proxy_protocol`]).

use std::future::Future;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::l4::stream::Stream as L4Stream;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use rustix::io::Errno;
use rustix::net::SendFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::proxy_protocol;
use super::waits::Waits;
use crate::admission::Handover;
use crate::cache::body_file::BodyFile;
use crate::http1::chunked::Chunked;
use crate::http1::one_request::{Left, OneRequest};
use crate::http1::{self, Body, Refusal};
use crate::proxy::fast::{self, Fast, Parse};
use crate::proxy::respond::{self, Answer};
use crate::proxy::TollgateProxy;

/// How long one answer may take to be written.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// The answer buffer a connection keeps between answers (`FastHit::write_head`) is dropped
/// after an answer that grew it beyond this (bodies up to 16 KiB are copied into it), so
/// thousands of idle keep-alive connections do not each hold 16 KiB.
const KEPT_ANSWER_BUFFER: usize = 4096;

/// The edge's listening app: the hit path in front of `inner` (the proxy).
pub struct Front<A> {
    inner: Arc<A>,
    fast: TollgateProxy,
    linger: Duration,
    /// Plain connections start with a PROXY header (TLS ones had it read before the handshake).
    proxy_protocol: bool,
}

impl<A> Front<A> {
    /// `inner` answers everything `fast` does not; `linger` as in [`super::drain`].
    pub fn new(inner: A, fast: TollgateProxy, linger: Duration) -> Front<A> {
        Front {
            inner: Arc::new(inner),
            fast,
            linger,
            proxy_protocol: false,
        }
    }

    /// Expect a PROXY header at the start of every plain connection.
    pub fn with_proxy_protocol(mut self, on: bool) -> Front<A> {
        self.proxy_protocol = on;
        self
    }
}

enum Read {
    /// More bytes are in the buffer.
    More,
    /// The deadline passed.
    TimedOut,
    /// The peer closed, or the connection failed: drop it.
    Closed,
}

/// What woke a wait for more of a request.
enum Woke {
    Read(std::io::Result<usize>),
    Timer,
    Shutdown,
}

/// Read more of the next request into `buf`, waiting at most until `deadline` — or, once
/// shutdown begins, at most `linger` more. A connection still waiting at `release_at` gives
/// back its TLS buffers ([`crate::tls::free_buffers`]): the one timer wakes for both, so a
/// busy connection pays for no second one. The socket is polled first: bytes that are there
/// are read even when a deadline has passed too.
async fn read_more(
    stream: &mut Stream,
    buf: &mut BytesMut,
    waits: &mut Waits,
    mut deadline: Instant,
    mut release_at: Option<Instant>,
    linger: Duration,
) -> Read {
    // Watch for shutdown until it begins, or until the watch's sender is gone (the server is
    // exiting): then the linger applies and the watch is not polled again.
    let mut watching = !waits.shutting_down();
    if !watching {
        deadline = deadline.min(Instant::now() + linger);
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    loop {
        let wake_at = release_at.map_or(deadline, |r| r.min(deadline));
        let woke = {
            let mut read = std::pin::pin!(stream.read_buf(buf));
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = read.as_mut().poll(cx) {
                    return Poll::Ready(Woke::Read(r));
                }
                if watching && waits.poll_shutdown(cx).is_ready() {
                    return Poll::Ready(Woke::Shutdown);
                }
                waits.poll_until(wake_at, cx).map(|()| Woke::Timer)
            })
            .await
        };
        match woke {
            Woke::Read(Ok(0) | Err(_)) => return Read::Closed,
            Woke::Read(Ok(_)) => return Read::More,
            Woke::Timer => match release_at.take() {
                Some(r) if r < deadline => crate::tls::free_buffers(stream.get_ssl()),
                _ => return Read::TimedOut,
            },
            Woke::Shutdown => {
                watching = false;
                deadline = deadline.min(Instant::now() + linger);
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

/// Send what the socket takes now of an answer whose body is in a sealed file: the head, then
/// the body with `sendfile`, which hands the socket the file's pages instead of copying them.
/// Returns how many head and body bytes went out; the caller writes the rest the usual way,
/// which waits for the socket. Nothing is sent for a stream that is not a plain socket.
///
/// The head leaves at once, in a segment of its own (as nginx sends it), not held back with
/// `MSG_MORE` to leave with the body's first pages as it was: that cost more. The 100 KiB row of
/// `benches/peers/run.sh` (4-5 rounds of 8 s, nginx beside it) with the head sent plainly: 12.6
/// µs of server CPU per hit and a p99 of 0.87 ms (nginx 14.7 µs, 1.15 ms) with large folios
/// ([`crate::cache::body_file::LARGE_FOLIOS`] `within_size`), 14.6 µs and 0.94 ms (nginx 14.8,
/// 0.90) without; with `MSG_MORE`: 13.8 µs and 1.61 ms, 15.8 µs and 1.46 ms. `wrk`, whose core
/// bounds that row, completed 6-7 % fewer hits per second (`benches/README.md`).
fn send_from_file(
    stream: &Stream,
    head: &[u8],
    file: &BodyFile,
) -> std::io::Result<(usize, usize)> {
    let Some(sock) = socket_of(stream) else {
        return Ok((0, 0));
    };
    let flags = SendFlags::DONTWAIT | SendFlags::NOSIGNAL;
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
    // Most answers are written at once: only one that must wait makes a timer for the
    // deadline (making one clones the runtime's handle: an atomic on a line every core shares).
    let mut write = std::pin::pin!(write);
    let first = std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
    if let Poll::Ready(r) = first {
        return r;
    }
    match tokio::time::timeout_at(deadline, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// What became of the head at the start of the buffer.
enum Next<'a> {
    /// A request to serve.
    Request(Parse<'a>),
    /// The connection is over (closed, idle too long, or refused and answered).
    Done,
}

impl<A: HttpServerApp + Send + Sync + 'static> Front<A> {
    /// Wait for a complete head at the start of `buf`: `idle_timeout` for its first byte,
    /// `header_timeout` from there for the rest. A refused or timed-out head is answered and
    /// counted here.
    async fn next_head<'b>(
        &self,
        stream: &mut Stream,
        buf: &'b mut BytesMut,
        waits: &mut Waits,
    ) -> Next<'b> {
        let limits = &self.fast.edge().config.limits;
        // Deadlines are taken when a read must wait, not before: a head already in the buffer
        // reads no clock, a keep-alive request one (a partial head a second).
        let mut head_started = !buf.is_empty();
        let (mut idle_deadline, mut head_deadline) = (None, None);
        let mut release_at = None;
        // (the head is parsed once, after the loop: `head_end_seen` tells when it can be)
        while !http1::head_end_seen(buf) {
            let deadline = if head_started {
                *head_deadline.get_or_insert_with(|| Instant::now() + limits.header_timeout)
            } else {
                *idle_deadline.get_or_insert_with(|| {
                    let now = Instant::now();
                    release_at = Some(now + crate::tls::BUFFERS_KEPT);
                    now + limits.idle_timeout
                })
            };
            match read_more(stream, buf, waits, deadline, release_at.take(), self.linger).await {
                Read::More => head_started = true,
                Read::TimedOut if head_started && !buf.is_empty() => {
                    let since =
                        head_deadline.map_or_else(Instant::now, |d| d - limits.header_timeout);
                    self.refuse(stream, Refusal::HeaderTimeout, buf, since)
                        .await;
                    return Next::Done;
                }
                Read::TimedOut | Read::Closed => return Next::Done,
            }
        }
        // when the head began, as far as a clock was read for it (for a refusal's record;
        // read only for one: the eager read was a second clock read on every request)
        let head_start = || head_deadline.map_or_else(Instant::now, |d| d - limits.header_timeout);
        match fast::parse(buf) {
            Parse::Refuse(refusal) => {
                self.refuse(stream, refusal, buf, head_start()).await;
                Next::Done
            }
            Parse::Partial => {
                // `head_end_seen` rules this out; refuse rather than wait on a reading we
                // do not understand
                self.refuse(stream, Refusal::Malformed, buf, head_start())
                    .await;
                Next::Done
            }
            parsed => Next::Request(parsed),
        }
    }

    /// Answer a refused request (or a head that timed out) and close: after a framing error
    /// nothing later on the connection can be trusted to start where it seems to. `buf`: what
    /// was read of the request (its method and target go to the access log as far as they
    /// parse); `since`: when its head began.
    async fn refuse(&self, stream: &mut Stream, refusal: Refusal, buf: &[u8], since: Instant) {
        log::debug!("refused an HTTP/1 request: {}", refusal.as_str());
        let head = http1::is_head(buf);
        let (answer, body) =
            respond::answer_h1(&respond::Answer::Status(refusal.status()), head, true);
        let write = async {
            stream.write_all(&answer).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, write).await;
        let sent = if matches!(written, Ok(Ok(()))) {
            body
        } else {
            0
        };
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        self.fast
            .refused(refusal, buf, sent, peer, since.into_std());
    }

    /// HTTP/1.x on one connection, request after request; `buf` holds what was already read.
    async fn serve_h1(&self, mut stream: Stream, mut buf: BytesMut, shutdown: &ShutdownWatch) {
        let edge = self.fast.edge();
        let tls = stream.get_ssl_digest().is_some();
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
        let mut waits = Waits::new(shutdown);
        let mut head = Vec::new();
        let mut settings = None;
        let token_memo = crate::auth::TokenMemo::default();
        loop {
            let parsed = match self.next_head(&mut stream, &mut buf, &mut waits).await {
                Next::Request(parsed) => parsed,
                Next::Done => return,
            };
            let hit = match parsed {
                Parse::Hit(req, len) if self.fast.fast_hits() => {
                    let viewer = edge.trusted_proxies.viewer(
                        peer,
                        tls,
                        || req.forwarded_for.into_iter().collect(),
                        || req.forwarded_proto,
                    );
                    match self.fast.fast_hit(&req, viewer, &token_memo).await {
                        Fast::Hit(hit) => Ok((hit, len, req.close, viewer)),
                        Fast::Throttled(t) => {
                            let close = req.close || waits.shutting_down();
                            let answer = Answer::Throttled(t.retry_after);
                            let (bytes, body) = respond::answer_h1(&answer, t.head_only, close);
                            let by = Instant::now() + WRITE_TIMEOUT;
                            let written = write_answer(&mut stream, &bytes, &[], None, by).await;
                            let sent = if written.is_ok() { body } else { 0 };
                            self.fast.throttled_done(*t, sent, viewer.addr);
                            if written.is_err() || close {
                                let _ = stream.shutdown().await;
                                return;
                            }
                            buf.advance(len);
                            continue;
                        }
                        Fast::Proxy(handover) => Err((len, Body::None, Some(handover))),
                    }
                }
                Parse::Hit(_, len) => Err((len, Body::None, None)),
                Parse::Proxy { head, body } => Err((head, body, None)),
                Parse::Partial | Parse::Refuse(_) => unreachable!("next_head returns requests"),
            };
            match hit {
                Ok((hit, len, client_close, viewer)) => {
                    if hit.checked_in_full() {
                        // answers that each cost a signature check go out together: see
                        // `FastHit::checked_in_full`
                        edge.metrics.fast_yields.inc();
                        tokio::task::yield_now().await;
                    }
                    let close = client_close || waits.shutting_down();
                    hit.write_head(close, &mut head);
                    let body = hit.trailing_body().cloned().unwrap_or_default();
                    // measured from the request's start: no extra clock read
                    let by = Instant::from_std(hit.started() + WRITE_TIMEOUT);
                    let file = hit.trailing_file();
                    let written = write_answer(&mut stream, &head, &body, file, by).await;
                    let ok = written.is_ok();
                    if head.capacity() > KEPT_ANSWER_BUFFER {
                        // an idle keep-alive connection holds no more than this
                        head = Vec::new();
                    }
                    let sent = if ok { hit.body_len() } else { 0 };
                    self.fast
                        .fast_done(hit, sent, written.unwrap_or(0), viewer.addr);
                    if !ok {
                        return;
                    }
                    if close {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    buf.advance(len);
                }
                Err((len, body, handover)) => {
                    if self.fast.fast_hits() {
                        self.fast.count_proxied();
                    }
                    let request = (len, body, handover);
                    let proxied =
                        self.proxy_one(stream, &mut buf, request, &mut settings, shutdown);
                    match proxied.await {
                        Some(s) => stream = s,
                        None => return,
                    }
                }
            }
        }
    }

    /// Hand the request at the start of `buf` (a head of `head_len` bytes, its `body`, and
    /// the admission decided here, if any) to the proxy, and no more of the connection than
    /// that request; the connection back if it may be reused, with `buf` holding what
    /// followed the request.
    async fn proxy_one(
        &self,
        mut stream: Stream,
        buf: &mut BytesMut,
        (head_len, body, handover): (usize, Body, Option<Handover>),
        settings: &mut Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let after_head = &buf[head_len..];
        let (have, left) = match body {
            Body::None => (0, Left::Done),
            Body::Length(n) => {
                let have = (after_head.len() as u64).min(n);
                let left = if have == n {
                    Left::Done
                } else {
                    Left::Bytes(n - have)
                };
                (have as usize, left)
            }
            Body::Chunked => {
                let mut chunks = Chunked::new();
                match chunks.feed(after_head) {
                    Ok(Some(end)) => (end, Left::Done),
                    Ok(None) => (after_head.len(), Left::Chunked(chunks)),
                    Err(_) => {
                        let head = buf[..head_len].to_vec();
                        let now = Instant::now();
                        self.refuse(&mut stream, Refusal::BadFraming, &head, now)
                            .await;
                        return None;
                    }
                }
            }
        };
        let request = buf.split_to(head_len + have);
        let handover = handover.map(|h| -> Box<dyn std::any::Any + Send> { h });
        let one = OneRequest::new(stream, left).with_handover(handover);
        let mut session = ServerSession::new_http1(Box::new(one));
        match settings.take() {
            // what the proxy's last session on this connection left for the next one (its
            // keep-alive, remaining reuses, its own context)
            Some(kept) => kept.apply_to_session(&mut session),
            None => {
                let keepalive = self.fast.edge().config.limits.idle_timeout.as_secs().max(1);
                session.set_keepalive(Some(keepalive));
            }
        }
        if *shutdown.borrow() {
            session.set_keepalive(None);
        }
        session.set_pipelined_prefix(request);
        let reused = self.inner.process_new_http(session, shutdown).await?;
        // Pingora was never given bytes past the request, so it has none to hand back: the
        // next request is in `buf`, and in what the wrapper read meanwhile.
        let (stream, kept) = reused.consume();
        *settings = kept;
        let one = stream.into_any().downcast::<OneRequest>().ok()?;
        let (stream, next) = one.into_parts();
        buf.extend_from_slice(&next);
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
        let mut stream = crate::tls::quiet::quiet(stream);
        let edge = self.fast.edge();
        let mut buf = BytesMut::with_capacity(4096);
        let tls = stream.get_ssl_digest().is_some();
        if self.proxy_protocol && !tls {
            let timeout = edge.config.limits.header_timeout;
            match proxy_protocol::read(&mut stream, &mut buf, timeout).await {
                Ok(source) => {
                    if let Some(fd) = socket_of(&stream).map(|s| s.as_raw_fd()) {
                        proxy_protocol::believe(edge, &mut *stream, fd, source);
                    }
                }
                Err(refusal) => {
                    edge.count_refusal(refusal);
                    return None;
                }
            }
        }
        let h2c = self.inner.server_options().is_some_and(|o| o.h2c);
        let h1 = matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1));
        if h2c || !h1 {
            if !buf.is_empty() {
                // bytes after a PROXY header would be lost to Pingora's own HTTP/2 reader
                return None;
            }
            if !h2c && self.fast.fast_hits() {
                super::h2::serve(&self.fast, &self.inner, stream, shutdown).await;
                return None;
            }
            return self.inner.process_new(stream, shutdown).await;
        }
        self.serve_h1(stream, buf, shutdown).await;
        None
    }

    async fn cleanup(&self) {
        self.inner.http_cleanup().await;
    }
}

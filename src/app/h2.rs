//! The HTTP/2 connection loop: every HTTP/2 connection on a proxy listener (TLS, ALPN `h2`) is
//! read here when the hit path is on. Fresh memory hits are answered here, through the same
//! admission and the same finishing as HTTP/1's ([`crate::proxy::fast`]); every other stream
//! goes to Pingora's own HTTP/2 session and proxy, behind this loop on an in-memory pipe
//! ([`bridge`]), with the admission already decided ([`crate::proxy::handovers`]).
//!
//! Why a loop of its own: through Pingora's HTTP/2 session a hit cost 23 µs of CPU against
//! HAProxy's 9 (benches/peers, `h2load -c50 -m10`): a task per stream, a request header map, a
//! response header map encoded by `h2`, and a wake-up per frame. Here the frames of a read are
//! parsed in one pass, the hits among them answered from the stored head's pre-encoded block
//! ([`crate::cache::head::StoredHead::sendable_h2`]), and all of their answers leave in one
//! write.
//!
//! Framing (RFC 9113), as the client sees it, is this loop's: SETTINGS (those Pingora's session
//! advertises), PING, GOAWAY, flow control, stream limits. Header blocks this loop writes are
//! literals that leave the client's dynamic table alone ([`crate::http2`]); it tells the session
//! behind it that it keeps no dynamic table (`SETTINGS_HEADER_TABLE_SIZE` 0), so the session's
//! blocks do not use one either, and they are passed to the client as they are. The client's
//! blocks are decoded here (they use the client's table) and written to the session again as
//! literals. DATA from the client goes to the session as it came, and the session's
//! WINDOW_UPDATEs back to the client; DATA from the session waits for the client's windows, and
//! the session is credited as it leaves.
//!
//! A connection that has no open stream for `limits.idle_timeout` is closed (GOAWAY first).
//! Shutdown sends GOAWAY and lets open streams finish.

mod behind;
mod bridge;
mod client;
mod out;

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use pingora_core::apps::HttpServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use super::waits::Waits;
use crate::http2::{self, code, hpack, setting};
use crate::proxy::TollgateProxy;

/// Streams open at once, as Pingora's HTTP/2 session allows (pingora-core's
/// `DEFAULT_MAX_CONCURRENT_STREAMS`).
const MAX_STREAMS: u32 = 100;
/// Decoded header list size advertised, as Pingora's session (`DEFAULT_MAX_HEADER_LIST_SIZE`).
const MAX_HEADER_LIST: u32 = 64 * 1024;
/// An encoded header block (HEADERS and CONTINUATIONs) larger than this ends the connection.
const MAX_BLOCK: usize = 256 * 1024;
/// Requests are not read while this much waits to be written to the client.
const OUT_LIMIT: usize = 256 * 1024;
/// The pipe to the session behind the loop.
const PIPE: usize = 64 * 1024;
/// How long written bytes may wait for a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection-level error: GOAWAY with this code, then close.
#[derive(Debug)]
struct ConnError(u32);

/// What is queued for one stream, in order.
enum Out {
    /// Frames that are not flow-controlled (a whole header block); `end`: they end the stream.
    Frames { bytes: Bytes, end: bool },
    /// A body part; `credit`: the session behind sent it, and is credited once it is written.
    Data {
        bytes: Bytes,
        end: bool,
        credit: u32,
    },
}

/// A stream that is still open: answered by the session behind, or with output waiting.
struct Open {
    /// What the client lets this stream receive.
    window: i64,
    queue: VecDeque<Out>,
    /// Answered by the session behind.
    bridged: bool,
    /// The client sent END_STREAM.
    client_done: bool,
    /// The answer's END_STREAM was written.
    answered: bool,
    /// In `ready`.
    ready: bool,
    /// A decision left for the proxy ([`crate::proxy::handovers`]).
    nonce: Option<u64>,
}

impl Open {
    /// A stream the client may send `window` bytes on, nothing queued.
    fn new(window: i64) -> Open {
        Open {
            window,
            queue: VecDeque::new(),
            bridged: false,
            client_done: false,
            answered: false,
            ready: false,
            nonce: None,
        }
    }
}

/// The session behind the loop.
struct Inner {
    io: DuplexStream,
    rbuf: BytesMut,
    out: BytesMut,
    /// A header block being read: its stream and its frames so far.
    block: Option<(u32, BytesMut)>,
}

/// What woke the loop.
enum Woke {
    Io,
    Closed,
    InnerClosed,
    /// The connection's deadline passed.
    Timer,
    /// The server's shutdown began.
    Shutdown,
}

struct Conn<'f, A> {
    /// The proxy's hit path (admission, answers, finishing).
    fast: &'f TollgateProxy,
    /// The proxy app, for the session behind the loop.
    app: &'f Arc<A>,
    shutdown: ShutdownWatch,
    io: Stream,
    peer: Option<IpAddr>,
    tls: bool,
    rbuf: BytesMut,
    preface: bool,
    out: BytesMut,
    unflushed: bool,
    decoder: hpack::Decoder,
    /// The fingerprint of the last token the connection presented.
    token_memo: crate::auth::TokenMemo,
    /// Decoded fields of the current block: bytes, and (name, value) spans into them.
    arena: Vec<u8>,
    spans: Vec<(Range<usize>, Range<usize>)>,
    /// A header block being encoded.
    scratch: BytesMut,
    settings_seen: bool,
    peer_max_frame: usize,
    peer_window: i64,
    send_window: i64,
    recv_window: i64,
    last_stream: u32,
    streams: HashMap<u32, Open>,
    ready: VecDeque<u32>,
    /// A request header block being read: stream, END_STREAM, bytes.
    block: Option<(u32, bool, BytesMut)>,
    /// GOAWAY sent.
    goaway: bool,
    peer_goaway: bool,
    /// A connection error was sent: close once it is written.
    closing: bool,
    inner: Option<Inner>,
    last_active: Instant,
    last_written: Instant,
    /// The `last_active` at which the client connection's TLS buffers were last freed.
    buffers_freed: Option<Instant>,
}

/// Serve an HTTP/2 connection (its preface not read yet) until it closes.
pub(super) async fn serve<A>(
    fast: &TollgateProxy,
    app: &Arc<A>,
    io: Stream,
    shutdown: &ShutdownWatch,
) where
    A: HttpServerApp + Send + Sync + 'static,
{
    let peer = io
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    let now = Instant::now();
    let mut conn = Conn {
        fast,
        app,
        shutdown: shutdown.clone(),
        tls: io.get_ssl_digest().is_some(),
        io,
        peer,
        rbuf: BytesMut::with_capacity(16 * 1024),
        preface: false,
        out: BytesMut::with_capacity(16 * 1024),
        unflushed: false,
        decoder: hpack::Decoder::new(http2::DEFAULT_TABLE_SIZE),
        token_memo: crate::auth::TokenMemo::default(),
        arena: Vec::new(),
        spans: Vec::new(),
        scratch: BytesMut::new(),
        settings_seen: false,
        peer_max_frame: http2::DEFAULT_MAX_FRAME as usize,
        peer_window: i64::from(http2::DEFAULT_WINDOW),
        send_window: i64::from(http2::DEFAULT_WINDOW),
        recv_window: i64::from(http2::DEFAULT_WINDOW),
        last_stream: 0,
        streams: HashMap::new(),
        ready: VecDeque::new(),
        block: None,
        goaway: false,
        peer_goaway: false,
        closing: false,
        inner: None,
        last_active: now,
        buffers_freed: None,
        last_written: now,
    };
    conn.run().await;
    conn.end().await;
}

impl<A> Conn<'_, A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn run(&mut self) {
        http2::put_settings(
            &mut self.out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, MAX_STREAMS),
                (setting::MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
            ],
        );
        let mut waits = Waits::new(&self.shutdown);
        let mut watching = !waits.shutting_down();
        if !watching {
            self.go_away();
        }
        let idle_timeout = self.fast.edge().config.limits.idle_timeout;
        loop {
            if let Err(ConnError(code)) = self.on_client_frames().await {
                self.fail(code);
            }
            if let Err(ConnError(code)) = self.on_inner_frames() {
                self.fail(code);
            }
            self.pump();
            if self.done() {
                return;
            }
            // idle, with TLS buffers still held that are due back before the idle timeout
            let release = self.out.is_empty()
                && self.streams.is_empty()
                && self.buffers_freed != Some(self.last_active)
                && crate::tls::BUFFERS_KEPT < idle_timeout;
            let deadline = if !self.out.is_empty() {
                self.last_written + WRITE_TIMEOUT
            } else if release {
                self.last_active + crate::tls::BUFFERS_KEPT
            } else if self.streams.is_empty() {
                self.last_active + idle_timeout
            } else {
                // open streams: their own timeouts are the proxy's
                self.last_active + WRITE_TIMEOUT.max(idle_timeout)
            };
            // the shutdown first (a load once registered), so that a connection whose
            // sockets are ready at every poll still gets its GOAWAY; then the sockets, then
            // the connection's one timer
            let woke = poll_fn(|cx| {
                if watching && waits.poll_shutdown(cx).is_ready() {
                    return Poll::Ready(Woke::Shutdown);
                }
                if let Poll::Ready(woke) = self.poll_io(cx) {
                    return Poll::Ready(woke);
                }
                waits.poll_until(deadline, cx).map(|()| Woke::Timer)
            })
            .await;
            match woke {
                Woke::Io => {}
                Woke::Closed => return,
                Woke::InnerClosed => self.inner_closed(),
                Woke::Timer => {
                    if !self.out.is_empty() {
                        return; // the client stopped reading
                    }
                    if release {
                        crate::tls::free_buffers(self.io.get_ssl());
                        self.buffers_freed = Some(self.last_active);
                        continue;
                    }
                    if self.streams.is_empty() {
                        // idle: nothing open to wait for
                        self.go_away();
                        self.closing = true;
                    }
                    self.last_active = Instant::now();
                }
                Woke::Shutdown => {
                    watching = false;
                    self.go_away();
                }
            }
        }
    }

    /// The connection is over: everything written, or nothing more to write.
    fn done(&self) -> bool {
        let flushed = self.out.is_empty();
        (self.closing && flushed)
            || ((self.goaway || self.peer_goaway)
                && self.streams.is_empty()
                && self.block.is_none()
                && flushed)
    }

    /// Close: the client's connection (TLS `close_notify` first), and the session behind,
    /// whose streams end with it. Decisions left for it are dropped.
    async fn end(&mut self) {
        for open in self.streams.values() {
            if let Some(nonce) = open.nonce {
                self.fast.handovers().forget(nonce);
            }
        }
        self.inner = None;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    /// Write what waits, and read what came, as far as the sockets let; ready when something
    /// was read (or room to write was made for held input), or a side closed.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Woke> {
        let held = self.out.len() >= OUT_LIMIT;
        let wrote = match poll_drain(&mut self.io, cx, &mut self.out) {
            Ok(wrote) => wrote,
            Err(_) => return Poll::Ready(Woke::Closed),
        };
        self.unflushed |= wrote;
        if wrote {
            self.last_written = Instant::now();
        }
        if self.out.is_empty() && self.unflushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(_)) => return Poll::Ready(Woke::Closed),
                Poll::Pending => {}
            }
        }
        if wrote && self.out.is_empty() {
            // everything left: the connection may be over, and what it waits for next (its
            // deadline) is no longer the write
            return Poll::Ready(Woke::Io);
        }
        if let Some(inner) = &mut self.inner {
            if poll_drain(&mut inner.io, cx, &mut inner.out).is_err() {
                return Poll::Ready(Woke::InnerClosed);
            }
        }
        if held {
            return if wrote && self.out.len() < OUT_LIMIT {
                Poll::Ready(Woke::Io)
            } else {
                Poll::Pending
            };
        }
        if self.closing {
            return Poll::Pending;
        }
        match poll_fill(&mut self.io, cx, &mut self.rbuf) {
            Poll::Ready(true) => return Poll::Ready(Woke::Io),
            Poll::Ready(false) => return Poll::Ready(Woke::Closed),
            Poll::Pending => {}
        }
        if let Some(inner) = &mut self.inner {
            match poll_fill(&mut inner.io, cx, &mut inner.rbuf) {
                Poll::Ready(true) => return Poll::Ready(Woke::Io),
                Poll::Ready(false) => return Poll::Ready(Woke::InnerClosed),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Send GOAWAY (once): no stream after the last one seen is taken.
    fn go_away(&mut self) {
        if !self.goaway {
            self.goaway = true;
            http2::put_goaway(&mut self.out, self.last_stream, code::NO_ERROR, b"");
        }
    }

    /// A connection error: GOAWAY with `code`, and close once it is written.
    fn fail(&mut self, code: u32) {
        if !self.closing {
            log::debug!("HTTP/2 connection error {code:#x}");
            self.closing = true;
            self.goaway = true;
            http2::put_goaway(&mut self.out, self.last_stream, code, b"");
            self.inner = None;
        }
    }
}

/// Write as much of `out` as `io` takes now; whether anything was written. An error, or a
/// write of nothing, means the other side is gone.
fn poll_drain<W: AsyncWrite + Unpin>(
    io: &mut W,
    cx: &mut Context<'_>,
    out: &mut BytesMut,
) -> std::io::Result<bool> {
    let mut wrote = false;
    while !out.is_empty() {
        match Pin::new(&mut *io).poll_write(cx, out) {
            Poll::Ready(Ok(0)) => return Err(std::io::ErrorKind::WriteZero.into()),
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Ready(Ok(n)) => {
                out.advance(n);
                wrote = true;
            }
            Poll::Pending => break,
        }
    }
    Ok(wrote)
}

/// Read what `io` has into `buf`: ready with `true` when something came, `false` when the
/// other side closed or failed.
fn poll_fill<R: AsyncRead + Unpin>(
    io: &mut R,
    cx: &mut Context<'_>,
    buf: &mut BytesMut,
) -> Poll<bool> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    match poll_read_buf(Pin::new(io), cx, buf) {
        Poll::Ready(Ok(n)) => Poll::Ready(n > 0),
        Poll::Ready(Err(_)) => Poll::Ready(false),
        Poll::Pending => Poll::Pending,
    }
}

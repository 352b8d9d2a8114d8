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

mod bridge;

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::net::IpAddr;
use std::ops::Range;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use tokio::io::{AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::time::Instant;
use tokio_util::io::poll_read_buf;

use super::front::Front;
use crate::http2::{self, code, flag, hpack, kind, setting, Head, HEAD_LEN};
use crate::proxy::fast::{self, Fast, FastHit};
use crate::proxy::handovers::HANDOVER_HEADER;

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
}

struct Conn<'f, A> {
    front: &'f Front<A>,
    shutdown: ShutdownWatch,
    io: Stream,
    peer: Option<IpAddr>,
    tls: bool,
    rbuf: BytesMut,
    preface: bool,
    out: BytesMut,
    unflushed: bool,
    decoder: hpack::Decoder,
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
}

/// Serve an HTTP/2 connection (its preface not read yet) until it closes.
pub(super) async fn serve<A>(front: &Front<A>, io: Stream, shutdown: &ShutdownWatch)
where
    A: HttpServerApp + Send + Sync + 'static,
{
    let peer = io
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()));
    let now = Instant::now();
    let mut conn = Conn {
        front,
        shutdown: shutdown.clone(),
        tls: io.get_ssl_digest().is_some(),
        io,
        peer,
        rbuf: BytesMut::with_capacity(16 * 1024),
        preface: false,
        out: BytesMut::with_capacity(16 * 1024),
        unflushed: false,
        decoder: hpack::Decoder::new(http2::DEFAULT_TABLE_SIZE),
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
        let mut watch = self.shutdown.clone();
        let mut watching = !*watch.borrow();
        if !watching {
            self.go_away();
        }
        let idle_timeout = self.front.fast.edge().config.limits.idle_timeout;
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
            let deadline = if !self.out.is_empty() {
                self.last_written + WRITE_TIMEOUT
            } else if self.streams.is_empty() {
                self.last_active + idle_timeout
            } else {
                // open streams: their own timeouts are the proxy's
                self.last_active + WRITE_TIMEOUT.max(idle_timeout)
            };
            tokio::select! {
                woke = poll_fn(|cx| self.poll_io(cx)) => match woke {
                    Woke::Io => {}
                    Woke::Closed => return,
                    Woke::InnerClosed => self.inner_closed(),
                },
                () = tokio::time::sleep_until(deadline) => {
                    if !self.out.is_empty() {
                        return; // the client stopped reading
                    }
                    if self.streams.is_empty() {
                        // idle: nothing open to wait for
                        self.go_away();
                        self.closing = true;
                    }
                    self.last_active = Instant::now();
                }
                changed = watch.changed(), if watching => {
                    if changed.is_err() || *watch.borrow() {
                        watching = false;
                        self.go_away();
                    }
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
                self.front.fast.handovers().forget(nonce);
            }
        }
        self.inner = None;
        let _ = tokio::time::timeout(Duration::from_secs(1), self.io.shutdown()).await;
    }

    /// Write what waits, and read what came, as far as the sockets let; ready when something
    /// was read (or room to write was made for held input), or a side closed.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Woke> {
        let held = self.out.len() >= OUT_LIMIT;
        let mut wrote = false;
        while !self.out.is_empty() {
            match Pin::new(&mut self.io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Woke::Closed),
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    (wrote, self.unflushed) = (true, true);
                }
                Poll::Pending => break,
            }
        }
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
            while !inner.out.is_empty() {
                match Pin::new(&mut inner.io).poll_write(cx, &inner.out) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(Woke::InnerClosed)
                    }
                    Poll::Ready(Ok(n)) => inner.out.advance(n),
                    Poll::Pending => break,
                }
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
        if self.rbuf.capacity() - self.rbuf.len() < 4096 {
            self.rbuf.reserve(16 * 1024);
        }
        match poll_read_buf(Pin::new(&mut self.io), cx, &mut self.rbuf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Woke::Closed),
            Poll::Ready(Ok(_)) => return Poll::Ready(Woke::Io),
            Poll::Pending => {}
        }
        if let Some(inner) = &mut self.inner {
            if inner.rbuf.capacity() - inner.rbuf.len() < 4096 {
                inner.rbuf.reserve(16 * 1024);
            }
            match poll_read_buf(Pin::new(&mut inner.io), cx, &mut inner.rbuf) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(Woke::InnerClosed),
                Poll::Ready(Ok(_)) => return Poll::Ready(Woke::Io),
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

    /// The session behind closed: its streams that were not answered in full are reset (those
    /// whose end is queued, waiting for the client's windows, still go out).
    fn inner_closed(&mut self) {
        self.inner = None;
        let ends = |o: &Open| {
            o.answered
                || o.queue.iter().any(|q| match q {
                    Out::Frames { end, .. } | Out::Data { end, .. } => *end,
                })
        };
        let gone: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, o)| o.bridged && !ends(o))
            .map(|(&s, _)| s)
            .collect();
        for s in gone {
            self.close_stream(s);
            http2::put_rst(&mut self.out, s, code::INTERNAL_ERROR);
        }
    }

    /// Forget stream `s`: a decision left for it, and what it had queued (the session behind
    /// is credited for its data, so that its connection window does not shrink).
    fn close_stream(&mut self, s: u32) {
        let Some(open) = self.streams.remove(&s) else {
            return;
        };
        if let Some(nonce) = open.nonce {
            self.front.fast.handovers().forget(nonce);
        }
        let credit: u32 = open
            .queue
            .iter()
            .map(|o| match o {
                Out::Data { credit, .. } => *credit,
                Out::Frames { .. } => 0,
            })
            .sum();
        if let (Some(inner), true) = (&mut self.inner, credit > 0) {
            http2::put_window_update(&mut inner.out, 0, credit);
        }
    }

    /// Every whole frame the client sent, while the answers fit in the write buffer.
    async fn on_client_frames(&mut self) -> Result<(), ConnError> {
        if !self.preface {
            if self.rbuf.len() < http2::PREFACE.len() {
                return Ok(());
            }
            if !self.rbuf.starts_with(&http2::PREFACE[..]) {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            self.rbuf.advance(http2::PREFACE.len());
            self.preface = true;
        }
        let mut any = false;
        while self.out.len() < OUT_LIMIT && !self.closing {
            let Some(head) = Head::parse(&self.rbuf) else {
                break;
            };
            if head.len > http2::DEFAULT_MAX_FRAME as usize {
                return Err(ConnError(code::FRAME_SIZE_ERROR));
            }
            if self.rbuf.len() < HEAD_LEN + head.len {
                self.rbuf.reserve(HEAD_LEN + head.len - self.rbuf.len());
                break;
            }
            any = true;
            let frame = self.rbuf.split_to(HEAD_LEN + head.len).freeze();
            self.on_client_frame(head, frame).await?;
        }
        if any {
            self.last_active = Instant::now();
        }
        Ok(())
    }

    async fn on_client_frame(&mut self, head: Head, frame: Bytes) -> Result<(), ConnError> {
        let payload = &frame[HEAD_LEN..];
        if !self.settings_seen && head.kind != kind::SETTINGS {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        if self.block.is_some() && head.kind != kind::CONTINUATION {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        let s = head.stream;
        match head.kind {
            kind::DATA => self.on_data(head, &frame),
            kind::HEADERS => {
                if s == 0 || s % 2 == 0 {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                }
                let part =
                    http2::unpadded(&head, payload).ok_or(ConnError(code::PROTOCOL_ERROR))?;
                let end_stream = head.has(flag::END_STREAM);
                if head.has(flag::END_HEADERS) {
                    self.on_block(s, end_stream, &payload[part]).await
                } else {
                    self.block = Some((s, end_stream, BytesMut::from(&payload[part])));
                    Ok(())
                }
            }
            kind::CONTINUATION => {
                let Some((bs, end_stream, mut block)) = self.block.take() else {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                };
                if bs != s {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                }
                block.extend_from_slice(payload);
                if block.len() > MAX_BLOCK {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                }
                if head.has(flag::END_HEADERS) {
                    self.on_block(s, end_stream, &block).await
                } else {
                    self.block = Some((s, end_stream, block));
                    Ok(())
                }
            }
            kind::PRIORITY => match (s, head.len) {
                (0, _) => Err(ConnError(code::PROTOCOL_ERROR)),
                (_, 5) => Ok(()),
                _ => Err(ConnError(code::FRAME_SIZE_ERROR)),
            },
            kind::RST_STREAM => {
                if head.len != 4 {
                    return Err(ConnError(code::FRAME_SIZE_ERROR));
                }
                if s == 0 || s > self.last_stream {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                }
                if let Some(open) = self.streams.get(&s) {
                    if open.bridged {
                        if let Some(inner) = &mut self.inner {
                            inner.out.extend_from_slice(&frame);
                        }
                    }
                    self.close_stream(s);
                }
                Ok(())
            }
            kind::SETTINGS => self.on_settings(head, payload),
            kind::PING => {
                if head.len != 8 {
                    return Err(ConnError(code::FRAME_SIZE_ERROR));
                }
                if s != 0 {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                }
                if !head.has(flag::ACK) {
                    http2::put_frame(&mut self.out, kind::PING, flag::ACK, 0, payload);
                }
                Ok(())
            }
            kind::GOAWAY => {
                if s != 0 || head.len < 8 {
                    return Err(ConnError(code::PROTOCOL_ERROR));
                }
                self.peer_goaway = true;
                Ok(())
            }
            kind::WINDOW_UPDATE => self.on_window_update(head, payload),
            kind::PUSH_PROMISE => Err(ConnError(code::PROTOCOL_ERROR)),
            // unknown frame types are ignored (RFC 9113 §5.5)
            _ => Ok(()),
        }
    }

    fn on_data(&mut self, head: Head, frame: &Bytes) -> Result<(), ConnError> {
        let s = head.stream;
        if s == 0 {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        let len = head.len as i64;
        self.recv_window -= len;
        if self.recv_window < 0 {
            return Err(ConnError(code::FLOW_CONTROL_ERROR));
        }
        let bridged = self
            .streams
            .get(&s)
            .is_some_and(|o| o.bridged && !o.client_done);
        match (bridged, &mut self.inner) {
            (true, Some(inner)) => {
                // the session credits it (its WINDOW_UPDATEs go to the client)
                inner.out.extend_from_slice(frame);
                if head.has(flag::END_STREAM) {
                    if let Some(open) = self.streams.get_mut(&s) {
                        open.client_done = true;
                    }
                    self.close_if_done(s);
                }
                Ok(())
            }
            _ if s > self.last_stream => Err(ConnError(code::PROTOCOL_ERROR)),
            _ => {
                // a stream that is closed to the client's data: refused, and credited here
                http2::put_rst(&mut self.out, s, code::STREAM_CLOSED);
                if let Some(open) = self.streams.get(&s) {
                    if open.bridged {
                        if let Some(inner) = &mut self.inner {
                            http2::put_rst(&mut inner.out, s, code::CANCEL);
                        }
                    }
                    self.close_stream(s);
                }
                if len > 0 {
                    http2::put_window_update(&mut self.out, 0, len as u32);
                    self.recv_window += len;
                }
                Ok(())
            }
        }
    }

    fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.stream != 0 {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        if head.has(flag::ACK) {
            return if head.len == 0 {
                Ok(())
            } else {
                Err(ConnError(code::FRAME_SIZE_ERROR))
            };
        }
        let settings = http2::settings(payload).ok_or(ConnError(code::FRAME_SIZE_ERROR))?;
        for (id, value) in settings {
            match id {
                setting::ENABLE_PUSH if value > 1 => return Err(ConnError(code::PROTOCOL_ERROR)),
                setting::INITIAL_WINDOW_SIZE => {
                    let value = i64::from(value);
                    if value > http2::MAX_WINDOW {
                        return Err(ConnError(code::FLOW_CONTROL_ERROR));
                    }
                    let delta = value - self.peer_window;
                    self.peer_window = value;
                    for open in self.streams.values_mut() {
                        open.window += delta;
                        if open.window > http2::MAX_WINDOW {
                            return Err(ConnError(code::FLOW_CONTROL_ERROR));
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => {
                    if !(http2::DEFAULT_MAX_FRAME..(1 << 24)).contains(&value) {
                        return Err(ConnError(code::PROTOCOL_ERROR));
                    }
                    self.peer_max_frame = value as usize;
                }
                // the loop's blocks never index: the client's table size does not matter
                _ => {}
            }
        }
        self.settings_seen = true;
        http2::put_frame(&mut self.out, kind::SETTINGS, flag::ACK, 0, &[]);
        Ok(())
    }

    fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
        if head.len != 4 {
            return Err(ConnError(code::FRAME_SIZE_ERROR));
        }
        let increment = i64::from(http2::u31(payload).unwrap_or(0));
        let s = head.stream;
        if s == 0 {
            if increment == 0 {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            self.send_window += increment;
            if self.send_window > http2::MAX_WINDOW {
                return Err(ConnError(code::FLOW_CONTROL_ERROR));
            }
            return Ok(());
        }
        if s > self.last_stream {
            return Err(ConnError(code::PROTOCOL_ERROR));
        }
        let Some(open) = self.streams.get_mut(&s) else {
            return Ok(());
        };
        open.window += increment;
        if increment == 0 || open.window > http2::MAX_WINDOW {
            let error = if increment == 0 {
                code::PROTOCOL_ERROR
            } else {
                code::FLOW_CONTROL_ERROR
            };
            let bridged = open.bridged;
            http2::put_rst(&mut self.out, s, error);
            if bridged {
                if let Some(inner) = &mut self.inner {
                    http2::put_rst(&mut inner.out, s, code::CANCEL);
                }
            }
            self.close_stream(s);
        }
        Ok(())
    }

    /// A complete header block from the client: a request, or a bridged stream's trailers.
    async fn on_block(&mut self, s: u32, end_stream: bool, block: &[u8]) -> Result<(), ConnError> {
        let whole = self.decode(block)?;
        if let Some(open) = self.streams.get_mut(&s) {
            if !open.bridged || open.client_done || !end_stream {
                return Err(ConnError(code::PROTOCOL_ERROR));
            }
            open.client_done = true;
            self.bridge_block(s, true, None);
            self.close_if_done(s);
            return Ok(());
        }
        if s <= self.last_stream {
            return Err(ConnError(code::STREAM_CLOSED));
        }
        self.last_stream = s;
        if self.goaway || self.streams.len() >= MAX_STREAMS as usize {
            http2::put_rst(&mut self.out, s, code::REFUSED_STREAM);
            return Ok(());
        }
        if !whole {
            // as Pingora's session (`h2`) answers it: 431, and the stream reset if still open
            self.scratch.clear();
            hpack::put_status(&mut self.scratch, 431);
            http2::put_headers(&mut self.out, s, &self.scratch, true, self.peer_max_frame);
            if !end_stream {
                http2::put_rst(&mut self.out, s, code::PROTOCOL_ERROR);
            }
            return Ok(());
        }
        self.on_request(s, end_stream).await;
        Ok(())
    }

    /// Decode a header block into `arena`/`spans`; `false` if its fields are larger than
    /// [`MAX_HEADER_LIST`] (as HTTP/2 counts them; nothing of them is kept then).
    fn decode(&mut self, block: &[u8]) -> Result<bool, ConnError> {
        self.arena.clear();
        self.spans.clear();
        let (arena, spans) = (&mut self.arena, &mut self.spans);
        let mut size = 0;
        self.decoder
            .decode(block, |name, value| {
                size += name.len() + value.len() + 32;
                if size <= MAX_HEADER_LIST as usize {
                    let n = arena.len()..arena.len() + name.len();
                    arena.extend_from_slice(name);
                    let v = arena.len()..arena.len() + value.len();
                    arena.extend_from_slice(value);
                    spans.push((n, v));
                }
            })
            .map_err(|e| {
                log::debug!("HTTP/2 header block refused: {}", e.0);
                ConnError(code::COMPRESSION_ERROR)
            })?;
        Ok(size <= MAX_HEADER_LIST as usize)
    }

    /// A new stream's request (decoded in `arena`/`spans`): answered here if it is a fresh
    /// memory hit, else handed to the session behind with its admission, if one was decided.
    async fn on_request(&mut self, s: u32, end_stream: bool) {
        let front = self.front;
        let fast = &front.fast;
        let mut handover = None;
        let decided = if end_stream {
            let fields: Vec<(&[u8], &[u8])> = self
                .spans
                .iter()
                .map(|(n, v)| (&self.arena[n.clone()], &self.arena[v.clone()]))
                .collect();
            match fast::hit_request_h2(&fields) {
                Some(req) => {
                    let viewer = fast.edge().trusted_proxies.viewer(
                        self.peer,
                        self.tls,
                        || req.forwarded_for.into_iter().collect(),
                        || req.forwarded_proto,
                    );
                    Some((fast.fast_hit(&req, viewer).await, viewer.addr))
                }
                None => None,
            }
        } else {
            None
        };
        match decided {
            Some((Fast::Hit(hit), client)) => return self.answer(s, hit, client),
            Some((Fast::Throttled(t), _)) => handover = Some(t.handover()),
            Some((Fast::Proxy(decided), _)) => handover = Some(decided),
            None => {}
        }
        fast.count_proxied();
        self.ensure_inner();
        let nonce = handover.map(|h| fast.handovers().put(h));
        self.streams.insert(
            s,
            Open {
                window: self.peer_window,
                queue: VecDeque::new(),
                bridged: true,
                client_done: end_stream,
                answered: false,
                ready: false,
                nonce,
            },
        );
        self.bridge_block(s, end_stream, nonce);
    }

    /// Write the decoded block to the session behind, as literals, with the nonce of a
    /// decision left for it (a client's own nonce field is dropped).
    fn bridge_block(&mut self, s: u32, end_stream: bool, nonce: Option<u64>) {
        let Some(inner) = &mut self.inner else {
            return;
        };
        self.scratch.clear();
        for (n, v) in &self.spans {
            let name = &self.arena[n.clone()];
            if name != HANDOVER_HEADER.as_bytes() {
                hpack::put_field(&mut self.scratch, name, &self.arena[v.clone()]);
            }
        }
        if let Some(nonce) = nonce {
            let value = format!("{nonce:x}");
            hpack::put_field(
                &mut self.scratch,
                HANDOVER_HEADER.as_bytes(),
                value.as_bytes(),
            );
        }
        let max = http2::DEFAULT_MAX_FRAME as usize;
        http2::put_headers(&mut inner.out, s, &self.scratch, end_stream, max);
    }

    /// Start the session behind the loop, the first time a stream needs it.
    fn ensure_inner(&mut self) {
        if self.inner.is_some() {
            return;
        }
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let io: Stream = Box::new(bridge::Bridged::new(theirs, &self.io));
        let app = self.front.inner.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            ServerApp::process_new(&app, io, &shutdown).await;
        });
        let mut out = BytesMut::with_capacity(1024);
        out.extend_from_slice(http2::PREFACE);
        http2::put_settings(
            &mut out,
            &[(setting::HEADER_TABLE_SIZE, 0), (setting::ENABLE_PUSH, 0)],
        );
        self.inner = Some(Inner {
            io: ours,
            rbuf: BytesMut::with_capacity(16 * 1024),
            out,
            block: None,
        });
    }

    /// Answer a hit: its header block, then its body as the client's windows allow.
    fn answer(&mut self, s: u32, hit: FastHit, client: Option<IpAddr>) {
        self.scratch.clear();
        if !hit.write_h2_head(&mut self.scratch) {
            log::error!("a stored head without an HTTP/2 block; stream {s} reset");
            http2::put_rst(&mut self.out, s, code::INTERNAL_ERROR);
            return;
        }
        let body = hit.body_to_send().cloned();
        let len = body.as_ref().map_or(0, Bytes::len);
        let max = self.peer_max_frame;
        let fits = len as i64 <= self.send_window.min(self.peer_window);
        if fits {
            http2::put_headers(&mut self.out, s, &self.scratch, body.is_none(), max);
            if let Some(body) = body {
                put_data(&mut self.out, s, body, true, max);
                self.send_window -= len as i64;
            }
        } else {
            let mut frames = BytesMut::new();
            http2::put_headers(&mut frames, s, &self.scratch, false, max);
            let queue = VecDeque::from([
                Out::Frames {
                    bytes: frames.freeze(),
                    end: false,
                },
                Out::Data {
                    bytes: body.unwrap_or_default(),
                    end: true,
                    credit: 0,
                },
            ]);
            self.streams.insert(
                s,
                Open {
                    window: self.peer_window,
                    queue,
                    bridged: false,
                    client_done: true,
                    answered: false,
                    ready: true,
                    nonce: None,
                },
            );
            self.ready.push_back(s);
        }
        self.front.fast.fast_done(hit, len, 0, client);
    }

    /// Every whole frame the session behind sent.
    fn on_inner_frames(&mut self) -> Result<(), ConnError> {
        while let Some(inner) = &mut self.inner {
            let Some(head) = Head::parse(&inner.rbuf) else {
                break;
            };
            if head.len > http2::DEFAULT_MAX_FRAME as usize {
                return Err(ConnError(code::INTERNAL_ERROR));
            }
            if inner.rbuf.len() < HEAD_LEN + head.len {
                inner.rbuf.reserve(HEAD_LEN + head.len - inner.rbuf.len());
                break;
            }
            let frame = inner.rbuf.split_to(HEAD_LEN + head.len).freeze();
            let s = head.stream;
            if let Some((bs, mut block)) = inner.block.take() {
                if head.kind != kind::CONTINUATION || bs != s {
                    return Err(ConnError(code::INTERNAL_ERROR));
                }
                block.extend_from_slice(&frame);
                if head.has(flag::END_HEADERS) {
                    let end = Head::parse(&block).is_some_and(|h| h.has(flag::END_STREAM));
                    let bytes = block.freeze();
                    self.queue(s, Out::Frames { bytes, end });
                } else {
                    inner.block = Some((bs, block));
                }
                continue;
            }
            let payload = &frame[HEAD_LEN..];
            match head.kind {
                kind::SETTINGS if !head.has(flag::ACK) => {
                    http2::put_frame(&mut inner.out, kind::SETTINGS, flag::ACK, 0, &[]);
                }
                kind::PING if !head.has(flag::ACK) => {
                    http2::put_frame(&mut inner.out, kind::PING, flag::ACK, 0, payload);
                }
                kind::WINDOW_UPDATE => {
                    // credit for the client's data, which went to the session as it came
                    if s == 0 {
                        self.recv_window += i64::from(http2::u31(payload).unwrap_or(0));
                        self.out.extend_from_slice(&frame);
                    } else if self.streams.contains_key(&s) {
                        self.out.extend_from_slice(&frame);
                    }
                }
                kind::RST_STREAM => {
                    if self.streams.contains_key(&s) {
                        self.close_stream(s);
                        self.out.extend_from_slice(&frame);
                    }
                }
                kind::HEADERS => {
                    if head.has(flag::END_HEADERS) {
                        let end = head.has(flag::END_STREAM);
                        self.queue(s, Out::Frames { bytes: frame, end });
                    } else {
                        inner.block = Some((s, BytesMut::from(&frame[..])));
                    }
                }
                kind::DATA => {
                    let part =
                        http2::unpadded(&head, payload).ok_or(ConnError(code::INTERNAL_ERROR))?;
                    let credit = head.len as u32;
                    let out = Out::Data {
                        bytes: frame.slice(HEAD_LEN + part.start..HEAD_LEN + part.end),
                        end: head.has(flag::END_STREAM),
                        credit,
                    };
                    if !self.queue(s, out) && credit > 0 {
                        if let Some(inner) = &mut self.inner {
                            http2::put_window_update(&mut inner.out, 0, credit);
                        }
                    }
                }
                kind::GOAWAY => {
                    let error = payload.get(4..8).map_or(code::INTERNAL_ERROR, |c| {
                        u32::from_be_bytes([c[0], c[1], c[2], c[3]])
                    });
                    if error == code::NO_ERROR {
                        self.go_away();
                    } else {
                        return Err(ConnError(error));
                    }
                }
                kind::PUSH_PROMISE | kind::CONTINUATION => {
                    return Err(ConnError(code::INTERNAL_ERROR));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Queue `out` for stream `s`; `false` if the stream is no longer open.
    fn queue(&mut self, s: u32, out: Out) -> bool {
        let Some(open) = self.streams.get_mut(&s) else {
            return false;
        };
        open.queue.push_back(out);
        if !open.ready {
            open.ready = true;
            self.ready.push_back(s);
        }
        true
    }

    /// Write what the streams have queued, as far as the client's windows allow.
    fn pump(&mut self) {
        for _ in 0..self.ready.len() {
            let Some(s) = self.ready.pop_front() else {
                break;
            };
            let Some(open) = self.streams.get_mut(&s) else {
                continue;
            };
            open.ready = false;
            while let Some(item) = open.queue.front_mut() {
                match item {
                    Out::Frames { bytes, end } => {
                        self.out.extend_from_slice(bytes);
                        open.answered |= *end;
                    }
                    Out::Data { bytes, end, credit } => {
                        let allowed = self
                            .send_window
                            .min(open.window)
                            .min(self.peer_max_frame as i64)
                            .max(0) as usize;
                        if bytes.len() > allowed {
                            if allowed == 0 {
                                open.ready = true;
                                break;
                            }
                            let part = bytes.split_to(allowed);
                            put_data(&mut self.out, s, part, false, allowed);
                            self.send_window -= allowed as i64;
                            open.window -= allowed as i64;
                            continue;
                        }
                        let len = bytes.len();
                        put_data(&mut self.out, s, std::mem::take(bytes), *end, len.max(1));
                        self.send_window -= len as i64;
                        open.window -= len as i64;
                        open.answered |= *end;
                        if *credit > 0 {
                            if let Some(inner) = &mut self.inner {
                                http2::put_window_update(&mut inner.out, 0, *credit);
                                if !*end {
                                    http2::put_window_update(&mut inner.out, s, *credit);
                                }
                            }
                        }
                    }
                }
                open.queue.pop_front();
            }
            if open.ready {
                self.ready.push_back(s);
            }
            self.close_if_done(s);
        }
    }

    fn close_if_done(&mut self, s: u32) {
        if self
            .streams
            .get(&s)
            .is_some_and(|o| o.answered && o.client_done && o.queue.is_empty())
        {
            self.close_stream(s);
        }
    }
}

/// DATA frames for `body`, at most `max` bytes each; the last one with END_STREAM if `end`.
fn put_data(out: &mut BytesMut, s: u32, body: Bytes, end: bool, max: usize) {
    if body.is_empty() {
        let flags = if end { flag::END_STREAM } else { 0 };
        http2::put_frame(out, kind::DATA, flags, s, &[]);
        return;
    }
    let mut chunks = body.chunks(max).peekable();
    while let Some(chunk) = chunks.next() {
        let flags = if end && chunks.peek().is_none() {
            flag::END_STREAM
        } else {
            0
        };
        http2::put_frame(out, kind::DATA, flags, s, chunk);
    }
}

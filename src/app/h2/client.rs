//! Frames from the client: requests (answered here, or handed to the session behind with their
//! admission), their bodies and trailers, and the connection's own frames.

use bytes::{Buf, Bytes, BytesMut};
use pingora_core::apps::HttpServerApp;
use std::collections::VecDeque;
use std::net::IpAddr;
use tokio::time::Instant;

use super::out::put_data;
use super::{Conn, ConnError, Open, Out, MAX_BLOCK, MAX_HEADER_LIST, MAX_STREAMS, OUT_LIMIT};
use crate::http2::{self, code, flag, hpack, kind, setting, Head, HEAD_LEN};
use crate::proxy::fast::{self, Fast, FastHit};
use crate::proxy::handovers::HANDOVER_HEADER;

impl<A> Conn<'_, A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Every whole frame the client sent, while the answers fit in the write buffer.
    pub(super) async fn on_client_frames(&mut self) -> Result<(), ConnError> {
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
            let max = http2::DEFAULT_MAX_FRAME as usize;
            let taken = http2::take_frame(&mut self.rbuf, max);
            let Some((head, frame)) = taken.map_err(|_| ConnError(code::FRAME_SIZE_ERROR))? else {
                break;
            };
            any = true;
            self.on_client_frame(head, frame).await?;
        }
        if any {
            self.last_active = Instant::now();
        }
        Ok(())
    }

    pub(super) async fn on_client_frame(
        &mut self,
        head: Head,
        frame: Bytes,
    ) -> Result<(), ConnError> {
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
                if s == 0 || s.is_multiple_of(2) {
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

    pub(super) fn on_data(&mut self, head: Head, frame: &Bytes) -> Result<(), ConnError> {
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
                self.reset_stream(s, code::STREAM_CLOSED);
                if len > 0 {
                    http2::put_window_update(&mut self.out, 0, len as u32);
                    self.recv_window += len;
                }
                Ok(())
            }
        }
    }

    pub(super) fn on_settings(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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

    pub(super) fn on_window_update(&mut self, head: Head, payload: &[u8]) -> Result<(), ConnError> {
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
            self.reset_stream(s, error);
        }
        Ok(())
    }

    /// A complete header block from the client: a request, or a bridged stream's trailers.
    pub(super) async fn on_block(
        &mut self,
        s: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), ConnError> {
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
    pub(super) fn decode(&mut self, block: &[u8]) -> Result<bool, ConnError> {
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
    pub(super) async fn on_request(&mut self, s: u32, end_stream: bool) {
        let fast = self.fast;
        let mut handover = None;
        let decided = if end_stream {
            let arena = &self.arena;
            let fields = self
                .spans
                .iter()
                .map(|(n, v)| (&arena[n.clone()], &arena[v.clone()]));
            match fast::hit_request_h2(fields) {
                Some(req) => {
                    let viewer = fast.edge().trusted_proxies.viewer(
                        self.peer,
                        self.tls,
                        || req.forwarded_for.into_iter().collect(),
                        || req.forwarded_proto,
                    );
                    let hit = fast.fast_hit(&req, viewer, &self.token_memo).await;
                    Some((hit, viewer.addr))
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
                bridged: true,
                client_done: end_stream,
                nonce,
                ..Open::new(self.peer_window)
            },
        );
        self.bridge_block(s, end_stream, nonce);
    }

    /// Write the decoded block to the session behind, as literals, with the nonce of a
    /// decision left for it (a client's own nonce field is dropped).
    pub(super) fn bridge_block(&mut self, s: u32, end_stream: bool, nonce: Option<u64>) {
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

    /// Answer a hit: its header block, then its body as the client's windows allow.
    pub(super) fn answer(&mut self, s: u32, hit: FastHit, client: Option<IpAddr>) {
        self.scratch.clear();
        if !hit.write_h2_head(&mut self.scratch) {
            log::error!("a stored head without an HTTP/2 block; stream {s} reset");
            http2::put_rst(&mut self.out, s, code::INTERNAL_ERROR);
            return;
        }
        let body = hit.body().cloned();
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
                    queue,
                    client_done: true,
                    ready: true,
                    ..Open::new(self.peer_window)
                },
            );
            self.ready.push_back(s);
        }
        self.fast.fast_done(hit, len, 0, client);
    }
}

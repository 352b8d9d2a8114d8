//! What waits for the client's windows: each open stream's queue, written in turn as far as
//! the connection's and the stream's windows allow.

use bytes::{Bytes, BytesMut};
use pingora_core::apps::HttpServerApp;

use super::{Conn, Out};
use crate::http2::{self, code, flag, kind};

impl<A> Conn<'_, A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Queue `out` for stream `s`; `false` if the stream is no longer open.
    pub(super) fn queue(&mut self, s: u32, out: Out) -> bool {
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
    pub(super) fn pump(&mut self) {
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

    pub(super) fn close_if_done(&mut self, s: u32) {
        if self
            .streams
            .get(&s)
            .is_some_and(|o| o.answered && o.client_done && o.queue.is_empty())
        {
            self.close_stream(s);
        }
    }

    /// Reset stream `s` for the client with `error`; one the session behind answers is
    /// cancelled there too. Forgotten either way.
    pub(super) fn reset_stream(&mut self, s: u32, error: u32) {
        http2::put_rst(&mut self.out, s, error);
        if self.streams.get(&s).is_some_and(|o| o.bridged) {
            if let Some(inner) = &mut self.inner {
                http2::put_rst(&mut inner.out, s, code::CANCEL);
            }
        }
        self.close_stream(s);
    }

    /// Forget stream `s`: a decision left for it, and what it had queued (the session behind
    /// is credited for its data, so that its connection window does not shrink).
    pub(super) fn close_stream(&mut self, s: u32) {
        let Some(open) = self.streams.remove(&s) else {
            return;
        };
        if let Some(nonce) = open.nonce {
            self.fast.handovers().forget(nonce);
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
}

/// DATA frames for `body`, at most `max` bytes each; the last one with END_STREAM if `end`.
pub(super) fn put_data(out: &mut BytesMut, s: u32, body: Bytes, end: bool, max: usize) {
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

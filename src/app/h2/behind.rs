//! The session behind the loop: started for the first stream that needs it, and the frames it
//! sends — answers queued for the client, its settings, pings and credits, its GOAWAY.

use bytes::BytesMut;
use pingora_core::apps::{HttpServerApp, ServerApp};
use pingora_core::protocols::Stream;

use super::{bridge, Conn, ConnError, Inner, Open, Out, PIPE};
use crate::http2::{self, code, flag, kind, setting, Head, HEAD_LEN};

impl<A> Conn<'_, A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    /// Start the session behind the loop, the first time a stream needs it.
    pub(super) fn ensure_inner(&mut self) {
        if self.inner.is_some() {
            return;
        }
        let (ours, theirs) = tokio::io::duplex(PIPE);
        let io: Stream = Box::new(bridge::Bridged::new(theirs, &self.io));
        let app = self.app.clone();
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

    /// Every whole frame the session behind sent.
    pub(super) fn on_inner_frames(&mut self) -> Result<(), ConnError> {
        while let Some(inner) = &mut self.inner {
            let max = http2::DEFAULT_MAX_FRAME as usize;
            let taken = http2::take_frame(&mut inner.rbuf, max);
            let Some((head, frame)) = taken.map_err(|_| ConnError(code::INTERNAL_ERROR))? else {
                break;
            };
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
                kind::RST_STREAM if self.streams.contains_key(&s) => {
                    self.close_stream(s);
                    self.out.extend_from_slice(&frame);
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

    /// The session behind closed: its streams that were not answered in full are reset (those
    /// whose end is queued, waiting for the client's windows, still go out).
    pub(super) fn inner_closed(&mut self) {
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
}

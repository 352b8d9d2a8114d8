//! Where a chunked request body ends, read strictly as it streams past (RFC 9112 §7.1).
//!
//! The connection loop hands the proxy one request's bytes and no more; for a chunked body the
//! end is only known by following the chunks. [`Chunked`] does that without copying: it is fed
//! the bytes as they arrive and says where the body ends. It is stricter than the grammar
//! allows, on purpose — every form origins are known to read differently is refused:
//!
//! - a chunk size is 1–16 hex digits, nothing else (no sign, `0x`, spaces or overflow);
//! - chunk extensions (`;name=value`) are passed over, but only visible ASCII, space and tab,
//!   at most [`MAX_LINE`] bytes per size line; Pingora re-frames the body for the origin, so
//!   extensions never reach it;
//! - every line ends in CRLF, and chunk data is followed by exactly CRLF;
//! - no trailer fields: the last chunk is followed directly by the final CRLF.

use crate::request::hex_digit;

/// The longest chunk-size line accepted (size and extensions).
pub const MAX_LINE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits (`digits` read so far).
    Size,
    /// In the extensions after `;`.
    Ext,
    /// After the size line's CR.
    SizeLf,
    /// In a chunk's data (`left` bytes to go).
    Data,
    /// After the data: CR expected.
    DataCr,
    /// After the data's CR.
    DataLf,
    /// After the last chunk's size line: the final CR expected.
    EndCr,
    /// After the final CR.
    EndLf,
    /// The body ended.
    Done,
}

/// A malformed chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// The state of one chunked body, fed in pieces.
#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    size: u64,
    left: u64,
    digits: u8,
    line: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    /// A body about to start.
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size,
            size: 0,
            left: 0,
            digits: 0,
            line: 0,
        }
    }

    /// Whether the body has ended.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// Follow the next bytes of the body. `Ok(Some(n))`: the body ends after the first `n`
    /// bytes of `buf` (the rest belongs to whatever follows). `Ok(None)`: all of `buf` is body
    /// and more is to come. Once done, every call answers `Ok(Some(0))`.
    pub fn feed(&mut self, buf: &[u8]) -> Result<Option<usize>, Malformed> {
        let mut i = 0;
        while i < buf.len() {
            if self.state == State::Data {
                let take = self.left.min((buf.len() - i) as u64);
                self.left -= take;
                i += take as usize;
                if self.left == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[i];
            i += 1;
            self.state = match self.state {
                State::Size => match hex_digit(b) {
                    Some(d) if self.digits < 16 => {
                        self.digits += 1;
                        self.size = (self.size << 4) | u64::from(d);
                        self.line_byte()?;
                        State::Size
                    }
                    None if self.digits > 0 && b == b';' => {
                        self.line_byte()?;
                        State::Ext
                    }
                    None if self.digits > 0 && b == b'\r' => State::SizeLf,
                    _ => return Err(Malformed),
                },
                State::Ext => match b {
                    b'\r' => State::SizeLf,
                    b'\t' | b' '..=b'~' => {
                        self.line_byte()?;
                        State::Ext
                    }
                    _ => return Err(Malformed),
                },
                State::SizeLf if b == b'\n' => {
                    self.line = 0;
                    self.digits = 0;
                    if self.size == 0 {
                        State::EndCr
                    } else {
                        self.left = self.size;
                        self.size = 0;
                        State::Data
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size,
                State::EndCr if b == b'\r' => State::EndLf,
                State::EndLf if b == b'\n' => {
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                State::Done => return Ok(Some(0)),
                _ => return Err(Malformed),
            };
        }
        Ok(if self.state == State::Done {
            Some(0)
        } else {
            None
        })
    }

    fn line_byte(&mut self) -> Result<(), Malformed> {
        self.line += 1;
        if self.line > MAX_LINE {
            Err(Malformed)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `body` in pieces of `step` bytes; the offset where the body ended.
    fn end_of(body: &[u8], step: usize) -> Result<Option<usize>, Malformed> {
        let mut c = Chunked::new();
        let mut at = 0;
        for piece in body.chunks(step.max(1)) {
            if let Some(n) = c.feed(piece)? {
                return Ok(Some(at + n));
            }
            at += piece.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let body = b"5\r\nhello\r\n6;a=b; c\r\n world\r\n0\r\n\r\nGET /next HTTP/1.1\r\n";
        let end = body.len() - b"GET /next HTTP/1.1\r\n".len();
        for step in 1..body.len() {
            assert_eq!(end_of(body, step), Ok(Some(end)), "step {step}");
        }
        assert_eq!(end_of(b"0\r\n\r\n", 100), Ok(Some(5)));
        assert_eq!(end_of(b"A\r\n0123456789\r\n0\r\n\r\n", 3), Ok(Some(20)));
    }

    #[test]
    fn incomplete_bodies_ask_for_more() {
        for partial in [
            &b"5\r\nhel"[..],
            b"5",
            b"5\r\nhello\r\n",
            b"0\r\n",
            b"0\r\n\r",
        ] {
            assert_eq!(end_of(partial, 2), Ok(None), "{partial:?}");
        }
    }

    #[test]
    fn refuses_every_ambiguous_form() {
        let bad: &[&[u8]] = &[
            b"zz\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"-1\r\n",
            b"+5\r\nhello\r\n",
            b" 5\r\nhello\r\n",
            b"5 \r\nhello\r\n",
            b"\r\n",
            b"11111111111111111\r\n",   // 17 digits
            b"5\nhello\r\n0\r\n\r\n",   // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",   // bare LF after the data
            b"5\r\nhelloX\r\n",         // data longer than its size
            b"5;a\nb\r\n",              // LF inside an extension
            b"5;\x01\r\n",              // control byte in an extension
            b"0\r\nTrailer: x\r\n\r\n", // trailers are refused
            b"0\r\n\n",
        ];
        for b in bad {
            assert_eq!(
                end_of(b, 1),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(b)
            );
            assert_eq!(
                end_of(b, 64),
                Err(Malformed),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn sixteen_digits_is_the_most() {
        let mut c = Chunked::new();
        assert_eq!(c.feed(b"ffffffffffffffff\r\n"), Ok(None));
        let mut c = Chunked::new();
        assert_eq!(c.feed(b"1ffffffffffffffff"), Err(Malformed));
    }

    #[test]
    fn long_extensions_are_refused() {
        let mut line = b"1;".to_vec();
        line.extend(std::iter::repeat_n(b'a', MAX_LINE));
        assert_eq!(Chunked::new().feed(&line), Err(Malformed));
    }

    #[test]
    fn done_stays_done() {
        let mut c = Chunked::new();
        assert_eq!(c.feed(b"0\r\n\r\nrest"), Ok(Some(5)));
        assert!(c.done());
        assert_eq!(c.feed(b"more"), Ok(Some(0)));
    }
}

//! A raw HTTP/1.1 client: it writes bytes exactly as given (in one write, or piece by piece
//! with pauses) and reads a sequence of responses (status, headers, `Content-Length`, chunked or
//! close-delimited bodies) against a deadline, noting whether and when the server closed the
//! connection. Blocking std I/O; nothing here panics on what the server sends.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

/// One response as read off the wire.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// The status line as sent.
    pub status_line: String,
    /// Header lines: names lower-cased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// The body (chunked bodies decoded).
    pub body: Vec<u8>,
    /// False for a head read at the end (close or deadline) whose body did not arrive in
    /// full, e.g. the `Content-Length` of an answer to HEAD.
    pub complete: bool,
}

impl Response {
    /// First value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `Connection: close` was announced.
    pub fn says_close(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }

    /// `Connection: keep-alive` was announced.
    pub fn says_keep_alive(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("keep-alive"))
    }

    /// One line for failure messages.
    pub fn summary(&self) -> String {
        let mut t = self.text();
        if t.len() > 80 {
            t.truncate(80);
            t.push('…');
        }
        let partial = if self.complete {
            ""
        } else {
            " (body incomplete)"
        };
        format!("{} {:?}{partial}", self.status_line, t)
    }
}

/// How reading stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// The wanted number of responses arrived (the connection may still be open).
    Complete,
    /// The server closed the connection (EOF or reset).
    Closed,
    /// The deadline passed with the connection open.
    Deadline,
    /// The server sent something that is not an HTTP/1.1 response.
    Garbage(String),
}

/// What one read session saw.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Responses, in order.
    pub responses: Vec<Response>,
    /// How reading stopped.
    pub end: End,
    /// When the server closed the connection, counted from [`Conn::started`] (the first byte
    /// written, or the connect if nothing was written).
    pub closed_after: Option<Duration>,
    /// Bytes received after the last response read.
    pub leftover: Vec<u8>,
}

impl Exchange {
    /// The server closed the connection.
    pub fn closed(&self) -> bool {
        self.closed_after.is_some()
    }

    /// Statuses, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.responses.iter().map(|r| r.status).collect()
    }

    /// One line per response plus how it ended, for failure messages.
    pub fn describe(&self) -> String {
        let mut s: Vec<String> = self.responses.iter().map(Response::summary).collect();
        if !self.leftover.is_empty() {
            s.push(format!(
                "leftover {:?}",
                String::from_utf8_lossy(&self.leftover[..self.leftover.len().min(200)])
            ));
        }
        s.push(format!(
            "end: {:?}, closed after {:?}",
            self.end, self.closed_after
        ));
        s.join(" | ")
    }
}

/// A connection to `127.0.0.1:<port>`.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    connected: Instant,
    first_write: Option<Instant>,
    closed_at: Option<Instant>,
    /// For each response still to be read: was its request a HEAD (no body)?
    heads: std::collections::VecDeque<bool>,
}

impl Conn {
    /// Connect (panics if the port does not accept).
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"));
        Conn::from_stream(stream)
    }

    /// Use a connected stream.
    pub fn from_stream(stream: TcpStream) -> Conn {
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
            connected: Instant::now(),
            first_write: None,
            closed_at: None,
            heads: Default::default(),
        }
    }

    /// The first write, or the connect if nothing was written yet.
    pub fn started(&self) -> Instant {
        self.first_write.unwrap_or(self.connected)
    }

    /// A clone of the socket (e.g. for a writer thread).
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().expect("clone socket")
    }

    /// Note that the next response to read answers a HEAD (so it has no body).
    pub fn expect_head(&mut self) {
        self.heads.push_back(true);
    }

    /// Write `bytes` exactly, in one write call sequence. Errors (a closed peer) are returned.
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.first_write.is_none() {
            self.first_write = Some(Instant::now());
        }
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Write `parts` one after another with `pause` between them.
    pub fn send_parts(&mut self, parts: &[&[u8]], pause: Duration) -> std::io::Result<()> {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(pause);
            }
            self.send(p)?;
        }
        Ok(())
    }

    /// Half-close: no more bytes from us.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Read more bytes until `deadline`; false once the peer closed or the deadline passed.
    fn fill(&mut self, deadline: Instant) -> bool {
        if self.closed_at.is_some() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        let _ = self.stream.set_read_timeout(Some(wait));
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.closed_at = Some(Instant::now());
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
            Err(e) if e.kind() == ErrorKind::Interrupted => true,
            Err(_) => {
                // reset: the server is gone all the same
                self.closed_at = Some(Instant::now());
                false
            }
        }
    }

    /// Read up to `n` responses, for at most `within`. Stops early when the server closes.
    pub fn read_responses(&mut self, n: usize, within: Duration) -> Exchange {
        let deadline = Instant::now() + within;
        let mut responses = Vec::new();
        let end = loop {
            if responses.len() >= n {
                break End::Complete;
            }
            let head = self.heads.front().copied().unwrap_or(false);
            match parse_response(&self.buf, head, false, false) {
                Ok(Some((resp, used))) => {
                    self.buf.drain(..used);
                    self.heads.pop_front();
                    // interim 1xx responses are not answers
                    if !(100..200).contains(&resp.status) {
                        responses.push(resp);
                    }
                    continue;
                }
                Ok(None) => {}
                Err(why) => break End::Garbage(why),
            }
            if !self.fill(deadline) {
                let closed = self.closed_at.is_some();
                // one last parse: close-delimited bodies, bodies cut short (e.g. answers to HEAD)
                if let Ok(Some((resp, used))) = parse_response(&self.buf, head, true, closed) {
                    if responses.len() < n {
                        self.buf.drain(..used);
                        responses.push(resp);
                    }
                }
                break if closed { End::Closed } else { End::Deadline };
            }
        };
        self.exchange(responses, end)
    }

    /// Read every response until the server closes or `within` passes.
    pub fn read_until_close(&mut self, within: Duration) -> Exchange {
        self.read_responses(usize::MAX, within)
    }

    /// After the responses read so far: wait up to `within` for the server to close, reading
    /// (and keeping as leftover) whatever else it sends.
    pub fn wait_close(&mut self, within: Duration) -> Exchange {
        let deadline = Instant::now() + within;
        while self.fill(deadline) {}
        let end = if self.closed_at.is_some() {
            End::Closed
        } else {
            End::Deadline
        };
        self.exchange(Vec::new(), end)
    }

    fn exchange(&self, responses: Vec<Response>, end: End) -> Exchange {
        Exchange {
            responses,
            end,
            closed_after: self
                .closed_at
                .map(|t| t.saturating_duration_since(self.started())),
            leftover: self.buf.clone(),
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse one response at the start of `buf`: `Ok(None)` when more bytes are needed. On the
/// `last` parse (no more bytes will be read) a head whose body is cut short is returned with
/// what arrived, marked incomplete; a close-delimited body is complete only if `closed`.
fn parse_response(
    buf: &[u8],
    head_request: bool,
    last: bool,
    closed: bool,
) -> Result<Option<(Response, usize)>, String> {
    if buf.is_empty() {
        return Ok(None);
    }
    if !b"HTTP/".starts_with(&buf[..buf.len().min(5)]) {
        return Err(format!(
            "not a response: {:?}",
            String::from_utf8_lossy(&buf[..buf.len().min(100)])
        ));
    }
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("").to_owned();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut resp = Response {
        status,
        status_line,
        headers,
        body: Vec::new(),
        complete: true,
    };
    let body_at = end + 4;
    if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        return Ok(Some((resp, body_at)));
    }
    let chunked = resp
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let partial = |mut resp: Response| {
        resp.body = buf[body_at..].to_vec();
        resp.complete = false;
        Ok(Some((resp, buf.len())))
    };
    if chunked {
        let mut at = body_at;
        loop {
            let Some(rel) = find(&buf[at..], b"\r\n") else {
                return if last { partial(resp) } else { Ok(None) };
            };
            let size_text = String::from_utf8_lossy(&buf[at..at + rel]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| format!("bad chunk size {size_text:?} in a response"))?;
            at += rel + 2;
            if size == 0 {
                // trailers until the empty line
                loop {
                    let Some(rel) = find(&buf[at..], b"\r\n") else {
                        return if last { partial(resp) } else { Ok(None) };
                    };
                    at += rel + 2;
                    if rel == 0 {
                        return Ok(Some((resp, at)));
                    }
                }
            }
            if buf.len() < at + size + 2 {
                return if last { partial(resp) } else { Ok(None) };
            }
            resp.body.extend_from_slice(&buf[at..at + size]);
            at += size + 2;
        }
    }
    if let Some(cl) = resp.header("content-length") {
        let n: usize = cl
            .parse()
            .map_err(|_| format!("bad Content-Length {cl:?} in a response"))?;
        if buf.len() < body_at + n {
            return if last { partial(resp) } else { Ok(None) };
        }
        resp.body = buf[body_at..body_at + n].to_vec();
        return Ok(Some((resp, body_at + n)));
    }
    // close-delimited
    if last {
        resp.body = buf[body_at..].to_vec();
        resp.complete = closed;
        return Ok(Some((resp, buf.len())));
    }
    Ok(None)
}

//! [`NaiveOrigin`]: a hand-written HTTP/1.1 origin that frames requests the way many real
//! origins do, so that a request smuggled past the edge shows up as a request it records.
//!
//! - It reads a request head up to the first empty line (CRLF CRLF, or a bare LF LF: lenient
//!   like many servers).
//! - GET, HEAD and every other method without a body in its semantics (anything but POST, PUT
//!   and PATCH) have their body IGNORED: `Content-Length` and `Transfer-Encoding` are not read,
//!   so whatever follows the head on the connection is parsed as the next request.
//! - POST, PUT and PATCH read a chunked body (`Transfer-Encoding` mentioning `chunked` wins)
//!   or a `Content-Length` body (the first such header, leading `+` accepted as `str::parse`
//!   does).
//! - Connections are kept alive (closed after `Connection: close` or an HTTP/1.0 request
//!   without keep-alive). Every parsed request is answered `200` with `Content-Length`,
//!   `Cache-Control: max-age=60` and the body `naive <METHOD> <target>\n`.
//! - Every parsed request is recorded with its connection number. Input it cannot frame (a bad
//!   request line, a header line without a colon, a bad chunk size, a head over 64 KiB, bytes
//!   left when the peer closes) is recorded as [`NaiveRequest::unparseable`] and the connection
//!   is closed. It never panics on what it reads.
//! - [`NaiveOrigin::start_with`] takes [`NaiveOptions`]: a renderer that answers parsed requests
//!   instead of the default body (e.g. pages by `x-tollgate-variant`), an observer that sees
//!   every record as it is made, whether records are kept at all (a long run checks each
//!   record in the observer and keeps only the count), and whether it answers as an HTTP/1.0
//!   server (`HTTP/1.0` status lines, one answer per connection). [`NaiveOrigin::start`] is
//!   `start_with(NaiveOptions::default())`: the behaviour above.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A head longer than this without its empty line is unparseable.
const MAX_HEAD: usize = 64 * 1024;

/// One request as the naive origin framed it (or the bytes it could not frame).
#[derive(Debug, Clone)]
pub struct NaiveRequest {
    /// Connection number (1, 2, ... in accept order).
    pub conn: usize,
    /// Request method as sent (empty when unparseable).
    pub method: String,
    /// Request target exactly as sent (empty when unparseable).
    pub target: String,
    /// HTTP version token, e.g. `HTTP/1.1`.
    pub version: String,
    /// Header lines as sent: raw names (case kept) and values (trimmed).
    pub headers: Vec<(String, String)>,
    /// The body it read (always empty for methods whose body it ignores).
    pub body: Vec<u8>,
    /// `Some(why + the bytes)` when it could not frame what it read.
    pub unparseable: Option<String>,
}

impl NaiveRequest {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Every value of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_all(name).into_iter().next()
    }

    /// One line for failure messages.
    pub fn summary(&self) -> String {
        match &self.unparseable {
            Some(why) => format!("conn {}: UNPARSEABLE {why}", self.conn),
            None => format!(
                "conn {}: {} {} {} body={:?}",
                self.conn,
                self.method,
                self.target,
                self.version,
                String::from_utf8_lossy(&self.body)
            ),
        }
    }
}

#[derive(Default)]
struct State {
    requests: Vec<NaiveRequest>,
    /// Records made (parsed or not), kept or not.
    total: usize,
    delay: Duration,
    extra_headers: HashMap<String, Vec<(String, String)>>,
}

/// An answer given by a [`NaiveOptions::render`] hook instead of the default one.
#[derive(Debug, Clone)]
pub struct NaiveAnswer {
    /// Status code.
    pub status: u16,
    /// Header lines (`Content-Length` is added, and `Connection: close` when closing).
    pub headers: Vec<(String, String)>,
    /// Body (not sent in answer to HEAD; its length is still the `Content-Length`).
    pub body: Vec<u8>,
}

/// Answers a parsed request; `None` gives the default answer.
pub type RenderHook = Arc<dyn Fn(&NaiveRequest) -> Option<NaiveAnswer> + Send + Sync>;
/// Sees every record (parsed or unparseable) on the connection's thread, as it is made.
pub type ObserveHook = Arc<dyn Fn(&NaiveRequest) + Send + Sync>;

/// How [`NaiveOrigin::start_with`] answers and records. The default is [`NaiveOrigin::start`].
#[derive(Clone)]
pub struct NaiveOptions {
    /// Answers parsed requests (framing is unchanged: the body of a GET is still ignored).
    pub render: Option<RenderHook>,
    /// Called with every record before it is stored (or dropped).
    pub observe: Option<ObserveHook>,
    /// Keep every record for [`NaiveOrigin::requests`] (default). When false only
    /// [`NaiveOrigin::count`] grows, so memory stays flat over millions of requests.
    pub keep_records: bool,
    /// Answer as an HTTP/1.0 server does: `HTTP/1.0` status lines, and the connection closed
    /// after each answer (`Connection: close`). Default false: HTTP/1.1, kept alive.
    pub http_1_0: bool,
}

impl Default for NaiveOptions {
    fn default() -> Self {
        NaiveOptions {
            render: None,
            observe: None,
            keep_records: true,
            http_1_0: false,
        }
    }
}

/// The hooks and the state a connection thread needs.
struct Shared {
    state: Mutex<State>,
    opts: NaiveOptions,
}

impl Shared {
    fn record(&self, req: NaiveRequest) {
        if let Some(observe) = &self.opts.observe {
            observe(&req);
        }
        let mut st = self.state.lock().unwrap();
        st.total += 1;
        if self.opts.keep_records {
            st.requests.push(req);
        }
    }
}

/// The naive origin. Dropping it stops accepting; open connections end when the peer closes.
pub struct NaiveOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NaiveOrigin {
    /// Start on `127.0.0.1:0`.
    pub fn start() -> NaiveOrigin {
        NaiveOrigin::start_with(NaiveOptions::default())
    }

    /// Start on `127.0.0.1:0` with these hooks.
    pub fn start_with(opts: NaiveOptions) -> NaiveOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind naive origin");
        let addr = listener.local_addr().expect("naive origin addr");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            opts,
        });
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(AtomicUsize::new(0));
        let (sh, stp) = (shared.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("naive-origin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if stp.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let n = conns.fetch_add(1, Ordering::SeqCst) + 1;
                    let (sh, stp) = (sh.clone(), stp.clone());
                    let _ = std::thread::Builder::new()
                        .name(format!("naive-conn-{n}"))
                        .spawn(move || serve(stream, n, &sh, &stp));
                }
            })
            .expect("spawn naive origin");
        NaiveOrigin {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`, for `EdgeOptions::origin_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Wait this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.shared.state.lock().unwrap().delay = delay;
    }

    /// Add these headers to every answer for `path` (exact, without query).
    pub fn set_headers(&self, path: &str, headers: &[(&str, &str)]) {
        self.shared.state.lock().unwrap().extra_headers.insert(
            path.to_owned(),
            headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }

    /// Everything recorded so far, in order (nothing with `keep_records: false`).
    pub fn requests(&self) -> Vec<NaiveRequest> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    /// How many requests (parsed or not) were recorded (also when not kept).
    pub fn count(&self) -> usize {
        self.shared.state.lock().unwrap().total
    }

    /// Parsed requests whose path (without query) is `path`.
    pub fn requests_for(&self, path: &str) -> Vec<NaiveRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.unparseable.is_none() && r.path() == path)
            .collect()
    }

    /// Parsed requests whose path starts with `prefix`.
    pub fn requests_under(&self, prefix: &str) -> Vec<NaiveRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.unparseable.is_none() && r.path().starts_with(prefix))
            .collect()
    }

    /// Every record, one line each, for failure messages.
    pub fn dump(&self) -> String {
        let all: Vec<String> = self.requests().iter().map(NaiveRequest::summary).collect();
        if all.is_empty() {
            "(nothing)".into()
        } else {
            all.join("\n  ")
        }
    }
}

impl Drop for NaiveOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wake the accept loop
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one parse attempt over the buffered bytes gave.
enum Parsed {
    NeedMore,
    Request(NaiveRequest, usize, bool),
    Bad(String),
}

fn serve(mut stream: TcpStream, conn: usize, shared: &Shared, stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match parse(&buf, conn) {
            Parsed::Request(req, used, keep_alive) => {
                let keep_alive = keep_alive && !shared.opts.http_1_0;
                buf.drain(..used);
                let answer = answer(&req, keep_alive, shared);
                shared.record(req);
                if stream.write_all(&answer).is_err() || !keep_alive {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                continue;
            }
            Parsed::Bad(why) => {
                record_bad(shared, conn, why, &buf);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            Parsed::NeedMore => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => {
                if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                    record_bad(shared, conn, "incomplete when the peer closed".into(), &buf);
                }
                return;
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn record_bad(shared: &Shared, conn: usize, why: String, bytes: &[u8]) {
    let shown: String = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    shared.record(NaiveRequest {
        conn,
        method: String::new(),
        target: String::new(),
        version: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        unparseable: Some(format!("{why}: {shown:?}")),
    });
}

fn answer(req: &NaiveRequest, keep_alive: bool, shared: &Shared) -> Vec<u8> {
    let (delay, extra) = {
        let st = shared.state.lock().unwrap();
        (
            st.delay,
            st.extra_headers
                .get(req.path())
                .cloned()
                .unwrap_or_default(),
        )
    };
    if !delay.is_zero() {
        std::thread::sleep(delay);
    }
    let version = if shared.opts.http_1_0 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let rendered = shared.opts.render.as_ref().and_then(|render| render(req));
    let (mut head, body) = match rendered {
        Some(a) => {
            let mut head = format!(
                "{version} {} {}\r\nContent-Length: {}\r\n",
                a.status,
                if a.status == 200 { "OK" } else { "Answer" },
                a.body.len()
            );
            for (k, v) in a.headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            (head, a.body)
        }
        None => {
            let body = format!("naive {} {}\n", req.method, req.target).into_bytes();
            let head = format!(
                "{version} 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Cache-Control: max-age=60\r\n",
                body.len()
            );
            (head, body)
        }
    };
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if !req.method.eq_ignore_ascii_case("HEAD") {
        out.extend_from_slice(&body);
    }
    out
}

/// The end of the head: the index just past the first empty line (`\n\r\n` or `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < buf.len() {
        if buf[i] == b'\n' {
            if buf.get(i + 1) == Some(&b'\n') {
                return Some(i + 2);
            }
            if buf.get(i + 1) == Some(&b'\r') && buf.get(i + 2) == Some(&b'\n') {
                return Some(i + 3);
            }
        }
        i += 1;
    }
    None
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse(buf: &[u8], conn: usize) -> Parsed {
    // Leading empty lines between requests are skipped, as RFC 9112 §2.2 allows.
    let skip = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    let buf_all = buf;
    let buf = &buf[skip..];
    if buf.is_empty() {
        return Parsed::NeedMore;
    }
    let Some(end) = head_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Parsed::Bad("head over 64 KiB".into());
        }
        return Parsed::NeedMore;
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let request_line = lines.next().unwrap_or("");
    let parts: Vec<&str> = request_line.split(' ').collect();
    if parts.len() != 3 || !is_token(parts[0]) || !parts[2].starts_with("HTTP/") {
        return Parsed::Bad(format!("bad request line {request_line:?}"));
    }
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            // obs-fold: a continuation of the previous value
            match headers.last_mut() {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                None => return Parsed::Bad(format!("continuation first: {line:?}")),
            }
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Bad(format!("header line without a colon {line:?}"));
        };
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut req = NaiveRequest {
        conn,
        method: parts[0].to_owned(),
        target: parts[1].to_owned(),
        version: parts[2].to_owned(),
        headers,
        body: Vec::new(),
        unparseable: None,
    };
    let connection = req.header_all("connection").join(",").to_ascii_lowercase();
    let keep_alive = if req.version == "HTTP/1.0" {
        connection.contains("keep-alive")
    } else {
        !connection.contains("close")
    };
    let mut used = skip + end;
    let reads_body = ["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| req.method.eq_ignore_ascii_case(m));
    if reads_body {
        let te = req.header_all("transfer-encoding").join(",");
        if te.to_ascii_lowercase().contains("chunked") {
            match dechunk(&buf_all[used..]) {
                Chunked::NeedMore => return Parsed::NeedMore,
                Chunked::Bad(why) => return Parsed::Bad(why),
                Chunked::Done(body, n) => {
                    req.body = body;
                    used += n;
                }
            }
        } else if let Some(cl) = req.header("content-length") {
            let first = cl.split(',').next().unwrap_or("").trim();
            let Ok(n) = first.parse::<usize>() else {
                return Parsed::Bad(format!("bad Content-Length {cl:?}"));
            };
            if n > 16 * 1024 * 1024 {
                return Parsed::Bad(format!("Content-Length too large {n}"));
            }
            if buf_all.len() < used + n {
                return Parsed::NeedMore;
            }
            req.body = buf_all[used..used + n].to_vec();
            used += n;
        }
    }
    Parsed::Request(req, used, keep_alive)
}

enum Chunked {
    NeedMore,
    Bad(String),
    /// Decoded body and the bytes consumed (through the final CRLF after trailers).
    Done(Vec<u8>, usize),
}

fn line_at(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rel = buf.get(at..)?.iter().position(|b| *b == b'\n')?;
    let line = &buf[at..at + rel];
    Some((line.strip_suffix(b"\r").unwrap_or(line), at + rel + 1))
}

fn dechunk(buf: &[u8]) -> Chunked {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some((line, next)) = line_at(buf, at) else {
            if buf.len() - at > 1024 {
                return Chunked::Bad("chunk size line over 1 KiB".into());
            }
            return Chunked::NeedMore;
        };
        let text = String::from_utf8_lossy(line);
        let size_text = text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return Chunked::Bad(format!("bad chunk size {text:?}"));
        };
        if size_text.starts_with(['+', '-']) || size > 16 * 1024 * 1024 {
            return Chunked::Bad(format!("bad chunk size {text:?}"));
        }
        at = next;
        if size == 0 {
            // trailers, then the empty line
            loop {
                let Some((line, next)) = line_at(buf, at) else {
                    return Chunked::NeedMore;
                };
                at = next;
                if line.is_empty() {
                    return Chunked::Done(body, at);
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Chunked::NeedMore;
        }
        body.extend_from_slice(&buf[at..at + size]);
        at += size;
        if &buf[at..at + 2] != b"\r\n" {
            return Chunked::Bad("chunk data not followed by CRLF".into());
        }
        at += 2;
    }
}

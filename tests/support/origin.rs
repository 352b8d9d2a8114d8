//! The test origin: an HTTP/1.1 server (hyper) that records every request and renders premium pages by variant.

use super::*;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Request method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The query, if any (without `?`).
    pub query: Option<String>,
    /// Path and query exactly as received.
    pub uri: String,
    /// Every header line, in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Request body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// Every value of header `name`.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The only value of header `name`; panics if it was sent more than once.
    pub fn header(&self, name: &str) -> Option<String> {
        let all = self.header_all(name);
        assert!(
            all.len() <= 1,
            "origin received {} copies of {name}: {all:?}",
            all.len()
        );
        all.into_iter().next()
    }

    /// Whether `needle` occurs anywhere the origin could see it: URI, any header, body.
    pub fn mentions(&self, needle: &str) -> bool {
        self.uri.contains(needle)
            || self
                .headers
                .iter()
                .any(|(k, v)| k.contains(needle) || v.contains(needle))
            || String::from_utf8_lossy(&self.body).contains(needle)
    }
}

/// A canned answer for one exact path.
#[derive(Debug, Clone)]
pub struct Override {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: String,
}

#[derive(Default)]
pub(super) struct OriginState {
    pub(super) requests: Vec<Recorded>,
    pub(super) hits: HashMap<String, usize>,
    pub(super) overrides: HashMap<String, Override>,
    pub(super) pad_to: usize,
    pub(super) delay: Duration,
    /// Exact path → a binary body (see [`Origin::set_large`]).
    pub(super) large: HashMap<String, Bytes>,
    /// Large bodies go out in frames of this many bytes, `pace` apart.
    pub(super) frame: usize,
    pub(super) pace: Duration,
    /// Exact path → a body with its content type (see [`Origin::set_file`]).
    pub(super) files: HashMap<String, Served>,
    /// While set and not yet `true`, every request waits (after being recorded) for it to turn
    /// `true` (see [`Origin::hold`]).
    pub(super) gate: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Requests held at the origin (see [`Origin::hold`]); dropping it releases them too.
pub struct Held(tokio::sync::watch::Sender<bool>);

impl Held {
    /// Let every held request (and later ones) be answered.
    pub fn release(self) {}
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// A body registered with [`Origin::set_file`].
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) body: Bytes,
    pub(super) content_type: String,
    pub(super) delay: Duration,
}

/// A real origin server on loopback. Dropping it stops the server.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    pub(super) state: Arc<Mutex<OriginState>>,
    pub(super) shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
}

pub(super) static ORIGIN_SEQ: AtomicU64 = AtomicU64::new(1);

/// The body the origin renders for a premium page: the full article for the subscriber variant,
/// the teaser for any other, padded with `.` up to `pad_to` bytes.
pub fn premium_body(path: &str, subscriber: bool, pad_to: usize) -> String {
    let mut body = if subscriber {
        format!("FULL:{path}:{SUBSCRIBER_MARK}\n")
    } else {
        format!("TEASER:{path}\n")
    };
    if body.len() < pad_to {
        body.push_str(&".".repeat(pad_to - body.len()));
    }
    body
}

/// A deterministic, incompressible body of `len` bytes for `seed` (splitmix64 output): what the
/// origin serves for a path registered with [`Origin::set_large`].
pub fn pattern_body(seed: &str, len: usize) -> Bytes {
    // FNV-1a of the seed, then splitmix64.
    let mut x: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.bytes() {
        x = (x ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = vec![0u8; len];
    for chunk in out.chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    Bytes::from(out)
}

/// The origin's response body: the whole body in one frame, or (large bodies) frames of `frame`
/// bytes with `pace` between them, so a test can keep a fill in flight. Its exact size is known
/// up front, so every response carries `Content-Length`.
pub struct OriginBody {
    pub(super) rest: Bytes,
    pub(super) frame: usize,
    pub(super) pace: Duration,
    pub(super) sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl OriginBody {
    pub(super) fn full(data: Bytes) -> OriginBody {
        OriginBody {
            rest: data,
            frame: 0,
            pace: Duration::ZERO,
            sleep: None,
        }
    }
}

impl Body for OriginBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            return Poll::Ready(None);
        }
        if let Some(sleep) = this.sleep.as_mut() {
            use std::future::Future;
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        let n = if this.frame == 0 {
            this.rest.len()
        } else {
            this.frame.min(this.rest.len())
        };
        let data = this.rest.split_to(n);
        if !this.pace.is_zero() && !this.rest.is_empty() {
            this.sleep = Some(Box::pin(tokio::time::sleep(this.pace)));
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.rest.len() as u64)
    }
}

pub(super) fn respond(
    status: u16,
    headers: &[(String, String)],
    body: String,
) -> Response<OriginBody> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(OriginBody::full(Bytes::from(body)))
        .expect("origin builds a valid response")
}

pub(super) async fn handle(
    state: Arc<Mutex<OriginState>>,
    req: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let rec = Recorded {
        method: parts.method.to_string(),
        path: path.clone(),
        query: parts.uri.query().map(str::to_owned),
        uri: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| path.clone()),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    };
    let variant = rec.header_all(VARIANT_HEADER).join(",");
    let secret = rec.header_all(SECRET_HEADER).join(",");
    let seq = ORIGIN_SEQ.fetch_add(1, Ordering::Relaxed).to_string();
    let (over, pad_to, delay, large) = {
        let mut st = state.lock().unwrap();
        *st.hits.entry(path.clone()).or_default() += 1;
        st.requests.push(rec);
        let large = st.large.get(&path).map(|b| (b.clone(), st.frame, st.pace));
        (st.overrides.get(&path).cloned(), st.pad_to, st.delay, large)
    };
    let gate = state.lock().unwrap().gate.clone();
    if let Some(mut open) = gate {
        let _ = open.wait_for(|open| *open).await;
    }
    let served = state.lock().unwrap().files.get(&path).cloned();
    if let Some(f) = served {
        tokio::time::sleep(f.delay).await;
        let resp = Response::builder()
            .status(200)
            .header("content-type", f.content_type)
            .header("cache-control", "public, max-age=3600")
            .header("x-origin-seq", seq)
            .body(OriginBody::full(f.body))
            .expect("origin builds a valid response");
        return Ok(resp);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut headers = vec![
        (
            "content-type".to_string(),
            "text/plain; charset=utf-8".to_string(),
        ),
        ("x-origin-seq".to_string(), seq),
    ];
    if let Some(o) = over {
        headers.extend(o.headers);
        return Ok(respond(o.status, &headers, o.body));
    }
    if let Some((data, frame, pace)) = large {
        let mut b = Response::builder()
            .status(200)
            .header("content-type", "application/octet-stream")
            .header("cache-control", "public, max-age=3600");
        for (k, v) in headers.iter().filter(|(k, _)| k != "content-type") {
            b = b.header(k.as_str(), v.as_str());
        }
        let body = OriginBody {
            rest: data,
            frame,
            pace,
            sleep: None,
        };
        return Ok(b.body(body).expect("origin builds a valid response"));
    }
    if path.starts_with("/premium/") {
        headers.push(("cache-control".into(), "public, max-age=300".into()));
        headers.push(("x-origin-variant".into(), variant.clone()));
        return Ok(respond(
            200,
            &headers,
            premium_body(&path, variant == "subscriber", pad_to),
        ));
    }
    if path == "/leak" {
        // A careless origin that echoes what it received, secret included.
        headers.push(("x-echo".into(), secret.clone()));
        headers.push((SECRET_HEADER.into(), secret.clone()));
        headers.push(("x-debug".into(), format!("key={secret}; seen")));
        headers.push(("cache-control".into(), "public, max-age=300".into()));
        return Ok(respond(200, &headers, "leak\n".to_string()));
    }
    if path.starts_with("/news/") {
        headers.push(("cache-control".into(), "public, max-age=300".into()));
        return Ok(respond(200, &headers, format!("PUBLIC:{path}\n")));
    }
    Ok(respond(200, &headers, format!("PAGE:{path}\n")))
}

impl Origin {
    /// Start an origin on `127.0.0.1:0`.
    pub fn start() -> Origin {
        Origin::start_at("127.0.0.1:0")
    }

    /// Start an origin on `addr` (e.g. `127.0.0.2:<the port of another origin>`, to stand for
    /// the same name at a new address).
    pub fn start_at(addr: &str) -> Origin {
        Origin::try_start_at(addr).expect("bind origin")
    }

    /// [`Origin::start_at`], or the error binding `addr` (its port may be taken on that address).
    pub fn try_start_at(addr: &str) -> std::io::Result<Origin> {
        let listener = TcpListener::bind(addr)?;
        listener
            .set_nonblocking(true)
            .expect("nonblocking origin listener");
        let addr = listener.local_addr().expect("origin addr");
        let state = Arc::new(Mutex::new(OriginState {
            frame: 64 * 1024,
            ..OriginState::default()
        }));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("test-origin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("origin runtime");
                rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    loop {
                        tokio::select! {
                            _ = &mut rx => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                let st = st.clone();
                                tokio::spawn(async move {
                                    let svc = service_fn(move |req| handle(st.clone(), req));
                                    let _ = http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc)
                                        .await;
                                });
                            }
                        }
                    }
                });
                rt.shutdown_background();
            })
            .expect("spawn origin thread");
        Ok(Origin {
            addr,
            state,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// Pad every premium body to at least `n` bytes (to fill a small cache).
    pub fn set_padding(&self, n: usize) {
        self.state.lock().unwrap().pad_to = n;
    }

    /// The padding in force.
    pub fn padding(&self) -> usize {
        self.state.lock().unwrap().pad_to
    }

    /// Make every answer take this long (a slow origin, to exercise request coalescing).
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// Hold every request from now on (each is recorded, then waits) until the returned
    /// [`Held`] is released or dropped.
    pub fn hold(&self) -> Held {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.state.lock().unwrap().gate = Some(rx);
        Held(tx)
    }

    /// Serve `path` (exact, without query) with [`pattern_body`]`(path, len)`: 200,
    /// `application/octet-stream`, `Cache-Control: public, max-age=3600`, `Content-Length`.
    /// Returns the body (a cheap handle on the origin's copy) for the test to compare against.
    pub fn set_large(&self, path: &str, len: usize) -> Bytes {
        let body = pattern_body(path, len);
        self.state
            .lock()
            .unwrap()
            .large
            .insert(path.to_owned(), body.clone());
        body
    }

    /// Send bodies registered with [`Origin::set_large`] in frames of `frame` bytes with `pace`
    /// between frames (a slow origin whose fills stay in flight). Default: 64 KiB, no pause.
    pub fn set_pace(&self, frame: usize, pace: Duration) {
        let mut st = self.state.lock().unwrap();
        st.frame = frame.max(1);
        st.pace = pace;
    }

    /// Answer `path` (exact, without query) with a canned response.
    pub fn set_override(&self, path: &str, status: u16, headers: &[(&str, &str)], body: &str) {
        self.state.lock().unwrap().overrides.insert(
            path.to_owned(),
            Override {
                status,
                headers: headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                body: body.to_owned(),
            },
        );
    }

    /// Requests received for `path` (exact path, any query).
    pub fn hits(&self, path: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .hits
            .get(path)
            .copied()
            .unwrap_or(0)
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests received for `path` (exact path, any query), in order.
    pub fn requests_for(&self, path: &str) -> Vec<Recorded> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The most recent request for `path`.
    pub fn last_for(&self, path: &str) -> Option<Recorded> {
        self.requests_for(path).pop()
    }

    /// Total requests received.
    pub fn total(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

//! Clients that do exactly what the test says, and the answers they return.

use super::*;

/// A client that follows no redirects, ignores proxy settings and opens a fresh connection per
/// request (so no test depends on connection reuse by accident).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("reqwest client")
}

/// Like [`client`] but keeping connections alive (many requests over few connections).
pub fn pooled_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(64)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Like [`client`] with a generous timeout, for large bodies in debug builds.
pub fn big_body_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(55))
        .build()
        .expect("reqwest client")
}

/// Where a request carries its token.
#[derive(Debug, Clone, Copy)]
pub enum Tok<'a> {
    /// No token.
    None,
    /// `?token=`.
    Query(&'a str),
    /// `Authorization: Bearer`.
    Bearer(&'a str),
    /// `Cookie: token=`.
    Cookie(&'a str),
}

/// The only value of header `name` in `headers`, as text; panics if there are several.
fn only_header<'h>(headers: &'h reqwest::header::HeaderMap, name: &str) -> Option<&'h str> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    assert!(
        all.next().is_none(),
        "response has several {name} headers: {headers:?}"
    );
    Some(first.to_str().expect("header is text"))
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: String,
}

impl Resp {
    /// The only value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        only_header(&self.headers, name)
    }

    /// `Cache-Status`, or panics.
    pub fn cache_status(&self) -> &str {
        only_header(&self.headers, "cache-status")
            .unwrap_or_else(|| panic!("response without Cache-Status: {:?}", self.headers))
    }

    /// A cache hit per `Cache-Status`.
    pub fn is_hit(&self) -> bool {
        let cs = self.cache_status();
        cs.split(';').map(str::trim).any(|p| p == "hit")
    }

    /// A miss forwarded to the origin per `Cache-Status`.
    pub fn is_miss(&self) -> bool {
        self.cache_status().contains("fwd=miss")
    }

    /// The full article (subscriber variant).
    pub fn is_full(&self) -> bool {
        self.status == 200 && self.body.starts_with("FULL:") && self.body.contains(SUBSCRIBER_MARK)
    }

    /// The teaser (anonymous variant), with no subscriber content at all.
    pub fn is_teaser(&self) -> bool {
        self.status == 200
            && self.body.starts_with("TEASER:")
            && !self.body.contains(SUBSCRIBER_MARK)
    }

    /// Every header value, for "never appears in a response" checks.
    pub fn all_header_text(&self) -> String {
        self.headers
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
            .collect()
    }
}

/// Send a request and read the whole response.
pub async fn send(rb: reqwest::RequestBuilder) -> Resp {
    let r = rb.send().await.expect("request to the edge");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.text().await.expect("response body");
    Resp {
        status,
        headers,
        body,
    }
}

/// Build a GET for `path` carrying `tok`.
pub fn request(
    client: &reqwest::Client,
    edge: &Edge,
    path: &str,
    tok: Tok<'_>,
) -> reqwest::RequestBuilder {
    match tok {
        Tok::None => client.get(edge.url(path)),
        Tok::Query(t) => {
            let sep = if path.contains('?') { '&' } else { '?' };
            client.get(edge.url(&format!("{path}{sep}token={t}")))
        }
        Tok::Bearer(t) => client.get(edge.url(path)).bearer_auth(t),
        Tok::Cookie(t) => client
            .get(edge.url(path))
            .header("cookie", format!("token={t}")),
    }
}

/// GET `path` with `tok` on a fresh connection.
pub async fn get(edge: &Edge, path: &str, tok: Tok<'_>) -> Resp {
    send(request(&client(), edge, path, tok)).await
}

/// A response whose body is bytes (binary objects), fully read.
#[derive(Debug)]
pub struct BinResp {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl BinResp {
    /// The only value of header `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        only_header(&self.headers, name)
    }

    /// `Cache-Status`, or panics.
    pub fn cache_status(&self) -> &str {
        only_header(&self.headers, "cache-status")
            .unwrap_or_else(|| panic!("response without Cache-Status: {:?}", self.headers))
    }
}

/// GET `path` on the edge with extra request headers; the body read as bytes.
pub async fn get_bin(edge: &Edge, path: &str, headers: &[(&str, &str)]) -> BinResp {
    let mut rb = client().get(edge.url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    let r = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: body: {e}"));
    BinResp {
        status,
        headers,
        body,
    }
}

/// What [`get_streamed`] saw: the head, and the body checked chunk by chunk as it arrived.
#[derive(Debug)]
pub struct Streamed {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: reqwest::header::HeaderMap,
    /// Body bytes received.
    pub len: u64,
    /// SHA-256 of the body received, hex.
    pub sha256: String,
    /// Offset of the first byte that differs from the expected body (or where the body went
    /// past its end), if any.
    pub first_mismatch: Option<u64>,
    /// The transfer error, if the body did not arrive completely.
    pub error: Option<String>,
}

impl Streamed {
    /// `Cache-Status`, or panics.
    pub fn cache_status(&self) -> &str {
        self.headers
            .get("cache-status")
            .unwrap_or_else(|| panic!("response without Cache-Status: {:?}", self.headers))
            .to_str()
            .expect("header is text")
    }

    /// The body arrived completely and equals the expected body, byte for byte (every chunk
    /// was compared at its offset as it arrived). [`Streamed::sha256`] is there to compare with
    /// a digest computed once, e.g. [`sha256_hex`] of the origin's body.
    pub fn matches(&self, expected: &[u8]) -> bool {
        self.error.is_none() && self.first_mismatch.is_none() && self.len == expected.len() as u64
    }
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// GET `path` with `client` and read the body as it streams in, never holding it whole: each
/// chunk is hashed and compared with `expected` at its offset. A transfer error is reported in
/// [`Streamed::error`], not a panic (a response cut short is an outcome some tests look for).
pub async fn get_streamed(
    client: &reqwest::Client,
    edge: &Edge,
    path: &str,
    expected: &[u8],
) -> Streamed {
    use sha2::Digest;
    let mut r = client
        .get(edge.url(path))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let mut hasher = sha2::Sha256::new();
    let mut len: u64 = 0;
    let mut first_mismatch = None;
    let mut error = None;
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => {
                let at = len as usize;
                if first_mismatch.is_none() {
                    let want = expected
                        .get(at..(at + chunk.len()).min(expected.len()))
                        .unwrap_or(&[]);
                    // slice equality first (memcmp; the byte loop is slow in debug builds)
                    if want != &chunk[..want.len()] {
                        let i = want.iter().zip(chunk.iter()).position(|(a, b)| a != b);
                        first_mismatch = Some((at + i.unwrap_or(0)) as u64);
                    } else if want.len() < chunk.len() {
                        first_mismatch = Some((at + want.len()) as u64);
                    }
                }
                hasher.update(&chunk);
                len += chunk.len() as u64;
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(format!("{e} ({:?})", std::error::Error::source(&e)));
                break;
            }
        }
    }
    Streamed {
        status,
        headers,
        len,
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
        first_mismatch,
        error,
    }
}

/// A response read by [`raw_get`].
#[derive(Debug)]
pub struct RawResp {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (as sent; no chunked decoding needed for the responses we read this way).
    pub body: String,
}

impl RawResp {
    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Send a request target exactly as written (no client-side normalization of `..` or `%xx`)
/// over a fresh connection. `extra` are additional header lines.
pub fn raw_get(port: u16, target: &str, extra: &[(&str, &str)]) -> std::io::Result<RawResp> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req =
        format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok(RawResp {
        status,
        headers,
        body,
    })
}

pub(super) fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

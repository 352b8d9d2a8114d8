//! The one place that turns an edge decision into response headers: locally generated answers
//! (400/404/403), `Cache-Status` (RFC 9211) and `Age`.

pub use crate::admission::Answer;
use bytes::Bytes;
use pingora_cache::CachePhase;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

/// Errors bodies never say which check failed (SPEC §2); logs and metrics do.
fn body_for(status: u16) -> &'static str {
    match status {
        400 => "bad request\n",
        401 => "authentication required\n",
        403 => "forbidden\n",
        404 => "not found\n",
        301 | 307 => "moved to https\n",
        405 => "method not allowed\n",
        408 => "request timeout\n",
        429 => "too many requests\n",
        431 => "request header fields too large\n",
        502 => "bad gateway: the origin did not answer properly\n",
        504 => "gateway timeout\n",
        _ => "error\n",
    }
}

/// `Cache-Status` of a fresh hit, on every path that serves one (the proxy's phases, the
/// HTTP/1 and HTTP/2 connection loops).
pub const HIT: &str = "tollgate; hit";

/// Answer from the edge without asking the origin.
pub async fn local(session: &mut Session, status: u16) -> Result<()> {
    answer(session, &Answer::Status(status)).await
}

/// Send an [`Answer`]: the status, its one extra header, a short body, `Cache-Status`, `Age`.
pub async fn answer(session: &mut Session, answer: &Answer) -> Result<()> {
    let (resp, body) = answer_parts(answer)?;
    // A decision (401, 403, 404, 405, 429, redirects) leaves the connection usable: a client
    // refused once, a throttled one included, is answered more cheaply on it than on a new
    // one. A malformed request (400), a failure (5xx), or a request body not read yet closes.
    let status = answer.status();
    if status == 400 || status >= 500 || !session.is_body_empty() {
        session.set_keepalive(None);
    }
    if session.req_header().method == http::Method::HEAD {
        // no content for HEAD (RFC 9110 §9.3.2): over HTTP/2 a body would reset the stream
        return session.write_response_header(Box::new(resp), true).await;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await
}

/// The same answer as HTTP/1.1 bytes, for the connection loop, which answers some requests
/// before any session exists. `head`: the request was a HEAD, so the body is left out (its
/// `Content-Length` stays, RFC 9110 §9.3.2); `close`: the connection closes after it. Returns
/// the bytes and how many of them are body.
pub fn answer_h1(answer: &Answer, head: bool, close: bool) -> (Vec<u8>, usize) {
    let Ok((mut resp, body)) = answer_parts(answer) else {
        let fallback =
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        return (fallback.to_vec(), 0);
    };
    let connection = if close { "close" } else { "keep-alive" };
    let _ = resp.insert_header(http::header::CONNECTION, connection);
    let date = pingora_core::protocols::http::date::get_cached_date();
    let _ = resp.insert_header(http::header::DATE, date);
    let status = resp.status;
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("")
    )
    .into_bytes();
    resp.header_to_h1_wire(&mut out);
    out.extend_from_slice(b"\r\n");
    if head {
        return (out, 0);
    }
    out.extend_from_slice(&body);
    (out, body.len())
}

fn answer_parts(answer: &Answer) -> Result<(ResponseHeader, Bytes)> {
    let status = answer.status();
    let body = Bytes::from_static(body_for(status).as_bytes());
    let mut resp = ResponseHeader::build(status, Some(7))?;
    match answer {
        Answer::Status(_) => {}
        Answer::Redirect(_, location) => resp.insert_header(http::header::LOCATION, location)?,
        Answer::NotAllowed(allow) => resp.insert_header(http::header::ALLOW, allow)?,
        Answer::Challenge(realm) => {
            // The realm is a config name (token characters), so it needs no escaping.
            let value = format!("Basic realm=\"{realm}\", charset=\"UTF-8\"");
            resp.insert_header(http::header::WWW_AUTHENTICATE, value)?
        }
        Answer::Throttled(seconds) => resp.insert_header(http::header::RETRY_AFTER, *seconds)?,
    }
    resp.insert_header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    let cache_status = if status >= 500 {
        "tollgate; fwd=miss; detail=origin-error"
    } else {
        "tollgate; fwd=bypass; detail=edge"
    };
    resp.insert_header("cache-status", cache_status)?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    resp.insert_header(http::header::AGE, "0")?;
    Ok((resp, body))
}

/// The label for `tollgate_requests_total{cache_status}` and the `Cache-Status` value for a
/// cache phase. `stored` says whether a miss was written to the cache; `looked_up` whether the
/// request was eligible for the cache at all (a lookup happened), which tells a miss that the
/// origin forbade storing (pingora then reports `Disabled`) from a request that bypassed the cache.
pub fn cache_status(
    phase: CachePhase,
    stored: bool,
    looked_up: bool,
) -> (&'static str, &'static str) {
    match phase {
        CachePhase::Disabled(_) if looked_up => ("miss", "tollgate; fwd=miss"),
        CachePhase::Hit => ("hit", HIT),
        CachePhase::Miss if stored => ("miss", "tollgate; fwd=miss; stored"),
        CachePhase::Miss => ("miss", "tollgate; fwd=miss"),
        CachePhase::Stale | CachePhase::StaleUpdating => ("stale", "tollgate; hit; fwd=stale"),
        CachePhase::Expired if stored => ("expired", "tollgate; fwd=stale; stored"),
        CachePhase::Expired => ("expired", "tollgate; fwd=stale"),
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => {
            ("revalidated", "tollgate; fwd=stale; fwd-status=304")
        }
        CachePhase::Disabled(_) | CachePhase::Bypass | CachePhase::Uninit => {
            ("bypass", "tollgate; fwd=bypass")
        }
        CachePhase::CacheKey => ("bypass", "tollgate; fwd=bypass"),
    }
}

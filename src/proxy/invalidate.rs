//! Invalidation after unsafe requests (RFC 9111 §4.4): a non-error response to a method that is
//! not safe removes the stored responses for the target URI and for the `Location` and
//! `Content-Location` URIs on the same host.
//!
//! Removal goes through the same path index as `/admin/purge`, so it reaches every entitlement
//! variant, every `Vary` secondary and both tiers. The index is by normalized path, so the
//! invalidation also covers the path's other queries and hosts: more than the RFC asks, never
//! less.

use http::Method;
use pingora_http::ResponseHeader;

use crate::request::normalize_path;

/// Safe methods (RFC 9110 §9.2.1) never invalidate.
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// The normalized paths an unsafe request to `path` on `host` invalidates, given its response
/// (none for an error status).
pub fn targets(host: &str, path: &str, resp: &ResponseHeader) -> Vec<String> {
    let status = resp.status.as_u16();
    if !(200..400).contains(&status) {
        return Vec::new();
    }
    let mut paths = vec![path.to_owned()];
    for name in [http::header::LOCATION, http::header::CONTENT_LOCATION] {
        let Some(value) = resp.headers.get(name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        if let Some(p) = same_host_path(host, path, value.trim()) {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    paths
}

/// The normalized path of a URI reference resolved against `base_path`, when it names the same
/// host (`host` as the client sent it, lower-cased).
fn same_host_path(host: &str, base_path: &str, reference: &str) -> Option<String> {
    let without_fragment = reference.split('#').next().unwrap_or("");
    let without_query = without_fragment.split('?').next().unwrap_or("");
    let raw = if let Some(rest) = without_query
        .strip_prefix("http://")
        .or_else(|| without_query.strip_prefix("https://"))
        .or_else(|| without_query.strip_prefix("//"))
    {
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if !authority.eq_ignore_ascii_case(host) {
            return None;
        }
        path.to_owned()
    } else if without_query.starts_with('/') {
        without_query.to_owned()
    } else if without_query.contains(':') {
        // another scheme
        return None;
    } else {
        // relative to the request path's directory
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{without_query}")
    };
    normalize_path(&raw).ok().map(|p| p.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn unsafe_methods() {
        for m in ["POST", "PUT", "DELETE", "PATCH", "M-SEARCH"] {
            assert!(is_unsafe(&Method::from_bytes(m.as_bytes()).unwrap()), "{m}");
        }
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!is_unsafe(&m), "{m}");
        }
    }

    #[test]
    fn targets_include_same_host_locations_only() {
        let h = "example.com:8080";
        let r = resp(
            201,
            &[
                ("location", "http://EXAMPLE.com:8080/new/item?x=1"),
                ("content-location", "other"),
            ],
        );
        assert_eq!(
            targets(h, "/a/b", &r),
            vec!["/a/b".to_owned(), "/new/item".into(), "/a/other".into()]
        );
        let r = resp(
            303,
            &[
                ("location", "https://elsewhere.example/x"),
                ("content-location", "/a/../c"),
            ],
        );
        assert_eq!(targets(h, "/a/b", &r), vec!["/a/b".to_owned(), "/c".into()]);
        assert!(targets(h, "/a/b", &resp(500, &[])).is_empty());
        assert!(targets(h, "/a/b", &resp(404, &[])).is_empty());
        let r = resp(
            200,
            &[("location", "mailto:x@y"), ("content-location", "/a/b")],
        );
        assert_eq!(targets(h, "/a/b", &r), vec!["/a/b".to_owned()]);
    }
}

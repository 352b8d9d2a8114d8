//! Per-route cache behaviours beyond TTLs (CloudFront "cache behaviors"): query-string policy,
//! viewer protocol policy, allowed methods, and which headers and cookies reach the origin.

use http::Method;

use super::problems::Problems;
use super::raw::RawNames;

/// Which query parameters are part of the cache key and the origin request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum QueryPolicy {
    /// Every parameter (minus token and signing parameters).
    #[default]
    All,
    /// No query string at all.
    None,
    /// Only these parameter names (exact, case-sensitive, as CloudFront).
    Allow(Vec<String>),
}

/// CloudFront's viewer protocol policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ViewerProtocol {
    /// HTTP and HTTPS both served.
    #[default]
    AllowAll,
    /// Plain-HTTP GET/HEAD get `301` to the `https://` URL; other methods `403`.
    RedirectToHttps,
    /// Plain HTTP gets `403`.
    HttpsOnly,
}

/// A list of names forwarded to the origin: every one, none, or only those listed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Forward {
    /// Everything the client sent (minus what the edge always removes).
    #[default]
    All,
    /// Nothing.
    None,
    /// Only these names (lower-case for headers, exact for cookies).
    Only(Vec<String>),
}

impl Forward {
    /// Is `name` forwarded? Header lists hold lower-case names; pass the name as compared.
    pub fn allows(&self, name: &str) -> bool {
        match self {
            Forward::All => true,
            Forward::None => false,
            Forward::Only(names) => names.iter().any(|n| n == name),
        }
    }
}

/// The behaviour settings of one route.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Behaviour {
    /// Query-string policy (cache key and origin request alike).
    pub query: QueryPolicy,
    /// Plain HTTP allowed, redirected, or refused.
    pub viewer_protocol: ViewerProtocol,
    /// Allowed methods; `None` = every method.
    pub methods: Option<Vec<Method>>,
    /// Request headers forwarded to the origin.
    pub forward_headers: Forward,
    /// Cookies forwarded to the origin.
    pub forward_cookies: Forward,
}

/// Request headers the origin always gets, whatever `forward_headers` says: the edge sets
/// or needs them (framing, conditionals and ranges driven by the cache).
pub const ALWAYS_FORWARDED: [&str; 10] = [
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
];

/// The raw behaviour keys of `routes[i]`.
pub(super) struct RawBehaviour {
    pub query: Option<RawNames>,
    pub viewer_protocol: Option<String>,
    pub methods: Option<Vec<String>>,
    pub forward_headers: Option<RawNames>,
    pub forward_cookies: Option<RawNames>,
}

pub(super) fn validate_behaviour(raw: RawBehaviour, i: usize, p: &mut Problems) -> Behaviour {
    let at = |field: &str| format!("routes[{i}].{field}");
    let query = match names(raw.query, &at("query"), false, p) {
        Forward::All => QueryPolicy::All,
        Forward::None => QueryPolicy::None,
        Forward::Only(list) => QueryPolicy::Allow(list),
    };
    let viewer_protocol = match raw.viewer_protocol.as_deref() {
        None | Some("allow_all") => ViewerProtocol::AllowAll,
        Some("redirect_to_https") => ViewerProtocol::RedirectToHttps,
        Some("https_only") => ViewerProtocol::HttpsOnly,
        Some(other) => {
            p.add(
                at("viewer_protocol"),
                format!(
                    "'{other}' is not a viewer protocol policy. Fix: use allow_all, \
                     redirect_to_https or https_only"
                ),
            );
            ViewerProtocol::AllowAll
        }
    };
    let methods = raw.methods.map(|list| {
        if list.is_empty() {
            p.add(
                at("methods"),
                "empty: no request could be served. Fix: list methods, e.g. [GET, HEAD]",
            );
        }
        let mut methods = Vec::new();
        for (j, m) in list.iter().enumerate() {
            let upper = m.trim().to_ascii_uppercase();
            match Method::from_bytes(upper.as_bytes()) {
                Ok(method) if !upper.is_empty() => methods.push(method),
                _ => p.add(
                    format!("{}[{j}]", at("methods")),
                    format!("'{m}' is not an HTTP method. Fix: write e.g. GET, HEAD, POST"),
                ),
            }
        }
        if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
            methods.push(Method::HEAD);
        }
        methods
    });
    let forward_headers = names(raw.forward_headers, &at("forward_headers"), true, p);
    let forward_cookies = names(raw.forward_cookies, &at("forward_cookies"), false, p);
    Behaviour {
        query,
        viewer_protocol,
        methods,
        forward_headers,
        forward_cookies,
    }
}

/// `all` / `none` / a list of names (lower-cased when `header_names`).
fn names(raw: Option<RawNames>, key: &str, header_names: bool, p: &mut Problems) -> Forward {
    match raw {
        None => Forward::All,
        Some(RawNames::Word(w)) if w == "all" => Forward::All,
        Some(RawNames::Word(w)) if w == "none" => Forward::None,
        Some(RawNames::Word(w)) => {
            p.add(
                key,
                format!("'{w}' is not all, none or a list. Fix: write all, none, or [name, ...]"),
            );
            Forward::All
        }
        Some(RawNames::List(list)) => {
            let mut out = Vec::new();
            for (j, name) in list.into_iter().enumerate() {
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_graphic() && !b"=;,\"".contains(&b));
                if !valid {
                    p.add(
                        format!("{key}[{j}]"),
                        format!("'{name}' is not a valid name. Fix: write the bare name"),
                    );
                    continue;
                }
                if header_names {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        p.add(
                            format!("{key}[{j}]"),
                            format!(
                                "'{name}' is not a header name. Fix: write e.g. accept-language"
                            ),
                        );
                        continue;
                    }
                    out.push(name.to_ascii_lowercase());
                } else {
                    out.push(name);
                }
            }
            Forward::Only(out)
        }
    }
}

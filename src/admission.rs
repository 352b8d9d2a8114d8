//! Admission — steps 1–3 of the request flow (SPEC §1) — decided in one place for every serving
//! path: normalize the path, find the token, route, apply the route's behaviours, decide
//! access (with revocation and auto-revocation), and shape the cache key's parts.
//!
//! [`admit`] takes plain [`RequestFacts`], which the connection loop builds from `httparse`
//! ([`crate::proxy::fast`]) and the proxy from a Pingora `Session`
//! ([`crate::proxy::admit`]); both answer from what it returns, so a mode, a behaviour or an
//! auth rule cannot reach one path and miss the other. `admit` matches [`AccessMode`] and
//! destructures [`Route`] and [`Behaviour`] without `..`: a new mode or field does not compile
//! until this function decides what it means for a request. It runs once per request: when
//! the loop hands a request to the proxy it hands over the admission too
//! ([`crate::http1::one_request`]), and each decision is counted once, here.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, Method};

use crate::access::{self, AuthResult, Decision};
use crate::auth::{Claims, TokenMemo};
use crate::cache::Variant;
use crate::config::{AccessMode, Behaviour, QueryPolicy, Route, RouteCache, ViewerProtocol};
use crate::edge::Edge;
use crate::request::{host_name, keep_query_params, normalize_path, strip_query_params};
use crate::viewer::Viewer;

mod credentials;
mod token;

use credentials::{basic_check, signed_check};
use token::token_decision;
pub use token::{find_token, FoundToken, RequestParts};

/// A request's header fields, however it was parsed.
#[derive(Clone, Copy)]
pub enum Headers<'a> {
    /// Pingora's (HTTP/1 through the proxy, HTTP/2).
    Map(&'a HeaderMap),
    /// The connection loop's: `(name as sent, value)`, in order.
    List(&'a [(&'a str, &'a [u8])]),
}

impl<'a> Headers<'a> {
    /// Every value of the field `name` (lower-case), in order.
    pub fn all(self, name: &'static str) -> Values<'a> {
        match self {
            Headers::Map(m) => Values::Map(m.get_all(name).iter()),
            Headers::List(l) => Values::List(l.iter(), name),
        }
    }

    /// The first value of the field `name` (lower-case). A loop over the list, not
    /// `all(name).next()`: a token hit looks up `Authorization` and `Cookie`, and iterators
    /// chained over either kind of headers cost ~450 instructions a request in `Option::or_else`
    /// and `and_then_or_clear` (callgrind, HTTP/2 bearer hit, benches/peers/instructions.sh).
    pub fn first(self, name: &'static str) -> Option<&'a [u8]> {
        match self {
            Headers::Map(m) => m.get(name).map(|v| v.as_bytes()),
            Headers::List(l) => l
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v),
        }
    }

    /// Every field as `(name, value)`; names as sent (HTTP/1) or lower-case (Pingora's map).
    pub fn iter(self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        let (map, list) = match self {
            Headers::Map(m) => (
                Some(m.iter().map(|(k, v)| (k.as_str(), v.as_bytes()))),
                None,
            ),
            Headers::List(l) => (None, Some(l.iter().copied())),
        };
        map.into_iter().flatten().chain(list.into_iter().flatten())
    }
}

/// The values of one field ([`Headers::all`]).
pub enum Values<'a> {
    /// From Pingora's map.
    Map(http::header::ValueIter<'a, http::HeaderValue>),
    /// From the connection loop's list: the fields left, and the name looked for.
    List(std::slice::Iter<'a, (&'a str, &'a [u8])>, &'static str),
}

impl<'a> Iterator for Values<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self {
            Values::Map(values) => values.next().map(http::HeaderValue::as_bytes),
            Values::List(fields, name) => fields
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v),
        }
    }
}

/// What admission reads of a request.
pub struct RequestFacts<'a> {
    /// The method.
    pub method: &'a Method,
    /// The request target's path and query as sent (for redirects).
    pub target: &'a str,
    /// The path as sent (before `?`).
    pub path: &'a str,
    /// The query as sent (after the first `?`; token parameters included), empty when none.
    pub query: &'a str,
    /// `Host` (HTTP/1) or `:authority` (HTTP/2) as sent; validated by the framing checks.
    pub host: &'a str,
    /// Every header field.
    pub headers: Headers<'a>,
    /// `Authorization`, found by whoever parsed the request (the first, where the proxy
    /// allows more than one; the connection loops hand a request with two to the proxy).
    pub authorization: Option<&'a [u8]>,
    /// The client's address and scheme ([`crate::viewer`]).
    pub viewer: Viewer,
    /// When the request is decided: the one clock read that the credential checks' validity
    /// windows and the hit path's freshness share.
    pub now: SystemTime,
    /// The connection's memory of its last token's fingerprint, where the connection loop
    /// keeps one ([`crate::auth::TokenMemo`]).
    pub token_memo: Option<&'a TokenMemo>,
    /// Set by admission when it lets a credential be checked in full (a signature or a
    /// password no cache of verified ones knew): the HTTP/1 loop writes such an answer after
    /// the other ready connections' ([`crate::proxy::fast::FastHit::checked_in_full`]).
    pub checked_in_full: AtomicBool,
}

impl RequestFacts<'_> {
    /// Whether a credential not known good may be checked in full for this client
    /// ([`Edge::may_verify`], the failed-credential budget); noted in
    /// [`RequestFacts::checked_in_full`] when it may. Asked by the credential caches exactly
    /// when they are about to check one in full.
    fn may_check_in_full(&self, edge: &Edge) -> bool {
        let may = edge.may_verify(self.viewer.addr);
        if may {
            self.checked_in_full.store(true, Ordering::Relaxed);
        }
        may
    }
}

/// A request let in: what the cache key, the origin request and the access log are made of.
#[derive(Debug, Clone)]
pub struct Admitted {
    /// Index into `routes`.
    pub route: usize,
    /// The variant to serve and key the cache with.
    pub variant: Variant,
    /// The credential check, on routes that check one.
    pub auth: Option<AuthResult>,
    /// Verified token claims, when a token verified.
    pub claims: Option<Arc<Claims>>,
    /// Host, lower-case.
    pub host: String,
    /// Normalized path without its path token.
    pub path: String,
    /// Query without token or signing parameters, after the route's query policy.
    pub query: String,
    /// Whether the route caches.
    pub cacheable: bool,
    /// A miss another node of the shield ring forwarded, with the variant it decided: served
    /// from the cache or the origin, never forwarded again, and answered without
    /// `Cache-Control: private` (the asking node stores it and says `private` to its reader).
    pub from_peer: bool,
}

/// A request answered by the edge itself.
#[derive(Debug, Clone)]
pub struct Refused {
    /// What to answer.
    pub answer: Answer,
    /// The route, when one matched.
    pub route: Option<usize>,
    /// The credential check, when one ran.
    pub auth: Option<AuthResult>,
    /// Verified token claims (a revoked or not-entitled token still verified).
    pub claims: Option<Arc<Claims>>,
}

impl Refused {
    fn bare(answer: Answer, route: Option<usize>) -> Refused {
        Refused {
            answer,
            route,
            auth: None,
            claims: None,
        }
    }
}

/// An admission the connection loop decided, handed to the proxy with the request
/// ([`crate::http1::one_request`]) for it to answer from.
pub type Handover = Box<Result<Admitted, Refused>>;

/// Static `GET`/`HEAD` for facts built without a `Method` of their own.
pub static GET: Method = Method::GET;
/// See [`GET`].
pub static HEAD: Method = Method::HEAD;

/// Steps 1–3 of the request flow, for every access mode and route behaviour. Counts the
/// credential decision (and charges a failed one to the client's budget) exactly once.
pub async fn admit(edge: &Edge, facts: &RequestFacts<'_>) -> Result<Admitted, Refused> {
    let normalized = match normalize_path(facts.path) {
        Ok(p) => p,
        Err(why) => {
            log::debug!("refused path {:?}: {}", facts.path, why.as_str());
            return Err(Refused::bare(Answer::Status(400), None));
        }
    };
    let (path_token, path) = edge.split_token(&normalized);
    let Some((route_index, route)) = edge.route_for(path) else {
        return Err(Refused::bare(Answer::Status(404), None));
    };
    // Every part of a route is named here: a new one must be decided on before this compiles.
    let Route {
        index: _,
        pattern: _,
        glob: _,   // matched by `route_for`
        origin: _, // misses only: the proxy's upstream phases
        access,
        require,
        realm,
        cache:
            RouteCache {
                enabled: cacheable,
                // applied when the origin answers (`response_cache_filter`)
                default_ttl: _,
                min_ttl: _,
                max_ttl: _,
            },
        behaviour,
    } = route;
    let Behaviour {
        query: query_policy,
        viewer_protocol,
        methods,
        // origin request only (`upstream_request_filter`): a hit never reaches the origin
        forward_headers: _,
        forward_cookies: _,
    } = behaviour;
    // a miss forwarded by a peer of the shield ring passed these gates there
    let peer_variant = decided_by_peer(edge, facts);
    if peer_variant.is_none() {
        if let Some(answer) = behaviour_gate(edge, facts, *viewer_protocol, methods.as_deref()) {
            return Err(Refused::bare(answer, Some(route_index)));
        }
    }
    let client = facts.viewer.addr;
    let stripped = || strip_query_params(facts.query, &edge.query_token_names);
    // the token modes strip it for their decision; the others only if the route keeps a query
    let mut token_query = None;
    let decision: Decision = match (peer_variant, access) {
        (Some(variant), _) => access::decided_by_peer(variant),
        (None, AccessMode::Public) => access::public(),
        (None, AccessMode::Paywall | AccessMode::Token) => {
            let parts = RequestParts {
                path_token,
                query: facts.query,
                authorization: facts.authorization,
                headers: facts.headers,
            };
            let query = token_query.insert(stripped());
            token_decision(edge, *access, require, &parts, path, query, facts)
        }
        (None, AccessMode::Basic) => {
            let realm = realm.as_deref().unwrap_or_default();
            match basic_check(edge, realm, facts).await {
                Ok(_user) => access::granted(),
                Err(label) => {
                    let result = AuthResult::Refused(label);
                    edge.count_auth(result, client);
                    let answer =
                        throttled(edge, result).unwrap_or(Answer::Challenge(realm.to_owned()));
                    return Err(Refused {
                        answer,
                        route: Some(route_index),
                        auth: Some(result),
                        claims: None,
                    });
                }
            }
        }
        (None, AccessMode::Signed) => match signed_check(edge, facts) {
            Ok(()) => access::granted(),
            Err(label) => {
                let result = AuthResult::Refused(label);
                edge.count_auth(result, client);
                return Err(Refused {
                    answer: throttled(edge, result).unwrap_or(Answer::Status(403)),
                    route: Some(route_index),
                    auth: Some(result),
                    claims: None,
                });
            }
        },
    };
    if let Some(result) = decision.result {
        edge.count_auth(result, client);
    }
    let Some(variant) = decision.variant else {
        let answer = decision.result.and_then(|r| throttled(edge, r));
        return Err(Refused {
            answer: answer.unwrap_or(Answer::Status(403)),
            route: Some(route_index),
            auth: decision.result,
            claims: decision.claims,
        });
    };
    // The query the cache key and the origin see: without token parameters, and CloudFront
    // signing parameters are never part of it either.
    let kept = || {
        let stripped = token_query.unwrap_or_else(stripped);
        match access {
            AccessMode::Signed => {
                Cow::Owned(crate::auth::cloudfront::strip_signing_params(&stripped).into_owned())
            }
            AccessMode::Public | AccessMode::Paywall | AccessMode::Token | AccessMode::Basic => {
                stripped
            }
        }
    };
    let query = match query_policy {
        // nothing to strip from a query that is dropped
        QueryPolicy::None => String::new(),
        QueryPolicy::All => kept().into_owned(),
        QueryPolicy::Allow(names) => keep_query_params(&kept(), names),
    };
    Ok(Admitted {
        route: route_index,
        variant,
        auth: decision.result,
        claims: decision.claims,
        host: facts.host.to_ascii_lowercase(),
        path: path.to_owned(),
        query,
        cacheable: *cacheable,
        from_peer: peer_variant.is_some(),
    })
}

/// The variant another node of the shield ring decided, when the request carries its valid
/// signature ([`crate::shield::Shield::verify`]); `None` for every client request.
fn decided_by_peer(edge: &Edge, facts: &RequestFacts<'_>) -> Option<Variant> {
    let shield = edge.shield.as_ref()?;
    let signature = facts.headers.first(crate::shield::SHIELD_HEADER)?;
    let variant = facts.headers.first(crate::edge::VARIANT_HEADER)?;
    let verified = shield.verify(
        signature,
        facts.method.as_str(),
        facts.host,
        facts.target,
        variant,
        crate::edge::unix_secs(facts.now),
    );
    if verified.is_none() {
        log::debug!("a shield signature that does not verify: decided as a client request");
    }
    verified
}

/// Viewer protocol policy and allowed methods, checked before any credential work.
fn behaviour_gate(
    edge: &Edge,
    facts: &RequestFacts<'_>,
    viewer_protocol: ViewerProtocol,
    methods: Option<&[Method]>,
) -> Option<Answer> {
    if !facts.viewer.https {
        match viewer_protocol {
            ViewerProtocol::AllowAll => {}
            ViewerProtocol::HttpsOnly => return Some(Answer::Status(403)),
            ViewerProtocol::RedirectToHttps => {
                let host = facts.host.to_ascii_lowercase();
                let name = host_name(&host);
                if name.is_empty() {
                    return Some(Answer::Status(400));
                }
                let port = match edge.https_port {
                    Some(443) | None => String::new(),
                    Some(p) => format!(":{p}"),
                };
                // GET/HEAD as CloudFront (301); 307 keeps the method and body of others.
                let code = if matches!(*facts.method, Method::GET | Method::HEAD) {
                    301
                } else {
                    307
                };
                let pq = facts.target;
                return Some(Answer::Redirect(code, format!("https://{name}{port}{pq}")));
            }
        }
    }
    if let Some(methods) = methods {
        if !methods.contains(facts.method) {
            let allow: Vec<&str> = methods.iter().map(Method::as_str).collect();
            return Some(Answer::NotAllowed(allow.join(", ")));
        }
    }
    None
}

/// The 429 for a check the failed-credential budget refused.
fn throttled(edge: &Edge, result: AuthResult) -> Option<Answer> {
    let budget = edge.budget.as_ref()?;
    result
        .throttled()
        .then(|| Answer::Throttled(budget.retry_after()))
}

/// An answer the edge gives without asking the origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A bare status (400, 403, 404, ...).
    Status(u16),
    /// `301`/`307` to `location` (viewer protocol policy `redirect_to_https`).
    Redirect(u16, String),
    /// `405` with the `Allow` list.
    NotAllowed(String),
    /// `401` with `WWW-Authenticate: Basic realm="..."`.
    Challenge(String),
    /// `429` with `Retry-After` (seconds): the failed-credential budget is spent.
    Throttled(u64),
}

impl Answer {
    /// The status code sent.
    pub fn status(&self) -> u16 {
        match self {
            Answer::Status(s) | Answer::Redirect(s, _) => *s,
            Answer::NotAllowed(_) => 405,
            Answer::Challenge(_) => 401,
            Answer::Throttled(_) => 429,
        }
    }
}

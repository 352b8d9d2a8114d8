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
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method};

use crate::access::{self, AuthResult, Decision};
use crate::auth::{Claims, Denial};
use crate::cache::Variant;
use crate::config::{AccessMode, Behaviour, Route, RouteCache, ViewerProtocol};
use crate::edge::{unix_now, Edge};
use crate::proxy::request::{
    self, find_token, normalize_path, policy_query, strip_query_params, RequestParts,
};
use crate::proxy::respond::Answer;
use crate::viewer::Viewer;

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
    pub fn all(self, name: &'static str) -> impl Iterator<Item = &'a [u8]> + 'a {
        let (map, list) = match self {
            Headers::Map(m) => (Some(m.get_all(name).iter().map(|v| v.as_bytes())), None),
            Headers::List(l) => (
                None,
                Some(
                    l.iter()
                        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
                        .map(|(_, v)| *v),
                ),
            ),
        };
        map.into_iter().flatten().chain(list.into_iter().flatten())
    }

    /// The first value of the field `name` (lower-case).
    pub fn first(self, name: &'static str) -> Option<&'a [u8]> {
        self.all(name).next()
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
    /// The client's address and scheme ([`crate::viewer`]).
    pub viewer: Viewer,
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
    if let Some(answer) = behaviour_gate(edge, facts, *viewer_protocol, methods.as_deref()) {
        return Err(Refused::bare(answer, Some(route_index)));
    }
    let client = facts.viewer.addr;
    let stripped = strip_query_params(facts.query, &edge.query_token_names);
    let decision: Decision = match access {
        AccessMode::Public => access::public(),
        AccessMode::Paywall | AccessMode::Token => {
            let cookies: Vec<&[u8]> = facts.headers.all("cookie").collect();
            let parts = RequestParts {
                path_token,
                query: facts.query,
                authorization: facts.headers.first("authorization"),
                cookies: &cookies,
            };
            token_decision(edge, *access, require, &parts, path, &stripped, facts)
        }
        AccessMode::Basic => {
            let realm = realm.as_deref().unwrap_or_default();
            let authorization = facts.headers.first("authorization");
            match basic_check(edge, realm, authorization, client).await {
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
        AccessMode::Signed => match signed_check(edge, facts) {
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
    // CloudFront signing parameters are never part of the cache key or the origin request.
    let query = match access {
        AccessMode::Signed => {
            Cow::Owned(crate::auth::cloudfront::strip_signing_params(&stripped).into_owned())
        }
        AccessMode::Public | AccessMode::Paywall | AccessMode::Token | AccessMode::Basic => {
            stripped
        }
    };
    Ok(Admitted {
        route: route_index,
        variant,
        auth: decision.result,
        claims: decision.claims,
        host: facts.host.to_ascii_lowercase(),
        path: path.to_owned(),
        query: policy_query(query_policy, query),
        cacheable: *cacheable,
    })
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
                let name = request::host_name(&host);
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

/// The decision of a `paywall` or `token` route: find the token in the configured sources,
/// verify it (token cache first), check entitlement and revocation, watch the session.
fn token_decision(
    edge: &Edge,
    mode: AccessMode,
    require: &[String],
    parts: &RequestParts<'_>,
    path: &str,
    query: &str,
    facts: &RequestFacts<'_>,
) -> Decision {
    let now = unix_now();
    let client = facts.viewer.addr;
    let presented = find_token(&edge.config.auth.token_sources, parts)
        .map(|t| present(edge, &t, path, client, now, facts, query));
    let decision = if mode == AccessMode::Paywall {
        access::paywall(require, presented)
    } else {
        access::token(require, presented)
    };
    let user_agent = facts.headers.first("user-agent").unwrap_or_default();
    watch_session(edge, mode, decision, client, user_agent, now)
}

/// Verify a found token and gather what its claims are checked against.
fn present<'p>(
    edge: &Edge,
    found: &request::FoundToken<'_>,
    path: &'p str,
    client: Option<IpAddr>,
    now: u64,
    facts: &RequestFacts<'_>,
    query: &str,
) -> access::Presented<'p> {
    let mut verified =
        edge.tokens
            .verify_gated(&found.token, &edge.keys.load(), &edge.policy, now, || {
                edge.may_verify(client)
            });
    // Not one of ours: maybe a token of the AWS Secure Media Delivery service (HS256 with its
    // own kids), if the publisher migrates with its token service unchanged.
    if let (Err(Denial::UnknownKid | Denial::AlgMismatch), Some(secrets)) = (&verified, &edge.smd) {
        if let Some(result) = smd_verify(secrets, found, path, client, now, facts.headers, query) {
            verified = result;
        }
    }
    // The `<sid>.` prefix of a path token is outside the signature: it may only repeat the
    // signed `sid`, never replace it (revocation is keyed on the signed one).
    if let (Ok(claims), Some(prefix)) = (&verified, &found.path_sid) {
        if claims.sid.as_deref().is_some_and(|sid| sid != *prefix) {
            verified = Err(Denial::Malformed);
        }
    }
    let revoked = verified
        .as_ref()
        .ok()
        .and_then(|c| c.sid.as_deref())
        .is_some_and(|sid| edge.revocations.is_revoked(sid, now));
    access::Presented {
        verified,
        revoked,
        path,
        client,
    }
}

/// Verify an AWS Secure Media Delivery token; `None` if it is not one (the JWT denial stands).
fn smd_verify(
    secrets: &crate::auth::smd::SmdSecrets,
    found: &request::FoundToken<'_>,
    path: &str,
    client: Option<IpAddr>,
    now: u64,
    headers: Headers<'_>,
    query: &str,
) -> Option<Result<Arc<Claims>, Denial>> {
    use crate::auth::smd;
    let token = match &found.path_sid {
        Some(sid) => Cow::Owned(format!("{sid}.{}", found.token)),
        None => Cow::Borrowed(&*found.token),
    };
    // CloudFront adds trusted `cloudfront-viewer-*` geo headers; here they could only come from
    // the client, so they are never believed.
    let headers: Vec<(&str, &[u8])> = headers
        .iter()
        .filter(|(k, _)| {
            !k.get(..18)
                .is_some_and(|p| p.eq_ignore_ascii_case("cloudfront-viewer-"))
        })
        .collect();
    let facts = smd::SmdRequest {
        path,
        client_ip: client,
        headers: &headers,
        query,
    };
    match smd::verify(&token, secrets, &facts, now) {
        Ok(c) => Some(Ok(Arc::new(Claims {
            kid: c.kid,
            key_id: 0,
            exp: c.exp,
            nbf: c.nbf,
            iat: c.iat,
            sub: None,
            subs: Vec::new(),
            sid: c.sid,
            // scope and viewer binding were enforced by the SMD rules themselves
            paths: Vec::new(),
            ip: None,
        }))),
        Err(Denial::UnknownKid) => None,
        Err(d) => Some(Err(d)),
    }
}

/// Auto-revocation: count where an admitted session is seen from; over the limits, revoke it
/// (this request included).
fn watch_session(
    edge: &Edge,
    mode: AccessMode,
    decision: Decision,
    client: Option<IpAddr>,
    user_agent: &[u8],
    now: u64,
) -> Decision {
    let (Some(auto), Some(claims)) = (&edge.auto_revoker, &decision.claims) else {
        return decision;
    };
    let Some(sid) = claims.sid.as_deref() else {
        return decision;
    };
    if decision.result != Some(AuthResult::Valid) {
        return decision;
    }
    let Some(trip) = auto.observe(sid, client, user_agent, now) else {
        return decision;
    };
    let ttl =
        Duration::from_secs(claims.exp.saturating_sub(now)).max(edge.config.revocation.default_ttl);
    log::warn!("session {sid:?} revoked automatically: {trip:?} inside the window");
    if let Err(e) = edge.revocations.revoke(sid, ttl, "auto", now) {
        log::error!("saving revocations: {e}");
    }
    edge.metrics.auto_revocations.inc();
    edge.metrics
        .revoked_sessions
        .set(edge.revocations.len() as i64);
    Decision {
        // paywall readers fall back to the teaser, media viewers are refused
        variant: (mode == AccessMode::Paywall).then_some(Variant::Anonymous),
        result: Some(AuthResult::Revoked),
        claims: decision.claims,
    }
}

/// HTTP Basic credentials against the realm's file. bcrypt costs milliseconds, so a check the
/// file's cache of verified credentials cannot answer runs on the blocking pool — unless
/// `client` has spent its failed-credential budget ("throttled").
async fn basic_check(
    edge: &Edge,
    realm: &str,
    authorization: Option<&[u8]>,
    client: Option<IpAddr>,
) -> Result<String, &'static str> {
    let Some(file) = edge.realms.get(realm).map(|f| f.load_full()) else {
        return Err("unknown_realm");
    };
    let verdict = match file.check_cached(authorization) {
        Some(verdict) => verdict,
        None if !edge.may_verify(client) => return Err("throttled"),
        None => {
            let header = authorization.map(<[u8]>::to_vec);
            tokio::task::spawn_blocking(move || file.check(header.as_deref()))
                .await
                .unwrap_or(Err(crate::auth::htpasswd::BasicDenial::BadCredentials))
        }
    };
    verdict.map_err(|d| d.as_str())
}

/// A CloudFront signed URL or signed cookies, for the URL as the viewer requested it.
fn signed_check(edge: &Edge, facts: &RequestFacts<'_>) -> Result<(), &'static str> {
    use crate::auth::cloudfront;
    let host = facts.host.to_ascii_lowercase();
    let cookies: Vec<&str> = facts
        .headers
        .all("cookie")
        .filter_map(|v| std::str::from_utf8(v).ok())
        .collect();
    let signed = cloudfront::SignedRequest {
        scheme: if facts.viewer.https { "https" } else { "http" },
        host: &host,
        path: facts.path,
        query: facts.query,
        cookie_headers: &cookies,
        client_ip: facts.viewer.addr,
    };
    let may_verify = || edge.may_verify(facts.viewer.addr);
    cloudfront::verify_gated(&signed, &edge.signed_keys.load(), unix_now(), &may_verify)
        .map(|_| ())
        .map_err(|d| d.as_str())
}

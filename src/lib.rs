//! Tollgate: a CDN edge node on Pingora that enforces a publisher's paywall and token access at
//! the edge.
//!
//! The request flow (SPEC §1) as it really runs, and where each step lives:
//!
//! 0. **Read.** An HTTP/1.x request (plain or TLS) is read by the connection loop
//!    ([`app`]'s front, [`http1`]): ambiguous framing, a bad `Host`, a slow head are refused
//!    there, before anything else. An HTTP/2 connection is read by its own loop ([`app`]'s
//!    `h2`, [`http2`]: frames, HPACK, flow control), which hands every stream it does not
//!    answer to Pingora's HTTP/2 session behind it; the proxy's `request_filter` applies the
//!    same refusals to those.
//! 1. **Admit** — [`admission::admit`], one function for every protocol and path: normalize the
//!    path and split off a path token ([`request`]), route (first `routes[]` glob, [`config`]),
//!    the route's behaviours (viewer protocol, methods, query policy), and access: the route's
//!    mode turns the credential into a variant ([`auth`] verifies — JWT with `ring`, the
//!    verified-token cache, CloudFront signatures, Basic credentials, AWS SMD tokens — and
//!    [`access`] decides), with revocations ([`revocation`]) and the failed-credential budget
//!    ([`budget`]). A refused request is answered by the edge; the origin never sees it.
//! 2. **Hit.** A fresh memory-tier object for (host, normalized path, token-free query,
//!    variant) ([`cache`]) is answered at once with its stored head ([`proxy::fast`]): by the
//!    HTTP/1 loop as bytes, by the HTTP/2 loop as a header block encoded once per object —
//!    most hits end here.
//! 3. **Everything else** — disk hits, ranges, conditionals, misses, other methods — runs
//!    through Pingora's proxy phases with the admission already decided (the loop hands it
//!    over with the request, [`proxy::handovers`] for HTTP/2): cache lookup, then on a miss the route's origin with the secret
//!    header and `x-tollgate-variant` ([`proxy`]; [`sigv4`] for private S3 origins).
//! 4. **Finish.** Every answer gets `Cache-Status` and `Age` ([`proxy::respond`]) and is counted
//!    and logged in one place (`TollgateProxy::finish`: [`metrics`], [`access_log`]).
//!
//! [`edge`] holds the runtime state built once from the config; [`app`] assembles the Pingora
//! server; [`admin`] serves `/metrics`, `/healthz` and `/admin/*`; [`demo`] is the embedded
//! default. [`fleet`] (optional) joins the node to a fleet over NATS JetStream: purges,
//! revocations and key sets published on any node are applied on every node, and a starting
//! node replays what it missed before its listeners open. [`request`] and [`http2`] are the
//! ground floor every layer may read (they import nothing of the crate); [`http1`] stands on
//! [`request`] alone.

pub mod access;
pub mod access_log;
pub mod admin;
pub mod admission;
pub mod app;
pub mod auth;
pub mod budget;
pub mod cache;
pub mod cidr;
pub mod config;
pub mod demo;
pub mod edge;
pub mod fleet;
pub mod http1;
pub mod http2;
pub mod logger;
pub mod metrics;
pub mod origins;
pub mod proxy;
pub mod request;
pub mod revocation;
pub mod shield;
pub mod sigv4;
pub mod tls;
pub mod viewer;

//! Tollgate: a CDN edge node on Pingora that enforces a publisher's paywall and token access at
//! the edge.
//!
//! The request flow (SPEC §1), and where each step lives:
//!
//! 1. Route: first `routes[]` glob that fits the normalized path — [`config`], [`proxy::request`].
//! 2. Token: found by the configured source precedence and stripped from what the cache and
//!    origin see — [`proxy::request`].
//! 3. Access: the route's mode turns the verified token into a variant — [`auth`] (ring JWT
//!    verification, key sets, verified-token cache) and [`access`]. Runs in `request_filter`,
//!    before the cache lookup.
//! 4. Cache: key = host + normalized path + query without tokens + variant — [`cache`].
//! 5. Miss: the route's origin, with the secret header and `x-tollgate-variant` — [`proxy`].
//! 6. Respond with `Cache-Status` and `Age` — [`proxy::respond`].
//!
//! [`access_log`] writes one JSON line per request off the request path. [`app`] assembles the Pingora server; [`admin`] serves `/metrics`, `/healthz` and
//! `/admin/*`; [`metrics`] names every metric; [`demo`] is the embedded default.

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
pub mod http1;
pub mod metrics;
pub mod proxy;
pub mod request;
pub mod revocation;
pub mod sigv4;
pub mod tls;
pub mod viewer;

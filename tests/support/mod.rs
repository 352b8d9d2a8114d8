//! Test harness: a real origin and the real `tollgate` binary on loopback, real HTTP clients and
//! real signatures minted in the test.
//!
//! - [`Origin`]: an HTTP/1.1 server (hyper) on `127.0.0.1:0`, on its own thread and runtime. It
//!   records every request it receives and renders `/premium/*` from `x-tollgate-variant`, the
//!   way a publisher's origin renders the full article or the teaser. [`Origin::set_large`]
//!   serves large deterministic binary bodies ([`pattern_body`]), optionally trickled.
//! - [`Edge`]: writes keys, secrets and a config into a temp dir, starts `tollgate -c` on free
//!   ports, waits for `/healthz`, kills the process on drop. [`Edge::stop`] (SIGTERM),
//!   [`Edge::kill_hard`] (SIGKILL) and [`Edge::start_again`] restart it on the same config;
//!   [`disk_options`] puts the disk tier in a directory the test owns; [`Edge::rss`] reads
//!   `VmRSS`/`VmHWM`.
//!   `TOLLGATE_TEST_FAST_HITS=off` ([`FAST_HITS_ENV`]) starts every edge whose test does not
//!   set [`EdgeOptions::fast_hits`] with the connection-level hit path off.
//! - [`Nats`]: a real `nats-server -js` on a free port with a temporary store, stopped by its
//!   pid, restartable on the same port and store; [`fleet_yaml`] joins an edge to it.
//! - [`free_port`], [`free_ports`]: ports for configs, from below the kernel's ephemeral range
//!   and never handed out twice in a test process, so a stopped edge finds its ports again.
//! - [`tokens`]: good and deliberately bad tokens.
//! - [`client`], [`get`], [`raw_get`]: clients that do exactly what the test says (no redirects,
//!   no proxies from the environment, no pooled connections unless asked for).
//! - [`parse_metrics`], [`metric`]: a strict reader of the Prometheus text format.

#![allow(dead_code)]

pub mod certs;
pub mod naive_origin;
pub mod raw;
pub mod tokens;
pub mod variant_pages;

mod clients;
mod edge;
mod media;
mod nats;
mod origin;
mod ports;
mod prometheus;
#[allow(unused_imports)] // not every test reaches the origin from another address
pub use media::*;

pub use clients::*;
pub use edge::*;
#[allow(unused_imports)] // only the fleet's tests start NATS
pub use nats::*;
pub use origin::*;
pub use ports::*;
pub use prometheus::*;

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tollgate::auth::mint::{self, SigningKey};

/// The marker only the subscriber variant of a premium page carries.
pub const SUBSCRIBER_MARK: &str = "SUBSCRIBER-CONTENT";
/// The origin secret header name used by every test config.
pub const SECRET_HEADER: &str = "x-api-key";
/// The variant header the edge sends to the origin.
pub const VARIANT_HEADER: &str = "x-tollgate-variant";

//! Connection draining for the proxy service during a graceful upgrade or shutdown.
//!
//! When a Pingora process stops (SIGQUIT after handing its listeners to the new process, or
//! SIGTERM), it stops accepting and its proxy immediately drops every kept-alive connection that
//! sits between two requests. A client that has just written its next request on such a
//! connection — `wrk`, a browser, any pooled HTTP client — then sees the connection close
//! without an answer: a failed request in the middle of a "zero-downtime" reload.
//!
//! [`Draining`] wraps the proxy and delays that drop by a short linger. Meanwhile each kept-alive
//! connection gets one more request served, answered with `Connection: close` (Pingora turns
//! keep-alive off once shutdown has begun), and the client reconnects — to the new process,
//! which shares the listening socket. Connections still idle after the linger are closed; a
//! request racing that close is the residual risk every server has. In-flight requests are not
//! affected: they run until the grace period ends either way.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::apps::{HttpServerApp, HttpServerOptions, ReusedHttpStream};
use pingora_core::protocols::http::v2::server::H2Options;
use pingora_core::protocols::http::ServerSession;
use pingora_core::server::ShutdownWatch;

/// How long idle kept-alive connections stay open after shutdown begins, at most.
pub const IDLE_LINGER: Duration = Duration::from_secs(1);

/// An HTTP app whose idle kept-alive connections outlive the shutdown signal by a linger.
pub struct Draining<A> {
    inner: Arc<A>,
    linger: Duration,
}

impl<A> Draining<A> {
    /// Wrap `inner`; idle connections are dropped `linger` after shutdown begins.
    pub fn new(inner: A, linger: Duration) -> Draining<A> {
        Draining {
            inner: Arc::new(inner),
            linger,
        }
    }
}

#[async_trait]
impl<A: HttpServerApp + Send + Sync + 'static> HttpServerApp for Draining<A> {
    async fn process_new_http(
        self: &Arc<Self>,
        session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        self.inner.process_new_http(session, shutdown).await
    }

    fn h2_options(&self) -> Option<H2Options> {
        self.inner.h2_options()
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        self.inner.server_options()
    }

    async fn http_cleanup(&self) {
        tokio::time::sleep(self.linger).await;
        self.inner.http_cleanup().await;
    }
}

//! What a client connection waits on besides its socket — the timer behind its deadlines
//! (HTTP/1: idle and header; HTTP/2: idle and write; both: its TLS buffers' release), and the
//! server's shutdown — set up once a connection instead of once a wait.
//!
//! Made anew for every wait, as they were, the two cost four lock operations on every
//! keep-alive HTTP/1 request (and every time an HTTP/2 connection went back to waiting): a new `Sleep` went into tokio's timer wheel under the wheel's lock and
//! came out under it again, and a new `watch::Receiver::changed()` joined the shutdown watch's
//! waiter list under that list's lock and left it the same way. That list is one for the whole
//! server, so every core's requests met on it. Kept for the connection:
//! - the timer is moved by [`tokio::time::Sleep::reset`], which for a deadline later than the
//!   one it holds (every keep-alive request's) is one atomic compare-and-swap: the wheel finds
//!   the later deadline when the old one comes round and puts the entry back;
//! - the shutdown future joins the waiter list once, when the connection first waits, and is
//!   polled again only when the task's waker changes or the watch says it changed — an atomic
//!   load ([`tokio::sync::watch::Receiver::has_changed`]) instead of the watch's `RwLock`.
//!
//! `benches/peers/instructions.sh 20000` (callgrind, 20,000 keep-alive requests a row), instructions
//! a request before and after: HTTP/1.1 public hit 9,935 -> 9,060, bearer 11,260 -> 10,412; over
//! TLS 23,322 -> 22,476 and 25,302 -> 24,433; HTTP/2 public hit 12,374 -> 12,223. (Leaving the
//! timer in place for a deadline less than 10 ms later than its own, to save the `reset`, saved
//! nothing: the comparison cost what the reset did.)

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use pingora_core::server::ShutdownWatch;
use tokio::time::{Instant, Sleep};

/// A connection's timer and its view of the server's shutdown.
pub(super) struct Waits {
    /// Made at the first wait (a connection that never waits never touches the wheel).
    timer: Option<Pin<Box<Sleep>>>,
    shutdown: Shutdown,
}

impl Waits {
    pub(super) fn new(watch: &ShutdownWatch) -> Waits {
        Waits {
            timer: None,
            shutdown: Shutdown::new(watch),
        }
    }

    /// Has the server's shutdown begun (or is the server exiting, its watch gone)?
    pub(super) fn shutting_down(&mut self) -> bool {
        self.shutdown.begun()
    }

    /// Ready once `at` has passed: the connection's one timer, moved to `at` if it was set
    /// elsewhere.
    pub(super) fn poll_until(&mut self, at: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        timer.as_mut().poll(cx)
    }

    /// Ready once the server's shutdown has begun; the task is woken when it does.
    pub(super) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shutdown.poll_begun(cx)
    }
}

type Wait = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The server's shutdown as one connection sees it.
struct Shutdown {
    watch: ShutdownWatch,
    /// Whether shutdown had begun, once it has (it does not end).
    begun: bool,
    /// A `changed()` of the watch, in the watch's waiter list, and the waker it was last polled
    /// with: while that waker wakes this task, the shutdown's wake-up reaches the task without
    /// the future being polled again.
    wait: Option<(Wait, Waker)>,
}

impl Shutdown {
    fn new(watch: &ShutdownWatch) -> Shutdown {
        Shutdown {
            begun: *watch.borrow(),
            watch: watch.clone(),
            wait: None,
        }
    }

    fn begun(&mut self) -> bool {
        if !self.begun {
            match self.watch.has_changed() {
                Ok(false) => {}
                Ok(true) => {
                    self.begun = *self.watch.borrow_and_update();
                    // the change woke the wait and took it off the list: a later change
                    // needs a fresh one
                    self.wait = None;
                }
                // the sender is gone: the server is exiting
                Err(_) => self.begun = true,
            }
        }
        self.begun
    }

    fn poll_begun(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.begun() {
                self.wait = None;
                return Poll::Ready(());
            }
            if let Some((_, waker)) = &self.wait {
                if waker.will_wake(cx.waker()) {
                    // registered for this task, and nothing has changed since
                    return Poll::Pending;
                }
            }
            let (wait, waker) = self.wait.get_or_insert_with(|| {
                // the future's receiver starts from the version `begun` has seen
                let mut watch = self.watch.clone();
                let wait: Wait = Box::pin(async move {
                    let _ = watch.changed().await;
                });
                (wait, Waker::noop().clone())
            });
            match wait.as_mut().poll(cx) {
                Poll::Pending => {
                    waker.clone_from(cx.waker());
                    return Poll::Pending;
                }
                // changed (or the sender is gone): `begun` reads which, and a change that
                // was not the start of shutdown waits again on a fresh future
                Poll::Ready(()) => self.wait = None,
            }
        }
    }
}

#[cfg(test)]
#[path = "waits_tests.rs"]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Wake;
use std::time::Duration;

use super::*;

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn counting() -> (Arc<Counting>, Waker) {
    let c = Arc::new(Counting::default());
    (c.clone(), Waker::from(c))
}

fn woken(c: &Counting) -> usize {
    c.0.load(Ordering::SeqCst)
}

/// A connection's waits on a fresh shutdown watch (its sender), and a counting waker.
fn watched() -> (
    tokio::sync::watch::Sender<bool>,
    Waits,
    Arc<Counting>,
    Waker,
) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let waits = Waits::new(&rx);
    let (count, waker) = counting();
    (tx, waits, count, waker)
}

#[test]
fn a_shutdown_wakes_a_connection_that_registered_once() {
    let (tx, mut waits, count, waker) = watched();
    let mut cx = Context::from_waker(&waker);
    assert!(!waits.shutting_down());
    // one registration, then polls that find it in place
    for _ in 0..3 {
        assert!(waits.poll_shutdown(&mut cx).is_pending());
    }
    assert_eq!(woken(&count), 0);
    tx.send(true).unwrap();
    assert_eq!(
        woken(&count),
        1,
        "the registered waker is woken by the shutdown"
    );
    assert!(waits.poll_shutdown(&mut cx).is_ready());
    assert!(waits.shutting_down());
    // and it stays begun
    assert!(waits.poll_shutdown(&mut cx).is_ready());
}

#[test]
fn a_new_waker_is_registered_in_place_of_the_old() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut waits = Waits::new(&rx);
    let (first, first_waker) = counting();
    let (second, second_waker) = counting();
    assert!(waits
        .poll_shutdown(&mut Context::from_waker(&first_waker))
        .is_pending());
    // the task's waker changed: the wait must be polled with the new one
    assert!(waits
        .poll_shutdown(&mut Context::from_waker(&second_waker))
        .is_pending());
    tx.send(true).unwrap();
    assert_eq!(woken(&second), 1, "the waker of the last poll is woken");
    assert_eq!(woken(&first), 0, "the replaced waker is not");
    assert!(waits.shutting_down());
}

#[test]
fn a_server_exiting_counts_as_shutdown() {
    let (tx, mut waits, count, waker) = watched();
    let mut cx = Context::from_waker(&waker);
    assert!(waits.poll_shutdown(&mut cx).is_pending());
    drop(tx);
    assert_eq!(woken(&count), 1);
    assert!(waits.poll_shutdown(&mut cx).is_ready());
    assert!(waits.shutting_down());
}

#[test]
fn a_connection_made_after_shutdown_began_sees_it_at_once() {
    let (tx, rx) = tokio::sync::watch::channel(false);
    tx.send(true).unwrap();
    // a receiver cloned after the change has seen its version: only its value tells
    let late = rx.clone();
    let mut waits = Waits::new(&late);
    assert!(waits.shutting_down());
    let (_, waker) = counting();
    assert!(waits
        .poll_shutdown(&mut Context::from_waker(&waker))
        .is_ready());
}

#[test]
fn a_change_that_is_not_shutdown_is_waited_past() {
    let (tx, mut waits, count, waker) = watched();
    let mut cx = Context::from_waker(&waker);
    assert!(waits.poll_shutdown(&mut cx).is_pending());
    tx.send(false).unwrap();
    assert_eq!(woken(&count), 1);
    assert!(waits.poll_shutdown(&mut cx).is_pending());
    assert!(!waits.shutting_down());
    tx.send(true).unwrap();
    assert_eq!(woken(&count), 2, "waiting again after the first change");
    assert!(waits.poll_shutdown(&mut cx).is_ready());
}

/// Poll the connection's timer for `at` once, with a waker that does nothing.
fn ready_now(waits: &mut Waits, at: Instant) -> bool {
    waits
        .poll_until(at, &mut Context::from_waker(Waker::noop()))
        .is_ready()
}

/// Wait on the connection's timer for `at` (at most 10 s).
async fn until(waits: &mut Waits, at: Instant) {
    let wait = std::future::poll_fn(|cx| waits.poll_until(at, cx));
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("the timer fired");
}

#[tokio::test]
async fn the_timer_follows_its_deadline_later_and_earlier() {
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let mut waits = Waits::new(&rx);
    let t0 = Instant::now();
    let (first, later) = (
        t0 + Duration::from_millis(150),
        t0 + Duration::from_millis(450),
    );
    assert!(!ready_now(&mut waits, first));
    // moved later (the keep-alive case): it does not fire at the first deadline
    assert!(!ready_now(&mut waits, later));
    tokio::time::sleep_until(first + Duration::from_millis(100)).await;
    let still_pending = !ready_now(&mut waits, later);
    if Instant::now() + Duration::from_millis(20) < later {
        assert!(still_pending, "fired at the deadline it was moved from");
    }
    until(&mut waits, later).await;
    assert!(Instant::now() >= later);
    assert!(
        ready_now(&mut waits, later),
        "a passed deadline stays passed"
    );
    // moved again after it fired, and moved earlier: each wakes the task at its own time
    let next = Instant::now() + Duration::from_millis(400);
    assert!(!ready_now(&mut waits, next));
    let sooner = Instant::now() + Duration::from_millis(30);
    until(&mut waits, sooner).await;
    assert!(Instant::now() >= sooner);
    if Instant::now() + Duration::from_millis(20) < next {
        assert!(!ready_now(&mut waits, next));
    }
}

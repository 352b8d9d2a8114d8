//! Pingora's cache lock, with one more look at the memory tier before a request becomes the
//! writer of a fill.
//!
//! Pingora looks a request up in storage and, on a miss, takes the key's lock: the first request
//! to take it fetches from upstream, the others wait for it and look again. Between the look and
//! the lock, another request may finish the very fill this one would have waited for: store the
//! object and release the lock. The late request then finds no lock, becomes a writer of its
//! own and fetches the object a second time. With two worker threads on two cores the window is
//! the few instructions between the two calls; a thread preempted there (a busy machine) widens
//! it to a time slice. `tests/shield.rs` met it with a CPU hog beside it (`yes`, fast hits off):
//! an object of the three-node shield ring reached the origin twice, with nothing in any node's
//! log, in 3 of 145 runs (issue 20 closing note, eighth session).
//!
//! [`RecheckingLock`] closes the window for the memory tier. A request about to become a writer
//! first asks the memory tier whether it now holds the object fresh. If it does, the request
//! waits instead: on a read lock of the lock it just took, which is then released as done at
//! once. Pingora's wait loop looks the object up again and serves the hit. An object only on
//! disk, or stored under a `Vary` secondary key, is not checked: the request fetches as before.

use std::time::SystemTime;

use pingora_cache::key::CacheHashKey;
use pingora_cache::lock::{CacheKeyLock, CacheLock, LockStatus, Locked, ReadLock, WritePermit};
use pingora_cache::trace::Span;
use pingora_cache::CacheKey;

use super::MemoryStore;

/// A [`CacheLock`] that looks at the memory tier again before handing out a write lock.
pub struct RecheckingLock {
    inner: CacheLock,
    memory: &'static MemoryStore,
}

impl RecheckingLock {
    /// Pingora's lock with `age_timeout` (`cache.lock_timeout`), checking `memory`.
    pub fn new(age_timeout: std::time::Duration, memory: &'static MemoryStore) -> RecheckingLock {
        RecheckingLock {
            inner: CacheLock::new(age_timeout),
            memory,
        }
    }
}

impl CacheKeyLock for RecheckingLock {
    fn lock(&self, key: &CacheKey, stale_writer: bool) -> Locked {
        let locked = self.inner.lock(key, stale_writer);
        let Locked::Write(permit) = locked else {
            return locked;
        };
        // a revalidation writes over an object that is there on purpose
        if stale_writer
            || self
                .memory
                .fresh(&key.combined_bin(), SystemTime::now())
                .is_none()
        {
            return Locked::Write(permit);
        }
        // Filled meanwhile: wait on the lock just taken (it is in the table and fresh, so this
        // is a read lock on it), and release that lock as done, which ends the wait at once.
        let waiting = self.inner.lock(key, false);
        self.inner.release(key, permit, LockStatus::Done);
        waiting
    }

    fn release(&self, key: &CacheKey, permit: WritePermit, reason: LockStatus) {
        self.inner.release(key, permit, reason);
    }

    fn trace_lock_wait(&self, span: &mut Span, read_lock: &ReadLock, lock_status: LockStatus) {
        self.inner.trace_lock_wait(span, read_lock, lock_status);
    }

    fn custom_lock_status(&self, custom_no_cache: &'static str) -> LockStatus {
        self.inner.custom_lock_status(custom_no_cache)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::memory::tests::{fill_until, key as variant_key};

    fn key(path: &str) -> CacheKey {
        variant_key(path, "public")
    }

    /// Store a 5-byte object under `k`, fresh until `fresh_for` from now (negative: stale).
    async fn fill(store: &'static MemoryStore, k: &CacheKey, fresh_for: i64) {
        let now = SystemTime::now();
        let until = if fresh_for >= 0 {
            now + Duration::from_secs(fresh_for as u64)
        } else {
            now - Duration::from_secs(fresh_for.unsigned_abs())
        };
        fill_until(store, k, b"hello", until).await;
    }

    fn setup() -> (RecheckingLock, &'static MemoryStore) {
        let memory = MemoryStore::new(1 << 20, 1 << 16, None).leak();
        (RecheckingLock::new(Duration::from_secs(10), memory), memory)
    }

    #[tokio::test]
    async fn a_request_that_missed_before_a_fill_finished_waits_and_holds_no_lock() {
        let (lock, memory) = setup();
        let k = key("/filled");
        // the other request's fill: stored, its lock released
        fill(memory, &k, 60).await;
        let Locked::Read(read) = lock.lock(&k, false) else {
            panic!("a request that missed the stored object must not fetch it again");
        };
        assert_eq!(
            read.lock_status(),
            LockStatus::Done,
            "its wait ends at once"
        );
        // and nothing is left locked: the next miss on the key is the same
        let Locked::Read(again) = lock.lock(&k, false) else {
            panic!("no lock may be left in the table");
        };
        assert_eq!(again.lock_status(), LockStatus::Done);
    }

    #[tokio::test]
    async fn a_missing_object_gets_one_writer_and_readers_that_wait_for_it() {
        let (lock, _) = setup();
        let k = key("/missing");
        let Locked::Write(permit) = lock.lock(&k, false) else {
            panic!("the first miss fetches");
        };
        let Locked::Read(read) = lock.lock(&k, false) else {
            panic!("a second miss waits");
        };
        assert_eq!(read.lock_status(), LockStatus::Waiting);
        lock.release(&k, permit, LockStatus::Done);
        assert_eq!(read.lock_status(), LockStatus::Done);
        // released: a later miss (say, after a purge) fetches again
        let Locked::Write(permit) = lock.lock(&k, false) else {
            panic!("a miss after the release fetches");
        };
        lock.release(&k, permit, LockStatus::Done);
    }

    #[tokio::test]
    async fn stale_objects_and_revalidations_still_get_a_writer() {
        let (lock, memory) = setup();
        let stale = key("/stale");
        fill(memory, &stale, -30).await;
        let Locked::Write(permit) = lock.lock(&stale, false) else {
            panic!("an expired object is fetched again");
        };
        lock.release(&stale, permit, LockStatus::Done);
        let fresh = key("/fresh");
        fill(memory, &fresh, 60).await;
        let Locked::Write(permit) = lock.lock(&fresh, true) else {
            panic!("a revalidation (stale writer) is never turned into a wait");
        };
        lock.release(&fresh, permit, LockStatus::Done);
    }
}

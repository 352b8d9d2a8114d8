//! The failed-credential budget (`limits.failed_auth`, SPEC §10): a token bucket per client
//! address, spent by credential checks that fail.
//!
//! A forged JWT costs the edge a P-256 or RSA verification, a forged signed URL the same, a
//! wrong Basic password a bcrypt — all free to send. Each failure spends one token of its
//! address's bucket (`burst` deep, refilled at `per_address_per_second`). While an address's
//! bucket is empty, a credential that would need a verification is refused with 429 and a
//! `Retry-After` instead of being verified. Credentials the edge already knows to be good
//! (the verified-token cache, the Basic and signed-URL caches) are checked before the budget
//! and never refused by it, and a check that succeeds spends nothing.
//!
//! Memory is bounded: a fixed table of [`SLOTS`] buckets, indexed by a keyed hash of the
//! address (IPv6 by its /64, which one host can fill). An address whose slot holds another,
//! still-active address shares that bucket — a collision can make an innocent address wait,
//! never let an attacker's address escape its budget. A slot whose bucket has refilled is
//! taken over by the next address to fail.

use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::time::Instant;

use parking_lot::Mutex;

use crate::config::FailedAuthLimit;

/// Buckets in the table (a power of two); 40 bytes each.
pub const SLOTS: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The address (IPv6: its /64) that last took the slot; 0 when never used.
    key: u128,
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
}

/// Per-address budgets of failed credential checks.
pub struct FailureBudget {
    limit: FailedAuthLimit,
    hasher: ahash::RandomState,
    slots: Box<[Mutex<Bucket>]>,
}

impl FailureBudget {
    /// An empty table.
    pub fn new(limit: FailedAuthLimit) -> FailureBudget {
        let start = Instant::now();
        FailureBudget {
            limit,
            hasher: ahash::RandomState::new(),
            slots: (0..SLOTS)
                .map(|_| {
                    Mutex::new(Bucket {
                        key: 0,
                        tokens: f64::from(limit.burst),
                        at: start,
                    })
                })
                .collect(),
        }
    }

    /// Seconds a refused client is told to wait (`Retry-After`): until one token is back.
    pub fn retry_after(&self) -> u64 {
        (1.0 / self.limit.per_second).ceil().max(1.0) as u64
    }

    fn key(addr: IpAddr) -> u128 {
        match addr.to_canonical() {
            // tag v4 so that it never equals a v6 prefix, nor the empty key
            IpAddr::V4(v4) => (1u128 << 64) | u128::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) << 64 | 2,
        }
    }

    fn slot(&self, key: u128) -> &Mutex<Bucket> {
        let mut h = self.hasher.build_hasher();
        h.write_u128(key);
        &self.slots[h.finish() as usize & (SLOTS - 1)]
    }

    /// Bring `b`'s tokens up to `now`.
    fn refill(&self, b: &mut Bucket, now: Instant) {
        let earned = now.saturating_duration_since(b.at).as_secs_f64() * self.limit.per_second;
        b.tokens = (b.tokens + earned).min(f64::from(self.limit.burst));
        b.at = now;
    }

    /// Whether `addr` has no failures left to spend: a credential needing a verification is
    /// then refused. An unknown address (`None`) is never refused.
    pub fn exhausted(&self, addr: Option<IpAddr>, now: Instant) -> bool {
        let Some(addr) = addr else { return false };
        let key = Self::key(addr);
        let mut b = self.slot(key).lock();
        if b.key == 0 {
            return false;
        }
        self.refill(&mut b, now);
        b.tokens < 1.0
    }

    /// Spend one token of `addr`'s bucket for a failed check.
    pub fn charge(&self, addr: Option<IpAddr>, now: Instant) {
        let Some(addr) = addr else { return };
        let key = Self::key(addr);
        let mut b = self.slot(key).lock();
        self.refill(&mut b, now);
        if b.key != key && b.tokens >= f64::from(self.limit.burst) {
            // the slot's last owner is idle again: the slot is this address's now
            b.key = key;
        }
        b.tokens = (b.tokens - 1.0).max(0.0);
    }

    /// Slots whose bucket is empty right now (a gauge for operators), scanned.
    pub fn exhausted_slots(&self) -> usize {
        let now = Instant::now();
        self.slots
            .iter()
            .filter(|s| {
                let mut b = s.lock();
                b.key != 0 && {
                    self.refill(&mut b, now);
                    b.tokens < 1.0
                }
            })
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn budget(per_second: f64, burst: u32) -> FailureBudget {
        FailureBudget::new(FailedAuthLimit { per_second, burst })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn a_burst_of_failures_then_refusal_then_refill() {
        let b = budget(2.0, 5);
        let t0 = Instant::now();
        for i in 0..5 {
            assert!(
                !b.exhausted(ip("192.0.2.1"), t0),
                "failure {i} refused too early"
            );
            b.charge(ip("192.0.2.1"), t0);
        }
        assert!(b.exhausted(ip("192.0.2.1"), t0));
        // other addresses are untouched
        assert!(!b.exhausted(ip("192.0.2.2"), t0));
        // half a second at 2/s earns one failure back
        assert!(!b.exhausted(ip("192.0.2.1"), t0 + Duration::from_millis(500)));
        assert_eq!(b.retry_after(), 1);
        assert_eq!(budget(0.1, 5).retry_after(), 10);
    }

    #[test]
    fn ipv6_is_budgeted_by_its_64() {
        let b = budget(1.0, 2);
        let t0 = Instant::now();
        b.charge(ip("2001:db8:1:2::1"), t0);
        b.charge(ip("2001:db8:1:2::ffff"), t0);
        assert!(b.exhausted(ip("2001:db8:1:2::1234"), t0));
        assert!(!b.exhausted(ip("2001:db8:1:3::1"), t0));
        // v4-mapped v6 is the v4 address
        b.charge(ip("192.0.2.9"), t0);
        b.charge(ip("::ffff:192.0.2.9"), t0);
        assert!(b.exhausted(ip("192.0.2.9"), t0));
    }

    #[test]
    fn unknown_addresses_and_successes_are_free() {
        let b = budget(1.0, 1);
        let t0 = Instant::now();
        b.charge(None, t0);
        assert!(!b.exhausted(None, t0));
        assert_eq!(b.exhausted_slots(), 0);
        b.charge(ip("192.0.2.1"), t0);
        assert_eq!(b.exhausted_slots(), 1);
    }

    #[test]
    fn memory_is_bounded_and_an_active_slot_is_shared() {
        let b = budget(0.001, 3);
        let t0 = Instant::now();
        // far more addresses than slots: the table does not grow
        for i in 0..(SLOTS as u32 * 4) {
            b.charge(Some(IpAddr::V4(i.into())), t0);
        }
        assert_eq!(b.slots.len(), SLOTS);
        // every slot is taken by some address that failed: a new address shares a drained bucket
        let drained = (0..64u32)
            .filter(|i| b.exhausted(Some(IpAddr::V4((0xC633_6400 + i).into())), t0))
            .count();
        assert!(drained > 0, "new addresses all found fresh buckets");
    }
}

//! The verified-token cache: a returning reader costs a hash lookup, not a
//! signature check.
//!
//! Only successful verifications are cached, keyed by the token's fingerprint:
//! a keyed 128-bit SipHash of all its bytes, under a key drawn at random for
//! each cache ([`front`]). A forged or malleated token has another fingerprint
//! (but for a 2^-128 chance, for a client who does not know the key), so it
//! just misses and is verified (and refused) in full: nothing a client sends
//! can poison an entry, or be answered by another token's. On a hit the entry is
//! re-checked against the *current* inputs: `exp`/`nbf` with the policy's
//! leeway at `now`, and the key that verified it must still be in the key set
//! with the same [`VerifyKey::id`](crate::auth::keys::VerifyKey::id) — so a
//! token never outlives its key, whether the key was removed or replaced
//! under the same `kid`.
//!
//! The [`Policy`] is assumed fixed for a cache's lifetime (Tollgate changes
//! it only by restarting); if it ever changes, call [`TokenCache::clear`].
//!
//! Revocation hook: the cache does not know about revoked sessions. The
//! caller checks `claims.sid` against its revocation list after
//! [`TokenCache::verify`] returns, on hits and misses alike; on revocation it
//! may also call [`TokenCache::invalidate_sid`] to drop the entries early.
//!
//! Bound: never more than `capacity` entries. A slot is reserved (atomic
//! counter) before each insert, so concurrent inserts cannot overshoot. When
//! full, one inserter (the others skip caching meanwhile) makes a pass over
//! one of [`SEGMENTS`] segments of the map (round robin). The pass is a CLOCK
//! (second chance): it drops the segment's expired entries, and of those not
//! hit since the previous pass over it one in `EVICT_ONE_IN` — every eighth,
//! counted from an offset that moves on each pass, so that the drops fall
//! evenly over the segment's fixed order (dropping the first ones left stale
//! entries late in the order for good, and returning readers' new entries
//! early in it went before their reader returned) — and clears the mark of
//! the rest. So a reader who returns more
//! often than passes come round keeps its entry through a flood of tokens
//! seen once (new readers, or someone minting with a stolen key); with one in
//! eight dropped blindly, as before, every pass could cost a returning reader
//! a signature check. The bound on drops keeps each pass's frees as few as
//! before: dropping every unmarked entry of a segment at once (thousands in a
//! full cache) raised the p99 of the never-seen-token row of
//! `benches/peers/run.sh` from 5.3–5.9 to 7.7–8.0 ms once the cache was full
//! (issue 20 closing note). One
//! segment per pass: ~n/SEGMENTS entries scanned, so the request that pays
//! waits 1/SEGMENTS as long as for a whole-map pass (one over 100,000 entries
//! stalled the event loop long enough to double that p99: issue 7 closing
//! note). If every entry of every segment was hit since its last pass, one
//! round frees nothing and the new token is simply not cached — it was
//! verified, so the request is unaffected; the next round finds the marks
//! cleared. Inserts need a valid signature, so only genuine tokens can ever
//! fill it.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::auth::jwt::{self, Claims, Denial, Policy};
use crate::auth::keys::KeySet;
use crate::auth::Verified;

mod front;

use front::{Fingerprint, FingerprintHash, Front, Held};

/// An eviction pass drops one in this many of its segment's unmarked entries (expired ones
/// aside).
const EVICT_ONE_IN: usize = 8;
/// The map is split by fingerprint into this many segments; an eviction pass
/// covers one of them.
pub const SEGMENTS: usize = 16;

/// One segment of the cache. Its keys are fingerprints, not tokens: a lookup compares 16
/// bytes instead of loading the stored token (another allocation, a cache miss when 10,000
/// readers take turns) to compare ~250, nothing hashes the token again (the map hashed its
/// last 32 bytes with a keyed `ahash`), and an entry is ~250 bytes smaller. `cargo bench
/// --bench verify -- rotating`, 10,000 readers whose tokens carry a `sid` (which the front
/// does not hold) in turn, medians of three runs on a noisy machine (issue 20 closing note,
/// thirteenth session): after a flood, 609 ns a lookup keyed by token (394-722) and 368 ns
/// keyed by fingerprint (343-416); in a cache holding only readers, 337 ns (301-368) and 239
/// ns (218-331). Readers the front answers moved within the noise.
type Segment = DashMap<Fingerprint, Entry, FingerprintHash>;

/// A cached token's slot. What a hit checks is copied here, beside the key in the map's own
/// table, so that checking it follows no pointer: the claims are another allocation, and with
/// 10,000 readers in turn each pointer followed is a cache miss (`perf` on the rotating-token
/// benchmark after a flood of never-seen tokens: 15 % of the node's time went to the lookup
/// when the hit read `exp`, `nbf` and `kid` from the claims).
///
/// Tried for that row and not kept (issue 20 closing note, eleventh session; TLS rows of
/// `benches/peers/run.sh` by hand, builds interleaved): the token, its claims and this slot in
/// one allocation, the map holding a pointer to it, changed nothing (8.85 against 8.80 µs of
/// server CPU per request); with a per-thread memo of 32,768 such pointers in front of the map
/// as well, the map's two misses became the memo's and the block's, and the row's ratio to the
/// public hit moved by 0.00 to 0.05 over three sets, within the noise. Answering every lookup
/// with one fixed token (a build for measuring only) made the row as fast as the one-token row:
/// what is left is the cold memory that a returning reader among 10,000 touches. Kept instead,
/// twelfth session: the [`front`], which decides such a reader from one slot found by a keyed
/// fingerprint of the token, with no exact comparison to load the stored token for.
struct Entry {
    claims: Arc<Claims>,
    /// Whether a slot may answer for it ([`Verified::plain_enough`]).
    plain: bool,
    /// `exp + leeway` at insert time: a hit after it is stale; [`TokenCache::sweep`] drops it.
    expires_at: u64,
    /// `nbf - leeway` at insert time (0 without `nbf`): a hit before it is stale.
    valid_from: u64,
    /// The [`KeySet::generation`] under which the entry's key was last seen live: a hit under
    /// that set needs no key lookup.
    keys_generation: AtomicU64,
    /// Hit since the last eviction pass over its segment (the CLOCK mark).
    used: AtomicBool,
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that ran a full verification (success or denial).
    pub misses: u64,
    /// Entries dropped to make room (not counting expiry sweeps).
    pub evictions: u64,
}

/// Where a cache counts its hits, misses and evictions: the node's
/// `tollgate_token_cache_lookups_total{result}` and `tollgate_token_cache_evictions_total`
/// ([`crate::metrics::Metrics`]), or counters of its own ([`Default`], registered nowhere).
#[derive(Clone)]
pub struct CacheCounters {
    /// Lookups answered from the cache.
    pub hits: prometheus::IntCounter,
    /// Lookups not cached: verified in full, or refused by the failed-credential budget.
    pub misses: prometheus::IntCounter,
    /// Entries dropped to make room (expired ones aside).
    pub evictions: prometheus::IntCounter,
}

impl CacheCounters {
    /// The counters of the node's families: `lookups{result="hit"|"miss"}` and `evictions`.
    pub fn in_families(
        lookups: &prometheus::IntCounterVec,
        evictions: &prometheus::IntCounter,
    ) -> CacheCounters {
        CacheCounters {
            hits: lookups.with_label_values(&["hit"]),
            misses: lookups.with_label_values(&["miss"]),
            evictions: evictions.clone(),
        }
    }
}

impl Default for CacheCounters {
    fn default() -> CacheCounters {
        // (a counter with a valid name and help cannot fail to build)
        let counter = |name| prometheus::IntCounter::new(name, "token cache").expect("valid name");
        CacheCounters {
            hits: counter("hits"),
            misses: counter("misses"),
            evictions: counter("evictions"),
        }
    }
}

/// One connection's memory of the last token it presented and that token's fingerprint, so
/// that a connection repeating its token (a browser sends its cookie or bearer on every request
/// of a connection) is not fingerprinted again: an exact comparison of the bytes instead of
/// SipHash over all of them (1,141 instructions of an HTTP/2 bearer hit's 17,649).
/// `benches/peers/instructions.sh` (issue 20 closing note, thirteenth session): 1,030 to 1,070
/// instructions fewer a request in every row that repeats a token (bearer, cookie, media;
/// plaintext, TLS, HTTP/2), 134 to 183 more in the rotating rows, where every request of a
/// connection brings another token (the comparison, the copy, the lock). It holds only
/// what the fingerprint is a pure function of, checked byte for byte, and which cache's key it
/// was taken under: it decides nothing, so a stale or foreign memory only costs a fingerprint.
/// The connection loops keep one per connection ([`TokenCache::verify_remembering`]).
#[derive(Debug, Default)]
pub struct TokenMemo(Mutex<Remembered>);

#[derive(Debug, Default)]
struct Remembered {
    token: Vec<u8>,
    /// `token`'s fingerprint, and the [`TokenCache::id`] whose key it was taken under.
    fp: Option<(u64, Fingerprint)>,
}

/// Longest token a [`TokenMemo`] keeps (an ES256 token is ~250 bytes, RS256 ~600).
const MEMO_MAX: usize = 2048;

/// Where [`TokenCache::id`]s come from.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

/// A bounded, concurrent cache of verified tokens.
pub struct TokenCache {
    /// This cache among the process's ([`TokenMemo`] remembers fingerprints per cache key).
    id: u64,
    /// In front of the map: a returning reader's token decided by one slot ([`front`]).
    front: Front,
    segments: Box<[Segment]>,
    /// The segment the next eviction pass covers.
    next_evict: AtomicUsize,
    /// The segment the next [`TokenCache::sweep_step`] covers.
    next_sweep: AtomicUsize,
    capacity: usize,
    /// Reserved slots; always `>= map.len()` and `<= capacity`.
    reserved: AtomicUsize,
    evicting: AtomicBool,
    counters: CacheCounters,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .field("stats", &self.stats())
            .finish()
    }
}

impl TokenCache {
    /// A cache holding at most `capacity` tokens (0 disables caching).
    pub fn new(capacity: usize) -> TokenCache {
        TokenCache::with_counters(capacity, CacheCounters::default())
    }

    /// [`TokenCache::new`], counting into `counters`.
    pub fn with_counters(capacity: usize, counters: CacheCounters) -> TokenCache {
        let front = Front::new(capacity);
        // Fingerprints under a key a client could know could be made to collide: then cache
        // nothing (every token verified in full) rather than key the map by them.
        let capacity = if front.keyed() { capacity } else { 0 };
        TokenCache {
            id: NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed),
            front,
            segments: (0..SEGMENTS)
                .map(|_| DashMap::with_hasher(FingerprintHash))
                .collect(),
            next_evict: AtomicUsize::new(0),
            next_sweep: AtomicUsize::new(0),
            capacity,
            reserved: AtomicUsize::new(0),
            evicting: AtomicBool::new(false),
            counters,
        }
    }

    /// Returns the cached token if present, still within exp(+leeway)/nbf at
    /// `now`, and the key that verified it is still in `keys` with the same
    /// `id`; otherwise verifies with [`jwt::verify`] and, on success, inserts.
    ///
    /// A hit takes no allocation: a slot's copy of the subscriptions ([`Verified::Plain`],
    /// for a token that restricts nothing else), or a lookup by fingerprint and an `Arc`
    /// clone.
    pub fn verify(
        &self,
        token: &str,
        keys: &KeySet,
        policy: &Policy,
        now_unix: u64,
    ) -> Result<Verified, Denial> {
        self.verify_gated(token, keys, policy, now_unix, || true)
    }

    /// [`TokenCache::verify`], asking `may_verify` before a token that is not cached is
    /// verified: `false` refuses it with [`Denial::Throttled`] without the signature check (the
    /// failed-credential budget, [`crate::budget`]). Cached tokens never ask.
    pub fn verify_gated(
        &self,
        token: &str,
        keys: &KeySet,
        policy: &Policy,
        now_unix: u64,
        may_verify: impl FnOnce() -> bool,
    ) -> Result<Verified, Denial> {
        self.verify_remembering(token.as_bytes(), None, keys, policy, now_unix, may_verify)
    }

    /// [`TokenCache::verify_gated`], taking the token's fingerprint from `memo` when the memo
    /// holds this very token (the connection presented it last), and leaving it there.
    ///
    /// The token as bytes: a cached one (its fingerprint found) is byte for byte a token that
    /// verified, so only a token about to be verified is checked for UTF-8 (`Malformed` if it
    /// is not): ~150 instructions of every hit with a 250-byte token (callgrind).
    pub fn verify_remembering(
        &self,
        token: &[u8],
        memo: Option<&TokenMemo>,
        keys: &KeySet,
        policy: &Policy,
        now_unix: u64,
        may_verify: impl FnOnce() -> bool,
    ) -> Result<Verified, Denial> {
        let fp = self.fingerprint(token, memo);
        if let Some(names) = self.front.find(fp, now_unix, keys.generation()) {
            self.counters.hits.inc();
            return Ok(Verified::Plain(names));
        }
        let map = self.segment(fp);
        let found = map.view(&fp, |&fp, e| {
            let valid = still_valid(e, keys, now_unix);
            if valid && !e.used.load(Ordering::Relaxed) {
                e.used.store(true, Ordering::Relaxed);
            }
            if valid && e.plain {
                // under the shard's read lock: no removal can come between (`front`)
                self.front.fill(
                    fp,
                    &Held {
                        expires_at: e.expires_at,
                        valid_from: e.valid_from,
                        keys_generation: keys.generation(),
                        names: e.claims.subs_packed.clone(),
                    },
                );
            }
            (Arc::clone(&e.claims), valid)
        });
        if let Some((claims, valid)) = found {
            if valid {
                self.counters.hits.inc();
                return Ok(Verified::Claims(claims));
            }
            // Stale: drop exactly this entry (not one a racing thread just
            // re-inserted), then fall through to a full verification.
            if map
                .remove_if(&fp, |&fp, e| {
                    let stale = Arc::ptr_eq(&e.claims, &claims);
                    if stale {
                        self.front.forget(fp);
                    }
                    stale
                })
                .is_some()
            {
                self.reserved.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.counters.misses.inc();
        if !may_verify() {
            return Err(Denial::Throttled);
        }
        let token = std::str::from_utf8(token).map_err(|_| Denial::Malformed)?;
        let claims = Arc::new(jwt::verify(token, keys, policy, now_unix)?);
        self.insert(fp, &claims, keys, policy, now_unix);
        Ok(Verified::Claims(claims))
    }

    fn insert(
        &self,
        fp: Fingerprint,
        claims: &Arc<Claims>,
        keys: &KeySet,
        policy: &Policy,
        now: u64,
    ) {
        let reserved = self.reserve_slot() || (self.evict(now) && self.reserve_slot());
        if !reserved {
            return;
        }
        let entry = Entry {
            claims: Arc::clone(claims),
            plain: Verified::plain_enough(claims),
            expires_at: claims.exp.saturating_add(policy.leeway_secs),
            valid_from: claims
                .nbf
                .map_or(0, |nbf| nbf.saturating_sub(policy.leeway_secs)),
            keys_generation: AtomicU64::new(keys.generation()),
            used: AtomicBool::new(false),
        };
        if self.segment(fp).insert(fp, entry).is_some() {
            // Replaced a concurrent insert of the same token: one slot freed.
            self.front.forget(fp);
            self.reserved.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Take one slot if the cache is not full.
    fn reserve_slot(&self) -> bool {
        self.reserved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// One eviction pass (the module's CLOCK); `false` if another thread is already running one.
    fn evict(&self, now: u64) -> bool {
        if self.capacity == 0
            || self
                .evicting
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        let (mut expired, mut dropped) = (0usize, 0usize);
        // One segment, or the next ones while a segment frees nothing (empty, or every
        // entry hit since the last pass): never more than one full round.
        for _ in 0..SEGMENTS {
            let pass = self.next_evict.fetch_add(1, Ordering::Relaxed);
            let segment = &self.segments[pass % SEGMENTS];
            // every EVICT_ONE_IN-th unmarked entry, from this pass's offset (module doc;
            // `stale_entries_give_way_to_returning_readers`)
            let mut unmarked = pass / SEGMENTS % EVICT_ONE_IN;
            segment.retain(|&fp, e| {
                if now > e.expires_at {
                    expired += 1;
                    self.front.forget(fp);
                    return false;
                }
                // hit through the map or through its slot (both marks cleared)
                if std::mem::take(e.used.get_mut()) | (e.plain && self.front.take_used(fp)) {
                    return true;
                }
                unmarked += 1;
                if !unmarked.is_multiple_of(EVICT_ONE_IN) {
                    return true;
                }
                dropped += 1;
                self.front.forget(fp);
                false
            });
            if expired + dropped > 0 {
                break;
            }
        }
        self.reserved.fetch_sub(expired + dropped, Ordering::AcqRel);
        self.counters.evictions.inc_by(dropped as u64);
        self.evicting.store(false, Ordering::Release);
        true
    }

    /// Number of cached tokens (summed shard by shard, so only approximate
    /// while other threads insert and evict; never above `capacity` at rest).
    pub fn len(&self) -> usize {
        self.segments.iter().map(DashMap::len).sum()
    }

    /// True if nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.segments.iter().all(DashMap::is_empty)
    }

    /// The configured bound.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Drop every entry (e.g. after a policy change).
    pub fn clear(&self) {
        self.remove_where(|_| true);
        self.front.clear();
    }

    /// Remove entries whose `exp` (plus the leeway in force when they were
    /// inserted) has passed; returns how many. Called periodically by a
    /// background task; hits re-check expiry anyway, this only frees memory.
    pub fn sweep(&self, now_unix: u64) -> usize {
        self.remove_where(|e| now_unix > e.expires_at)
    }

    /// [`TokenCache::sweep`] over one segment, the next one on each call (round robin), for a
    /// periodic task: a full sweep of a full cache is a pass over every entry, which takes the
    /// CPU from the request path for that long on a machine with few cores.
    pub fn sweep_step(&self, now_unix: u64) -> usize {
        let i = self.next_sweep.fetch_add(1, Ordering::Relaxed) % SEGMENTS;
        self.remove_from(&self.segments[i], |e| now_unix > e.expires_at)
    }

    /// Drop cached entries for session `sid` (revocation); returns how many.
    /// Callers must still check revocation on every request: a token
    /// verified again after this call is cached again.
    pub fn invalidate_sid(&self, sid: &str) -> usize {
        self.remove_where(|e| e.claims.sid.as_deref() == Some(sid))
    }

    /// Hit/miss/eviction counters since creation.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.counters.hits.get(),
            misses: self.counters.misses.get(),
            evictions: self.counters.evictions.get(),
        }
    }

    fn remove_where(&self, mut pred: impl FnMut(&Entry) -> bool) -> usize {
        self.segments
            .iter()
            .map(|map| self.remove_from(map, &mut pred))
            .sum()
    }

    /// Drop the entries of one segment that match `pred`, and give back their slots.
    fn remove_from(&self, map: &Segment, mut pred: impl FnMut(&Entry) -> bool) -> usize {
        let mut removed = 0usize;
        map.retain(|&fp, e| {
            if pred(e) {
                removed += 1;
                self.front.forget(fp);
                false
            } else {
                true
            }
        });
        self.reserved.fetch_sub(removed, Ordering::AcqRel);
        removed
    }
}

impl TokenCache {
    /// The token's fingerprint: from `memo` if it holds this token under this cache's key,
    /// else computed (and remembered there).
    fn fingerprint(&self, token: &[u8], memo: Option<&TokenMemo>) -> Fingerprint {
        // (a connection's memo is never contended; a poisoned one is only not used)
        let Some(mut m) = memo.and_then(|m| m.0.try_lock().ok()) else {
            return self.front.fingerprint(token);
        };
        if let Some((_, fp)) =
            m.fp.filter(|&(cache, _)| cache == self.id && *m.token == *token)
        {
            return fp;
        }
        let fp = self.front.fingerprint(token);
        if token.len() <= MEMO_MAX {
            m.token.clear();
            m.token.extend_from_slice(token);
            m.fp = Some((self.id, fp));
        }
        fp
    }

    /// A fingerprint's segment (segments only partition eviction and sweep work).
    fn segment(&self, fp: Fingerprint) -> &Segment {
        &self.segments[fp.part(SEGMENTS)]
    }
}

/// The hit-path re-check: time window and key liveness. The key is looked up only when the
/// key set changed since the entry last saw its key (a reload): then the key must still be
/// there with the same [`VerifyKey::id`](crate::auth::keys::VerifyKey::id), and the entry
/// remembers the new set.
fn still_valid(e: &Entry, keys: &KeySet, now: u64) -> bool {
    if now > e.expires_at || now < e.valid_from {
        return false;
    }
    let generation = keys.generation();
    if e.keys_generation.load(Ordering::Relaxed) == generation {
        return true;
    }
    let live = keys.get(&e.claims.kid).map(|k| k.id) == Some(e.claims.key_id);
    if live {
        e.keys_generation.store(generation, Ordering::Relaxed);
    }
    live
}

#[cfg(test)]
#[path = "cache_tests.rs"]
mod tests;

#[cfg(test)]
mod memo_tests;

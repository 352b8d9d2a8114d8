//! The token cache's front: one 128-byte slot per fingerprint, in front of the map, so that a
//! returning reader's token is decided by the memory of one slot instead of the map's control
//! bytes, bucket, stored token and claims, each a cache miss when 10,000 readers take turns.
//!
//! A slot holds what the hit checks of a token that restricts nothing but its subscriptions
//! ([`Verified::plain_enough`](crate::auth::Verified::plain_enough)): the time window, the key
//! set generation under which its key was last seen live, and the subscriptions. It is found
//! by the token's **fingerprint**, SipHash-2-4 with a 128-bit output under a key drawn from
//! the system's random source for each cache and never shown; a slot answers only the exact
//! fingerprint it was filled with. A token that is not byte for byte a cached one matches a
//! slot with probability 2^-128 per slot: an exact comparison of tokens is replaced by a keyed
//! PRF, the way a MAC replaces a comparison with a stored secret. The map behind the front is
//! keyed by the same fingerprint (thirteenth session; before, by the token, compared in full).
//!
//! A slot is only an accelerator of the map, and never answers for a token the map does not
//! hold (as of its last removal):
//! - it is filled only from a map hit, while the map's shard is read-locked, so the entry is
//!   there;
//! - every removal from the map ([`TokenCache`](super::TokenCache): eviction, sweep, a stale
//!   hit, `invalidate_sid`, `clear`) forgets the entry's slot, under the shard's write lock.
//!
//! Each slot is a seqlock: a writer makes the sequence odd, writes, makes it even; a reader
//! that sees it odd, or changed across its reads, does not use what it read. Writers that fill
//! skip a slot another writer holds; writers that forget wait for it.
//!
//! Why, and what it costs (issue 20 closing note, twelfth session):
//! - `cargo bench --bench verify -- rotating`, 10,000 readers in turn: 178 ns a lookup after a
//!   flood of never-seen tokens, against 375 ns through the map alone; but 177 ns against 71 ns
//!   while the map stays in the core's caches. The fingerprint is most of that: SipHash-2-4
//!   over a 250-byte ES256 token takes ~100 ns here (SipHash-1-3 ~57 ns, HMAC-SHA256 ~340 ns,
//!   PMAC-AES128 of the `pmac` crate ~210 ns).
//! - The node under `valgrind --tool=callgrind --cache-sim=yes --D1=32768,8,64
//!   --LL=1048576,16,64` (this core's L1d and L2), plaintext, one connection, 20,000 requests
//!   over the 10,000 rotating tokens after two passes over them: 2.9 last-level read misses
//!   per request, against 10.0 through the map (one token: 0.1 either way); 21,600
//!   instructions per request against 20,000 (the fingerprint).
//! - On the wall clock the TLS rows of `benches/peers/run.sh` by hand moved within their noise
//!   on the machine of that session (cells of one build 10.5 to 12 µs of server CPU apart).

use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::auth::PackedNames;

/// Most slots of one front: 16 MiB, allocated with the cache. A larger cache's tokens share
/// slots (the last one filled answers), and those that lose theirs are answered by the map.
pub const MAX_SLOTS: usize = 1 << 17;

/// A token's fingerprint: its keyed 128-bit SipHash. It is the map's key too, hashed as its
/// second half ([`FingerprintHash`]; the first picks the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Fingerprint(u64, u64);

impl std::hash::Hash for Fingerprint {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.1);
    }
}

impl Fingerprint {
    /// Which of `n` parts (segments of the map) the fingerprint falls in.
    pub fn part(self, n: usize) -> usize {
        (self.1 >> 32) as usize % n
    }
}

/// The map's hasher: a fingerprint is already a keyed PRF's output, uniformly spread and
/// unknown to clients, so its bits are its hash; hashing them again (the map hashed the
/// token's last 32 bytes with a keyed `ahash`) would only cost time.
#[derive(Clone, Copy, Default)]
pub(super) struct FingerprintHash;

impl std::hash::BuildHasher for FingerprintHash {
    type Hasher = FingerprintHasher;
    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher(0)
    }
}

/// See [`FingerprintHash`].
pub(super) struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
    /// (not used by [`Fingerprint`]'s `Hash`; folds any other input all the same)
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// What a slot holds of its token's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Held {
    /// `exp + leeway`: the slot answers up to this second.
    pub expires_at: u64,
    /// `nbf - leeway` (0 without `nbf`): the slot answers from this second.
    pub valid_from: u64,
    /// The key set generation under which the token's key was last seen live.
    pub keys_generation: u64,
    /// The token's subscriptions.
    pub names: PackedNames,
}

/// One slot: two cache lines, the first holding the sequence, the fingerprint and the times.
#[repr(C, align(128))]
#[derive(Default)]
struct Slot {
    /// Even: at rest; odd: being written.
    seq: AtomicU64,
    fp: [AtomicU64; 2],
    expires_at: AtomicU64,
    valid_from: AtomicU64,
    keys_generation: AtomicU64,
    /// Hit since the last eviction pass looked (the map's CLOCK mark for slot hits); not
    /// covered by `seq`: a mark on the wrong token only keeps an entry one pass longer.
    used: AtomicBool,
    names: [AtomicU64; 6],
}

/// The front of one cache.
pub(super) struct Front {
    slots: Box<[Slot]>,
    key: (u64, u64),
    /// The key was drawn from the system's random source.
    keyed: bool,
}

impl Front {
    /// The front of a cache of `capacity` tokens: a slot per token, rounded up to a power of
    /// two, at most [`MAX_SLOTS`] (none for 0).
    pub fn new(capacity: usize) -> Front {
        let mut key = [0u8; 16];
        let random = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key);
        // Without a random key the fingerprint would be a plain hash: no front then (and the
        // cache, whose map it keys too, holds nothing: `keyed`).
        let n = if capacity == 0 || random.is_err() {
            0
        } else {
            capacity.min(MAX_SLOTS).next_power_of_two()
        };
        let half = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
        Front {
            slots: (0..n).map(|_| Slot::default()).collect(),
            key: (half(&key[..8]), half(&key[8..])),
            keyed: random.is_ok(),
        }
    }

    /// Whether fingerprints are keyed at random, as the map's keys must be.
    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// The token's fingerprint.
    pub fn fingerprint(&self, token: &[u8]) -> Fingerprint {
        let mut h = SipHasher24::new_with_keys(self.key.0, self.key.1);
        std::hash::Hasher::write(&mut h, token);
        let h = h.finish128();
        Fingerprint(h.h1, h.h2)
    }

    fn slot(&self, fp: Fingerprint) -> Option<&Slot> {
        let mask = self.slots.len().checked_sub(1)?;
        Some(&self.slots[fp.0 as usize & mask])
    }

    /// What the slot of `fp` holds for it, read consistently; `None` if it holds another
    /// fingerprint or is being written (for tests: the cache asks [`Front::find`]).
    #[cfg(test)]
    pub fn read(&self, fp: Fingerprint) -> Option<Held> {
        read(self.slot(fp)?, fp)
    }

    /// The subscriptions of `fp`'s token if its slot answers at `now` under key set
    /// `keys_generation`; marks the slot hit.
    pub fn find(&self, fp: Fingerprint, now: u64, keys_generation: u64) -> Option<PackedNames> {
        let slot = self.slot(fp)?;
        let held = read(slot, fp)?;
        if now > held.expires_at || now < held.valid_from || held.keys_generation != keys_generation
        {
            return None;
        }
        if !slot.used.load(Ordering::Relaxed) {
            slot.used.store(true, Ordering::Relaxed);
        }
        Some(held.names)
    }

    /// Fill `fp`'s slot; skipped if another writer holds it. Only from a map hit on the entry,
    /// with its shard read-locked (module doc).
    pub fn fill(&self, fp: Fingerprint, held: &Held) {
        let Some(slot) = self.slot(fp) else {
            return;
        };
        let seq = slot.seq.load(Ordering::Relaxed);
        if seq & 1 == 1
            || slot
                .seq
                .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        fence(Ordering::Release);
        slot.fp[0].store(fp.0, Ordering::Relaxed);
        slot.fp[1].store(fp.1, Ordering::Relaxed);
        slot.expires_at.store(held.expires_at, Ordering::Relaxed);
        slot.valid_from.store(held.valid_from, Ordering::Relaxed);
        slot.keys_generation
            .store(held.keys_generation, Ordering::Relaxed);
        for (w, v) in slot.names.iter().zip(held.names.to_words()) {
            w.store(v, Ordering::Relaxed);
        }
        slot.used.store(false, Ordering::Relaxed);
        slot.seq.store(seq + 2, Ordering::Release);
    }

    /// Empty `fp`'s slot if it holds `fp` (an entry left the map), waiting for a writer that
    /// holds it.
    pub fn forget(&self, fp: Fingerprint) {
        let Some(slot) = self.slot(fp) else {
            return;
        };
        let seq = lock(slot);
        if slot.fp[0].load(Ordering::Relaxed) == fp.0 && slot.fp[1].load(Ordering::Relaxed) == fp.1
        {
            empty(slot);
        }
        slot.seq.store(seq + 2, Ordering::Release);
    }

    /// Whether `fp`'s slot holds it and was hit since the last call; clears the mark.
    pub fn take_used(&self, fp: Fingerprint) -> bool {
        self.slot(fp)
            .is_some_and(|s| read(s, fp).is_some() && s.used.swap(false, Ordering::Relaxed))
    }

    /// Empty every slot.
    pub fn clear(&self) {
        for slot in self.slots.iter() {
            let seq = lock(slot);
            empty(slot);
            slot.seq.store(seq + 2, Ordering::Release);
        }
    }
}

/// What `slot` holds for `fp`, read consistently (the seqlock's reader side).
fn read(slot: &Slot, fp: Fingerprint) -> Option<Held> {
    let seq = slot.seq.load(Ordering::Acquire);
    if seq & 1 == 1
        || slot.fp[0].load(Ordering::Relaxed) != fp.0
        || slot.fp[1].load(Ordering::Relaxed) != fp.1
    {
        return None;
    }
    let expires_at = slot.expires_at.load(Ordering::Relaxed);
    let valid_from = slot.valid_from.load(Ordering::Relaxed);
    let keys_generation = slot.keys_generation.load(Ordering::Relaxed);
    let words = std::array::from_fn(|i| slot.names[i].load(Ordering::Relaxed));
    fence(Ordering::Acquire);
    if slot.seq.load(Ordering::Relaxed) != seq {
        return None;
    }
    Some(Held {
        expires_at,
        valid_from,
        keys_generation,
        names: PackedNames::from_words(words)?,
    })
}

/// Empty a `slot` its writer holds: no fingerprint is (0, 0) but by a 2^-128 chance, and then
/// its window is empty.
fn empty(slot: &Slot) {
    slot.fp[0].store(0, Ordering::Relaxed);
    slot.fp[1].store(0, Ordering::Relaxed);
    slot.expires_at.store(0, Ordering::Relaxed);
    slot.valid_from.store(u64::MAX, Ordering::Relaxed);
}

/// Take `slot`'s sequence for writing, waiting while another writer holds it (a fill is a
/// dozen stores); returns the even value taken.
fn lock(slot: &Slot) -> u64 {
    let mut spins = 0u32;
    loop {
        let seq = slot.seq.load(Ordering::Relaxed);
        if seq & 1 == 0
            && slot
                .seq
                .compare_exchange_weak(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            fence(Ordering::Release);
            return seq;
        }
        spins += 1;
        if spins.is_multiple_of(64) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
#[path = "front_tests.rs"]
mod tests;

//! The in-memory cache tier: a size-bounded [`pingora_cache::Storage`] on TinyUFO.
//!
//! Why not `pingora_cache::MemCache`: it is a test store (unbounded) and every hit deserializes
//! the stored header blob and copies the body. Here a hit clones the *parsed* response header and
//! hands out the body as a shared [`Bytes`] slice, so the hit path does no parsing and no body
//! copy. Eviction is TinyUFO's (S3-FIFO + TinyLFU); its weights are `u16`, so objects are
//! weighed in KiB, which caps one object at 64 MiB.
//!
//! Purge needs "every variant, every host, every query of this path". The cache key is a hash,
//! so the store keeps a small index from normalized path to the keys stored under it; the path is
//! read back from the key's primary bytes on a fill (see [`crate::cache::key::path_of`]).

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;
use tinyufo::TinyUfo;

use super::body_file::BodyFile;
use super::head::StoredHead;
use super::key::Variant;
use super::path_index::PathIndex;

/// TinyUFO weighs objects in `u16` units; one unit is this many bytes.
const WEIGHT_UNIT: u64 = 1024;
/// The largest object the memory tier can hold (`u16::MAX` weight units).
pub const MAX_OBJECT_BYTES: u64 = WEIGHT_UNIT * u16::MAX as u64;
/// What an object keeps alive besides its body and head, counted against the size bound so
/// that `max_size` bounds memory: the `Stored` record and its slot, the key's path, TinyUFO's
/// bucket and queue entries, the path index entry, and the allocator's per-allocation cost.
/// Measured: filling 50,000 distinct objects grew the node's RSS by body + head + 690..870
/// bytes per object for 200-byte to 4 KiB bodies (release build, `pingora.threads: 1`; issue
/// 19's closing note has the command).
const OBJECT_OVERHEAD: usize = 768;

/// Gauges and counters the store keeps up to date (labelled `tier="memory"` by the caller).
#[derive(Clone)]
pub struct TierMetrics {
    /// Objects currently stored.
    pub objects: prometheus::IntGauge,
    /// Bytes currently stored.
    pub bytes: prometheus::IntGauge,
    /// Objects evicted by the size bound.
    pub evictions: prometheus::IntCounter,
}

/// The metadata of a stored response: its head, kept once and compactly (see
/// [`super::head`]), and the times and flags pingora's [`CacheMeta`] carries.
struct StoredMeta {
    head: StoredHead,
    times: Times,
}

/// The times and flags of a [`CacheMeta`].
#[derive(Clone, Copy)]
struct Times {
    fresh_until: SystemTime,
    updated: SystemTime,
    stale_while_revalidate_sec: u32,
    stale_if_error_sec: u32,
    variance: Option<HashBinary>,
    epoch_override: Option<SystemTime>,
}

impl Times {
    fn of(meta: &CacheMeta) -> Times {
        Times {
            fresh_until: meta.fresh_until(),
            updated: meta.updated(),
            stale_while_revalidate_sec: meta.stale_while_revalidate_sec(),
            stale_if_error_sec: meta.stale_if_error_sec(),
            variance: meta.variance(),
            epoch_override: meta.epoch_override(),
        }
    }
}

impl StoredMeta {
    /// `meta` of an object of `variant` whose body is `body_len` bytes.
    fn from_meta(meta: &CacheMeta, variant: Variant, body_len: usize) -> StoredMeta {
        StoredMeta {
            head: StoredHead::new(meta.response_header(), variant, body_len),
            times: Times::of(meta),
        }
    }

    /// Rebuild a [`CacheMeta`]. `updated` is passed as the creation time so that `Age` counts
    /// from the last (re)validation, as pingora's own meta does. `None` if the stored head does
    /// not parse back (never for a head this tier wrote; the lookup is then a miss).
    fn to_meta(&self) -> Option<CacheMeta> {
        let t = &self.times;
        let mut meta = CacheMeta::new(
            t.fresh_until,
            t.updated,
            t.stale_while_revalidate_sec,
            t.stale_if_error_sec,
            self.head.header()?,
        );
        if let Some(v) = t.variance {
            meta.set_variance_key(v);
        }
        if let Some(epoch) = t.epoch_override {
            meta.set_epoch_override(epoch);
        }
        Some(meta)
    }
}

/// One stored object.
struct Stored {
    hash: HashBinary,
    path: Arc<str>,
    meta: StoredMeta,
    body: Bytes,
    /// The sealed file `body` is a map of, for bodies of at least
    /// [`FILE_BODY`](super::body_file::FILE_BODY) bytes (`sendfile` on the hit path).
    file: Option<Arc<BodyFile>>,
    /// Bytes accounted for this object (body + head + bookkeeping).
    size: u64,
}

impl Stored {
    /// An object of `body` with its metadata; `size` accounts for what it keeps alive.
    fn new(
        hash: HashBinary,
        path: Arc<str>,
        meta: StoredMeta,
        body: Bytes,
        file: Option<Arc<BodyFile>>,
    ) -> Stored {
        let size = (body.len() + meta.head.len() + OBJECT_OVERHEAD) as u64;
        Stored {
            hash,
            path,
            meta,
            body,
            file,
            size,
        }
    }
}

/// What TinyUFO holds for a key: the object, or nothing (a tombstone). TinyUFO frees a value
/// it lets go of (replaced or evicted) only after a batch of ~120 retirements on the same
/// thread (its map's epoch-based reclamation), so an object purged or evicted stayed in memory
/// long after the tier stopped counting it. The store empties the slot itself the moment the
/// object leaves (the last reader then frees it); only the small slot waits for reclamation.
type Slot = Arc<arc_swap::ArcSwapOption<Stored>>;

fn slot(stored: Option<Stored>) -> Slot {
    Arc::new(arc_swap::ArcSwapOption::new(stored.map(Arc::new)))
}

/// The memory tier. Create one per process with [`MemoryStore::leak`]: pingora wants
/// `&'static` storage.
pub struct MemoryStore {
    /// An empty [`Slot`] is a tombstone left by a purge. TinyUFO 0.9's `remove` unlinks the
    /// bucket but leaves the key in its FIFO queue; re-adding the key then queues it twice and
    /// the second pop subtracts its weight again, underflowing the weight counters (found by
    /// the randomized purge test). So this store never calls `remove`: a purge overwrites the
    /// slot in place with a weight-1 tombstone, and TinyUFO evicts tombstones like any other
    /// entry.
    ufo: TinyUfo<HashBinary, Slot>,
    /// Serializes every mutation of `ufo` (puts, and therefore evictions), so the in-place
    /// update of an existing key never races an eviction of that key. Mutations happen only on
    /// fills, purges and evictions; hits (`get`) never take this lock.
    writes: parking_lot::Mutex<()>,
    /// normalized path → keys stored under it (every host, query and variant)
    index: PathIndex,
    objects: AtomicU64,
    bytes: AtomicU64,
    max_object_size: u64,
    metrics: Option<TierMetrics>,
}

impl MemoryStore {
    /// A store bounded to `max_size` bytes, refusing objects above `max_object_size`.
    pub fn new(max_size: u64, max_object_size: u64, metrics: Option<TierMetrics>) -> MemoryStore {
        let units = (max_size / WEIGHT_UNIT).max(1) as usize;
        // TinyUFO sizes its frequency sketch by the expected object count; assume ~8 KiB objects.
        let estimated = ((max_size / 8192) as usize).clamp(1024, 4_000_000);
        MemoryStore {
            ufo: TinyUfo::new(units, estimated),
            writes: parking_lot::Mutex::new(()),
            index: PathIndex::default(),
            objects: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_object_size: max_object_size.min(MAX_OBJECT_BYTES),
            metrics,
        }
    }

    /// Leak a store to get the `&'static` reference pingora's cache needs.
    pub fn leak(self) -> &'static MemoryStore {
        Box::leak(Box::new(self))
    }

    /// The largest object this store admits.
    pub fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    /// Objects currently stored.
    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// Bytes currently stored (bodies, headers and bookkeeping).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Remove every object stored under exactly this normalized path (all hosts, queries and
    /// variants). Returns how many objects were removed.
    pub fn purge_path(&self, path: &str) -> usize {
        let hashes = self.index.take(path);
        hashes.iter().filter(|h| self.remove_hash(h)).count()
    }

    /// Remove every object whose normalized path starts with `prefix`.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let paths = self.index.paths_with_prefix(prefix);
        paths.iter().map(|p| self.purge_path(p)).sum()
    }

    /// Replace the object stored under `hash` (if any) with a tombstone; returns the old object.
    fn take(&self, hash: &HashBinary) -> Option<Arc<Stored>> {
        let (old, evicted) = {
            let _w = self.writes.lock();
            let old = self.ufo.get(hash)?.swap(None)?;
            (old, self.ufo.force_put(*hash, slot(None), 1))
        };
        self.account_removed(&old);
        self.account_evicted(evicted);
        Some(old)
    }

    fn remove_hash(&self, hash: &HashBinary) -> bool {
        self.take(hash).is_some()
    }

    fn account_evicted(&self, evicted: Vec<tinyufo::KV<Slot>>) {
        for kv in evicted {
            // emptied now, not when TinyUFO reclaims the slot; tombstones carry nothing
            let Some(old) = kv.data.swap(None) else {
                continue;
            };
            self.account_removed(&old);
            self.index.remove(&old.path, &old.hash);
            if let Some(m) = &self.metrics {
                m.evictions.inc();
            }
        }
    }

    fn account_removed(&self, old: &Stored) {
        self.objects.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(old.size, Ordering::Relaxed);
        self.publish();
    }

    fn publish(&self) {
        if let Some(m) = &self.metrics {
            m.objects.set(self.objects() as i64);
            m.bytes.set(self.bytes() as i64);
        }
    }

    /// Store an object, replacing any previous one under the same key.
    fn insert(&self, stored: Stored) {
        let hash = stored.hash;
        let path = stored.path.clone();
        let size = stored.size;
        let weight = size.div_ceil(WEIGHT_UNIT).clamp(1, u16::MAX as u64) as u16;
        let (old, evicted) = {
            let _w = self.writes.lock();
            let old = self.ufo.get(&hash).and_then(|s| s.swap(None));
            // force_put: a fill that readers are waiting on (cache lock) must become visible to
            // them; TinyLFU admission still ranks it for eviction afterwards. An existing key
            // (a refill, or a tombstone) is updated in place.
            (old, self.ufo.force_put(hash, slot(Some(stored)), weight))
        };
        if let Some(old) = old {
            self.account_removed(&old);
        }
        self.objects.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        // Index after the put: a purge racing with this fill either removes the new object or
        // finds it in the index afterwards; it can never be stored yet unfindable.
        self.index.insert(path, hash);
        self.account_evicted(evicted);
        self.publish();
    }

    /// The objects in this tier (up to `limit`), with whether each is subscriber content: the
    /// hot set a new process loads back from the disk tier ([`crate::cache::tiered`]).
    pub fn hot_set(&self, limit: usize) -> Vec<(HashBinary, bool)> {
        self.index
            .hashes(limit)
            .into_iter()
            .filter_map(|h| self.get(&h).map(|s| (h, s.meta.head.private())))
            .collect()
    }

    /// Store a complete object read from another tier (disk promotion).
    pub fn admit(
        &self,
        hash: HashBinary,
        path: Arc<str>,
        variant: Variant,
        meta: &CacheMeta,
        body: Bytes,
    ) {
        if body.len() as u64 > self.max_object_size {
            return;
        }
        let meta = StoredMeta::from_meta(meta, variant, body.len());
        let (body, file) = match BodyFile::create(std::slice::from_ref(&body), body.len()) {
            Some((mapped, file)) => (mapped, Some(file)),
            // exact size: a body read from disk may sit in a larger buffer
            None => (Bytes::copy_from_slice(&body), None),
        };
        self.insert(Stored::new(hash, path, meta, body, file));
    }

    /// Drop the object under `hash`, if any.
    pub fn forget(&self, hash: &HashBinary) {
        self.remove_hash(hash);
    }

    /// Whether an object (fresh or not) is stored under `hash`.
    pub fn fresh_or_stale_present(&self, hash: &HashBinary) -> bool {
        self.get(hash).is_some()
    }

    fn get(&self, hash: &HashBinary) -> Option<Arc<Stored>> {
        // TinyUFO buckets by a 64-bit hash of the key; compare the full 128-bit key as well.
        self.ufo
            .get(hash)
            .and_then(|s| s.load_full())
            .filter(|s| &s.hash == hash)
    }
}

fn key_path(key: &CacheKey) -> Arc<str> {
    Arc::from(super::key::path_of(key.primary_key()).unwrap_or(""))
}

/// The variant a key was built for (public when it names none).
fn key_variant(key: &CacheKey) -> Variant {
    super::key::variant_of(key.primary_key()).unwrap_or(Variant::Public)
}

#[async_trait]
impl Storage for MemoryStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(stored) = self.get(&key.combined_bin()) else {
            return Ok(None);
        };
        let Some(meta) = stored.meta.to_meta() else {
            return Ok(None);
        };
        let end = stored.body.len();
        let hit = MemoryHit {
            body: stored.body.clone(),
            start: 0,
            end,
            done: false,
        };
        Ok(Some((meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(MemoryMiss {
            store: self,
            hash: key.combined_bin(),
            path: key_path(key),
            variant: key_variant(key),
            pending: Some((meta.response_header_copy(), Times::of(meta))),
            chunks: Vec::new(),
            size: 0,
            abandoned: false,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let hash = target.key().combined_bin();
        Ok(match self.take(&hash) {
            Some(old) => {
                self.index.remove(&old.path, &old.hash);
                PurgeOutcome::Purged(None)
            }
            None => PurgeOutcome::NotFound,
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let hash = key.combined_bin();
        let Some(old) = self.get(&hash) else {
            return Ok(false);
        };
        let meta = StoredMeta::from_meta(meta, key_variant(key), old.body.len());
        self.insert(Stored::new(
            hash,
            old.path.clone(),
            meta,
            old.body.clone(),
            old.file.clone(),
        ));
        Ok(true)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A hit: the whole body (or the sought range) as one shared slice.
struct MemoryHit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for MemoryHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.unwrap_or(len).min(len);
        if start > end {
            return Error::e_explain(ErrorType::InternalError, "seek range out of bounds");
        }
        self.start = start;
        self.end = end;
        self.done = false;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A fill in progress: chunks are collected and become one `Bytes` on `finish`. Dropping the
/// handler without `finish` (origin error, client gone) stores nothing.
struct MemoryMiss {
    store: &'static MemoryStore,
    hash: HashBinary,
    path: Arc<str>,
    variant: Variant,
    /// The origin's head and the meta's times until `finish` stores them (with the body
    /// length) compactly.
    pending: Option<(ResponseHeader, Times)>,
    chunks: Vec<Bytes>,
    size: u64,
    /// Set when the object outgrew the tier: the chunks are dropped and `finish` fails.
    abandoned: bool,
}

#[async_trait]
impl HandleMiss for MemoryMiss {
    /// Never fails: pingora propagates a `write_body` error into the client's response, and a
    /// cache must never break a response. An object that outgrows the tier is abandoned here
    /// and reported by `finish`.
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.abandoned {
            return Ok(());
        }
        self.size += data.len() as u64;
        if self.size > self.store.max_object_size {
            self.abandoned = true;
            self.chunks = Vec::new();
            return Ok(());
        }
        if !data.is_empty() {
            self.chunks.push(data);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if self.abandoned {
            return Error::e_explain(ErrorType::InternalError, "object exceeds the memory tier");
        }
        let file = BodyFile::create(&self.chunks, self.size as usize);
        let (body, file) = match file {
            Some((mapped, file)) => (mapped, Some(file)),
            // One exact-size copy: a chunk is a slice of the connection's read buffer, and
            // keeping it would keep the whole buffer.
            None => {
                let mut buf = BytesMut::with_capacity(self.size as usize);
                for c in &self.chunks {
                    buf.extend_from_slice(c);
                }
                (buf.freeze(), None)
            }
        };
        let Some((header, times)) = self.pending.take() else {
            return Error::e_explain(ErrorType::InternalError, "miss handler finished twice");
        };
        let body_len = body.len();
        let meta = StoredMeta {
            head: StoredHead::new(&header, self.variant, body_len),
            times,
        };
        self.store
            .insert(Stored::new(self.hash, self.path.clone(), meta, body, file));
        Ok(MissFinishType::Created(body_len))
    }
}

mod fresh;
pub use fresh::FreshObject;

#[cfg(test)]
#[path = "memory_tests.rs"]
pub(super) mod tests;

//! The one store the proxy sees: memory tier first, then the disk tier.
//!
//! - Lookup: memory hit → served from memory; else a disk hit, promoted to memory after a
//!   complete, verified read (objects that fit the memory tier only).
//! - Fill: written to both tiers (memory only if the object fits it), so everything cacheable is
//!   on disk and hot objects are also in memory.
//! - A disk problem is a miss or an unstored fill, never a failed response: the miss handler's
//!   `write_body` never returns an error (pingora would fail the client's response).

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::storage::{HandleHit, HandleMiss, MissFinishType};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{
    CacheKey, CacheMeta, HitHandler, MissHandler, PurgeOutcome, PurgeTarget, PurgeType, Storage,
};
use pingora_error::{Error, ErrorType, Result};

use super::disk::{read_verified, DiskStore, Fill, Opened, RawMeta, READ_STEP};
use super::format::Fixed;
use super::key::Variant;
use super::memory::MemoryStore;

/// Hit/miss counters per tier (`tollgate_cache_lookups_total{tier,result}`).
#[derive(Clone)]
pub struct LookupMetrics {
    /// memory hit
    pub memory_hit: prometheus::IntCounter,
    /// memory miss
    pub memory_miss: prometheus::IntCounter,
    /// disk hit
    pub disk_hit: prometheus::IntCounter,
    /// disk miss
    pub disk_miss: prometheus::IntCounter,
}

/// Memory + optional disk, as one pingora [`Storage`].
pub struct TieredStore {
    memory: &'static MemoryStore,
    disk: Option<&'static DiskStore>,
    lookups: Option<LookupMetrics>,
    /// Incremented as each purge or invalidation starts and ends (odd: one is running): an
    /// object read from disk while one ran is not promoted to memory ([`TieredStore::promote`]),
    /// so a purge can never be undone by a disk read that began just before the file went.
    purges: std::sync::atomic::AtomicU64,
    /// Length and CRC of the hot set last written (0: none), so an unchanged set is not
    /// written again every few seconds.
    hot_set_written: std::sync::atomic::AtomicU64,
}

fn internal(msg: &'static str) -> Box<Error> {
    Error::explain(ErrorType::InternalError, msg)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| internal("disk task failed"))
}

impl TieredStore {
    /// Combine the tiers.
    pub fn new(
        memory: &'static MemoryStore,
        disk: Option<&'static DiskStore>,
        lookups: Option<LookupMetrics>,
    ) -> TieredStore {
        TieredStore {
            memory,
            disk,
            lookups,
            purges: std::sync::atomic::AtomicU64::new(0),
            hot_set_written: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Leak for the `&'static` pingora needs.
    pub fn leak(self) -> &'static TieredStore {
        Box::leak(Box::new(self))
    }

    /// The memory tier.
    pub fn memory(&self) -> &'static MemoryStore {
        self.memory
    }

    /// The disk tier, if configured.
    pub fn disk(&self) -> Option<&'static DiskStore> {
        self.disk
    }

    /// Largest object any tier stores.
    pub fn max_object_size(&self) -> u64 {
        match self.disk {
            Some(d) => d.max_object_size().max(self.memory.max_object_size()),
            None => self.memory.max_object_size(),
        }
    }

    /// Purge every variant of exact paths and prefixes from both tiers.
    pub async fn purge(&'static self, paths: Vec<String>, prefixes: Vec<String>) -> usize {
        self.in_purge_epoch(self.purge_tiers(paths, prefixes)).await
    }

    /// Run a removal with the purge counter moved before and after it, so that a promotion
    /// that read its object meanwhile sees it and does not undo the removal
    /// ([`TieredStore::promote`]).
    async fn in_purge_epoch(&self, removal: impl std::future::Future<Output = usize>) -> usize {
        self.purges
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let n = removal.await;
        self.purges
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        n
    }

    async fn purge_tiers(&'static self, paths: Vec<String>, prefixes: Vec<String>) -> usize {
        let mut n = paths
            .iter()
            .map(|p| self.memory.purge_path(p))
            .sum::<usize>()
            + prefixes
                .iter()
                .map(|p| self.memory.purge_prefix(p))
                .sum::<usize>();
        if let Some(disk) = self.disk {
            let on_disk = blocking(move || {
                paths.iter().map(|p| disk.purge_path(p)).sum::<usize>()
                    + prefixes.iter().map(|p| disk.purge_prefix(p)).sum::<usize>()
            })
            .await
            .unwrap_or(0);
            // an object in both tiers counts once
            n = n.max(on_disk);
        }
        n
    }

    /// Invalidate every variant of exact paths in both tiers (RFC 9111 §4.4), for the request
    /// path: it never waits for the disk tier's start-up scan. `keys` (the request's own keys,
    /// every variant) leave the disk at once; objects the scan has not indexed yet are removed
    /// by a background task once it has. Returns the objects removed now.
    pub async fn invalidate(&'static self, paths: Vec<String>, keys: Vec<HashBinary>) -> usize {
        self.in_purge_epoch(self.invalidate_tiers(paths, keys))
            .await
    }

    async fn invalidate_tiers(&'static self, paths: Vec<String>, keys: Vec<HashBinary>) -> usize {
        let mut n = paths
            .iter()
            .map(|p| self.memory.purge_path(p))
            .sum::<usize>();
        let Some(disk) = self.disk else {
            return n;
        };
        let scanned = disk.scanned();
        let later = (!scanned).then(|| paths.clone());
        let now = blocking(move || {
            keys.iter().filter(|h| disk.purge_hash(h)).count()
                + paths
                    .iter()
                    .map(|p| disk.purge_indexed_path(p))
                    .sum::<usize>()
        })
        .await
        .unwrap_or(0);
        n = n.max(now);
        if let Some(paths) = later {
            tokio::task::spawn_blocking(move || {
                for p in &paths {
                    disk.purge_path(p);
                }
            });
        }
        n
    }

    /// The purge epoch now, or `None` while a purge or invalidation runs (what the disk tier
    /// returns then may be an object it is removing: not to be promoted).
    fn purge_epoch(&self) -> Option<u64> {
        let epoch = self.purges.load(std::sync::atomic::Ordering::SeqCst);
        epoch.is_multiple_of(2).then_some(epoch)
    }

    /// Store an object read from the disk tier in memory (a complete disk hit, or the hot set
    /// of the previous process), unless a purge or invalidation started since `epoch` (taken
    /// before the read): the promotion could otherwise put back what the purge removed.
    /// Returns whether the object stayed.
    fn promote(
        &self,
        epoch: u64,
        hash: HashBinary,
        path: Arc<str>,
        variant: Variant,
        meta: &CacheMeta,
        body: Bytes,
    ) -> bool {
        self.memory.admit(hash, path, variant, meta, body);
        if self.purges.load(std::sync::atomic::Ordering::SeqCst) != epoch {
            self.memory.forget(&hash);
            return false;
        }
        true
    }

    /// Count a memory hit served without [`Storage::lookup`] (the connection-level hit path).
    pub fn count_memory_hit(&self) {
        self.count(|m| &m.memory_hit);
    }

    fn count(&self, f: impl Fn(&LookupMetrics) -> &prometheus::IntCounter) {
        if let Some(m) = &self.lookups {
            f(m).inc();
        }
    }
}

#[async_trait]
impl Storage for TieredStore {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        if let Some(hit) = self.memory.lookup(key, trace).await? {
            self.count(|m| &m.memory_hit);
            return Ok(Some(hit));
        }
        self.count(|m| &m.memory_miss);
        let Some(disk) = self.disk else {
            return Ok(None);
        };
        let hash = key.combined_bin();
        // taken before the disk read: a purge that starts meanwhile cancels the promotion
        let epoch = self.purge_epoch();
        let opened = match disk.open_object_nonblocking(&hash) {
            Some(hot) => Some(hot),
            None => blocking(move || disk.open_object(&hash)).await?,
        };
        let Some(opened) = opened else {
            self.count(|m| &m.disk_miss);
            return Ok(None);
        };
        self.count(|m| &m.disk_hit);
        let Opened {
            file,
            fixed,
            path,
            meta: stored_meta,
            raw_meta,
            table,
            body,
        } = opened;
        let promote = epoch
            .filter(|_| fixed.body_len <= self.memory.max_object_size())
            .map(|epoch| Promote {
                store: self,
                epoch,
                hash,
                path,
                variant: super::key::variant_of(key.primary_key()).unwrap_or(Variant::Public),
                meta: raw_meta,
            });
        let hit = DiskHit {
            disk,
            file,
            fixed,
            table,
            body,
            start: 0,
            end: fixed.body_len,
            pos: 0,
            seeked: false,
            promote,
            collected: BytesMut::new(),
        };
        Ok(Some((stored_meta, Box::new(hit))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let declared = meta
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let memory = match declared {
            Some(len) if len > self.memory.max_object_size() => None,
            _ => Some(self.memory.get_miss_handler(key, meta, trace).await?),
        };
        let disk = match self.disk {
            Some(disk) if declared.is_none_or(|l| l <= disk.max_object_size()) => {
                let hash = key.combined_bin();
                let path: Arc<str> =
                    Arc::from(super::key::path_of(key.primary_key()).unwrap_or(""));
                match RawMeta::of(meta) {
                    Some(meta) => blocking(move || disk.begin_fill(hash, path, &meta))
                        .await?
                        .map(|fill| DiskFill {
                            disk,
                            fill: Some(fill),
                            buf: BytesMut::new(),
                            dead: false,
                        }),
                    None => None,
                }
            }
            _ => None,
        };
        if memory.is_none() && disk.is_none() {
            return Err(internal("no cache tier can take this object"));
        }
        Ok(Box::new(TieredMiss { memory, disk }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let in_memory = self.memory.purge(target, purge_type, trace).await?;
        let on_disk = match self.disk {
            Some(disk) => {
                let hash = target.key().combined_bin();
                blocking(move || disk.purge_hash(&hash)).await?
            }
            None => false,
        };
        Ok(match (in_memory, on_disk) {
            (PurgeOutcome::NotFound, false) => PurgeOutcome::NotFound,
            _ => PurgeOutcome::Purged(None),
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        trace: &SpanHandle,
    ) -> Result<bool> {
        let in_memory = self.memory.update_meta(key, meta, trace).await?;
        let on_disk = match (self.disk, RawMeta::of(meta)) {
            (Some(disk), Some(meta)) => {
                let hash = key.combined_bin();
                blocking(move || disk.rewrite_meta(&hash, &meta)).await?
            }
            _ => false,
        };
        Ok(in_memory || on_disk)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// What a complete disk read promotes into memory ([`TieredStore::promote`]).
struct Promote {
    store: &'static TieredStore,
    /// The purge epoch when the read began.
    epoch: u64,
    hash: HashBinary,
    path: Arc<str>,
    variant: Variant,
    meta: RawMeta,
}

/// A disk hit: verified blocks read with positional reads on the blocking pool.
pub struct DiskHit {
    disk: &'static DiskStore,
    file: Arc<std::fs::File>,
    fixed: Fixed,
    table: Arc<Vec<u32>>,
    /// The whole body, already verified (small objects).
    body: Option<Bytes>,
    start: u64,
    end: u64,
    pos: u64,
    seeked: bool,
    promote: Option<Promote>,
    collected: BytesMut,
}

impl DiskHit {
    fn finish_promotion(&mut self) {
        if self.seeked {
            return;
        }
        let Some(p) = self.promote.take() else {
            return;
        };
        let body = match &self.body {
            Some(b) => b.clone(),
            None => std::mem::take(&mut self.collected).freeze(),
        };
        if body.len() as u64 != self.fixed.body_len {
            return;
        }
        if let Some(meta) = p.meta.to_meta() {
            p.store
                .promote(p.epoch, p.hash, p.path, p.variant, &meta, body);
        }
    }
}

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.pos >= self.end {
            self.finish_promotion();
            return Ok(None);
        }
        if let Some(body) = &self.body {
            let chunk = body.slice(self.pos as usize..self.end as usize);
            self.pos = self.end;
            return Ok(Some(chunk));
        }
        let (from, to) = (self.pos, (self.pos + READ_STEP).min(self.end));
        let (file, fixed, table) = (self.file.clone(), self.fixed, self.table.clone());
        let chunk = blocking(move || read_verified(&file, &fixed, &table, from, to)).await?;
        match chunk {
            Ok(chunk) => {
                self.pos = to;
                if self.promote.is_some() && !self.seeked {
                    self.collected.extend_from_slice(&chunk);
                }
                Ok(Some(chunk))
            }
            Err(c) => {
                // Never send a damaged block: end the response here and drop the object.
                log::warn!("disk cache: damaged block while streaming ({})", c.as_str());
                let (disk, hash) = (self.disk, self.promote.as_ref().map(|p| p.hash));
                self.promote = None;
                if let Some(hash) = hash {
                    let _ = blocking(move || disk.purge_hash(&hash)).await;
                }
                Error::e_explain(ErrorType::InternalError, "damaged cache object")
            }
        }
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
        let len = self.fixed.body_len;
        let start = start as u64;
        if start >= len {
            return Error::e_explain(ErrorType::InternalError, "seek start out of range");
        }
        self.start = start;
        self.pos = start;
        self.end = end.map_or(len, |e| (e as u64).min(len));
        self.seeked = true;
        Ok(())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// The disk half of a fill: buffered, written on the blocking pool.
struct DiskFill {
    disk: &'static DiskStore,
    fill: Option<Fill>,
    buf: BytesMut,
    dead: bool,
}

impl DiskFill {
    async fn flush(&mut self) {
        if self.dead || self.buf.is_empty() {
            return;
        }
        let Some(mut fill) = self.fill.take() else {
            self.dead = true;
            return;
        };
        let data = std::mem::take(&mut self.buf).freeze();
        let max = self.disk.max_object_size();
        match blocking(move || {
            let ok = fill.body_len() + data.len() as u64 <= max && fill.write(&data);
            (ok, fill)
        })
        .await
        {
            Ok((true, fill)) => self.fill = Some(fill),
            Ok((false, fill)) => {
                self.dead = true;
                drop_in_background(fill);
            }
            Err(_) => self.dead = true,
        }
    }
}

fn drop_in_background(fill: Fill) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => {
            rt.spawn_blocking(move || drop(fill));
        }
        Err(_) => drop(fill),
    }
}

impl Drop for DiskFill {
    fn drop(&mut self) {
        if let Some(fill) = self.fill.take() {
            drop_in_background(fill);
        }
    }
}

/// A fill of both tiers.
struct TieredMiss {
    memory: Option<MissHandler>,
    disk: Option<DiskFill>,
}

#[async_trait]
impl HandleMiss for TieredMiss {
    async fn write_body(&mut self, data: Bytes, eof: bool) -> Result<()> {
        if let Some(m) = self.memory.as_mut() {
            if m.write_body(data.clone(), eof).await.is_err() {
                self.memory = None;
            }
        }
        if let Some(d) = self.disk.as_mut() {
            if !d.dead {
                d.buf.extend_from_slice(&data);
                if d.buf.len() >= super::disk::write_step() || eof {
                    d.flush().await;
                }
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let mut size = None;
        if let Some(m) = self.memory.take() {
            if let Ok(MissFinishType::Created(n)) = m.finish().await {
                size = Some(n);
            }
        }
        if let Some(mut d) = self.disk.take() {
            d.flush().await;
            if !d.dead {
                if let Some(fill) = d.fill.take() {
                    let n = fill.body_len() as usize;
                    let disk = d.disk;
                    if blocking(move || disk.commit(fill)).await.unwrap_or(false) {
                        size = Some(n);
                    }
                }
            }
        }
        match size {
            Some(n) => Ok(MissFinishType::Created(n)),
            None => Err(internal("no tier stored the object")),
        }
    }
}

mod hot_set;
pub use hot_set::HOT_SET_MAX;

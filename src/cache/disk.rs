//! The disk tier: one file per object under `cache.disk.path`, bounded by `max_size`.
//!
//! - Writes go to `tmp/<hash>.<pid>.<generation>.tmp` and are renamed into
//!   `objects/<xx>/<hash>.tgc` only when complete, so a reader never sees a partial file and a
//!   `kill -9` leaves at most a temp file (dropped at the next start).
//! - Every file carries its fill's generation. Commits and deletions of one key are serialized
//!   by a striped lock and a deletion checks the generation first, so evicting or purging an old
//!   fill never deletes a newer one.
//! - Checksums ([`super::format`]) turn torn, truncated or flipped files into misses. Bodies up to
//!   [`VERIFY_UPFRONT`] are read and verified during the lookup (a bad one is a plain miss);
//!   larger ones are verified block by block as they stream, and a bad block ends the response
//!   before any of its bytes are sent.
//! - All file I/O runs on the blocking pool (`spawn_blocking`), never on a proxy worker thread;
//!   reads are positional (`read_at`), so a 200 MiB hit streams in 1 MiB steps.
//! - Eviction is least-recently-used by file mtime (touched on hits), which survives restarts.
//!   The index is rebuilt by a background scan at start; lookups do not wait for it because the
//!   file name is derived from the key.
//! - Every I/O error degrades to a miss (or an unstored fill) and counts in
//!   `tollgate_cache_disk_errors_total{op}`; it never fails a response.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dashmap::DashMap;
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;

use super::format::{
    decode_table, hash_of_file_name, object_rel_path, Corrupt, Fixed, BLOCK, FIXED_LEN,
};
use super::memory::TierMetrics;
use super::path_index::PathIndex;

/// Bodies up to this size are verified completely before a lookup reports a hit.
pub const VERIFY_UPFRONT: u64 = 4 * 1024 * 1024;
/// Bytes read at once for the head (fixed header and metadata) of a large object.
const HEAD_READ: u64 = 64 * 1024;
/// Open file handles kept for the non-blocking hit path.
const FD_CACHE: usize = 4096;
/// Bytes read per step when streaming a large body.
pub const READ_STEP: u64 = 4 * BLOCK;
/// Fill data is buffered up to this size before each write.
const WRITE_STEP: usize = 1024 * 1024;
/// Lock stripes for per-key commit/delete serialization.
const STRIPES: usize = 64;
/// A hit touches the file's mtime (its LRU position) at most this often.
const TOUCH_EVERY: Duration = Duration::from_secs(30);
/// Eviction frees space down to this fraction of `max_size`.
const LOW_WATER: f64 = 0.9;

/// Counters for disk problems, by operation label.
#[derive(Clone)]
pub struct DiskErrors(pub prometheus::IntCounterVec);

impl DiskErrors {
    fn inc(&self, op: &str) {
        self.0.with_label_values(&[op]).inc();
    }
}

struct Entry {
    generation: u64,
    size: u64,
    path: Arc<str>,
    /// Last access, nanoseconds since the epoch (file mtime).
    atime: AtomicU64,
}

/// The disk tier.
pub struct DiskStore {
    root: PathBuf,
    max_size: u64,
    max_object_size: u64,
    index: DashMap<HashBinary, Entry, ahash::RandomState>,
    paths: PathIndex,
    /// Open handles of recently hit small objects: (file, length, last mtime touch).
    fds: DashMap<HashBinary, (Arc<File>, u64, AtomicU64), ahash::RandomState>,
    bytes: AtomicU64,
    objects: AtomicU64,
    stripes: Vec<parking_lot::Mutex<()>>,
    next_generation: AtomicU64,
    scanned: AtomicBool,
    evicting: AtomicBool,
    metrics: Option<TierMetrics>,
    errors: Option<DiskErrors>,
}

impl DiskStore {
    /// Open (creating directories) the tier at `root`. Temp files of dead processes are
    /// removed; the index is built by [`DiskStore::scan`], which the caller runs in the
    /// background.
    pub fn open(
        root: &Path,
        max_size: u64,
        max_object_size: u64,
        metrics: Option<TierMetrics>,
        errors: Option<DiskErrors>,
    ) -> std::io::Result<DiskStore> {
        fs::create_dir_all(root.join("objects"))?;
        fs::create_dir_all(root.join("tmp"))?;
        let store = DiskStore {
            root: root.to_path_buf(),
            max_size,
            max_object_size,
            index: DashMap::with_hasher(ahash::RandomState::new()),
            paths: PathIndex::default(),
            fds: DashMap::with_hasher(ahash::RandomState::new()),
            bytes: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            stripes: (0..STRIPES).map(|_| parking_lot::Mutex::new(())).collect(),
            next_generation: AtomicU64::new(now_nanos()),
            scanned: AtomicBool::new(false),
            evicting: AtomicBool::new(false),
            metrics,
            errors,
        };
        store.clean_tmp();
        Ok(store)
    }

    /// Leak for the `&'static` pingora needs.
    pub fn leak(self) -> &'static DiskStore {
        Box::leak(Box::new(self))
    }

    /// Largest object accepted.
    pub fn max_object_size(&self) -> u64 {
        self.max_object_size
    }

    /// Objects indexed.
    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// Bytes on disk (whole files), as indexed.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the start-up scan has finished.
    pub fn scanned(&self) -> bool {
        self.scanned.load(Ordering::Acquire)
    }

    fn error(&self, op: &str) {
        if let Some(e) = &self.errors {
            e.inc(op);
        }
    }

    fn publish(&self) {
        if let Some(m) = &self.metrics {
            m.objects.set(self.objects() as i64);
            m.bytes.set(self.bytes() as i64);
        }
    }

    fn stripe(&self, hash: &HashBinary) -> parking_lot::MutexGuard<'_, ()> {
        self.stripes[hash[0] as usize % STRIPES].lock()
    }

    fn object_path(&self, hash: &HashBinary) -> PathBuf {
        self.root.join(object_rel_path(hash))
    }

    fn clean_tmp(&self) {
        let Ok(dir) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // <hash>.<pid>.<generation>.tmp: keep temp files of a live process (an upgrade in
            // progress), drop the rest.
            let pid = name.split('.').nth(1).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| {
                p != std::process::id() && Path::new(&format!("/proc/{p}")).exists()
            });
            if !alive {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    /// Index one committed file (scan or commit). Returns false if the key was already indexed.
    fn index_insert(&self, hash: HashBinary, entry: Entry, replace: bool) -> bool {
        let path = entry.path.clone();
        let size = entry.size;
        let old = match self.index.entry(hash) {
            dashmap::mapref::entry::Entry::Occupied(mut o) => {
                if !replace {
                    return false;
                }
                Some(std::mem::replace(o.get_mut(), entry))
            }
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(entry);
                None
            }
        };
        match old {
            Some(old) => {
                self.bytes.fetch_sub(old.size, Ordering::Relaxed);
                if old.path != path {
                    self.paths.remove(&old.path, &hash);
                }
            }
            None => {
                self.objects.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.paths.insert(path, hash);
        true
    }

    /// Delete the object for `hash`, but only the given generation (`None`: whatever is there).
    /// Blocking. Returns whether something was deleted.
    fn delete(&self, hash: &HashBinary, generation: Option<u64>) -> bool {
        let _g = self.stripe(hash);
        self.fds.remove(hash);
        let current = self.index.get(hash).map(|e| e.generation);
        if generation.is_some() && current != generation {
            return false;
        }
        let removed_file = match fs::remove_file(self.object_path(hash)) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                log::warn!("disk cache: cannot delete object: {e}");
                self.error("delete");
                false
            }
        };
        if let Some((_, old)) = self.index.remove(hash) {
            self.objects.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(old.size, Ordering::Relaxed);
            self.paths.remove(&old.path, hash);
        }
        self.publish();
        removed_file || current.is_some()
    }

    /// Rebuild the index from the files on disk (blocking; run it on a background task).
    /// Unreadable or corrupt files are removed.
    pub fn scan(&self) {
        let started = std::time::Instant::now();
        let mut found = 0u64;
        let Ok(top) = fs::read_dir(self.root.join("objects")) else {
            self.error("scan");
            self.scanned.store(true, Ordering::Release);
            return;
        };
        for sub in top.flatten() {
            let Ok(files) = fs::read_dir(sub.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name();
                let Some(hash) = hash_of_file_name(&name.to_string_lossy()) else {
                    continue;
                };
                match self.scan_one(&f.path()) {
                    Ok(entry) => {
                        // a commit that raced the scan already indexed a newer file
                        let _g = self.stripe(&hash);
                        if self.index_insert(hash, entry, false) {
                            found += 1;
                        }
                    }
                    Err(ReadErr::Missing) => {}
                    Err(ReadErr::Io(e)) => {
                        log::warn!("disk cache scan: {}: {e}", f.path().display());
                        self.error("scan");
                    }
                    Err(ReadErr::Corrupt(c)) => {
                        log::warn!(
                            "disk cache scan: {} is damaged ({}); removed",
                            f.path().display(),
                            c.as_str()
                        );
                        self.error(c.as_str());
                        let _g = self.stripe(&hash);
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        self.publish();
        self.scanned.store(true, Ordering::Release);
        log::info!(
            "disk cache: indexed {found} objects ({} bytes) in {:?}",
            self.bytes(),
            started.elapsed()
        );
        self.evict_if_needed();
    }

    fn scan_one(&self, path: &Path) -> Result<Entry, ReadErr> {
        let file = File::open(path)?;
        let md = file.metadata()?;
        let mut head = vec![0u8; 4096.min(md.len() as usize)];
        file.read_exact_at(&mut head, 0)?;
        let fixed = Fixed::decode(&head).map_err(ReadErr::Corrupt)?;
        if md.len() != fixed.file_len() {
            return Err(ReadErr::Corrupt(Corrupt::Length));
        }
        let plen = fixed.path_len as usize;
        let path_bytes = match head.get(FIXED_LEN..FIXED_LEN + plen) {
            Some(b) => b.to_vec(),
            None => read_exact_at(&file, plen as u64, FIXED_LEN as u64)?,
        };
        let obj_path =
            String::from_utf8(path_bytes).map_err(|_| ReadErr::Corrupt(Corrupt::Meta))?;
        Ok(Entry {
            generation: fixed.generation,
            size: md.len(),
            path: Arc::from(obj_path),
            atime: AtomicU64::new(mtime_nanos(&md)),
        })
    }

    /// Where the memory tier's hot set is kept for the next process.
    pub fn hot_set_file(&self) -> PathBuf {
        self.root.join("hot-set")
    }

    /// The whole object under `hash`, verified: its path, meta and body.
    pub fn read_whole(&self, hash: &HashBinary) -> Option<(Arc<str>, CacheMeta, Bytes)> {
        let opened = self.open_object(hash)?;
        let body = match opened.body {
            Some(body) => body,
            None => read::read_verified(
                &opened.file,
                &opened.fixed,
                &opened.table,
                0,
                opened.fixed.body_len,
            )
            .ok()?,
        };
        Some((opened.path, opened.meta, body))
    }

    /// Open and verify the object for `hash` (blocking). `Ok(None)` is a miss.
    pub fn open_object(&self, hash: &HashBinary) -> Option<Opened> {
        match self.try_open(hash) {
            Ok(o) => Some(o),
            Err(ReadErr::Missing) => None,
            Err(ReadErr::Io(e)) => {
                log::warn!("disk cache read failed: {e}");
                self.error("read");
                None
            }
            Err(ReadErr::Corrupt(c)) => {
                log::warn!("disk cache object is damaged ({}); dropped", c.as_str());
                self.error(c.as_str());
                self.delete(hash, None);
                None
            }
        }
    }

    fn try_open(&self, hash: &HashBinary) -> Result<Opened, ReadErr> {
        let file = File::open(self.object_path(hash))?;
        let md = file.metadata()?;
        // Small objects (the common case) are read with one positional read of the whole file;
        // large ones read the head, then stream the body block by block.
        let whole = md.len() <= VERIFY_UPFRONT + HEAD_READ;
        let head = Bytes::from(read_exact_at(
            &file,
            if whole {
                md.len()
            } else {
                HEAD_READ.min(md.len())
            },
            0,
        )?);
        let file = Arc::new(file);
        let opened = self.decode(hash, file.clone(), md.len(), head, mtime_nanos(&md))?;
        if whole {
            self.remember_fd(hash, file, md.len());
        }
        Ok(opened)
    }

    /// The fast path of a disk hit, run on the caller's (worker) thread: only for objects whose
    /// file is already open (recently hit) and whose bytes are all in the page cache, read with
    /// `preadv2(RWF_NOWAIT)`, which fails instead of waiting for the device. `None`: take the
    /// blocking path (it also handles misses and damaged files).
    ///
    /// Hand-written because it is what makes a hot disk hit cheap: the blocking-pool hand-off
    /// costs two context switches per hit, which `perf` showed as the largest cost of a disk hit
    /// (`benches/wrk/tiers.sh`, figures in benches/README.md).
    pub fn open_object_nonblocking(&self, hash: &HashBinary) -> Option<Opened> {
        let (file, len, touched) = {
            let e = self.fds.get(hash)?;
            (e.0.clone(), e.1, e.2.load(Ordering::Relaxed))
        };
        let head = Bytes::from(read_cached(&file, len)?);
        self.decode(hash, file, len, head, touched).ok()
    }

    fn remember_fd(&self, hash: &HashBinary, file: Arc<File>, len: u64) {
        if self.fds.len() >= FD_CACHE {
            // bounded: forget an arbitrary tenth (hot objects come back on their next hit)
            let drop: Vec<HashBinary> = self
                .fds
                .iter()
                .take(FD_CACHE / 10)
                .map(|e| *e.key())
                .collect();
            for h in drop {
                self.fds.remove(&h);
            }
        }
        self.fds
            .insert(*hash, (file, len, AtomicU64::new(now_nanos())));
    }

    /// Parse and verify an object from its first bytes (the whole file when it is small).
    fn decode(
        &self,
        hash: &HashBinary,
        file: Arc<File>,
        file_len: u64,
        head: Bytes,
        mtime: u64,
    ) -> Result<Opened, ReadErr> {
        let whole = head.len() as u64 == file_len;
        let fixed = Fixed::decode(&head).map_err(ReadErr::Corrupt)?;
        if file_len != fixed.file_len() {
            return Err(ReadErr::Corrupt(Corrupt::Length));
        }
        let at = |from: u64, len: u64| -> Result<Bytes, ReadErr> {
            if from + len <= head.len() as u64 {
                Ok(head.slice(from as usize..(from + len) as usize))
            } else {
                read_exact_at(&file, len, from).map(Bytes::from)
            }
        };
        let meta_bytes = at(FIXED_LEN as u64, fixed.meta_len())?;
        if crc32fast::hash(&meta_bytes) != fixed.meta_crc {
            return Err(ReadErr::Corrupt(Corrupt::Meta));
        }
        let table_bytes = at(fixed.table_offset(), 4 * fixed.blocks())?;
        if crc32fast::hash(&table_bytes) != fixed.table_crc {
            return Err(ReadErr::Corrupt(Corrupt::Table));
        }
        let table = decode_table(&table_bytes);
        let (plen, ilen) = (fixed.path_len as usize, fixed.internal_len as usize);
        let path = std::str::from_utf8(&meta_bytes[..plen])
            .map_err(|_| ReadErr::Corrupt(Corrupt::Meta))?;
        let raw_meta = RawMeta {
            internal: meta_bytes.slice(plen..plen + ilen),
            header: meta_bytes.slice(plen + ilen..),
        };
        let meta = raw_meta.to_meta().ok_or(ReadErr::Corrupt(Corrupt::Meta))?;
        let body = if fixed.body_len > VERIFY_UPFRONT {
            None
        } else if whole {
            let body = at(fixed.body_offset(), fixed.body_len)?;
            let intact = body
                .chunks(BLOCK as usize)
                .zip(table.iter())
                .all(|(block, crc)| crc32fast::hash(block) == *crc)
                && table.len() as u64 == fixed.blocks();
            if !intact {
                return Err(ReadErr::Corrupt(Corrupt::Body));
            }
            Some(body)
        } else {
            Some(
                read_verified(&file, &fixed, &table, 0, fixed.body_len)
                    .map_err(ReadErr::Corrupt)?,
            )
        };
        // LRU position: touch the file (rarely: its mtime is what survives a restart) and the
        // index.
        let now = now_nanos();
        if now.saturating_sub(mtime) > TOUCH_EVERY.as_nanos() as u64 {
            let _ = file.set_modified(SystemTime::now());
            if let Some(e) = self.fds.get(hash) {
                e.2.store(now, Ordering::Relaxed);
            }
        }
        let path: Arc<str> = Arc::from(path);
        match self.index.get(hash) {
            Some(e) => e.atime.store(now, Ordering::Relaxed),
            None if self.scanned() => {
                // committed by another process (graceful upgrade): adopt it
                let _g = self.stripe(hash);
                self.index_insert(
                    *hash,
                    Entry {
                        generation: fixed.generation,
                        size: file_len,
                        path: path.clone(),
                        atime: AtomicU64::new(now),
                    },
                    false,
                );
                self.publish();
            }
            None => {}
        }
        Ok(Opened {
            file,
            fixed,
            path,
            meta,
            raw_meta,
            table: Arc::new(table),
            body,
        })
    }

    /// Remove every object stored under exactly this path (all hosts, queries, variants).
    /// Blocking; waits for the start-up scan so objects not yet indexed are found too.
    pub fn purge_path(&self, path: &str) -> usize {
        self.wait_scanned();
        let hashes = self.paths.get(path);
        hashes.iter().filter(|h| self.delete(h, None)).count()
    }

    /// Remove the objects indexed under exactly this path now, without waiting for the start-up
    /// scan (objects it has not indexed yet stay). Blocking.
    pub fn purge_indexed_path(&self, path: &str) -> usize {
        let hashes = self.paths.get(path);
        hashes.iter().filter(|h| self.delete(h, None)).count()
    }

    /// Remove every object whose path starts with `prefix`. Blocking.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        self.wait_scanned();
        let paths = self.paths.paths_with_prefix(prefix);
        paths.iter().map(|p| self.purge_path(p)).sum()
    }

    /// Remove the object for one key hash. Blocking.
    pub fn purge_hash(&self, hash: &HashBinary) -> bool {
        self.delete(hash, None)
    }

    fn wait_scanned(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !self.scanned() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Evict least-recently-used objects until the tier is under its low-water mark (blocking;
    /// one evictor at a time).
    pub fn evict_if_needed(&self) {
        if self.bytes() <= self.max_size || !self.scanned() {
            return;
        }
        if self.evicting.swap(true, Ordering::AcqRel) {
            return;
        }
        let target = (self.max_size as f64 * LOW_WATER) as u64;
        let mut candidates: Vec<(u64, HashBinary, u64)> = self
            .index
            .iter()
            .map(|e| (e.atime.load(Ordering::Relaxed), *e.key(), e.generation))
            .collect();
        candidates.sort_unstable();
        for (_, hash, generation) in candidates {
            if self.bytes() <= target {
                break;
            }
            if self.delete(&hash, Some(generation)) {
                if let Some(m) = &self.metrics {
                    m.evictions.inc();
                }
            }
        }
        self.evicting.store(false, Ordering::Release);
    }
}

mod fill;
mod read;
pub use fill::{write_step, Fill};
use read::{mtime_nanos, now_nanos, read_cached, read_exact_at, ReadErr};
pub use read::{read_verified, Opened, RawMeta};

#[cfg(test)]
mod tests;

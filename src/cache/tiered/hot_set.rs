//! The memory tier's hot set: written beside the disk tier by a running process, loaded back
//! from the disk tier by the next one (an upgrade or restart), so it starts warm.

use pingora_cache::key::HashBinary;

use super::TieredStore;
use crate::cache::Variant;

/// Most objects in a hot set.
pub const HOT_SET_MAX: usize = 100_000;

impl TieredStore {
    /// Write the memory tier's objects (their keys, at most [`HOT_SET_MAX`]) beside the disk
    /// tier, for the next process to load back ([`TieredStore::warm_from_hot_set`]): an upgrade
    /// or restart then starts with a warm memory tier, not only a warm disk. A set unchanged
    /// since the last write is not written again. Blocking.
    pub fn save_hot_set(&self) -> std::io::Result<usize> {
        use std::fmt::Write;
        use std::sync::atomic::Ordering;
        let Some(disk) = self.disk else {
            return Ok(0);
        };
        let set = self.memory.hot_set(HOT_SET_MAX);
        let mut text = String::with_capacity(set.len() * 35);
        for (hash, private) in &set {
            for b in hash {
                let _ = write!(text, "{b:02x}");
            }
            text.push_str(if *private { " s\n" } else { " p\n" });
        }
        let stamp = (text.len() as u64) << 32 | u64::from(crc32fast::hash(text.as_bytes()));
        if self.hot_set_written.swap(stamp, Ordering::Relaxed) == stamp {
            return Ok(set.len());
        }
        let file = disk.hot_set_file();
        let tmp = file.with_extension("tmp");
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &file));
        if written.is_err() {
            self.hot_set_written.store(0, Ordering::Relaxed); // try again next time
        }
        written.map(|()| set.len())
    }

    /// Load the objects the previous process had in memory (its hot set) from the disk tier
    /// into the memory tier; returns how many. Blocking.
    pub fn warm_from_hot_set(&self) -> usize {
        let Some(disk) = self.disk else {
            return 0;
        };
        let Ok(text) = std::fs::read_to_string(disk.hot_set_file()) else {
            return 0;
        };
        let mut warmed = 0;
        for line in text.lines().take(HOT_SET_MAX) {
            let Some((hex, kind)) = line.split_once(' ') else {
                continue;
            };
            let mut hash: HashBinary = [0; 16];
            if hex.len() != 32
                || !hash.iter_mut().enumerate().all(|(i, b)| {
                    u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                        .map(|v| *b = v)
                        .is_ok()
                })
            {
                continue;
            }
            if self.memory.fresh_or_stale_present(&hash) {
                continue;
            }
            let Some(epoch) = self.purge_epoch() else {
                continue; // a purge is running: leave this one to the disk tier
            };
            let Some((path, meta, body)) = disk.read_whole(&hash) else {
                continue; // purged or evicted since
            };
            if body.len() as u64 > self.memory.max_object_size() {
                continue;
            }
            let variant = if kind == "s" {
                Variant::Subscriber
            } else {
                Variant::Public
            };
            if !self.promote(epoch, hash, path, variant, &meta, body) {
                continue;
            }
            warmed += 1;
        }
        warmed
    }
}

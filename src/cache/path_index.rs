//! Normalized path → the cache keys stored under it (every host, query and variant), so a purge
//! by path or prefix reaches every variant although the keys themselves are hashes. Both tiers
//! keep one.

use std::sync::Arc;

use dashmap::DashMap;
use pingora_cache::key::HashBinary;

/// The index of one tier.
#[derive(Default)]
pub struct PathIndex {
    map: DashMap<Arc<str>, Vec<HashBinary>, ahash::RandomState>,
}

impl PathIndex {
    /// Every hash indexed, up to `limit`.
    pub fn hashes(&self, limit: usize) -> Vec<HashBinary> {
        let mut out = Vec::new();
        for entry in self.map.iter() {
            for h in entry.value() {
                if out.len() == limit {
                    return out;
                }
                out.push(*h);
            }
        }
        out
    }

    /// Record that `hash` is stored under `path` (idempotent).
    pub fn insert(&self, path: Arc<str>, hash: HashBinary) {
        let mut hashes = self.map.entry(path).or_default();
        if !hashes.contains(&hash) {
            hashes.push(hash);
        }
    }

    /// Forget `hash` under `path`.
    pub fn remove(&self, path: &Arc<str>, hash: &HashBinary) {
        let now_empty = match self.map.get_mut(path) {
            Some(mut hashes) => {
                hashes.retain(|h| h != hash);
                hashes.is_empty()
            }
            None => false,
        };
        if now_empty {
            self.map.remove_if(path, |_, v| v.is_empty());
        }
    }

    /// The keys under exactly `path`, removed from the index.
    pub fn take(&self, path: &str) -> Vec<HashBinary> {
        self.map.remove(path).map(|(_, v)| v).unwrap_or_default()
    }

    /// The keys under exactly `path`, left in the index.
    pub fn get(&self, path: &str) -> Vec<HashBinary> {
        self.map.get(path).map(|v| v.clone()).unwrap_or_default()
    }

    /// Every indexed path starting with `prefix`.
    pub fn paths_with_prefix(&self, prefix: &str) -> Vec<Arc<str>> {
        self.map
            .iter()
            .filter(|e| e.key().starts_with(prefix))
            .map(|e| e.key().clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_remove_take_and_prefix() {
        let idx = PathIndex::default();
        let a: Arc<str> = Arc::from("/p/a");
        idx.insert(a.clone(), [1; 16]);
        idx.insert(a.clone(), [1; 16]);
        idx.insert(a.clone(), [2; 16]);
        idx.insert(Arc::from("/p/b"), [3; 16]);
        idx.insert(Arc::from("/q"), [4; 16]);
        assert_eq!(idx.get("/p/a"), vec![[1; 16], [2; 16]]);
        let mut p = idx.paths_with_prefix("/p/");
        p.sort();
        assert_eq!(p, vec![Arc::from("/p/a"), Arc::from("/p/b")]);
        idx.remove(&a, &[1; 16]);
        assert_eq!(idx.take("/p/a"), vec![[2; 16]]);
        assert!(idx.get("/p/a").is_empty());
        idx.remove(&Arc::from("/q"), &[4; 16]);
        assert!(idx.paths_with_prefix("/q").is_empty());
    }
}

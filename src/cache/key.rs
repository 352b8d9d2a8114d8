//! Cache keys and entitlement variants.

use pingora_cache::key::{hash_key, CacheHashKey, HashBinary};
use pingora_cache::CacheKey;

/// The entitlement variant an access decision produces (SPEC §2). It is part of every cache key
/// and is sent to the origin as `x-tollgate-variant` so the origin can render the right body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Public route: everyone shares one entry.
    Public,
    /// Paywall route, reader not entitled: the origin renders the teaser.
    Anonymous,
    /// Entitled reader: the full content.
    Subscriber,
}

impl Variant {
    /// Every variant, so that purges can reason about all of them.
    pub const ALL: [Variant; 3] = [Variant::Public, Variant::Anonymous, Variant::Subscriber];

    /// Position in [`Variant::ALL`].
    pub fn index(self) -> usize {
        match self {
            Variant::Public => 0,
            Variant::Anonymous => 1,
            Variant::Subscriber => 2,
        }
    }

    /// The wire and label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Public => "public",
            Variant::Anonymous => "anonymous",
            Variant::Subscriber => "subscriber",
        }
    }
}

/// Build the cache key for a request. Components are joined with NUL bytes, which cannot occur
/// in any of them (the request line forbids it and `%00` is rejected by path normalization), so
/// the encoding is unambiguous.
pub fn cache_key(host: &str, path: &str, query: &str, variant: Variant) -> CacheKey {
    let mut primary = Vec::new();
    write_primary(&mut primary, host, path, query, variant);
    CacheKey::new(primary, "")
}

/// [`cache_key`]'s primary bytes, appended to `out`.
fn write_primary(out: &mut Vec<u8>, host: &str, path: &str, query: &str, variant: Variant) {
    let v = variant.as_str();
    out.reserve(host.len() + path.len() + query.len() + v.len() + 3);
    out.extend_from_slice(host.as_bytes());
    out.push(0);
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    out.extend_from_slice(query.as_bytes());
    out.push(0);
    out.extend_from_slice(v.as_bytes());
}

/// Keys [`hit_hash`] remembers per worker thread (direct-mapped: a key takes the slot its hash
/// picks, from whichever key held it). With [`MEMO_MAX_KEY`], at most 64 KiB a thread.
const MEMO_SLOTS: usize = 256;
/// Keys longer than this are hashed every time, not remembered.
const MEMO_MAX_KEY: usize = 256;

/// A remembered primary key and its hash.
type Remembered = Option<(Box<[u8]>, HashBinary)>;

/// The primary keys a worker thread hashed last, with their hashes.
struct Memo {
    /// The key being looked up (kept to reuse its allocation).
    scratch: Vec<u8>,
    slots: Box<[Remembered]>,
    pick: ahash::RandomState,
}

thread_local! {
    static MEMO: std::cell::RefCell<Memo> = std::cell::RefCell::new(Memo {
        scratch: Vec::with_capacity(MEMO_MAX_KEY),
        slots: vec![None; MEMO_SLOTS].into_boxed_slice(),
        pick: ahash::RandomState::new(),
    });
}

/// `cache_key(host, path, query, variant).combined_bin()`, what the hit path looks the memory
/// tier up by, without hashing the key again when this thread hashed it lately. The hash is
/// BLAKE2b (Pingora's key hash, which the disk tier's file names keep), and building the key
/// allocates; a remembered key costs a keyed `ahash` of its bytes and a comparison. Only a
/// cache of a pure function: a slot holds the exact key bytes and is used only when they are
/// equal, so a collision costs a hash, never a wrong object. The key is hashed with Pingora's
/// `hash_key`, what a [`CacheKey`] without variance hashes its primary bytes with, straight
/// from the thread's scratch buffer (no key built, no copy).
///
/// Measured on one server core, each build restarted in turn (benches/peers' method, by hand):
/// HTTP/2 rotating-token hit (`h2load -c50 -m10 -i`, after a flood of never-seen tokens), 4
/// restarts x 3 cells of 5 s: 3.77 -> 3.57 µs of server CPU per request (means), 264k -> 277k
/// req/s (medians); TLS public hit (`wrk -t1 -c50`), 3 x 3 cells: 7.81 -> 7.41 µs, 128k -> 134k
/// req/s. Every pair of runs favoured the memo. (Measured with 512 slots and keys of up to 512
/// bytes; both rows look up one key, so the smaller memo is the same to them.)
pub fn hit_hash(host: &str, path: &str, query: &str, variant: Variant) -> HashBinary {
    MEMO.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else {
            return cache_key(host, path, query, variant).combined_bin();
        };
        let Memo {
            scratch,
            slots,
            pick,
        } = &mut *memo;
        scratch.clear();
        write_primary(scratch, host, path, query, variant);
        if scratch.len() > MEMO_MAX_KEY {
            return hash_key(&scratch);
        }
        let slot = &mut slots[pick.hash_one(scratch.as_slice()) as usize % MEMO_SLOTS];
        if let Some((key, hash)) = slot {
            if **key == **scratch {
                return *hash;
            }
        }
        let hash = hash_key(&scratch);
        *slot = Some((scratch.as_slice().into(), hash));
        hash
    })
}

/// Hex rendering of a key hash (file names of the disk tier).
pub trait HashBinaryExt {
    /// Lower-case hex, 32 characters.
    fn to_hex(&self) -> String;
}

impl HashBinaryExt for pingora_cache::key::HashBinary {
    fn to_hex(&self) -> String {
        use std::fmt::Write;
        self.iter().fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

/// The normalized path inside a key built by [`cache_key`] (used to index objects for purge).
pub fn path_of(primary: &[u8]) -> Option<&str> {
    let mut parts = primary.split(|&b| b == 0);
    parts.next()?;
    std::str::from_utf8(parts.next()?).ok()
}

/// The variant inside a key built by [`cache_key`].
pub fn variant_of(primary: &[u8]) -> Option<Variant> {
    let last = primary.rsplit(|&b| b == 0).next()?;
    Variant::ALL
        .into_iter()
        .find(|v| v.as_str().as_bytes() == last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_and_components_separate_keys() {
        let p = "/a";
        let base = cache_key("h", p, "", Variant::Anonymous).combined_bin();
        assert_ne!(
            base,
            cache_key("h", p, "", Variant::Subscriber).combined_bin()
        );
        assert_ne!(
            base,
            cache_key("h2", p, "", Variant::Anonymous).combined_bin()
        );
        assert_ne!(
            base,
            cache_key("h", p, "x=1", Variant::Anonymous).combined_bin()
        );
        assert_eq!(
            base,
            cache_key("h", p, "", Variant::Anonymous).combined_bin()
        );
        // no ambiguity between host and path boundaries
        assert_ne!(
            cache_key("h/", "a/a", "", Variant::Public).combined_bin(),
            cache_key("h", "/a/a", "", Variant::Public).combined_bin()
        );
        let k = cache_key("h", "/p/x", "q=1", Variant::Subscriber);
        assert_eq!(path_of(k.primary_key()), Some("/p/x"));
    }

    #[test]
    fn hit_hash_is_the_keys_hash_however_often_and_whatever_it_displaced() {
        let long = "x".repeat(MEMO_MAX_KEY);
        let keys: Vec<(String, String, Variant)> = (0..3 * MEMO_SLOTS)
            .map(|i| {
                (
                    format!("/p/{i}"),
                    format!("q={}", i % 7),
                    Variant::ALL[i % 3],
                )
            })
            .chain([(long.clone(), String::new(), Variant::Public)])
            .collect();
        for round in 0..3 {
            for (path, query, variant) in &keys {
                assert_eq!(
                    hit_hash("h", path, query, *variant),
                    cache_key("h", path, query, *variant).combined_bin(),
                    "{path} {query} {variant:?}, round {round}"
                );
            }
        }
        // the same bytes split differently are different keys (NUL separators)
        assert_ne!(
            hit_hash("h/", "a/a", "", Variant::Public),
            hit_hash("h", "/a/a", "", Variant::Public)
        );
    }
}

//! The edge cache: keys ([`key`]), the memory tier ([`memory`]), the disk tier ([`disk`],
//! file format in [`format`]), the store pingora sees ([`tiered`]) and its fill lock
//! ([`lock`]).
//!
//! The cache key is (host, normalized path, query without token parameters, variant): never the
//! token, never the user. Two subscribers share an entry; a subscriber and a non-subscriber
//! never do, because the variant is part of the primary key.

pub mod body_file;
pub mod disk;
pub mod format;
pub mod head;
pub mod key;
pub mod lock;
pub mod memory;
pub mod path_index;
pub mod tiered;

pub use disk::{DiskErrors, DiskStore};
pub use key::{cache_key, hit_hash, Variant};
pub use memory::{MemoryStore, TierMetrics};
pub use tiered::{DiskHit, LookupMetrics, TieredStore};

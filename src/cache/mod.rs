//! The edge cache: keys ([`key`]) and the memory tier ([`memory`]) behind pingora-cache.
//!
//! The cache key is (host, normalized path, query without token parameters, variant): never the
//! token, never the user. Two subscribers share an entry; a subscriber and a non-subscriber
//! never do, because the variant is part of the primary key.

pub mod key;
pub mod memory;

pub use key::{cache_key, Variant};
pub use memory::{MemoryStore, TierMetrics};

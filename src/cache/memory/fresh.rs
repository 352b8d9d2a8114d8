//! Fresh objects for the connection-level hit path: the lookup that asks nothing else, and the
//! shared handle it answers from.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use pingora_cache::key::HashBinary;

use super::{MemoryStore, Stored};
use crate::cache::body_file::BodyFile;
#[cfg(doc)]
use crate::cache::head::StoredHead;

impl MemoryStore {
    /// The object under `hash` if it is fresh at `now` and has no `Vary` secondary key: what
    /// the connection-level hit path may serve without asking anything else. Counts nothing.
    pub fn fresh(&self, hash: &HashBinary, now: SystemTime) -> Option<FreshObject> {
        let stored = self.get(hash)?;
        let m = &stored.meta;
        (m.times.variance.is_none() && m.times.fresh_until >= now).then_some(FreshObject(stored))
    }
}

/// A fresh stored object, shared (no copy of head or body).
pub struct FreshObject(Arc<Stored>);

impl FreshObject {
    /// The stored status code.
    pub fn status(&self) -> u16 {
        self.0.meta.head.status()
    }

    /// The whole body.
    pub fn body(&self) -> &Bytes {
        &self.0.body
    }

    /// The sealed file holding the body, if it is kept in one (large bodies).
    pub fn file(&self) -> Option<&Arc<BodyFile>> {
        self.0.file.as_ref()
    }

    /// Seconds since the object was stored or last revalidated, as pingora's `Age` counts.
    pub fn age(&self, now: SystemTime) -> u64 {
        let m = &self.0.meta;
        now.duration_since(m.times.epoch_override.unwrap_or(m.times.updated))
            .map_or(0, |d| d.as_secs())
    }

    /// The head the connection-level hit path writes for this object, if it may answer with
    /// it (see [`StoredHead::sendable`]). Stored once, at fill time; a hit copies nothing.
    pub fn sendable_head(&self) -> Option<Bytes> {
        self.0.meta.head.sendable()
    }

    /// The same head as an HTTP/2 header block ([`StoredHead::sendable_h2`]).
    pub fn sendable_h2(&self) -> Option<&Bytes> {
        self.0.meta.head.sendable_h2()
    }
}

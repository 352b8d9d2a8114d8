//! Cache keys and entitlement variants.

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
    let v = variant.as_str();
    let mut primary = Vec::with_capacity(host.len() + path.len() + query.len() + v.len() + 3);
    primary.extend_from_slice(host.as_bytes());
    primary.push(0);
    primary.extend_from_slice(path.as_bytes());
    primary.push(0);
    primary.extend_from_slice(query.as_bytes());
    primary.push(0);
    primary.extend_from_slice(v.as_bytes());
    CacheKey::new(primary, "")
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
    use pingora_cache::key::CacheHashKey;

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
}

//! Tests for `cache.rs`: a connection's [`TokenMemo`], and tokens taken as bytes.

use super::tests::{es, full, set, token, NOW};
use super::*;

/// A connection's memo hands back the fingerprint of the very token it holds, under the
/// cache that took it, and nothing else: another token, or the same token under another
/// cache's key, is fingerprinted afresh (and then remembered).
#[test]
fn a_memo_gives_only_its_own_tokens_fingerprint_under_its_own_cache() {
    let (one, other) = (TokenCache::new(10), TokenCache::new(10));
    let memo = TokenMemo::default();
    let held = |memo: &TokenMemo| {
        let m = memo.0.lock().unwrap();
        (
            m.fp.map_or(0, |(cache, _)| cache),
            m.token.clone(),
            m.fp.map(|(_, fp)| fp),
        )
    };
    let a = one.front.fingerprint(b"token-a");
    assert_eq!(one.fingerprint(b"token-a", Some(&memo)), a);
    assert_eq!(held(&memo), (one.id, b"token-a".to_vec(), Some(a)));
    assert_eq!(one.fingerprint(b"token-a", Some(&memo)), a, "from the memo");
    // one byte off: its own fingerprint, which the memo now holds
    let b = one.front.fingerprint(b"token-b");
    assert_ne!(a, b);
    assert_eq!(one.fingerprint(b"token-b", Some(&memo)), b);
    assert_eq!(held(&memo), (one.id, b"token-b".to_vec(), Some(b)));
    // the same token under another cache's key
    let b2 = other.front.fingerprint(b"token-b");
    assert_ne!(b, b2);
    assert_eq!(other.fingerprint(b"token-b", Some(&memo)), b2);
    assert_eq!(held(&memo), (other.id, b"token-b".to_vec(), Some(b2)));
    // a token longer than MEMO_MAX is fingerprinted and not kept
    let long = vec![b'x'; MEMO_MAX + 1];
    assert_eq!(
        other.fingerprint(&long, Some(&memo)),
        other.front.fingerprint(&long)
    );
    assert_eq!(held(&memo).1, b"token-b".to_vec());
}

/// Verified through a connection's memo, a token is answered as without it: a miss, then
/// hits; a forgery on the same connection (one payload character changed) is verified and
/// refused; the cached token is a hit again after it.
#[test]
fn verifying_through_a_memo_answers_as_without_one() {
    let k = es("k1");
    let keys = set(&[&k]);
    let p = Policy::default();
    let (cache, memo) = (TokenCache::new(100), TokenMemo::default());
    let t = token(&k, NOW + 600, "u1");
    let verify =
        |t: &str| cache.verify_remembering(t.as_bytes(), Some(&memo), &keys, &p, NOW, || true);
    let first = full(verify(&t).unwrap());
    assert!(Arc::ptr_eq(&full(verify(&t).unwrap()), &first));
    let at = t.find('.').unwrap() + 5;
    let mut forged = t.clone().into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(verify(&forged).is_err());
    assert!(Arc::ptr_eq(&full(verify(&t).unwrap()), &first));
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 2,
            misses: 2,
            evictions: 0
        }
    );
}

/// A token is taken as the bytes sent: a cached one is a hit without any UTF-8 check, and bytes
/// that are not UTF-8 (never the bytes of a token that verified) are refused as `Malformed`
/// when they come to be verified, and not cached.
#[test]
fn tokens_are_bytes_and_only_a_verification_wants_utf8() {
    let k = es("k1");
    let keys = set(&[&k]);
    let p = Policy::default();
    let cache = TokenCache::new(100);
    let t = token(&k, NOW + 600, "u1");
    let verify = |t: &[u8]| cache.verify_remembering(t, None, &keys, &p, NOW, || true);
    let first = full(verify(t.as_bytes()).unwrap());
    assert!(Arc::ptr_eq(&full(verify(t.as_bytes()).unwrap()), &first));
    let mut bad = t.clone().into_bytes();
    bad[5] = 0xff;
    assert_eq!(verify(&bad).err(), Some(Denial::Malformed));
    assert_eq!(verify(b"\xff.\xfe.\xfd").err(), Some(Denial::Malformed));
    assert_eq!(cache.len(), 1);
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 1,
            misses: 3,
            evictions: 0
        }
    );
}

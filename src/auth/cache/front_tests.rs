//! Tests for `front.rs`: a slot answers only its own fingerprint, consistently under racing
//! writers; and through the token cache, the front answers only what the map would.

use std::sync::Arc;

use serde_json::json;

use super::super::tests::{es, set, NOW};
use super::*;
use crate::auth::keys::KeySet;
use crate::auth::mint::SigningKey;
use crate::auth::{CacheStats, Denial, Policy, TokenCache, Verified};

fn held(v: u64, names: &[&str]) -> Held {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    Held {
        expires_at: NOW + v,
        valid_from: v,
        keys_generation: v,
        names: PackedNames::new(&names),
    }
}

#[test]
fn a_slot_answers_its_own_fingerprint_only() {
    let front = Front::new(16);
    let (a, b) = (front.fingerprint(b"token-a"), front.fingerprint(b"token-b"));
    assert_ne!(a, b);
    assert_eq!(front.read(a), None, "empty");
    front.fill(a, &held(7, &["premium"]));
    assert_eq!(front.read(a), Some(held(7, &["premium"])));
    assert_eq!(
        front.read(b),
        None,
        "another fingerprint, whatever its slot"
    );
    let names = front.find(a, NOW, 7).expect("in its window, same key set");
    assert_eq!(names.contains("premium"), Some(true));
    assert_eq!(front.find(a, NOW + 8, 7), None, "after expires_at");
    assert_eq!(front.find(a, 6, 7), None, "before valid_from");
    assert_eq!(front.find(a, NOW, 8), None, "another key set");
    // forgetting another fingerprint leaves the slot alone; its own empties it
    front.forget(b);
    assert!(front.read(a).is_some());
    front.forget(a);
    assert_eq!(front.read(a), None);
}

#[test]
fn the_fingerprint_is_keyed_per_cache() {
    let (x, y) = (Front::new(16), Front::new(16));
    assert_eq!(x.fingerprint(b"t"), x.fingerprint(b"t"));
    assert_ne!(x.fingerprint(b"t"), y.fingerprint(b"t"));
    assert_eq!(
        Front::new(0).read(x.fingerprint(b"t")),
        None,
        "no slots at all"
    );
    Front::new(0).fill(x.fingerprint(b"t"), &held(1, &[]));
}

#[test]
fn the_used_mark_is_taken_once_and_refilling_clears_it() {
    let front = Front::new(4);
    let a = front.fingerprint(b"a");
    front.fill(a, &held(1, &[]));
    assert!(!front.take_used(a), "not hit yet");
    front.find(a, NOW, 1).unwrap();
    assert!(front.take_used(a));
    assert!(!front.take_used(a), "taken");
    front.find(a, NOW, 1).unwrap();
    front.fill(a, &held(1, &[]));
    assert!(!front.take_used(a), "a fill starts unmarked");
    front.clear();
    assert_eq!(front.read(a), None);
}

/// Readers racing writers on one slot see either nothing or one whole fill: every field of a
/// fill is derived from one number, so a torn read would show two.
#[test]
fn racing_fills_and_forgets_never_show_a_torn_slot() {
    let front = Arc::new(Front::new(1));
    let fps: Vec<Fingerprint> = (0..4u8).map(|i| front.fingerprint(&[i])).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (front, fps, stop) = (front.clone(), fps.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut v = w;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    v += 2;
                    let fp = fps[(v % 4) as usize];
                    let name = format!("n{v}");
                    front.fill(fp, &held(v, &[name.as_str()]));
                    if v % 7 == 0 {
                        front.forget(fp);
                    }
                }
            })
        })
        .collect();
    let (mut seen, deadline) = (
        0u64,
        std::time::Instant::now() + std::time::Duration::from_secs(2),
    );
    while seen < 20_000 && std::time::Instant::now() < deadline {
        for fp in &fps {
            if let Some(h) = front.read(*fp) {
                let v = h.keys_generation;
                assert_eq!(
                    (h.expires_at, h.valid_from),
                    (NOW + v, v),
                    "one fill's fields"
                );
                assert_eq!(
                    h.names.contains(&format!("n{v}")),
                    Some(true),
                    "its names too"
                );
                seen += 1;
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    assert!(seen > 0, "some reads found a whole fill");
}

// --- through the token cache -----------------------------------------------------------------

/// A token that restricts nothing but its subscriptions: the front may answer it.
fn plain(key: &SigningKey, exp: u64, sub: &str) -> String {
    key.sign(&json!({"sub": sub, "exp": exp, "subs": ["premium"]}))
        .unwrap()
}

/// A cache holding one plain reader's token in its front (verified, hit in the map, then
/// answered by the front: three lookups).
fn one_reader_in_the_front() -> (KeySet, Policy, TokenCache, String) {
    let k = es("k1");
    let keys = set(&[&k]);
    let p = Policy::default();
    let cache = TokenCache::new(100);
    let t = plain(&k, NOW + 600, "u1");
    for _ in 0..3 {
        cache.verify(&t, &keys, &p, NOW).unwrap();
    }
    (keys, p, cache, t)
}

fn stats(hits: u64, misses: u64) -> CacheStats {
    CacheStats {
        hits,
        misses,
        evictions: 0,
    }
}

#[test]
fn a_returning_plain_token_is_answered_by_the_front_after_one_map_hit() {
    let k = es("k1");
    let keys = set(&[&k]);
    let p = Policy::default();
    let cache = TokenCache::new(100);
    let t = plain(&k, NOW + 600, "u1");
    assert!(
        matches!(cache.verify(&t, &keys, &p, NOW), Ok(Verified::Claims(_))),
        "verified"
    );
    assert!(
        matches!(cache.verify(&t, &keys, &p, NOW), Ok(Verified::Claims(_))),
        "map hit"
    );
    let v = cache.verify(&t, &keys, &p, NOW).unwrap();
    assert!(matches!(v, Verified::Plain(_)), "the front");
    assert!(v.entitled(&["premium".into()]));
    assert!(!v.entitled(&["gold".into()]));
    assert!(v.entitled(&[]));
    assert_eq!((v.sid(), v.ip(), v.paths()), (None, None, &[][..]));
    assert_eq!(cache.stats(), stats(2, 1));
}

/// Tokens carrying a session id, a path scope or an address binding are always answered with
/// their claims: the front holds none of those.
#[test]
fn restricted_tokens_never_get_a_front_answer() {
    let k = es("k1");
    let keys = set(&[&k]);
    let p = Policy::default();
    let cache = TokenCache::new(100);
    let base = json!({"sub": "u", "exp": NOW + 600, "subs": ["premium"]});
    let names: Vec<String> = (0..20).map(|i| format!("subscription-{i}")).collect();
    let claims = [
        ("sid", json!("s1")),
        ("paths", json!(["/media/"])),
        ("ip", json!("10.0.0.1")),
        ("subs", json!(names)),
    ];
    for (name, value) in claims {
        let mut c = base.clone();
        c[name] = value;
        let t = k.sign(&c).unwrap();
        for _ in 0..3 {
            let v = cache.verify(&t, &keys, &p, NOW).unwrap();
            assert!(matches!(v, Verified::Claims(_)), "{name}: always claims");
        }
    }
}

/// A token one byte away from one the front holds (payload changed, signature kept) is not
/// answered by the front: it is verified, and refused.
#[test]
fn a_forged_neighbour_of_a_front_token_is_verified_and_refused() {
    let (keys, p, cache, t) = one_reader_in_the_front();
    let at = t.find('.').unwrap() + 5;
    let mut forged = t.clone().into_bytes();
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert!(cache.verify(&forged, &keys, &p, NOW).is_err());
    assert!(matches!(
        cache.verify(&t, &keys, &p, NOW),
        Ok(Verified::Plain(_))
    ));
    assert_eq!(cache.stats(), stats(3, 2));
}

/// The front re-checks the time window and the key set as the map does: an expired token or
/// one whose key is gone goes to the map, which refuses it.
#[test]
fn the_front_refuses_what_the_map_refuses() {
    let (k1, k2) = (es("k1"), es("k2"));
    let keys = set(&[&k1, &k2]);
    let p = Policy::default();
    let cache = TokenCache::new(100);
    let (t1, t2) = (plain(&k1, NOW + 600, "a"), plain(&k2, NOW + 600, "b"));
    for _ in 0..3 {
        cache.verify(&t1, &keys, &p, NOW).unwrap();
        cache.verify(&t2, &keys, &p, NOW).unwrap();
    }
    // (the default policy's leeway is 30 s)
    assert!(matches!(
        cache.verify(&t1, &keys, &p, NOW + 630),
        Ok(Verified::Plain(_))
    ));
    assert_eq!(
        cache.verify(&t1, &keys, &p, NOW + 631),
        Err(Denial::Expired)
    );
    // a reload that drops k1 and keeps k2 (the same key, so the same `VerifyKey::id`)
    let only_k2 = set(&[&k2]).carry_over(&keys);
    assert_ne!(only_k2.generation(), keys.generation());
    assert_eq!(
        cache.verify(&t1, &only_k2, &p, NOW),
        Err(Denial::UnknownKid)
    );
    let v = cache.verify(&t2, &only_k2, &p, NOW).unwrap();
    assert!(
        matches!(v, Verified::Claims(_)),
        "a new key set: back to the map once"
    );
    assert!(matches!(
        cache.verify(&t2, &only_k2, &p, NOW),
        Ok(Verified::Plain(_))
    ));
}

/// Whatever leaves the map leaves the front: after `clear` and after a sweep, the next lookup
/// is a verification.
#[test]
fn removal_from_the_map_forgets_the_slot() {
    let (keys, p, cache, t) = one_reader_in_the_front();
    cache.clear();
    assert!(matches!(
        cache.verify(&t, &keys, &p, NOW),
        Ok(Verified::Claims(_))
    ));
    assert_eq!(cache.stats().misses, 2, "verified again after clear");
    cache.verify(&t, &keys, &p, NOW).unwrap();
    assert_eq!(cache.sweep(NOW + 10_000), 1);
    // inside its window again for the sweep's sake: only the map can tell it was dropped
    assert!(matches!(
        cache.verify(&t, &keys, &p, NOW),
        Ok(Verified::Claims(_))
    ));
    assert_eq!(cache.stats().misses, 3, "verified again after the sweep");
}

/// The CLOCK sees hits through the front: returning readers answered by their slots keep
/// their entries through a flood of tokens each seen once (as in the map's own test).
#[test]
fn readers_answered_by_the_front_keep_their_entries_through_a_flood() {
    let k = es("k1");
    let keys = set(&[&k]);
    let p = Policy::default();
    let cache = TokenCache::new(128);
    let hot: Vec<String> = (0..16)
        .map(|i| plain(&k, NOW + 600, &format!("hot{i}")))
        .collect();
    for t in hot.iter().chain(&hot) {
        cache.verify(t, &keys, &p, NOW).unwrap();
    }
    let flood = 1_200;
    let mut front_answers = 0;
    for i in 0..flood {
        cache
            .verify(&plain(&k, NOW + 600, &format!("new{i}")), &keys, &p, NOW)
            .unwrap();
        if i % 4 == 3 {
            for t in &hot {
                if let Verified::Plain(_) = cache.verify(t, &keys, &p, NOW).unwrap() {
                    front_answers += 1;
                }
            }
        }
    }
    assert!(cache.stats().evictions > 0, "the flood filled the cache");
    assert_eq!(
        cache.stats().misses,
        hot.len() as u64 + flood,
        "no returning reader was verified again"
    );
    assert!(
        front_answers > hot.len() * flood as usize / 8,
        "{front_answers} front answers"
    );
}

/// Subscriptions go into a slot as six words and come back the same; words no fill could have
/// written (a length past the end, more than fits) come back as nothing, never as a panic.
#[test]
fn names_survive_the_slot_and_bad_words_are_refused() {
    for names in [
        vec![],
        vec!["premium"],
        vec!["a", "bb", "ccc"],
        vec!["x"; 23],
    ] {
        let names: Vec<String> = names.into_iter().map(String::from).collect();
        let packed = PackedNames::new(&names);
        assert!(packed.fits());
        assert_eq!(PackedNames::from_words(packed.to_words()), Some(packed));
    }
    let full = PackedNames::new(&["y".repeat(46)]);
    assert!(full.fits(), "one name of 46 bytes fills all 47");
    assert_eq!(PackedNames::from_words(full.to_words()), Some(full));
    assert!(!PackedNames::new(&["y".repeat(47)]).fits());
    let mut words = PackedNames::new(&["premium".to_string()]).to_words();
    words[0] = (words[0] & !0xff) | 5; // `used` 5, inside the name (its 8 bytes end at 8)
    assert_eq!(PackedNames::from_words(words), None);
    words[0] = (words[0] & !0xff) | 48; // more than fits
    assert_eq!(PackedNames::from_words(words), None);
    words[0] = (words[0] & !0xff) | 0xff; // did not fit
    assert_eq!(PackedNames::from_words(words), None);
    words[0] = (words[0] & !0xffff) | 2 | (60 << 8); // used 2, first length 60
    assert_eq!(PackedNames::from_words(words), None);
}

/// Threads verifying readers of two subscriptions through a small cache (evictions all the
/// time, so fills and forgets race), while another clears and sweeps it: every answer, from
/// the front or the map, carries the reader's own subscriptions.
#[test]
fn racing_readers_evictions_and_clears_never_mix_up_readers() {
    let k = es("k1");
    let keys = set(&[&k]);
    let p = Policy::default();
    let cache = TokenCache::new(32);
    let readers: Vec<(String, bool)> = (0..96)
        .map(|i| {
            let subs = if i % 2 == 0 { "premium" } else { "basic" };
            let t = k
                .sign(&json!({"sub": format!("r{i}"), "exp": NOW + 600, "subs": [subs]}))
                .unwrap();
            (t, i % 2 == 0)
        })
        .collect();
    let premium = ["premium".to_string()];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let plain_answers = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let (cache, keys, p, readers, premium) = (&cache, &keys, &p, &readers, &premium);
                let plain_answers = &plain_answers;
                s.spawn(move || {
                    for round in 0..6 {
                        // each worker walks its own third, then all of them, hot first
                        for (t, entitled) in readers
                            .iter()
                            .skip(w * 32)
                            .take(32)
                            .chain(readers.iter().skip((round * 7) % 96))
                        {
                            for _ in 0..2 {
                                let v = cache.verify(t, keys, p, NOW).unwrap();
                                assert_eq!(v.entitled(premium), *entitled, "a reader's own answer");
                                if matches!(v, Verified::Plain(_)) {
                                    plain_answers
                                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        s.spawn(|| {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                if i.is_multiple_of(50) {
                    cache.clear();
                } else {
                    cache.sweep_step(NOW);
                }
                std::thread::yield_now();
            }
        });
        for w in workers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    assert!(cache.len() <= 32);
    assert!(
        plain_answers.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the front answered some"
    );
}

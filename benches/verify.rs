//! Criterion benches for the per-request costs of access control:
//! ES256 and RS256 verification with no token cache (the "never-seen token" path), a
//! verified-token cache hit (the returning-reader path), and request normalization + cache key.
//!
//! Run: `cargo bench --bench verify` (see benches/README.md for the method and figures).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tollgate::auth::{jwt, mint, Alg, KeySet, Policy, TokenCache};
use tollgate::cache::{cache_key, Variant};
use tollgate::request::{normalize_path, strip_query_params};

const NOW: u64 = 1_800_000_000;

fn setup(alg: Alg) -> (String, KeySet) {
    let key = mint::SigningKey::generate(alg, "k1").expect("keygen");
    let claims = serde_json::json!({"sub": "u1", "subs": ["premium"], "exp": NOW + 3600});
    let token = key.sign(&claims).expect("sign");
    let keys = KeySet::from_jwks_json(&mint::jwks_json(&[&key])).expect("jwks");
    (token, keys)
}

fn verification(c: &mut Criterion) {
    let policy = Policy::default();
    for alg in [Alg::ES256, Alg::RS256] {
        let (token, keys) = setup(alg);
        assert!(jwt::verify(&token, &keys, &policy, NOW).is_ok());
        c.bench_function(&format!("verify_cold_{}", alg.as_str()), |b| {
            b.iter(|| jwt::verify(black_box(&token), &keys, &policy, NOW))
        });
    }
    let (token, keys) = setup(Alg::ES256);
    let cache = TokenCache::new(100_000);
    assert!(cache.verify(&token, &keys, &policy, NOW).is_ok());
    c.bench_function("token_cache_hit_ES256", |b| {
        b.iter(|| cache.verify(black_box(&token), &keys, &policy, NOW))
    });
}

/// ES256 tokens of distinct readers, signed by `key`; with `sid`, each names its session (as
/// tokens that can be revoked do), which the token cache's front does not hold.
fn readers(key: &mint::SigningKey, from: usize, n: usize, sid: bool) -> Vec<String> {
    (from..from + n)
        .map(|i| {
            let mut claims =
                serde_json::json!({"sub": format!("u{i}"), "subs": ["premium"], "exp": NOW + 3600});
            if sid {
                claims["sid"] = format!("s{i}").into();
            }
            key.sign(&claims).expect("sign")
        })
        .collect()
}

/// 10,000 returning readers in turn (the rotating-token row of `benches/peers/run.sh`), in a
/// cache holding only them, and in one first filled by a flood of tokens seen once (the state
/// `run.sh` leaves after its never-seen row: 100,000 entries, evictions); and 10,000 more
/// readers whose tokens carry a `sid`, in the same two caches. Under `cargo test` (no
/// `--bench`) a tenth of each, so that the suite does not sign 140,000 tokens unoptimized.
fn rotating(c: &mut Criterion) {
    let scale = if std::env::args().any(|a| a == "--bench") {
        1
    } else {
        10
    };
    let (capacity, hot_n, flood_n) = (100_000 / scale, 10_000 / scale, 120_000 / scale);
    let policy = Policy::default();
    let key = mint::SigningKey::generate(Alg::ES256, "k1").expect("keygen");
    let keys = KeySet::from_jwks_json(&mint::jwks_json(&[&key])).expect("jwks");
    let hot = readers(&key, 0, hot_n, false);
    let hot_sid = readers(&key, hot_n, hot_n, true);
    let flood = readers(&key, 2 * hot_n, flood_n, false);
    let quiet = TokenCache::new(capacity);
    let flooded = TokenCache::new(capacity);
    for t in &flood {
        assert!(flooded.verify(t, &keys, &policy, NOW).is_ok());
    }
    assert!(flooded.stats().evictions > 0, "the flood filled the cache");
    // warm as `run.sh` does: until a pass over the readers misses none (an eviction pass may
    // drop a reader inserted before it and not yet back)
    for cache in [&quiet, &flooded] {
        let warm = (0..10).any(|_| {
            let misses = cache.stats().misses;
            for t in hot.iter().chain(&hot_sid) {
                assert!(cache.verify(t, &keys, &policy, NOW).is_ok());
            }
            cache.stats().misses == misses
        });
        assert!(warm, "every reader cached within ten passes");
    }
    for (name, cache, hot) in [
        ("quiet", &quiet, &hot),
        ("flooded", &flooded, &hot),
        ("sid_quiet", &quiet, &hot_sid),
        ("sid_flooded", &flooded, &hot_sid),
    ] {
        let before = cache.stats().misses;
        let mut i = 0;
        c.bench_function(&format!("token_cache_rotating_10k_{name}"), |b| {
            b.iter(|| {
                i = (i + 1) % hot.len();
                cache.verify(black_box(&hot[i]), &keys, &policy, NOW)
            })
        });
        assert_eq!(
            cache.stats().misses,
            before,
            "every rotating token stays cached"
        );
    }
}

fn request_path(c: &mut Criterion) {
    c.bench_function("normalize_strip_and_key", |b| {
        b.iter(|| {
            let p = normalize_path(black_box("/premium/2026/11/edge-paywalls")).expect("path");
            let q = strip_query_params(black_box("utm=1&token=abc"), &["token"]);
            cache_key("news.example.com", &p, &q, Variant::Subscriber)
        })
    });
}

criterion_group!(benches, verification, rotating, request_path);
criterion_main!(benches);

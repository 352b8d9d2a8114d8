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

fn request_path(c: &mut Criterion) {
    c.bench_function("normalize_strip_and_key", |b| {
        b.iter(|| {
            let p = normalize_path(black_box("/premium/2026/11/edge-paywalls")).expect("path");
            let q = strip_query_params(black_box("utm=1&token=abc"), &["token"]);
            cache_key("news.example.com", &p, &q, Variant::Subscriber)
        })
    });
}

criterion_group!(benches, verification, request_path);
criterion_main!(benches);

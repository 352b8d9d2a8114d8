//! Randomized, concurrent: thousands of requests mixing good and bad tokens in every source over
//! a few premium URLs, through a cache too small to hold them all, with purges in between.
//! Not one non-subscriber may ever see subscriber content, and every subscriber must get the
//! whole article.
//!
//! The request mix comes from a seeded RNG; the seed is printed. Rerun one with
//! `TOLLGATE_SEED=<seed> cargo test --test randomized -- --nocapture`.
//! `TOLLGATE_RANDOM_REQUESTS` changes the number of requests (default 3000);
//! `TOLLGATE_RANDOM_NO_PURGE=1` turns the purges off (to tell purge races from fill races).

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::tokens;
use support::{
    premium_body, Edge, EdgeOptions, Origin, Tok, SECRET_HEADER, SUBSCRIBER_MARK, VARIANT_HEADER,
};

const CONCURRENCY: usize = 64;
const PAD: usize = 64 * 1024;
const PATHS: [&str; 6] = [
    "/premium/r0",
    "/premium/r1",
    "/premium/r2",
    "/premium/r3",
    "/premium/r4",
    "/premium/r5",
];
const QUERIES: [&str; 3] = ["", "?v=1", "?v=2"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Entitled,
    NotEntitled,
    Forged,
    Expired,
    Malformed,
    Missing,
}

#[derive(Debug, Clone, Copy)]
enum Source {
    Query,
    Bearer,
    Cookie,
}

#[derive(Debug, Clone)]
struct Plan {
    base: &'static str,
    query: &'static str,
    kind: Kind,
    token: Option<String>,
    source: Source,
    spoof_variant: bool,
    other_cookie: bool,
}

#[derive(Default, Debug)]
struct Tally {
    subscriber_ok: usize,
    non_subscriber_ok: usize,
    hits: usize,
    misses: usize,
    leaks: Vec<String>,
    failures: Vec<String>,
}

fn token_pool(
    es: &tollgate::auth::mint::SigningKey,
    rs: &tollgate::auth::mint::SigningKey,
) -> Vec<(Kind, Vec<String>)> {
    let with_subs = |key: &tollgate::auth::mint::SigningKey, sub: &str, subs: serde_json::Value| {
        let mut c = tokens::claims(sub, &[], 3600);
        c["subs"] = subs;
        tokens::sign(key, &c)
    };
    let good = tokens::subscriber(es, "trunc");
    vec![
        (
            Kind::Entitled,
            vec![
                tokens::subscriber(es, "u1"),
                tokens::subscriber(es, "u2"),
                tokens::valid(es, "u3", &["sports", "premium"], 3600),
                with_subs(es, "u4", json!("news,premium")),
                tokens::subscriber(rs, "u5"),
                tokens::valid(rs, "u6", &["premium", "archive"], 600),
            ],
        ),
        (
            Kind::NotEntitled,
            vec![
                tokens::valid(es, "n1", &["sports"], 3600),
                tokens::valid(es, "n2", &[], 3600),
                with_subs(es, "n3", json!("sports,news")),
                tokens::valid(rs, "n4", &["Premium"], 3600),
                tokens::valid(es, "n5", &["premium-lite"], 3600),
            ],
        ),
        (
            Kind::Forged,
            vec![
                tokens::forged(es),
                tokens::forged(rs),
                tokens::alg_none(es),
                tokens::hs256_with_public_key(es),
                tokens::hs256_with_public_key(rs),
                tokens::der_signature(es),
                tokens::wrong_kid(es),
                tokens::wrong_issuer(es),
                tokens::wrong_audience(rs),
            ],
        ),
        (
            Kind::Expired,
            vec![
                tokens::expired(es),
                tokens::expired(rs),
                tokens::not_yet_valid(es),
            ],
        ),
        (
            Kind::Malformed,
            vec![
                tokens::malformed(),
                "a.b.c".to_string(),
                "eyJhbGciOiJFUzI1NiJ9.eyJ9.".to_string(),
                good[..good.len() - 4].to_string(),
                format!("{good}.extra"),
                format!("{good}="),
            ],
        ),
    ]
}

fn make_plan(rng: &mut StdRng, pool: &[(Kind, Vec<String>)], n: usize) -> Vec<Plan> {
    let kinds = [
        (Kind::Entitled, 35),
        (Kind::NotEntitled, 15),
        (Kind::Forged, 15),
        (Kind::Expired, 10),
        (Kind::Malformed, 10),
        (Kind::Missing, 15),
    ];
    let total: u32 = kinds.iter().map(|(_, w)| w).sum();
    (0..n)
        .map(|_| {
            let mut roll = rng.gen_range(0..total);
            let kind = kinds
                .iter()
                .find(|(_, w)| {
                    if roll < *w {
                        true
                    } else {
                        roll -= w;
                        false
                    }
                })
                .map(|(k, _)| *k)
                .expect("weights cover the range");
            let token = pool
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, list)| list.choose(rng).expect("non-empty pool").clone());
            Plan {
                base: PATHS.choose(rng).copied().unwrap(),
                query: QUERIES.choose(rng).copied().unwrap(),
                kind,
                token,
                source: *[Source::Query, Source::Bearer, Source::Cookie]
                    .choose(rng)
                    .unwrap(),
                spoof_variant: rng.gen_bool(0.25),
                other_cookie: rng.gen_bool(0.3),
            }
        })
        .collect()
}

async fn run_one(client: &reqwest::Client, edge: &Edge, plan: &Plan, tally: &Mutex<Tally>) {
    let path = format!("{}{}", plan.base, plan.query);
    let tok = match (&plan.token, plan.source) {
        (None, _) => Tok::None,
        (Some(t), Source::Query) => Tok::Query(t),
        (Some(t), Source::Bearer) => Tok::Bearer(t),
        (Some(t), Source::Cookie) => Tok::Cookie(t),
    };
    let mut rb = match (tok, plan.other_cookie) {
        (Tok::Cookie(t), true) => client
            .get(edge.url(&path))
            .header("cookie", format!("theme=dark; token={t}; lang=en")),
        (tok, true) => support::request(client, edge, &path, tok).header("cookie", "theme=dark"),
        (tok, false) => support::request(client, edge, &path, tok),
    };
    if plan.spoof_variant {
        rb = rb.header(VARIANT_HEADER, "subscriber");
    }
    let r = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            tally
                .lock()
                .unwrap()
                .failures
                .push(format!("{plan:?}: request failed: {e}"));
            return;
        }
    };
    let status = r.status().as_u16();
    let cache_status = r
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let private = r
        .headers()
        .get("cache-control")
        .is_some_and(|v| v.as_bytes() == b"private");
    let body = match r.text().await {
        Ok(b) => b,
        Err(e) => {
            tally
                .lock()
                .unwrap()
                .failures
                .push(format!("{plan:?}: body failed: {e}"));
            return;
        }
    };
    let subscriber = plan.kind == Kind::Entitled;
    let mut t = tally.lock().unwrap();
    if cache_status == "tollgate; hit" {
        t.hits += 1;
    } else if cache_status.contains("fwd=miss") {
        t.misses += 1;
    }
    let head: String = body.chars().take(60).collect();
    if status != 200 {
        t.failures.push(format!(
            "{plan:?}: status {status} ({cache_status}) {head:?}"
        ));
    } else if subscriber {
        if body == premium_body(plan.base, true, PAD) && private {
            t.subscriber_ok += 1;
        } else {
            t.failures.push(format!(
                "{plan:?}: subscriber did not get the full article (len {}, private {private}, {cache_status}): {head:?}",
                body.len()
            ));
        }
    } else if body.contains(SUBSCRIBER_MARK) {
        t.leaks.push(format!("{plan:?}: {cache_status}: {head:?}"));
    } else if body == premium_body(plan.base, false, PAD) {
        t.non_subscriber_ok += 1;
    } else {
        t.failures.push(format!(
            "{plan:?}: non-subscriber got an unexpected body (len {}, {cache_status}): {head:?}",
            body.len()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_subscriber_content_ever_reaches_a_non_subscriber() {
    let seed: u64 = std::env::var("TOLLGATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    let n: usize = std::env::var("TOLLGATE_RANDOM_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    println!("randomized seed: {seed} (rerun with TOLLGATE_SEED={seed}), {n} requests");
    let mut rng = StdRng::seed_from_u64(seed);

    let es = tokens::es256("k-es");
    let rs = tokens::rs256("k-rs");
    let origin = Origin::start();
    origin.set_padding(PAD);
    // 6 paths × 3 queries × 2 variants × 64 KiB ≈ 2.3 MiB: a 1 MiB cache must evict and refill.
    let edge = Arc::new(Edge::start_with(
        &origin,
        &[&es, &rs],
        EdgeOptions {
            cache: "{ memory: { max_size: 1MiB }, max_object_size: 256KiB }".into(),
            // A third of these requests carry bad tokens, all from one address: the
            // failed-credential budget would rightly answer most of them 429 (tested on its own
            // in edge_safety.rs). Here every bad token must reach its variant decision.
            extra_yaml: "limits: { failed_auth: { enabled: false } }".into(),
            ..EdgeOptions::default()
        },
    ));
    let pool = token_pool(&es, &rs);
    let plan = Arc::new(make_plan(&mut rng, &pool, n));

    let tally = Arc::new(Mutex::new(Tally::default()));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let client = support::pooled_client();
    let started = Instant::now();

    let purger = {
        let edge = edge.clone();
        let done = done.clone();
        let mut prng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            let c = support::client();
            let mut purges = 0usize;
            let mut failed = Vec::new();
            let enabled = std::env::var_os("TOLLGATE_RANDOM_NO_PURGE").is_none();
            while enabled && !done.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(prng.gen_range(20..80))).await;
                let body = if prng.gen_bool(0.2) {
                    r#"{"prefixes": ["/premium/"]}"#.to_string()
                } else {
                    format!(r#"{{"paths": ["{}"]}}"#, PATHS.choose(&mut prng).unwrap())
                };
                let sent = c
                    .post(edge.admin_url("/admin/purge"))
                    .bearer_auth(&edge.admin_token)
                    .body(body.clone())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 200 => purges += 1,
                    Ok(r) => failed.push(format!("{body}: {}", r.status())),
                    Err(e) => failed.push(format!("{body}: {e}")),
                }
            }
            (purges, failed)
        })
    };

    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (edge, plan, tally, next, client) = (
            edge.clone(),
            plan.clone(),
            tally.clone(),
            next.clone(),
            client.clone(),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(p) = plan.get(i) else { break };
                run_one(&client, &edge, p, &tally).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker panicked");
    }
    done.store(true, Ordering::Relaxed);
    let (purges, purge_failures) = purger.await.expect("purger panicked");
    let elapsed = started.elapsed();

    let purges = {
        let t = tally.lock().unwrap();
        println!(
        "{n} requests in {elapsed:.1?}: {} subscriber ok, {} non-subscriber ok, {} hits, {} misses, \
         {purges} purges, {} origin requests, {} leaks, {} failures",
        t.subscriber_ok,
        t.non_subscriber_ok,
        t.hits,
        t.misses,
        origin.total(),
        t.leaks.len(),
        t.failures.len()
    );
        assert!(
            t.leaks.is_empty(),
            "seed {seed}: {} responses to non-subscribers carried subscriber content, e.g.:\n{}",
            t.leaks.len(),
            t.leaks
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        // A crashed edge explains every failure below; say so first.
        edge.assert_running();
        assert!(
            purge_failures.is_empty(),
            "purges failed: {purge_failures:?}"
        );
        assert!(
            t.failures.is_empty(),
            "seed {seed}: {} wrong responses, e.g.:\n{}",
            t.failures.len(),
            t.failures
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(
            t.subscriber_ok + t.non_subscriber_ok,
            n,
            "every request was checked"
        );
        assert!(
            t.subscriber_ok > 0 && t.non_subscriber_ok > 0,
            "both populations exercised"
        );
        assert!(
            t.hits > 0 && t.misses > 0,
            "both cache hits and misses happened"
        );
        purges
    };
    assert!(purges > 0, "purges ran during the traffic");
    let evictions = edge
        .metric("tollgate_cache_evictions_total", &[("tier", "memory")])
        .await;
    println!("{evictions} evictions");
    assert!(
        evictions > 0.0,
        "the small cache evicted entries (else the refill path went untested)"
    );

    // Whatever the mix, the origin never saw a token, always the one real secret, and exactly
    // one variant header with a value it should see.
    for r in origin.requests() {
        assert!(!r.uri.contains("token="), "{r:?}");
        assert!(r.header_all("authorization").is_empty(), "{r:?}");
        assert!(
            r.header_all("cookie").iter().all(|c| !c.contains("token=")),
            "{r:?}"
        );
        assert_eq!(
            r.header_all(SECRET_HEADER),
            vec![edge.secret.clone()],
            "{r:?}"
        );
        let v = r.header_all(VARIANT_HEADER);
        assert!(
            v == ["anonymous"] || v == ["subscriber"],
            "variant header {v:?}"
        );
    }
}

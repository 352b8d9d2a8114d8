//! The memory tier costs what it says (issue 19): `cache.memory.max_size` bounds the memory the
//! node uses for cached objects, `tollgate_cache_bytes{tier="memory"}` says what they really
//! hold, and purged objects are given back promptly. Real edge, real origin, the memory it
//! holds read from `/proc` (RSS, with its memory files counted whole: see [`held`]).
//!
//! The constant `BASE` is what the node's RSS may grow by besides the stored objects during a
//! fill: the allocator's free lists and arenas, connection buffers, the origin pool, TinyUFO's
//! frequency sketch. It was chosen from measurement (see the closing note of issue 19) with
//! room, not fitted to pass.

mod support;

use std::time::{Duration, Instant};

use support::{Edge, EdgeOptions, Origin};

const MIB: u64 = 1024 * 1024;
/// Growth allowed besides the objects themselves (see the module docs).
const BASE: u64 = 24 * MIB;

/// Object sizes of the mixed fill: teaser pages to images, on the heap and (64 KiB and more)
/// in sealed memory files.
const SIZES: [usize; 7] = [
    200,
    900,
    4 * 1024,
    16 * 1024,
    40 * 1024,
    64 * 1024,
    200 * 1024,
];

fn edge_with_memory(origin: &Origin, max_size: &str) -> Edge {
    Edge::start_with(
        origin,
        &[],
        EdgeOptions {
            cache: format!("{{ memory: {{ max_size: {max_size} }} }}"),
            threads: 1,
            ..EdgeOptions::default()
        },
    )
}

/// GET every path once, `concurrency` at a time; every answer must be a 200 with its body.
async fn fill(edge: &Edge, paths: &[(String, usize)], concurrency: usize) {
    let client = support::pooled_client();
    let mut chunks = paths.chunks(concurrency);
    for chunk in chunks.by_ref() {
        let mut tasks = Vec::new();
        for (p, len) in chunk {
            let url = edge.url(p);
            let client = client.clone();
            let len = *len;
            tasks.push(tokio::spawn(async move {
                let r = client.get(url).send().await.expect("GET");
                let status = r.status().as_u16();
                let body = r.bytes().await.expect("body");
                (status, body.len() == len)
            }));
        }
        for t in tasks {
            let (status, whole) = t.await.expect("task");
            assert!(status == 200 && whole, "a fill failed: {status}");
        }
    }
}

/// The memory process `pid` holds: its resident pages, with its shared-memory pages replaced by
/// the whole size of the memory files it has open. Bodies of 64 KiB and more live in sealed
/// memory files (`memfd`), written with `write(2)` and sent with `sendfile`: their pages are
/// charged to the node but mostly never mapped, so `VmRSS` alone does not see them.
fn held(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| {
                l[name.len()..]
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let files: u64 = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .filter_map(|e| {
            let path = e.ok()?.path();
            let target = std::fs::read_link(&path).ok()?;
            target
                .to_string_lossy()
                .starts_with("/memfd:")
                .then(|| std::fs::metadata(&path).ok().map(|m| m.len()))
                .flatten()
        })
        .sum();
    (kib("VmRSS:") - kib("RssShmem:")) * 1024 + files
}

async fn memory_bytes(edge: &Edge) -> u64 {
    edge.metric("tollgate_cache_bytes", &[("tier", "memory")])
        .await as u64
}

/// 3× the tier's size of mixed objects through a 32 MiB memory tier: RSS grows by no more than
/// 1.25 × `max_size` + `BASE`, and the tier's byte count is within 10 % of what it grew by.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_memory_tier_stays_within_its_size() {
    const MAX: u64 = 32 * MIB;
    let origin = Origin::start();
    let edge = edge_with_memory(&origin, "32MiB");
    let mut paths = Vec::new();
    let mut total = 0u64;
    let mut i = 0usize;
    while total < 3 * MAX {
        let len = SIZES[i % SIZES.len()];
        let p = format!("/news/mem/{i}");
        origin.set_large(&p, len);
        paths.push((p, len));
        total += len as u64;
        i += 1;
    }
    // warm the process (connections, pools, first allocations) before the baseline
    fill(&edge, &paths[..64], 16).await;
    let before = held(edge.pid());
    let stored_before = memory_bytes(&edge).await;
    fill(&edge, &paths[64..], 16).await;
    let grown = held(edge.pid()).saturating_sub(before);
    let stored = memory_bytes(&edge).await;
    let objects = edge
        .metric("tollgate_cache_objects", &[("tier", "memory")])
        .await;
    eprintln!(
        "filled {} objects, {} MiB: held memory grew {:.1} MiB; tier holds {objects} objects, \
         {:.1} MiB by its count",
        paths.len(),
        total / MIB,
        grown as f64 / MIB as f64,
        stored as f64 / MIB as f64
    );
    assert!(
        stored <= MAX,
        "the tier counts {stored} bytes, over its {MAX}"
    );
    assert!(
        stored >= MAX / 2,
        "the tier holds only {stored} bytes after 3× its size: it did not fill"
    );
    assert!(
        grown <= MAX + MAX / 4 + BASE,
        "RSS grew {:.1} MiB for a 32 MiB tier (allowed 1.25 × 32 MiB + {} MiB)",
        grown as f64 / MIB as f64,
        BASE / MIB
    );
    // what the tier says it holds is what it costs: its count against the growth plus what it
    // held at the baseline (the warm-up objects)
    let held = (grown + stored_before) as f64;
    let diff = (held - stored as f64).abs();
    eprintln!(
        "tier count {:.1} MiB vs RSS growth + warm-up {:.1} MiB: {:.1} %",
        stored as f64 / MIB as f64,
        held / MIB as f64,
        100.0 * diff / held
    );
    assert!(
        diff <= 0.10 * held,
        "tollgate_cache_bytes says {:.1} MiB, RSS grew {:.1} MiB (+{:.1} MiB before)",
        stored as f64 / MIB as f64,
        grown as f64 / MIB as f64,
        stored_before as f64 / MIB as f64
    );
}

/// Purge churn: 1 MiB objects filled and purged over and over; RSS stays below 1.5 ×
/// `max_size` + `BASE`. `TOLLGATE_CHURN_SECONDS` (default 5), `TOLLGATE_CHURN_MAX` (default
/// 64MiB) and `TOLLGATE_CHURN_ROUND` (default twice the tier) run it longer and bigger
/// (`benches/memory/churn.sh`: 2 GiB per round for 60 s through 256 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_churn_gives_memory_back() {
    let seconds: u64 = std::env::var("TOLLGATE_CHURN_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let max_text = std::env::var("TOLLGATE_CHURN_MAX").unwrap_or_else(|_| "64MiB".into());
    let max = tollgate::config::parse_size(&max_text).expect("TOLLGATE_CHURN_MAX");
    let origin = Origin::start();
    let edge = edge_with_memory(&origin, &max_text);
    // twice the tier per round (or `TOLLGATE_CHURN_ROUND`), in 1 MiB objects (the tier holds
    // objects up to an eighth of its size)
    let round = std::env::var("TOLLGATE_CHURN_ROUND")
        .ok()
        .map(|s| tollgate::config::parse_size(&s).expect("TOLLGATE_CHURN_ROUND"))
        .unwrap_or(2 * max);
    let per_round = (round / MIB) as usize;
    let paths: Vec<(String, usize)> = (0..per_round)
        .map(|i| {
            let p = format!("/news/churn/{i}");
            origin.set_large(&p, MIB as usize);
            (p, MIB as usize)
        })
        .collect();
    fill(&edge, &paths[..4], 4).await;
    let before = held(edge.pid());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut rounds, mut peak) = (0, 0u64);
    let mut purged = 0u64;
    while Instant::now() < deadline || rounds < 2 {
        fill(&edge, &paths, 8).await;
        peak = peak.max(held(edge.pid()));
        purged += edge.purge_ok(r#"{"prefixes": ["/news/churn/"]}"#).await;
        peak = peak.max(held(edge.pid()));
        rounds += 1;
    }
    let grown = peak.saturating_sub(before);
    eprintln!(
        "{rounds} rounds of {per_round} MiB filled and purged ({purged} objects purged) through a \
         {} MiB tier: RSS peak grew {:.1} MiB",
        max / MIB,
        grown as f64 / MIB as f64
    );
    assert!(purged > 0, "nothing was stored, so nothing was purged");
    assert!(
        grown <= max + max / 2 + BASE,
        "RSS grew {:.1} MiB over churn through a {} MiB tier (allowed 1.5 × + {} MiB)",
        grown as f64 / MIB as f64,
        max / MIB,
        BASE / MIB
    );
    // and what was purged is gone from the count at once
    assert_eq!(memory_bytes(&edge).await, 0, "purged objects still counted");
}

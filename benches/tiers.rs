//! Criterion benches for a complete cache hit from each tier: lookup plus `read_body` until the
//! body ends, through the `TieredStore` pingora sees, for 1 KiB and 100 KiB bodies.
//!
//! - `hit_memory_*`: a store whose memory tier holds the object.
//! - `hit_disk_*`: a store whose memory tier is too small to take the object (its limit is
//!   512 B), so every iteration opens, verifies and reads the file on disk. The file was just
//!   written and is read every iteration, so it stays in the page cache: this is a hot disk hit.
//!
//! Both run on a tokio current-thread runtime (disk I/O goes to its blocking pool, as in the
//! node). Run: `cargo bench --bench tiers` (see benches/README.md, "Cache tiers").

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora_cache::key::CacheHashKey;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta, Storage};
use pingora_http::ResponseHeader;
use tokio::runtime::Runtime;
use tollgate::cache::{cache_key, DiskStore, MemoryStore, TieredStore, Variant};

const SIZES: [(&str, usize); 2] = [("1KiB", 1024), ("100KiB", 100 * 1024)];

fn meta(len: usize) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).expect("header");
    h.insert_header("cache-control", "max-age=86400")
        .expect("header");
    h.insert_header("content-length", len.to_string())
        .expect("header");
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(86_400), now, 0, 0, h)
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Store `data` under `key` through the store's own fill path (both tiers, as a miss would).
async fn fill(store: &'static TieredStore, key: &CacheKey, data: &[u8]) {
    let span = Span::inactive().handle();
    let mut miss = store
        .get_miss_handler(key, &meta(data.len()), &span)
        .await
        .expect("miss handler");
    miss.write_body(Bytes::copy_from_slice(data), true)
        .await
        .expect("write");
    miss.finish().await.expect("finish");
}

/// One complete hit: lookup, then every body chunk. Returns (body bytes, from disk).
async fn hit(store: &'static TieredStore, key: &CacheKey) -> (usize, bool) {
    let span = Span::inactive().handle();
    let (_meta, mut handler) = store
        .lookup(key, &span)
        .await
        .expect("lookup")
        .expect("a hit");
    let mut n = 0;
    while let Some(chunk) = handler.read_body().await.expect("read") {
        n += black_box(chunk).len();
    }
    let from_disk = handler
        .as_any()
        .downcast_ref::<tollgate::cache::DiskHit>()
        .is_some();
    handler.finish(store, key, &span).await.expect("finish");
    (n, from_disk)
}

fn tiers(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let open_disk = |name: &str| {
        let d = DiskStore::open(&dir.path().join(name), 1 << 30, 64 << 20, None, None)
            .expect("disk tier");
        d.scan();
        d.leak()
    };
    // memory tier as configured by `memory: { max_size: 64MiB }` (object limit 8 MiB)
    let hot = TieredStore::new(
        MemoryStore::new(64 << 20, 8 << 20, None).leak(),
        Some(open_disk("hot")),
        None,
    )
    .leak();
    // `memory: { max_size: 4KiB }`: object limit 512 B, so nothing here is ever promoted
    let cold = TieredStore::new(
        MemoryStore::new(4096, 512, None).leak(),
        Some(open_disk("cold")),
        None,
    )
    .leak();

    for (label, len) in SIZES {
        let data = body(len);
        let key = cache_key(
            "bench.example",
            &format!("/obj/{label}"),
            "",
            Variant::Public,
        );
        rt.block_on(async {
            fill(hot, &key, &data).await;
            fill(cold, &key, &data).await;
            // check before timing: the right tier answers, with the whole body
            assert_eq!(
                hit(hot, &key).await,
                (len, false),
                "memory store: not a memory hit"
            );
            for _ in 0..3 {
                assert_eq!(
                    hit(cold, &key).await,
                    (len, true),
                    "disk store: not a disk hit"
                );
            }
        });
        assert!(cold
            .disk()
            .expect("disk")
            .open_object(&key.combined_bin())
            .is_some());
        run(c, &rt, &format!("hit_memory_{label}"), hot, &key);
        run(c, &rt, &format!("hit_disk_{label}"), cold, &key);
    }
}

fn run(c: &mut Criterion, rt: &Runtime, name: &str, store: &'static TieredStore, key: &CacheKey) {
    c.bench_function(name, |b| b.iter(|| rt.block_on(hit(store, key))));
}

criterion_group!(benches, tiers);
criterion_main!(benches);

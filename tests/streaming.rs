//! Large objects and ranges from the disk tier, end to end: a 200 MiB object is served from disk
//! after a restart without the edge ever holding it in memory, and range requests on memory and
//! disk hits return exactly the bytes asked for, across the 256 KiB block boundaries.

mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use support::tokens;
use support::{disk_options, get_bin, get_streamed, sha256_hex, Edge, Origin};

const MEMORY_HIT: &str = "tollgate; hit";
const DISK_HIT: &str = "tollgate; hit; detail=disk";
const STORED_MISS: &str = "tollgate; fwd=miss; stored";

const MIB: usize = 1024 * 1024;

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

/// A 200 MiB object (above the memory tier's per-object limit, so it lives on disk only) is
/// stored on the first request; after a restart it is a disk hit with the origin's SHA-256, and
/// the restarted edge's peak RSS stays far below the object's size: it streams from disk.
#[tokio::test]
async fn a_200_mib_object_streams_from_disk_without_being_held_in_memory() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "256MiB"),
    );
    let path = "/news/big.bin";
    let t = Instant::now();
    let body = origin.set_large(path, 200 * MIB);
    eprintln!("origin body generated in {:?}", t.elapsed());
    // The origin's digest, computed while the fill runs (SHA-256 is slow in debug builds).
    let want = {
        let body = body.clone();
        std::thread::spawn(move || sha256_hex(&body))
    };
    let client = support::big_body_client();

    let t = Instant::now();
    let first = get_streamed(&client, &edge, path, &body).await;
    let want = want.join().expect("hash thread");
    eprintln!("fill: {} bytes in {:?}", first.len, t.elapsed());
    assert_eq!(first.status, 200, "{first:?}");
    assert!(
        first.matches(&body),
        "fill: {first:?}, origin sha256 {want}"
    );
    assert_eq!(first.sha256, want, "fill: SHA-256 of the streamed body");
    assert_eq!(first.cache_status(), STORED_MISS);
    let (v, ok) = edge
        .poll_metric(
            "tollgate_cache_objects",
            &[("tier", "disk")],
            Duration::from_secs(20),
            |v| v >= 1.0,
        )
        .await;
    assert!(
        ok,
        "the 200 MiB object never reached the disk tier (objects {v})"
    );
    eprintln!("first edge after the fill: {:?}", edge.rss());

    edge.restart();
    let at_start = edge.rss();
    let t = Instant::now();
    let second = get_streamed(&client, &edge, path, &body).await;
    let after = edge.rss();
    eprintln!(
        "disk hit: {} bytes in {:?}; restarted edge RSS at start {:.1} MiB, after the 200 MiB \
         disk hit {:.1} MiB, peak (VmHWM) {:.1} MiB",
        second.len,
        t.elapsed(),
        mib(at_start.now),
        mib(after.now),
        mib(after.peak)
    );
    assert_eq!(second.status, 200, "{second:?}");
    assert_eq!(second.cache_status(), DISK_HIT);
    assert!(
        second.matches(&body),
        "disk hit: sha256 {} len {} (first differing byte {:?}, error {:?}), origin sha256 {want}",
        second.sha256,
        second.len,
        second.first_mismatch,
        second.error
    );
    assert_eq!(
        second.sha256, want,
        "disk hit: SHA-256 of the streamed body"
    );
    assert_eq!(origin.hits(path), 1, "the disk hit must not ask the origin");
    assert!(
        after.peak < 100 * MIB as u64,
        "the restarted edge's peak RSS is {:.1} MiB while serving a 200 MiB object from disk: \
         the object is held in memory instead of streamed",
        mib(after.peak)
    );
    let mem_bytes = edge
        .metric("tollgate_cache_bytes", &[("tier", "memory")])
        .await;
    assert!(
        mem_bytes < (200 * MIB) as f64,
        "an object above the memory tier's limit must not be promoted: memory holds {mem_bytes}"
    );
    edge.assert_running();
}

/// `(Range header, first byte, last byte)` for an object of `len` bytes: the start, a middle
/// slice, a slice across the first 256 KiB block boundary, a suffix, an open end.
fn ranges(len: usize) -> Vec<(String, usize, usize)> {
    vec![
        ("bytes=0-99".into(), 0, 99),
        ("bytes=1000-1999".into(), 1000, 1999),
        ("bytes=262100-262200".into(), 262_100, 262_200),
        ("bytes=-500".into(), len - 500, len - 1),
        ("bytes=5000-".into(), 5000, len - 1),
    ]
}

async fn check_range(
    edge: &Edge,
    path: &str,
    body: &Bytes,
    range: &str,
    a: usize,
    b: usize,
) -> String {
    let r = get_bin(edge, path, &[("range", range)]).await;
    let len = body.len();
    assert_eq!(r.status, 206, "{path} {range}: {:?}", r.headers);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes {a}-{b}/{len}").as_str()),
        "{path} {range}"
    );
    if let Some(cl) = r.header("content-length") {
        assert_eq!(
            cl,
            (b - a + 1).to_string(),
            "{path} {range}: Content-Length"
        );
    }
    assert!(
        r.body[..] == body[a..=b],
        "{path} {range}: {} bytes that are not the origin's bytes {a}..={b}",
        r.body.len()
    );
    r.cache_status().to_owned()
}

/// Range requests on a memory hit and on a disk hit (one object per range, so each is that
/// object's first read after the restart): 206, `Content-Range: bytes a-b/total`, the exact
/// bytes.
#[tokio::test]
async fn ranges_on_memory_and_disk_hits_return_exact_bytes() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "256MiB"),
    );
    let len = MIB + 123;
    let cases = ranges(len);
    let objects: Vec<(String, Bytes)> = (0..cases.len())
        .map(|i| {
            let p = format!("/news/range/{i}.bin");
            let body = origin.set_large(&p, len);
            (p, body)
        })
        .collect();

    for (p, body) in &objects {
        let r = get_bin(&edge, p, &[]).await;
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.cache_status(), STORED_MISS, "{p}");
        assert!(r.body == body, "{p}: body");
    }
    // Memory hits: every range on every object.
    for (p, body) in &objects {
        for (range, a, b) in &cases {
            let cs = check_range(&edge, p, body, range, *a, *b).await;
            assert_eq!(cs, MEMORY_HIT, "{p} {range}");
        }
    }
    let (v, ok) = edge
        .poll_metric(
            "tollgate_cache_objects",
            &[("tier", "disk")],
            Duration::from_secs(10),
            |v| v >= objects.len() as f64,
        )
        .await;
    assert!(ok, "objects on disk: {v}");
    let fetched = origin.total();

    // Disk hits: the first read of each object after the restart is a range (without the hot
    // set, so the memory tier starts cold).
    edge.restart_cold(cache_dir.path());
    for ((p, body), (range, a, b)) in objects.iter().zip(&cases) {
        let cs = check_range(&edge, p, body, range, *a, *b).await;
        assert_eq!(cs, DISK_HIT, "{p} {range}: first read after the restart");
    }
    // Every range again on the first object, from whichever tier holds it now.
    let (p, body) = &objects[0];
    for (range, a, b) in &cases {
        let cs = check_range(&edge, p, body, range, *a, *b).await;
        assert!(cs == MEMORY_HIT || cs == DISK_HIT, "{p} {range}: {cs}");
    }
    assert_eq!(
        origin.total(),
        fetched,
        "ranges on hits never ask the origin"
    );
    edge.assert_running();
}

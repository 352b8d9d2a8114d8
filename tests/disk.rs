//! The disk tier, end to end: objects survive a clean restart and a `kill -9`, a damaged object
//! file is a miss (never a broken body, never a crash), both tiers stay within their sizes, a
//! purge reaches the disk, and concurrent misses still reach the origin once.
//!
//! Each test owns its cache directory (a `TempDir` that outlives the edge processes started on
//! it), runs the real `tollgate` binary in front of a real origin, and asserts what a reader or an
//! operator sees: bodies byte for byte, `Cache-Status`, origin request counts, `/metrics`, and the
//! files under `<cache dir>/objects/` and `<cache dir>/tmp/`.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::tokens;
use support::{
    disk_options, files_under, get, get_bin, get_streamed, object_file_containing, object_files,
    premium_body, Edge, EdgeOptions, Origin, Tok,
};

const MEMORY_HIT: &str = "tollgate; hit";
const DISK_HIT: &str = "tollgate; hit; detail=disk";
const STORED_MISS: &str = "tollgate; fwd=miss; stored";

const OBJECTS: &str = "tollgate_cache_objects";
const BYTES: &str = "tollgate_cache_bytes";
const EVICTIONS: &str = "tollgate_cache_evictions_total";
const LOOKUPS: &str = "tollgate_cache_lookups_total";
const DISK_ERRORS: &str = "tollgate_cache_disk_errors_total";

const KIB: usize = 1024;
const MIB: usize = 1024 * 1024;

/// Wait (up to `timeout`) until the disk tier reports at least `n` objects: a fill's write to
/// disk may finish just after the client has the last byte.
async fn wait_disk_objects(edge: &Edge, n: usize, timeout: Duration) {
    let (v, ok) = edge
        .poll_metric(OBJECTS, &[("tier", "disk")], timeout, |v| v >= n as f64)
        .await;
    assert!(
        ok,
        "{OBJECTS}{{tier=\"disk\"}} is {v}, expected at least {n} after the fills"
    );
}

fn hits_under(origin: &Origin, paths: &[String]) -> usize {
    paths.iter().map(|p| origin.hits(p)).sum()
}

/// Flip one bit of the byte at `offset` in `file`.
fn flip_byte(file: &Path, offset: usize) {
    let mut data = std::fs::read(file).expect("read object file");
    data[offset] ^= 0x01;
    std::fs::write(file, &data).expect("write object file");
}

/// Restart persistence: public binary objects (sizes around the 256 KiB block boundaries) and
/// both variants of premium pages, stored before a clean stop, come back after the restart:
/// first from disk (`detail=disk`), then from memory, the origin never asked again, bodies
/// identical.
#[tokio::test]
async fn objects_survive_a_clean_restart_disk_hit_first_then_memory() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    origin.set_padding(20 * KIB);
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "256MiB"),
    );
    let sub = tokens::subscriber(&key, "alice");

    let sizes = [
        1,
        1000,
        64 * KIB,
        256 * KIB - 1,
        256 * KIB,
        256 * KIB + 1,
        700_000,
        3 * MIB + 5,
    ];
    let public: Vec<(String, Bytes)> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = format!("/news/persist/{i}");
            let body = origin.set_large(&p, n);
            (p, body)
        })
        .collect();
    let premium = [
        "/premium/persist-a",
        "/premium/persist-b",
        "/premium/persist-c",
    ];

    for (p, body) in &public {
        let r = get_bin(&edge, p, &[]).await;
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.cache_status(), STORED_MISS, "{p}: first request");
        assert!(r.body == body, "{p}: body differs from the origin's");
    }
    for p in premium {
        let a = get(&edge, p, Tok::None).await;
        assert!(a.is_teaser(), "{p}: {a:?}");
        assert_eq!(a.cache_status(), STORED_MISS, "{p} anonymous");
        let s = get(&edge, p, Tok::Bearer(&sub)).await;
        assert!(s.is_full(), "{p}: {s:?}");
        assert_eq!(s.cache_status(), STORED_MISS, "{p} subscriber");
    }
    let n = public.len() + 2 * premium.len();
    wait_disk_objects(&edge, n, Duration::from_secs(10)).await;
    assert_eq!(
        object_files(cache_dir.path()).len(),
        n,
        "one object file per stored object under {}/objects",
        cache_dir.path().display()
    );
    let origin_before = origin.total();

    edge.restart_cold(cache_dir.path());

    let (v, ok) = edge
        .poll_metric(OBJECTS, &[("tier", "disk")], Duration::from_secs(5), |v| {
            v == n as f64
        })
        .await;
    assert!(
        ok,
        "after the restart {OBJECTS}{{tier=\"disk\"}} must count the {n} objects on disk, is {v}"
    );

    // Pass 1: the memory tier is cold, every object comes from disk.
    for (p, body) in &public {
        let r = get_bin(&edge, p, &[]).await;
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(
            r.cache_status(),
            DISK_HIT,
            "{p}: first request after the restart"
        );
        assert!(
            r.body == body,
            "{p}: disk hit body differs from the origin's"
        );
    }
    for p in premium {
        let a = get(&edge, p, Tok::None).await;
        assert_eq!(
            a.cache_status(),
            DISK_HIT,
            "{p} anonymous after the restart"
        );
        assert_eq!(
            a.body,
            premium_body(p, false, 20 * KIB),
            "{p} anonymous body"
        );
        let s = get(&edge, p, Tok::Bearer(&sub)).await;
        assert_eq!(
            s.cache_status(),
            DISK_HIT,
            "{p} subscriber after the restart"
        );
        assert_eq!(
            s.body,
            premium_body(p, true, 20 * KIB),
            "{p} subscriber body"
        );
    }
    // Pass 2: each was read completely once, so each was promoted to memory.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (p, body) in &public {
        let r = get_bin(&edge, p, &[]).await;
        assert_eq!(
            r.cache_status(),
            MEMORY_HIT,
            "{p}: second request after the restart"
        );
        assert!(
            r.body == body,
            "{p}: memory hit body differs from the origin's"
        );
    }
    for p in premium {
        let a = get(&edge, p, Tok::None).await;
        assert_eq!(
            a.cache_status(),
            MEMORY_HIT,
            "{p} anonymous, second request"
        );
        assert!(a.is_teaser(), "{p}: {a:?}");
        let s = get(&edge, p, Tok::Bearer(&sub)).await;
        assert_eq!(
            s.cache_status(),
            MEMORY_HIT,
            "{p} subscriber, second request"
        );
        assert!(s.is_full(), "{p}: {s:?}");
    }
    assert_eq!(
        origin.total(),
        origin_before,
        "nothing stored before the restart may be fetched again"
    );

    let disk_hits = edge
        .wait_metric(LOOKUPS, &[("tier", "disk"), ("result", "hit")], n as f64)
        .await;
    assert_eq!(
        disk_hits, n as f64,
        "{LOOKUPS}{{tier=\"disk\",result=\"hit\"}}"
    );
    let memory_hits = edge
        .wait_metric(LOOKUPS, &[("tier", "memory"), ("result", "hit")], n as f64)
        .await;
    assert_eq!(
        memory_hits, n as f64,
        "{LOOKUPS}{{tier=\"memory\",result=\"hit\"}}"
    );
    edge.assert_running();
}

/// The size of the `i`-th object in the kill test: 16 KiB to 2 MiB.
fn kill_test_size(i: usize) -> usize {
    16 * KIB + (i * 376_001) % (2 * MIB - 16 * KIB)
}

/// `kill -9` while 100 fills are in flight: after the restart every key answers with exactly the
/// origin's bytes (SHA-256), from disk or from the origin; temp files of the interrupted fills
/// are gone; the objects that were complete before the kill are disk hits.
#[tokio::test]
async fn kill_9_during_concurrent_fills_never_serves_a_broken_object() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "256MiB"),
    );

    let batch = |name: &str, n: usize, offset: usize| -> Vec<(String, Bytes)> {
        (0..n)
            .map(|i| {
                let p = format!("/news/kill/{name}{i}");
                let body = origin.set_large(&p, kill_test_size(i + offset));
                (p, body)
            })
            .collect()
    };
    let complete = batch("a", 20, 0);
    let in_flight = batch("b", 100, 20);

    // Batch A: stored completely before the kill.
    let client = support::big_body_client();
    for (p, body) in &complete {
        let s = get_streamed(&client, &edge, p, body).await;
        assert_eq!(s.status, 200, "{p}");
        assert!(s.matches(body), "{p}: fill body differs: {s:?}");
        assert_eq!(s.cache_status(), STORED_MISS, "{p}");
    }
    wait_disk_objects(&edge, complete.len(), Duration::from_secs(10)).await;

    // Batch B: a trickling origin (16 KiB every 20 ms, ~800 KiB/s per fill) keeps fills open.
    origin.set_pace(16 * KIB, Duration::from_millis(20));
    let mut tasks = Vec::new();
    for (p, _) in &in_flight {
        let url = edge.url(p);
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut r) = client.get(url).send().await else {
                return 0u64;
            };
            let mut n = 0u64;
            while let Ok(Some(c)) = r.chunk().await {
                n += c.len() as u64;
            }
            n
        }));
    }
    let paths_b: Vec<String> = in_flight.iter().map(|(p, _)| p.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while hits_under(&origin, &paths_b) < in_flight.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        hits_under(&origin, &paths_b),
        in_flight.len(),
        "all 100 fills must have reached the origin before the kill"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let tmp_before_kill = files_under(&cache_dir.path().join("tmp")).len();
    edge.kill_hard();
    let mut received = 0u64;
    for t in tasks {
        received += t.await.unwrap_or(0);
    }
    let total_b: usize = in_flight.iter().map(|(_, b)| b.len()).sum();
    eprintln!(
        "kill -9: {tmp_before_kill} temp files under tmp/, clients had {received} of {total_b} \
         bytes of batch B, {} object files",
        object_files(cache_dir.path()).len()
    );
    // The kill must have cut fills short, or this test proves nothing about interrupted fills:
    // their temp files existed, and the clients did not get every byte.
    assert!(
        tmp_before_kill > 0,
        "no fill was in flight (no temp file under tmp/) when the edge was killed"
    );
    assert!(
        received < total_b as u64,
        "every fill of batch B had completed ({received} of {total_b} bytes) before the kill"
    );

    origin.set_pace(64 * KIB, Duration::ZERO);
    edge.start_again();
    let tmp = cache_dir.path().join("tmp");
    let cleaned = support::eventually(Duration::from_secs(5), || {
        let tmp = tmp.clone();
        async move { files_under(&tmp).is_empty() }
    })
    .await;
    assert!(
        cleaned,
        "temp files of interrupted fills must be dropped at start: {:?}",
        files_under(&tmp)
    );

    let (mut disk_hits_b, mut misses_b) = (0, 0);
    for (i, (p, body)) in complete.iter().chain(in_flight.iter()).enumerate() {
        let s = get_streamed(&client, &edge, p, body).await;
        assert_eq!(s.status, 200, "{p} after the kill: {s:?}");
        assert!(
            s.matches(body),
            "{p} after the kill ({}): body sha256 {} len {}, origin's sha256 {} len {}; first \
             differing byte {:?}, transfer error {:?}",
            s.cache_status(),
            s.sha256,
            s.len,
            support::sha256_hex(body),
            body.len(),
            s.first_mismatch,
            s.error
        );
        assert_eq!(
            s.sha256,
            support::sha256_hex(body),
            "{p} after the kill: SHA-256"
        );
        if i < complete.len() {
            assert_eq!(
                s.cache_status(),
                DISK_HIT,
                "{p} was stored completely before the kill"
            );
        } else if s.cache_status() == DISK_HIT {
            disk_hits_b += 1;
        } else {
            assert!(
                s.cache_status().starts_with("tollgate; fwd=miss"),
                "{p}: {}",
                s.cache_status()
            );
            misses_b += 1;
        }
    }
    eprintln!("batch B after the restart: {disk_hits_b} disk hits, {misses_b} misses");
    assert!(
        misses_b > 0,
        "every fill of batch B was on disk after the kill: none was interrupted"
    );
    // nothing of the interrupted fills is left behind once they were fetched again
    assert!(
        files_under(&tmp).is_empty(),
        "temp files left after the refills: {:?}",
        files_under(&tmp)
    );
    edge.assert_running();
}

/// A bit flipped in one object file's body and another file cut short, while the edge was down:
/// after the restart both are misses served with the origin's bytes, the damaged files do not
/// stay, the other objects still hit, the process keeps running and
/// `tollgate_cache_disk_errors_total` counts the damage. A flip in a later 256 KiB block of a
/// multi-block object (1 MiB and 6 MiB) never yields a complete response with wrong bytes, and
/// the next request fetches it again.
#[tokio::test]
async fn a_damaged_object_file_is_a_miss_never_a_broken_body() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "256MiB"),
    );
    // 100 KiB objects fit in one 256 KiB block; the big one spans five blocks.
    let objects: Vec<(String, Bytes)> = (0..7)
        .map(|i| {
            let p = format!("/news/crc/{i}");
            let body = origin.set_large(&p, 100 * KIB);
            (p, body)
        })
        .collect();
    // Multi-block objects, each with one damaged block further in: (path, size, body offset of
    // the flipped byte). A small and a large one, so that both an object checked before the
    // response starts and one verified block by block while it streams are covered.
    let bigs: Vec<(String, Bytes, usize)> = [
        ("/news/crc/big", MIB + 77, 600_010),
        ("/news/crc/huge", 6 * MIB + 77, 5 * MIB + 1000),
    ]
    .into_iter()
    .map(|(p, n, flip)| (p.to_string(), origin.set_large(p, n), flip))
    .collect();
    let client = support::big_body_client();
    for (p, body) in objects
        .iter()
        .map(|(p, b)| (p, b))
        .chain(bigs.iter().map(|(p, b, _)| (p, b)))
    {
        let s = get_streamed(&client, &edge, p, body).await;
        assert!(s.matches(body), "{p}: fill: {s:?}");
        assert_eq!(s.cache_status(), STORED_MISS, "{p}");
    }
    wait_disk_objects(&edge, objects.len() + bigs.len(), Duration::from_secs(10)).await;
    edge.stop();

    let dir = cache_dir.path();
    let (flipped, at) = object_file_containing(dir, &objects[1].1[50_000..50_064]);
    flip_byte(&flipped, at + 32);
    let flipped_bytes = std::fs::read(&flipped).unwrap();
    let (cut, at) = object_file_containing(dir, &objects[2].1[10_000..10_064]);
    // keep the header, the metadata and 30 000 body bytes
    let cut_len = (at + 20_000) as u64;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .and_then(|f| f.set_len(cut_len))
        .expect("truncate object file");
    for (_, body, flip) in &bigs {
        let (file, at) = object_file_containing(dir, &body[*flip..*flip + 64]);
        flip_byte(&file, at);
    }
    let origin_before: Vec<usize> = objects.iter().map(|(p, _)| origin.hits(p)).collect();
    // without the hot set: every object is read from its (damaged or intact) file
    let _ = std::fs::remove_file(dir.join("hot-set"));

    edge.start_again();

    for i in [1, 2] {
        let (p, body) = &objects[i];
        let r = get_bin(&edge, p, &[]).await;
        assert_eq!(r.status, 200, "{p} (damaged file)");
        assert!(
            r.cache_status().starts_with("tollgate; fwd=miss"),
            "{p}: a damaged object file must be a miss, got {}",
            r.cache_status()
        );
        assert!(
            r.body == body,
            "{p}: served {} bytes (sha256 {}) instead of the origin's {} (sha256 {})",
            r.body.len(),
            support::sha256_hex(&r.body),
            body.len(),
            support::sha256_hex(body)
        );
        assert_eq!(origin.hits(p), origin_before[i] + 1, "{p}: refetched once");
    }
    for i in [0, 3, 4, 5, 6] {
        let (p, body) = &objects[i];
        let r = get_bin(&edge, p, &[]).await;
        assert_eq!(
            r.cache_status(),
            DISK_HIT,
            "{p}: an intact object file still hits"
        );
        assert!(r.body == body, "{p}: body");
    }
    edge.assert_running();

    // The damaged files do not stay: deleted, or replaced by the refetched object.
    let gone = support::eventually(Duration::from_secs(5), || {
        let flipped = flipped.clone();
        let cut = cut.clone();
        let flipped_bytes = flipped_bytes.clone();
        async move {
            let f = std::fs::read(&flipped).ok();
            let c = std::fs::metadata(&cut).ok().map(|m| m.len());
            f.as_deref() != Some(&flipped_bytes[..]) && c != Some(cut_len)
        }
    })
    .await;
    assert!(
        gone,
        "the damaged object files are still on disk as they were"
    );
    for i in [1, 2] {
        let (p, body) = &objects[i];
        let r = get_bin(&edge, p, &[]).await;
        assert!(
            r.cache_status() == MEMORY_HIT || r.cache_status() == DISK_HIT,
            "{p}: the refetched object is stored again: {}",
            r.cache_status()
        );
        assert!(r.body == body, "{p}: body after the refetch");
    }

    // The multi-block objects: whatever the edge does, a response that arrives complete carries
    // the origin's bytes; a response cut short (the damage found mid-stream) is the only other
    // outcome, and the bytes before the cut are the origin's.
    for (p, body, flip) in &bigs {
        let first = get_streamed(&client, &edge, p, body).await;
        eprintln!(
            "{p} ({} bytes, byte {flip} damaged): {} status {}, {} bytes received, error {:?}",
            body.len(),
            first.cache_status(),
            first.status,
            first.len,
            first.error
        );
        if first.error.is_none() {
            assert!(
                first.matches(body),
                "{p}: a complete response with wrong bytes ({}; first differing byte {:?}, {} \
                 of {} bytes)",
                first.cache_status(),
                first.first_mismatch,
                first.len,
                body.len()
            );
        } else {
            assert_eq!(
                first.first_mismatch, None,
                "{p}: the bytes sent before the cut must be the origin's"
            );
        }
        let second = get_streamed(&client, &edge, p, body).await;
        assert!(
            second.matches(body),
            "{p}: second request after the damage ({}): {second:?}",
            second.cache_status()
        );
        assert_eq!(
            origin.hits(p),
            2,
            "{p}: the damaged object is fetched from the origin again, once"
        );
        edge.assert_running();
    }

    let (errors, ok) = edge
        .poll_metric(DISK_ERRORS, &[], Duration::from_secs(5), |v| v > 0.0)
        .await;
    assert!(
        ok,
        "{DISK_ERRORS} (any op) must count the damaged files, is {errors}"
    );
}

/// Memory 2 MiB, disk 8 MiB, ~24 MiB of 64–256 KiB objects: both byte gauges end within their
/// tier's size (and so do the files on disk), both tiers evicted, the most recent objects still
/// hit and the first one is gone.
#[tokio::test]
async fn both_tiers_stay_within_their_sizes() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("2MiB", cache_dir.path(), "8MiB", "1MiB"),
    );
    let memory_max = 2.0 * MIB as f64;
    let disk_max = 8 * MIB;

    let objects: Vec<(String, Bytes)> = (0..150)
        .map(|i| {
            let p = format!("/news/bounds/{i}");
            let body = origin.set_large(&p, 64 * KIB + (i * 53_003) % (192 * KIB));
            (p, body)
        })
        .collect();
    let total: usize = objects.iter().map(|(_, b)| b.len()).sum();
    assert!(
        total > 3 * disk_max - 2 * MIB,
        "the test writes ~3× the disk size: {total}"
    );
    for (p, body) in &objects {
        let r = get_bin(&edge, p, &[]).await;
        assert_eq!(r.status, 200, "{p}");
        assert_eq!(r.cache_status(), STORED_MISS, "{p}");
        assert!(r.body == body, "{p}: body");
    }

    let dir = cache_dir.path().to_path_buf();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mem_bytes, disk_bytes, files_bytes) = loop {
        let mem = edge.metric(BYTES, &[("tier", "memory")]).await;
        let disk = edge.metric(BYTES, &[("tier", "disk")]).await;
        let files: u64 = object_files(&dir)
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        let within = mem <= memory_max && disk <= disk_max as f64 && files <= disk_max as u64;
        if within || Instant::now() > deadline {
            break (mem, disk, files);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "after {total} bytes: {BYTES} memory {mem_bytes}, disk {disk_bytes}; object files \
         {files_bytes} bytes"
    );
    assert!(
        mem_bytes <= memory_max,
        "{BYTES}{{tier=\"memory\"}} = {mem_bytes} > 2 MiB"
    );
    assert!(
        disk_bytes <= disk_max as f64,
        "{BYTES}{{tier=\"disk\"}} = {disk_bytes} > 8 MiB"
    );
    assert!(
        files_bytes <= disk_max as u64,
        "object files under {}/objects hold {files_bytes} bytes > 8 MiB",
        dir.display()
    );
    assert!(disk_bytes > 0.0, "{BYTES}{{tier=\"disk\"}} reports nothing");
    for tier in ["memory", "disk"] {
        let ev = edge.metric(EVICTIONS, &[("tier", tier)]).await;
        assert!(ev > 0.0, "{EVICTIONS}{{tier=\"{tier}\"}} = {ev}");
        let objs = edge.metric(OBJECTS, &[("tier", tier)]).await;
        assert!(objs > 0.0, "{OBJECTS}{{tier=\"{tier}\"}} = {objs}");
    }

    let before = origin.total();
    for (p, body) in &objects[objects.len() - 4..] {
        let r = get_bin(&edge, p, &[]).await;
        assert!(
            r.cache_status() == MEMORY_HIT || r.cache_status() == DISK_HIT,
            "{p}: one of the last objects stored must still hit: {}",
            r.cache_status()
        );
        assert!(r.body == body, "{p}: body");
    }
    assert_eq!(origin.total(), before);
    let (p, body) = &objects[0];
    let r = get_bin(&edge, p, &[]).await;
    assert_eq!(
        r.cache_status(),
        STORED_MISS,
        "{p}: the least recently used object must have been evicted from both tiers"
    );
    assert!(r.body == body, "{p}: body");
    edge.assert_running();
}

/// Request both variants of `premium` and each of `public`: each must be a stored miss with the
/// right body.
async fn fill_purge_set(edge: &Edge, sub: &str, premium: &str, public: &[&str], bodies: &[Bytes]) {
    let a = get(edge, premium, Tok::None).await;
    assert!(a.is_teaser(), "{a:?}");
    assert_eq!(a.cache_status(), STORED_MISS, "{premium} anonymous");
    let s = get(edge, premium, Tok::Bearer(sub)).await;
    assert!(s.is_full(), "{s:?}");
    assert_eq!(s.cache_status(), STORED_MISS, "{premium} subscriber");
    for (p, body) in public.iter().zip(bodies) {
        let r = get_bin(edge, p, &[]).await;
        assert_eq!(r.cache_status(), STORED_MISS, "{p}");
        assert!(r.body == body, "{p}: body");
    }
}

/// A purge reaches the disk: every variant of a premium path and the public objects under a
/// prefix are removed from both tiers, their files deleted, and they stay purged across a
/// restart; objects stored only on disk (memory cold after a restart) are purged too.
#[tokio::test]
async fn purge_removes_objects_from_memory_and_disk() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let dir = cache_dir.path().to_path_buf();
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", &dir, "1GiB", "256MiB"),
    );
    let sub = tokens::subscriber(&key, "alice");
    let premium = "/premium/pp";
    let public = ["/news/pp/x", "/news/pp/y"];
    let keep = "/news/keep";
    let bodies: Vec<Bytes> = public
        .iter()
        .map(|p| origin.set_large(p, 300 * KIB))
        .collect();
    let keep_body = origin.set_large(keep, 10 * KIB);
    let purge = r#"{"paths": ["/premium/pp"], "prefixes": ["/news/pp/"]}"#;

    let wait_files = |n: usize, why: &'static str| {
        let dir = dir.clone();
        async move {
            let ok = support::eventually(Duration::from_secs(5), || {
                let dir = dir.clone();
                async move { object_files(&dir).len() == n }
            })
            .await;
            assert!(
                ok,
                "{why}: expected {n} object files, found {:?}",
                object_files(&dir)
            );
        }
    };

    // 1. Stored in both tiers, purged, restarted: still misses, files gone.
    fill_purge_set(&edge, &sub, premium, &public, &bodies).await;
    let r = get_bin(&edge, keep, &[]).await;
    assert_eq!(r.cache_status(), STORED_MISS, "{keep}");
    wait_disk_objects(&edge, 5, Duration::from_secs(10)).await;
    wait_files(5, "before the purge").await;
    assert_eq!(
        edge.purge_ok(purge).await,
        4,
        "both variants of {premium} and the two objects under /news/pp/"
    );
    wait_files(1, "after the purge only /news/keep stays on disk").await;
    edge.restart_cold(cache_dir.path());
    fill_purge_set(&edge, &sub, premium, &public, &bodies).await;
    let r = get_bin(&edge, keep, &[]).await;
    assert_eq!(r.cache_status(), DISK_HIT, "{keep}: not purged");
    assert!(r.body == keep_body);
    assert_eq!(origin.hits(premium), 4, "both variants fetched twice");

    // 2. Stored on disk only (memory cold after a restart), purged: misses, files gone.
    wait_disk_objects(&edge, 5, Duration::from_secs(10)).await;
    edge.restart_cold(cache_dir.path());
    assert_eq!(
        edge.purge_ok(purge).await,
        4,
        "the same four objects, now on disk only"
    );
    wait_files(1, "after purging disk-only objects").await;
    fill_purge_set(&edge, &sub, premium, &public, &bodies).await;
    assert_eq!(origin.hits(premium), 6);
    for p in public {
        assert_eq!(origin.hits(p), 3, "{p}");
    }
    let r = get_bin(&edge, keep, &[]).await;
    assert_eq!(r.cache_status(), DISK_HIT, "{keep}: not purged");
    assert_eq!(origin.hits(keep), 1);
    edge.assert_running();
}

/// With the disk tier configured, 200 concurrent requests for one cold key still reach the
/// origin once, and all 200 get the origin's bytes.
#[tokio::test]
async fn concurrent_misses_with_the_disk_tier_reach_the_origin_once() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    origin.set_delay(Duration::from_millis(300));
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "256MiB"),
    );
    let client = support::pooled_client();
    let sub = tokens::subscriber(&key, "alice");
    let cold = "/news/cold.bin";
    let body = origin.set_large(cold, 512 * KIB);

    let mut tasks = Vec::new();
    for _ in 0..200 {
        let rb = client.get(edge.url(cold));
        tasks.push(tokio::spawn(async move {
            let r = rb.send().await.expect("request to the edge");
            let status = r.status().as_u16();
            (status, r.bytes().await.expect("body"))
        }));
    }
    for t in tasks {
        let (status, got) = t.await.expect("task");
        assert_eq!(status, 200, "{cold}");
        assert!(
            got == body,
            "{cold}: {} bytes, not the origin's body",
            got.len()
        );
    }
    assert_eq!(
        origin.hits(cold),
        1,
        "{cold}: 200 concurrent misses reach the origin once"
    );

    let p = "/premium/cold";
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let rb = support::request(&client, &edge, p, Tok::Bearer(&sub));
        tasks.push(tokio::spawn(support::send(rb)));
    }
    for t in tasks {
        let r = t.await.expect("task");
        assert!(r.is_full(), "{p}: {r:?}");
    }
    assert_eq!(
        origin.hits(p),
        1,
        "{p}: 200 concurrent misses reach the origin once"
    );
    edge.assert_running();
}

/// A disk that refuses writes (here: the temp directory replaced by a file, so no fill can even
/// start) degrades to pass-through: every response is complete and correct, the failure is
/// counted, and the memory tier keeps serving hits.
#[tokio::test]
async fn a_failing_disk_degrades_to_pass_through_and_a_metric() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "256MiB"),
    );
    // break the disk tier under the running edge
    let tmp = cache_dir.path().join("tmp");
    std::fs::remove_dir_all(&tmp).expect("remove tmp/");
    std::fs::write(&tmp, b"not a directory").expect("tmp/ as a file");

    let small = "/news/small.bin";
    let small_body = origin.set_large(small, 8 * KIB);
    // larger than the memory tier's per-object limit (64 MiB / 8): disk-only, so uncached now
    let big = "/news/big.bin";
    let big_body = origin.set_large(big, 9 * MIB);
    for _ in 0..3 {
        let r = get_bin(&edge, small, &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.body == small_body, "small body intact");
        let r = get_bin(&edge, big, &[]).await;
        assert_eq!(r.status, 200);
        assert!(r.body == big_body, "big body intact");
    }
    assert_eq!(origin.hits(small), 1, "the memory tier still caches");
    assert_eq!(
        origin.hits(big),
        3,
        "nothing can store the big object: pass-through"
    );
    let errors = edge.metric(DISK_ERRORS, &[("op", "write")]).await;
    assert!(errors >= 1.0, "disk write failures are counted: {errors}");
    edge.assert_running();
}

/// With a disk tier and no `max_object_size` written, a 50 MiB download is cached (the default
/// is a quarter of the disk tier, up to 1 GiB): the second request never reaches the origin.
#[tokio::test]
async fn a_50_mib_download_is_cached_by_default_with_a_disk_tier() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let cache = format!(
        "{{ memory: {{ max_size: 64MiB }}, disk: {{ path: {:?}, max_size: 1GiB }} }}",
        cache_dir.path().display().to_string()
    );
    let edge = Edge::start_with(
        &origin,
        &[&key],
        EdgeOptions {
            cache,
            ..EdgeOptions::default()
        },
    );
    let p = "/static/download.bin";
    let body = origin.set_large(p, 50 * MIB);
    let first = get_bin(&edge, p, &[]).await;
    assert_eq!(first.status, 200);
    assert!(first.body == body, "first answer: the whole 50 MiB");
    let second = get_bin(&edge, p, &[]).await;
    assert_eq!(second.status, 200);
    assert!(second.body == body, "second answer: the same bytes");
    assert!(
        second.cache_status().starts_with("tollgate; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.hits(p), 1, "the origin was asked once");
}

/// A restarted (or upgraded) node starts with the memory tier the previous process had: the
/// hot set written beside the disk tier is loaded back before the listeners open. The share of
/// memory hits among the first answers after the restart, against the share before it, must be
/// at least 0.9 (without the hot set every first answer is a disk hit: 0).
#[tokio::test]
async fn a_restarted_node_starts_with_a_warm_memory_tier() {
    let key = tokens::es256("k1");
    let origin = Origin::start();
    let cache_dir = tempfile::tempdir().expect("cache dir");
    let mut edge = Edge::start_with(
        &origin,
        &[&key],
        disk_options("64MiB", cache_dir.path(), "1GiB", "16MiB"),
    );
    let paths: Vec<String> = (0..200).map(|i| format!("/news/hot-{i}")).collect();
    for p in &paths {
        assert_eq!(get(&edge, p, Tok::None).await.status, 200);
    }
    let memory_hits = |statuses: &[String]| {
        statuses
            .iter()
            .filter(|s| s.as_str() == "tollgate; hit")
            .count() as f64
            / statuses.len() as f64
    };
    let mut before = Vec::new();
    for p in &paths {
        before.push(get(&edge, p, Tok::None).await.cache_status().to_owned());
    }
    let ratio_before = memory_hits(&before);
    assert_eq!(ratio_before, 1.0, "{before:?}");
    // the hot set is written every 5 s (and at shutdown)
    let hot_set = cache_dir.path().join("hot-set");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&hot_set).map_or(0, |t| t.lines().count()) < paths.len() {
        assert!(
            Instant::now() < deadline,
            "no hot set with 200 objects after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    edge.restart();
    let mut after = Vec::new();
    for p in &paths {
        after.push(get(&edge, p, Tok::None).await.cache_status().to_owned());
    }
    let ratio_after = memory_hits(&after);
    eprintln!("memory hits: {ratio_before} before the restart, {ratio_after} right after");
    assert!(
        ratio_after >= 0.9 * ratio_before,
        "memory hits right after the restart: {ratio_after}; {}",
        edge.stderr_tail(10)
    );
    assert_eq!(
        hits_under(&origin, &paths),
        paths.len(),
        "nothing refetched"
    );
}

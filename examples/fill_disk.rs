//! Fill a disk-tier directory with N small objects, exactly as the edge would have stored
//! `GET http://HOST/obj/<i>` on a public route (for `benches/startup.sh`).
//!
//! ```sh
//! cargo run --release --example fill_disk -- DIR N HOST [BODY_BYTES]
//! # e.g. fill_disk /tmp/tier 100000 127.0.0.1:8080 1024
//! ```
//!
//! Each object: status 200, `Cache-Control: max-age=86400`, `Content-Length`, fresh for a day;
//! the body is `object <i>\n` padded with `.` to BODY_BYTES (default 1024). Keys are
//! `cache_key(HOST lower-cased, "/obj/<i>", "", Variant::Public)`, as the edge builds them from
//! the `Host` header, the normalized path and an empty query.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use pingora_cache::key::CacheHashKey;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use tollgate::cache::disk::RawMeta;
use tollgate::cache::{cache_key, DiskStore, Variant};

fn usage() -> ! {
    eprintln!("usage: fill_disk DIR N HOST [BODY_BYTES]");
    std::process::exit(2);
}

fn meta(len: usize) -> CacheMeta {
    let mut h = ResponseHeader::build(200, None).expect("header");
    h.insert_header("content-type", "text/plain")
        .expect("header");
    h.insert_header("cache-control", "max-age=86400")
        .expect("header");
    h.insert_header("content-length", len.to_string())
        .expect("header");
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(86_400), now, 0, 0, h)
}

/// The body of object `i`.
fn body(i: u64, len: usize) -> Vec<u8> {
    let mut b = format!("object {i}\n").into_bytes();
    b.resize(len.max(b.len()), b'.');
    b
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 || args.len() > 4 {
        usage();
    }
    let dir = PathBuf::from(&args[0]);
    let n: u64 = args[1].parse().unwrap_or_else(|_| usage());
    let host = args[2].to_ascii_lowercase();
    let len: usize = match args.get(3) {
        Some(s) => s.parse().unwrap_or_else(|_| usage()),
        None => 1024,
    };

    let started = Instant::now();
    let store = DiskStore::open(&dir, u64::MAX / 2, 64 << 20, None, None).expect("open disk tier");
    let next = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get().min(4));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let path = format!("/obj/{i}");
                let hash = cache_key(&host, &path, "", Variant::Public).combined_bin();
                let data = body(i, len);
                let ok = RawMeta::of(&meta(data.len()))
                    .and_then(|raw| store.begin_fill(hash, Arc::from(path.as_str()), &raw))
                    .is_some_and(|mut fill| fill.write(&data) && store.commit(fill));
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    });
    let failed = failed.into_inner();
    println!(
        "wrote {} objects of {len} bytes for host {host} into {} in {:.1?} ({} bytes on disk)",
        n - failed,
        dir.display(),
        started.elapsed(),
        store.bytes()
    );
    if failed > 0 {
        eprintln!("{failed} objects could not be written");
        std::process::exit(1);
    }
}

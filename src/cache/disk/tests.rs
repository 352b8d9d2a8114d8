//! Unit tests of the disk tier on real files in a temporary directory.
use super::*;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

fn meta() -> CacheMeta {
    let h = ResponseHeader::build(200, None).unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + Duration::from_secs(60), now, 0, 0, h)
}

fn put(store: &DiskStore, hash: HashBinary, path: &str, body: &[u8]) {
    let mut fill = store
        .begin_fill(hash, Arc::from(path), &RawMeta::of(&meta()).unwrap())
        .unwrap();
    for chunk in body.chunks(100_000) {
        assert!(fill.write(chunk));
    }
    assert!(store.commit(fill));
}

fn body_of(store: &DiskStore, hash: &HashBinary) -> Option<Vec<u8>> {
    let o = store.open_object(hash)?;
    match o.body {
        Some(b) => Some(b.to_vec()),
        None => read_verified(&o.file, &o.fixed, &o.table, 0, o.fixed.body_len)
            .ok()
            .map(|b| b.to_vec()),
    }
}

fn open(dir: &Path, max: u64) -> DiskStore {
    let s = DiskStore::open(dir, max, 64 << 20, None, None).unwrap();
    s.scan();
    s
}

#[test]
fn round_trip_restart_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let big: Vec<u8> = (0..(VERIFY_UPFRONT + 3 * BLOCK + 7))
        .map(|i| (i % 253) as u8)
        .collect();
    {
        let s = open(dir.path(), 1 << 30);
        put(&s, [1; 16], "/a", b"small body");
        put(&s, [2; 16], "/a", &big);
        put(&s, [3; 16], "/b", b"other");
        assert_eq!(s.objects(), 3);
    }
    // a fresh process sees the same objects
    let s = open(dir.path(), 1 << 30);
    assert_eq!(s.objects(), 3);
    assert_eq!(body_of(&s, &[1; 16]).unwrap(), b"small body");
    assert_eq!(body_of(&s, &[2; 16]).unwrap(), big);
    assert_eq!(s.purge_path("/a"), 2);
    assert!(body_of(&s, &[1; 16]).is_none());
    assert!(body_of(&s, &[2; 16]).is_none());
    assert_eq!(s.purge_prefix("/"), 1);
    assert_eq!((s.objects(), s.bytes()), (0, 0));
}

#[test]
fn damaged_files_are_misses_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1 << 30);
    let body: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    for (i, _) in ["flip", "trunc", "head", "ok"].iter().enumerate() {
        put(&s, [i as u8; 16], "/x", &body);
    }
    let file = |i: u8| dir.path().join(object_rel_path(&[i; 16]));
    let mut bytes = fs::read(file(0)).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1; // inside the body
    fs::write(file(0), &bytes).unwrap();
    let bytes = fs::read(file(1)).unwrap();
    fs::write(file(1), &bytes[..bytes.len() - 10]).unwrap();
    let mut bytes = fs::read(file(2)).unwrap();
    bytes[10] ^= 1; // inside the fixed header
    fs::write(file(2), &bytes).unwrap();
    for i in 0..3u8 {
        assert!(body_of(&s, &[i; 16]).is_none(), "damaged object {i} served");
        assert!(!file(i).exists(), "damaged object {i} not removed");
    }
    assert_eq!(body_of(&s, &[3; 16]).unwrap(), body);
    assert_eq!(s.objects(), 1);
}

#[test]
fn evicting_an_old_generation_never_deletes_a_newer_fill() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1 << 30);
    put(&s, [9; 16], "/g", b"old");
    let old_gen = s.index.get(&[9; 16]).unwrap().generation;
    put(&s, [9; 16], "/g", b"new");
    assert!(!s.delete(&[9; 16], Some(old_gen)));
    assert_eq!(body_of(&s, &[9; 16]).unwrap(), b"new");
    assert_eq!(s.objects(), 1);
}

#[test]
fn stays_within_max_size_and_evicts_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path(), 1024 * 1024);
    let body = vec![5u8; 100 * 1024];
    for i in 0..30u8 {
        put(&s, [i; 16], &format!("/e/{i}"), &body);
        // keep object 0 hot
        s.open_object(&[0; 16]);
    }
    assert!(s.bytes() <= 1024 * 1024, "{} bytes", s.bytes());
    assert!(
        body_of(&s, &[0; 16]).is_some(),
        "the hot object was evicted"
    );
    assert!(body_of(&s, &[1; 16]).is_none(), "a cold object survived");
}

#[test]
fn temp_files_of_dead_writers_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(dir.path(), 1 << 30);
        let mut fill = s
            .begin_fill([4; 16], Arc::from("/t"), &RawMeta::of(&meta()).unwrap())
            .unwrap();
        fill.write(b"partial");
        std::mem::forget(fill); // as if the process was killed mid-fill
    }
    let tmp = dir.path().join("tmp");
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);
    // our own pid counts as dead for a new store: the old writer is gone
    let s = open(dir.path(), 1 << 30);
    assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
    assert!(s.open_object(&[4; 16]).is_none());
}

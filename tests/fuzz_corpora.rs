//! Replays the committed fuzz corpora (issue 18): every file of `tests/fuzz/corpus/<target>/`
//! through the same target body the fuzzer runs (`tests/fuzz/targets.rs`), so CI re-checks in
//! seconds every input the fuzzers found interesting, and every saved crash reproducer.
//!
//! A missing or empty corpus directory fails the test. To (re)write the hand-made seeds:
//! `cargo test --test fuzz_corpora -- --ignored write_seed_corpora` (see tests/fuzz/README.md).

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "fuzz/targets.rs"]
mod targets;

#[path = "fuzz/seeds.rs"]
mod seeds;

#[path = "fuzz/edge_targets.rs"]
mod edge_targets;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target)
}

/// Run `body` on every file of the target's corpus; panics name the file.
fn replay(target: &str, body: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "corpus {} is empty: nothing would be replayed",
        dir.display()
    );
    let started = Instant::now();
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("read corpus file");
        let outcome = std::panic::catch_unwind(|| body(&data));
        if outcome.is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs failed (each panic is printed above):\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
    eprintln!(
        "{target}: replayed {} inputs in {:?}",
        files.len(),
        started.elapsed()
    );
}

#[test]
fn corpus_jws() {
    replay("jws", targets::jws);
}

#[test]
fn corpus_token_sources() {
    replay("token_sources", targets::token_sources);
}

#[test]
fn corpus_cloudfront() {
    replay("cloudfront", targets::cloudfront);
}

#[test]
fn corpus_smd() {
    replay("smd", targets::smd);
}

#[test]
fn corpus_htpasswd() {
    replay("htpasswd", targets::htpasswd);
}

#[test]
fn corpus_config() {
    replay("config", targets::config);
}

#[test]
fn corpus_disk_reader() {
    replay("disk_reader", targets::disk_reader);
}

#[test]
fn corpus_http1() {
    replay("http1", edge_targets::http1);
}

/// Writes the hand-made seed inputs into `tests/fuzz/corpus/<target>/seed-*` (tokens minted
/// with the fuzz keys, the CloudFront and SMD fixtures, conf/*.yaml, object files written by
/// the disk tier). Not part of the normal run.
#[test]
#[ignore = "writes files; run by hand to regenerate the seed corpora"]
fn write_seed_corpora() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus");
    let n = seeds::write_all(&root);
    assert!(n > 0);
    eprintln!("wrote {n} seed files under {}", root.display());
}

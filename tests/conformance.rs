//! The HTTP caching conformance suite behind cache-tests.fyi, held at its score: the npm package
//! `http-cache-tests@0.4.5` (installed by `.ci/deps` under `target/http-cache-tests`) run against
//! this build by `tests/conformance/cache-tests.sh`, which exits non-zero below the threshold.
//!
//! Thresholds: what this build and the build before the edge-safety work both score on 0.4.5 —
//! 137 of 157 required tests (the published 0.4.5 expects some `Age` parsing and 304-update
//! behaviours the newer suite in the README's table changed; one of its tests, `heuristic-202`,
//! loses its setup request to a connection reset now and then on both builds). This version
//! has no CDN-Cache-Control suite. `TOLLGATE_CACHE_TESTS` points at another suite directory.

use std::path::PathBuf;
use std::process::Command;

const MIN_REQUIRED: u32 = 137;

#[test]
fn the_caching_conformance_score_holds() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let suite = std::env::var_os("TOLLGATE_CACHE_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/http-cache-tests/node_modules/http-cache-tests"));
    assert!(
        suite.join("cli.mjs").is_file() || suite.join("test-engine/cli.mjs").is_file(),
        "the cache-tests suite is not installed at {}: run .ci/deps (npm install --prefix \
         target/http-cache-tests http-cache-tests@0.4.5)",
        suite.display()
    );
    let out = Command::new(root.join("tests/conformance/cache-tests.sh"))
        .arg(&suite)
        .arg(format!("--min-required={MIN_REQUIRED}"))
        .env("TOLLGATE_BIN", env!("CARGO_BIN_EXE_tollgate"))
        .output()
        .expect("run tests/conformance/cache-tests.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the conformance score fell below {MIN_REQUIRED} required tests, or the run failed:\n\
         {stdout}\n{stderr}"
    );
    let score = stdout
        .lines()
        .find(|l| l.starts_with("required: "))
        .unwrap_or_else(|| panic!("no score printed:\n{stdout}"));
    let passed: u32 = score
        .trim_start_matches("required: ")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable score: {score}"));
    assert!(passed >= MIN_REQUIRED, "{score}");
}

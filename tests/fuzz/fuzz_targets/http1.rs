#![no_main]

#[path = "../edge_targets.rs"]
mod edge_targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| edge_targets::http1(data));

//! Helpers shared by the benches: medians, ratios, sizes from the
//! environment.
#![allow(dead_code)] // each bench uses a different part

pub mod cluster;

use std::time::Duration;

pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// "12.3x": how many times `ours` is faster than `theirs`.
pub fn ratio(theirs: Duration, ours: Duration) -> String {
    format!(
        "{:.1}x",
        theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9)
    )
}

/// A comma-separated list of numbers from `key`, else from `default`.
pub fn env_list(key: &str, default: &str) -> Vec<usize> {
    std::env::var(key)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

/// `IPWARDEN_BENCH_RUNS`, else `default`; at least 1.
pub fn runs(default: usize) -> usize {
    env_list("IPWARDEN_BENCH_RUNS", "")
        .first()
        .copied()
        .unwrap_or(default)
        .max(1)
}

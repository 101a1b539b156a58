//! The agent as a whole process against the fake API server, inside the
//! IPVS VM (real IPVS, ipset, iptables, the eBPF data plane in mode log):
//! the `ipwarden run --kubeconfig` binary in the lab's node namespace, its
//! real kube client listing and watching the fake API server that this
//! process serves on the namespace's loopback.
//!
//! ```text
//! cargo xtask bench --only agent
//! ```
//!
//! For each size (`IPWARDEN_BENCH_SIZES`, default 1000,10000 Services of
//! one TCP port with three endpoints each, beside 5000 pods and 1000
//! NetworkPolicies of the policies bench's generator):
//!
//! - **first full sync**: from the agent's start to its ready file (every
//!   list done, both controllers' first full sync from an empty kernel),
//!   and each controller's own full apply (its sync duration metric);
//! - **one Service change**: `IPWARDEN_BENCH_CHANGES` (240) changes, each
//!   a random Service gaining or losing its externalIP, one at a time; the
//!   latency runs from the moment the fake server wrote the watch event to
//!   the `ipwarden_sync_last_timestamp_seconds` of the service controller's
//!   sync that applied it, and `ipvsadm` confirms each change;
//! - **no-op full resync**: the agent restarted with short
//!   `--ipvs-sync-period`/`--iptables-sync-period` on the programmed
//!   kernel, the durations of its periodic full syncs after the first;
//! - **peak RSS**: the agent's VmHWM, the larger of the two runs.
//!
//! The agent runs with `--min-sync-period 100ms` (default 1 s), so that a
//! change that follows the previous sync by 150 ms is not held back: the
//! latency is the agent's cost, not its debounce. Prints a markdown table
//! and the target checks.

#[path = "../tests/support/fake_apiserver.rs"]
mod fake_apiserver;
#[path = "../tests/support/lab_apiserver.rs"]
mod lab_apiserver;

mod common;
#[path = "agent/objects.rs"]
mod objects;
#[path = "agent/run.rs"]
mod run;
#[path = "agent/scrape.rs"]
mod scrape;

use std::time::Duration;

use common::env_list;
use ipwarden::netns::privileged;
use run::{Figures, SizeRun};

fn main() {
    if !privileged("agent bench") {
        return;
    }
    let sizes = env_list("IPWARDEN_BENCH_SIZES", "1000,10000");
    let one = |key: &str, default: &str| env_list(key, default)[0];
    let pods = one("IPWARDEN_BENCH_PODS", "5000");
    let policies = one("IPWARDEN_BENCH_POLICIES", "1000");
    let namespaces = one("IPWARDEN_BENCH_NAMESPACES", "50");
    let changes = one("IPWARDEN_BENCH_CHANGES", "240");
    let mut rows = Vec::new();
    for &services in &sizes {
        eprintln!("agent bench: {services} Services, {pods} pods, {policies} policies");
        let figures = SizeRun {
            services,
            pods,
            policies,
            namespaces,
            changes,
        }
        .measure();
        rows.push((services, figures));
    }
    print_report(pods, policies, changes, &rows);
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn percent(part: Duration, whole: Duration) -> f64 {
    100.0 * part.as_secs_f64() / whole.as_secs_f64().max(1e-9)
}

fn print_report(pods: usize, policies: usize, changes: usize, rows: &[(usize, Figures)]) {
    println!("{pods} pods, {policies} NetworkPolicies; {changes} Service changes per size.\n");
    println!(
        "| Services | start to ready | full apply: services | full apply: policies | \
         change p50 | change p99 | change max | partial sync mean | \
         no-op resync: services | no-op resync: policies | peak RSS |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (n, f) in rows {
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} ({:.1}%) | {} ({:.1}%) | {} |",
            secs(f.ready),
            secs(f.full_services),
            secs(f.full_policies),
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            ms(f.partial_mean),
            ms(f.noop_services),
            percent(f.noop_services, f.full_services),
            ms(f.noop_policies),
            percent(f.noop_policies, f.full_policies),
            mib(f.peak_rss_kib),
        );
    }
    println!();
    print_targets(rows);
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

fn print_targets(rows: &[(usize, Figures)]) {
    let (Some((small_n, small)), Some((big_n, big))) = (rows.first(), rows.last()) else {
        return;
    };
    let worst_p99 = rows.iter().map(|(_, f)| f.p99).max().unwrap_or_default();
    let each: Vec<String> = rows
        .iter()
        .map(|(n, f)| format!("{} at {n}", ms(f.p99)))
        .collect();
    println!(
        "- target one Service change p99 <= 20 ms: {} ({})",
        each.join(", "),
        verdict(worst_p99 <= Duration::from_millis(20))
    );
    let growth = big.p99.as_secs_f64() / small.p99.as_secs_f64().max(1e-9);
    println!(
        "- target change p99 at {big_n} within 1.5x of {small_n} Services: {growth:.2}x ({})",
        verdict(growth <= 1.5)
    );
    let noop = percent(big.noop_services, big.full_services)
        .max(percent(big.noop_policies, big.full_policies));
    println!(
        "- target no-op full resync <= 5% of a full apply at {big_n}: services {:.1}%, policies {:.1}% ({})",
        percent(big.noop_services, big.full_services),
        percent(big.noop_policies, big.full_policies),
        verdict(noop <= 5.0)
    );
    println!(
        "- target peak RSS <= 64 MiB at {big_n} Services: {} ({})",
        mib(big.peak_rss_kib),
        verdict(big.peak_rss_kib <= 64 * 1024)
    );
}

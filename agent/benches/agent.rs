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
//! - **peak RSS**: the agent's VmHWM, the larger of the two runs; beside
//!   it the same with the bench's own `/state` reads left out (VmHWM read
//!   before each and reset after it), what the syncs alone reached.
//!
//! `IPWARDEN_BENCH_FIRST_ONLY=1` times the first full sync only;
//! `IPWARDEN_BENCH_NO_RESYNC=1` leaves out the no-op resyncs (50k);
//! `IPWARDEN_BENCH_NOOP_ONLY=1` the first full sync and the no-op resyncs
//! (each also by CPU: `ipwarden_sync_cpu_seconds_total`);
//! `IPWARDEN_BENCH_AGENT_ARGS` adds flags to the agent (e.g.
//! `--run-firewall=false` to time one controller alone);
//! `IPWARDEN_BENCH_AGENT_BIN` times another `ipwarden` binary (a copy of
//! an earlier build, for a before/after); `IPWARDEN_BENCH_SETTLE_MS`
//! pauses between ready and the first change; `IPWARDEN_BENCH_WARMUP=N`
//! makes N untimed changes first (under TCG the first change pays for
//! translating the partial sync's code).
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
#[path = "agent/steps.rs"]
mod steps;

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
    println!("{pods} pods, {policies} NetworkPolicies; {changes} Service changes per size.\n");
    print_header();
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
        // Each row as soon as it is measured: a later size that fails
        // leaves the earlier ones printed.
        print_row(services, &figures);
        rows.push((services, figures));
    }
    println!();
    println!("One partial sync of the service controller, medians per step:\n");
    print_steps(&rows, |f| &f.steps);
    println!();
    println!("The service controller's first full sync, per step:\n");
    print_steps(&rows, |f| &f.full_steps);
    println!();
    if !run::first_only() {
        println!("The service controller's last no-op full resync, per step:\n");
        print_steps(&rows, |f| &f.noop_steps);
        println!();
        println!("The policy controller's last no-op full resync, per step:\n");
        print_steps(&rows, |f| &f.noop_policy_steps);
        println!();
    }
    if !run::first_only() {
        println!("The slowest changes (#0: the first after ready), where their time went (from the agent's metrics: the server's write to the dispatcher noting it, the note to the sync's start, the sync and its steps):\n");
        print_slowest(&rows);
        println!();
    }
    for (n, f) in &rows {
        println!(
            "- {n} Services: the agent's CPU from start to ready (self and children) {}",
            secs(f.cpu_at_ready)
        );
        if !run::first_only() {
            print_cpu(*n, f);
        }
    }
    if !run::first_only() {
        println!();
        print_targets(&rows);
    }
}

/// One sync of the service controller, step by step (`steps` picks which).
fn print_steps(rows: &[(usize, Figures)], steps: fn(&Figures) -> &[(String, Duration)]) {
    let Some((_, first)) = rows.first() else {
        return;
    };
    let names: Vec<&str> = steps(first).iter().map(|(n, _)| n.as_str()).collect();
    if names.is_empty() {
        println!("(not measured)");
        return;
    }
    println!("| Services | {} | sum of medians |", names.join(" | "));
    println!("|---:|{}---:|", "---:|".repeat(names.len()));
    for (n, f) in rows {
        let cells: Vec<String> = names
            .iter()
            .map(|name| {
                steps(f)
                    .iter()
                    .find(|(s, _)| s == name)
                    .map_or("-".to_string(), |(_, d)| ms(*d))
            })
            .collect();
        let sum: Duration = steps(f).iter().map(|(_, d)| *d).sum();
        println!("| {n} | {} | {} |", cells.join(" | "), ms(sum));
    }
}

fn print_slowest(rows: &[(usize, Figures)]) {
    println!(
        "| Services | change | total | write to noted | noted to sync start | sync | its CPU | the sync's largest steps |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|");
    for (n, f) in rows {
        for (k, t) in f.slowest.iter().enumerate() {
            let steps: Vec<String> = t
                .steps
                .iter()
                .take(3)
                .map(|(s, d)| format!("{s} {}", ms(*d)))
                .collect();
            println!(
                "| {n} | slowest {}: #{} | {} | {} | {} | {} | {} | {} |",
                k + 1,
                t.index,
                ms(t.total),
                ms(t.to_noted),
                ms(t.noted_to_sync),
                ms(t.sync),
                ms(t.sync_cpu),
                steps.join(", ")
            );
        }
    }
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

fn print_header() {
    println!(
        "| Services | start to ready | full apply: services | full apply: policies | \
         change p50 | change p99 | change max | partial sync mean | \
         no-op resync: services | no-op resync: policies | peak RSS | peak RSS without /state |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(n: usize, f: &Figures) {
    println!(
        "| {n} | {} | {} | {} | {} | {} | {} | {} | {} ({:.1}%) | {} ({:.1}%) | {} | {} |",
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
        mib(f.peak_syncs_kib),
    );
}

/// Each controller's no-op full resync against its first full sync, by
/// CPU (its worker thread and the children it waited for).
fn print_cpu(n: usize, f: &Figures) {
    for (k, controller) in ["services", "policies"].into_iter().enumerate() {
        println!(
            "- {n} Services: {controller}' CPU: first full sync {}, no-op full resync {} ({:.1}%)",
            ms(f.full_cpu[k]),
            ms(f.noop_cpu[k]),
            percent(f.noop_cpu[k], f.full_cpu[k])
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

fn print_targets(rows: &[(usize, Figures)]) {
    let (Some((small_n, small)), Some(last)) = (rows.first(), rows.last()) else {
        return;
    };
    // The goals name 10k Services; a larger size is reported beside them.
    let (big_n, big) = rows.iter().find(|(n, _)| *n == 10_000).unwrap_or(last);
    // Without changes (`IPWARDEN_BENCH_NOOP_ONLY`) there is no p99.
    let changes = if run::noop_only() { &rows[..0] } else { rows };
    for (n, f) in changes.iter().skip(1) {
        let growth = f.p99.as_secs_f64() / small.p99.as_secs_f64().max(1e-9);
        println!(
            "- target change p99 at {n} within 1.5x of {small_n} Services: {} vs {}, {growth:.2}x ({})",
            ms(f.p99),
            ms(small.p99),
            verdict(growth <= 1.5)
        );
    }
    if let Some((n, f)) = changes.iter().find(|(n, _)| *n == 10_000) {
        println!(
            "- target change p99 at {n} Services <= 100 ms: {} ({})",
            ms(f.p99),
            verdict(f.p99 <= Duration::from_millis(100))
        );
        println!(
            "- target start to ready at {n} Services <= 15 s: {} ({})",
            secs(f.ready),
            verdict(f.ready <= Duration::from_secs(15))
        );
    }
    let noop = percent(big.noop_services, big.full_services)
        .max(percent(big.noop_policies, big.full_policies));
    // Zero: not measured (IPWARDEN_BENCH_NO_RESYNC).
    if !big.noop_services.is_zero() {
        println!(
        "- target no-op full resync <= 5% of a full apply at {big_n}: services {:.1}%, policies {:.1}% ({})",
        percent(big.noop_services, big.full_services),
        percent(big.noop_policies, big.full_policies),
            verdict(noop <= 5.0)
        );
        let cpu = |k: usize| percent(big.noop_cpu[k], big.full_cpu[k]);
        println!(
            "- target no-op full resync <= 5% of a full sync's CPU at {big_n}: services {:.1}%, policies {:.1}% ({})",
            cpu(0),
            cpu(1),
            verdict(cpu(0).max(cpu(1)) <= 5.0)
        );
    }
    println!(
        "- target peak RSS <= 64 MiB at {big_n} Services: {} ({}); without the bench's /state reads {} ({})",
        mib(big.peak_rss_kib),
        verdict(big.peak_rss_kib <= 64 * 1024),
        mib(big.peak_syncs_kib),
        verdict(big.peak_syncs_kib <= 64 * 1024)
    );
}

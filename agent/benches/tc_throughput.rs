//! Data-plane cost of the tc program: what it costs per packet (the
//! kernel's BPF statistics), and TCP throughput and small-packet UDP rates
//! (IPv4 and IPv6) through a veth pair into a receiving network namespace,
//! in six configurations measured in the same run, interleaved:
//!
//! - **none**: no program, no rules (the floor);
//! - **tc only**: the classifier in `allow` mode with the 10k-member
//!   mirror and no iptables rules: the program's own cost;
//! - **tc allow**: the same program, and the rules the agent ships in
//!   allow mode, as `controllers::services` renders them and
//!   `kernel::iptables::apply` writes them: the mark ACCEPT first in
//!   INPUT, then the VIP jump into the service chain;
//! - **iptables + ipset**: kube-router's service firewall, no program: the
//!   same sets (10k members) and chain without the mark rule;
//! - **kube-router node**: a node as kube-router users run it: INPUT jumps
//!   first to the network-policy chain (RETURN for the ClusterIP and
//!   external IP ranges and the NodePort range, then a jump per local pod
//!   address to its pod firewall chain, kube-router's walk, `kube_router.rs`;
//!   the pod and policy chains of 100 local pods are rendered by
//!   `controllers::policies` from a generated cluster), then the service
//!   firewall with the svip / svip-prt sets at 10k members;
//! - **ipwarden node**: the same cluster with ipwarden in allow mode: the
//!   policy controller's chains as it writes them (the guarded-pod sets and
//!   dispatch chains in place of the walk, the same pod and policy
//!   chains), the shipped allow rules and the program.
//!
//! Every node's sets and chains come from the controllers and are written
//! by the set store and `kernel::iptables` in the order a pass uses
//! (services, then policies, so the policy jump is first in INPUT), from
//! one generated cluster: 10k service ports (ClusterIPs of both families,
//! and one dual-stack Service per receiver whose externalIPs are that
//! receiver's addresses, the benchmark's destinations), 1000 pods of which
//! 100 on this node, and default-deny, DNS and same-namespace policies.
//!
//! One sender namespace is joined to six receiver namespaces (one per
//! configuration) by six veth pairs, so configurations are switched by
//! choosing a destination, never by re-plumbing; the order rotates every
//! run. TCP: `iperf3`, one stream over IPv4: receiver Gbit/s, and Gbit per
//! CPU-second of the two iperf3 processes, and the bytes per packet the
//! accepting rule counted meanwhile (a stream crosses INPUT in TSO-sized
//! segments, so it measures copying more than the chain walk); and TCP
//! request/response (`tcp_rr.rs`: 64 bytes each way on 8 connections,
//! busy-polled, one segment through INPUT per request): transactions per
//! CPU-second. UDP, IPv4 then IPv6: 64-byte
//! datagrams from a Rust sender (`sendmmsg`, 64 per call) to a
//! busy-polling Rust receiver (`recvmmsg`), pinned to CPUs 0 and 1:
//! datagrams per second received and sent, and the sender thread's CPU
//! time per datagram. The veth receive path (tc, netfilter, UDP) runs in
//! the sender's context and this kernel has no IRQ time accounting, so the
//! CPU figures are the path's cost, little moved by other load on the
//! machine; the wall-clock ones are not. The program's own time per run
//! comes from the kernel (`run_time_ns / run_cnt`, statistics turned on
//! for the run with BPF_ENABLE_STATS), over the same windows.
//!
//! Then, on fixed frames through BPF_PROG_TEST_RUN (no network, no noise
//! but the statistics' own): the program's time per frame kind, and an
//! empty program's, which is what the statistics themselves cost here.
//!
//! Needs root, iperf3 and the eBPF object (IPWARDEN_BPF_OBJECT, set by
//! `cargo xtask bench`):
//!
//! ```text
//! IPWARDEN_BPF_OBJECT=$(cargo xtask build-ebpf) cargo bench -p ipwarden --bench tc_throughput
//! ```
//!
//! `IPWARDEN_BENCH_RUNS` (default 5) and `IPWARDEN_BENCH_SECS` (default 3)
//! tune it; `IPWARDEN_BENCH_FRAMES_ONLY=1` measures the fixed frames only
//! (one receiver, no traffic: a quick check of a change to the program);
//! `IPWARDEN_BENCH_PROFILE=<dir>` records where the request/response
//! traffic's CPU goes on the two nodes (`profile.rs`, perf);
//! `IPWARDEN_BENCH_SPLIT=1` splits what the shipped rules cost UDP into
//! steps (netfilter's hook, the mark rule with and without its comment:
//! `split.rs`; with `IPWARDEN_BENCH_PROFILE=<dir>`, under perf).
//! Prints markdown tables of medians with the ratios, the spread, the goal
//! checks, and sanity counters (iptables rule counters, mirror hits,
//! conntrack entries per receiver).
//!
//! The parts, in `tc_throughput/`: `config` (the configurations),
//! `cluster` (the generated cluster), `node` (the receivers, programmed),
//! `kube_router` (kube-router's top chains for its node),
//! `measure` (the timed loop) over `iperf`, `tcp_rr` and `udp`, `frames`
//! (BPF_PROG_TEST_RUN), `rules` and `sanity` (what the rules counted),
//! `stats` and `report` (medians, spread, tables, goals), `profile`
//! (perf over the request/response windows), `split` (the rules' cost
//! step by step), `cpu`, `tcx`.

use std::{os::fd::OwnedFd, path::Path, time::Instant};

use ipwarden::{
    bpf::{self, test_run, BpfMirror, ProgramLogLevel, TcProgram},
    desired::{ServiceState, SetSpec},
    netns::{privileged, NetNs},
    store::{MirrorSink, SourceSink},
};
use ipwarden_common::{names::DEFAULT_MARK, Mode};

#[path = "tc_throughput/cluster.rs"]
mod cluster;
#[path = "tc_throughput/config.rs"]
mod config;
#[path = "tc_throughput/cpu.rs"]
mod cpu;
#[path = "tc_throughput/frames.rs"]
mod frames;
#[path = "tc_throughput/iperf.rs"]
mod iperf;
#[path = "tc_throughput/kube_router.rs"]
mod kube_router;
#[path = "tc_throughput/measure.rs"]
mod measure;
#[path = "tc_throughput/node.rs"]
mod node;
#[path = "tc_throughput/profile.rs"]
mod profile;
#[path = "tc_throughput/report.rs"]
mod report;
#[path = "tc_throughput/rules.rs"]
mod rules;
#[path = "tc_throughput/sanity.rs"]
mod sanity;
#[path = "tc_throughput/split.rs"]
mod split;
#[path = "tc_throughput/stats.rs"]
mod stats;
#[path = "tc_throughput/tcp_rr.rs"]
mod tcp_rr;
#[path = "tc_throughput/tcx.rs"]
mod tcx;
#[path = "tc_throughput/udp.rs"]
mod udp;

use config::Config;

const TCP_PORT: u16 = 5201;
const UDP_PORT: u16 = 9000;
const PAYLOAD: usize = 64;
const BATCH: usize = 64;
/// Members of ipwarden-svip-prt (and of the mirror), both families.
const MEMBERS: usize = 10_000;
const LOCAL_PODS: usize = 100;
/// Sources in the egress map: the local pods' and more, to 1k.
const RESTRICTED_SOURCES: usize = 1000;
const PODS: usize = 1000;
const NAMESPACES: usize = 10;
const NODE: &str = "bench-node";

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") || !privileged("tc throughput bench") {
        return;
    }
    let runs = (stats::env_num("IPWARDEN_BENCH_RUNS", 5.0) as usize).max(1);
    let secs = stats::env_num("IPWARDEN_BENCH_SECS", 3.0).max(0.5);
    let frames_only = stats::env_num("IPWARDEN_BENCH_FRAMES_ONLY", 0.0) != 0.0;
    let split_only = stats::env_num("IPWARDEN_BENCH_SPLIT", 0.0) != 0.0;
    let windows = measure::Windows {
        runs,
        secs,
        stats_secs: (secs / 2.0).max(1.0),
    };
    let started = Instant::now();
    let sysctl_before = tcx::bpf_stats_sysctl();

    let sender = NetNs::new("ipw-bench-tx").expect("netns");
    let configs: &[Config] = if frames_only {
        &[Config::TcOnly]
    } else if split_only {
        &Config::SPLIT
    } else {
        &Config::ALL
    };
    let (mut receivers, state) = node::receivers(&sender, configs);
    let members = node::svip_prt_members(&state);
    assert_eq!(members, MEMBERS, "the generated cluster's service ports");
    let (dp, mirror) = load_program(&bpf::object_path_from_env(), &receivers, &state);

    // Fixed frames: the program's own cost per kind, after the traffic.
    let repeat = if secs < 3.0 { 200_000 } else { 1_000_000 };
    let fixed_frames = || {
        let _on = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
        frames::frame_costs(&dp, Config::TcOnly.index(), repeat)
    };
    if frames_only {
        let (frames, floor) = fixed_frames();
        report::frames_table(&frames, floor, repeat);
        return;
    }
    if split_only {
        let dir = std::env::var("IPWARDEN_BENCH_PROFILE").ok();
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir).expect("the profile directory");
        }
        split::run(
            &sender,
            &receivers,
            runs,
            secs,
            dir.as_deref().map(Path::new),
        );
        return;
    }
    if let Ok(dir) = std::env::var("IPWARDEN_BENCH_PROFILE") {
        profile::run(&sender, &receivers, runs, secs, Path::new(&dir));
        return;
    }

    let (empty, _empty_link) = attach_empty_program(&receivers);
    let samples = measure::all(&sender, &receivers, &dp, &empty, windows);
    let sysctl_after = tcx::bpf_stats_sysctl();
    let checks = sanity::checks(&receivers, &mirror);
    for rx in &mut receivers {
        // Our own child, by handle.
        let _ = rx.iperf.kill();
        let _ = rx.iperf.wait();
    }
    let (frames, floor) = fixed_frames();
    report::print(&report::Run {
        configs: &Config::ALL,
        samples: &samples,
        runs,
        secs,
        stats_secs: windows.stats_secs,
        sysctl: (sysctl_before, sysctl_after),
        took_secs: started.elapsed().as_secs_f64(),
        frames: &frames,
        floor,
        repeat,
        checks: &checks,
    });
}

/// One loaded object serves every receiver with the program: the same
/// maps, the program attached to each one's veth0 from inside its
/// namespace. The mirror is written by the daemon's own hook, the egress
/// map holds `RESTRICTED_SOURCES` sources.
fn load_program(
    object: &Path,
    receivers: &[config::Receiver],
    state: &ServiceState,
) -> (TcProgram, BpfMirror) {
    let mut dp = receivers[0]
        .ns
        .run(|| {
            TcProgram::load(object, ProgramLogLevel::Info).unwrap_or_else(|e| {
                panic!(
                    "loading {}: {e} (set IPWARDEN_BPF_OBJECT or run `cargo xtask build-ebpf`)",
                    object.display()
                )
            })
        })
        .expect("netns");
    dp.configure(Mode::Allow, DEFAULT_MARK).expect("configure");
    let mut mirror: BpfMirror = dp.take_mirror().expect("mirror");
    let mirrored: Vec<&SetSpec> = state
        .sets
        .iter()
        .filter(|s| s.name.contains("ipwarden-svip"))
        .collect();
    mirror.mirror(&mirrored, &state.member_services);
    eprintln!("tc bench: mirror holds {MEMBERS} service ports");
    let restricted = cluster::restricted_sources(Config::IpwardenNode.index(), Config::EVERY.len());
    let mut sources = dp.take_sources().expect("sources");
    sources.add(&restricted);
    eprintln!(
        "tc bench: {} egress-restricted sources ({LOCAL_PODS} local pods' addresses among them)",
        restricted.len()
    );
    for rx in receivers.iter().filter(|r| r.config.has_program()) {
        let how = rx
            .ns
            .run(|| dp.attach_ingress("veth0"))
            .expect("netns")
            .expect("attach");
        eprintln!("tc bench: attached to {} veth0 ({how:?})", rx.ns.name());
    }
    (dp, mirror)
}

/// The empty program on tc-empty's veth: what any attached program
/// costs, and what the statistics report for a program that does
/// nothing. Returns the program and the link that holds it there.
fn attach_empty_program(receivers: &[config::Receiver]) -> (OwnedFd, OwnedFd) {
    let empty = test_run::empty_program().expect("load an empty program");
    let rx = receivers
        .iter()
        .find(|r| r.config == Config::TcEmpty)
        .expect("tc-empty");
    let link = rx
        .ns
        .run(|| tcx::attach_tcx(std::os::fd::AsFd::as_fd(&empty), "veth0"))
        .expect("netns")
        .expect("attach the empty program (TCX)");
    (empty, link)
}

/// The index of `c` in `Config::ALL` (its samples in the full bench).
fn at(c: Config) -> usize {
    Config::ALL.iter().position(|&x| x == c).expect("config")
}

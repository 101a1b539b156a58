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
//!   external IP ranges and the NodePort range, then the pod firewall
//!   chains of 100 local pods, rendered by `controllers::policies` from a
//!   generated cluster), then the service firewall with the svip /
//!   svip-prt sets at 10k members;
//! - **ipwarden node**: the same node with ipwarden in allow mode: the same
//!   policy chains, the shipped allow rules and the program.
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
//! CPU-second of the two iperf3 processes. UDP, IPv4 then IPv6: 64-byte
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
//! tune it. Prints markdown tables of medians with the ratios, the goal
//! checks, and sanity counters (iptables rule counters, mirror hits).

#[path = "tc_throughput/checks.rs"]
mod checks;
#[path = "tc_throughput/cluster.rs"]
mod cluster;
#[path = "tc_throughput/counters.rs"]
mod counters;
#[path = "tc_throughput/frames.rs"]
mod frames;
#[path = "tc_throughput/measure.rs"]
mod measure;
#[path = "tc_throughput/report.rs"]
mod report;
#[path = "tc_throughput/setup.rs"]
mod setup;
#[path = "tc_throughput/stats.rs"]
mod stats;
#[path = "tc_throughput/tcp.rs"]
mod tcp;
#[path = "tc_throughput/tcx.rs"]
mod tcx;
#[path = "tc_throughput/udp.rs"]
mod udp;

use checks::*;
use cluster::*;
use counters::*;
use frames::*;
use measure::*;
use report::*;
use setup::*;
use stats::*;
use tcp::*;
use tcx::*;
use udp::*;

use std::{
    collections::BTreeSet,
    io,
    mem::{size_of, zeroed},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    os::fd::{AsFd, AsRawFd},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use ipwarden::{
    bpf::{self, test_run, BpfMirror, ProgramLogLevel, RunStats, TcProgram},
    cluster::{HostInfo, KubeObject, Snapshot},
    controllers::{
        policies,
        services::{self, names::SET_SVIP_PRT, BpfRules},
    },
    desired::Table,
    kernel::{ipset::IpsetClient, iptables},
    netns::{privileged, NetNs},
    reconcile::{self, services_owner, SERVICES_OWNER},
    store::{MirrorSink, SetStore, SourceSink},
};
use ipwarden_common::{
    maps::{PROTO_TCP, PROTO_UDP},
    names::DEFAULT_MARK,
    Mode, ServiceKey,
};
use serde_json::{json, Value};

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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Config {
    None,
    TcEmpty,
    TcOnly,
    TcAllow,
    Iptables,
    KubeRouterNode,
    IpwardenNode,
}

impl Config {
    const ALL: [Config; 7] = [
        Config::None,
        Config::TcEmpty,
        Config::TcOnly,
        Config::TcAllow,
        Config::Iptables,
        Config::KubeRouterNode,
        Config::IpwardenNode,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::None => "none (no program, no rules)",
            Config::TcEmpty => "an empty tc program (returns at once), no rules",
            Config::TcOnly => "tc only: the program alone (10k mirror entries, no rules)",
            Config::TcAllow => {
                "tc allow: the program + the shipped rules (mark ACCEPT first in INPUT)"
            }
            Config::Iptables => "iptables + ipset service firewall, 10k members, no program",
            Config::KubeRouterNode => {
                "kube-router node: policy chains (100 local pods) + service firewall"
            }
            Config::IpwardenNode => {
                "ipwarden node, allow mode: the same policy chains + shipped rules + program"
            }
        }
    }

    fn short(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::TcEmpty => "tc-empty",
            Config::TcOnly => "tc-only",
            Config::TcAllow => "tc-allow",
            Config::Iptables => "iptables",
            Config::KubeRouterNode => "kube-router-node",
            Config::IpwardenNode => "ipwarden-node",
        }
    }

    fn has_program(self) -> bool {
        matches!(
            self,
            Config::TcOnly | Config::TcAllow | Config::IpwardenNode
        )
    }

    fn has_service_rules(self) -> bool {
        !matches!(self, Config::None | Config::TcEmpty | Config::TcOnly)
    }

    fn has_policies(self) -> bool {
        matches!(self, Config::KubeRouterNode | Config::IpwardenNode)
    }

    /// The rules of allow mode (the mark ACCEPT) go with the program.
    fn bpf_rules(self) -> Option<BpfRules> {
        self.has_program().then_some(BpfRules {
            mode: Mode::Allow,
            mark: DEFAULT_MARK,
        })
    }
}

/// One receiver namespace and its addresses.
struct Receiver {
    config: Config,
    ns: NetNs,
    v4: Ipv4Addr,
    v6: Ipv6Addr,
    iperf: Child,
}

fn v4_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, i as u8 + 1, 1)
}

fn v6_of(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x201, i as u16 + 1, 0, 0, 0, 0, 1)
}

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") || !privileged("tc throughput bench") {
        return;
    }
    let opts = Options::from_env();
    let started = Instant::now();
    let sysctl_before = bpf_stats_sysctl();
    let mut bench = Bench::new();
    let samples = measure::run(&bench, &opts);
    let sysctl_after = bpf_stats_sysctl();
    let checks = sanity(&bench);
    bench.stop_iperf();

    // Fixed frames, after the traffic: the program's own cost per kind.
    let repeat = if opts.secs < 3.0 { 200_000 } else { 1_000_000 };
    let (frames, floor) = {
        let _on = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
        frame_costs(&bench.dp, at(Config::TcOnly), repeat)
    };
    let report = Report {
        opts: &opts,
        receivers: &bench.receivers,
        samples: &samples,
        frames: &frames,
        floor,
        repeat,
        sysctl: (sysctl_before, sysctl_after),
        started,
    };
    report.print(checks);
}

/// The index of `c` among the receivers (one per configuration, in order).
fn at(c: Config) -> usize {
    Config::ALL.iter().position(|&x| x == c).expect("config")
}

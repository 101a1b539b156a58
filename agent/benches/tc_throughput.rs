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
//! CPU-second of the two iperf3 processes, and the bytes per packet the
//! accepting rule counted meanwhile (a stream crosses INPUT in TSO-sized
//! segments, so it measures copying more than the chain walk); and TCP
//! request/response (`tcp_rr.rs`: 64 bytes each way, one segment through
//! INPUT per request): transactions per CPU-second. UDP, IPv4 then IPv6: 64-byte
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

#[path = "tc_throughput/tcp_rr.rs"]
mod tcp_rr;

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

// ---------------------------------------------------------------------
// The generated cluster

fn object<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

fn namespace(n: usize) -> String {
    format!("ns-{n}")
}

/// ClusterIP Services with two ports each, a tenth of them IPv6, and one
/// dual-stack Service per receiver whose externalIPs are its addresses:
/// `MEMBERS` members of ipwarden-svip-prt in all.
fn services(receivers: usize) -> Vec<KubeObject> {
    let mut out = Vec::new();
    for i in 0..receivers {
        let (v4, v6) = (v4_of(i), v6_of(i));
        out.push(KubeObject::Service(Box::new(object(json!({
            "metadata": {"namespace": "bench", "name": format!("target-{i}")},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": format!("10.96.200.{}", i + 1),
                "clusterIPs": [format!("10.96.200.{}", i + 1), format!("fd00:96::200:{}", i + 1)],
                "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "RequireDualStack",
                "externalIPs": [v4.to_string(), v6.to_string()],
                "ports": [
                    {"name": "iperf", "port": TCP_PORT, "protocol": "TCP"},
                    {"name": "rr", "port": tcp_rr::RR_PORT, "protocol": "TCP"},
                    {"name": "udp", "port": UDP_PORT, "protocol": "UDP"},
                ],
            },
        })))));
    }
    // Each target Service is 3 ports x 4 addresses.
    let plain = (MEMBERS - receivers * 12) / 2;
    for k in 0..plain {
        let ip = if k % 10 == 9 {
            format!("fd00:96::{:x}", k + 1)
        } else {
            format!("10.96.{}.{}", (k + 1) >> 8, (k + 1) & 255)
        };
        let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
        let second = if k % 4 == 3 { "UDP" } else { "TCP" };
        out.push(KubeObject::Service(Box::new(object(json!({
            "metadata": {"namespace": namespace(k % NAMESPACES), "name": format!("svc-{k}")},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": ip,
                "clusterIPs": [ip],
                "ipFamilies": [family],
                "ports": [
                    {"name": "http", "port": 80 + (k % 100), "protocol": "TCP"},
                    {"name": "other", "port": 8000 + (k % 100), "protocol": second},
                ],
            },
        })))));
    }
    out
}

/// Namespaces, `PODS` dual-stack pods (`LOCAL_PODS` on this node) and, in
/// every namespace, the policies a cautious cluster has: default deny both
/// ways, ingress from clients on 8080, egress to DNS and within the
/// namespace. Every local pod is isolated both ways, so INPUT's policy
/// chain holds a jump per local pod address after its RETURN rules.
fn workloads() -> Vec<KubeObject> {
    let mut out = Vec::new();
    for n in 0..NAMESPACES {
        out.push(KubeObject::Namespace(Box::new(object(json!({
            "metadata": {"name": namespace(n), "labels": {"team": format!("team-{}", n % 3)}},
        })))));
        let policy = |name: &str, spec: Value| {
            KubeObject::NetworkPolicy(Box::new(object(json!({
                "metadata": {"namespace": namespace(n), "name": name},
                "spec": spec,
            }))))
        };
        out.push(policy(
            "default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ));
        out.push(policy(
            "allow-clients",
            json!({
                "podSelector": {"matchLabels": {"role": "server"}},
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                }],
                "policyTypes": ["Ingress"],
            }),
        ));
        out.push(policy(
            "allow-dns",
            json!({
                "podSelector": {},
                "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
                "policyTypes": ["Egress"],
            }),
        ));
        out.push(policy(
            "allow-namespace",
            json!({
                "podSelector": {},
                "egress": [{"to": [{"podSelector": {}}]}],
                "policyTypes": ["Egress"],
            }),
        ));
    }
    for j in 0..PODS {
        let node = if j < LOCAL_PODS {
            NODE.to_string()
        } else {
            format!("node-{}", j % 9 + 1)
        };
        let (v4, v6) = (
            format!("10.244.{}.{}", j >> 8, j & 255),
            format!("fd00:244::{:x}", j + 1),
        );
        let role = if j % 2 == 0 { "server" } else { "client" };
        out.push(KubeObject::Pod(Box::new(object(json!({
            "metadata": {
                "namespace": namespace(j % NAMESPACES),
                "name": format!("pod-{j}"),
                "labels": {"app": format!("app-{}", j % 5), "role": role},
            },
            "spec": {"nodeName": node, "containers": [{"name": "main"}]},
            "status": {"phase": "Running", "podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
        })))));
    }
    out
}

/// The cluster as receiver `i`'s node sees it.
fn snapshot(i: usize, receivers: usize) -> Snapshot {
    let mut objects = services(receivers);
    objects.extend(workloads());
    Snapshot::from_objects(
        objects,
        HostInfo {
            node_name: NODE.into(),
            local_addresses: vec![IpAddr::V4(v4_of(i)), IpAddr::V6(v6_of(i))],
        },
    )
}

/// kube-router's flags for the policy controller on this node: the
/// ClusterIP ranges and the external IP ranges the receivers' addresses
/// are in (so service traffic RETURNs from the policy chain).
fn policy_options() -> policies::Options {
    policies::Options {
        service_ranges: [
            "10.96.0.0/12",
            "fd00:96::/64",
            "10.201.0.0/16",
            "fd00:201::/32",
        ]
        .iter()
        .map(|r| r.parse().expect("range"))
        .collect(),
        ..policies::Options::default()
    }
}

/// Sets and chains of `config`, written inside `ns` as a pass would: the
/// service sets and filter chains, then the policy sets and chains.
/// Returns the service state (its sets feed the mirror).
fn program_node(ns: &NetNs, config: Config, snap: &Snapshot) -> ipwarden::desired::ServiceState {
    let state = services::desired_with(
        snap,
        &services::Options {
            bpf: config.bpf_rules(),
            ..Default::default()
        },
    );
    assert!(
        state.problems.is_empty(),
        "generated Services with problems: {:?}",
        &state.problems[..state.problems.len().min(3)]
    );
    if !config.has_service_rules() {
        return state;
    }
    ns.run(|| {
        let store = SetStore::new(IpsetClient::new().expect("ipset socket"));
        store.register(services_owner()).expect("owner");
        let report = store
            .apply(SERVICES_OWNER, state.sets.clone())
            .expect("service sets");
        assert!(report.verified, "service sets did not verify");
        // The nat plans match IPVS connections: this host has no IPVS, and
        // they see none of this traffic anyway.
        for plan in state.iptables.iter().filter(|p| p.table == Table::Filter) {
            iptables::apply(plan).expect("service chains");
        }
        if config.has_policies() {
            let pstate = policies::desired(snap, &policy_options());
            assert!(pstate.problems.is_empty(), "{:?}", pstate.problems);
            store
                .register(reconcile::policies::policies_owner())
                .expect("owner");
            reconcile::policies::apply(&store, &pstate).expect("policies");
        }
    })
    .expect("netns");
    state
}

/// Restricted sources the program checks every hit against: the egress-
/// isolated local pods of the generated cluster as the policy controller
/// publishes them, topped up with other pod addresses to
/// [`RESTRICTED_SOURCES`] (none of them the sender's).
fn restricted_sources(i: usize, receivers: usize) -> BTreeSet<IpAddr> {
    let pstate = policies::desired(&snapshot(i, receivers), &policy_options());
    let mut out = pstate.egress_restricted_sources();
    assert!(
        out.len() >= LOCAL_PODS,
        "the generated policies isolate {} local addresses",
        out.len()
    );
    let mut n = 0u32;
    while out.len() < RESTRICTED_SOURCES {
        out.insert(IpAddr::V4(Ipv4Addr::from(0x0af0_0000 + n)));
        n += 1;
    }
    out
}

fn svip_prt_members(state: &ipwarden::desired::ServiceState) -> usize {
    state
        .sets
        .iter()
        .filter(|s| s.name.ends_with(SET_SVIP_PRT))
        .map(|s| s.members.len())
        .sum()
}

// ---------------------------------------------------------------------
// Traffic

/// Packet counters of every filter rule, as (rule text, packets).
fn rule_counters(ns: &NetNs, v6: bool) -> Vec<(String, u64)> {
    let cmd = if v6 {
        "ip6tables-save"
    } else {
        "iptables-save"
    };
    let save = ns
        .output(cmd, &["-c", "-t", "filter"])
        .expect("iptables-save");
    save.lines()
        .filter(|l| l.starts_with('['))
        .filter_map(|l| {
            let (counters, rule) = l.trim_start_matches('[').split_once("] ")?;
            let packets = counters.split(':').next()?.parse().ok()?;
            Some((rule.to_string(), packets))
        })
        .collect()
}

/// (packets, bytes) the rules that accept service traffic counted (the
/// mark ACCEPTs and the svip-prt ACCEPT, IPv4); None without rules.
fn accepted(rx: &Receiver) -> Option<(u64, u64)> {
    if !rx.config.has_service_rules() {
        return None;
    }
    let save = rx
        .ns
        .output("iptables-save", &["-c", "-t", "filter"])
        .expect("iptables-save");
    let mut sum = (0, 0);
    for line in save.lines().filter(|l| l.starts_with('[')) {
        let Some((counters, rule)) = line[1..].split_once("] ") else {
            continue;
        };
        let accepts = rule.contains("-j ACCEPT")
            && (rule.contains("--mark") || rule.contains("ipwarden-svip-prt dst,dst"));
        if let (true, Some((p, b))) = (accepts, counters.split_once(':')) {
            sum.0 += p.parse::<u64>().unwrap_or(0);
            sum.1 += b.parse::<u64>().unwrap_or(0);
        }
    }
    Some(sum)
}

/// The rules of INPUT in order, for the report.
fn input_chain(ns: &NetNs) -> Vec<String> {
    ns.output("iptables-save", &["-t", "filter"])
        .expect("iptables-save")
        .lines()
        .filter_map(|l| l.strip_prefix("-A INPUT "))
        .map(str::to_string)
        .collect()
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity(0 = this thread) only read and write it.
    unsafe {
        let mut set: libc::cpu_set_t = zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Sends `BATCH` datagrams per `sendmmsg` until `stop`, counting them.
fn udp_send(sock: &UdpSocket, stop: &AtomicBool, sent: &AtomicU64) {
    let payload = [0x5au8; PAYLOAD];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: PAYLOAD,
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid (null name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs points at BATCH headers whose iovecs point at
        // `payload`, all alive for the call; the socket is connected.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// Receives with non-blocking `recvmmsg` in a busy loop until `stop`,
/// counting datagrams. Spinning instead of sleeping keeps wake-ups (an IPI
/// per sleep on a VM) out of the figure: the sender's CPU, which also runs
/// the veth receive path (tc, netfilter, UDP), is then the bottleneck.
fn udp_recv(sock: &UdpSocket, stop: &AtomicBool, received: &AtomicU64) {
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: as in udp_send.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: msgs and their buffers stay alive for the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n > 0 {
            received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

/// One UDP measurement: wall-clock rates, the sending thread's CPU time
/// per datagram (the veth receive path, tc, netfilter and UDP, runs in the
/// sender's context: softirq on the way out of its xmit; this kernel has
/// no IRQ time accounting, so that time is the path's cost per packet
/// whatever else the machine is running), and the program's time per run.
#[derive(Clone, Copy)]
struct Udp {
    sent_pps: f64,
    recv_pps: f64,
    cpu_ns_per_packet: f64,
    prog_ns_per_run: Option<f64>,
}

fn thread_cpu_ns(clock: libc::clockid_t) -> f64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: `ts` is a valid out pointer; `clock` is a live thread's clock.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Datagram rates to `dst` over a `secs` window after a short warm-up.
/// With `stats` (the program's run statistics), the kernel's BPF
/// statistics are on for the window, which costs every program run two
/// clock reads: so only the windows that report the program's time have
/// them on, never those whose CPU time is compared.
fn udp_rate(
    sender: &NetNs,
    rx: &Receiver,
    dst: IpAddr,
    secs: f64,
    stats: Option<&dyn Fn() -> Option<RunStats>>,
) -> Udp {
    let _on =
        stats.map(|_| aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS"));
    let stats = || stats.and_then(|f| f());
    let rsock = rx
        .ns
        .run(|| UdpSocket::bind((dst, UDP_PORT)))
        .expect("netns")
        .expect("bind receiver");
    let ssock = sender
        .run(|| -> io::Result<UdpSocket> {
            let any: IpAddr = if dst.is_ipv6() {
                Ipv6Addr::UNSPECIFIED.into()
            } else {
                Ipv4Addr::UNSPECIFIED.into()
            };
            let s = UdpSocket::bind((any, 0))?;
            s.connect(SocketAddr::from((dst, UDP_PORT)))?;
            Ok(s)
        })
        .expect("netns")
        .expect("sender socket");
    let stop = AtomicBool::new(false);
    let (sent, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let clock = AtomicI32::new(i32::MIN);
    let pin = cpus() >= 2;
    std::thread::scope(|s| {
        s.spawn(|| {
            if pin {
                pin_to_cpu(1);
            }
            udp_recv(&rsock, &stop, &received)
        });
        s.spawn(|| {
            if pin {
                pin_to_cpu(0);
            }
            let mut id: libc::clockid_t = 0;
            // SAFETY: pthread_self is this live thread; `id` is an out pointer.
            let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
            assert_eq!(rc, 0, "pthread_getcpuclockid");
            clock.store(id, Ordering::Release);
            udp_send(&ssock, &stop, &sent)
        });
        std::thread::sleep(Duration::from_millis(500));
        let clock = loop {
            match clock.load(Ordering::Acquire) {
                i32::MIN => std::thread::sleep(Duration::from_millis(10)),
                id => break id,
            }
        };
        let snapshot = || {
            (
                Instant::now(),
                thread_cpu_ns(clock),
                sent.load(Ordering::Relaxed),
                received.load(Ordering::Relaxed),
                stats(),
            )
        };
        let (t0, c0, s0, r0, p0) = snapshot();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (t1, c1, s1, r1, p1) = snapshot();
        stop.store(true, Ordering::Relaxed);
        let dt = (t1 - t0).as_secs_f64();
        Udp {
            sent_pps: (s1 - s0) as f64 / dt,
            recv_pps: (r1 - r0) as f64 / dt,
            cpu_ns_per_packet: (c1 - c0) / (s1 - s0).max(1) as f64,
            prog_ns_per_run: p1.zip(p0).and_then(|(b, a)| b.ns_per_run_since(&a)),
        }
    })
}

/// One iperf3 TCP measurement: receiver Gbit/s, and Gbit per CPU-second
/// of both iperf3 processes (iperf3's own rusage figures; the receive
/// path runs in their context, see [`Udp`]).
#[derive(Clone, Copy)]
struct Tcp {
    gbps: f64,
    gbps_per_cpu: f64,
}

/// One iperf3 TCP stream from the sender namespace.
fn tcp_rate(sender: &NetNs, rx: &Receiver, secs: f64) -> Tcp {
    let mut args = vec![
        "-c".to_string(),
        rx.v4.to_string(),
        "-p".to_string(),
        TCP_PORT.to_string(),
        "-t".to_string(),
        format!("{secs}"),
        "-O".to_string(),
        "0.5".to_string(),
        "-J".to_string(),
    ];
    if cpus() >= 2 {
        args.extend(["-A".to_string(), "0,1".to_string()]);
    }
    let mut last = String::new();
    for _ in 0..20 {
        let out = sender
            .run(|| Command::new("iperf3").args(&args).output())
            .expect("netns")
            .expect("run iperf3 (apt-get install iperf3)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            let v: Value = serde_json::from_str(&text).expect("iperf3 -J output");
            let num = |x: &Value, what: &str| {
                x.as_f64()
                    .unwrap_or_else(|| panic!("iperf3 -J without {what}:\n{text}"))
            };
            let gbps = num(
                &v["end"]["sum_received"]["bits_per_second"],
                "end.sum_received.bits_per_second",
            ) / 1e9;
            let cpu = &v["end"]["cpu_utilization_percent"];
            let cpus = (num(&cpu["host_total"], "host_total")
                + num(&cpu["remote_total"], "remote_total"))
                / 100.0;
            return Tcp {
                gbps,
                gbps_per_cpu: gbps / cpus.max(1e-6),
            };
        }
        // The server may not be listening yet.
        last = text;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("iperf3 to {} kept failing:\n{last}", rx.v4);
}

// ---------------------------------------------------------------------
// Fixed frames through BPF_PROG_TEST_RUN

fn udp_frame(v6: bool, dst: IpAddr, ext: &[u8], first_next_header: u8) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    let udp_len = (8 + PAYLOAD) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&UDP_PORT.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[0x5a; PAYLOAD]);
    match (v6, dst) {
        (false, IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            ip[8] = 64;
            ip[9] = PROTO_UDP;
            ip[12..16].copy_from_slice(&[10, 201, 1, 2]);
            ip[16..20].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
        }
        (true, IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((ext.len() as u16) + udp_len).to_be_bytes());
            ip[6] = first_next_header;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 2).octets());
            ip[24..40].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
            f.extend_from_slice(ext);
        }
        _ => unreachable!("family and address agree"),
    }
    f.extend_from_slice(&udp);
    f
}

/// Hop-by-hop, routing (type 0, no segments left), fragment (offset 0)
/// and destination options, then UDP.
fn four_extension_headers() -> (Vec<u8>, u8) {
    let mut ext = Vec::new();
    ext.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, PadN
    ext.extend_from_slice(&[44, 2, 0, 0, 0, 0, 0, 0]); // routing, one address
    ext.extend_from_slice(&[0; 16]);
    ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 1]); // fragment, offset 0
    ext.extend_from_slice(&[PROTO_UDP, 0, 1, 4, 0, 0, 0, 0]); // destination options
    (ext, 0)
}

struct FrameCost {
    label: &'static str,
    ns_per_run: f64,
    marked: bool,
}

/// The program's time per frame, from the kernel's statistics, over
/// `repeat` runs of each (best of three calls).
fn frame_costs(dp: &TcProgram, target: usize, repeat: u32) -> (Vec<FrameCost>, f64) {
    let (ext, first) = four_extension_headers();
    let frames: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "IPv4 UDP to a mirrored VIP:port",
            udp_frame(false, v4_of(target).into(), &[], 0),
        ),
        ("IPv4 UDP to a VIP, another port", {
            let mut f = udp_frame(false, v4_of(target).into(), &[], 0);
            f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&(UDP_PORT + 1).to_be_bytes());
            f
        }),
        (
            "IPv4 UDP to an address that is no VIP",
            udp_frame(false, Ipv4Addr::new(10, 202, 0, 9).into(), &[], 0),
        ),
        (
            "IPv6 UDP to a mirrored VIP:port",
            udp_frame(true, v6_of(target).into(), &[], PROTO_UDP),
        ),
        (
            "IPv6 UDP to an address that is no VIP",
            udp_frame(true, "fd00:202::9".parse().expect("v6"), &[], PROTO_UDP),
        ),
        (
            "IPv6 UDP to a mirrored VIP:port behind 4 extension headers",
            udp_frame(true, v6_of(target).into(), &ext, first),
        ),
    ];
    let mut out = Vec::new();
    for (label, frame) in frames {
        let mut best = f64::MAX;
        let mut marked = false;
        for _ in 0..3 {
            let before = dp.run_stats().expect("stats");
            let r = dp.test_run(&frame, repeat).expect("test run");
            let after = dp.run_stats().expect("stats");
            marked = r.mark & DEFAULT_MARK != 0;
            if let Some(ns) = after.ns_per_run_since(&before) {
                best = best.min(ns);
            }
        }
        out.push(FrameCost {
            label,
            ns_per_run: best,
            marked,
        });
    }
    let empty = test_run::empty_program().expect("load an empty program");
    let frame = udp_frame(false, v4_of(target).into(), &[], 0);
    let mut floor = f64::MAX;
    for _ in 0..3 {
        let (t0, c0) = test_run::stats(empty.as_fd()).expect("stats");
        test_run::run(empty.as_fd(), &frame, repeat).expect("test run");
        let (t1, c1) = test_run::stats(empty.as_fd()).expect("stats");
        if c1 > c0 {
            floor = floor.min((t1 - t0) as f64 / (c1 - c0) as f64);
        }
    }
    (out, floor)
}

// ---------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `min-max (x%)`: the range of `v` and its width relative to the median.
fn spread(v: Vec<f64>) -> String {
    let lo = v.iter().copied().fold(f64::MAX, f64::min);
    let hi = v.iter().copied().fold(f64::MIN, f64::max);
    let mid = median(v);
    format!("{lo:.2}-{hi:.2} ({:.1}%)", 100.0 * (hi - lo) / mid)
}

/// The median of `v` to a whole number, or nothing when `v` is empty.
fn median_text(v: &[f64]) -> String {
    if v.is_empty() {
        return String::new();
    }
    format!("{:.0}", median(v.to_vec()))
}

fn median_opt(v: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = v.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| median(v))
}

fn env_num(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn ns(x: Option<f64>) -> String {
    x.map_or("".to_string(), |v| format!("{v:.1}"))
}

/// Per configuration, every run's figures.
#[derive(Default)]
struct Samples {
    tcp: Vec<Tcp>,
    /// Bytes per packet the accepting rule counted during the stream.
    tcp_skb_bytes: Vec<f64>,
    rr: Vec<tcp_rr::Rr>,
    /// Statistics off: what the CPU and rate ratios compare.
    udp4: Vec<Udp>,
    udp6: Vec<Udp>,
    /// Statistics on (configurations with a program): its time per run.
    udp4_stats: Vec<Udp>,
    udp6_stats: Vec<Udp>,
}

/// Medians of one kind of traffic.
#[derive(Clone, Copy)]
struct UdpMedian {
    sent_pps: f64,
    recv_pps: f64,
    cpu_ns: f64,
    prog_ns: Option<f64>,
    /// CPU ns per packet in the windows with statistics on.
    cpu_ns_stats: Option<f64>,
}

fn udp_median(off: &[Udp], on: &[Udp]) -> UdpMedian {
    UdpMedian {
        sent_pps: median(off.iter().map(|u| u.sent_pps).collect()),
        recv_pps: median(off.iter().map(|u| u.recv_pps).collect()),
        cpu_ns: median(off.iter().map(|u| u.cpu_ns_per_packet).collect()),
        prog_ns: median_opt(&on.iter().map(|u| u.prog_ns_per_run).collect::<Vec<_>>()),
        cpu_ns_stats: (!on.is_empty())
            .then(|| median(on.iter().map(|u| u.cpu_ns_per_packet).collect())),
    }
}

/// `struct bpf_attr` for BPF_LINK_CREATE with TCX's fields, padded.
#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    _pad: u32,
    expected_revision: u64,
    _rest: [u64; 8],
}

/// Attaches `prog` to `iface`'s TCX ingress in the calling thread's
/// namespace (aya cannot take a program it did not load); the link fd
/// holds the attachment.
fn attach_tcx(prog: std::os::fd::BorrowedFd<'_>, iface: &str) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let name = std::ffi::CString::new(iface).expect("name");
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: 46, // BPF_TCX_INGRESS
        ..LinkCreate::default()
    };
    // SAFETY: a valid bpf_attr for BPF_LINK_CREATE (28) of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            28,
            std::ptr::from_mut(&mut attr),
            size_of::<LinkCreate>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: BPF_LINK_CREATE returned a new fd we now own.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

fn bpf_stats_sysctl() -> String {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") || !privileged("tc throughput bench") {
        return;
    }
    let runs = (env_num("IPWARDEN_BENCH_RUNS", 5.0) as usize).max(1);
    let secs = env_num("IPWARDEN_BENCH_SECS", 3.0).max(0.5);
    let stats_secs = (secs / 2.0).max(1.0);
    let object = bpf::object_path_from_env();
    let started = Instant::now();
    let sysctl_before = bpf_stats_sysctl();

    let sender = NetNs::new("ipw-bench-tx").expect("netns");
    let receivers_n = Config::ALL.len();
    let mut receivers = Vec::new();
    let mut service_state = None;
    for (i, config) in Config::ALL.into_iter().enumerate() {
        let ns = NetNs::new(&format!("ipw-bench-rx{i}")).expect("netns");
        let (v4, v6) = (v4_of(i), v6_of(i));
        let peer4 = format!("10.201.{}.2/24", i + 1);
        let peer6 = format!("fd00:201:{:x}::2/64", i + 1);
        sender
            .veth_to(
                &ns,
                (&format!("vb{i}"), &[peer4.as_str(), peer6.as_str()]),
                ("veth0", &[&format!("{v4}/24"), &format!("{v6}/64")]),
            )
            .expect("veth pair");
        let t = Instant::now();
        let state = program_node(&ns, config, &snapshot(i, receivers_n));
        eprintln!(
            "tc bench: {} ready in {:.1} s ({} members in svip-prt)",
            config.short(),
            t.elapsed().as_secs_f64(),
            svip_prt_members(&state)
        );
        service_state.get_or_insert(state);
        let iperf = ns
            .run(|| {
                let mut cmd = Command::new("iperf3");
                cmd.args(["-s", "-B", &v4.to_string(), "-p", &TCP_PORT.to_string()]);
                if cpus() >= 2 {
                    cmd.args(["-A", "1"]);
                }
                cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
            })
            .expect("netns")
            .expect("start iperf3 -s (apt-get install iperf3)");
        receivers.push(Receiver {
            config,
            ns,
            v4,
            v6,
            iperf,
        });
    }
    let state = service_state.expect("at least one receiver");
    let members = svip_prt_members(&state);
    assert_eq!(members, MEMBERS, "the generated cluster's service ports");

    // One loaded object serves every receiver with the program: the same
    // maps, the program attached to each one's veth0 from inside its
    // namespace. The mirror is written by the daemon's own hook.
    let mut dp = receivers[0]
        .ns
        .run(|| {
            TcProgram::load(&object, ProgramLogLevel::Info).unwrap_or_else(|e| {
                panic!(
                    "loading {}: {e} (set IPWARDEN_BPF_OBJECT or run `cargo xtask build-ebpf`)",
                    object.display()
                )
            })
        })
        .expect("netns");
    dp.configure(Mode::Allow, DEFAULT_MARK).expect("configure");
    let mut mirror: BpfMirror = dp.take_mirror().expect("mirror");
    let mirrored: Vec<&ipwarden::desired::SetSpec> = state
        .sets
        .iter()
        .filter(|s| s.name.contains("ipwarden-svip"))
        .collect();
    mirror.mirror(&mirrored, &state.member_services);
    eprintln!("tc bench: mirror holds {members} service ports");
    let restricted = restricted_sources(at(Config::IpwardenNode), receivers_n);
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
    // The empty program: what any attached program costs, and what the
    // statistics report for a program that does nothing.
    let empty = test_run::empty_program().expect("load an empty program");
    let empty_rx = receivers
        .iter()
        .find(|r| r.config == Config::TcEmpty)
        .expect("tc-empty");
    let _empty_link = empty_rx
        .ns
        .run(|| attach_tcx(empty.as_fd(), "veth0"))
        .expect("netns")
        .expect("attach the empty program (TCX)");

    let k = receivers.len();
    let mut samples: Vec<Samples> = (0..k).map(|_| Samples::default()).collect();
    for run in 0..runs {
        // Rotate the order each run, so drift does not favour a config.
        for j in 0..k {
            let i = (j + run) % k;
            let rx = &receivers[i];
            let ours = || dp.run_stats().ok();
            let the_empty = || {
                test_run::stats(empty.as_fd())
                    .ok()
                    .map(|(run_time_ns, run_count)| RunStats {
                        run_time_ns,
                        run_count,
                    })
            };
            let stats: Option<&dyn Fn() -> Option<RunStats>> = match rx.config {
                Config::TcEmpty => Some(&the_empty),
                c if c.has_program() => Some(&ours),
                _ => None,
            };
            let accepted_before = accepted(rx);
            let t = tcp_rate(&sender, rx, secs);
            let skb_bytes = accepted(rx)
                .zip(accepted_before)
                .map(|((p1, b1), (p0, b0))| (b1 - b0) as f64 / (p1 - p0).max(1) as f64);
            let rr = tcp_rr::tcp_rr(&sender, &rx.ns, rx.v4, secs, cpus() >= 2);
            let u4 = udp_rate(&sender, rx, rx.v4.into(), secs, None);
            let u6 = udp_rate(&sender, rx, rx.v6.into(), secs, None);
            let (s4, s6) = match stats {
                Some(f) => (
                    Some(udp_rate(&sender, rx, rx.v4.into(), stats_secs, Some(f))),
                    Some(udp_rate(&sender, rx, rx.v6.into(), stats_secs, Some(f))),
                ),
                None => (None, None),
            };
            eprintln!(
                "run {run} {:>16}: tcp {:.2} Gbit/s ({:.2} per CPU-s, {:.0} bytes per packet); rr {:.0}/s ({:.0} per CPU-s); udp4 {:.0}/{:.0} kpps {:.0} ns CPU, prog {} ns; udp6 {:.0}/{:.0} kpps {:.0} ns CPU, prog {} ns",
                rx.config.short(),
                t.gbps,
                t.gbps_per_cpu,
                skb_bytes.unwrap_or(f64::NAN),
                rr.per_sec,
                rr.per_cpu_sec,
                u4.recv_pps / 1e3,
                u4.sent_pps / 1e3,
                u4.cpu_ns_per_packet,
                ns(s4.and_then(|s| s.prog_ns_per_run)),
                u6.recv_pps / 1e3,
                u6.sent_pps / 1e3,
                u6.cpu_ns_per_packet,
                ns(s6.and_then(|s| s.prog_ns_per_run)),
            );
            let m = &mut samples[i];
            m.tcp.push(t);
            m.tcp_skb_bytes.extend(skb_bytes);
            m.rr.push(rr);
            m.udp4.push(u4);
            m.udp6.push(u6);
            m.udp4_stats.extend(s4);
            m.udp6_stats.extend(s6);
        }
    }
    let sysctl_after = bpf_stats_sysctl();

    // Sanity, outside the timed part: marked traffic took the mark rule,
    // unmarked traffic the set rule, nothing was rejected, the mirror hit.
    let mut checks = Vec::new();
    for rx in &receivers {
        for v6 in [false, true] {
            let counters = if rx.config.has_service_rules() {
                rule_counters(&rx.ns, v6)
            } else {
                Vec::new()
            };
            let count = |pred: &dyn Fn(&str) -> bool| {
                counters
                    .iter()
                    .filter(|(r, _)| pred(r))
                    .map(|(_, p)| p)
                    .sum::<u64>()
            };
            let marked = count(&|r| r.contains("--mark") && r.contains("-j ACCEPT"));
            let set_accept = count(&|r| r.contains("ipwarden-svip-prt dst,dst -j ACCEPT"));
            let rejected = count(&|r| r.contains("-j REJECT") && !r.contains("--mark"));
            let family = if v6 { "IPv6" } else { "IPv4" };
            assert_eq!(
                rejected,
                0,
                "{} {family}: packets were rejected",
                rx.config.short()
            );
            match rx.config {
                Config::None | Config::TcEmpty | Config::TcOnly => {}
                Config::TcAllow | Config::IpwardenNode => {
                    assert!(
                        marked > 0,
                        "{} {family}: no marked packets",
                        rx.config.short()
                    );
                    assert_eq!(
                        set_accept,
                        0,
                        "{} {family}: set rule used",
                        rx.config.short()
                    );
                }
                Config::Iptables | Config::KubeRouterNode => {
                    assert!(
                        set_accept > 0,
                        "{} {family}: set rule unused",
                        rx.config.short()
                    )
                }
            }
            if rx.config.has_service_rules() {
                checks.push(format!(
                    "{} {family}: mark ACCEPT {marked} packets, svip-prt ACCEPT {set_accept}, REJECT {rejected}",
                    rx.config.short()
                ));
            }
        }
    }
    for config in [Config::KubeRouterNode, Config::IpwardenNode] {
        let rx = receivers.iter().find(|r| r.config == config).expect("node");
        let input = input_chain(&rx.ns);
        checks.push(format!(
            "INPUT of the {} (in order): {}",
            config.short(),
            input
                .iter()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let save = rx
            .ns
            .output("iptables-save", &["-t", "filter"])
            .expect("save");
        let count = |prefix: &str| save.lines().filter(|l| l.starts_with(prefix)).count();
        // Every answer and ACK the receiver sends walks IPWARDEN-OUTPUT,
        // in both nodes alike: the program sees only ingress.
        checks.push(format!(
            "{}: {} IPv4 rules in the policy chains, {} of them in IPWARDEN-OUTPUT",
            config.short(),
            count("-A IPW"),
            count("-A IPWARDEN-OUTPUT "),
        ));
    }
    let hits: u64 = receivers
        .iter()
        .filter(|r| r.config.has_program())
        .flat_map(|r| {
            [
                ServiceKey::v4(r.v4.octets(), PROTO_UDP, UDP_PORT),
                ServiceKey::v6(r.v6.octets(), PROTO_UDP, UDP_PORT),
                ServiceKey::v4(r.v4.octets(), PROTO_TCP, TCP_PORT),
            ]
        })
        .map(|key| mirror.hits(&key).expect("hits").packets)
        .sum();
    assert!(hits > 0, "the mirror never hit");
    checks.push(format!(
        "mirror hits on the targets (TCP and UDP, both families): {hits} packets"
    ));

    for rx in &mut receivers {
        // Our own child, by handle.
        let _ = rx.iperf.kill();
        let _ = rx.iperf.wait();
    }

    // Fixed frames, after the traffic: the program's own cost per kind.
    let repeat = if secs < 3.0 { 200_000 } else { 1_000_000 };
    let (frames, floor) = {
        let _on = aya::sys::enable_stats(aya::sys::Stats::RunTime).expect("BPF_ENABLE_STATS");
        frame_costs(&dp, at(Config::TcOnly), repeat)
    };

    let (none, empty_i, kr, tc_only, tc_allow, ipw) = (
        at(Config::None),
        at(Config::TcEmpty),
        at(Config::KubeRouterNode),
        at(Config::TcOnly),
        at(Config::TcAllow),
        at(Config::IpwardenNode),
    );
    let tcp: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                median(s.tcp.iter().map(|t| t.gbps).collect()),
                median(s.tcp.iter().map(|t| t.gbps_per_cpu).collect()),
            )
        })
        .collect();
    let rr: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                median(s.rr.iter().map(|r| r.per_sec).collect()),
                median(s.rr.iter().map(|r| r.per_cpu_sec).collect()),
            )
        })
        .collect();
    let udp4: Vec<UdpMedian> = samples
        .iter()
        .map(|s| udp_median(&s.udp4, &s.udp4_stats))
        .collect();
    let udp6: Vec<UdpMedian> = samples
        .iter()
        .map(|s| udp_median(&s.udp6, &s.udp6_stats))
        .collect();

    println!(
        "veth pair into a netns, medians of {runs} runs per configuration and kind of traffic, \
         configurations interleaved; TCP: iperf3, 1 stream, IPv4, {secs} s; UDP: {PAYLOAD}-byte \
         payloads, sendmmsg / busy recvmmsg, IPv4 and IPv6, {secs} s with the kernel's BPF \
         statistics off (the CPU and rate columns), then {stats_secs} s with them on (the \
         program's time per run: run_time_ns / run_cnt over the window, statistics on through \
         BPF_ENABLE_STATS); sender and receiver pinned to CPUs 0 and 1; {MEMBERS} members in \
         svip-prt and in the mirror (both families). kernel.bpf_stats_enabled was \
         {sysctl_before} before the run and {sysctl_after} after (1 would mean statistics on in \
         every window). Took {:.0} s.\n",
        started.elapsed().as_secs_f64()
    );
    println!(
        "Ratios are in work per CPU-second or packets per second (above 1: better than the \
         baseline); \"vs kube-router node\" compares with the kube-router node configuration. \
         The empty program's time per run is the statistics' own cost under this traffic \
         (two clock reads); the last column shows what turning them on costs each packet.\n"
    );
    for (title, med) in [("UDP over IPv4", &udp4), ("UDP over IPv6", &udp6)] {
        println!("{title}, 64-byte datagrams:\n");
        println!(
            "| configuration | program ns per run (BPF stats) | CPU ns per packet | vs none | vs kube-router node | received kpps | vs none | vs kube-router node | sent kpps | CPU ns per packet, statistics on |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (i, rx) in receivers.iter().enumerate() {
            let m = med[i];
            println!(
                "| {} | {} | {:.0} | {:.3}x | {:.3}x | {:.0} | {:.3}x | {:.3}x | {:.0} | {} |",
                rx.config.label(),
                ns(m.prog_ns),
                m.cpu_ns,
                med[none].cpu_ns / m.cpu_ns,
                med[kr].cpu_ns / m.cpu_ns,
                m.recv_pps / 1e3,
                m.recv_pps / med[none].recv_pps,
                m.recv_pps / med[kr].recv_pps,
                m.sent_pps / 1e3,
                m.cpu_ns_stats.map_or(String::new(), |c| format!("{c:.0}")),
            );
        }
        println!();
    }
    println!(
        "Spread over the {runs} runs (min-max, and (max-min)/median) of each configuration's \
         CPU per packet and TCP work per CPU-second:\n"
    );
    println!("| configuration | UDP IPv4 CPU ns per packet | UDP IPv6 CPU ns per packet | TCP Gbit per CPU-second | TCP request/response per CPU-second |");
    println!("|---|---:|---:|---:|---:|");
    for (i, rx) in receivers.iter().enumerate() {
        let s = &samples[i];
        println!(
            "| {} | {} | {} | {} | {} |",
            rx.config.short(),
            spread(s.udp4.iter().map(|u| u.cpu_ns_per_packet).collect()),
            spread(s.udp6.iter().map(|u| u.cpu_ns_per_packet).collect()),
            spread(s.tcp.iter().map(|t| t.gbps_per_cpu).collect()),
            spread(s.rr.iter().map(|r| r.per_cpu_sec).collect()),
        );
    }
    println!();
    println!("TCP over IPv4, iperf3 (statistics off):\n");
    println!(
        "| configuration | Gbit per CPU-second | vs none | vs kube-router node | Gbit/s | vs none | vs kube-router node | bytes per packet through INPUT's accepting rule |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, rx) in receivers.iter().enumerate() {
        let (g, gc) = tcp[i];
        let skb = &samples[i].tcp_skb_bytes;
        println!(
            "| {} | {:.2} | {:.3}x | {:.3}x | {:.2} | {:.3}x | {:.3}x | {} |",
            rx.config.label(),
            gc,
            gc / tcp[none].1,
            gc / tcp[kr].1,
            g,
            g / tcp[none].0,
            g / tcp[kr].0,
            median_text(skb),
        );
    }
    println!();
    println!(
        "TCP request/response over IPv4 ({}-byte request and answer, one connection, blocking, \
         client and server threads pinned to CPUs 0 and 1; transactions per CPU-second of both \
         threads):\n",
        tcp_rr::MESSAGE
    );
    println!(
        "| configuration | transactions per CPU-second | vs none | vs kube-router node | transactions/s | vs none | vs kube-router node |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, rx) in receivers.iter().enumerate() {
        let (t, tc) = rr[i];
        println!(
            "| {} | {:.0} | {:.3}x | {:.3}x | {:.0} | {:.3}x | {:.3}x |",
            rx.config.label(),
            tc,
            tc / rr[none].1,
            tc / rr[kr].1,
            t,
            t / rr[none].0,
            t / rr[kr].0,
        );
    }
    println!();
    println!(
        "The program alone on fixed frames (BPF_PROG_TEST_RUN, {repeat} runs per call, best of \
         3; ns per run from the kernel's statistics; the empty program reads {floor:.1} ns per \
         run here, the statistics' own cost with the caches warm):\n"
    );
    println!("| frame | program ns per run | empty program | marked |");
    println!("|---|---:|---:|---|");
    for f in &frames {
        println!(
            "| {} | {:.1} | {floor:.1} | {} |",
            f.label,
            f.ns_per_run,
            if f.marked { "yes" } else { "no" }
        );
    }
    println!();

    let verdict = |met: bool| if met { "met" } else { "missed" };
    let (p4, p6) = (udp4[tc_only].prog_ns, udp6[tc_only].prog_ns);
    let (e4, e6) = (udp4[empty_i].prog_ns, udp6[empty_i].prog_ns);
    let ok = |p: Option<f64>| p.is_some_and(|v| v <= 60.0);
    let net = |p: Option<f64>, e: Option<f64>| ns(p.zip(e).map(|(p, e)| p - e));
    println!(
        "- target program run time <= 60 ns per packet at {MEMBERS} entries (BPF stats, the \
         program alone, UDP): IPv4 {} ns, IPv6 {} ns ({}); an empty program reads {} / {} ns \
         under the same traffic, so the program's own work is {} / {} ns; with the rules {} / {} \
         ns (IPv4, tc allow / ipwarden node), {} / {} ns (IPv6); on fixed frames {:.1} / {:.1} ns \
         (IPv4 / IPv6) against an empty program's {floor:.1} ns",
        ns(p4),
        ns(p6),
        verdict(ok(p4) && ok(p6)),
        ns(e4),
        ns(e6),
        net(p4, e4),
        net(p6, e6),
        ns(udp4[tc_allow].prog_ns),
        ns(udp4[ipw].prog_ns),
        ns(udp6[tc_allow].prog_ns),
        ns(udp6[ipw].prog_ns),
        frames[0].ns_per_run,
        frames[3].ns_per_run,
    );
    let r4 = udp4[none].cpu_ns / udp4[tc_allow].cpu_ns;
    let r6 = udp6[none].cpu_ns / udp6[tc_allow].cpu_ns;
    println!(
        "- target UDP 64-byte CPU per packet with the program and the shipped rules >= 0.97x of \
         none: IPv4 {r4:.3}x ({}), IPv6 {r6:.3}x ({}); the program alone {:.3}x / {:.3}x, an \
         empty program {:.3}x / {:.3}x",
        verdict(r4 >= 0.97),
        verdict(r6 >= 0.97),
        udp4[none].cpu_ns / udp4[tc_only].cpu_ns,
        udp6[none].cpu_ns / udp6[tc_only].cpu_ns,
        udp4[none].cpu_ns / udp4[empty_i].cpu_ns,
        udp6[none].cpu_ns / udp6[empty_i].cpu_ns,
    );
    let own =
        |i: usize, at: &[UdpMedian]| at[i].prog_ns.zip(at[empty_i].prog_ns).map(|(p, e)| p - e);
    let (w4, w6) = (own(tc_only, &udp4), own(tc_only, &udp6));
    let small = |w: Option<f64>| w.is_some_and(|v| v <= 30.0);
    println!(
        "- target the program's own work (its time per run minus an empty program's, BPF \
         statistics, UDP) <= 30 ns at {MEMBERS} members and {RESTRICTED_SOURCES} restricted \
         sources: IPv4 {} ns, IPv6 {} ns ({}); on fixed frames {:.1} / {:.1} ns minus {floor:.1}",
        ns(w4),
        ns(w6),
        verdict(small(w4) && small(w6)),
        frames[0].ns_per_run,
        frames[3].ns_per_run,
    );
    let n4 = udp4[kr].cpu_ns / udp4[ipw].cpu_ns;
    let n6 = udp6[kr].cpu_ns / udp6[ipw].cpu_ns;
    let nt = tcp[ipw].1 / tcp[kr].1;
    let nr = rr[ipw].1 / rr[kr].1;
    println!(
        "- target ipwarden node >= 1.2x packets per CPU-second of the kube-router node for \
         service traffic ({RESTRICTED_SOURCES} restricted sources in the egress map): UDP IPv4 \
         {n4:.3}x ({}), UDP IPv6 {n6:.3}x ({}); TCP request/response {nr:.3}x transactions per \
         CPU-second ({}); the TCP stream {nt:.3}x Gbit per CPU-second (its segments cross INPUT \
         at about {} bytes each, so the chain walk is not what it measures)",
        verdict(n4 >= 1.2),
        verdict(n6 >= 1.2),
        verdict(nr >= 1.2),
        median_text(&samples[kr].tcp_skb_bytes),
    );
    for c in checks {
        println!("- {c}");
    }
}

fn at(c: Config) -> usize {
    Config::ALL.iter().position(|&x| x == c).expect("config")
}

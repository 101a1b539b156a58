//! Data-plane cost of the tc program: TCP throughput and small-packet UDP
//! rate through a veth pair into a receiving network namespace, in five
//! configurations measured in the same run, interleaved:
//!
//! - **none**: no program, no rules (the floor);
//! - **tc only**: the classifier in `allow` mode with 10k mirror entries
//!   and no iptables rules: the program's own cost;
//! - **tc allow**: the same program, and the service chain of allow mode:
//!   `INPUT -m set --match-set svip dst -j SVC`, `SVC: -m mark --mark M/M
//!   -j ACCEPT; -m set --match-set svip-prt dst,dst -j ACCEPT; -j REJECT`,
//!   so marked traffic skips the hash:ip,port match;
//! - **tc allow, mark first in INPUT**: the same, plus `-m mark --mark M/M
//!   -j ACCEPT` at the top of INPUT, so marked traffic skips both set
//!   matches (a variant, not what the agent installs today);
//! - **iptables + ipset**: kube-router's path, no program: the same two
//!   sets (10k members) and chain without the mark rule.
//!
//! One sender namespace is joined to five receiver namespaces (one per
//! configuration) by five veth pairs, so configurations are switched by
//! choosing a destination, never by re-plumbing; the order rotates every
//! run. TCP: `iperf3`, one stream: receiver Gbit/s, and Gbit per CPU-second
//! of the two iperf3 processes. UDP: 64-byte datagrams from a Rust sender
//! (`sendmmsg`, 64 per call) to a busy-polling Rust receiver (`recvmmsg`),
//! pinned to CPUs 0 and 1: datagrams per second received and sent, and the
//! sender thread's CPU time per datagram. The veth receive path (tc,
//! netfilter, UDP) runs in the sender's context and this kernel has no IRQ
//! time accounting, so the CPU figures are the path's cost, little moved
//! by other load on the machine; the wall-clock ones are not. (iperf3's own
//! UDP mode tops out near 100k datagrams/s here, its limit, not the path's.)
//!
//! Needs root, iperf3 and the eBPF object (IPWARDEN_BPF_OBJECT, set by
//! `cargo xtask bench`):
//!
//! ```text
//! IPWARDEN_BPF_OBJECT=$(cargo xtask build-ebpf) cargo bench -p ipwarden --bench tc_throughput
//! ```
//!
//! `IPWARDEN_BENCH_RUNS` (default 5) and `IPWARDEN_BENCH_SECS` (default 3)
//! tune it. Prints markdown tables of medians with the ratios against
//! "none" and against "iptables + ipset", the target checks, and sanity
//! counters (iptables rule counters, mirror hits).

use std::{
    io::{self, Write},
    mem::{size_of, zeroed},
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
    time::{Duration, Instant},
};

use ipwarden::{
    bpf::{self, Dataplane, ProgramLogLevel},
    desired::{Family, SetType},
    kernel::ipset::{CreateSet, Element, Entry, IpsetClient, ProtoPort, SetName},
    netns::{privileged, NetNs},
};
use ipwarden_common::{
    maps::{PROTO_TCP, PROTO_UDP},
    names::DEFAULT_MARK,
    Mode, ServiceKey, ServiceValue,
};

const ENTRIES: u32 = 10_000;
const TCP_PORT: u16 = 5201;
const UDP_PORT: u16 = 9000;
const PAYLOAD: usize = 64;
const BATCH: usize = 64;
const SVIP: &str = "ipwarden-svip";
const SVIP_PRT: &str = "ipwarden-svip-prt";
const CHAIN: &str = "IPWARDEN-SERVICES";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    None,
    TcOnly,
    TcAllow,
    TcAllowInputMark,
    Iptables,
}

impl Config {
    const ALL: [Config; 5] = [
        Config::None,
        Config::TcOnly,
        Config::TcAllow,
        Config::TcAllowInputMark,
        Config::Iptables,
    ];

    fn label(self) -> &'static str {
        match self {
            Config::None => "none (no program, no rules)",
            Config::TcOnly => "tc allow, 10k mirror entries, no rules (the program alone)",
            Config::TcAllow => {
                "tc allow, 10k mirror entries + service chain with mark ACCEPT first"
            }
            Config::TcAllowInputMark => {
                "tc allow, 10k mirror entries, mark ACCEPT first in INPUT (variant)"
            }
            Config::Iptables => "iptables + ipset, 10k members, no program (kube-router)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Config::None => "none",
            Config::TcOnly => "tc-only",
            Config::TcAllow => "tc-allow",
            Config::TcAllowInputMark => "tc-allow-input-mark",
            Config::Iptables => "iptables",
        }
    }

    fn has_program(self) -> bool {
        matches!(
            self,
            Config::TcOnly | Config::TcAllow | Config::TcAllowInputMark
        )
    }
}

/// One receiver namespace, its address and (for the tc ones) nothing
/// else: the program is attached through the shared [`Dataplane`].
struct Receiver {
    config: Config,
    ns: NetNs,
    addr: Ipv4Addr,
    iperf: Child,
}

/// The 10k service destinations: the two targets first, then VIPs in
/// 10.96.0.0/16 on assorted ports.
fn service_entries(target: Ipv4Addr) -> Vec<(Ipv4Addr, u8, u16)> {
    let mut v = vec![(target, PROTO_TCP, TCP_PORT), (target, PROTO_UDP, UDP_PORT)];
    for i in 2..ENTRIES {
        let ip = Ipv4Addr::new(10, 96, (i >> 8) as u8, i as u8);
        let proto = if i % 4 == 3 { PROTO_UDP } else { PROTO_TCP };
        v.push((ip, proto, 80 + (i % 100) as u16));
    }
    v
}

/// The two sets, filled through our client inside `ns`.
fn fill_sets(ns: &NetNs, target: Ipv4Addr) {
    let entries = service_entries(target);
    ns.run(|| {
        let mut c = IpsetClient::new().expect("ipset socket");
        let svip = SetName::new(SVIP).expect("name");
        let prt = SetName::new(SVIP_PRT).expect("name");
        c.create(
            &CreateSet::new(svip.clone(), SetType::HashIp, Family::V4),
            false,
        )
        .expect("create svip");
        c.create(
            &CreateSet::new(prt.clone(), SetType::HashIpPort, Family::V4),
            false,
        )
        .expect("create svip-prt");
        let mut ips: Vec<Ipv4Addr> = entries.iter().map(|e| e.0).collect();
        ips.sort();
        ips.dedup();
        let vips: Vec<Element> = ips
            .iter()
            .map(|ip| Element::parse(SetType::HashIp, &ip.to_string()).expect("member"))
            .collect();
        let ports: Vec<Element> = entries
            .iter()
            .map(|&(ip, proto, port)| {
                let pp = if proto == PROTO_TCP {
                    ProtoPort::tcp(port)
                } else {
                    ProtoPort::udp(port)
                };
                Element::new(Entry::IpPort(ip.into(), pp))
            })
            .collect();
        c.add(&svip, &vips, false).expect("fill svip");
        c.add(&prt, &ports, false).expect("fill svip-prt");
    })
    .expect("netns");
}

fn rules(config: Config) -> String {
    let mark = format!("-m mark --mark {DEFAULT_MARK:#x}/{DEFAULT_MARK:#x} -j ACCEPT");
    let mut s = format!("*filter\n:INPUT ACCEPT [0:0]\n:{CHAIN} - [0:0]\n");
    if config == Config::TcAllowInputMark {
        s.push_str(&format!("-A INPUT {mark}\n"));
    }
    s.push_str(&format!(
        "-A INPUT -m set --match-set {SVIP} dst -j {CHAIN}\n"
    ));
    if config.has_program() {
        s.push_str(&format!("-A {CHAIN} {mark}\n"));
    }
    s.push_str(&format!(
        "-A {CHAIN} -m set --match-set {SVIP_PRT} dst,dst -j ACCEPT\n\
         -A {CHAIN} -j REJECT --reject-with icmp-port-unreachable\nCOMMIT\n"
    ));
    s
}

fn iptables_restore(ns: &NetNs, script: &str) {
    let mut child = ns
        .command("iptables-restore")
        .stdin(Stdio::piped())
        .spawn()
        .expect("iptables-restore");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write rules");
    assert!(
        child.wait().expect("wait").success(),
        "iptables-restore failed:\n{script}"
    );
}

/// Packet counters of every filter rule, as (rule text, packets).
fn rule_counters(ns: &NetNs) -> Vec<(String, u64)> {
    let save = ns
        .output("iptables-save", &["-c", "-t", "filter"])
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

/// One UDP measurement: wall-clock rates, and the sending thread's CPU
/// time per datagram. The veth receive path (tc, netfilter, UDP) runs in
/// the sender's context (softirq on the way out of its xmit), and this
/// kernel has no IRQ time accounting, so that time is the path's cost per
/// packet whatever else the machine is running.
struct Udp {
    sent_pps: f64,
    recv_pps: f64,
    cpu_ns_per_packet: f64,
}

fn thread_cpu_ns(clock: libc::clockid_t) -> f64 {
    // SAFETY: a zeroed timespec is valid; clock_gettime only writes it.
    let mut ts: libc::timespec = unsafe { zeroed() };
    // SAFETY: `ts` is a valid out pointer; `clock` is a live thread's clock.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Datagram rates over a `secs` window after a short warm-up.
fn udp_rate(sender: &NetNs, rx: &Receiver, secs: f64) -> Udp {
    let rsock = rx
        .ns
        .run(|| UdpSocket::bind((rx.addr, UDP_PORT)))
        .expect("netns")
        .expect("bind receiver");
    let ssock = sender
        .run(|| -> io::Result<UdpSocket> {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(SocketAddr::from((rx.addr, UDP_PORT)))?;
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
            )
        };
        let (t0, c0, s0, r0) = snapshot();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let (t1, c1, s1, r1) = snapshot();
        stop.store(true, Ordering::Relaxed);
        let dt = (t1 - t0).as_secs_f64();
        Udp {
            sent_pps: (s1 - s0) as f64 / dt,
            recv_pps: (r1 - r0) as f64 / dt,
            cpu_ns_per_packet: (c1 - c0) / (s1 - s0).max(1) as f64,
        }
    })
}

/// One iperf3 TCP measurement: receiver Gbit/s, and Gbit per CPU-second
/// of both iperf3 processes (iperf3's own rusage figures; the receive path
/// runs in their context, see [`Udp`]).
struct Tcp {
    gbps: f64,
    gbps_per_cpu: f64,
}

/// One iperf3 TCP stream from the sender namespace.
fn tcp_rate(sender: &NetNs, rx: &Receiver, secs: f64) -> Tcp {
    let mut args = vec![
        "-c".to_string(),
        rx.addr.to_string(),
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
            let v: serde_json::Value = serde_json::from_str(&text).expect("iperf3 -J output");
            let num = |x: &serde_json::Value, what: &str| {
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
    panic!("iperf3 to {} kept failing:\n{last}", rx.addr);
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn env_num(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo test --benches` runs this binary too: only measure on request.
    if std::env::args().any(|a| a == "--test") || !privileged("tc throughput bench") {
        return;
    }
    let runs = (env_num("IPWARDEN_BENCH_RUNS", 5.0) as usize).max(1);
    let secs = env_num("IPWARDEN_BENCH_SECS", 3.0).max(0.5);
    let object = bpf::object_path_from_env();

    let sender = NetNs::new("ipw-bench-tx").expect("netns");
    let mut receivers = Vec::new();
    for (i, config) in Config::ALL.into_iter().enumerate() {
        let ns = NetNs::new(&format!("ipw-bench-rx{i}")).expect("netns");
        let addr = Ipv4Addr::new(10, 201, i as u8 + 1, 1);
        let peer = format!("10.201.{}.2/24", i + 1);
        sender
            .veth_to(
                &ns,
                (&format!("vb{i}"), &[peer.as_str()]),
                ("veth0", &[&format!("{addr}/24")]),
            )
            .expect("veth pair");
        if !matches!(config, Config::None | Config::TcOnly) {
            fill_sets(&ns, addr);
            iptables_restore(&ns, &rules(config));
        }
        let iperf = ns
            .run(|| {
                let mut cmd = Command::new("iperf3");
                cmd.args(["-s", "-B", &addr.to_string(), "-p", &TCP_PORT.to_string()]);
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
            addr,
            iperf,
        });
    }

    // One loaded object serves both tc receivers: same maps, one program
    // attached to each receiver's veth0 from inside its namespace.
    let mut dp = receivers[1]
        .ns
        .run(|| {
            Dataplane::load(&object, ProgramLogLevel::Info).unwrap_or_else(|e| {
                panic!(
                    "loading {}: {e} (set IPWARDEN_BPF_OBJECT or run `cargo xtask build-ebpf`)",
                    object.display()
                )
            })
        })
        .expect("netns");
    dp.configure(Mode::Allow, DEFAULT_MARK).expect("configure");
    {
        let mut mirror = dp.services().expect("mirror");
        for rx in receivers.iter().filter(|r| r.config.has_program()) {
            for (i, (ip, proto, port)) in service_entries(rx.addr).into_iter().enumerate() {
                mirror
                    .insert(
                        ServiceKey::v4(ip.octets(), proto, port),
                        ServiceValue {
                            flags: 0,
                            service_id: i as u32 + 1,
                        },
                    )
                    .expect("mirror insert");
            }
        }
        let n = mirror.entries().expect("entries").len();
        eprintln!("tc bench: mirror holds {n} entries");
    }
    for rx in receivers.iter().filter(|r| r.config.has_program()) {
        let how = rx
            .ns
            .run(|| dp.attach_ingress("veth0"))
            .expect("netns")
            .expect("attach");
        eprintln!("tc bench: attached to {} veth0 ({how:?})", rx.ns.name());
    }

    let k = receivers.len();
    // Per config: TCP Gbit/s, TCP Gbit/CPU-s, UDP sent pps, received pps,
    // sender CPU ns per packet.
    let mut m: Vec<[Vec<f64>; 5]> = (0..k).map(|_| Default::default()).collect();
    for run in 0..runs {
        // Rotate the order each run, so drift does not favour a config.
        for j in 0..k {
            let i = (j + run) % k;
            let rx = &receivers[i];
            let t = tcp_rate(&sender, rx, secs);
            let u = udp_rate(&sender, rx, secs);
            eprintln!(
                "run {run} {:>20}: tcp {:.2} Gbit/s ({:.2} per CPU-s), udp sent {:.0} kpps, \
                 received {:.0} kpps, {:.0} ns sender CPU per packet",
                rx.config.short(),
                t.gbps,
                t.gbps_per_cpu,
                u.sent_pps / 1e3,
                u.recv_pps / 1e3,
                u.cpu_ns_per_packet
            );
            for (v, x) in m[i].iter_mut().zip([
                t.gbps,
                t.gbps_per_cpu,
                u.sent_pps,
                u.recv_pps,
                u.cpu_ns_per_packet,
            ]) {
                v.push(x);
            }
        }
    }

    // Sanity, outside the timed part: marked traffic took the mark rule,
    // unmarked traffic the set rule, nothing was rejected, the mirror hit.
    let mut checks = Vec::new();
    for rx in &receivers {
        // The plain receiver has no filter table at all.
        let counters = if matches!(rx.config, Config::None | Config::TcOnly) {
            Vec::new()
        } else {
            rule_counters(&rx.ns)
        };
        let count = |needle: &str| {
            counters
                .iter()
                .filter(|(r, _)| r.contains(needle))
                .map(|(_, p)| p)
                .sum::<u64>()
        };
        let (marked, set_accept, rejected) = (
            count("--mark"),
            count(&format!("{SVIP_PRT} dst,dst -j ACCEPT")),
            count("-j REJECT"),
        );
        assert_eq!(rejected, 0, "{}: packets were rejected", rx.config.short());
        match rx.config {
            Config::None | Config::TcOnly => {}
            Config::TcAllow | Config::TcAllowInputMark => {
                assert!(marked > 0, "{}: no marked packets", rx.config.short());
                assert_eq!(set_accept, 0, "{}: set rule used", rx.config.short());
            }
            Config::Iptables => assert!(set_accept > 0, "iptables: set rule unused"),
        }
        checks.push(format!(
            "{}: mark ACCEPT {marked} packets, svip-prt ACCEPT {set_accept}, REJECT {rejected}",
            rx.config.short()
        ));
    }
    let hits = {
        let m = dp.services().expect("mirror");
        receivers
            .iter()
            .filter(|r| r.config.has_program())
            .map(|r| {
                m.hits(&ServiceKey::v4(r.addr.octets(), PROTO_UDP, UDP_PORT))
                    .expect("hits")
                    .packets
            })
            .sum::<u64>()
    };
    assert!(hits > 0, "the mirror never hit");
    checks.push(format!("mirror hits on the UDP targets: {hits} packets"));

    for rx in &mut receivers {
        // Our own child, by handle.
        let _ = rx.iperf.kill();
        let _ = rx.iperf.wait();
    }

    let med: Vec<[f64; 5]> = m.into_iter().map(|c| c.map(median)).collect();
    let at = |c: Config| Config::ALL.iter().position(|&x| x == c).expect("config");
    let (none, ipt, tc) = (at(Config::None), at(Config::Iptables), at(Config::TcAllow));
    // Higher is better in every column compared; the per-packet cost is
    // compared as packets per CPU-second.
    let rel = |i: usize, col: usize, base: usize| {
        if col == 4 {
            med[base][4] / med[i][4]
        } else {
            med[i][col] / med[base][col]
        }
    };
    println!(
        "veth pair into a netns, medians of {runs} runs x {secs} s per configuration, \
         configurations interleaved; TCP: iperf3, 1 stream; UDP: {PAYLOAD}-byte payloads, \
         sendmmsg / busy recvmmsg; sender and receiver pinned to CPUs 0 and 1\n"
    );
    println!("Wall clock (sensitive to whatever else the machine runs):\n");
    println!(
        "| configuration | TCP Gbit/s | vs none | vs iptables | UDP received kpps | vs none | vs iptables | UDP sent kpps |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, rx) in receivers.iter().enumerate() {
        println!(
            "| {} | {:.2} | {:.3}x | {:.3}x | {:.0} | {:.3}x | {:.3}x | {:.0} |",
            rx.config.label(),
            med[i][0],
            rel(i, 0, none),
            rel(i, 0, ipt),
            med[i][3] / 1e3,
            rel(i, 3, none),
            rel(i, 3, ipt),
            med[i][2] / 1e3,
        );
    }
    println!(
        "\nCPU cost (CPU time of the processes doing the work, so other load on the machine \
         matters far less; ratios are in work per CPU-second):\n"
    );
    println!(
        "| configuration | TCP Gbit per CPU-second | vs none | vs iptables | UDP sender CPU ns per packet | vs none | vs iptables |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, rx) in receivers.iter().enumerate() {
        println!(
            "| {} | {:.2} | {:.3}x | {:.3}x | {:.0} | {:.3}x | {:.3}x |",
            rx.config.label(),
            med[i][1],
            rel(i, 1, none),
            rel(i, 1, ipt),
            med[i][4],
            rel(i, 4, none),
            rel(i, 4, ipt),
        );
    }
    println!();
    let verdict =
        |x: f64, target: f64| format!("{x:.3}x ({})", if x >= target { "met" } else { "missed" });
    for (base, target, what) in [
        (none, 0.97, "0.97x of none"),
        (ipt, 1.0, "1.0x of iptables + ipset"),
    ] {
        println!(
            "- target tc allow >= {what}: wall clock TCP {}, UDP {}; CPU cost TCP {}, UDP {}",
            verdict(rel(tc, 0, base), target),
            verdict(rel(tc, 3, base), target),
            verdict(rel(tc, 1, base), target),
            verdict(rel(tc, 4, base), target),
        );
    }
    for c in checks {
        println!("- {c}");
    }
}

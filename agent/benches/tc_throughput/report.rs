//! The report: markdown tables of medians with their ratios, the spread,
//! the fixed frames, the goal checks and the sanity lines.

use super::{
    at,
    config::Config,
    frames::FrameCost,
    stats::{median, median_text, ns, spread, udp_median, Samples, UdpMedian},
    tcp_rr, MEMBERS, PAYLOAD, RESTRICTED_SOURCES,
};

/// What a run measured, and how.
pub struct Run<'a> {
    pub configs: &'a [Config],
    pub samples: &'a [Samples],
    pub runs: usize,
    pub secs: f64,
    pub stats_secs: f64,
    /// kernel.bpf_stats_enabled before and after.
    pub sysctl: (String, String),
    pub took_secs: f64,
    pub frames: &'a [FrameCost],
    /// The empty program's time per run on the same frames.
    pub floor: f64,
    pub repeat: u32,
    pub checks: &'a [String],
}

/// Per configuration (in `Config::ALL` order), the medians the tables
/// and goals compare.
struct Medians {
    /// (Gbit/s, Gbit per CPU-second) of the stream.
    tcp: Vec<(f64, f64)>,
    /// (transactions/s, transactions per CPU-second).
    rr: Vec<(f64, f64)>,
    udp4: Vec<UdpMedian>,
    udp6: Vec<UdpMedian>,
}

/// Per configuration, the medians of the two figures `f` picks.
fn pair(samples: &[Samples], f: impl Fn(&Samples) -> (Vec<f64>, Vec<f64>)) -> Vec<(f64, f64)> {
    samples
        .iter()
        .map(|s| {
            let (a, b) = f(s);
            (median(a), median(b))
        })
        .collect()
}

impl Medians {
    fn of(samples: &[Samples]) -> Medians {
        Medians {
            tcp: pair(samples, |s| {
                (
                    s.tcp.iter().map(|t| t.gbps).collect(),
                    s.tcp.iter().map(|t| t.gbps_per_cpu).collect(),
                )
            }),
            rr: pair(samples, |s| {
                (
                    s.rr.iter().map(|r| r.per_sec).collect(),
                    s.rr.iter().map(|r| r.per_cpu_sec).collect(),
                )
            }),
            udp4: samples
                .iter()
                .map(|s| udp_median(&s.udp4, &s.udp4_stats))
                .collect(),
            udp6: samples
                .iter()
                .map(|s| udp_median(&s.udp6, &s.udp6_stats))
                .collect(),
        }
    }
}

/// Prints the whole report to stdout.
pub fn print(r: &Run) {
    let m = Medians::of(r.samples);
    header(r);
    udp_tables(r, &m);
    spread_table(r);
    tcp_table(r, &m);
    rr_table(r, &m);
    frames_table(r.frames, r.floor, r.repeat);
    targets(r, &m);
    for c in r.checks {
        println!("- {c}");
    }
}

fn header(r: &Run) {
    let Run {
        runs,
        secs,
        stats_secs,
        ..
    } = *r;
    let (sysctl_before, sysctl_after) = &r.sysctl;
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
        r.took_secs
    );
    println!(
        "Ratios are in work per CPU-second or packets per second (above 1: better than the \
         baseline); \"vs kube-router node\" compares with the kube-router node configuration. \
         The empty program's time per run is the statistics' own cost under this traffic \
         (two clock reads); the last column shows what turning them on costs each packet.\n"
    );
}

fn udp_tables(r: &Run, m: &Medians) {
    let (none, kr) = (at(Config::None), at(Config::KubeRouterNode));
    for (title, med) in [("UDP over IPv4", &m.udp4), ("UDP over IPv6", &m.udp6)] {
        println!("{title}, 64-byte datagrams:\n");
        println!(
            "| configuration | program ns per run (BPF stats) | CPU ns per packet | vs none | vs kube-router node | received kpps | vs none | vs kube-router node | sent kpps | CPU ns per packet, statistics on |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (i, config) in r.configs.iter().enumerate() {
            let m = med[i];
            println!(
                "| {} | {} | {:.0} | {:.3}x | {:.3}x | {:.0} | {:.3}x | {:.3}x | {:.0} | {} |",
                config.label(),
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
}

fn spread_table(r: &Run) {
    let runs = r.runs;
    println!(
        "Spread over the {runs} runs (min-max, and (max-min)/median) of each configuration's \
         CPU per packet and TCP work per CPU-second:\n"
    );
    println!("| configuration | UDP IPv4 CPU ns per packet | UDP IPv6 CPU ns per packet | TCP Gbit per CPU-second | TCP request/response per CPU-second |");
    println!("|---|---:|---:|---:|---:|");
    for (i, config) in r.configs.iter().enumerate() {
        let s = &r.samples[i];
        println!(
            "| {} | {} | {} | {} | {} |",
            config.short(),
            spread(s.udp4.iter().map(|u| u.cpu_ns_per_packet).collect()),
            spread(s.udp6.iter().map(|u| u.cpu_ns_per_packet).collect()),
            spread(s.tcp.iter().map(|t| t.gbps_per_cpu).collect()),
            spread(s.rr.iter().map(|r| r.per_cpu_sec).collect()),
        );
    }
    println!();
}

fn tcp_table(r: &Run, m: &Medians) {
    let (none, kr, tcp) = (at(Config::None), at(Config::KubeRouterNode), &m.tcp);
    println!("TCP over IPv4, iperf3 (statistics off):\n");
    println!(
        "| configuration | Gbit per CPU-second | vs none | vs kube-router node | Gbit/s | vs none | vs kube-router node | bytes per packet through INPUT's accepting rule |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, config) in r.configs.iter().enumerate() {
        let (g, gc) = tcp[i];
        let skb = &r.samples[i].tcp_skb_bytes;
        println!(
            "| {} | {:.2} | {:.3}x | {:.3}x | {:.2} | {:.3}x | {:.3}x | {} |",
            config.label(),
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
}

fn rr_table(r: &Run, m: &Medians) {
    let (none, kr, rr) = (at(Config::None), at(Config::KubeRouterNode), &m.rr);
    println!(
        "TCP request/response over IPv4 ({}-byte request and answer, {} connections with one \
         request in flight each, non-blocking sockets busy-polled by one client and one server \
         thread pinned to CPUs 0 and 1; transactions per CPU-second of both threads):\n",
        tcp_rr::MESSAGE,
        tcp_rr::CONNECTIONS
    );
    println!(
        "| configuration | transactions per CPU-second | vs none | vs kube-router node | transactions/s | vs none | vs kube-router node |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (i, config) in r.configs.iter().enumerate() {
        let (t, tc) = rr[i];
        println!(
            "| {} | {:.0} | {:.3}x | {:.3}x | {:.0} | {:.3}x | {:.3}x |",
            config.label(),
            tc,
            tc / rr[none].1,
            tc / rr[kr].1,
            t,
            t / rr[none].0,
            t / rr[kr].0,
        );
    }
    println!();
}

/// The fixed frames' table.
pub fn frames_table(frames: &[FrameCost], floor: f64, repeat: u32) {
    println!(
        "The program alone on fixed frames (BPF_PROG_TEST_RUN, {repeat} runs per call, best of \
         3; ns per run from the kernel's statistics; the empty program reads {floor:.1} ns per \
         run here, the statistics' own cost with the caches warm):\n"
    );
    println!("| frame | program ns per run | empty program | marked |");
    println!("|---|---:|---:|---|");
    for f in frames {
        println!(
            "| {} | {:.1} | {floor:.1} | {} |",
            f.label,
            f.ns_per_run,
            if f.marked { "yes" } else { "no" }
        );
    }
    println!();
}

fn targets(r: &Run, m: &Medians) {
    let (empty_i, tc_only, tc_allow, ipw) = (
        at(Config::TcEmpty),
        at(Config::TcOnly),
        at(Config::TcAllow),
        at(Config::IpwardenNode),
    );
    let none = at(Config::None);
    let (udp4, udp6) = (&m.udp4, &m.udp6);
    let (frames, floor) = (r.frames, r.floor);
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
    let (w4, w6) = (own(tc_only, udp4), own(tc_only, udp6));
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
    node_target(r, m);
}

/// The ipwarden node against the kube-router node: ratios of medians, and
/// the same ratio run by run (the two are measured back to back in each
/// run, so a run's ratio is less moved by drift than the medians are).
fn node_target(r: &Run, m: &Medians) {
    let (kr, ipw) = (at(Config::KubeRouterNode), at(Config::IpwardenNode));
    let (udp4, udp6, tcp, rr) = (&m.udp4, &m.udp6, &m.tcp, &m.rr);
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let n4 = udp4[kr].cpu_ns / udp4[ipw].cpu_ns;
    let n6 = udp6[kr].cpu_ns / udp6[ipw].cpu_ns;
    let nt = tcp[ipw].1 / tcp[kr].1;
    let nr = rr[ipw].1 / rr[kr].1;
    let (a, b) = (&r.samples[kr], &r.samples[ipw]);
    let per_run = |f: &dyn Fn(&Samples, usize) -> f64| {
        spread((0..a.rr.len()).map(|k| f(b, k) / f(a, k)).collect())
    };
    println!(
        "- target ipwarden node >= 1.2x packets per CPU-second of the kube-router node for \
         service traffic ({RESTRICTED_SOURCES} restricted sources in the egress map): UDP IPv4 \
         {n4:.3}x ({}), UDP IPv6 {n6:.3}x ({}); TCP request/response {nr:.3}x transactions per \
         CPU-second ({}); the TCP stream {nt:.3}x Gbit per CPU-second (its segments cross INPUT \
         at about {} bytes each, so the chain walk is not what it measures); the same ratios \
         run by run (min-max, (max-min)/median): UDP IPv4 {}, UDP IPv6 {}, TCP \
         request/response {}",
        verdict(n4 >= 1.2),
        verdict(n6 >= 1.2),
        verdict(nr >= 1.2),
        median_text(&r.samples[kr].tcp_skb_bytes),
        per_run(&|s, k| 1.0 / s.udp4[k].cpu_ns_per_packet),
        per_run(&|s, k| 1.0 / s.udp6[k].cpu_ns_per_packet),
        per_run(&|s, k| s.rr[k].per_cpu_sec),
    );
}

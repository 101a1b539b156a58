//! The markdown tables, the goal checks and the sanity lines.

use super::*;

/// What the run measured, with what the report says about how.
pub(super) struct Report<'a> {
    pub(super) opts: &'a Options,
    pub(super) receivers: &'a [Receiver],
    pub(super) samples: &'a [Samples],
    pub(super) frames: &'a [FrameCost],
    /// The empty program's time per run on fixed frames.
    pub(super) floor: f64,
    pub(super) repeat: u32,
    /// kernel.bpf_stats_enabled before and after the traffic.
    pub(super) sysctl: (String, String),
    pub(super) started: Instant,
}

/// Each configuration's medians, in `Config::ALL` order.
struct Medians {
    /// (Gbit/s, Gbit per CPU-second).
    tcp: Vec<(f64, f64)>,
    udp4: Vec<UdpMedian>,
    udp6: Vec<UdpMedian>,
}

impl Medians {
    fn of(samples: &[Samples]) -> Medians {
        let tcp: Vec<(f64, f64)> = samples
            .iter()
            .map(|s| {
                (
                    median(s.tcp.iter().map(|t| t.gbps).collect()),
                    median(s.tcp.iter().map(|t| t.gbps_per_cpu).collect()),
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
        Medians { tcp, udp4, udp6 }
    }
}

impl Report<'_> {
    pub(super) fn print(&self, checks: Vec<String>) {
        let m = Medians::of(self.samples);
        self.header();
        self.udp_tables(&m);
        self.spread_table();
        self.tcp_table(&m);
        self.frames_table();
        self.goals(&m);
        for c in checks {
            println!("- {c}");
        }
    }

    fn header(&self) {
        let Options {
            runs,
            secs,
            stats_secs,
        } = self.opts;
        let (sysctl_before, sysctl_after) = &self.sysctl;
        let started = self.started;
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
    }

    fn udp_tables(&self, m: &Medians) {
        let (udp4, udp6, receivers) = (&m.udp4, &m.udp6, self.receivers);
        let (none, kr) = (at(Config::None), at(Config::KubeRouterNode));
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
    }

    fn spread_table(&self) {
        let (runs, receivers, samples) = (self.opts.runs, self.receivers, self.samples);
        println!(
            "Spread over the {runs} runs (min-max, and (max-min)/median) of each configuration's \
         CPU per packet and TCP work per CPU-second:\n"
        );
        println!("| configuration | UDP IPv4 CPU ns per packet | UDP IPv6 CPU ns per packet | TCP Gbit per CPU-second |");
        println!("|---|---:|---:|---:|");
        for (i, rx) in receivers.iter().enumerate() {
            let s = &samples[i];
            println!(
                "| {} | {} | {} | {} |",
                rx.config.short(),
                spread(s.udp4.iter().map(|u| u.cpu_ns_per_packet).collect()),
                spread(s.udp6.iter().map(|u| u.cpu_ns_per_packet).collect()),
                spread(s.tcp.iter().map(|t| t.gbps_per_cpu).collect()),
            );
        }
        println!();
    }

    fn tcp_table(&self, m: &Medians) {
        let (tcp, receivers) = (&m.tcp, self.receivers);
        let (none, kr) = (at(Config::None), at(Config::KubeRouterNode));
        println!("TCP over IPv4, iperf3 (statistics off):\n");
        println!(
        "| configuration | Gbit per CPU-second | vs none | vs kube-router node | Gbit/s | vs none | vs kube-router node |"
    );
        println!("|---|---:|---:|---:|---:|---:|---:|");
        for (i, rx) in receivers.iter().enumerate() {
            let (g, gc) = tcp[i];
            println!(
                "| {} | {:.2} | {:.3}x | {:.3}x | {:.2} | {:.3}x | {:.3}x |",
                rx.config.label(),
                gc,
                gc / tcp[none].1,
                gc / tcp[kr].1,
                g,
                g / tcp[none].0,
                g / tcp[kr].0,
            );
        }
        println!();
    }

    fn frames_table(&self) {
        let (repeat, floor, frames) = (self.repeat, self.floor, self.frames);
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

    fn goals(&self, m: &Medians) {
        let (tcp, udp4, udp6) = (&m.tcp, &m.udp4, &m.udp6);
        let (floor, frames) = (self.floor, self.frames);
        let (none, empty_i, kr, tc_only, tc_allow, ipw) = (
            at(Config::None),
            at(Config::TcEmpty),
            at(Config::KubeRouterNode),
            at(Config::TcOnly),
            at(Config::TcAllow),
            at(Config::IpwardenNode),
        );
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
        let n4 = udp4[kr].cpu_ns / udp4[ipw].cpu_ns;
        let n6 = udp6[kr].cpu_ns / udp6[ipw].cpu_ns;
        let nt = tcp[ipw].1 / tcp[kr].1;
        println!(
            "- target ipwarden node >= 1.2x packets per CPU-second of the kube-router node for \
         service traffic ({RESTRICTED_SOURCES} restricted sources in the egress map): UDP IPv4 \
         {n4:.3}x ({}), UDP IPv6 {n6:.3}x ({}); TCP {nt:.3}x Gbit per CPU-second ({})",
            verdict(n4 >= 1.2),
            verdict(n6 >= 1.2),
            verdict(nt >= 1.2),
        );
    }
}

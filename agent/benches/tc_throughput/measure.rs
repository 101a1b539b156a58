//! The timed part: every kind of traffic to every receiver, `runs` times,
//! the order of the receivers rotated each run.

use std::os::fd::{AsFd, OwnedFd};

use ipwarden::{
    bpf::{test_run, RunStats, TcProgram},
    netns::NetNs,
};

use super::{
    config::{Config, Receiver},
    cpu::cpus,
    iperf::tcp_rate,
    rules::accepted,
    stats::{ns, Samples},
    tcp_rr,
    udp::udp_rate,
};

/// How long each window lasts.
#[derive(Clone, Copy)]
pub struct Windows {
    pub runs: usize,
    /// Windows with the BPF statistics off (what the CPU figures compare).
    pub secs: f64,
    /// Windows with them on (the program's time per run).
    pub stats_secs: f64,
}

/// Every run's figures, per receiver. `ours` is the program attached to
/// the program configurations, `empty` the empty one on tc-empty's veth.
pub fn all(
    sender: &NetNs,
    receivers: &[Receiver],
    ours: &TcProgram,
    empty: &OwnedFd,
    w: Windows,
) -> Vec<Samples> {
    let k = receivers.len();
    let mut samples: Vec<Samples> = (0..k).map(|_| Samples::default()).collect();
    for run in 0..w.runs {
        // Rotate the order each run, so drift does not favour a config.
        for j in 0..k {
            let i = (j + run) % k;
            let ours = || ours.run_stats().ok();
            let the_empty = || {
                test_run::stats(empty.as_fd())
                    .ok()
                    .map(|(run_time_ns, run_count)| RunStats {
                        run_time_ns,
                        run_count,
                    })
            };
            let stats: Option<&dyn Fn() -> Option<RunStats>> = match receivers[i].config {
                Config::TcEmpty => Some(&the_empty),
                c if c.has_program() => Some(&ours),
                _ => None,
            };
            one(sender, &receivers[i], stats, w, run, &mut samples[i]);
        }
    }
    samples
}

/// One run's windows to `rx`, logged to stderr and added to `m`.
fn one(
    sender: &NetNs,
    rx: &Receiver,
    stats: Option<&dyn Fn() -> Option<RunStats>>,
    w: Windows,
    run: usize,
    m: &mut Samples,
) {
    let accepted_before = accepted(rx);
    let t = tcp_rate(sender, rx, w.secs);
    let skb_bytes = accepted(rx)
        .zip(accepted_before)
        .map(|((p1, b1), (p0, b0))| (b1 - b0) as f64 / (p1 - p0).max(1) as f64);
    let rr = tcp_rr::tcp_rr(sender, &rx.ns, rx.v4, w.secs, cpus() >= 2);
    let u4 = udp_rate(sender, rx, rx.v4.into(), w.secs, None);
    let u6 = udp_rate(sender, rx, rx.v6.into(), w.secs, None);
    let (s4, s6) = match stats {
        Some(f) => (
            Some(udp_rate(sender, rx, rx.v4.into(), w.stats_secs, Some(f))),
            Some(udp_rate(sender, rx, rx.v6.into(), w.stats_secs, Some(f))),
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
    m.tcp.push(t);
    m.tcp_skb_bytes.extend(skb_bytes);
    m.rr.push(rr);
    m.udp4.push(u4);
    m.udp6.push(u6);
    m.udp4_stats.extend(s4);
    m.udp6_stats.extend(s6);
}

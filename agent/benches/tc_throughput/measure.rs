//! The timed part: every configuration, `runs` times, interleaved.

use super::*;

/// How long and how often to measure (`IPWARDEN_BENCH_RUNS`,
/// `IPWARDEN_BENCH_SECS`).
pub(super) struct Options {
    pub(super) runs: usize,
    pub(super) secs: f64,
    /// The windows with the BPF statistics on.
    pub(super) stats_secs: f64,
}

impl Options {
    pub(super) fn from_env() -> Options {
        let runs = (env_num("IPWARDEN_BENCH_RUNS", 5.0) as usize).max(1);
        let secs = env_num("IPWARDEN_BENCH_SECS", 3.0).max(0.5);
        let stats_secs = (secs / 2.0).max(1.0);
        Options {
            runs,
            secs,
            stats_secs,
        }
    }
}

/// The samples of each receiver, in `bench.receivers`' order.
pub(super) fn run(bench: &Bench, opts: &Options) -> Vec<Samples> {
    let (receivers, sender, dp) = (&bench.receivers, &bench.sender, &bench.dp);
    let (secs, stats_secs) = (opts.secs, opts.stats_secs);
    let k = receivers.len();
    let mut samples: Vec<Samples> = (0..k).map(|_| Samples::default()).collect();
    for run in 0..opts.runs {
        // Rotate the order each run, so drift does not favour a config.
        for j in 0..k {
            let i = (j + run) % k;
            let rx = &receivers[i];
            let ours = || dp.run_stats().ok();
            let the_empty = || {
                test_run::stats(bench.empty.as_fd())
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
            let t = tcp_rate(sender, rx, secs);
            let u4 = udp_rate(sender, rx, rx.v4.into(), secs, None);
            let u6 = udp_rate(sender, rx, rx.v6.into(), secs, None);
            let (s4, s6) = match stats {
                Some(f) => (
                    Some(udp_rate(sender, rx, rx.v4.into(), stats_secs, Some(f))),
                    Some(udp_rate(sender, rx, rx.v6.into(), stats_secs, Some(f))),
                ),
                None => (None, None),
            };
            eprintln!(
                "run {run} {:>16}: tcp {:.2} Gbit/s ({:.2} per CPU-s); udp4 {:.0}/{:.0} kpps {:.0} ns CPU, prog {} ns; udp6 {:.0}/{:.0} kpps {:.0} ns CPU, prog {} ns",
                rx.config.short(),
                t.gbps,
                t.gbps_per_cpu,
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
            m.udp4.push(u4);
            m.udp6.push(u6);
            m.udp4_stats.extend(s4);
            m.udp6_stats.extend(s6);
        }
    }
    samples
}

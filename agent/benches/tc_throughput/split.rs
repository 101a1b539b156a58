//! `IPWARDEN_BENCH_SPLIT=1`: what tc allow's rules cost a UDP packet,
//! step by step. The program is attached to every receiver but none's;
//! between tc only (no rules) and tc allow (the shipped rules) each step
//! adds one thing: an empty filter INPUT chain (netfilter's hook, no
//! rule), a mark ACCEPT without a comment (native nft expressions), the
//! shipped mark ACCEPT alone (its comment is an xt match); then the
//! kube-router node and the ipwarden node as in the full bench. UDP only,
//! both families, the order rotated every run.

use std::path::Path;

use ipwarden::{
    desired::{Family, Place, ServiceState, Table},
    netns::NetNs,
};

use super::{
    config::{Config, Receiver},
    profile,
    stats::{median, spread},
    udp::udp_rate,
};

/// The rules of a split step, written into `ns` with iptables: for the
/// steps between tc only and tc allow.
pub fn write_step_rules(ns: &NetNs, config: Config, state: &ServiceState) {
    for family in Family::ALL {
        let cmd = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let rule = match config {
            // Setting the policy creates the built-in chain, so the hook.
            Config::TcHook => "-P INPUT ACCEPT".to_string(),
            Config::TcMarkNative => {
                let mark = shipped_mark_rule(state, family);
                let native = mark.split(" -m comment").next().expect("rule").to_string();
                format!("-A INPUT {native} -j ACCEPT")
            }
            Config::TcMark => format!("-A INPUT {}", shipped_mark_rule(state, family)),
            _ => return,
        };
        ns.output("sh", &["-c", &format!("{cmd} -w {rule}")])
            .unwrap_or_else(|e| panic!("{cmd} {rule}: {e}"));
    }
}

/// The services' first rule of INPUT in allow mode, as the agent writes it.
fn shipped_mark_rule(state: &ServiceState, family: Family) -> String {
    state
        .iptables
        .iter()
        .filter(|p| p.table == Table::Filter && p.family == family)
        .flat_map(|p| &p.jumps)
        .find(|j| j.place == Place::First)
        .map(|j| j.rule.clone())
        .expect("allow mode's mark ACCEPT")
}

/// `runs` rounds of UDP over IPv4 and IPv6 to every receiver, then a
/// table of CPU ns per packet (median, min-max) and each step's cost over
/// the one before. With `perf_dir`, each window is recorded by perf into
/// `<dir>/<config>-<run>-v4.data` (and `-v6`).
pub fn run(
    sender: &NetNs,
    receivers: &[Receiver],
    runs: usize,
    secs: f64,
    perf_dir: Option<&Path>,
) {
    let k = receivers.len();
    let mut cpu: Vec<[Vec<f64>; 2]> = (0..k).map(|_| [Vec::new(), Vec::new()]).collect();
    for run in 0..runs {
        for j in 0..k {
            let rx = &receivers[(j + run) % k];
            let window = |v6: bool| {
                let perf = perf_dir.map(|d| {
                    let family = if v6 { "v6" } else { "v4" };
                    profile::record(&d.join(format!("{}-{run}-{family}.data", rx.config.short())))
                });
                let dst = if v6 { rx.v6.into() } else { rx.v4.into() };
                let u = udp_rate(sender, rx, dst, secs, None);
                if let Some(perf) = perf {
                    profile::stop(perf);
                }
                u
            };
            let (u4, u6) = (window(false), window(true));
            eprintln!(
                "split run {run} {:>16}: udp4 {:.0} kpps {:.0} ns CPU; udp6 {:.0} kpps {:.0} ns CPU",
                rx.config.short(),
                u4.recv_pps / 1e3,
                u4.cpu_ns_per_packet,
                u6.recv_pps / 1e3,
                u6.cpu_ns_per_packet
            );
            let slot = &mut cpu[(j + run) % k];
            // A window that sent nothing (the sender starved on a loaded
            // host) has no cost per packet.
            for (figures, u) in slot.iter_mut().zip([u4, u6]) {
                if u.sent_pps > 0.0 {
                    figures.push(u.cpu_ns_per_packet);
                }
            }
        }
    }
    println!("| configuration | UDP IPv4 CPU ns per packet | over the step above | UDP IPv6 CPU ns per packet | over the step above |");
    println!("|---|---:|---:|---:|---:|");
    let mut before: Option<[f64; 2]> = None;
    for (rx, c) in receivers.iter().zip(&cpu) {
        if c.iter().any(Vec::is_empty) {
            println!("| {} | no window sent a packet | | | |", rx.config.label());
            continue;
        }
        let m = [median(c[0].clone()), median(c[1].clone())];
        let step = |f: usize| before.map_or(String::new(), |b| format!("{:+.0}", m[f] - b[f]));
        println!(
            "| {} | {:.0} ({}) | {} | {:.0} ({}) | {} |",
            rx.config.label(),
            m[0],
            spread(c[0].clone()),
            step(0),
            m[1],
            spread(c[1].clone()),
            step(1)
        );
        before = Some(m);
    }
}

//! What the rules saw: iptables counters and INPUT, read back after the
//! traffic.

use super::*;

/// Packet counters of every filter rule, as (rule text, packets).
pub(super) fn rule_counters(ns: &NetNs, v6: bool) -> Vec<(String, u64)> {
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

/// The rules of INPUT in order, for the report.
pub(super) fn input_chain(ns: &NetNs) -> Vec<String> {
    ns.output("iptables-save", &["-t", "filter"])
        .expect("iptables-save")
        .lines()
        .filter_map(|l| l.strip_prefix("-A INPUT "))
        .map(str::to_string)
        .collect()
}

//! The receivers' rules read back with iptables-save: counters and order.

use ipwarden::netns::NetNs;

use super::config::Receiver;

/// Packet counters of every filter rule, as (rule text, packets).
pub fn rule_counters(ns: &NetNs, v6: bool) -> Vec<(String, u64)> {
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
pub fn accepted(rx: &Receiver) -> Option<(u64, u64)> {
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
pub fn input_chain(ns: &NetNs) -> Vec<String> {
    ns.output("iptables-save", &["-t", "filter"])
        .expect("iptables-save")
        .lines()
        .filter_map(|l| l.strip_prefix("-A INPUT "))
        .map(str::to_string)
        .collect()
}

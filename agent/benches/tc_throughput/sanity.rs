//! Sanity, outside the timed part: marked traffic took the mark rule,
//! unmarked traffic the set rule, nothing was rejected, the mirror hit.
//! Each check panics when it fails and returns a line for the report.

use ipwarden::bpf::BpfMirror;
use ipwarden_common::{
    maps::{PROTO_TCP, PROTO_UDP},
    ServiceKey,
};

use super::{
    config::{Config, Receiver},
    rules::{input_chain, rule_counters},
    TCP_PORT, UDP_PORT,
};

/// Every check's report line.
pub fn checks(receivers: &[Receiver], mirror: &BpfMirror) -> Vec<String> {
    let mut out = Vec::new();
    for rx in receivers.iter().filter(|r| r.config.has_service_rules()) {
        for v6 in [false, true] {
            out.push(accepting_rules(rx, v6));
        }
    }
    for config in [Config::KubeRouterNode, Config::IpwardenNode] {
        let rx = receivers.iter().find(|r| r.config == config).expect("node");
        out.extend(node_chains(rx));
    }
    out.push(mirror_hits(receivers, mirror));
    out.push(conntrack_entries(receivers));
    out
}

/// Connections conntrack tracks in each receiver right after the traffic:
/// above 0 where some rule made conntrack hook into that namespace (a
/// cost per packet the configurations without it do not pay).
fn conntrack_entries(receivers: &[Receiver]) -> String {
    let counts: Vec<String> = receivers
        .iter()
        .map(|rx| {
            let n = rx
                .ns
                .output("sysctl", &["-n", "net.netfilter.nf_conntrack_count"])
                .map_or_else(|e| format!("unreadable ({e})"), |s| s.trim().to_string());
            format!("{} {n}", rx.config.short())
        })
        .collect();
    format!("conntrack entries after the traffic: {}", counts.join(", "))
}

/// Which rule accepted the service traffic of `rx`, in one family.
fn accepting_rules(rx: &Receiver, v6: bool) -> String {
    let counters = rule_counters(&rx.ns, v6);
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
    let name = rx.config.short();
    assert_eq!(rejected, 0, "{name} {family}: packets were rejected");
    if rx.config.has_program() {
        assert!(marked > 0, "{name} {family}: no marked packets");
        assert_eq!(set_accept, 0, "{name} {family}: set rule used");
    } else {
        assert!(set_accept > 0, "{name} {family}: set rule unused");
    }
    format!("{name} {family}: mark ACCEPT {marked} packets, svip-prt ACCEPT {set_accept}, REJECT {rejected}")
}

/// A node's INPUT in order, and the size of its policy chains.
fn node_chains(rx: &Receiver) -> [String; 2] {
    let name = rx.config.short();
    let input = input_chain(&rx.ns)
        .iter()
        .map(|r| format!("`{r}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let save = rx
        .ns
        .output("iptables-save", &["-t", "filter"])
        .expect("save");
    let count = |prefix: &str| save.lines().filter(|l| l.starts_with(prefix)).count();
    // Every answer and ACK the receiver sends walks IPWARDEN-OUTPUT, in
    // both nodes alike: the program sees only ingress.
    [
        format!("INPUT of the {name} (in order): {input}"),
        format!(
            "{name}: {} IPv4 rules in the policy chains, {} of them in IPWARDEN-OUTPUT",
            count("-A IPW"),
            count("-A IPWARDEN-OUTPUT "),
        ),
    ]
}

/// The mirror's hit counters on the targets' ports.
fn mirror_hits(receivers: &[Receiver], mirror: &BpfMirror) -> String {
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
    format!("mirror hits on the targets (TCP and UDP, both families): {hits} packets")
}

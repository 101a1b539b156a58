//! Sanity, outside the timed part: marked traffic took the mark rule,
//! unmarked traffic the set rule, nothing was rejected, the mirror hit.

use super::*;

/// Asserts the sanity checks and returns them as report lines.
pub(super) fn sanity(bench: &Bench) -> Vec<String> {
    let (receivers, mirror) = (&bench.receivers, &bench.mirror);
    let mut checks = Vec::new();
    for rx in receivers {
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
        let policy_rules = rx
            .ns
            .output("iptables-save", &["-t", "filter"])
            .expect("save")
            .lines()
            .filter(|l| l.starts_with("-A IPW"))
            .count();
        checks.push(format!(
            "{}: {policy_rules} IPv4 rules in the policy chains",
            config.short()
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
    checks
}

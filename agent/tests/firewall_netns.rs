//! The service controller's filter rules are written the way iptables-save
//! prints them (so an unchanged chain is never rewritten: the rule handles
//! `nft -a list ruleset` shows stay), in every mode and with source ranges,
//! IPv4 and IPv6; and an ICMPv6 Packet Too Big to an IPv6 VIP is accepted.
//! Host netns test: the nat plans need xt_ipvs and are covered in the VM.

use std::path::Path;

#[path = "support/icmp6.rs"]
mod icmp6;
use icmp6::send_packet_too_big;
use ipwarden::{
    cluster::{manifests, HostInfo, Snapshot},
    controllers::services::{desired_with, BpfRules, Options},
    desired::Table,
    kernel::{ipset::IpsetClient, iptables},
    netns::{privileged, NetNs},
    reconcile::services_owner,
    store::SetStore,
};
use ipwarden_common::Mode;

const CLUSTER: &str = include_str!("fixtures/services/cluster.yaml");

fn snapshot() -> Snapshot {
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("cluster.yaml"), CLUSTER, &mut loaded);
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: vec!["192.168.56.10".parse().unwrap()],
    };
    Snapshot::from_objects(loaded.objects, host)
}

#[test]
fn filter_rules_are_canonical_in_every_mode() {
    if !privileged("filter_rules_are_canonical_in_every_mode") {
        return;
    }
    for bpf in [
        None,
        Some(BpfRules {
            mode: Mode::Log,
            mark: 0x40_0000,
        }),
        Some(BpfRules {
            mode: Mode::Allow,
            mark: 0x40_0000,
        }),
    ] {
        let ns = NetNs::new("ipw-fw").unwrap();
        let state = desired_with(
            &snapshot(),
            &Options {
                bpf,
                ..Options::default()
            },
        );
        ns.run(|| {
            let store = SetStore::new(IpsetClient::new().unwrap());
            store.register(services_owner()).unwrap();
            store.apply("services", state.sets.clone()).unwrap();
            for plan in state.iptables.iter().filter(|p| p.table == Table::Filter) {
                let first = iptables::apply(plan).unwrap();
                assert!(!first.changes.is_empty());
                assert!(
                    first.canonical,
                    "{bpf:?} {:?}: iptables-save prints our rules differently",
                    plan.family
                );
                // The kernel's word, not only ours: nft numbers every rule
                // it adds, so a rule or chain rewritten shows new handles.
                let handles = || ns.output("nft", &["-a", "list", "ruleset"]).unwrap();
                let before = handles();
                let again = iptables::apply(plan).unwrap();
                assert!(
                    again.changes.is_empty(),
                    "{bpf:?} {:?}: rewritten: {:?}",
                    plan.family,
                    again.changes
                );
                assert_eq!(handles(), before, "{bpf:?} {:?}: rewritten", plan.family);
            }
        })
        .unwrap();
        let save = ns.output("iptables-save", &["-t", "filter"]).unwrap();
        assert!(save.contains("--dport 3868 -j ACCEPT"), "{save}");
    }
}

/// The packets counted by the rule of ip6tables-save -c that `matches`.
fn packets(save: &str, matches: &str) -> u64 {
    let line = save
        .lines()
        .find(|l| l.contains(matches))
        .unwrap_or_else(|| panic!("no rule with {matches}: {save}"));
    let counters = line.trim_start_matches('[');
    counters.split(':').next().unwrap().parse().unwrap()
}

/// Path MTU discovery to an IPv6 VIP: a real Packet Too Big, sent from
/// another namespace to a ClusterIP held on ipwarden0, meets the service
/// chain's ICMPv6 accept, not its REJECT (before, the chain had no type 2
/// and refused it: a black hole for IPv6 LoadBalancer and external IPs).
#[test]
fn an_icmpv6_packet_too_big_to_an_ipv6_vip_is_accepted() {
    if !privileged("an_icmpv6_packet_too_big_to_an_ipv6_vip_is_accepted") {
        return;
    }
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {namespace: shop, name: web}\n\
        spec: {clusterIP: 'fd00:96::10', clusterIPs: ['fd00:96::10'], ipFamilies: [IPv6],\n\
        ports: [{name: http, port: 80, protocol: TCP}]}\n";
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("web.yaml"), yaml, &mut loaded);
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: vec!["fd00:1::1".parse().unwrap()],
    };
    let state = desired_with(
        &Snapshot::from_objects(loaded.objects, host),
        &Options::default(),
    );
    let node = NetNs::new("ipw-ptb").unwrap();
    let peer = NetNs::new("ipw-ptb-peer").unwrap();
    node.veth_to(
        &peer,
        ("eth0", &["fd00:1::1/64"]),
        ("eth0", &["fd00:1::2/64"]),
    )
    .unwrap();
    // A port-less bridge, as the agent makes where the dummy driver is
    // missing.
    node.ip(&["link", "add", "ipwarden0", "type", "bridge"])
        .unwrap();
    node.ip(&[
        "addr",
        "add",
        "fd00:96::10/128",
        "dev",
        "ipwarden0",
        "nodad",
    ])
    .unwrap();
    node.ip(&["link", "set", "ipwarden0", "up"]).unwrap();
    peer.ip(&["route", "add", "fd00:96::10/128", "via", "fd00:1::1"])
        .unwrap();
    node.run(|| {
        let store = SetStore::new(IpsetClient::new().unwrap());
        store.register(services_owner()).unwrap();
        store.apply("services", state.sets.clone()).unwrap();
        for plan in state.iptables.iter().filter(|p| p.table == Table::Filter) {
            iptables::apply(plan).unwrap();
        }
    })
    .unwrap();
    peer.run(|| send_packet_too_big("fd00:1::2".parse().unwrap(), "fd00:96::10".parse().unwrap()))
        .unwrap();
    let save = node
        .output("ip6tables-save", &["-c", "-t", "filter"])
        .unwrap();
    assert_eq!(
        packets(&save, "-j REJECT --reject-with icmp6-port-unreachable"),
        0,
        "the Packet Too Big is not refused: {save}"
    );
    assert_eq!(
        packets(&save, "--icmpv6-type 2 -j ACCEPT"),
        1,
        "the Packet Too Big is accepted: {save}"
    );
}

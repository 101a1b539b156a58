//! The service controller's filter rules are written the way iptables-save
//! prints them (so an unchanged chain is never rewritten: the rule handles
//! `nft -a list ruleset` shows stay), in every mode and with source ranges,
//! IPv4 and IPv6. Host netns test: the nat plans need
//! xt_ipvs and are covered in the VM.

use std::path::Path;

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

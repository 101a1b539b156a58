//! ClusterNetworkPolicies in the desired state (pure); their effect on
//! real packets is in `tests/netpol_netns.rs` (`cnp_` cases).

use serde_json::{json, Value};

use super::super::{desired, names, Options, PolicyState};
use crate::{
    cluster::KubeObject,
    cluster::Snapshot,
    controllers::fixtures::{namespace, pod, policy, snapshot},
    desired::Family,
};

fn cnp(name: &str, spec: Value) -> KubeObject {
    KubeObject::ClusterNetworkPolicy(Box::new(
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap(),
    ))
}

fn state(objects: Vec<KubeObject>) -> PolicyState {
    desired(&snapshot(objects), &Options::default())
}

fn chain<'s>(st: &'s PolicyState, name: &str) -> Option<&'s [String]> {
    st.iptables
        .iter()
        .find(|p| p.family == Family::V4)?
        .chains
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.rules.as_slice())
}

fn cluster(mut extra: Vec<KubeObject>) -> Vec<KubeObject> {
    let mut v = vec![
        namespace("x", json!({"ns": "x"})),
        namespace("y", json!({"ns": "y"})),
        pod("x", "a", json!({"pod": "a"}), &["10.244.1.2"])
            .port("http", 8080, "TCP")
            .build(),
        pod("y", "b", json!({"pod": "b"}), &["10.244.1.3"]).build(),
    ];
    v.append(&mut extra);
    v
}

fn deny_from_y(name: &str, tier: &str, priority: i32) -> KubeObject {
    cnp(
        name,
        json!({"tier": tier, "priority": priority,
               "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
               "ingress": [{"name": "no-y", "action": "Deny",
                            "from": [{"namespaces": {"matchLabels": {"ns": "y"}}}]}]}),
    )
}

#[test]
fn a_pod_only_a_cluster_policy_selects_gets_a_chain_with_the_admin_tier() {
    let st = state(cluster(vec![deny_from_y("d", "Admin", 5)]));
    let pod_chain = chain(&st, &names::pod_chain("x", "a")).expect("x/a has a chain");
    let cnp_chain = names::cluster_policy_chain("d", "ingress");
    let at = "-d 10.244.1.2/32";
    let jump = pod_chain
        .iter()
        .position(|r| *r == format!("{at} -j {cnp_chain}"))
        .expect("jump to the policy chain");
    let drop = pod_chain
        .iter()
        .position(|r| *r == format!("{at} -m mark --mark 0x40000/0x60000 -j DROP"))
        .expect("denies dropped");
    assert!(jump < drop, "{pod_chain:#?}");
    assert!(chain(&st, &names::pod_chain("y", "b")).is_none());
    let rules = chain(&st, &cnp_chain).unwrap();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert!(
        rules[0].ends_with(
            "-m mark --mark 0x0/0x60000 -m comment --comment \"ipwarden:denied cnp:d/no-y ingress\" -j MARK --set-xmark 0x40000/0x60000"
        ),
        "{rules:?}"
    );
    assert!(st.problems.is_empty(), "{:?}", st.problems);
}

#[test]
fn baseline_is_left_out_for_a_pod_a_network_policy_selects() {
    let np = policy(
        "x",
        "np",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    let st = state(cluster(vec![deny_from_y("b", "Baseline", 5), np]));
    let b = names::cluster_policy_chain("b", "ingress");
    let pod_chain = chain(&st, &names::pod_chain("x", "a")).unwrap();
    assert!(!pod_chain.iter().any(|r| r.contains(&b)), "{pod_chain:#?}");
    assert!(chain(&st, &b).is_none());
    let st = state(cluster(vec![deny_from_y("b", "Baseline", 5)]));
    let pod_chain = chain(&st, &names::pod_chain("x", "a")).unwrap();
    assert!(pod_chain.iter().any(|r| r.contains(&b)), "{pod_chain:#?}");
}

#[test]
fn admin_policies_run_by_priority_then_name() {
    let st = state(cluster(vec![
        deny_from_y("z", "Admin", 1),
        deny_from_y("b", "Admin", 2),
        deny_from_y("a", "Admin", 2),
    ]));
    let pod_chain = chain(&st, &names::pod_chain("x", "a")).unwrap();
    let order: Vec<usize> = ["z", "a", "b"]
        .iter()
        .map(|n| {
            let c = names::cluster_policy_chain(n, "ingress");
            pod_chain.iter().position(|r| r.ends_with(&c)).unwrap()
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{pod_chain:#?}");
}

#[test]
fn a_bad_deny_denies_everything_in_its_place_and_a_bad_accept_is_dropped() {
    let p = cnp(
        "bad",
        json!({"tier": "Admin", "priority": 1,
        "subject": {"namespaces": {}},
        "egress": [
          {"name": "typo", "action": "Accept", "to": [{"networks": ["10.0.0.0/33"]}]},
          {"name": "nodes", "action": "Deny", "to": [{"nodes": {}}]},
          {"name": "dns", "action": "Pass", "to": [{"domainNames": ["example.com"]}]}
        ]}),
    );
    let st = state(cluster(vec![p]));
    let fields: Vec<&str> = st.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.egress[0].to[0].networks[0]",
            "spec.egress[1].to[0].nodes",
            "spec.egress[2].to[0].domainNames"
        ]
    );
    assert!(st
        .problems
        .iter()
        .all(|p| p.object == "ClusterNetworkPolicy bad"));
    let rules = chain(&st, &names::cluster_policy_chain("bad", "egress")).unwrap();
    assert_eq!(rules.len(), 2, "{rules:?}");
    assert!(rules
        .iter()
        .all(|r| r.starts_with("-m mark --mark 0x0/0x60000")
            && r.ends_with("--set-xmark 0x40000/0x60000")));
}

#[test]
fn a_priority_out_of_range_skips_the_policy() {
    let st = state(cluster(vec![deny_from_y("p", "Admin", 1001)]));
    assert_eq!(st.problems.len(), 1);
    assert_eq!(st.problems[0].field, "spec.priority");
    assert!(chain(&st, &names::pod_chain("x", "a")).is_none());
}

/// Pure: the same cluster gives the same state byte for byte, whatever
/// order the snapshot holds its objects (and ClusterNetworkPolicies) in.
#[test]
fn the_tiers_do_not_depend_on_the_snapshot_order() {
    let np = policy(
        "x",
        "np",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let objects = cluster(vec![
        deny_from_y("b", "Admin", 2),
        deny_from_y("a", "Admin", 2),
        deny_from_y("base", "Baseline", 1),
        np,
    ]);
    let a = state(objects.clone());
    assert!(!a.cluster_policies.is_empty());
    let host = snapshot(Vec::new()).host;
    for k in 1..objects.len() {
        let mut order = objects.clone();
        order.rotate_left(k);
        order.reverse();
        let unsorted = Snapshot::in_given_order(order, host.clone());
        let b = desired(&unsorted, &Options::default());
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "rotation {k}");
    }
}

/// A pod whose egress either tier restricts is a source the tc fast path
/// must never mark; one only an ingress rule selects is not.
#[test]
fn egress_tiers_make_the_pod_an_egress_restricted_source() {
    let egress_deny = |tier: &str| {
        cnp(
            "out",
            json!({"tier": tier, "priority": 1,
                   "subject": {"namespaces": {"matchLabels": {"ns": "x"}}},
                   "egress": [{"name": "no-imds", "action": "Deny",
                               "to": [{"networks": ["169.254.169.254/32"]}]}]}),
        )
    };
    let a: std::net::IpAddr = "10.244.1.2".parse().unwrap();
    for tier in ["Admin", "Baseline"] {
        let st = state(cluster(vec![egress_deny(tier)]));
        assert_eq!(
            st.egress_restricted_sources()
                .into_iter()
                .collect::<Vec<_>>(),
            [a],
            "{tier}"
        );
    }
    let st = state(cluster(vec![deny_from_y("d", "Admin", 5)]));
    assert!(st.egress_restricted_sources().is_empty());
}

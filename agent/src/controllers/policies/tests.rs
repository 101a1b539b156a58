//! The policy controller on small clusters built in each test (builders
//! in `controllers/fixtures.rs`).

use serde_json::json;

use super::{chains, desired, names, Options, PolicyState};
use crate::{
    cluster::KubeObject,
    controllers::fixtures::{
        namespace, object_order, pod, policy, reorderings, snapshot, unsorted_snapshots,
    },
    desired::{Family, Member, SetSpec, SetType},
};

fn state(objects: Vec<KubeObject>) -> PolicyState {
    desired(&snapshot(objects), &Options::default())
}

fn chain<'s>(st: &'s PolicyState, family: Family, name: &str) -> Option<&'s [String]> {
    st.iptables
        .iter()
        .find(|p| p.family == family)?
        .chains
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.rules.as_slice())
}

fn set<'s>(st: &'s PolicyState, name: &str) -> &'s SetSpec {
    st.sets.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no set {name}; sets: {:?}",
            st.sets.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    })
}

fn members(s: &SetSpec) -> Vec<String> {
    s.members.iter().map(ToString::to_string).collect()
}

fn ingress_pods_set(ns: &str, policy: &str, rule: usize) -> String {
    names::rule_set(true, ns, policy, "ingress", rule, "pods")
}

/// Namespaces x and y, pods x/a (local), x/b (local), y/a (remote).
fn cluster() -> Vec<KubeObject> {
    vec![
        namespace("x", json!({"ns": "x"})),
        namespace("y", json!({"ns": "y"})),
        pod("x", "a", json!({"pod": "a"}), &["10.244.1.2", "fd00::2"])
            .port("http", 8080, "TCP")
            .build(),
        pod("x", "b", json!({"pod": "b"}), &["10.244.1.3"]).build(),
        pod("y", "a", json!({"pod": "a"}), &["10.244.2.2"])
            .on("node-b")
            .build(),
    ]
}

#[test]
fn pods_selected_by_no_policy_get_no_chain_and_the_top_chains_stay() {
    let st = state(cluster());
    for family in [Family::V4, Family::V6] {
        assert_eq!(chain(&st, family, names::CHAIN_FORWARD), Some(&[][..]));
        let plan = st.iptables.iter().find(|p| p.family == family).unwrap();
        assert_eq!(
            plan.jumps.len(),
            3,
            "INPUT, FORWARD and OUTPUT jump to our chains"
        );
        assert!(
            plan.chains
                .iter()
                .all(|c| c.name.starts_with("IPWARDEN-") || c.name == names::CHAIN_POD_COMMON),
            "no pod, policy or dispatch chain"
        );
    }
    assert!(st.sets.is_empty() && st.problems.is_empty());
}

#[test]
fn two_pods_of_one_address_both_apply_and_the_last_is_gone_to() {
    let ips: [std::net::IpAddr; 1] = ["10.244.1.9".parse().unwrap()];
    let entry = |chain: &str| chains::TopEntry {
        chain: chain.into(),
        ips: &ips,
        ingress: true,
        egress: false,
    };
    let top = chains::top_chains_of(
        [entry("IPW-POD-FW-A"), entry("IPW-POD-FW-B")].into_iter(),
        Family::V4,
        &Options::default(),
    );
    let to = top.chains.iter().find(|c| c.name == "IPW-TO-POD-9");
    assert_eq!(
        to.unwrap().rules,
        [
            "-d 10.244.1.9/32 -j IPW-POD-FW-A",
            "-d 10.244.1.9/32 -g IPW-POD-FW-B"
        ]
    );
    assert_eq!(top.sets.len(), 1, "one guarded address: {:?}", top.sets);
}

#[test]
fn default_deny_ingress_isolates_local_selected_pods_only() {
    let mut objects = cluster();
    objects.push(policy("x", "deny", json!({"podSelector": {}})));
    let st = state(objects);
    let fw = chain(&st, Family::V4, names::CHAIN_FORWARD).unwrap();
    assert_eq!(
        fw,
        ["-m set --match-set IPW-GUARDED-INGRESS dst -j IPW-TO-POD"],
        "ingress only: no source dispatch"
    );
    assert_eq!(chain(&st, Family::V4, names::CHAIN_OUTPUT).unwrap(), fw);
    assert_eq!(
        chain(&st, Family::V4, names::CHAIN_TO_POD).unwrap(),
        [
            "-d 0.0.0.2/0.0.0.15 -g IPW-TO-POD-2",
            "-d 0.0.0.3/0.0.0.15 -g IPW-TO-POD-3",
        ],
        "a bucket by the low 4 bits; y/a is on another node"
    );
    assert_eq!(
        chain(&st, Family::V4, "IPW-TO-POD-2").unwrap(),
        [format!(
            "-d 10.244.1.2/32 -g {}",
            names::pod_chain("x", "a")
        )]
    );
    assert_eq!(
        chain(&st, Family::V4, "IPW-TO-POD-3").unwrap(),
        [format!(
            "-d 10.244.1.3/32 -g {}",
            names::pod_chain("x", "b")
        )]
    );
    assert_eq!(
        chain(&st, Family::V6, names::CHAIN_TO_POD).unwrap(),
        ["-d ::2/::f -g IPW-TO-POD-2"]
    );
    assert_eq!(
        chain(&st, Family::V4, names::CHAIN_FROM_POD),
        None,
        "no pod is guarded in egress"
    );
    let guarded: Vec<String> = set(&st, names::SET_GUARDED_INGRESS)
        .members
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(guarded, ["10.244.1.2", "10.244.1.3"]);
    assert!(!st
        .sets
        .iter()
        .any(|s| s.name.ends_with(names::SET_GUARDED_EGRESS)));
    assert_eq!(
        set(&st, &format!("inet6:{}", names::SET_GUARDED_INGRESS))
            .members
            .len(),
        1,
        "x/a's IPv6 address"
    );
    let a = chain(&st, Family::V4, &names::pod_chain("x", "a")).unwrap();
    let policy_chain = names::policy_chain("x", "deny", "ingress");
    assert!(a.contains(&format!("-d 10.244.1.2/32 -j {policy_chain}")));
    assert!(a.contains(&"-d 10.244.1.2/32 -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp-port-unreachable".to_string()));
    assert!(a
        .iter()
        .any(|r| r.contains("-j NFLOG") && r.contains("--nflog-group 100")));
    assert!(a.contains(&"-d 10.244.1.2/32 -m mark ! --mark 0x10000/0x10000 -m comment --comment \"ipwarden:denied x/deny ingress\"".to_string()));
    assert_eq!(
        chain(&st, Family::V4, &policy_chain),
        Some(&[][..]),
        "no rule: nothing allowed"
    );
    // x/a is dual-stack: its IPv6 address is isolated in the v6 table;
    // x/b has no IPv6 address and no v6 chain.
    let a6 = chain(&st, Family::V6, &names::pod_chain("x", "a")).unwrap();
    assert!(a6.contains(&"-d fd00::2/128 -m mark ! --mark 0x10000/0x10000 -j REJECT --reject-with icmp6-port-unreachable".to_string()));
    assert!(chain(&st, Family::V6, &names::pod_chain("x", "b")).is_none());
}

#[test]
fn policy_types_default_to_ingress_plus_egress_when_egress_rules_exist() {
    let mut objects = cluster();
    objects.push(policy(
        "x",
        "eg",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "egress": [{}]}),
    ));
    let st = state(objects);
    let fw = chain(&st, Family::V4, names::CHAIN_FORWARD).unwrap();
    let b = names::pod_chain("x", "b");
    assert_eq!(
        fw,
        [
            "-m set --match-set IPW-GUARDED-INGRESS dst -j IPW-TO-POD",
            "-m set --match-set IPW-GUARDED-EGRESS src -j IPW-FROM-POD",
        ]
    );
    assert_eq!(
        chain(&st, Family::V4, names::CHAIN_FROM_POD).unwrap(),
        ["-s 0.0.0.3/0.0.0.15 -g IPW-FROM-POD-3"]
    );
    assert_eq!(
        chain(&st, Family::V4, "IPW-FROM-POD-3").unwrap(),
        [format!("-s 10.244.1.3/32 -g {b}")]
    );
    let input = chain(&st, Family::V4, names::CHAIN_INPUT).unwrap();
    assert_eq!(
        input.first().map(String::as_str),
        Some("-m set ! --match-set IPW-GUARDED-EGRESS src -j RETURN"),
        "what no guarded pod sent leaves first"
    );
    assert_eq!(
        input.last().map(String::as_str),
        Some("-j IPW-FROM-POD"),
        "after the service RETURNs"
    );
    assert_eq!(
        chain(&st, Family::V4, &names::policy_chain("x", "eg", "egress")).unwrap(),
        ["-j MARK --set-xmark 0x10000/0x10000"],
        "an empty egress rule allows everything"
    );
    let only_egress = state({
        let mut o = cluster();
        o.push(policy(
            "x",
            "eg",
            json!({"podSelector": {}, "policyTypes": ["Egress"]}),
        ));
        o
    });
    let fw = chain(&only_egress, Family::V4, names::CHAIN_FORWARD).unwrap();
    assert_eq!(
        fw,
        ["-m set --match-set IPW-GUARDED-EGRESS src -j IPW-FROM-POD"],
        "Egress only"
    );
}

#[test]
fn pod_and_namespace_selectors_in_one_peer_are_anded_and_peers_are_ored() {
    let mut objects = cluster();
    objects.push(
        pod("y", "b", json!({"pod": "b"}), &["10.244.2.3"])
            .on("node-b")
            .build(),
    );
    objects.push(policy(
        "x",
        "and",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchLabels": {"pod": "b"}}},
            {"podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["b"]}]}}
        ]}]}),
    ));
    let st = state(objects);
    // y/b (both selectors) and x/b (same namespace): never y/a or x/a.
    assert_eq!(
        members(set(&st, &ingress_pods_set("x", "and", 0))),
        ["10.244.1.3", "10.244.2.3"]
    );
    let rules = chain(&st, Family::V4, &names::policy_chain("x", "and", "ingress")).unwrap();
    assert_eq!(
        rules,
        [format!(
            "-m set --match-set {} src -j MARK --set-xmark 0x10000/0x10000",
            ingress_pods_set("x", "and", 0)
        )]
    );
    // The IPv6 twin exists (empty) so a pod gaining a v6 address is an add.
    assert!(
        set(&st, &format!("inet6:{}", ingress_pods_set("x", "and", 0)))
            .members
            .is_empty()
    );
}

#[test]
fn namespace_selector_alone_takes_every_pod_of_matching_namespaces_and_can_select_by_name() {
    let mut objects = cluster();
    objects.push(policy(
        "x",
        "from-y",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}}
        ]}]}),
    ));
    let st = state(objects);
    assert_eq!(
        members(set(&st, &ingress_pods_set("x", "from-y", 0))),
        ["10.244.2.2"]
    );
}

#[test]
fn ports_numbers_ranges_protocols_and_named_ports() {
    let mut objects = cluster();
    objects.push(policy(
        "x",
        "ports",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [
            {"port": 80},
            {"protocol": "UDP", "port": 5000, "endPort": 5010},
            {"protocol": "SCTP"},
            {"port": "http"}
        ]}]}),
    ));
    let st = state(objects);
    let named = names::rule_set(false, "x", "ports", "ingress", 0, "port-3");
    assert_eq!(
        chain(
            &st,
            Family::V4,
            &names::policy_chain("x", "ports", "ingress")
        )
        .unwrap(),
        [
            "-p tcp -m tcp --dport 80 -j MARK --set-xmark 0x10000/0x10000".to_string(),
            "-p udp -m udp --dport 5000:5010 -j MARK --set-xmark 0x10000/0x10000".to_string(),
            "-p sctp -j MARK --set-xmark 0x10000/0x10000".to_string(),
            format!(
                "-p tcp -m set --match-set {named} dst,dst -j MARK --set-xmark 0x10000/0x10000"
            ),
        ]
    );
    let s = set(&st, &named);
    assert_eq!(s.set_type, SetType::HashIpPort);
    assert_eq!(
        members(s),
        ["10.244.1.2,tcp:8080"],
        "resolved on the target pod"
    );
}

#[test]
fn egress_named_ports_resolve_on_the_peer_pods() {
    let mut objects = cluster();
    objects.push(
        pod("y", "c", json!({"pod": "c"}), &["10.244.2.4"])
            .on("node-b")
            .port("dns", 53, "UDP")
            .build(),
    );
    objects.push(policy(
        "x",
        "dns",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "policyTypes": ["Egress"], "egress": [{
            "to": [{"namespaceSelector": {}}],
            "ports": [{"protocol": "UDP", "port": "dns"}]
        }]}),
    ));
    let st = state(objects);
    let named = names::rule_set(false, "x", "dns", "egress", 0, "port-0");
    assert_eq!(members(set(&st, &named)), ["10.244.2.4,udp:53"]);
}

#[test]
fn ip_blocks_hold_their_excepts_as_nomatch_and_zero_prefixes_are_split() {
    let mut objects = cluster();
    objects.push(policy(
        "x",
        "blocks",
        json!({"podSelector": {}, "ingress": [{"from": [
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["fd00:bad::/32"]}}
        ]}]}),
    ));
    let st = state(objects);
    let v4 = names::rule_set(true, "x", "blocks", "ingress", 0, "block-0");
    let v6 = format!(
        "inet6:{}",
        names::rule_set(true, "x", "blocks", "ingress", 0, "block-1")
    );
    assert_eq!(set(&st, &v4).set_type, SetType::HashNet);
    assert_eq!(
        members(set(&st, &v4)),
        ["10.0.0.0/8", "10.1.0.0/16 nomatch"]
    );
    let m6 = &set(&st, &v6).members;
    assert!(m6.contains(&Member::net("::/1".parse().unwrap())));
    assert!(m6.contains(&Member::net("8000::/1".parse().unwrap())));
    assert!(m6.contains(&Member::net_nomatch("fd00:bad::/32".parse().unwrap())));
    // The v4 chain matches only the v4 block and the v6 chain only the v6 one.
    let chain4 = chain(
        &st,
        Family::V4,
        &names::policy_chain("x", "blocks", "ingress"),
    )
    .unwrap();
    assert_eq!(chain4.len(), 1);
    assert!(chain4[0].contains(&v4));
}

#[test]
fn several_policies_on_one_pod_each_get_a_jump() {
    let mut objects = cluster();
    objects.push(policy(
        "x",
        "p1",
        json!({"podSelector": {}, "ingress": [{"ports": [{"port": 80}]}]}),
    ));
    objects.push(policy("x", "p2", json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [{"ports": [{"port": 81}]}]})));
    let st = state(objects);
    let a = chain(&st, Family::V4, &names::pod_chain("x", "a")).unwrap();
    for p in ["p1", "p2"] {
        assert!(a.contains(&format!(
            "-d 10.244.1.2/32 -j {}",
            names::policy_chain("x", p, "ingress")
        )));
    }
    let b = chain(&st, Family::V4, &names::pod_chain("x", "b")).unwrap();
    assert!(!b
        .iter()
        .any(|r| r.contains(&names::policy_chain("x", "p2", "ingress"))));
}

#[test]
fn host_network_finished_and_address_less_pods_are_skipped() {
    let objects = vec![
        pod("x", "host", json!({}), &["192.168.56.10"])
            .host_network()
            .build(),
        pod("x", "done", json!({}), &["10.244.1.9"])
            .phase("Succeeded")
            .build(),
        pod("x", "new", json!({}), &[]).build(),
        policy("x", "deny", json!({"podSelector": {}})),
    ];
    let st = state(objects);
    assert_eq!(chain(&st, Family::V4, names::CHAIN_FORWARD), Some(&[][..]));
}

#[test]
fn a_bad_rule_is_dropped_and_reported_but_the_pods_stay_isolated() {
    let mut objects = cluster();
    objects.push(policy(
        "x",
        "broken",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]},
            {"ports": [{"port": 90, "endPort": 80}]},
            {"ports": [{"protocol": "ICMP"}]},
            {"from": [{"podSelector": {"matchExpressions": [{"key": "a", "operator": "Maybe"}]}}]},
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]},
            {"ports": [{"port": 443}]}
        ]}),
    ));
    objects.push(policy(
        "x",
        "other",
        json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [{}]}),
    ));
    let st = state(objects);
    let fields: Vec<&str> = st.problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "spec.ingress[0].from[0].ipBlock.cidr",
            "spec.ingress[1].ports[0].endPort",
            "spec.ingress[2].ports[0].protocol",
            "spec.ingress[3].from[0].podSelector.matchExpressions[0].operator",
            "spec.ingress[4].from[0].ipBlock.except[0]",
        ]
    );
    assert!(st
        .problems
        .iter()
        .all(|p| p.object == "NetworkPolicy x/broken"));
    assert_eq!(
        chain(
            &st,
            Family::V4,
            &names::policy_chain("x", "broken", "ingress")
        )
        .unwrap(),
        ["-p tcp -m tcp --dport 443 -j MARK --set-xmark 0x10000/0x10000"],
        "only the good rule is left; x/a stays isolated"
    );
    assert_eq!(
        chain(
            &st,
            Family::V4,
            &names::policy_chain("x", "other", "ingress")
        )
        .unwrap(),
        ["-j MARK --set-xmark 0x10000/0x10000"]
    );
}

#[test]
fn the_same_snapshot_gives_the_same_state_and_a_label_change_only_changes_members() {
    let with_c = |labels| {
        let mut objects = cluster();
        objects.push(pod("y", "c", labels, &["10.244.2.9"]).on("node-b").build());
        objects.push(policy(
            "x",
            "from-c",
            json!({"podSelector": {}, "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}]}]}),
        ));
        state(objects)
    };
    let before = with_c(json!({"pod": "c"}));
    assert_eq!(before, with_c(json!({"pod": "c"})));
    let after = with_c(json!({"pod": "c", "role": "client"}));
    assert_eq!(before.iptables, after.iptables, "no chain changes");
    let name = ingress_pods_set("x", "from-c", 0);
    assert!(set(&before, &name).members.is_empty());
    assert_eq!(members(set(&after, &name)), ["10.244.2.9"]);
}

/// Policies of every shape, with the cases where order could leak through:
/// the same pod and policy names in two namespaces, several policies on one
/// pod, a pod selected as a peer by several rules, a named port, an ipBlock
/// with an except, and a bad rule.
fn every_shape() -> Vec<KubeObject> {
    let mut objects = cluster();
    objects.extend([
        pod("y", "b", json!({"pod": "b"}), &["10.244.1.4", "fd00::4"])
            .port("http", 8081, "TCP")
            .build(),
        pod("y", "c", json!({"pod": "c", "role": "client"}), &["10.244.2.9"])
            .on("node-b")
            .port("dns", 53, "UDP")
            .build(),
        policy("x", "deny", json!({"podSelector": {}})),
        policy("y", "deny", json!({"podSelector": {}})),
        policy(
            "x",
            "from-clients",
            json!({"podSelector": {"matchLabels": {"pod": "a"}}, "ingress": [
                {"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "client"}}}],
                 "ports": [{"port": "http"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}]},
                {"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]}
            ]}),
        ),
        policy(
            "y",
            "from-clients",
            json!({"podSelector": {"matchLabels": {"pod": "b"}}, "ingress": [
                {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}], "ports": [{"port": "http"}]}
            ]}),
        ),
        policy(
            "x",
            "dns",
            json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [
                {"to": [{"namespaceSelector": {}}], "ports": [{"protocol": "UDP", "port": "dns"}]},
                {"ports": [{"port": 90, "endPort": 80}]}
            ]}),
        ),
    ]);
    objects
}

/// The source's order never reaches the controller: the snapshot sorts.
#[test]
fn same_objects_in_any_order_give_the_same_state() {
    let objects = every_shape();
    let a = state(objects.clone());
    assert!(
        !a.sets.is_empty() && !a.problems.is_empty(),
        "sets and problems are in the state: {a:?}"
    );
    for other in reorderings(&objects) {
        let b = state(other);
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

/// The controller itself, on snapshots that really hold other orders.
#[test]
fn the_controller_gives_the_same_state_whatever_order_the_snapshot_holds() {
    let objects = every_shape();
    let a = state(objects.clone());
    for unsorted in unsorted_snapshots(&objects) {
        let b = desired(&unsorted, &Options::default());
        assert_eq!(a, b, "{:?}", object_order(&unsorted));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

#[test]
fn isolation_and_rules_are_described_in_words_for_explain() {
    let mut objects = cluster();
    objects.push(policy(
        "x",
        "web",
        json!({"podSelector": {"matchLabels": {"pod": "a"}}, "policyTypes": ["Ingress", "Egress"], "ingress": [
            {"from": [
                {"namespaceSelector": {"matchLabels": {"ns": "y"}}, "podSelector": {"matchExpressions": [{"key": "pod", "operator": "In", "values": ["a", "b"]}]}},
                {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}
            ], "ports": [{"port": 80}, {"protocol": "UDP", "port": 5000, "endPort": 5010}, {"port": "http"}]}
        ]}),
    ));
    let st = state(objects);
    assert_eq!(st.isolated.len(), 1);
    let a = &st.isolated[0];
    assert_eq!(a.pod, "x/a");
    assert_eq!(
        (a.ingress.as_slice(), a.egress.as_slice()),
        (&["x/web".to_string()][..], &["x/web".to_string()][..])
    );
    let d = st.policies.iter().find(|p| p.policy == "x/web").unwrap();
    assert_eq!(
        d.ingress.as_deref().unwrap(),
        ["from pods {pod in (a,b)} in namespaces {ns=y} or 10.0.0.0/8 except 10.1.0.0/16, ports tcp 80, udp 5000-5010, tcp named \"http\""]
    );
    assert_eq!(
        d.egress.as_deref(),
        Some(&[][..]),
        "egress isolated, nothing allowed"
    );
}

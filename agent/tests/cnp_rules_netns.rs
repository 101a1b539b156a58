//! ClusterNetworkPolicy chains in a real netns: written the way
//! iptables-save prints them (a second apply writes nothing, nft keeps
//! every rule handle), with the tiers in the pod chain in order.

use std::path::Path;

use ipwarden::{
    cluster::{manifests, HostInfo, Snapshot},
    controllers::policies::{self, PolicyState},
    kernel::{ipset::IpsetClient, iptables},
    netns::{privileged, NetNs},
    reconcile::policies as reconcile_policies,
    store::SetStore,
};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Namespace
metadata: {name: y, labels: {ns: y}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{name: web, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.244.1.2, podIPs: [{ip: 10.244.1.2}, {ip: "fd00:10:244:1::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: y, labels: {pod: b}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {phase: Running, podIP: 10.244.1.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: y}
spec: {podSelector: {}, policyTypes: [Ingress]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: admin}
spec:
  tier: Admin
  priority: 10
  subject: {namespaces: {}}
  ingress:
  - {name: pass-y, action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}
  - {name: web, action: Accept, from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {pod: b}}}}],
     protocols: [{destinationNamedPort: web}, {tcp: {destinationPort: {range: {start: 9000, end: 9100}}}}]}
  egress:
  - {name: imds, action: Deny, to: [{networks: [169.254.169.254/32, "fd00:ec2::254/128"]}],
     protocols: [{tcp: {destinationPort: {number: 80}}}, {udp: {}}]}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: baseline}
spec:
  tier: Baseline
  priority: 1
  subject: {pods: {namespaceSelector: {}, podSelector: {}}}
  ingress:
  - {name: default-deny, action: Deny, from: [{namespaces: {}}]}
"#;

fn desired() -> PolicyState {
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("cnp.yaml"), CLUSTER, &mut loaded);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: Vec::new(),
    };
    let snapshot = Snapshot::from_objects(loaded.objects, host);
    let st = policies::desired(&snapshot, &policies::Options::default());
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    st
}

fn output(ns: &NetNs, cmd: &str, args: &[&str]) -> String {
    let out = ns.command(cmd).args(args).output().unwrap();
    assert!(out.status.success(), "{cmd} {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cluster_policy_rules_are_canonical_and_a_second_apply_writes_nothing() {
    if !privileged("cluster_policy_rules_are_canonical_and_a_second_apply_writes_nothing") {
        return;
    }
    let ns = NetNs::new("ipw-cnp").unwrap();
    let state = desired();
    ns.run(|| {
        let store = SetStore::new(IpsetClient::new().unwrap());
        store
            .register(reconcile_policies::policies_owner())
            .unwrap();
        let first = reconcile_policies::apply(&store, &state).unwrap();
        assert!(!first.chains_written.is_empty());
        for plan in &state.iptables {
            let saved = iptables::read_table(plan.family, plan.table).unwrap();
            let (script, _) = iptables::script(plan, &saved);
            assert_eq!(script, None, "{:?}: printed differently", plan.family);
        }
        let rules = || output(&ns, "nft", &["-a", "list", "ruleset"]);
        let before = rules();
        let second = reconcile_policies::apply(&store, &state).unwrap();
        assert!(second.chains_written.is_empty(), "{second:?}");
        assert_eq!(rules(), before, "the second apply rewrote a rule");
    })
    .unwrap();
    let save = output(&ns, "iptables-save", &["-t", "filter"]);
    let line = |needle: &str| {
        save.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{save}"))
    };
    // y/b: Admin tier, its NetworkPolicy (REJECT), no Baseline.
    // x/a: Admin tier, then Baseline (no NetworkPolicy selects it).
    let x_admin = line("-d 10.244.1.2/32 -j IPW-CNP-");
    let x_drop = line("-d 10.244.1.2/32 -m mark --mark 0x40000/0x60000 -j DROP");
    assert!(x_admin < x_drop, "{save}");
    let baseline_jumps = save
        .lines()
        .filter(|l| l.contains("-d 10.244.1.2/32 -j IPW-CNP-"))
        .count();
    assert_eq!(
        baseline_jumps, 2,
        "admin and baseline jump for x/a:\n{save}"
    );
    let y_jumps = save
        .lines()
        .filter(|l| l.contains("-d 10.244.1.3/32 -j IPW-CNP-"))
        .count();
    assert_eq!(y_jumps, 1, "only the admin tier for y/b:\n{save}");
    assert!(
        save.contains(
            "-m comment --comment \"ipwarden:denied cnp:baseline/default-deny ingress\" -j MARK --set-xmark 0x40000/0x60000"
        ),
        "{save}"
    );
    let save6 = output(&ns, "ip6tables-save", &["-t", "filter"]);
    assert!(
        save6.contains("-s fd00:10:244:1::2/128 -j IPW-CNP-"),
        "{save6}"
    );
    let sets = output(&ns, "ipset", &["save"]);
    assert!(
        sets.contains(" 169.254.169.254\n") || sets.contains(" 169.254.169.254/32\n"),
        "{sets}"
    );
    assert!(sets.contains(" 10.244.1.2,tcp:8080\n"), "{sets}");
}

//! ClusterNetworkPolicy chains in a real netns: written the way
//! iptables-save prints them (a second apply writes nothing, nft keeps
//! every rule handle), with the tiers in the pod chain in order.

use std::path::Path;

#[path = "support/kernel_text.rs"]
mod kernel_text;
use ipwarden::{
    cluster::{manifests, HostInfo, Snapshot},
    controllers::policies::{self, PolicyState},
    kernel::{ipset::IpsetClient, iptables},
    netns::{privileged, NetNs},
    reconcile::policies as reconcile_policies,
    store::SetStore,
};
use kernel_text::{assert_wrote_nothing, kernel_text, output};

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

fn snapshot(yaml: &str) -> Snapshot {
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("cnp.yaml"), yaml, &mut loaded);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: Vec::new(),
    };
    Snapshot::from_objects(loaded.objects, host)
}

/// The daemon's partial syncs with both tiers present (a peer relabelled,
/// a local pod added, a NetworkPolicy deleted under a Baseline policy, a
/// namespace relabelled, a ClusterNetworkPolicy edited, one deleted)
/// leave exactly what a whole apply of the same cluster writes into a
/// fresh netns, and a full sync after each finds nothing to do.
#[test]
fn partial_syncs_with_cluster_policies_leave_exactly_what_a_full_sync_writes() {
    if !privileged("partial_syncs_with_cluster_policies_leave_exactly_what_a_full_sync_writes") {
        return;
    }
    use ipwarden::{
        controllers::policies::incremental::PolicyChanges,
        reconcile::{dataplane::RealDataplane, policies::PolicySync, schedule::SyncKind},
    };
    let relabelled = CLUSTER.replace(
        "{name: b, namespace: y, labels: {pod: b}}",
        "{name: b, namespace: y, labels: {pod: z}}",
    );
    let added = format!(
        "{relabelled}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: d, namespace: x, labels: {{pod: b}}}}\n\
         spec: {{nodeName: node-a, containers: [{{name: c, ports: [{{name: web, containerPort: 8081}}]}}]}}\n\
         status: {{phase: Running, podIP: 10.244.1.9}}\n"
    );
    let np = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: y}\n\
              spec: {podSelector: {}, policyTypes: [Ingress]}\n";
    assert!(added.contains(np));
    let no_np = added.replace(np, "");
    let ns_relabelled = no_np.replace("{name: y, labels: {ns: y}}", "{name: y, labels: {ns: q}}");
    let edited = ns_relabelled
        .replace("priority: 10", "priority: 20")
        .replace(
            "  - {name: pass-y, action: Pass, from: [{namespaces: {matchLabels: {ns: y}}}]}\n",
            "",
        );
    let baseline_at = edited
        .find("---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {name: baseline}")
        .expect("the baseline policy");
    // Up to the next document (the pod added after it) or the end.
    let baseline_end = edited[baseline_at + 3..]
        .find("---")
        .map_or(edited.len(), |i| baseline_at + 3 + i);
    let no_baseline = format!("{}{}", &edited[..baseline_at], &edited[baseline_end..]);
    assert!(no_baseline.contains("name: d,"));
    for (before, after) in [
        (CLUSTER, &relabelled),
        (&relabelled, &added),
        (&added, &no_np),
        (&no_np, &ns_relabelled),
        (&ns_relabelled, &edited),
        (&edited, &no_baseline),
    ] {
        assert_ne!(before, after.as_str());
    }
    let keyed = |ns: &str, name: &str| (ns.to_string(), name.to_string());
    let steps = [
        (
            relabelled.clone(),
            PolicyChanges {
                pods: [keyed("y", "b")].into(),
                ..PolicyChanges::default()
            },
        ),
        (
            added.clone(),
            PolicyChanges {
                pods: [keyed("x", "d")].into(),
                ..PolicyChanges::default()
            },
        ),
        (
            no_np.clone(),
            PolicyChanges {
                policies: [keyed("y", "np")].into(),
                ..PolicyChanges::default()
            },
        ),
        (
            ns_relabelled.clone(),
            PolicyChanges {
                namespaces: ["y".to_string()].into(),
                ..PolicyChanges::default()
            },
        ),
        (
            edited.clone(),
            PolicyChanges {
                cluster_policies: ["admin".to_string()].into(),
                ..PolicyChanges::default()
            },
        ),
        (
            no_baseline.clone(),
            PolicyChanges {
                cluster_policies: ["baseline".to_string()].into(),
                ..PolicyChanges::default()
            },
        ),
    ];
    let opts = policies::Options::default();
    let fresh = NetNs::new("ipw-cnp-full").unwrap();
    let ns = NetNs::new("ipw-cnp-part").unwrap();
    let store = || SetStore::new(IpsetClient::new().unwrap());
    let partial_store = ns
        .run(|| {
            let s = store();
            s.register(reconcile_policies::policies_owner()).unwrap();
            s
        })
        .unwrap();
    let mut sync = ns
        .run(|| {
            PolicySync::new(
                RealDataplane::connect(partial_store.clone()).unwrap(),
                opts.clone(),
            )
        })
        .unwrap();
    ns.run(|| {
        sync.sync(
            SyncKind::Full,
            &snapshot(CLUSTER),
            &PolicyChanges::default(),
        )
    })
    .unwrap()
    .unwrap();
    for (i, (yaml, changes)) in steps.iter().enumerate() {
        let snap = snapshot(yaml);
        let (_, report) = ns
            .run(|| sync.sync(SyncKind::Partial, &snap, changes))
            .unwrap()
            .unwrap();
        if i == 0 {
            // A peer relabelled: members only.
            assert!(report.chains_written.is_empty(), "{report:?}");
            assert!(report.sets.as_ref().unwrap().executed.members_deleted > 0);
        }
        let state = policies::desired(&snap, &opts);
        assert!(state.problems.is_empty(), "{:?}", state.problems);
        fresh
            .run(|| {
                let store = store();
                store
                    .register(reconcile_policies::policies_owner())
                    .unwrap();
                reconcile_policies::apply(&store, &state).unwrap();
            })
            .unwrap();
        assert_eq!(kernel_text(&ns), kernel_text(&fresh), "after step {i}");
        let again = ns
            .run(|| reconcile_policies::apply(&partial_store, &state).unwrap())
            .unwrap();
        assert_wrote_nothing(&again, i);
    }
}

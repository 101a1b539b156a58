//! The index against the whole recompute: any sequence of changes applied
//! incrementally gives exactly the state `desired` gives for the final
//! cluster, and the deltas, applied to a model of the kernel, give it too.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{json, Value};

use super::{Key, PolicyChanges, PolicyDelta, PolicyIndex};
use crate::{
    cluster::KubeObject,
    controllers::{
        fixtures::{namespace, pod, policy, snapshot},
        policies::{desired, names, Options, PolicyState},
    },
    desired::{Family, SetSpec},
};

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const APPS: [&str; 3] = ["web", "db", "api"];

/// A pod as the test generates it.
#[derive(Clone, Debug)]
struct PodSpec {
    ns: usize,
    name: usize,
    app: Option<usize>,
    role: Option<usize>,
    local: bool,
    /// Index into a small pool, so two pods may share an address.
    v4: Option<u8>,
    v6: bool,
    port: Option<u16>,
}

#[derive(Clone, Debug)]
enum Event {
    Pod(PodSpec),
    RemovePod(usize, usize),
    Namespace(usize, Option<usize>),
    Policy(usize, usize, usize),
    RemovePolicy(usize, usize),
    /// A ClusterNetworkPolicy `cnpN` of a template.
    ClusterPolicy(usize, usize),
    RemoveClusterPolicy(usize),
}

fn pod_spec() -> impl Strategy<Value = PodSpec> {
    (
        0..3usize,
        0..6usize,
        proptest::option::of(0..3usize),
        proptest::option::of(0..2usize),
        any::<bool>(),
        proptest::option::of(0..8u8),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(8080u16), Just(9090u16)]),
    )
        .prop_map(|(ns, name, app, role, local, v4, v6, port)| PodSpec {
            ns,
            name,
            app,
            role,
            local,
            v4,
            v6,
            port,
        })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => pod_spec().prop_map(Event::Pod),
        1 => (0..3usize, 0..6usize).prop_map(|(n, p)| Event::RemovePod(n, p)),
        1 => (0..3usize, proptest::option::of(0..2usize)).prop_map(|(n, l)| Event::Namespace(n, l)),
        2 => (0..3usize, 0..3usize, 0..TEMPLATES).prop_map(|(n, p, t)| Event::Policy(n, p, t)),
        1 => (0..3usize, 0..3usize).prop_map(|(n, p)| Event::RemovePolicy(n, p)),
        2 => (0..3usize, 0..CLUSTER_TEMPLATES).prop_map(|(n, t)| Event::ClusterPolicy(n, t)),
        1 => (0..3usize).prop_map(Event::RemoveClusterPolicy),
    ]
}

const CLUSTER_TEMPLATES: usize = 7;

/// ClusterNetworkPolicy shapes: both tiers, equal and different
/// priorities, namespace and pod subjects, Accept/Deny/Pass, pod,
/// namespace and network peers, port numbers, ranges and named ports in
/// both directions (named ingress ports resolve on the pods a policy
/// applies to, which a NetworkPolicy changes for Baseline), and a broken
/// rule that fails closed.
fn cluster_policy_object(name: &str, template: usize) -> KubeObject {
    let spec = match template {
        0 => json!({"tier": "Admin", "priority": 1,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}},
            "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"team": "a"}}}]}]}),
        1 => json!({"tier": "Baseline", "priority": 5, "subject": {"namespaces": {}},
            "egress": [{"action": "Accept", "to": [{"pods": {"namespaceSelector": {},
                            "podSelector": {"matchLabels": {"role": "client"}}}}],
                        "protocols": [{"destinationNamedPort": "http"}]},
                       {"action": "Deny", "to": [{"networks": ["10.0.0.0/8"]}]}]}),
        2 => json!({"tier": "Admin", "priority": 1,
            "subject": {"namespaces": {"matchLabels": {"team": "a"}}},
            "ingress": [{"action": "Pass", "from": [{"pods": {"namespaceSelector": {},
                            "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]}}}]},
                        {"action": "Accept", "from": [{"namespaces": {}}],
                         "protocols": [{"destinationNamedPort": "http"}]}],
            "egress": [{"action": "Deny", "to": [{"networks": ["fd00::/8"]}]}]}),
        3 => json!({"tier": "Baseline", "priority": 2,
            "subject": {"pods": {"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["b"]}]},
                                 "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db", "api"]}]}}},
            "ingress": [{"action": "Accept", "from": [{"pods": {"namespaceSelector": {"matchLabels": {"team": "a"}},
                            "podSelector": {"matchLabels": {"app": "api"}}}}],
                         "protocols": [{"tcp": {"destinationPort": {"number": 8080}}}]},
                        {"action": "Deny", "from": [{"namespaces": {}}]}]}),
        4 => json!({"tier": "Admin", "priority": 0,
            "subject": {"pods": {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "admin"}}}},
            "egress": [{"action": "Accept", "to": [{"pods": {"namespaceSelector": {},
                            "podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}}}],
                        "protocols": [{"udp": {"destinationPort": {"range": {"start": 53, "end": 60}}}}]},
                       {"action": "Pass", "to": [{"networks": ["10.244.0.0/16"]}]}],
            "ingress": [{"action": "Deny", "from": [{"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "x"}}}],
                         "protocols": [{"destinationNamedPort": "http"}]}]}),
        5 => json!({"tier": "Baseline", "priority": 5,
            "subject": {"namespaces": {"matchLabels": {"kubernetes.io/metadata.name": "y"}}},
            "ingress": [{"action": "Deny", "from": [{"pods": {"namespaceSelector": {},
                            "podSelector": {"matchLabels": {"app": "web"}}}}],
                         "protocols": [{"destinationNamedPort": "http"}]}]}),
        _ => json!({"tier": "Admin", "priority": 3, "subject": {"namespaces": {}},
            "egress": [{"action": "Pass", "to": [{"nodes": {}}]},
                       {"action": "Accept", "to": [{"namespaces": {"matchLabels": {"team": "b"}}}]}]}),
    };
    KubeObject::ClusterNetworkPolicy(Box::new(
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))
            .expect("a ClusterNetworkPolicy"),
    ))
}

fn pod_object(p: &PodSpec) -> KubeObject {
    let mut labels = serde_json::Map::new();
    if let Some(a) = p.app {
        labels.insert("app".into(), json!(APPS[a]));
    }
    if let Some(r) = p.role {
        labels.insert("role".into(), json!(["client", "admin"][r]));
    }
    let v4 = p.v4.map(|i| format!("10.244.0.{}", i + 1));
    let v6 = p.v6.then(|| format!("fd00::{}:{}", p.ns + 1, p.name + 1));
    let ips: Vec<&str> = v4.iter().chain(v6.iter()).map(String::as_str).collect();
    let mut b = pod(
        NAMESPACES[p.ns],
        &format!("p{}", p.name),
        Value::Object(labels),
        &ips,
    );
    if !p.local {
        b = b.on("node-b");
    }
    if let Some(port) = p.port {
        b = b.port("http", port, "TCP");
    }
    b.build()
}

const TEMPLATES: usize = 7;

/// Policies of the shapes the controller handles differently.
fn policy_spec(t: usize) -> Value {
    match t {
        0 => json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
        1 => json!({"podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                         "ports": [{"port": "http"}]}]}),
        2 => {
            json!({"podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}},
                                   "podSelector": {"matchExpressions": [{"key": "role", "operator": "Exists"}]}}]}]})
        }
        3 => json!({"podSelector": {}, "policyTypes": ["Egress"],
            "egress": [{"to": [{"namespaceSelector": {}}], "ports": [{"port": "http"}]},
                       {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.0.0/16"]}}]}]}),
        4 => {
            json!({"podSelector": {"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["admin"]}]},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"podSelector": {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}}]}],
            "egress": [{"ports": [{"port": "http"}, {"port": 53, "protocol": "UDP"}]}]})
        }
        5 => json!({"podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["b"]}]}}]},
                        {"from": [{"ipBlock": {"cidr": "fd00::/8"}}]}]}),
        _ => json!({"podSelector": {"matchLabels": {"app": "api"}},
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}], "ports": [{"port": "http"}]}],
            "policyTypes": ["Egress"]}),
    }
}

/// The cluster as a map of objects, and the key each event changes.
#[derive(Default)]
struct Cluster {
    objects: BTreeMap<(u8, String, String), KubeObject>,
}

impl Cluster {
    fn apply(&mut self, e: &Event) -> PolicyChanges {
        let mut c = PolicyChanges::default();
        let key = |ns: usize, name: String| -> Key { (NAMESPACES[ns].to_string(), name) };
        match e {
            Event::Pod(p) => {
                let k = key(p.ns, format!("p{}", p.name));
                self.objects
                    .insert((0, k.0.clone(), k.1.clone()), pod_object(p));
                c.pods.insert(k);
            }
            Event::RemovePod(ns, name) => {
                let k = key(*ns, format!("p{name}"));
                self.objects.remove(&(0, k.0.clone(), k.1.clone()));
                c.pods.insert(k);
            }
            Event::Namespace(ns, labels) => {
                let name = NAMESPACES[*ns];
                let labels = labels.map_or(json!({}), |l| {
                    let team = ["a", "b"][l];
                    json!({ "team": team })
                });
                self.objects
                    .insert((1, String::new(), name.into()), namespace(name, labels));
                c.namespaces.insert(name.into());
            }
            Event::Policy(ns, name, t) => {
                let k = key(*ns, format!("np{name}"));
                let o = policy(&k.0, &k.1, policy_spec(*t));
                self.objects.insert((2, k.0.clone(), k.1.clone()), o);
                c.policies.insert(k);
            }
            Event::RemovePolicy(ns, name) => {
                let k = key(*ns, format!("np{name}"));
                self.objects.remove(&(2, k.0.clone(), k.1.clone()));
                c.policies.insert(k);
            }
            Event::ClusterPolicy(n, t) => {
                let name = format!("cnp{n}");
                let o = cluster_policy_object(&name, *t);
                self.objects.insert((3, String::new(), name.clone()), o);
                c.cluster_policies.insert(name);
            }
            Event::RemoveClusterPolicy(n) => {
                let name = format!("cnp{n}");
                self.objects.remove(&(3, String::new(), name.clone()));
                c.cluster_policies.insert(name);
            }
        }
        c
    }

    fn snapshot(&self) -> crate::cluster::Snapshot {
        snapshot(self.objects.values().cloned())
    }
}

/// What the kernel would hold: sets by name, chains by family and name.
#[derive(Debug, Default, PartialEq)]
struct Kernel {
    sets: BTreeMap<String, SetSpec>,
    chains: BTreeMap<(Family, String), Vec<String>>,
}

impl Kernel {
    fn of(state: &PolicyState) -> Self {
        Kernel {
            sets: state
                .sets
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            chains: state
                .iptables
                .iter()
                .flat_map(|p| {
                    p.chains
                        .iter()
                        .map(|c| ((p.family, c.name.clone()), c.rules.clone()))
                })
                .collect(),
        }
    }

    fn apply(&mut self, d: &PolicyDelta) {
        for s in &d.created {
            self.sets.insert(s.name.clone(), s.clone());
        }
        for m in &d.members {
            let set = self
                .sets
                .get_mut(&m.set)
                .expect("members of a set that exists");
            for a in &m.add {
                assert!(set.members.insert(*a), "{a} added twice to {}", m.set);
            }
            for x in &m.del {
                assert!(set.members.remove(x), "{x} not in {}", m.set);
            }
        }
        for c in &d.chains {
            for w in &c.written {
                self.chains
                    .insert((c.family, w.name.clone()), w.rules.clone());
            }
            for e in &c.edits {
                let rules = self
                    .chains
                    .get_mut(&(c.family, e.chain.clone()))
                    .expect("edited chain");
                for r in &e.delete {
                    let at = rules
                        .iter()
                        .position(|x| x == r)
                        .expect("deleted rule present");
                    rules.remove(at);
                }
                for (at, r) in &e.insert {
                    assert!(*at >= 1 && *at <= rules.len() + 1, "insert at {at}");
                    rules.insert(at - 1, r.clone());
                }
            }
            for name in &c.deleted {
                assert!(
                    self.chains.remove(&(c.family, name.clone())).is_some(),
                    "deleted {name}"
                );
            }
        }
        for name in &d.destroyed {
            assert!(self.sets.remove(name).is_some(), "destroyed {name}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn incremental_updates_equal_a_full_recompute(
        initial in proptest::collection::vec(event(), 0..12),
        events in proptest::collection::vec(proptest::collection::vec(event(), 1..3), 1..16),
    ) {
        let opts = Options::default();
        let mut cluster = Cluster::default();
        for e in &initial {
            cluster.apply(e);
        }
        let mut index = PolicyIndex::build(&cluster.snapshot(), &opts);
        let start = desired(&cluster.snapshot(), &opts);
        prop_assert_eq!(&index.state(), &start);
        let mut kernel = Kernel::of(&start);
        for batch in &events {
            let mut changes = PolicyChanges::default();
            for e in batch {
                changes.merge(cluster.apply(e));
            }
            let snap = cluster.snapshot();
            let full = desired(&snap, &opts);
            let delta = index.update(&snap, &changes);
            kernel.apply(&delta);
            let ours = index.state();
            prop_assert_eq!(&ours.sets, &full.sets);
            prop_assert_eq!(&ours.iptables, &full.iptables);
            prop_assert_eq!(&ours.problems, &full.problems);
            prop_assert_eq!(&ours.isolated, &full.isolated);
            prop_assert_eq!(&ours.policies, &full.policies);
            prop_assert_eq!(&ours.cluster_policies, &full.cluster_policies);
            prop_assert_eq!(&ours, &full);
            prop_assert_eq!(&kernel, &Kernel::of(&full));
            // The board shows the same after a full sync as after a partial one.
            prop_assert_eq!(index.summary(), full.into_summary());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A full sync's path: the index, told of nothing, compares itself
    /// with the final snapshot and updates; it then equals a full
    /// recompute and finds no pod different any more.
    #[test]
    fn catching_up_with_a_snapshot_equals_a_full_recompute(
        initial in proptest::collection::vec(event(), 0..12),
        events in proptest::collection::vec(event(), 1..24),
    ) {
        let opts = Options::default();
        let mut cluster = Cluster::default();
        for e in &initial {
            cluster.apply(e);
        }
        let mut index = PolicyIndex::build(&cluster.snapshot(), &opts);
        for e in &events {
            cluster.apply(e);
        }
        let snap = cluster.snapshot();
        let changes = index.changes_since(&snap);
        index.update(&snap, &changes);
        prop_assert_eq!(&index.state(), &desired(&snap, &opts));
        let again = index.changes_since(&snap);
        prop_assert!(again.pods.is_empty(), "{:?}", again.pods);
        prop_assert!(index.update(&snap, &again).is_empty());
    }
}

#[test]
fn a_local_pod_added_writes_its_chain_and_jump_lines_only() {
    let opts = Options::default();
    let mut cluster = Cluster::default();
    cluster.apply(&Event::Policy(0, 0, 0));
    let first = PodSpec {
        ns: 0,
        name: 0,
        app: None,
        role: None,
        local: true,
        v4: Some(1),
        v6: false,
        port: None,
    };
    cluster.apply(&Event::Pod(first.clone()));
    let mut index = PolicyIndex::build(&cluster.snapshot(), &opts);
    let changes = cluster.apply(&Event::Pod(PodSpec {
        name: 1,
        v4: Some(2),
        ..first
    }));
    let delta = index.update(&cluster.snapshot(), &changes);
    assert!(delta.created.is_empty(), "{delta:?}");
    // Its address joins the guarded set the top chains match.
    assert_eq!(delta.members.len(), 1, "{delta:?}");
    let guarded = &delta.members[0];
    assert_eq!(guarded.set, names::SET_GUARDED_INGRESS);
    assert_eq!((guarded.add.len(), guarded.del.len()), (1, 0));
    assert_eq!(delta.chains.len(), 1, "v4 only: {delta:?}");
    let c = &delta.chains[0];
    // Its chain, and the bucket of its address (10.244.0.3: the first
    // pod's 10.244.0.2 is in another), with the one dispatch line.
    let written: Vec<&str> = c.written.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(written.len(), 2, "{c:?}");
    assert!(written[0].starts_with("IPW-POD-FW-"), "{c:?}");
    assert_eq!(written[1], "IPW-TO-POD-3");
    assert!(c.deleted.is_empty());
    // One line into the dispatch chain (ingress), nothing deleted.
    let inserted: Vec<&str> = c
        .edits
        .iter()
        .flat_map(|e| e.insert.iter().map(|(_, r)| r.as_str()))
        .collect();
    assert_eq!(inserted, ["-d 0.0.0.3/0.0.0.15 -g IPW-TO-POD-3"], "{c:?}");
    assert!(c.edits.iter().all(|e| e.delete.is_empty()));
}

//! The policy state kept keyed, so a change costs what it touches.
//!
//! [`PolicyIndex`] holds the pods, namespaces and policies it was built
//! from, the members of every policy set with a count of the pods that put
//! each one there, which local pods each policy isolates, and each
//! policy's sets as rendered without pods (its "shape": the rules of a
//! policy chain never depend on pods, so its chain is rendered again only
//! for the units a state or delta includes, see `shapes.rs`). Pods are indexed by key
//! (the snapshot's order) and policies by namespace and by the labels
//! their peer selectors require ([`Selector::anchors`]), so a pod change
//! re-evaluates only the policies its old or new labels can meet, a
//! namespace change only the policies with namespace selectors, and a
//! policy change only that policy's sets and the local pods of its
//! namespace. ClusterNetworkPolicies are held the same way, their peers
//! filed beside the NetworkPolicies' and their subjects evaluated per
//! local pod (see `tiers.rs`).
//!
//! [`PolicyIndex::update`] applies changed objects and returns a
//! [`PolicyDelta`]: members added and removed, sets created and destroyed,
//! chains written and deleted and the moved lines of the top chains.
//! [`PolicyIndex::state`] assembles the whole state, which equals
//! [`super::desired`] of the same cluster (tested over random event
//! sequences in `tests.rs`). [`PolicyIndex::changes_since`] compares the
//! index with a whole snapshot, so a full sync updates the index instead
//! of rebuilding it.
//!
//! [`Selector::anchors`]: super::selector::Selector::anchors

mod assemble;
mod catch_up;
mod contrib;
mod counts;
mod filing;
mod journal;
mod shapes;
#[cfg(test)]
mod tests;
mod tiers;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::{
    describe::PolicyDescription,
    model::{self, Direction},
    pods::{namespace_labels_of, view, NamedPort, PodView},
    Options,
};
use crate::{
    cluster::{
        compact::{NameKey, Pod},
        Snapshot,
    },
    desired::{Family, Problem},
};

pub use journal::PolicyDelta;

use contrib::{Compiled, Contribution, NamespaceLabels};
use counts::MemberCounts;
use filing::namespace_selectors;
use shapes::Shapes;
use tiers::{TierEntry, TierNames, TierOrder};

/// Policies by key, each with its compiled form: a pod's candidates are
/// gathered from several of these and told apart by pointer.
type Listed = BTreeMap<Key, Arc<Compiled>>;

/// The policies filed under one label key ([`Selector::anchors`]).
#[derive(Default)]
struct ByLabel {
    /// Anchored on the key alone (`Exists`).
    any_value: Listed,
    by_value: HashMap<String, Listed>,
}

impl ByLabel {
    fn is_empty(&self) -> bool {
        self.any_value.is_empty() && self.by_value.is_empty()
    }
}

/// (namespace, name) as the snapshot sorts objects (no namespace: "").
pub type Key = (String, String);

/// The objects a partial sync must look at again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyChanges {
    pub pods: BTreeSet<Key>,
    pub namespaces: BTreeSet<String>,
    pub policies: BTreeSet<Key>,
    /// ClusterNetworkPolicies by name.
    pub cluster_policies: BTreeSet<String>,
}

impl PolicyChanges {
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
            && self.namespaces.is_empty()
            && self.policies.is_empty()
            && self.cluster_policies.is_empty()
    }

    pub fn merge(&mut self, older: PolicyChanges) {
        self.pods.extend(older.pods);
        self.namespaces.extend(older.namespaces);
        self.policies.extend(older.policies);
        self.cluster_policies.extend(older.cluster_policies);
    }
}

/// A local pod that policies isolate.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Isolated {
    namespace: String,
    name: String,
    ips: Vec<IpAddr>,
    /// Named ingress ports of the ClusterNetworkPolicies resolve on it.
    ports: Vec<NamedPort>,
    ingress: Vec<Key>,
    egress: Vec<Key>,
    /// The ClusterNetworkPolicies that apply to it (ingress, egress).
    tiers: [TierNames; 2],
}

impl Isolated {
    fn policies(&self, d: Direction) -> &[Key] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    fn tiers(&self, d: Direction) -> &TierNames {
        &self.tiers[usize::from(d == Direction::Egress)]
    }

    /// Does anything act on its traffic in `d`?
    fn guarded(&self, d: Direction) -> bool {
        !self.policies(d).is_empty() || !self.tiers(d).is_empty()
    }

    /// The policies of both kinds that apply to it in `d`.
    fn units(&self, d: Direction) -> impl Iterator<Item = Key> + '_ {
        self.policies(d).iter().cloned().chain(self.tiers(d).keys())
    }

    fn has(&self, family: Family) -> bool {
        self.ips.iter().any(|ip| Family::of(ip) == family)
    }

    /// The pod as the renderers take it (its labels are not kept).
    fn view(&self) -> PodView<'_> {
        PodView {
            namespace: &self.namespace,
            name: &self.name,
            labels: None,
            ips: self.ips.clone(),
            local: true,
            ports: self.ports.clone(),
        }
    }
}

/// A policy with what is derived from it alone.
struct PolicyEntry {
    compiled: Arc<Compiled>,
    shapes: Shapes,
    anchors: Vec<(String, Option<String>)>,
    description: PolicyDescription,
}

/// The keyed policy state; see the module documentation.
pub struct PolicyIndex {
    opts: Options,
    node: String,
    /// Actionable pods (an IP, not host network, not finished).
    pods: BTreeMap<Key, Arc<Pod>>,
    pod_problems: BTreeMap<Key, Vec<Problem>>,
    namespaces: NamespaceLabels,
    policies: BTreeMap<Key, PolicyEntry>,
    policy_problems: BTreeMap<Key, Vec<Problem>>,
    /// ClusterNetworkPolicies by name, and in evaluation order.
    tiers: BTreeMap<String, TierEntry>,
    tier_order: TierOrder,
    tier_problems: BTreeMap<String, Vec<Problem>>,
    /// Policies by their own namespace.
    by_namespace: BTreeMap<String, Listed>,
    /// Policies by a label one of their peer selectors requires, by the
    /// label's key.
    by_anchor: HashMap<String, ByLabel>,
    /// Policies (of both kinds: see `tiers.rs`) any pod may reach (see
    /// `contrib::needs_every_pod`).
    every_pod: Listed,
    /// Policies with a namespace selector.
    by_namespace_labels: BTreeSet<Key>,
    /// The (policy, direction, family) each pod-derived policy set
    /// belongs to, by the name its compiled policy holds.
    set_units: HashMap<Arc<str>, (Key, Direction, Family)>,
    /// Members of every pod-derived policy set, with how many pods put
    /// each there (two pods may share an address).
    members: HashMap<Arc<str>, MemberCounts>,
    isolated: BTreeMap<Key, Isolated>,
    /// The local pods each policy isolates, per direction.
    targets: BTreeMap<(Key, Direction), BTreeSet<Key>>,
    /// Before-state of what an update touches; None while building.
    journal: Option<journal::Journal>,
}

fn key_of(meta: &impl NameKey) -> (&str, &str) {
    meta.name_key()
}

fn find<'s, T, M: NameKey>(
    objects: &'s [Arc<T>],
    key: (&str, &str),
    meta: impl Fn(&T) -> &M,
) -> Option<&'s Arc<T>> {
    objects
        .binary_search_by(|o| key_of(meta(o)).cmp(&key))
        .ok()
        .map(|i| &objects[i])
}

impl PolicyIndex {
    /// The index of `snapshot` (every object added).
    pub fn build(snapshot: &Snapshot, opts: &Options) -> Self {
        let mut index = PolicyIndex {
            opts: opts.clone(),
            node: snapshot.host.node_name.clone(),
            pods: BTreeMap::new(),
            pod_problems: BTreeMap::new(),
            namespaces: NamespaceLabels::new(),
            policies: BTreeMap::new(),
            policy_problems: BTreeMap::new(),
            tiers: BTreeMap::new(),
            tier_order: TierOrder::new(),
            tier_problems: BTreeMap::new(),
            by_namespace: BTreeMap::new(),
            by_anchor: HashMap::new(),
            every_pod: Listed::new(),
            by_namespace_labels: BTreeSet::new(),
            set_units: HashMap::new(),
            members: HashMap::new(),
            isolated: BTreeMap::new(),
            targets: BTreeMap::new(),
            journal: None,
        };
        for ns in &snapshot.namespaces {
            if let Some(name) = ns.metadata.name.as_deref() {
                index
                    .namespaces
                    .insert(name.to_string(), namespace_labels_of(ns, name));
            }
        }
        for np in &snapshot.network_policies {
            let (ns, name) = key_of(&np.metadata);
            index.set_policy((ns.into(), name.into()), Some(np));
        }
        for p in &snapshot.cluster_network_policies {
            let (_, name) = key_of(&p.metadata);
            index.set_cluster_policy(name, Some(p));
        }
        for pod in &snapshot.pods {
            let (ns, name) = key_of(&pod.metadata);
            index.set_pod((ns.into(), name.into()), Some(pod));
        }
        for counts in index.members.values_mut() {
            counts.settle();
        }
        index.members.shrink_to_fit();
        index.set_units.shrink_to_fit();
        index
    }

    /// Brings the changed objects to what `snapshot` has of them, and
    /// returns what moved.
    pub fn update(&mut self, snapshot: &Snapshot, changes: &PolicyChanges) -> PolicyDelta {
        self.journal = Some(journal::Journal::default());
        for name in &changes.namespaces {
            let ns = find(&snapshot.namespaces, ("", name), |n| &n.metadata);
            self.set_namespace(name, ns.map(|ns| namespace_labels_of(ns, name)));
        }
        for key in &changes.policies {
            let np = find(&snapshot.network_policies, (&key.0, &key.1), |n| {
                &n.metadata
            });
            self.set_policy(key.clone(), np);
        }
        for name in &changes.cluster_policies {
            let p = Self::find_tier(snapshot, name);
            self.set_cluster_policy(name, p.map(|p| &**p));
        }
        for key in &changes.pods {
            let pod = find(&snapshot.pods, (&key.0, &key.1), |p| &p.metadata);
            self.set_pod(key.clone(), pod);
        }
        let journal = self.journal.take().expect("set above");
        journal.finish(self)
    }

    fn view_of<'p>(&self, pod: &'p Pod) -> Option<super::pods::PodView<'p>> {
        view(pod, &self.node, &mut Vec::new())
    }

    /// Adds (+1) or removes (-1) a contribution's members. While the
    /// index is built (no journal) members are appended and merged once
    /// at the end ([`MemberCounts::settle`]).
    fn count(&mut self, contribution: Contribution, add: bool) {
        for (set, member) in contribution {
            if !self.members.contains_key(&set) {
                self.members.insert(set.clone(), MemberCounts::default());
            }
            let counts = self.members.get_mut(&set).expect("inserted above");
            match self.journal.as_mut() {
                None if add => counts.push(member),
                None => {
                    counts.change(member, false);
                }
                Some(j) => {
                    let before = counts.change(member, add);
                    j.member(&set, member, before > 0);
                }
            }
        }
    }

    /// The policies whose sets `pod` may be in, each once.
    fn candidates(&self, pod: &PodView) -> Vec<&Arc<Compiled>> {
        let mut into: Vec<&Arc<Compiled>> = self.every_pod.values().collect();
        if let Some(own) = self.by_namespace.get(pod.namespace) {
            into.extend(own.values());
        }
        for (k, v) in pod.labels.into_iter().flatten() {
            if let Some(by_label) = self.by_anchor.get(k) {
                into.extend(by_label.any_value.values());
                if let Some(ps) = by_label.by_value.get(v) {
                    into.extend(ps.values());
                }
            }
        }
        into.sort_unstable_by_key(|c| Arc::as_ptr(c));
        into.dedup_by(|a, b| Arc::ptr_eq(a, b));
        into
    }

    /// What the actionable `pod` puts into the sets of `policies`.
    fn pod_contribution(&self, pod: &Pod, policies: &[&Arc<Compiled>]) -> Contribution {
        self.view_of(pod)
            .map_or_else(Vec::new, |v| self.contribution_of(&v, policies))
    }

    /// What `pod` puts into the sets of `policies`.
    fn contribution_of(&self, pod: &PodView, policies: &[&Arc<Compiled>]) -> Contribution {
        let mut out = Vec::new();
        for compiled in policies {
            contrib::contribution(compiled, pod, &self.namespaces, &mut out);
        }
        out
    }

    /// What `pod` puts into the sets of the policies it may meet.
    fn contribution_to_candidates(&self, pod: Option<&PodView>) -> Contribution {
        pod.map_or_else(Vec::new, |v| self.contribution_of(v, &self.candidates(v)))
    }

    fn set_pod(&mut self, key: Key, new: Option<&Arc<Pod>>) {
        let mut problems = Vec::new();
        let new_view = new.and_then(|p| view(p, &self.node, &mut problems));
        let new = new.filter(|_| new_view.is_some());
        let old = self.pods.get(&key).cloned();
        let old_view = old.as_deref().and_then(|p| self.view_of(p));
        // Old and new each against their own candidates: a policy that
        // is no candidate of some labels gets nothing from them.
        let removed = self.contribution_to_candidates(old_view.as_ref());
        let added = self.contribution_to_candidates(new_view.as_ref());
        self.count(removed, false);
        match new {
            Some(p) => self.pods.insert(key.clone(), p.clone()),
            None => self.pods.remove(&key),
        };
        if problems.is_empty() {
            self.pod_problems.remove(&key);
        } else {
            self.pod_problems.insert(key.clone(), problems);
        }
        self.count(added, true);
        self.isolate(&key);
    }

    /// Recomputes which policies isolate the pod `key` (if local).
    fn isolate(&mut self, key: &Key) {
        let now = self.pods.get(key).and_then(|p| {
            let v = self.view_of(p)?;
            if !v.local {
                return None;
            }
            let own = self.by_namespace.get(v.namespace);
            let selecting = |d: Direction| -> Vec<Key> {
                own.into_iter()
                    .flatten()
                    .filter(|(_, c)| contrib::is_target(&c.policy, d, &v))
                    .map(|(k, _)| k.clone())
                    .collect()
            };
            let (ingress, egress) = (selecting(Direction::Ingress), selecting(Direction::Egress));
            let tiers = [
                self.tier_names(&v, Direction::Ingress, !ingress.is_empty()),
                self.tier_names(&v, Direction::Egress, !egress.is_empty()),
            ];
            let iso = Isolated {
                namespace: v.namespace.to_string(),
                name: v.name.to_string(),
                ips: v.ips.clone(),
                ports: v.ports.clone(),
                ingress,
                egress,
                tiers,
            };
            (iso.guarded(Direction::Ingress) || iso.guarded(Direction::Egress)).then_some(iso)
        });
        if self.isolated.get(key) == now.as_ref() {
            return;
        }
        self.touch_pod(key);
        let mut units = BTreeSet::new();
        for iso in self.isolated.get(key).into_iter().chain(now.as_ref()) {
            for d in [Direction::Ingress, Direction::Egress] {
                units.extend(iso.units(d).map(|p| (p, d)));
            }
        }
        for (p, d) in &units {
            self.touch_unit(p, *d);
        }
        if let Some(before) = self.isolated.get(key) {
            let c = self.target_contribution(before, None);
            self.count(c, false);
        }
        if let Some(before) = self.isolated.remove(key) {
            for d in [Direction::Ingress, Direction::Egress] {
                for p in before.units(d) {
                    let unit = (p, d);
                    if let Some(t) = self.targets.get_mut(&unit) {
                        t.remove(key);
                        if t.is_empty() {
                            self.targets.remove(&unit);
                        }
                    }
                }
            }
        }
        if let Some(now) = now {
            for d in [Direction::Ingress, Direction::Egress] {
                for p in now.units(d) {
                    self.targets.entry((p, d)).or_default().insert(key.clone());
                }
            }
            let c = self.target_contribution(&now, None);
            self.count(c, true);
            self.isolated.insert(key.clone(), now);
        }
    }

    fn set_namespace(&mut self, name: &str, labels: Option<BTreeMap<String, String>>) {
        let old = self.namespaces.get(name).cloned();
        if old == labels {
            return;
        }
        // The policies whose namespace selectors answer differently.
        let affected: Vec<Arc<Compiled>> = self
            .by_namespace_labels
            .iter()
            .map(|k| self.compiled(k))
            .filter(|c| {
                namespace_selectors(&c.policy).any(|s| {
                    super::pods::namespace_matches(old.as_ref(), name, s)
                        != super::pods::namespace_matches(labels.as_ref(), name, s)
                })
            })
            .cloned()
            .collect();
        let affected: Vec<&Arc<Compiled>> = affected.iter().collect();
        let pods: Vec<Arc<Pod>> = self
            .pods
            .values()
            .filter(|p| p.metadata.namespace.as_deref().unwrap_or("default") == name)
            .cloned()
            .collect();
        let before: Vec<Contribution> = pods
            .iter()
            .map(|p| self.pod_contribution(p, &affected))
            .collect();
        for c in before {
            self.count(c, false);
        }
        match labels {
            Some(l) => self.namespaces.insert(name.to_string(), l),
            None => self.namespaces.remove(name),
        };
        for p in &pods {
            let c = self.pod_contribution(p, &affected);
            self.count(c, true);
        }
        // The subjects of ClusterNetworkPolicies select by namespace.
        if !self.tiers.is_empty() {
            for k in self.local_pods_in(name) {
                self.isolate(&k);
            }
        }
    }

    fn set_policy(&mut self, key: Key, np: Option<&Arc<NetworkPolicy>>) {
        let mut problems = Vec::new();
        let new = np.and_then(|np| model::read(np, &mut problems));
        if problems.is_empty() {
            self.policy_problems.remove(&key);
        } else {
            self.policy_problems.insert(key.clone(), problems);
        }
        let old = self.policies.get(&key).map(|e| e.compiled.clone());
        if old.as_ref().map(|c| &c.policy) == new.as_ref() {
            return;
        }
        // The local pods of its namespace may be isolated differently (a
        // policy selects pods of its own namespace only): their chains
        // are recorded before the policy changes under them.
        let namespace = old
            .as_ref()
            .map(|c| &c.policy)
            .or(new.as_ref())
            .map(|p| p.namespace.clone());
        let locals = namespace.map_or_else(Vec::new, |ns| self.local_pods_in(&ns));
        for k in &locals {
            self.touch_pod(k);
        }
        for d in [Direction::Ingress, Direction::Egress] {
            self.touch_unit(&key, d);
        }
        let pods: Vec<Arc<Pod>> = self.pods.values().cloned().collect();
        if let Some(old) = &old {
            for p in &pods {
                let c = self.pod_contribution(p, &[old]);
                self.count(c, false);
            }
            self.unindex(&key, &old.policy);
        }
        if let Some(new) = new {
            let new = Arc::new(Compiled::new(new));
            self.index(&key, new.clone());
            for p in &pods {
                let c = self.pod_contribution(p, &[&new]);
                self.count(c, true);
            }
        }
        for k in &locals {
            self.isolate(k);
        }
    }

    /// This node's pods in `namespace`.
    fn local_pods_in(&self, namespace: &str) -> Vec<Key> {
        let node = Some(self.node.as_str());
        self.pods
            .iter()
            .filter(|(_, p)| {
                p.metadata.namespace.as_deref().unwrap_or("default") == namespace
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == node
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Does the unit (policy, direction) have targets in `family`?
    fn active(&self, policy: &Key, d: Direction, family: Family) -> bool {
        self.targets
            .get(&(policy.clone(), d))
            .is_some_and(|t| t.iter().any(|k| self.isolated[k].has(family)))
    }

    fn touch_unit(&mut self, policy: &Key, d: Direction) {
        if let Some(mut j) = self.journal.take() {
            j.unit(self, policy, d);
            self.journal = Some(j);
        }
    }

    fn touch_pod(&mut self, key: &Key) {
        if let Some(mut j) = self.journal.take() {
            j.pod(self, key);
            self.journal = Some(j);
        }
    }
}

//! The ClusterNetworkPolicy tiers in the index. A policy's peers are
//! filed like a NetworkPolicy's (its [`cnp::render::as_policy`] shape, so
//! a pod change re-evaluates only the peers its labels can meet); which
//! policies of each tier apply to a local pod is part of the pod's
//! [`Isolated`] record, recomputed when the pod, its namespace, a
//! NetworkPolicy of its namespace (Baseline steps aside for a pod one
//! selects) or a ClusterNetworkPolicy changes.
//!
//! A ClusterNetworkPolicy is keyed by its kind where a namespace would be
//! ([`tier_key`]; no namespace can be named so), so its units (policy,
//! direction), targets and set owners share the NetworkPolicies' maps.

use std::{collections::BTreeSet, sync::Arc};

use super::{
    super::{
        cnp::{
            self,
            model::{ClusterPolicy, Subject},
            PodTiers, Tiers,
        },
        describe::{self, TierDescription},
        model::Direction,
        pods::{namespace_matches, PodView},
    },
    contrib::{self, Compiled, Contribution},
    find, Isolated, Key, PolicyIndex, Shapes,
};
use crate::{
    cluster::{
        cnp::{ClusterNetworkPolicy, Tier, KIND},
        Snapshot,
    },
    desired::Family,
};

/// The index key of the ClusterNetworkPolicy `name`.
pub(super) fn tier_key(name: &str) -> Key {
    (KIND.to_string(), name.to_string())
}

/// The ClusterNetworkPolicy a key names, if it names one.
pub(super) fn tier_name(key: &Key) -> Option<&str> {
    (key.0 == KIND).then_some(key.1.as_str())
}

/// The ClusterNetworkPolicies of each tier that apply to one local pod in
/// one direction, by name, in evaluation order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct TierNames {
    pub admin: Vec<String>,
    /// Empty when a NetworkPolicy selects the pod in this direction.
    pub baseline: Vec<String>,
}

impl TierNames {
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.baseline.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.admin.iter().chain(&self.baseline).map(|n| tier_key(n))
    }
}

/// A ClusterNetworkPolicy with what is derived from it alone.
pub(super) struct TierEntry {
    pub policy: ClusterPolicy,
    /// Its peers as a NetworkPolicy, with set names hashed once.
    pub compiled: Arc<Compiled>,
    /// Its chain and pod-less sets per (direction, family), for the
    /// directions it has rules in.
    pub shapes: Shapes,
    pub anchors: Vec<(String, Option<String>)>,
    pub description: TierDescription,
}

/// The ClusterNetworkPolicies in evaluation order (tier, priority, name).
pub(super) type TierOrder = BTreeSet<(Tier, u16, String)>;

impl PolicyIndex {
    /// The ClusterNetworkPolicy `name` of `snapshot`.
    pub(super) fn find_tier<'s>(
        snapshot: &'s Snapshot,
        name: &str,
    ) -> Option<&'s Arc<ClusterNetworkPolicy>> {
        find(&snapshot.cluster_network_policies, ("", name), |p| {
            &p.metadata
        })
    }

    pub(super) fn set_cluster_policy(&mut self, name: &str, object: Option<&ClusterNetworkPolicy>) {
        let mut problems = Vec::new();
        let new = object.and_then(|o| cnp::model::read(o, &mut problems));
        if problems.is_empty() {
            self.tier_problems.remove(name);
        } else {
            self.tier_problems.insert(name.to_string(), problems);
        }
        if self.tiers.get(name).map(|e| &e.policy) == new.as_ref() {
            return;
        }
        let key = tier_key(name);
        // The pods it applies to now: their chains are recorded before the
        // policy changes under them (pods it starts to apply to do not
        // name it yet).
        let applied: BTreeSet<Key> = [Direction::Ingress, Direction::Egress]
            .into_iter()
            .filter_map(|d| self.targets.get(&(key.clone(), d)))
            .flatten()
            .cloned()
            .collect();
        for k in &applied {
            self.touch_pod(k);
        }
        for d in [Direction::Ingress, Direction::Egress] {
            self.touch_unit(&key, d);
        }
        let pods: Vec<_> = self.pods.values().cloned().collect();
        // Its ingress targets' named ports follow its compiled form; the
        // targets themselves are re-evaluated below (`isolate`).
        let targets: Vec<Key> = self
            .targets
            .get(&(key.clone(), Direction::Ingress))
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        if let Some(old) = self.tiers.get(name).map(|e| e.compiled.clone()) {
            self.count_targets(name, &targets, false);
            for p in &pods {
                let c = self.pod_contribution(p, &[&old]);
                self.count(c, false);
            }
            self.unindex_tier(name);
        }
        if let Some(new) = new {
            let compiled = self.index_tier(new);
            for p in &pods {
                let c = self.pod_contribution(p, &[&compiled]);
                self.count(c, true);
            }
            self.count_targets(name, &targets, true);
        }
        // Only the pods it applied to and those its subject selects now
        // can name it; every other pod keeps its tiers.
        let subject = self.tiers.get(name).map(|e| e.policy.subject.clone());
        for k in self.local_pods() {
            let selects = || {
                subject
                    .as_ref()
                    .is_some_and(|s| self.subject_selects(s, &k))
            };
            if applied.contains(&k) || selects() {
                self.isolate(&k);
            }
        }
    }

    /// Does `subject` select the pod `key`?
    fn subject_selects(&self, subject: &Subject, key: &Key) -> bool {
        let Some(v) = self.pods.get(key).and_then(|p| self.view_of(p)) else {
            return false;
        };
        let labels = self.namespaces.get(v.namespace);
        cnp::subject_selects(subject, &v, |s| namespace_matches(labels, v.namespace, s))
    }

    fn index_tier(&mut self, policy: ClusterPolicy) -> Arc<Compiled> {
        let key = tier_key(&policy.name);
        let compiled = Arc::new(Compiled::new(cnp::render::as_policy(&policy)));
        let empty = super::super::pods::Cluster::empty();
        let mut shapes = Shapes::default();
        for d in [Direction::Ingress, Direction::Egress] {
            if policy.rules(d).is_empty() {
                continue;
            }
            for family in [Family::V4, Family::V6] {
                let shape = cnp::render::policy_chain(&empty, &policy, d, family, &[]);
                shapes.insert(d, family, shape);
            }
        }
        let anchors = self.file(&key, &compiled);
        let (tier, priority) = (policy.tier, policy.priority);
        self.tier_order
            .insert((tier, priority, policy.name.clone()));
        let entry = TierEntry {
            description: describe::cluster_policy(&policy),
            compiled: compiled.clone(),
            shapes,
            anchors,
            policy,
        };
        self.tiers.insert(key.1, entry);
        compiled
    }

    fn unindex_tier(&mut self, name: &str) {
        let Some(entry) = self.tiers.remove(name) else {
            return;
        };
        let p = &entry.policy;
        self.tier_order
            .remove(&(p.tier, p.priority, p.name.clone()));
        self.unfile(&tier_key(name), &entry.anchors, &entry.compiled);
    }

    /// The keys of this node's pods.
    pub(super) fn local_pods(&self) -> Vec<Key> {
        self.pods
            .iter()
            .filter(|(_, p)| self.view_of(p).is_some_and(|v| v.local))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// The ClusterNetworkPolicies that apply to the local `pod` in `d`;
    /// `np_selects`: a NetworkPolicy selects it in `d`.
    pub(super) fn tier_names(&self, pod: &PodView, d: Direction, np_selects: bool) -> TierNames {
        let labels = self.namespaces.get(pod.namespace);
        let mut out = TierNames::default();
        for (tier, _, name) in &self.tier_order {
            let policy = &self.tiers[name].policy;
            if policy.rules(d).is_empty() || (*tier == Tier::Baseline && np_selects) {
                continue;
            }
            let selects = cnp::subject_selects(&policy.subject, pod, |s| {
                namespace_matches(labels, pod.namespace, s)
            });
            if selects {
                match tier {
                    Tier::Admin => out.admin.push(name.clone()),
                    Tier::Baseline => out.baseline.push(name.clone()),
                }
            }
        }
        out
    }

    /// A local pod's tiers as the chain renderer takes them.
    pub(super) fn pod_tiers(&self, iso: &Isolated) -> PodTiers<'_> {
        let policies = |names: &[String]| {
            names
                .iter()
                .filter_map(|n| self.tiers.get(n).map(|e| &e.policy))
                .collect()
        };
        let tiers = |t: &TierNames| Tiers {
            admin: policies(&t.admin),
            baseline: policies(&t.baseline),
        };
        PodTiers {
            ingress: tiers(iso.tiers(Direction::Ingress)),
            egress: tiers(iso.tiers(Direction::Egress)),
        }
    }

    /// The shapes of the policy (of either kind) `key` names.
    pub(super) fn shapes(&self, key: &Key) -> Option<&Shapes> {
        match tier_name(key) {
            Some(name) => self.tiers.get(name).map(|e| &e.shapes),
            None => self.policies.get(key).map(|e| &e.shapes),
        }
    }

    /// The compiled form of the policy (of either kind) `key` names.
    pub(super) fn compiled(&self, key: &Key) -> &Arc<Compiled> {
        match tier_name(key) {
            Some(name) => &self.tiers[name].compiled,
            None => &self.policies[key].compiled,
        }
    }

    /// The named ingress ports the local pod `iso` puts into the sets of
    /// the ClusterNetworkPolicies that apply to it (`only`: of that
    /// policy alone). Counted with the pod-derived members, so a pod that
    /// joins or leaves a policy moves its own members, never the others'.
    pub(super) fn target_contribution(&self, iso: &Isolated, only: Option<&str>) -> Contribution {
        let mut out = Contribution::new();
        let view = iso.view();
        let names = iso.tiers(Direction::Ingress);
        for name in names.admin.iter().chain(&names.baseline) {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            if let Some(entry) = self.tiers.get(name) {
                contrib::target_members(&entry.compiled, &view, &mut out);
            }
        }
        out
    }

    /// Counts (`add`) or uncounts the named ingress ports of the targets
    /// of the ClusterNetworkPolicy `name` for its compiled form now.
    fn count_targets(&mut self, name: &str, targets: &[Key], add: bool) {
        for k in targets {
            let Some(iso) = self.isolated.get(k) else {
                continue;
            };
            let c = self.target_contribution(iso, Some(name));
            self.count(c, add);
        }
    }

    /// The ClusterNetworkPolicies in words, in evaluation order.
    pub(super) fn tier_descriptions(&self) -> Vec<TierDescription> {
        self.tier_order
            .iter()
            .map(|(_, _, name)| self.tiers[name].description.clone())
            .collect()
    }

    /// The keys of the ClusterNetworkPolicies in evaluation order.
    pub(super) fn tier_keys(&self) -> Vec<Key> {
        self.tier_order
            .iter()
            .map(|(_, _, name)| tier_key(name))
            .collect()
    }
}

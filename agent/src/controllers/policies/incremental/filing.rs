//! Where a policy is filed so that the pods, namespaces and sets that can
//! touch it find it: by namespace, by the labels its peer selectors
//! require (anchors), among the policies every pod must be checked
//! against, and its sets by name; and how it is taken out again.

use std::sync::Arc;

use super::{
    super::{
        describe,
        model::{self, Direction, Policy},
        selector::Selector,
    },
    contrib::{self, Compiled},
    shapes::{self, Shapes},
    Key, PolicyEntry, PolicyIndex,
};
use crate::desired::Family;

impl PolicyIndex {
    pub(super) fn index(&mut self, key: &Key, compiled: Arc<Compiled>) {
        let policy = &compiled.policy;
        let mut shapes = Shapes::default();
        for d in [Direction::Ingress, Direction::Egress] {
            for family in [Family::V4, Family::V6] {
                if let Some(chain) = shapes::render_pod_less(policy, d, family) {
                    shapes.insert(d, family, chain);
                }
            }
        }
        let anchors = self.file(key, &compiled);
        self.by_namespace
            .entry(policy.namespace.clone())
            .or_default()
            .insert(key.clone(), compiled.clone());
        let entry = PolicyEntry {
            description: describe::policy(policy),
            compiled,
            shapes,
            anchors,
        };
        self.policies.insert(key.clone(), entry);
    }

    /// Files a policy of either kind where pods find it, and its sets
    /// under it; returns its anchors.
    pub(super) fn file(
        &mut self,
        key: &Key,
        compiled: &Arc<Compiled>,
    ) -> Vec<(String, Option<String>)> {
        for (d, family, set) in compiled.set_names() {
            self.set_units.insert(set.clone(), (key.clone(), d, family));
        }
        let policy = &compiled.policy;
        let anchors = contrib::anchors(policy);
        for (label, value) in &anchors {
            let by_label = self.by_anchor.entry(label.clone()).or_default();
            let listed = match value {
                Some(v) => by_label.by_value.entry(v.clone()).or_default(),
                None => &mut by_label.any_value,
            };
            listed.insert(key.clone(), compiled.clone());
        }
        if contrib::needs_every_pod(policy) {
            self.every_pod.insert(key.clone(), compiled.clone());
        }
        if contrib::selects_namespaces(policy) {
            self.by_namespace_labels.insert(key.clone());
        }
        anchors
    }

    pub(super) fn unindex(&mut self, key: &Key, policy: &Policy) {
        let Some(entry) = self.policies.remove(key) else {
            return;
        };
        if let Some(ps) = self.by_namespace.get_mut(&policy.namespace) {
            ps.remove(key);
            if ps.is_empty() {
                self.by_namespace.remove(&policy.namespace);
            }
        }
        self.unfile(key, &entry.anchors, &entry.compiled);
    }

    /// Undoes [`Self::file`].
    pub(super) fn unfile(
        &mut self,
        key: &Key,
        anchors: &[(String, Option<String>)],
        compiled: &Compiled,
    ) {
        for (label, value) in anchors {
            let Some(by_label) = self.by_anchor.get_mut(label) else {
                continue;
            };
            match value {
                Some(v) => {
                    if let Some(ps) = by_label.by_value.get_mut(v) {
                        ps.remove(key);
                        if ps.is_empty() {
                            by_label.by_value.remove(v);
                        }
                    }
                }
                None => {
                    by_label.any_value.remove(key);
                }
            }
            if by_label.is_empty() {
                self.by_anchor.remove(label);
            }
        }
        self.every_pod.remove(key);
        self.by_namespace_labels.remove(key);
        // Its sets' names are its own (hashed from the policy's name).
        for (_, _, set) in compiled.set_names() {
            self.members.remove(set);
            self.set_units.remove(set);
        }
    }
}

pub(super) fn namespace_selectors(p: &Policy) -> impl Iterator<Item = &Selector> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| p.rules(d).into_iter().flatten())
        .flat_map(|r| r.peers.iter().flatten())
        .filter_map(|peer| match peer {
            model::Peer::Pods {
                namespaces: model::Namespaces::Matching(s),
                ..
            } => Some(s),
            _ => None,
        })
}

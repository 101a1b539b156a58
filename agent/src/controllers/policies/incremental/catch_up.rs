//! What differs between the cluster the index holds and a snapshot, found
//! object by object. A full sync brings the index up to date with it
//! instead of rebuilding it, and it catches whatever the change feed did
//! not name (a relist hides the deletes and edits between two watches).

use std::sync::Arc;

use super::{find, key_of, Key, PolicyChanges, PolicyIndex};
use crate::{cluster::Snapshot, controllers::policies::pods::view};

impl PolicyIndex {
    /// The objects of `snapshot` that differ from what the index holds,
    /// and the ones it holds that `snapshot` no longer has. Pods are
    /// compared (by pointer first: a source hands out the same `Arc` for
    /// an object that did not change); every namespace and policy (of
    /// both kinds) is named, since setting one that did not change is a
    /// comparison.
    pub fn changes_since(&self, snapshot: &Snapshot) -> PolicyChanges {
        let mut changes = PolicyChanges::default();
        for pod in &snapshot.pods {
            let (ns, name) = key_of(&pod.metadata);
            let key: Key = (ns.into(), name.into());
            let same = match self.pods.get(&key) {
                Some(held) => Arc::ptr_eq(held, pod) || **held == **pod,
                None => self.still_not_actionable(&key, pod),
            };
            if !same {
                changes.pods.insert(key);
            }
        }
        let gone = |key: &&Key| find(&snapshot.pods, (&key.0, &key.1), |p| &p.metadata).is_none();
        changes.pods.extend(self.pods.keys().filter(gone).cloned());
        changes
            .pods
            .extend(self.pod_problems.keys().filter(gone).cloned());
        changes.namespaces.extend(
            snapshot
                .namespaces
                .iter()
                .filter_map(|ns| ns.metadata.name.clone()),
        );
        changes.namespaces.extend(self.namespaces.keys().cloned());
        changes
            .policies
            .extend(snapshot.network_policies.iter().map(|np| {
                let (ns, name) = key_of(&np.metadata);
                (ns.to_string(), name.to_string())
            }));
        changes.policies.extend(self.policies.keys().cloned());
        changes
            .policies
            .extend(self.policy_problems.keys().cloned());
        changes.cluster_policies.extend(
            snapshot
                .cluster_network_policies
                .iter()
                .map(|p| key_of(&p.metadata).1.to_string()),
        );
        changes.cluster_policies.extend(self.tiers.keys().cloned());
        changes
            .cluster_policies
            .extend(self.tier_problems.keys().cloned());
        changes
    }

    /// A pod the index does not hold (not actionable when last set) is
    /// still not actionable, with the same problems.
    fn still_not_actionable(&self, key: &Key, pod: &crate::cluster::compact::Pod) -> bool {
        let mut problems = Vec::new();
        view(pod, &self.node, &mut problems).is_none()
            && self.pod_problems.get(key).map_or(&[][..], Vec::as_slice) == problems.as_slice()
    }
}

//! ClusterNetworkPolicy: the cluster administrator's two tiers around the
//! NetworkPolicies. Per direction a packet of a selected local pod meets,
//! in its pod chain:
//!
//! 1. the Admin tier: each policy's chain (`IPW-CNP-<hash>`) by priority,
//!    then name; in each, rules in written order. Every rule line first
//!    checks that no verdict is set, so the first rule that matches in the
//!    tier decides: Accept sets the verdict and the NetworkPolicy allow
//!    mark (nothing later can deny it), Deny is dropped (no reject, as the
//!    API requires), Pass only sets the verdict (the rest of the tier is
//!    skipped);
//! 2. the NetworkPolicies that select the pod, which decide for it;
//! 3. only for a pod no NetworkPolicy selects in that direction: the
//!    Baseline tier, the same way;
//! 4. whatever is left is allowed.
//!
//! An egress Accept ends the sender's chain; the receiver's ingress (its
//! own pod chain) still applies.

pub mod model;
pub mod render;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use super::{
    model::Direction,
    pods::{Cluster, PodView},
    selector::Selector,
};
use crate::{
    cluster::{cnp::Tier, Snapshot},
    desired::Problem,
};
use model::{ClusterPolicy, Subject};

/// The policies of each tier that select one pod in one direction, in
/// evaluation order.
#[derive(Clone, Debug, Default)]
pub struct Tiers<'p> {
    pub admin: Vec<&'p ClusterPolicy>,
    /// Empty when a NetworkPolicy selects the pod in this direction.
    pub baseline: Vec<&'p ClusterPolicy>,
}

impl Tiers<'_> {
    pub fn is_empty(&self) -> bool {
        self.admin.is_empty() && self.baseline.is_empty()
    }
}

/// A pod's tiers in both directions.
#[derive(Clone, Debug, Default)]
pub struct PodTiers<'p> {
    pub ingress: Tiers<'p>,
    pub egress: Tiers<'p>,
}

impl<'p> PodTiers<'p> {
    pub fn get(&self, d: Direction) -> &Tiers<'p> {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ingress.is_empty() && self.egress.is_empty()
    }
}

/// Every readable ClusterNetworkPolicy of `snapshot`, in evaluation order
/// (tier, priority, name).
pub fn read_all(snapshot: &Snapshot, problems: &mut Vec<Problem>) -> Vec<ClusterPolicy> {
    let mut out: Vec<ClusterPolicy> = snapshot
        .cluster_network_policies
        .iter()
        .filter_map(|p| model::read(p, problems))
        .collect();
    out.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    out
}

/// Does `policy` apply to `pod`?
pub fn selects(cluster: &Cluster, policy: &ClusterPolicy, pod: &PodView) -> bool {
    subject_selects(&policy.subject, pod, |s| {
        cluster.namespace_matches(pod.namespace, s)
    })
}

/// Does `subject` select `pod`, whose namespace `namespace_matches` a
/// selector or not?
pub fn subject_selects(
    subject: &Subject,
    pod: &PodView,
    namespace_matches: impl Fn(&Selector) -> bool,
) -> bool {
    match subject {
        Subject::Namespaces(ns) => namespace_matches(ns),
        Subject::Pods { namespaces, pods } => {
            pods.matches(pod.labels) && namespace_matches(namespaces)
        }
    }
}

/// The tiers of `pod`; `np_selects(d)` says whether a NetworkPolicy
/// selects it in direction `d` (then its Baseline tier is never reached).
pub fn tiers_of<'p>(
    cluster: &Cluster,
    policies: &'p [ClusterPolicy],
    pod: &PodView,
    np_selects: impl Fn(Direction) -> bool,
) -> PodTiers<'p> {
    let selecting: Vec<&ClusterPolicy> = policies
        .iter()
        .filter(|p| selects(cluster, p, pod))
        .collect();
    let tiers = |d: Direction| {
        let of = |tier: Tier| -> Vec<&'p ClusterPolicy> {
            selecting
                .iter()
                .copied()
                .filter(|p| p.tier == tier && !p.rules(d).is_empty())
                .collect()
        };
        Tiers {
            admin: of(Tier::Admin),
            baseline: if np_selects(d) {
                Vec::new()
            } else {
                of(Tier::Baseline)
            },
        }
    };
    PodTiers {
        ingress: tiers(Direction::Ingress),
        egress: tiers(Direction::Egress),
    }
}

/// The local pods each policy applies to, per direction, by the policy's
/// position in `policies`.
pub fn targets<'p, 'a>(
    policies: &[ClusterPolicy],
    pods: impl Iterator<Item = (&'p PodView<'a>, &'p PodTiers<'p>)>,
) -> BTreeMap<(usize, Direction), Vec<&'p PodView<'a>>> {
    let position = |p: &ClusterPolicy| {
        policies
            .iter()
            .position(|q| std::ptr::eq(q, p))
            .expect("a policy of the list")
    };
    let mut out: BTreeMap<(usize, Direction), Vec<&PodView>> = BTreeMap::new();
    for (pod, tiers) in pods {
        for d in [Direction::Ingress, Direction::Egress] {
            let t = tiers.get(d);
            for p in t.admin.iter().chain(&t.baseline) {
                out.entry((position(p), d)).or_default().push(pod);
            }
        }
    }
    out
}

//! A policy's pod-less sets per (direction, family), kept; its chains are
//! rendered again when asked for. Only the units with local targets have
//! a chain in the state, and the rules' texts of every unit were the
//! index's largest part (BENCHMARKS.md, "Where the agent's memory goes").

use super::{
    super::{
        cnp,
        model::{Direction, Policy},
        pods::Cluster,
        rules::{PolicyChain, PolicyCtx},
    },
    tiers::tier_name,
    Key, PolicyIndex,
};
use crate::desired::{Family, SetSpec};

/// A unit's slot: (ingress, egress) x (v4, v6).
fn slot(d: Direction, family: Family) -> usize {
    2 * usize::from(d == Direction::Egress) + usize::from(family == Family::V6)
}

/// The pod-less sets of a policy's chain per (direction, family), for the
/// directions it has rules in.
#[derive(Default)]
pub(super) struct Shapes([Option<Box<[SetSpec]>>; 4]);

impl Shapes {
    pub fn insert(&mut self, d: Direction, family: Family, rendered: PolicyChain) {
        self.0[slot(d, family)] = Some(rendered.sets.into_boxed_slice());
    }

    pub fn get(&self, d: Direction, family: Family) -> Option<&[SetSpec]> {
        self.0[slot(d, family)].as_deref()
    }
}

impl PolicyIndex {
    /// The chain and sets of the policy (of either kind) `key` in `d` and
    /// `family`, rendered without pods, if it has rules in `d`.
    pub(super) fn render_unit(
        &self,
        key: &Key,
        d: Direction,
        family: Family,
    ) -> Option<PolicyChain> {
        if let Some(name) = tier_name(key) {
            let policy = &self.tiers.get(name)?.policy;
            return (!policy.rules(d).is_empty())
                .then(|| cnp::render::policy_chain(&Cluster::empty(), policy, d, family, &[]));
        }
        render_pod_less(&self.policies.get(key)?.compiled.policy, d, family)
    }
}

/// A NetworkPolicy's chain and sets in `d` and `family`, rendered without
/// pods, if it has rules in `d`.
pub(super) fn render_pod_less(
    policy: &Policy,
    d: Direction,
    family: Family,
) -> Option<PolicyChain> {
    let ctx = PolicyCtx {
        cluster: &Cluster::empty(),
        policy,
        direction: d,
        family,
        local_targets: &[],
    };
    policy.rules(d).map(|rules| ctx.render(rules))
}

//! Chains rendered from the index, and the whole state put together in
//! the order [`super::super::desired`] gives it.

use super::{
    super::{
        chains::{self, IsolatedPod, TopChains, TopEntry},
        describe::Isolation,
        filter_plan,
        model::{Direction, Policy},
        names,
        pods::PodView,
        PolicyState,
    },
    Isolated, Key, PolicyIndex,
};
use crate::desired::{Chain, Family};

impl PolicyIndex {
    fn policies_of(&self, keys: &[Key]) -> Vec<&Policy> {
        keys.iter()
            .map(|k| &self.policies[k].compiled.policy)
            .collect()
    }

    fn render_pod_chain(&self, iso: &Isolated, family: Family) -> Chain {
        let view = PodView {
            namespace: &iso.namespace,
            name: &iso.name,
            labels: None,
            ips: iso.ips.clone(),
            local: true,
            ports: Vec::new(),
        };
        let pod = IsolatedPod {
            pod: &view,
            ingress: self.policies_of(&iso.ingress),
            egress: self.policies_of(&iso.egress),
            tiers: self.pod_tiers(iso),
        };
        chains::pod_chain(&pod, family, &self.opts)
    }

    /// The firewall chain of the local pod `key` in `family`, if isolated.
    pub(super) fn pod_chain(&self, key: &Key, family: Family) -> Option<Chain> {
        let iso = self.isolated.get(key).filter(|i| i.has(family))?;
        Some(self.render_pod_chain(iso, family))
    }

    /// IPWARDEN-INPUT, -FORWARD, -OUTPUT, the dispatch chains and the
    /// guarded-pod sets of `family`.
    pub(super) fn top_chains(&self, family: Family) -> TopChains {
        let entries = self.isolated.values().map(|i| TopEntry {
            chain: names::pod_chain(&i.namespace, &i.name),
            ips: &i.ips,
            ingress: i.guarded(Direction::Ingress),
            egress: i.guarded(Direction::Egress),
        });
        chains::top_chains_of(entries, family, &self.opts)
    }

    /// The whole policy state, as `desired` computes it from the cluster
    /// the index holds.
    pub fn state(&self) -> PolicyState {
        let mut state = self.summary();
        for family in [Family::V4, Family::V6] {
            let top = self.top_chains(family);
            let mut chains = top.chains;
            state.sets.extend(top.sets);
            chains.extend(
                self.isolated
                    .values()
                    .filter(|i| i.has(family))
                    .map(|i| self.render_pod_chain(i, family)),
            );
            // NetworkPolicies by key, then the tiers in evaluation order.
            let tier_keys = self.tier_keys();
            for key in self.policies.keys().chain(&tier_keys) {
                for d in [Direction::Ingress, Direction::Egress] {
                    let Some(unit) = self.unit_view(key, d, family) else {
                        continue;
                    };
                    chains.push(unit.chain);
                    state
                        .sets
                        .extend(unit.sets.iter().map(|s| self.set_spec(s)));
                }
            }
            state.iptables.push(filter_plan(family, chains));
        }
        state.sets.sort_by(|a, b| a.name.cmp(&b.name));
        state.sets.dedup_by(|a, b| a.name == b.name);
        state
    }

    /// Problems, isolated pods and policies in words: the state without
    /// its sets and chains (what `ipwarden explain` and the API show).
    pub fn summary(&self) -> PolicyState {
        let names = |keys: &[Key]| {
            keys.iter()
                .map(|k| {
                    let p = &self.policies[k].compiled.policy;
                    format!("{}/{}", p.namespace, p.name)
                })
                .collect()
        };
        PolicyState {
            problems: self
                .tier_problems
                .values()
                .chain(self.pod_problems.values())
                .chain(self.policy_problems.values())
                .flatten()
                .cloned()
                .collect(),
            isolated: self
                .isolated
                .values()
                .map(|i| Isolation {
                    pod: format!("{}/{}", i.namespace, i.name),
                    ips: i.ips.clone(),
                    ingress: names(&i.ingress),
                    egress: names(&i.egress),
                    admin_ingress: i.tiers(Direction::Ingress).admin.clone(),
                    admin_egress: i.tiers(Direction::Egress).admin.clone(),
                    baseline_ingress: i.tiers(Direction::Ingress).baseline.clone(),
                    baseline_egress: i.tiers(Direction::Egress).baseline.clone(),
                })
                .collect(),
            policies: self
                .policies
                .values()
                .map(|e| e.description.clone())
                .collect(),
            cluster_policies: self.tier_descriptions(),
            ..PolicyState::default()
        }
    }
}

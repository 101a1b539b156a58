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
use crate::desired::{Chain, Family, SetSpec, TablePlan};

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

    fn top_entries(&self) -> impl Iterator<Item = TopEntry<'_>> {
        self.isolated.values().map(|i| TopEntry {
            chain: names::pod_chain(&i.namespace, &i.name),
            ips: &i.ips,
            ingress: i.guarded(Direction::Ingress),
            egress: i.guarded(Direction::Egress),
        })
    }

    /// IPWARDEN-INPUT, -FORWARD, -OUTPUT, the dispatch chains and the
    /// guarded-pod sets of `family`.
    pub(super) fn top_chains(&self, family: Family) -> TopChains {
        chains::top_chains_of(self.top_entries(), family, &self.opts)
    }

    /// The whole policy state, as `desired` computes it from the cluster
    /// the index holds.
    pub fn state(&self) -> PolicyState {
        PolicyState {
            sets: self.sets(),
            iptables: self.table_plans(),
            ..self.summary()
        }
    }

    /// The state's filter tables only: a full sync renders them after
    /// its sets are written and dropped, so the two are never held at
    /// once.
    pub fn table_plans(&self) -> Vec<TablePlan> {
        [Family::V4, Family::V6]
            .into_iter()
            .map(|family| filter_plan(family, self.chains(family)))
            .collect()
    }

    /// The state's sets only, with the summary: what a no-op full sync
    /// needs when the tables are known to be as the last apply left them
    /// (rendering the chains is most of [`Self::state`]).
    pub fn state_without_chains(&self) -> PolicyState {
        PolicyState {
            sets: self.sets(),
            ..self.summary()
        }
    }

    /// Every policy set with its members, by name.
    fn sets(&self) -> Vec<SetSpec> {
        let mut sets = Vec::new();
        let tier_keys = self.tier_keys();
        for family in [Family::V4, Family::V6] {
            for key in self.policies.keys().chain(&tier_keys) {
                for d in [Direction::Ingress, Direction::Egress] {
                    let Some(shape) = self.shapes(key).and_then(|s| s.get(d, family)) else {
                        continue;
                    };
                    if self.active(key, d, family) {
                        sets.extend(shape.iter().map(|s| self.set_spec(s)));
                    }
                }
            }
        }
        for family in [Family::V4, Family::V6] {
            sets.extend(chains::guarded_sets_of(self.top_entries(), family));
        }
        sets.sort_by(|a, b| a.name.cmp(&b.name));
        sets.dedup_by(|a, b| a.name == b.name);
        sets
    }

    /// The filter chains of `family`: the top chains, the pod chains,
    /// the policy chains (NetworkPolicies by key, then the tiers in
    /// evaluation order).
    fn chains(&self, family: Family) -> Vec<Chain> {
        let mut chains = self.top_chains(family).chains;
        chains.extend(
            self.isolated
                .values()
                .filter(|i| i.has(family))
                .map(|i| self.render_pod_chain(i, family)),
        );
        let tier_keys = self.tier_keys();
        for key in self.policies.keys().chain(&tier_keys) {
            for d in [Direction::Ingress, Direction::Egress] {
                if !self.active(key, d, family) {
                    continue;
                }
                if let Some(unit) = self.render_unit(key, d, family) {
                    chains.push(unit.chain);
                }
            }
        }
        chains
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

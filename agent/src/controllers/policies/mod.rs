//! The NetworkPolicy controller: snapshot -> desired policy chains and
//! sets. Pure, like the service controller: same snapshot, same result.
//!
//! Only pods of this node get firewall chains; the sets hold the addresses
//! of every selected peer pod in the cluster. Set and chain names are
//! hashes of what identifies them (see [`names`]), so a pod that starts or
//! stops matching a selector is an ipset add or del, never a chain rewrite.

pub mod chains;
pub mod cnp;
pub mod describe;
mod dispatch;
pub mod incremental;
pub mod model;
pub mod names;
pub mod pods;
pub mod rules;
pub mod selector;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::{
    cluster::Snapshot,
    desired::{Chain, Family, Jump, Ownership, Problem, SetSpec, Table, TablePlan},
};

use chains::IsolatedPod;
use model::{Direction, Policy};
use pods::{Cluster, PodView};
use rules::PolicyCtx;

/// Settings of the policy controller (kube-router's flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// NFLOG group of denied packets (`tcpdump -i nflog:100`).
    pub nflog_group: u16,
    /// ClusterIP and external IP ranges: traffic to them is left to the
    /// service firewall in INPUT and checked after IPVS instead.
    pub service_ranges: Vec<IpNet>,
    pub node_port_range: (u16, u16),
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nflog_group: 100,
            service_ranges: vec!["10.96.0.0/12".parse().expect("valid")],
            node_port_range: (30000, 32767),
        }
    }
}

/// What the policy controller wants programmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyState {
    /// Every `IPW-SRC-*` / `IPW-DST-*` set, the guarded-pod sets of the
    /// top chains, and their `inet6:` twins, by name.
    pub sets: Vec<SetSpec>,
    /// The filter table of each family.
    pub iptables: Vec<TablePlan>,
    pub problems: Vec<Problem>,
    /// This node's isolated pods and what isolates them (for explain).
    pub isolated: Vec<describe::Isolation>,
    /// Every policy read, in words (for explain).
    pub policies: Vec<describe::PolicyDescription>,
    /// Every ClusterNetworkPolicy read, in evaluation order, in words.
    pub cluster_policies: Vec<describe::TierDescription>,
}

impl PolicyState {
    /// This node's pods whose egress a policy restricts, every address:
    /// the sources the tc program must never mark (their packets to the
    /// node's own addresses must meet their chain in INPUT). The one
    /// place that says which local pods are egress-isolated for the eBPF
    /// data plane; another isolating kind adds its pods here.
    pub fn egress_restricted_sources(&self) -> BTreeSet<IpAddr> {
        self.isolated
            .iter()
            .filter(|i| {
                !i.egress.is_empty() || !i.admin_egress.is_empty() || !i.baseline_egress.is_empty()
            })
            .flat_map(|i| i.ips.iter().copied())
            .collect()
    }

    /// The state without its sets and chains, as a partial sync returns it
    /// ([`incremental::PolicyIndex::summary`]): what `/state` and explain
    /// read. A full sync's whole state is about 15 MiB at 5k pods and 1k
    /// policies, and the kernel and the index already hold it.
    pub fn into_summary(self) -> Self {
        Self {
            sets: Vec::new(),
            iptables: Vec::new(),
            ..self
        }
    }
}

/// The desired policy state of `snapshot`.
pub fn desired(snapshot: &Snapshot, opts: &Options) -> PolicyState {
    let mut problems = Vec::new();
    let cluster_policies = cnp::read_all(snapshot, &mut problems);
    let cluster = Cluster::new(snapshot, &mut problems);
    let mut policies: Vec<Policy> = snapshot
        .network_policies
        .iter()
        .filter_map(|np| model::read(np, &mut problems))
        .collect();
    // Policy order (namespace, name), whatever order the snapshot holds.
    policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let isolated = isolated_pods(&cluster, &policies, &cluster_policies);
    let tier_targets = cnp::targets(
        &cluster_policies,
        isolated.iter().map(|p| (p.pod, &p.tiers)),
    );
    // The local pods each policy isolates, by (policy address, direction),
    // in snapshot order: one pass instead of a scan of every isolated pod
    // per policy.
    let mut targets: BTreeMap<(usize, Direction), Vec<&PodView>> = BTreeMap::new();
    for p in &isolated {
        for d in [Direction::Ingress, Direction::Egress] {
            for q in p.policies(d) {
                let key = (std::ptr::from_ref::<Policy>(q) as usize, d);
                targets.entry(key).or_default().push(p.pod);
            }
        }
    }
    let mut state = PolicyState {
        problems,
        isolated: isolated.iter().map(describe::isolation).collect(),
        policies: policies.iter().map(describe::policy).collect(),
        cluster_policies: cluster_policies
            .iter()
            .map(describe::cluster_policy)
            .collect(),
        ..PolicyState::default()
    };
    for family in [Family::V4, Family::V6] {
        let top = chains::top_chains(&isolated, family, opts);
        let mut chains = top.chains;
        state.sets.extend(top.sets);
        chains.extend(
            isolated
                .iter()
                .filter(|p| p.ips(family).next().is_some())
                .map(|p| chains::pod_chain(p, family, opts)),
        );
        for policy in &policies {
            for d in [Direction::Ingress, Direction::Egress] {
                let Some(rules) = policy.rules(d) else {
                    continue;
                };
                let key = (std::ptr::from_ref(policy) as usize, d);
                let local_targets: Vec<&PodView> = targets
                    .get(&key)
                    .into_iter()
                    .flatten()
                    .copied()
                    .filter(|p| p.ips.iter().any(|ip| Family::of(ip) == family))
                    .collect();
                if local_targets.is_empty() {
                    continue;
                }
                let ctx = PolicyCtx {
                    cluster: &cluster,
                    policy,
                    direction: d,
                    family,
                    local_targets: &local_targets,
                };
                let rendered = ctx.render(rules);
                chains.push(rendered.chain);
                state.sets.extend(rendered.sets);
            }
        }
        for ((at, d), pods) in &tier_targets {
            let local: Vec<&PodView> = pods
                .iter()
                .copied()
                .filter(|p| p.ips.iter().any(|ip| Family::of(ip) == family))
                .collect();
            if local.is_empty() {
                continue;
            }
            let policy = &cluster_policies[*at];
            let rendered = cnp::render::policy_chain(&cluster, policy, *d, family, &local);
            chains.push(rendered.chain);
            state.sets.extend(rendered.sets);
        }
        state.iptables.push(filter_plan(family, chains));
    }
    state.sets.sort_by(|a, b| a.name.cmp(&b.name));
    state.sets.dedup_by(|a, b| a.name == b.name);
    state
}

/// This node's pods that at least one policy isolates, in snapshot order.
fn isolated_pods<'p, 'a>(
    cluster: &'p Cluster<'a>,
    policies: &'p [Policy],
    cluster_policies: &'p [cnp::model::ClusterPolicy],
) -> Vec<IsolatedPod<'p, 'a>> {
    // A policy selects pods of its own namespace only.
    let mut by_namespace: BTreeMap<&str, Vec<&Policy>> = BTreeMap::new();
    for p in policies {
        by_namespace
            .entry(p.namespace.as_str())
            .or_default()
            .push(p);
    }
    let mut out = Vec::new();
    for pod in cluster.pods.iter().filter(|p| p.local) {
        let candidates = by_namespace
            .get(pod.namespace)
            .map_or(&[][..], Vec::as_slice);
        let selecting = |d: Direction| -> Vec<&Policy> {
            candidates
                .iter()
                .copied()
                .filter(|p| p.rules(d).is_some())
                .filter(|p| p.pod_selector.matches(pod.labels))
                .collect()
        };
        let (ingress, egress) = (selecting(Direction::Ingress), selecting(Direction::Egress));
        let tiers = cnp::tiers_of(cluster, cluster_policies, pod, |d| match d {
            Direction::Ingress => !ingress.is_empty(),
            Direction::Egress => !egress.is_empty(),
        });
        if !ingress.is_empty() || !egress.is_empty() || !tiers.is_empty() {
            out.push(IsolatedPod {
                pod,
                ingress,
                egress,
                tiers,
            });
        }
    }
    out
}

pub(super) fn filter_plan(family: Family, chains: Vec<Chain>) -> TablePlan {
    let jump = |from: &str, to: &str| {
        Jump::new(
            from,
            format!("-m comment --comment \"{}\" -j {to}", names::OWNER_TAG),
        )
    };
    TablePlan {
        family,
        table: Table::Filter,
        owns: vec![
            Ownership::Names(vec![
                names::CHAIN_INPUT.into(),
                names::CHAIN_FORWARD.into(),
                names::CHAIN_OUTPUT.into(),
            ]),
            Ownership::Prefix(names::PREFIX.into()),
        ],
        tag: names::OWNER_TAG.into(),
        chains,
        jumps: vec![
            jump("INPUT", names::CHAIN_INPUT),
            jump("FORWARD", names::CHAIN_FORWARD),
            jump("OUTPUT", names::CHAIN_OUTPUT),
        ],
    }
}

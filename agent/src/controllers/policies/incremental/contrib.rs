//! What one pod puts into the sets of one policy: the same members
//! `rules.rs` computes for the whole cluster, for a single pod, so a pod
//! change is the difference of two small lists.

use std::{collections::BTreeMap, net::IpAddr, sync::Arc};

use super::super::{
    model::{Direction, Namespaces, Peer, Policy, PortMatch, Rule},
    pods::{namespace_matches, PodView},
    rules::set_name,
};
use crate::desired::{Family, Member};

/// Namespace labels by name (with the name label).
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// (set name, member) pairs.
pub type Contribution = Vec<(Arc<str>, Member)>;

const FAMILIES: [Family; 2] = [Family::V4, Family::V6];

/// A set name in each family (v4, v6).
type Names = [Arc<str>; 2];

/// The names of one rule's pod-derived sets.
struct RuleNames {
    /// The set of its pod peers, if it has any.
    pods: Option<Names>,
    /// The set of each named port, by position in `ports`.
    ports: Vec<Option<Names>>,
}

/// A policy with the names of its pod-derived sets hashed once: every
/// pod a rule matches names them again (a SHA-256 each).
pub struct Compiled {
    pub policy: Policy,
    /// Per direction (ingress, egress), per rule in order.
    names: [Vec<RuleNames>; 2],
}

impl Compiled {
    pub fn new(policy: Policy) -> Self {
        let names = [Direction::Ingress, Direction::Egress].map(|d| {
            let rules = policy.rules(d).unwrap_or_default();
            rules.iter().map(|r| rule_names(&policy, d, r)).collect()
        });
        Self { policy, names }
    }

    /// Every pod-derived set's name with its direction and family.
    pub fn set_names(&self) -> impl Iterator<Item = (Direction, Family, &Arc<str>)> {
        let directions = [Direction::Ingress, Direction::Egress];
        directions
            .into_iter()
            .zip(&self.names)
            .flat_map(|(d, rules)| {
                let names = rules
                    .iter()
                    .flat_map(|r| r.pods.iter().chain(r.ports.iter().flatten()));
                names.flat_map(move |n| FAMILIES.into_iter().zip(n).map(move |(f, n)| (d, f, n)))
            })
    }

    fn rule(&self, d: Direction, position: usize) -> &RuleNames {
        let slot = match d {
            Direction::Ingress => 0,
            Direction::Egress => 1,
        };
        &self.names[slot][position]
    }
}

fn rule_names(policy: &Policy, d: Direction, rule: &Rule) -> RuleNames {
    let names = |what: &str, on_source: bool| {
        FAMILIES.map(|f| Arc::from(set_name(policy, d, f, rule, what, on_source)))
    };
    let has_pod_peers = rule
        .peers
        .iter()
        .flatten()
        .any(|p| matches!(p, Peer::Pods { .. }));
    RuleNames {
        pods: has_pod_peers.then(|| names("pods", d == Direction::Ingress)),
        ports: rule
            .ports
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, p)| {
                matches!(p, PortMatch::Named { .. }).then(|| names(&format!("port-{i}"), false))
            })
            .collect(),
    }
}

fn peer_matches(peer: &Peer, policy: &Policy, pod: &PodView, ns: &NamespaceLabels) -> bool {
    match peer {
        Peer::Block(_) => false,
        Peer::Pods { namespaces, pods } => {
            let ns_ok = match namespaces {
                Namespaces::Own => pod.namespace == policy.namespace,
                Namespaces::Matching(s) => {
                    namespace_matches(ns.get(pod.namespace), pod.namespace, s)
                }
            };
            ns_ok && pods.matches(pod.labels)
        }
    }
}

/// Is `pod` one of this node's pods that `policy` isolates in `d`?
pub fn is_target(policy: &Policy, d: Direction, pod: &PodView) -> bool {
    pod.local
        && pod.namespace == policy.namespace
        && policy.rules(d).is_some()
        && policy.pod_selector.matches(pod.labels)
}

/// The members `pod` adds to the sets of `compiled`, in both families.
pub fn contribution(
    compiled: &Compiled,
    pod: &PodView,
    ns: &NamespaceLabels,
    out: &mut Contribution,
) {
    let policy = &compiled.policy;
    for d in [Direction::Ingress, Direction::Egress] {
        let Some(rules) = policy.rules(d) else {
            continue;
        };
        let target = is_target(policy, d, pod);
        for (position, rule) in rules.iter().enumerate() {
            let names = compiled.rule(d, position);
            let peer_match = rule
                .peers
                .as_ref()
                .map(|peers| peers.iter().any(|p| peer_matches(p, policy, pod, ns)));
            for (f, family) in FAMILIES.into_iter().enumerate() {
                let ips = || pod.ips.iter().filter(move |ip| Family::of(ip) == family);
                if let (Some(set), Some(true)) = (&names.pods, peer_match) {
                    out.extend(ips().map(|ip| (set[f].clone(), Member::ip(*ip))));
                }
                let Some(ports) = &rule.ports else { continue };
                // Whose named ports the rule resolves (rules.rs,
                // named_port_members).
                let included = match (d, &rule.peers) {
                    (Direction::Ingress, _) => target,
                    (Direction::Egress, Some(peers))
                        if peers.iter().all(|p| matches!(p, Peer::Pods { .. })) =>
                    {
                        peer_match == Some(true)
                    }
                    (Direction::Egress, _) => true,
                };
                if !included {
                    continue;
                }
                for (port, set) in ports.iter().zip(&names.ports) {
                    let (PortMatch::Named { proto, name }, Some(set)) = (port, set) else {
                        continue;
                    };
                    let Some(number) = pod.named_port(name, *proto) else {
                        continue;
                    };
                    let member =
                        |ip: &IpAddr| (set[f].clone(), Member::ip_port(*ip, *proto, number));
                    out.extend(ips().map(member));
                }
            }
        }
    }
}

/// The members the local `pod` puts into the ingress named-port sets of
/// `compiled` as a pod the policy applies to. For a NetworkPolicy that is
/// part of [`contribution`]; for a ClusterNetworkPolicy it depends on the
/// NetworkPolicies too (a Baseline policy does not apply to a pod one
/// selects), so the index adds these from the policy's targets instead.
pub fn target_members(compiled: &Compiled, pod: &PodView, out: &mut Contribution) {
    let d = Direction::Ingress;
    for (position, rule) in compiled.policy.rules(d).into_iter().flatten().enumerate() {
        let names = compiled.rule(d, position);
        for (port, set) in rule.ports.iter().flatten().zip(&names.ports) {
            let (PortMatch::Named { proto, name }, Some(set)) = (port, set) else {
                continue;
            };
            let Some(number) = pod.named_port(name, *proto) else {
                continue;
            };
            for ip in &pod.ips {
                let f = usize::from(Family::of(ip) == Family::V6);
                out.push((set[f].clone(), Member::ip_port(*ip, *proto, number)));
            }
        }
    }
}

/// Does a pod with no label any of the policy's anchors name, outside the
/// policy's namespace, still reach its sets? (A pod peer of other
/// namespaces whose selector has no anchor, or an egress rule whose named
/// ports resolve on every pod.) The pods of the policy's own namespace
/// always have it among their candidates.
pub fn needs_every_pod(policy: &Policy) -> bool {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .any(|d| {
            policy.rules(d).into_iter().flatten().any(|rule| {
                let unanchored = rule.peers.iter().flatten().any(|p| match p {
                    Peer::Pods {
                        namespaces: Namespaces::Matching(_),
                        pods,
                    } => pods.anchors().is_none(),
                    Peer::Pods { .. } | Peer::Block(_) => false,
                });
                let named = rule
                    .ports
                    .iter()
                    .flatten()
                    .any(|p| matches!(p, PortMatch::Named { .. }));
                let every_pod = d == Direction::Egress
                    && named
                    && !rule
                        .peers
                        .as_ref()
                        .is_some_and(|peers| peers.iter().all(|p| matches!(p, Peer::Pods { .. })));
                unanchored || every_pod
            })
        })
}

/// The anchors of every pod peer of the policy.
pub fn anchors(policy: &Policy) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for d in [Direction::Ingress, Direction::Egress] {
        for rule in policy.rules(d).into_iter().flatten() {
            for peer in rule.peers.iter().flatten() {
                if let Peer::Pods { pods, .. } = peer {
                    out.extend(pods.anchors().into_iter().flatten());
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Does the policy select peers by namespace labels?
pub fn selects_namespaces(policy: &Policy) -> bool {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .any(|d| {
            policy.rules(d).into_iter().flatten().any(|rule| {
                rule.peers.iter().flatten().any(|p| {
                    matches!(
                        p,
                        Peer::Pods {
                            namespaces: Namespaces::Matching(_),
                            ..
                        }
                    )
                })
            })
        })
}

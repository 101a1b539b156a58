//! What one pod puts into the sets of one policy: the same members
//! `rules.rs` computes for the whole cluster, for a single pod, so a pod
//! change is the difference of two small lists.

use std::collections::BTreeMap;

use super::super::{
    model::{Direction, Namespaces, Peer, Policy, PortMatch},
    pods::{namespace_matches, PodView},
    rules::set_name,
};
use crate::desired::{Family, Member};

/// Namespace labels by name (with the name label).
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// (set name, member) pairs.
pub type Contribution = Vec<(String, Member)>;

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

/// The members `pod` adds to the sets of `policy`, in both families.
pub fn contribution(policy: &Policy, pod: &PodView, ns: &NamespaceLabels, out: &mut Contribution) {
    for d in [Direction::Ingress, Direction::Egress] {
        let Some(rules) = policy.rules(d) else {
            continue;
        };
        let target = is_target(policy, d, pod);
        for rule in rules {
            let peer_match = rule
                .peers
                .as_ref()
                .map(|peers| peers.iter().any(|p| peer_matches(p, policy, pod, ns)));
            let has_pod_peers = rule
                .peers
                .as_ref()
                .is_some_and(|peers| peers.iter().any(|p| matches!(p, Peer::Pods { .. })));
            for family in [Family::V4, Family::V6] {
                let ips = || pod.ips.iter().filter(move |ip| Family::of(ip) == family);
                if has_pod_peers && peer_match == Some(true) {
                    let set = set_name(policy, d, family, rule, "pods", d == Direction::Ingress);
                    out.extend(ips().map(|ip| (set.clone(), Member::ip(*ip))));
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
                for (i, port) in ports.iter().enumerate() {
                    let PortMatch::Named { proto, name } = port else {
                        continue;
                    };
                    let Some(number) = pod.named_port(name, *proto) else {
                        continue;
                    };
                    let set = set_name(policy, d, family, rule, &format!("port-{i}"), false);
                    out.extend(ips().map(|ip| (set.clone(), Member::ip_port(*ip, *proto, number))));
                }
            }
        }
    }
}

/// Does a pod with no label any of the policy's anchors name still reach
/// its sets? (A pod peer whose selector has no anchor, or an egress rule
/// whose named ports resolve on every pod.)
pub fn needs_every_pod(policy: &Policy) -> bool {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .any(|d| {
            policy.rules(d).into_iter().flatten().any(|rule| {
                let pod_peers = rule.peers.iter().flatten().filter_map(|p| match p {
                    Peer::Pods { pods, .. } => Some(pods),
                    Peer::Block(_) => None,
                });
                let unanchored = pod_peers.clone().any(|s| s.anchors().is_none());
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

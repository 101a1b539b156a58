//! One policy's chain in one direction and family, and the sets its rules
//! match. A rule that allows a packet sets [`ALLOW_MARK`]; the pod chain
//! rejects what no policy marked, so several policies add up (union).

use std::collections::BTreeSet;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::{
    model::{Block, Direction, Peer, Policy, PortMatch, Rule},
    names,
    pods::{Cluster, PodView},
};
use crate::desired::{Chain, Family, Member, Protocol, SetSpec, SetType};

/// The packet mark bit "some policy allows this packet".
pub const ALLOW_MARK: u32 = 0x10000;

/// What a policy contributes in one direction and family.
pub struct PolicyChain {
    pub chain: Chain,
    pub sets: Vec<SetSpec>,
}

/// Everything needed to render one policy.
pub struct PolicyCtx<'c, 'a> {
    pub cluster: &'c Cluster<'a>,
    pub policy: &'c Policy,
    pub direction: Direction,
    pub family: Family,
    /// The pods of this node the policy selects (named ingress ports are
    /// resolved on them).
    pub local_targets: &'c [&'c PodView<'a>],
}

impl<'a> PolicyCtx<'_, 'a> {
    pub fn chain_name(&self) -> String {
        names::policy_chain(
            &self.policy.namespace,
            &self.policy.name,
            self.direction.as_str(),
        )
    }

    pub fn render(&self, rules: &[Rule]) -> PolicyChain {
        let allow = format!("-j MARK --set-xmark {ALLOW_MARK:#x}/{ALLOW_MARK:#x}");
        self.render_as(self.chain_name(), rules.iter().map(|r| (r, allow.as_str())))
    }

    /// The chain `name` with, for each rule, its matches followed by its
    /// own `tail` (the target, and any match that must come last).
    pub fn render_as<'r>(
        &self,
        name: String,
        rules: impl Iterator<Item = (&'r Rule, &'r str)>,
    ) -> PolicyChain {
        let mut out = PolicyChain {
            chain: Chain {
                name,
                rules: Vec::new(),
            },
            sets: Vec::new(),
        };
        for (rule, target) in rules {
            let peers = self.peer_matches(rule, &mut out.sets);
            let ports = self.port_matches(rule, &mut out.sets);
            for peer in &peers {
                for (proto, tail) in &ports {
                    let mut line = Vec::new();
                    if let Some(p) = proto {
                        line.push(format!("-p {p}"));
                    }
                    line.extend(peer.iter().cloned());
                    line.extend(tail.iter().cloned());
                    line.push(target.to_string());
                    out.chain.rules.push(line.join(" "));
                }
            }
        }
        out
    }

    fn set_name(&self, rule: &Rule, what: &str, on_source: bool) -> String {
        set_name(
            self.policy,
            self.direction,
            self.family,
            rule,
            what,
            on_source,
        )
    }

    /// The peer half of each line: None for "every peer"; an empty list
    /// when no peer of the rule exists in this family (nothing allowed).
    fn peer_matches(&self, rule: &Rule, sets: &mut Vec<SetSpec>) -> Vec<Option<String>> {
        let Some(peers) = &rule.peers else {
            return vec![None];
        };
        // Ingress peers are sources, egress peers destinations.
        let (on_source, dir) = match self.direction {
            Direction::Ingress => (true, "src"),
            Direction::Egress => (false, "dst"),
        };
        let mut out = Vec::new();
        if peers.iter().any(|p| matches!(p, Peer::Pods { .. })) {
            // One set for every pod peer of the rule (they are an OR); kept
            // even when empty, so a pod that starts to match is an ipset
            // add and never a chain rewrite.
            let name = self.set_name(rule, "pods", on_source);
            let members = self
                .peer_pods(peers)
                .into_iter()
                .flat_map(|p| p.ips.iter())
                .filter(|ip| Family::of(ip) == self.family)
                .map(|ip| Member::ip(*ip))
                .collect();
            out.push(Some(format!("-m set --match-set {name} {dir}")));
            sets.push(self.set(name, SetType::HashIp, members));
        }
        for (i, peer) in peers.iter().enumerate() {
            let Peer::Block(block) = peer else { continue };
            if Family::of(&block.cidr.addr()) != self.family {
                continue;
            }
            // One set per block: excepts of one block must not punch holes
            // into another block of the same rule.
            let name = self.set_name(rule, &format!("block-{i}"), on_source);
            out.push(Some(format!("-m set --match-set {name} {dir}")));
            sets.push(self.set(name, SetType::HashNet, block_members(block)));
        }
        out
    }

    /// Pods matching any pod peer of the rule.
    fn peer_pods(&self, peers: &[Peer]) -> Vec<&PodView<'a>> {
        self.cluster.peer_pods(peers, &self.policy.namespace)
    }

    /// The protocol and port half of each line.
    fn port_matches(
        &self,
        rule: &Rule,
        sets: &mut Vec<SetSpec>,
    ) -> Vec<(Option<Protocol>, Option<String>)> {
        let Some(ports) = &rule.ports else {
            return vec![(None, None)];
        };
        let mut out = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            match port {
                PortMatch::AnyPort(proto) => out.push((Some(*proto), None)),
                PortMatch::Range { proto, first, last } => {
                    let ports = if first == last {
                        first.to_string()
                    } else {
                        format!("{first}:{last}")
                    };
                    out.push((Some(*proto), Some(format!("-m {proto} --dport {ports}"))));
                }
                PortMatch::Named { proto, name } => {
                    let set = self.set_name(rule, &format!("port-{i}"), false);
                    let members = self.named_port_members(rule, *proto, name);
                    out.push((
                        Some(*proto),
                        Some(format!("-m set --match-set {set} dst,dst")),
                    ));
                    sets.push(self.set(set, SetType::HashIpPort, members));
                }
            }
        }
        out
    }

    /// (pod IP, port) of every pod that the named port resolves on: the
    /// selected local pods for ingress, the peer pods for egress (every
    /// pod when the rule allows every destination or has ipBlocks, which
    /// the line then intersects with).
    fn named_port_members(&self, rule: &Rule, proto: Protocol, name: &str) -> BTreeSet<Member> {
        let pods: Vec<&PodView> = match (self.direction, &rule.peers) {
            (Direction::Ingress, _) => self.local_targets.to_vec(),
            (Direction::Egress, Some(peers))
                if peers.iter().all(|p| matches!(p, Peer::Pods { .. })) =>
            {
                self.peer_pods(peers)
            }
            (Direction::Egress, _) => self.cluster.pods.iter().collect(),
        };
        pods.iter()
            .filter_map(|pod| pod.named_port(name, proto).map(|port| (pod, port)))
            .flat_map(|(pod, port)| {
                pod.ips
                    .iter()
                    .filter(|ip| Family::of(ip) == self.family)
                    .map(move |ip| Member::ip_port(*ip, proto, port))
            })
            .collect()
    }

    fn set(&self, name: String, set_type: SetType, members: BTreeSet<Member>) -> SetSpec {
        SetSpec {
            name,
            set_type,
            family: self.family,
            members,
        }
    }
}

/// The name of one set of `rule` in `family`.
pub fn set_name(
    policy: &Policy,
    direction: Direction,
    family: Family,
    rule: &Rule,
    what: &str,
    on_source: bool,
) -> String {
    let base = names::rule_set(
        on_source,
        &policy.namespace,
        &policy.name,
        direction.as_str(),
        rule.index,
        what,
    );
    family.set_name(&base)
}

/// The block as hash:net members: the cidr (a /0 split in two halves,
/// which hash:net cannot hold) and each except as `nomatch`.
fn block_members(block: &Block) -> BTreeSet<Member> {
    let mut members = BTreeSet::new();
    if block.cidr.prefix_len() == 0 {
        let halves: [IpNet; 2] = match block.cidr {
            IpNet::V4(_) => [
                Ipv4Net::new([0, 0, 0, 0].into(), 1).expect("valid").into(),
                Ipv4Net::new([128, 0, 0, 0].into(), 1)
                    .expect("valid")
                    .into(),
            ],
            IpNet::V6(_) => [
                Ipv6Net::new(0u128.into(), 1).expect("valid").into(),
                Ipv6Net::new((1u128 << 127).into(), 1)
                    .expect("valid")
                    .into(),
            ],
        };
        // An except that is a whole half removes that half.
        members.extend(
            halves
                .into_iter()
                .filter(|h| !block.except.contains(h))
                .map(Member::net),
        );
    } else {
        members.insert(Member::net(block.cidr));
    }
    members.extend(
        block
            .except
            .iter()
            .filter(|e| e.prefix_len() > 1 || block.cidr.prefix_len() > 0)
            .map(|e| Member::net_nomatch(*e)),
    );
    members
}

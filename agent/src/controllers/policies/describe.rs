//! Policies and isolation in words, for `ipwarden explain`: which policies
//! isolate a pod in each direction, and what each rule lets through.

use std::{fmt, net::IpAddr};

use super::{
    chains::IsolatedPod,
    cnp::model::ClusterPolicy,
    model::{Direction, Namespaces, Peer, Policy, PortMatch, Rule},
};

/// A pod of this node that policies isolate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Isolation {
    /// "namespace/name".
    pub pod: String,
    pub ips: Vec<IpAddr>,
    /// "namespace/policy" of every policy isolating it, per direction.
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
    /// The ClusterNetworkPolicies deciding before (Admin) and after
    /// (Baseline) them, in evaluation order, per direction.
    pub admin_ingress: Vec<String>,
    pub admin_egress: Vec<String>,
    pub baseline_ingress: Vec<String>,
    pub baseline_egress: Vec<String>,
}

/// One ClusterNetworkPolicy, its rules in words, in written order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierDescription {
    pub policy: String,
    /// "Admin" or "Baseline".
    pub tier: &'static str,
    pub priority: u16,
    pub ingress: Vec<String>,
    pub egress: Vec<String>,
}

pub fn cluster_policy(p: &ClusterPolicy) -> TierDescription {
    let rules = |d: Direction| {
        p.rules(d)
            .iter()
            .map(|r| {
                let text = RuleText {
                    rule: &r.rule,
                    direction: d,
                };
                format!("{} {}: {text}", r.action.as_str(), r.name)
            })
            .collect()
    };
    TierDescription {
        policy: p.name.clone(),
        tier: p.tier.as_str(),
        priority: p.priority,
        ingress: rules(Direction::Ingress),
        egress: rules(Direction::Egress),
    }
}

/// One policy, its rules in words ("None": the direction is not isolated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyDescription {
    pub policy: String,
    pub ingress: Option<Vec<String>>,
    pub egress: Option<Vec<String>>,
}

pub fn isolation(p: &IsolatedPod) -> Isolation {
    let names = |d: Direction| {
        p.policies(d)
            .iter()
            .map(|q| format!("{}/{}", q.namespace, q.name))
            .collect()
    };
    let tier_names = |list: &[&ClusterPolicy]| list.iter().map(|q| q.name.clone()).collect();
    Isolation {
        pod: format!("{}/{}", p.pod.namespace, p.pod.name),
        ips: p.pod.ips.clone(),
        ingress: names(Direction::Ingress),
        egress: names(Direction::Egress),
        admin_ingress: tier_names(&p.tiers.ingress.admin),
        admin_egress: tier_names(&p.tiers.egress.admin),
        baseline_ingress: tier_names(&p.tiers.ingress.baseline),
        baseline_egress: tier_names(&p.tiers.egress.baseline),
    }
}

pub fn policy(p: &Policy) -> PolicyDescription {
    let rules = |d: Direction| {
        p.rules(d).map(|rules| {
            rules
                .iter()
                .map(|r| {
                    RuleText {
                        rule: r,
                        direction: d,
                    }
                    .to_string()
                })
                .collect()
        })
    };
    PolicyDescription {
        policy: format!("{}/{}", p.namespace, p.name),
        ingress: rules(Direction::Ingress),
        egress: rules(Direction::Egress),
    }
}

struct RuleText<'a> {
    rule: &'a Rule,
    direction: Direction,
}

impl fmt::Display for RuleText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = match self.direction {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        };
        match &self.rule.peers {
            None => write!(f, "{word} anywhere")?,
            Some(peers) if peers.is_empty() => write!(f, "{word} no peer")?,
            Some(peers) => {
                let texts: Vec<String> = peers.iter().map(peer).collect();
                write!(f, "{word} {}", texts.join(" or "))?;
            }
        }
        match &self.rule.ports {
            None => write!(f, ", any port"),
            Some(ports) => {
                let texts: Vec<String> = ports.iter().map(port).collect();
                write!(f, ", ports {}", texts.join(", "))
            }
        }
    }
}

fn peer(p: &Peer) -> String {
    match p {
        Peer::Pods { namespaces, pods } => {
            let ns = match namespaces {
                Namespaces::Own => "this namespace".to_string(),
                Namespaces::Matching(s) => format!("namespaces {s}"),
            };
            format!("pods {pods} in {ns}")
        }
        Peer::Block(b) if b.except.is_empty() => b.cidr.to_string(),
        Peer::Block(b) => {
            let except: Vec<String> = b.except.iter().map(ToString::to_string).collect();
            format!("{} except {}", b.cidr, except.join(", "))
        }
    }
}

fn port(p: &PortMatch) -> String {
    match p {
        PortMatch::AnyPort(proto) => format!("{proto} any"),
        PortMatch::Range { proto, first, last } if first == last => format!("{proto} {first}"),
        PortMatch::Range { proto, first, last } => format!("{proto} {first}-{last}"),
        PortMatch::Named { proto, name } => format!("{proto} named {name:?}"),
    }
}

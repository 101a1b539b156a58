//! A ClusterNetworkPolicy read into checked values. Peers and ports become
//! the NetworkPolicy model's [`Rule`], so one renderer writes both kinds'
//! sets and matches. A rule with a bad part fails closed: a bad Accept is
//! dropped (it can only have allowed), a bad Deny or Pass denies every
//! peer and port in its place (its scope is unknown, and skipping it could
//! let a later Accept, a NetworkPolicy or the default allow through).

use ipnet::IpNet;

use super::super::{
    model::{Block, Direction, Namespaces, Peer, PortMatch, Rule},
    selector::{Selector, SelectorError},
};
use crate::{
    cluster::cnp::{self as api, Action, ClusterNetworkPolicy, Tier},
    desired::{Problem, Protocol},
};

/// The pods a policy applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Every pod of the matching namespaces.
    Namespaces(Selector),
    Pods {
        namespaces: Selector,
        pods: Selector,
    },
}

/// One rule: its action, its name for logs and counters, what it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierRule {
    /// The rule's `name`, or `#INDEX` when it has none.
    pub name: String,
    pub action: Action,
    /// Peers are always `Some` (the API requires at least one); a broken
    /// Deny or Pass has `None` peers and ports: everything.
    pub rule: Rule,
}

/// A ClusterNetworkPolicy as the controller uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterPolicy {
    pub name: String,
    pub tier: Tier,
    pub priority: u16,
    pub subject: Subject,
    pub ingress: Vec<TierRule>,
    pub egress: Vec<TierRule>,
}

impl ClusterPolicy {
    /// A policy without rules in a direction does not affect it.
    pub fn rules(&self, d: Direction) -> &[TierRule] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    pub fn object(&self) -> String {
        format!("{} {}", api::KIND, self.name)
    }

    /// Evaluation order within a tier: priority, then name (the API leaves
    /// equal priorities to the implementation; by name is deterministic).
    pub fn order_key(&self) -> (Tier, u16, &str) {
        (self.tier, self.priority, &self.name)
    }
}

/// Reads one policy; `None` (with a problem) when it cannot apply at all
/// (a priority out of range, a bad subject).
pub fn read(p: &ClusterNetworkPolicy, problems: &mut Vec<Problem>) -> Option<ClusterPolicy> {
    let name = p.metadata.name.clone().unwrap_or_default();
    let object = format!("{} {name}", api::KIND);
    let mut problem = |field: String, message: String| {
        problems.push(Problem {
            object: object.clone(),
            field,
            message,
            skipped: true,
        })
    };
    let spec = &p.spec;
    let Some(priority) = u16::try_from(spec.priority).ok().filter(|p| *p <= 1000) else {
        problem(
            "spec.priority".into(),
            format!("{} is not a priority (0-1000)", spec.priority),
        );
        return None;
    };
    let subject = match read_subject(&spec.subject) {
        Ok(s) => s,
        Err((field, message)) => {
            problem(format!("spec.subject.{field}"), message);
            return None;
        }
    };
    let ingress = spec
        .ingress
        .iter()
        .map(|r| (r.name.as_str(), r.action, &r.from, &r.protocols));
    let egress = spec
        .egress
        .iter()
        .map(|r| (r.name.as_str(), r.action, &r.to, &r.protocols));
    let mut read_direction = |d: Direction, rules: Vec<RawRule>| {
        let mut out = Vec::new();
        for (index, (rule_name, action, peers, protocols)) in rules.into_iter().enumerate() {
            let name = if rule_name.is_empty() {
                format!("#{index}")
            } else {
                rule_name.to_string()
            };
            match read_rule(d, index, peers, protocols) {
                Ok(rule) => out.push(TierRule { name, action, rule }),
                Err((field, message)) => {
                    let (outcome, kept) = match action {
                        Action::Accept => ("this Accept rule is dropped", None),
                        Action::Deny | Action::Pass => (
                            "this rule denies every peer and port in its place (fail closed)",
                            Some(TierRule {
                                name,
                                action: Action::Deny,
                                rule: Rule {
                                    index,
                                    peers: None,
                                    ports: None,
                                },
                            }),
                        ),
                    };
                    problem(
                        format!("spec.{}[{index}].{field}", d.as_str()),
                        format!("{message}; {outcome}"),
                    );
                    out.extend(kept);
                }
            }
        }
        out
    };
    let ingress = read_direction(Direction::Ingress, ingress.collect());
    let egress = read_direction(Direction::Egress, egress.collect());
    Some(ClusterPolicy {
        name,
        tier: spec.tier,
        priority,
        subject,
        ingress,
        egress,
    })
}

type FieldError = (String, String);
type RawRule<'a> = (
    &'a str,
    Action,
    &'a Vec<api::Peer>,
    &'a Vec<api::ProtocolMatch>,
);

fn selector(
    field: &str,
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<Selector, FieldError> {
    Selector::parse(s)
        .map_err(|SelectorError { field: f, message }| (format!("{field}.{f}"), message))
}

fn read_subject(s: &api::Subject) -> Result<Subject, FieldError> {
    match (&s.namespaces, &s.pods) {
        (Some(ns), None) => Ok(Subject::Namespaces(selector("namespaces", ns)?)),
        (None, Some(p)) => Ok(Subject::Pods {
            namespaces: selector("pods.namespaceSelector", &p.namespace_selector)?,
            pods: selector("pods.podSelector", &p.pod_selector)?,
        }),
        _ => Err((
            "".into(),
            "a subject needs exactly one of namespaces and pods".into(),
        )),
    }
}

fn read_rule(
    d: Direction,
    index: usize,
    peers: &[api::Peer],
    protocols: &[api::ProtocolMatch],
) -> Result<Rule, FieldError> {
    let field = match d {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    };
    if peers.is_empty() {
        return Err((field.into(), "a rule needs at least one peer".into()));
    }
    let mut out = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        read_peer(d, p, &mut out).map_err(|(f, m)| (format!("{field}[{i}]{f}"), m))?;
    }
    let ports = if protocols.is_empty() {
        None
    } else {
        let mut ports = Vec::new();
        for (i, p) in protocols.iter().enumerate() {
            read_protocol(p, &mut ports).map_err(|(f, m)| (format!("protocols[{i}]{f}"), m))?;
        }
        Some(ports)
    };
    Ok(Rule {
        index,
        peers: Some(out),
        ports,
    })
}

fn read_peer(d: Direction, p: &api::Peer, out: &mut Vec<Peer>) -> Result<(), FieldError> {
    if p.nodes.is_some() {
        return Err((".nodes".into(), "nodes peers are not supported".into()));
    }
    if p.domain_names.is_some() {
        return Err((
            ".domainNames".into(),
            "domainNames peers are not supported".into(),
        ));
    }
    if p.networks.is_some() && d == Direction::Ingress {
        return Err((
            ".networks".into(),
            "networks peers are for egress only".into(),
        ));
    }
    let set = [
        p.namespaces.is_some(),
        p.pods.is_some(),
        p.networks.is_some(),
    ];
    if set.iter().filter(|s| **s).count() != 1 {
        return Err((
            "".into(),
            "a peer needs exactly one of namespaces, pods and networks".into(),
        ));
    }
    if let Some(ns) = &p.namespaces {
        out.push(Peer::Pods {
            namespaces: Namespaces::Matching(selector(".namespaces", ns)?),
            pods: Selector::everything(),
        });
    }
    if let Some(pods) = &p.pods {
        out.push(Peer::Pods {
            namespaces: Namespaces::Matching(selector(
                ".pods.namespaceSelector",
                &pods.namespace_selector,
            )?),
            pods: selector(".pods.podSelector", &pods.pod_selector)?,
        });
    }
    for (i, n) in p.networks.iter().flatten().enumerate() {
        let cidr: IpNet = n
            .trim()
            .parse()
            .map_err(|_| (format!(".networks[{i}]"), format!("{n:?} is not a CIDR")))?;
        out.push(Peer::Block(Block {
            cidr: cidr.trunc(),
            except: Vec::new(),
        }));
    }
    Ok(())
}

fn read_protocol(p: &api::ProtocolMatch, out: &mut Vec<PortMatch>) -> Result<(), FieldError> {
    let by_proto = [
        (Protocol::Tcp, "tcp", &p.tcp),
        (Protocol::Udp, "udp", &p.udp),
        (Protocol::Sctp, "sctp", &p.sctp),
    ];
    let named = !p.destination_named_port.is_empty();
    let given = by_proto.iter().filter(|(_, _, x)| x.is_some()).count() + usize::from(named);
    if given != 1 {
        return Err((
            "".into(),
            "needs exactly one of tcp, udp, sctp and destinationNamedPort".into(),
        ));
    }
    if named {
        let name = &p.destination_named_port;
        if name.len() > 15 || !name.chars().any(|c| c.is_ascii_alphabetic()) {
            return Err((
                ".destinationNamedPort".into(),
                format!("{name:?} is not a port name"),
            ));
        }
        // The container port's own protocol decides: one match per
        // protocol, each resolving only on ports of that protocol.
        out.extend(
            [Protocol::Tcp, Protocol::Udp, Protocol::Sctp].map(|proto| PortMatch::Named {
                proto,
                name: name.clone(),
            }),
        );
        return Ok(());
    }
    for (proto, field, ports) in by_proto {
        let Some(ports) = ports else { continue };
        let at = |f: &str| format!(".{field}.destinationPort{f}");
        let number = |n: i32, f: &str| {
            u16::try_from(n)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| (at(f), format!("{n} is not a port (1-65535)")))
        };
        out.push(match &ports.destination_port {
            None => PortMatch::AnyPort(proto),
            Some(api::Port {
                number: Some(n),
                range: None,
            }) => {
                let n = number(*n, ".number")?;
                PortMatch::Range {
                    proto,
                    first: n,
                    last: n,
                }
            }
            Some(api::Port {
                number: None,
                range: Some(r),
            }) => {
                let (first, last) = (
                    number(r.start, ".range.start")?,
                    number(r.end, ".range.end")?,
                );
                if last < first {
                    return Err((at(".range"), format!("end {last} is below start {first}")));
                }
                PortMatch::Range { proto, first, last }
            }
            Some(_) => {
                return Err((at(""), "needs exactly one of number and range".into()));
            }
        });
    }
    Ok(())
}

//! A NetworkPolicy read into checked values. Every field that can be wrong
//! is checked here, once; a rule with a bad part is dropped whole and
//! reported, so a broken allow rule allows less, never more, and the pods
//! the policy selects stay isolated.

use ipnet::IpNet;
use k8s_openapi::{
    api::networking::v1::{IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};

use super::selector::{Selector, SelectorError};
use crate::desired::{Problem, Protocol};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The peers' field in the API (`from` / `to`).
    fn peers_field(self) -> &'static str {
        match self {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }
}

/// Which namespaces a pod peer looks in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespaces {
    /// The policy's own namespace (no namespaceSelector).
    Own,
    Matching(Selector),
}

/// An ipBlock: `cidr` minus `except` (each inside `cidr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub cidr: IpNet,
    pub except: Vec<IpNet>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Pods matching `pods` in `namespaces` (both selectors: their AND).
    Pods {
        namespaces: Namespaces,
        pods: Selector,
    },
    Block(Block),
}

/// One entry of `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortMatch {
    /// Every port of the protocol (no `port`).
    AnyPort(Protocol),
    /// `port` to `endPort` (equal when there is no endPort).
    Range {
        proto: Protocol,
        first: u16,
        last: u16,
    },
    /// A container port name, resolved on pods.
    Named { proto: Protocol, name: String },
}

/// One ingress or egress rule. `None` means "every": absent or empty
/// `from`/`to` allows every peer, absent or empty `ports` every port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Position in the policy, for stable set names.
    pub index: usize,
    pub peers: Option<Vec<Peer>>,
    pub ports: Option<Vec<PortMatch>>,
}

/// A policy as the controller uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Selector,
    /// Some when the policy isolates ingress of the pods it selects.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn rules(&self, d: Direction) -> Option<&[Rule]> {
        match d {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    pub fn object(&self) -> String {
        format!("NetworkPolicy {}/{}", self.namespace, self.name)
    }
}

/// Reads one policy; `None` (with a problem) when the policy cannot be
/// applied at all (a bad podSelector or policyTypes).
pub fn read(np: &NetworkPolicy, problems: &mut Vec<Problem>) -> Option<Policy> {
    let namespace = np
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = np.metadata.name.clone().unwrap_or_default();
    let object = format!("NetworkPolicy {namespace}/{name}");
    let problem = |field: String, message: String, skipped: bool| Problem {
        object: object.clone(),
        field,
        message,
        skipped,
    };
    let spec = np.spec.clone().unwrap_or_default();
    let pod_selector = match spec.pod_selector.as_ref().map(Selector::parse) {
        None => Selector::everything(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            problems.push(problem(
                format!("spec.podSelector.{}", e.field),
                e.message,
                true,
            ));
            return None;
        }
    };
    let ingress_rules = spec.ingress.as_ref().map(|r| {
        r.iter()
            .map(|r| (r.from.as_ref(), r.ports.as_ref()))
            .collect::<Vec<_>>()
    });
    let egress_rules = spec.egress.as_ref().map(|r| {
        r.iter()
            .map(|r| (r.to.as_ref(), r.ports.as_ref()))
            .collect::<Vec<_>>()
    });
    // Absent policyTypes: Ingress, plus Egress when there are egress rules.
    let (isolates_ingress, isolates_egress) = match &spec.policy_types {
        None => (true, egress_rules.as_ref().is_some_and(|r| !r.is_empty())),
        Some(types) => {
            if let Some(bad) = types.iter().find(|t| *t != "Ingress" && *t != "Egress") {
                problems.push(problem(
                    "spec.policyTypes".into(),
                    format!("unknown policy type {bad:?} (Ingress, Egress)"),
                    true,
                ));
                return None;
            }
            (
                types.iter().any(|t| t == "Ingress"),
                types.iter().any(|t| t == "Egress"),
            )
        }
    };
    let mut read_direction = |d: Direction, rules: Option<Vec<RawRule>>| {
        let mut out = Vec::new();
        for (index, (peers, ports)) in rules.into_iter().flatten().enumerate() {
            let at = format!("spec.{}[{index}]", d.as_str());
            match read_rule(d, index, peers, ports) {
                Ok(rule) => out.push(rule),
                Err((field, message)) => problems.push(Problem {
                    object: object.clone(),
                    field: format!("{at}.{field}"),
                    message: format!(
                        "{message}; this rule is dropped, the policy's other rules still apply"
                    ),
                    skipped: true,
                }),
            }
        }
        out
    };
    let ingress = read_direction(Direction::Ingress, ingress_rules);
    let egress = read_direction(Direction::Egress, egress_rules);
    Some(Policy {
        namespace,
        name,
        pod_selector,
        ingress: isolates_ingress.then_some(ingress),
        egress: isolates_egress.then_some(egress),
    })
}

type FieldError = (String, String);

/// An ingress or egress rule's peers and ports as the API has them.
type RawRule<'a> = (
    Option<&'a Vec<NetworkPolicyPeer>>,
    Option<&'a Vec<NetworkPolicyPort>>,
);

fn read_rule(
    d: Direction,
    index: usize,
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
) -> Result<Rule, FieldError> {
    let peers = match peers {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => Some(
            p.iter()
                .enumerate()
                .map(|(i, p)| {
                    read_peer(p).map_err(|(f, m)| (format!("{}[{i}].{f}", d.peers_field()), m))
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let ports = match ports {
        None => None,
        Some(p) if p.is_empty() => None,
        Some(p) => Some(
            p.iter()
                .enumerate()
                .map(|(i, p)| read_port(p).map_err(|(f, m)| (format!("ports[{i}].{f}"), m)))
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    Ok(Rule {
        index,
        peers,
        ports,
    })
}

fn selector(
    field: &str,
    s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Result<Selector, FieldError> {
    Selector::parse(s)
        .map_err(|SelectorError { field: f, message }| (format!("{field}.{f}"), message))
}

fn read_peer(p: &NetworkPolicyPeer) -> Result<Peer, FieldError> {
    match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
        (Some(b), None, None) => read_block(b).map(Peer::Block),
        (Some(_), _, _) => Err((
            "ipBlock".into(),
            "ipBlock cannot be combined with a selector".into(),
        )),
        (None, None, None) => Err((
            "".into(),
            "a peer needs podSelector, namespaceSelector or ipBlock".into(),
        )),
        (None, ns, pods) => Ok(Peer::Pods {
            namespaces: match ns {
                None => Namespaces::Own,
                Some(s) => Namespaces::Matching(selector("namespaceSelector", s)?),
            },
            pods: match pods {
                None => Selector::everything(),
                Some(s) => selector("podSelector", s)?,
            },
        }),
    }
}

fn read_block(b: &IPBlock) -> Result<Block, FieldError> {
    let cidr: IpNet = b.cidr.trim().parse().map_err(|_| {
        (
            "ipBlock.cidr".to_string(),
            format!("{:?} is not a CIDR", b.cidr),
        )
    })?;
    let cidr = cidr.trunc();
    let mut except = Vec::new();
    for (i, e) in b.except.iter().flatten().enumerate() {
        let field = format!("ipBlock.except[{i}]");
        let net: IpNet = e
            .trim()
            .parse()
            .map_err(|_| (field.clone(), format!("{e:?} is not a CIDR")))?;
        let net = net.trunc();
        if !cidr.contains(&net) || net.prefix_len() <= cidr.prefix_len() {
            return Err((
                field,
                format!("{net} is not strictly inside the block's cidr {cidr}"),
            ));
        }
        except.push(net);
    }
    Ok(Block { cidr, except })
}

fn read_port(p: &NetworkPolicyPort) -> Result<PortMatch, FieldError> {
    let proto = match p.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(s) => Protocol::from_kubernetes(s).ok_or_else(|| {
            (
                "protocol".to_string(),
                format!("unknown protocol {s:?} (TCP, UDP, SCTP)"),
            )
        })?,
    };
    let port_number = |n: i32, field: &str| {
        u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| (field.to_string(), format!("{n} is not a port (1-65535)")))
    };
    match (&p.port, p.end_port) {
        (None, None) => Ok(PortMatch::AnyPort(proto)),
        (None, Some(_)) => Err(("endPort".into(), "endPort needs a numeric port".into())),
        (Some(IntOrString::Int(n)), end) => {
            let first = port_number(*n, "port")?;
            let last = match end {
                None => first,
                Some(e) => {
                    let last = port_number(e, "endPort")?;
                    if last < first {
                        return Err((
                            "endPort".into(),
                            format!("endPort {last} is below port {first}"),
                        ));
                    }
                    last
                }
            };
            Ok(PortMatch::Range { proto, first, last })
        }
        (Some(IntOrString::String(name)), None) => {
            if name.is_empty() || name.len() > 15 || !name.chars().any(|c| c.is_ascii_alphabetic())
            {
                return Err(("port".into(), format!("{name:?} is not a port name")));
            }
            Ok(PortMatch::Named {
                proto,
                name: name.clone(),
            })
        }
        (Some(IntOrString::String(_)), Some(_)) => Err((
            "endPort".into(),
            "endPort needs a numeric port, not a name".into(),
        )),
    }
}

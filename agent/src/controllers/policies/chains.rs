//! The per-pod firewall chains and the three chains that built-in INPUT,
//! FORWARD and OUTPUT jump to.
//!
//! A packet to or from an isolated pod of this node goes through that
//! pod's chain: replies of allowed connections pass, INVALID is dropped,
//! the node itself may always reach its pods, then every policy that
//! isolates the pod in that direction gets a chance to set the allow mark;
//! what none marked is logged (NFLOG, rate limited) and REJECTed. The pod
//! chain RETURNs what it allows, so a packet between two isolated pods is
//! checked against the sender's egress and the receiver's ingress.

use std::net::IpAddr;

use super::{
    cnp::{self, PodTiers},
    dispatch::Dispatch,
    model::{Direction, Policy},
    names::{
        self, CHAIN_FORWARD, CHAIN_FROM_POD, CHAIN_INPUT, CHAIN_OUTPUT, CHAIN_POD_COMMON,
        CHAIN_TO_POD, SET_GUARDED_EGRESS, SET_GUARDED_INGRESS,
    },
    pods::PodView,
    rules::ALLOW_MARK,
    Options,
};
use crate::{
    controllers::fragments::{self, host},
    desired::{Chain, Family, SetSpec},
};

/// A local pod with the policies that isolate it in each direction.
pub struct IsolatedPod<'p, 'a> {
    pub pod: &'p PodView<'a>,
    pub ingress: Vec<&'p Policy>,
    pub egress: Vec<&'p Policy>,
    /// The ClusterNetworkPolicies that apply to it.
    pub tiers: PodTiers<'p>,
}

impl IsolatedPod<'_, '_> {
    pub fn chain_name(&self) -> String {
        names::pod_chain(self.pod.namespace, self.pod.name)
    }

    pub fn policies(&self, d: Direction) -> &[&Policy] {
        match d {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// Does anything act on this pod's traffic in direction `d`? (For
    /// egress, these are the sources the tc fast path never marks:
    /// [`super::PolicyState::egress_restricted_sources`].)
    pub fn guarded(&self, d: Direction) -> bool {
        !self.policies(d).is_empty() || !self.tiers.get(d).is_empty()
    }

    pub fn ips(&self, family: Family) -> impl Iterator<Item = &IpAddr> {
        self.pod
            .ips
            .iter()
            .filter(move |ip| Family::of(ip) == family)
    }
}

const CLEAR_MARK: &str = "-j MARK --set-xmark 0x0/0x10000";

/// The chain of one pod in one family.
pub fn pod_chain(pod: &IsolatedPod, family: Family, opts: &Options) -> Chain {
    let mut rules = vec![format!("-j {CHAIN_POD_COMMON}")];
    // Pods no ClusterNetworkPolicy selects keep the chain they had.
    let clear = if pod.tiers.is_empty() {
        CLEAR_MARK.to_string()
    } else {
        format!("-j MARK --set-xmark 0x0/{:#x}", cnp::render::TIER_MARKS)
    };
    rules.push(clear.clone());
    for d in [Direction::Ingress, Direction::Egress] {
        if !pod.guarded(d) {
            continue;
        }
        let policies = pod.policies(d);
        let tiers = pod.tiers.get(d);
        let log = nflog_prefix(pod.pod, d);
        for ip in pod.ips(family) {
            let at = match d {
                Direction::Ingress => format!("-d {}", host(ip)),
                Direction::Egress => format!("-s {}", host(ip)),
            };
            if d == Direction::Ingress {
                // The node may always reach its own pods (kubelet probes).
                rules.push(format!("{at} -m addrtype --src-type LOCAL -j ACCEPT"));
            }
            rules.extend(cnp::render::admin_lines(tiers, &at, d, &log, opts));
            if policies.is_empty() {
                rules.extend(cnp::render::baseline_lines(tiers, &at, d, &log, opts));
                continue;
            }
            for p in policies {
                let chain = names::policy_chain(&p.namespace, &p.name, d.as_str());
                rules.push(format!("{at} -j {chain}"));
            }
            let denied = format!("{at} -m mark ! --mark {ALLOW_MARK:#x}/{ALLOW_MARK:#x}");
            // Counting rules (no target): packets each isolating policy
            // saw denied, for /metrics.
            for p in policies {
                rules.push(format!(
                    "{denied} -m comment --comment \"{}\"",
                    deny_comment(p, d)
                ));
            }
            rules.push(format!(
                "{denied} -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-prefix \"{}\" --nflog-group {}",
                log, opts.nflog_group
            ));
            rules.push(format!("{denied} {}", fragments::reject(family).render()));
        }
        rules.push(clear.clone());
    }
    Chain {
        name: pod.chain_name(),
        rules,
    }
}

/// How the comment of every counting rule starts.
pub const DENY_COMMENT: &str = "ipwarden:denied ";

/// `ipwarden:denied NS/POLICY DIRECTION`: the comment of a counting rule.
pub fn deny_comment(p: &Policy, d: Direction) -> String {
    format!("{DENY_COMMENT}{}/{} {}", p.namespace, p.name, d.as_str())
}

fn nflog_prefix(pod: &PodView, d: Direction) -> String {
    let mut s = format!(
        "ipwarden deny {} {}/{}",
        d.as_str(),
        pod.namespace,
        pod.name
    );
    // NFLOG prefixes are at most 64 bytes (with the NUL).
    s.truncate(63);
    s
}

fn icmp_accepts(family: Family) -> Vec<String> {
    fragments::icmp_accepts(family)
        .iter()
        .map(fragments::Args::render)
        .collect()
}

/// IPWARDEN-INPUT, -FORWARD and -OUTPUT of one family, the two chains
/// they dispatch through and the sets they match, and the chain every pod
/// chain starts with.
///
/// A jump per direction catches bridged traffic (br_netfilter hands
/// bridged frames to FORWARD, where `-d`/`-s` match them as they match
/// routed packets) and routed traffic alike. Service traffic to the node
/// (ClusterIP and external ranges, NodePorts) RETURNs from INPUT: after
/// IPVS it comes back through OUTPUT towards the chosen pod, where both
/// the client pod's egress and the backend's ingress apply.
///
/// A packet neither to nor from a guarded local pod leaves each top chain
/// after one set lookup per direction (the node's own traffic, forwarded
/// traffic of other nodes' pods) instead of walking a rule per pod; a
/// guarded pod's packet goes through the dispatch chains ([`Dispatch`]) to
/// its pod chain, whose end returns to the top chain.
pub fn top_chains(pods: &[IsolatedPod], family: Family, opts: &Options) -> TopChains {
    top_chains_of(
        pods.iter().map(|p| TopEntry {
            chain: p.chain_name(),
            ips: &p.pod.ips,
            ingress: p.guarded(Direction::Ingress),
            egress: p.guarded(Direction::Egress),
        }),
        family,
        opts,
    )
}

/// What the top chains need of one isolated pod.
pub struct TopEntry<'p> {
    pub chain: String,
    pub ips: &'p [IpAddr],
    pub ingress: bool,
    pub egress: bool,
}

/// The top chains of one family and the guarded-pod sets they match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopChains {
    /// IPWARDEN-INPUT, -FORWARD, -OUTPUT and IPW-POD-COMMON always, then
    /// IPW-TO-POD and IPW-FROM-POD with their bucket chains while a pod is
    /// guarded in their direction.
    pub chains: Vec<Chain>,
    /// IPW-GUARDED-INGRESS and -EGRESS (of the family), each only while
    /// it has a member.
    pub sets: Vec<SetSpec>,
}

/// Both directions' dispatch of the isolated pods' entries, in pod order.
fn dispatches<'p>(pods: impl Iterator<Item = TopEntry<'p>>, family: Family) -> [Dispatch; 2] {
    let mut to_pod = Dispatch::new(SET_GUARDED_INGRESS, family);
    let mut from_pod = Dispatch::new(SET_GUARDED_EGRESS, family);
    for pod in pods {
        for ip in pod.ips.iter().filter(|ip| Family::of(ip) == family) {
            if pod.ingress {
                to_pod.add(ip, &pod.chain);
            }
            if pod.egress {
                from_pod.add(ip, &pod.chain);
            }
        }
    }
    [to_pod, from_pod]
}

/// The guarded-pod sets of [`top_chains_of`] alone: what a full sync that
/// keeps the chains still applies.
pub fn guarded_sets_of<'p>(
    pods: impl Iterator<Item = TopEntry<'p>>,
    family: Family,
) -> Vec<SetSpec> {
    dispatches(pods, family)
        .iter()
        .filter_map(Dispatch::set_spec)
        .collect()
}

/// [`top_chains`] from the isolated pods' entries, in pod order.
pub fn top_chains_of<'p>(
    pods: impl Iterator<Item = TopEntry<'p>>,
    family: Family,
    opts: &Options,
) -> TopChains {
    let [to_pod, from_pod] = dispatches(pods, family);
    let to = to_pod.entry("dst", CHAIN_TO_POD);
    let from = from_pod.entry("src", CHAIN_FROM_POD);
    let both: Vec<String> = to.into_iter().chain(from).collect();
    let chain = |name: &str, rules: Vec<String>| Chain {
        name: name.into(),
        rules,
    };
    TopChains {
        sets: [to_pod.set_spec(), from_pod.set_spec()]
            .into_iter()
            .flatten()
            .collect(),
        chains: [
            chain(CHAIN_INPUT, input_rules(&from_pod, family, opts)),
            chain(CHAIN_FORWARD, both.clone()),
            chain(CHAIN_OUTPUT, both),
            pod_common(family),
        ]
        .into_iter()
        .chain(to_pod.chains(CHAIN_TO_POD, "-d"))
        .chain(from_pod.chains(CHAIN_FROM_POD, "-s"))
        .collect(),
    }
}

/// IPWARDEN-INPUT: only egress applies to a packet for the node itself.
/// What no guarded pod sent leaves first; service traffic (ClusterIP and
/// external ranges, NodePorts) next, checked after IPVS in OUTPUT.
fn input_rules(from_pod: &Dispatch, family: Family, opts: &Options) -> Vec<String> {
    let guarded = from_pod.any();
    let mut rules = Vec::new();
    if guarded {
        rules.push(format!(
            "-m set ! --match-set {} src -j RETURN",
            from_pod.set()
        ));
    }
    rules.extend(
        opts.service_ranges
            .iter()
            .filter(|r| Family::of(&r.addr()) == family)
            .map(|r| format!("-d {r} -j RETURN")),
    );
    let (lo, hi) = opts.node_port_range;
    for proto in ["tcp", "udp", "sctp"] {
        rules.push(format!(
            "-p {proto} -m addrtype --dst-type LOCAL -m multiport --dports {lo}:{hi} -j RETURN"
        ));
    }
    if guarded {
        rules.push(format!("-j {CHAIN_FROM_POD}"));
    }
    rules
}

/// The first lines of every pod chain, which jumps here: replies of
/// allowed connections and the ICMP the node needs pass, INVALID is
/// dropped (ACCEPT and DROP end the packet's walk here too); the rest
/// RETURNs to the pod chain. Written with the top chains, whether or not
/// a pod is isolated, so it never moves with the pods.
fn pod_common(family: Family) -> Chain {
    let mut rules = vec![
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-m conntrack --ctstate INVALID -j DROP".to_string(),
    ];
    rules.extend(icmp_accepts(family));
    Chain {
        name: CHAIN_POD_COMMON.into(),
        rules,
    }
}

//! The kernel form of the tiers: one chain per policy and direction whose
//! lines carry the verdict in the packet mark, and the lines of a pod's
//! chain that jump to them and act on the verdict.

use super::{
    super::{
        chains::DENY_COMMENT,
        model::{Direction, Policy},
        names,
        pods::{Cluster, PodView},
        rules::{PolicyChain, PolicyCtx, ALLOW_MARK},
        Options,
    },
    model::{ClusterPolicy, TierRule},
    Tiers,
};
use crate::{
    cluster::cnp::{self as api, Action, Tier},
    desired::Family,
};

/// The verdict bits of the tier being evaluated (0: no rule matched yet).
pub const VERDICT_MASK: u32 = 0x60000;
const ACCEPT: u32 = 0x20000;
const DENY: u32 = 0x40000;
const PASS: u32 = 0x60000;
/// The bits a pod chain clears when a ClusterNetworkPolicy selects the pod.
pub const TIER_MARKS: u32 = ALLOW_MARK | VERDICT_MASK;

pub fn chain_name(policy: &ClusterPolicy, d: Direction) -> String {
    names::cluster_policy_chain(&policy.name, d.as_str())
}

/// The NetworkPolicy shape the shared renderer names sets after: no
/// namespace (no NetworkPolicy lacks one, so no set name is shared), and
/// the rules' peers and ports (the incremental index computes set members
/// from it as it does for NetworkPolicies).
pub fn as_policy(policy: &ClusterPolicy) -> Policy {
    let rules = |d: Direction| Some(policy.rules(d).iter().map(|r| r.rule.clone()).collect());
    Policy {
        namespace: String::new(),
        name: format!("{}/{}", api::KIND, policy.name),
        pod_selector: Default::default(),
        ingress: rules(Direction::Ingress),
        egress: rules(Direction::Egress),
    }
}

/// The name counters and logs use: `cnp:POLICY/RULE`, one word.
pub fn counter_name(policy: &ClusterPolicy, rule: &TierRule) -> String {
    let clean: String = rule
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._:#-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("cnp:{}/{clean}", policy.name)
}

/// The line tail of one rule: only while no verdict is set, then its own.
fn tail(policy: &ClusterPolicy, rule: &TierRule, d: Direction) -> String {
    // Baseline also waits for the allow mark: an Admin Accept ends it.
    let guard = match policy.tier {
        Tier::Admin => VERDICT_MASK,
        Tier::Baseline => TIER_MARKS,
    };
    let set = match rule.action {
        Action::Accept => format!("{:#x}/{TIER_MARKS:#x}", ACCEPT | ALLOW_MARK),
        Action::Deny => format!("{DENY:#x}/{VERDICT_MASK:#x}"),
        Action::Pass => format!("{PASS:#x}/{VERDICT_MASK:#x}"),
    };
    // A Deny line counts the packets it denies (the pod chain drops them).
    let comment = match rule.action {
        Action::Deny => format!(
            " -m comment --comment \"{DENY_COMMENT}{} {}\"",
            counter_name(policy, rule),
            d.as_str()
        ),
        _ => String::new(),
    };
    format!("-m mark --mark 0x0/{guard:#x}{comment} -j MARK --set-xmark {set}")
}

/// One policy's chain in one direction and family, and its sets.
/// `local_targets` are the local pods it applies to (named ingress ports
/// resolve on them).
pub fn policy_chain(
    cluster: &Cluster,
    policy: &ClusterPolicy,
    d: Direction,
    family: Family,
    local_targets: &[&PodView],
) -> PolicyChain {
    let shape = as_policy(policy);
    let ctx = PolicyCtx {
        cluster,
        policy: &shape,
        direction: d,
        family,
        local_targets,
    };
    let tails: Vec<String> = policy.rules(d).iter().map(|r| tail(policy, r, d)).collect();
    ctx.render_as(
        chain_name(policy, d),
        policy
            .rules(d)
            .iter()
            .zip(&tails)
            .map(|(r, t)| (&r.rule, t.as_str())),
    )
}

/// The lines of a pod chain for one address `at` ("-d IP" / "-s IP")
/// before the NetworkPolicies: the Admin tier and its denies.
pub fn admin_lines(
    tiers: &Tiers,
    at: &str,
    d: Direction,
    log: &str,
    opts: &Options,
) -> Vec<String> {
    let mut lines = tier_lines(&tiers.admin, at, d, log, opts);
    if !lines.is_empty() {
        // The next tier starts without a verdict (an Accept keeps its allow).
        lines.push(format!("{at} -j MARK --set-xmark 0x0/{VERDICT_MASK:#x}"));
    }
    lines
}

/// The Baseline tier's lines (for a pod no NetworkPolicy selects).
pub fn baseline_lines(
    tiers: &Tiers,
    at: &str,
    d: Direction,
    log: &str,
    opts: &Options,
) -> Vec<String> {
    tier_lines(&tiers.baseline, at, d, log, opts)
}

/// One tier: a jump to each of its policies' chains, then its denies
/// dropped; nothing when the tier has no policy for this pod.
fn tier_lines(
    policies: &[&ClusterPolicy],
    at: &str,
    d: Direction,
    log: &str,
    opts: &Options,
) -> Vec<String> {
    if policies.is_empty() {
        return Vec::new();
    }
    let mut lines = jumps(policies, at, d);
    lines.extend(drop_denied(at, log, opts));
    lines
}

fn jumps(policies: &[&ClusterPolicy], at: &str, d: Direction) -> Vec<String> {
    policies
        .iter()
        .map(|p| format!("{at} -j {}", chain_name(p, d)))
        .collect()
}

/// Log (NFLOG, rate limited, as NetworkPolicy denies) and drop what a
/// Deny decided.
fn drop_denied(at: &str, log: &str, opts: &Options) -> [String; 2] {
    let denied = format!("{at} -m mark --mark {DENY:#x}/{VERDICT_MASK:#x}");
    [
        format!(
            "{denied} -m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-prefix \"{log}\" --nflog-group {}",
            opts.nflog_group
        ),
        format!("{denied} -j DROP"),
    ]
}

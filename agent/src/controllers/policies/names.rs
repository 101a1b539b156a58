//! Names of the kernel objects the policy controller owns. Hashed names
//! depend only on what identifies the object (policy, direction, rule
//! index, pod), never on its content, so a membership change is an ipset
//! add/del and a rule change rewrites one chain under the same name.

use sha2::{Digest, Sha256};

/// Tag in the comment of every rule we put into a built-in chain.
pub const OWNER_TAG: &str = "ipwarden:policies";
pub const CHAIN_INPUT: &str = "IPWARDEN-INPUT";
pub const CHAIN_FORWARD: &str = "IPWARDEN-FORWARD";
pub const CHAIN_OUTPUT: &str = "IPWARDEN-OUTPUT";
/// The dispatch chains: a goto per guarded local pod address to its pod
/// chain, on the destination (ingress) and on the source (egress).
pub const CHAIN_TO_POD: &str = "IPW-TO-POD";
pub const CHAIN_FROM_POD: &str = "IPW-FROM-POD";
/// hash:ip sets of the local pod addresses guarded in each direction: what
/// the top chains match before dispatching.
pub const SET_GUARDED_INGRESS: &str = "IPW-GUARDED-INGRESS";
pub const SET_GUARDED_EGRESS: &str = "IPW-GUARDED-EGRESS";
/// What every pod chain does first (conntrack, ICMP): one chain the pod
/// chains jump to, instead of the same lines in each of them.
pub const CHAIN_POD_COMMON: &str = "IPW-POD-COMMON";
/// Prefix of every set and of every per-pod and per-policy chain.
pub const PREFIX: &str = "IPW-";
const POD_CHAIN: &str = "IPW-POD-FW-";
const POLICY_CHAIN: &str = "IPW-NWPLCY-";
const CLUSTER_POLICY_CHAIN: &str = "IPW-CNP-";
/// Sets matched on the source address (ingress peers).
const SRC_SET: &str = "IPW-SRC-";
/// Sets matched on the destination (egress peers, named ports).
const DST_SET: &str = "IPW-DST-";

/// 16 characters of base32(sha256(parts)): 80 bits, so collisions among a
/// cluster's objects are not a concern, and `inet6:IPW-SRC-` + 16 fits the
/// 31-byte ipset name limit (chains: 27 of 28).
fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        // A separator no name contains, so ("ab","c") != ("a","bc").
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut s = data_encoding::BASE32_NOPAD.encode(&digest[..10]);
    s.truncate(16);
    s
}

pub fn pod_chain(namespace: &str, pod: &str) -> String {
    format!("{POD_CHAIN}{}", hash(&["pod", namespace, pod]))
}

pub fn policy_chain(namespace: &str, policy: &str, direction: &str) -> String {
    format!(
        "{POLICY_CHAIN}{}",
        hash(&["policy", namespace, policy, direction])
    )
}

/// The chain of one ClusterNetworkPolicy in one direction.
pub fn cluster_policy_chain(policy: &str, direction: &str) -> String {
    format!(
        "{CLUSTER_POLICY_CHAIN}{}",
        hash(&["cluster-policy", policy, direction])
    )
}

/// A set of one rule of one policy; `what` tells the sets of a rule apart
/// ("pods", "block-2", "port-1").
pub fn rule_set(
    on_source: bool,
    namespace: &str,
    policy: &str,
    direction: &str,
    rule: usize,
    what: &str,
) -> String {
    let prefix = if on_source { SRC_SET } else { DST_SET };
    let rule = rule.to_string();
    format!(
        "{prefix}{}",
        hash(&["set", namespace, policy, direction, &rule, what])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits_and_are_stable() {
        let c = pod_chain("x", "a");
        assert_eq!(c.len(), 27);
        assert_eq!(c, pod_chain("x", "a"));
        assert_ne!(c, pod_chain("x", "b"));
        assert_ne!(pod_chain("xa", ""), pod_chain("x", "a"));
        let s = rule_set(true, "x", "p", "ingress", 0, "pods");
        assert!(s.starts_with("IPW-SRC-") && format!("inet6:{s}").len() <= 31);
        assert!(policy_chain("x", "p", "egress").len() <= 28);
    }
}

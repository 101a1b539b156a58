//! ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2) builders for
//! the truth-table cases of cnp_netns.rs.

use serde_json::{json, Value};

use super::manifest::Selector;

/// One ClusterNetworkPolicy.
#[derive(Clone, Debug)]
pub struct ClusterPolicy {
    name: String,
    tier: &'static str,
    priority: i32,
    subject: Value,
    ingress: Vec<Value>,
    egress: Vec<Value>,
}

/// The subject `namespaces: SELECTOR`.
pub fn in_namespaces(selector: Selector) -> Value {
    json!({"namespaces": selector.to_json()})
}

/// The subject (or peer) `pods: {namespaceSelector, podSelector}`.
pub fn pods_of(namespaces: Selector, pods: Selector) -> Value {
    json!({"pods": {"namespaceSelector": namespaces.to_json(), "podSelector": pods.to_json()}})
}

/// The peer `networks: [...]` (egress only).
pub fn networks(cidrs: &[&str]) -> Value {
    json!({"networks": cidrs})
}

/// `protocols` entries.
pub fn tcp_port(n: u16) -> Value {
    json!({"tcp": {"destinationPort": {"number": n}}})
}
pub fn udp_port(n: u16) -> Value {
    json!({"udp": {"destinationPort": {"number": n}}})
}
pub fn tcp_range(start: u16, end: u16) -> Value {
    json!({"tcp": {"destinationPort": {"range": {"start": start, "end": end}}}})
}
pub fn udp_any() -> Value {
    json!({"udp": {}})
}
pub fn named_port(name: &str) -> Value {
    json!({"destinationNamedPort": name})
}

impl ClusterPolicy {
    fn new(name: &str, tier: &'static str, priority: i32, subject: Value) -> ClusterPolicy {
        ClusterPolicy {
            name: name.into(),
            tier,
            priority,
            subject,
            ingress: Vec::new(),
            egress: Vec::new(),
        }
    }

    pub fn admin(name: &str, priority: i32, subject: Value) -> ClusterPolicy {
        ClusterPolicy::new(name, "Admin", priority, subject)
    }

    pub fn baseline(name: &str, priority: i32, subject: Value) -> ClusterPolicy {
        ClusterPolicy::new(name, "Baseline", priority, subject)
    }

    /// An ingress rule: `action` ("Accept", "Deny", "Pass") from `peers`,
    /// on `protocols` (none: every port).
    pub fn ingress(mut self, action: &str, peers: &[Value], protocols: &[Value]) -> ClusterPolicy {
        let rule = rule(self.ingress.len(), action, "from", peers, protocols);
        self.ingress.push(rule);
        self
    }

    pub fn egress(mut self, action: &str, peers: &[Value], protocols: &[Value]) -> ClusterPolicy {
        let rule = rule(self.egress.len(), action, "to", peers, protocols);
        self.egress.push(rule);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut spec = json!({
            "tier": self.tier,
            "priority": self.priority,
            "subject": self.subject,
        });
        if !self.ingress.is_empty() {
            spec["ingress"] = json!(self.ingress);
        }
        if !self.egress.is_empty() {
            spec["egress"] = json!(self.egress);
        }
        json!({
            "apiVersion": "policy.networking.k8s.io/v1alpha2",
            "kind": "ClusterNetworkPolicy",
            "metadata": {"name": self.name},
            "spec": spec,
        })
    }
}

fn rule(index: usize, action: &str, key: &str, peers: &[Value], protocols: &[Value]) -> Value {
    let mut r = json!({"name": format!("rule-{index}"), "action": action, key: peers});
    if !protocols.is_empty() {
        r["protocols"] = json!(protocols);
    }
    r
}

pub fn sctp_port(n: u16) -> Value {
    json!({"sctp": {"destinationPort": {"number": n}}})
}

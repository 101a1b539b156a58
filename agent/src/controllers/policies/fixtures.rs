//! Builders for the objects a policy test is about, so each test shows
//! its whole cluster: `snapshot([namespace("x", ..), pod("x", "a", ..)])`.

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use serde_json::{json, Value};

use crate::cluster::{HostInfo, KubeObject, Snapshot};

pub const NODE: &str = "node-a";

pub fn snapshot(objects: impl IntoIterator<Item = KubeObject>) -> Snapshot {
    Snapshot::from_objects(
        objects,
        HostInfo {
            node_name: NODE.into(),
            local_addresses: vec!["192.168.56.10".parse().unwrap()],
        },
    )
}

pub fn namespace(name: &str, labels: Value) -> KubeObject {
    let ns: Namespace = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels}
    }))
    .unwrap();
    KubeObject::Namespace(Box::new(ns))
}

/// A running pod; `ips` may hold an IPv4 and an IPv6 address.
pub struct PodBuilder(Value);

pub fn pod(ns: &str, name: &str, labels: Value, ips: &[&str]) -> PodBuilder {
    PodBuilder(json!({
        "metadata": {"namespace": ns, "name": name, "labels": labels},
        "spec": {"nodeName": NODE, "containers": [{"name": "c", "ports": []}]},
        "status": {
            "phase": "Running",
            "podIP": ips.first(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        }
    }))
}

impl PodBuilder {
    pub fn on(mut self, node: &str) -> Self {
        self.0["spec"]["nodeName"] = json!(node);
        self
    }

    pub fn port(mut self, name: &str, port: u16, proto: &str) -> Self {
        let ports = self.0["spec"]["containers"][0]["ports"]
            .as_array_mut()
            .unwrap();
        ports.push(json!({"name": name, "containerPort": port, "protocol": proto}));
        self
    }

    pub fn host_network(mut self) -> Self {
        self.0["spec"]["hostNetwork"] = json!(true);
        self
    }

    pub fn phase(mut self, phase: &str) -> Self {
        self.0["status"]["phase"] = json!(phase);
        self
    }

    pub fn build(self) -> KubeObject {
        let p: Pod = serde_json::from_value(self.0).unwrap();
        KubeObject::Pod(Box::new(p))
    }
}

/// A NetworkPolicy with `spec` written as in a manifest.
pub fn policy(ns: &str, name: &str, spec: Value) -> KubeObject {
    let np: NetworkPolicy = serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .unwrap();
    KubeObject::NetworkPolicy(Box::new(np))
}

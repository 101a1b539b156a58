//! A Pod as the policy controller and `/state` read it.

use k8s_openapi::api::core::v1 as k8s;

use super::{common, text, Meta, Shared, Text, Texts};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    /// Every label: any may be selected.
    pub metadata: Meta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSpec {
    pub node_name: Option<Shared>,
    pub host_network: Option<bool>,
    /// The named ports of every container (policies read no other).
    pub ports: Box<[ContainerPort]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Shared,
    pub protocol: Option<Shared>,
    pub container_port: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodStatus {
    pub phase: Option<Shared>,
    pub pod_ip: Option<Text>,
    /// status.podIPs[].ip.
    pub pod_ips: Option<Texts>,
}

impl From<k8s::Pod> for Pod {
    fn from(p: k8s::Pod) -> Self {
        Self {
            metadata: Meta::kept(p.metadata, |_| true),
            spec: p.spec.map(PodSpec::from),
            status: p.status.map(|s| PodStatus {
                phase: s.phase.map(common),
                pod_ip: s.pod_ip.map(text),
                pod_ips: s
                    .pod_ips
                    .map(|ips| ips.into_iter().map(|a| text(a.ip)).collect()),
            }),
        }
    }
}

impl From<k8s::PodSpec> for PodSpec {
    fn from(s: k8s::PodSpec) -> Self {
        let named = s
            .containers
            .into_iter()
            .flat_map(|c| c.ports.unwrap_or_default())
            .filter_map(|p| {
                Some(ContainerPort {
                    name: common(p.name?),
                    protocol: p.protocol.map(common),
                    container_port: p.container_port,
                })
            });
        Self {
            node_name: s.node_name.map(common),
            host_network: s.host_network,
            ports: named.collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_pod_keeps_labels_node_host_network_named_ports_phase_and_ips() {
        let pod: k8s::Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "a", "uid": "u", "labels": {"tier": "api", "app": "x"}},
            "spec": {"nodeName": "n", "hostNetwork": false, "serviceAccountName": "sa",
                "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "b"}],
                    "ports": [{"name": "http", "containerPort": 80}, {"containerPort": 81}]},
                    {"name": "side", "image": "j"},
                    {"name": "metrics", "image": "k",
                        "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1",
                "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}],
                "hostIP": "192.168.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let kept = Pod::from(pod);
        let labels: Vec<_> = kept.metadata.labels.iter().collect();
        assert_eq!(labels, [("app", "x"), ("tier", "api")], "sorted by key");
        assert_eq!(kept.metadata.labels.get("tier"), Some("api"));
        let spec = kept.spec.unwrap();
        assert_eq!(
            (spec.node_name.as_deref(), spec.host_network),
            (Some("n"), Some(false))
        );
        let ports: Vec<_> = spec
            .ports
            .iter()
            .map(|p| (&*p.name, p.protocol.as_deref(), p.container_port))
            .collect();
        assert_eq!(ports, [("http", None, 80), ("metrics", Some("TCP"), 9090)]);
        let status = kept.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        let ips: Vec<&str> = status.pod_ips.iter().flatten().map(|a| &**a).collect();
        assert_eq!(ips, ["10.0.0.1", "fd00::1"]);
    }
}

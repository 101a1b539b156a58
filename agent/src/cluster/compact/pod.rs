//! A Pod as the policy controller and `/state` read it.

use k8s_openapi::api::core::v1 as k8s;

use super::{text, Meta, Text, Texts};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pod {
    /// Every label: any may be selected.
    pub metadata: Meta,
    pub spec: Option<PodSpec>,
    pub status: Option<PodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodSpec {
    pub node_name: Option<Text>,
    pub host_network: Option<bool>,
    /// The named ports of every container (policies read no other).
    pub ports: Box<[ContainerPort]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Text,
    pub protocol: Option<Text>,
    pub container_port: i32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodStatus {
    pub phase: Option<Text>,
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
                phase: s.phase.map(text),
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
                    name: text(p.name?),
                    protocol: p.protocol.map(text),
                    container_port: p.container_port,
                })
            });
        Self {
            node_name: s.node_name.map(text),
            host_network: s.host_network,
            ports: named.collect(),
        }
    }
}

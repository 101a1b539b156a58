//! The cluster the bench serves: the generated pods and NetworkPolicies
//! (common::cluster), and N Services of one TCP port, each with one
//! EndpointSlice of three ready endpoints taken from the pods.

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::{
    common::cluster::{generate, namespace_name, Generated},
    fake_apiserver::Res,
    lab_apiserver::Kube,
};

/// Endpoints per Service.
pub const ENDPOINTS: usize = 3;

pub struct Cluster {
    pub generated: Generated,
    pub services: usize,
}

impl Cluster {
    pub fn new(services: usize, pods: usize, policies: usize, namespaces: usize) -> Cluster {
        Cluster {
            generated: generate(pods, policies, namespaces, 1),
            services,
        }
    }

    /// Serves every object: namespaces, the node, pods, policies, then
    /// each Service with its slice.
    pub fn serve(&self, kube: &Kube) {
        let g = &self.generated;
        for ns in &g.namespaces {
            kube.apply(Res::Namespaces, ns.clone());
        }
        kube.apply(Res::Nodes, node());
        for pod in &g.pods {
            kube.apply(Res::Pods, pod.clone());
        }
        for policy in &g.policies {
            kube.apply(Res::NetworkPolicies, policy.clone());
        }
        for i in 0..self.services {
            kube.apply(Res::Services, self.service(i, false));
            kube.apply(Res::EndpointSlices, self.slice(i));
        }
    }

    fn namespace_of(&self, i: usize) -> String {
        namespace_name(i % self.generated.namespaces.len())
    }

    /// Service `i`: ClusterIP 10.96.0.0 + 16 + i, TCP 80 -> 8080; with
    /// `external`, also its externalIP ([`external_ip`]).
    pub fn service(&self, i: usize, external: bool) -> Value {
        let cluster_ip = offset(Ipv4Addr::new(10, 96, 0, 16), i).to_string();
        let externals: Vec<String> = if external {
            vec![external_ip(i).to_string()]
        } else {
            Vec::new()
        };
        json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": self.namespace_of(i)},
            "spec": {"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "externalIPs": externals,
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
        })
    }

    /// Service `i`'s slice: three pods (wherever they run), ready.
    pub fn slice(&self, i: usize) -> Value {
        let pods = &self.generated.pods;
        let endpoints: Vec<Value> = (0..ENDPOINTS)
            .map(|k| {
                let pod = &pods[(i * ENDPOINTS + k) % pods.len()];
                json!({
                    "addresses": [pod["status"]["podIP"]],
                    "conditions": {"ready": true, "serving": true, "terminating": false},
                    "nodeName": pod["spec"]["nodeName"],
                    "targetRef": {"kind": "Pod", "namespace": pod["metadata"]["namespace"],
                        "name": pod["metadata"]["name"]},
                })
            })
            .collect();
        json!({
            "metadata": {"name": format!("svc-{i}-x7k2p"), "namespace": self.namespace_of(i),
                "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints,
        })
    }
}

/// The externalIP Service `i` gains and loses: 100.64.0.0 + i.
pub fn external_ip(i: usize) -> Ipv4Addr {
    offset(Ipv4Addr::new(100, 64, 0, 0), i)
}

fn offset(base: Ipv4Addr, i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + i as u32)
}

/// This node, as the lab builds it: InternalIP 10.0.1.1.
fn node() -> Value {
    json!({"metadata": {"name": "node-a"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.1"}]}})
}

//! A Service as the service controller reads it.

use k8s_openapi::api::core::v1 as k8s;

use super::{common, text, texts, Meta, Shared, Text, Texts};

/// Labels of a Service a controller reads (service-proxy-name, headless).
const SERVICE_LABELS: &str = "service.kubernetes.io/";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Service {
    pub metadata: Meta,
    pub spec: Option<ServiceSpec>,
    /// status.loadBalancer.ingress.
    pub ingress: Box<[LoadBalancerIngress]>,
}

/// The spec fields the controller reads, named as in the API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    pub type_: Option<Shared>,
    pub cluster_ip: Option<Text>,
    pub cluster_ips: Option<Texts>,
    pub external_ips: Option<Texts>,
    pub ip_families: Option<Box<[Shared]>>,
    pub load_balancer_source_ranges: Option<Texts>,
    pub external_traffic_policy: Option<Shared>,
    pub internal_traffic_policy: Option<Shared>,
    pub health_check_node_port: Option<i32>,
    pub session_affinity: Option<Shared>,
    /// sessionAffinityConfig.clientIP.timeoutSeconds.
    pub affinity_timeout_seconds: Option<i32>,
    pub ports: Box<[ServicePort]>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServicePort {
    pub name: Option<Shared>,
    pub protocol: Option<Shared>,
    pub port: i32,
    pub node_port: Option<i32>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadBalancerIngress {
    pub ip: Option<Text>,
    pub ip_mode: Option<Shared>,
}

impl From<k8s::Service> for Service {
    fn from(s: k8s::Service) -> Self {
        let ingress = s
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default();
        Self {
            metadata: Meta::kept(s.metadata, |k| k.strip_prefix(SERVICE_LABELS).is_some()),
            spec: s.spec.map(ServiceSpec::from),
            ingress: ingress
                .into_iter()
                .map(|i| LoadBalancerIngress {
                    ip: i.ip.map(text),
                    ip_mode: i.ip_mode.map(common),
                })
                .collect(),
        }
    }
}

impl From<k8s::ServiceSpec> for ServiceSpec {
    fn from(s: k8s::ServiceSpec) -> Self {
        Self {
            type_: s.type_.map(common),
            cluster_ip: s.cluster_ip.map(text),
            cluster_ips: s.cluster_ips.map(texts),
            external_ips: s.external_ips.map(texts),
            ip_families: s.ip_families.map(|f| f.into_iter().map(common).collect()),
            load_balancer_source_ranges: s.load_balancer_source_ranges.map(texts),
            external_traffic_policy: s.external_traffic_policy.map(common),
            internal_traffic_policy: s.internal_traffic_policy.map(common),
            health_check_node_port: s.health_check_node_port,
            session_affinity: s.session_affinity.map(common),
            affinity_timeout_seconds: s
                .session_affinity_config
                .and_then(|c| c.client_ip)
                .and_then(|c| c.timeout_seconds),
            ports: s
                .ports
                .into_iter()
                .flatten()
                .map(|p| ServicePort {
                    name: p.name.map(common),
                    protocol: p.protocol.map(common),
                    port: p.port,
                    node_port: p.node_port,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_service_keeps_its_identity_frontends_ports_and_the_labels_and_annotations_read() {
        let svc: k8s::Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u", "resourceVersion": "9",
                "labels": {"app": "web", "service.kubernetes.io/headless": ""},
                "annotations": {"kube-router.io/service.scheduler": "sh",
                    "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"type": "LoadBalancer", "clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1"],
                "selector": {"app": "web"}, "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 32000, "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1", "hostname": "lb"}]}}
        }))
        .unwrap();
        let kept = Service::from(svc);
        assert_eq!(kept.metadata.name(), "web");
        assert_eq!(kept.metadata.namespace(), Some("shop"));
        let labels: Vec<_> = kept.metadata.labels.iter().collect();
        assert_eq!(labels, [("service.kubernetes.io/headless", "")]);
        let annotations: Vec<_> = kept.metadata.annotations.iter().collect();
        assert_eq!(annotations, [("kube-router.io/service.scheduler", "sh")]);
        let spec = kept.spec.unwrap();
        assert_eq!(spec.affinity_timeout_seconds, Some(60));
        assert_eq!(spec.health_check_node_port, Some(32000));
        assert_eq!(
            spec.ports[..],
            [ServicePort {
                name: Some("http".into()),
                protocol: None,
                port: 80,
                node_port: Some(30080)
            }]
        );
        assert_eq!(kept.ingress[0].ip.as_deref(), Some("203.0.113.1"));
    }
}

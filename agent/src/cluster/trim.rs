//! What the controllers read, and nothing else: objects are trimmed before
//! they are stored, so a big cluster costs the agent as little memory as it
//! can (a Pod's managedFields alone are often larger than everything kept).
//!
//! The API server's stores hold Services, EndpointSlices and Pods as
//! compact types ([`super::compact`], which keep the same fields); these
//! trims serve the other kinds, and the manifests source, which holds each
//! file's objects as k8s-openapi types.
//!
//! Trimming also drops `resourceVersion`, so an update that changes nothing
//! the controllers read compares equal to the stored object and is not
//! passed on (Pod status churn, Node heartbeats).
//!
//! **A controller that starts reading a field must keep it here.** The test
//! `trimmed_objects_give_the_same_desired_state` guards the fixtures.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            Container, ContainerPort, LoadBalancerIngress, LoadBalancerStatus, Namespace, Node,
            NodeSpec, NodeStatus, Pod, PodSpec, PodStatus, Service, ServiceSpec, ServiceStatus,
        },
        discovery::v1::{Endpoint, EndpointSlice},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::KubeObject;

/// Annotations a controller reads (a trailing `/` is a prefix).
pub const KEPT_ANNOTATIONS: &[&str] = &[
    "kube-router.io/",
    "ipwarden.io/",
    "service.kubernetes.io/",
    "endpoints.kubernetes.io/last-change-trigger-time",
];

/// Labels of a Service a controller reads (service-proxy-name, headless).
const SERVICE_LABELS: &str = "service.kubernetes.io/";
/// The one label of an EndpointSlice a controller reads.
const SLICE_SERVICE_LABEL: &str = "kubernetes.io/service-name";

/// Drops what the controllers do not read, in place.
pub trait Trim {
    fn trim(&mut self);
}

/// Is `key` an annotation a controller reads?
pub fn kept_annotation(key: &str) -> bool {
    kept(KEPT_ANNOTATIONS, key)
}

fn kept(names: &[&str], key: &str) -> bool {
    names.iter().any(|n| match n.strip_suffix('/') {
        Some(prefix) => key.starts_with(prefix) && key[prefix.len()..].starts_with('/'),
        None => key == *n,
    })
}

fn filter_map(
    map: Option<BTreeMap<String, String>>,
    keep: impl Fn(&str) -> bool,
) -> Option<BTreeMap<String, String>> {
    let map: BTreeMap<String, String> = map?.into_iter().filter(|(k, _)| keep(k)).collect();
    (!map.is_empty()).then_some(map)
}

/// Name, namespace, the labels `labels` keeps, and the annotations the
/// controllers read. Everything else (managedFields, uid, resourceVersion,
/// ownerReferences, timestamps, finalizers...) goes.
fn trim_meta(meta: &mut ObjectMeta, labels: impl Fn(&str) -> bool) {
    let old = std::mem::take(meta);
    *meta = ObjectMeta {
        name: old.name,
        namespace: old.namespace,
        labels: filter_map(old.labels, labels),
        annotations: filter_map(old.annotations, |k| kept(KEPT_ANNOTATIONS, k)),
        ..ObjectMeta::default()
    };
}

impl Trim for Service {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata, |k| {
            k.strip_prefix(SERVICE_LABELS).is_some()
        });
        if let Some(spec) = self.spec.take() {
            self.spec = Some(ServiceSpec {
                cluster_ip: spec.cluster_ip,
                cluster_ips: spec.cluster_ips,
                external_ips: spec.external_ips,
                external_traffic_policy: spec.external_traffic_policy,
                health_check_node_port: spec.health_check_node_port,
                internal_traffic_policy: spec.internal_traffic_policy,
                ip_families: spec.ip_families,
                load_balancer_source_ranges: spec.load_balancer_source_ranges,
                ports: spec.ports,
                session_affinity: spec.session_affinity,
                session_affinity_config: spec.session_affinity_config,
                type_: spec.type_,
                ..ServiceSpec::default()
            });
        }
        let ingress = self
            .status
            .take()
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress);
        if let Some(ingress) = ingress {
            self.status = Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(
                        ingress
                            .into_iter()
                            .map(|i| LoadBalancerIngress {
                                ip: i.ip,
                                ip_mode: i.ip_mode,
                                ..LoadBalancerIngress::default()
                            })
                            .collect(),
                    ),
                }),
                ..ServiceStatus::default()
            });
        }
    }
}

impl Trim for EndpointSlice {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata, |k| k == SLICE_SERVICE_LABEL);
        for ep in &mut self.endpoints {
            let old = std::mem::take(ep);
            *ep = Endpoint {
                addresses: old.addresses,
                conditions: old.conditions,
                node_name: old.node_name,
                ..Endpoint::default()
            };
        }
    }
}

impl Trim for Pod {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata, |_| true);
        if let Some(spec) = self.spec.take() {
            // Policies read named ports only, from any container: they are
            // kept in one container, as each `Container` is 2 KiB wide.
            let named: Vec<ContainerPort> = spec
                .containers
                .into_iter()
                .flat_map(|c| c.ports.unwrap_or_default())
                .filter(|p| p.name.is_some())
                .collect();
            let containers = if named.is_empty() {
                Vec::new()
            } else {
                vec![Container {
                    ports: Some(named),
                    ..Container::default()
                }]
            };
            self.spec = Some(PodSpec {
                node_name: spec.node_name,
                host_network: spec.host_network,
                containers,
                ..PodSpec::default()
            });
        }
        if let Some(status) = self.status.take() {
            self.status = Some(PodStatus {
                phase: status.phase,
                pod_ip: status.pod_ip,
                pod_ips: status.pod_ips,
                ..PodStatus::default()
            });
        }
    }
}

impl Trim for KubeObject {
    fn trim(&mut self) {
        match self {
            KubeObject::Service(o) => o.trim(),
            KubeObject::EndpointSlice(o) => o.trim(),
            KubeObject::Pod(o) => o.trim(),
            KubeObject::Namespace(o) => o.trim(),
            KubeObject::NetworkPolicy(o) => o.trim(),
            KubeObject::ClusterNetworkPolicy(o) => o.trim(),
            KubeObject::Node(o) => o.trim(),
        }
    }
}

impl Trim for Namespace {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata, |_| true);
        self.spec = None;
        self.status = None;
    }
}

impl Trim for NetworkPolicy {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata, |_| false);
    }
}

impl Trim for super::cnp::ClusterNetworkPolicy {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata, |_| false);
    }
}

impl Trim for Node {
    fn trim(&mut self) {
        trim_meta(&mut self.metadata, |_| false);
        // The pod CIDRs: traffic from them needs no masquerade.
        self.spec = self.spec.take().and_then(|s| {
            (s.pod_cidr.is_some() || s.pod_cidrs.is_some()).then(|| NodeSpec {
                pod_cidr: s.pod_cidr,
                pod_cidrs: s.pod_cidrs,
                ..NodeSpec::default()
            })
        });
        let addresses = self.status.take().and_then(|s| s.addresses);
        self.status = addresses.map(|a| NodeStatus {
            addresses: Some(a),
            ..NodeStatus::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use serde_json::{json, Value};

    use super::*;
    use crate::{
        cluster::{manifests, HostInfo, KubeObject, Snapshot},
        controllers::{policies, services},
    };

    fn trim(o: &KubeObject) -> KubeObject {
        let mut o = o.clone();
        o.trim();
        o
    }

    /// What an API server adds to every object, which nobody reads.
    fn noise(mut v: Value) -> Value {
        let m = &mut v["metadata"];
        m["uid"] = json!("7f4e6b9a-1111-2222-3333-444455556666");
        m["resourceVersion"] = json!("123456");
        m["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        m["managedFields"] = json!([{"manager": "kubectl", "operation": "Update",
            "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}]);
        let mut ann = m["annotations"].as_object().cloned().unwrap_or_default();
        ann.insert(
            "kubectl.kubernetes.io/last-applied-configuration".into(),
            json!("{\"a\": \"very long string\"}"),
        );
        m["annotations"] = Value::Object(ann);
        v
    }

    fn cluster() -> Vec<KubeObject> {
        let mut loaded = manifests::Loaded::default();
        for (name, text) in [
            (
                "services.yaml",
                include_str!("../../tests/fixtures/services/cluster.yaml"),
            ),
            (
                "proxy.yaml",
                include_str!("../../tests/fixtures/proxy/cluster.yaml"),
            ),
            ("policies.yaml", POLICY_CLUSTER),
            ("health.yaml", HEALTH_CHECKED),
        ] {
            let mut one = manifests::Loaded::default();
            manifests::parse_text(Path::new(name), text, &mut one);
            assert!(one.problems.is_empty(), "{:?}", one.problems);
            loaded.objects.extend(one.objects);
        }
        loaded
            .objects
            .iter()
            .map(|o| {
                let v = noise(serde_json::to_value(o_json(o)).unwrap());
                reparse(o, v)
            })
            .collect()
    }

    fn o_json(o: &KubeObject) -> Value {
        match o {
            KubeObject::Service(x) => serde_json::to_value(x).unwrap(),
            KubeObject::EndpointSlice(x) => serde_json::to_value(x).unwrap(),
            KubeObject::Pod(x) => serde_json::to_value(x).unwrap(),
            KubeObject::Namespace(x) => serde_json::to_value(x).unwrap(),
            KubeObject::NetworkPolicy(x) => serde_json::to_value(x).unwrap(),
            KubeObject::ClusterNetworkPolicy(x) => serde_json::to_value(x).unwrap(),
            KubeObject::Node(x) => serde_json::to_value(x).unwrap(),
        }
    }

    fn reparse(o: &KubeObject, v: Value) -> KubeObject {
        match o {
            KubeObject::Service(_) => KubeObject::Service(serde_json::from_value(v).unwrap()),
            KubeObject::EndpointSlice(_) => {
                KubeObject::EndpointSlice(serde_json::from_value(v).unwrap())
            }
            KubeObject::Pod(_) => KubeObject::Pod(serde_json::from_value(v).unwrap()),
            KubeObject::Namespace(_) => KubeObject::Namespace(serde_json::from_value(v).unwrap()),
            KubeObject::NetworkPolicy(_) => {
                KubeObject::NetworkPolicy(serde_json::from_value(v).unwrap())
            }
            KubeObject::ClusterNetworkPolicy(_) => {
                KubeObject::ClusterNetworkPolicy(serde_json::from_value(v).unwrap())
            }
            KubeObject::Node(_) => KubeObject::Node(serde_json::from_value(v).unwrap()),
        }
    }

    /// A LoadBalancer of policy Local: its health check port must survive.
    const HEALTH_CHECKED: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: shop}
spec:
  type: LoadBalancer
  clusterIP: 10.96.7.1
  externalTrafficPolicy: Local
  healthCheckNodePort: 32111
  ports:
  - {name: http, port: 80, targetPort: 8080, nodePort: 30111, protocol: TCP}
status:
  loadBalancer:
    ingress: [{ip: 198.51.100.77}]
"#;

    /// Pods with ports, host network, finished phases, dual-stack IPs, and
    /// policies with named ports and namespace selectors.
    const POLICY_CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: a}}
---
apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec:
  nodeName: node-a
  containers:
  - name: side
    image: busybox
    command: [sleep, "1000"]
  - name: web
    image: nginx
    ports: [{name: http, containerPort: 8080, protocol: TCP}]
    env: [{name: A, value: b}]
status:
  phase: Running
  hostIP: 192.168.56.10
  podIP: 10.244.1.2
  podIPs: [{ip: 10.244.1.2}, {ip: "fd00:244::2"}]
  conditions: [{type: Ready, status: "True"}]
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec:
  nodeName: node-b
  containers: [{name: db, image: pg, ports: [{name: pg, containerPort: 5432}]}]
status: {phase: Running, podIP: 10.244.2.2}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: ops, labels: {app: host}}
spec: {nodeName: node-a, hostNetwork: true, containers: [{name: h, image: x}]}
status: {phase: Running, podIP: 192.168.56.10}
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: ops, labels: {app: web}}
spec: {nodeName: node-a, containers: [{name: d, image: x}]}
status: {phase: Succeeded, podIP: 10.244.1.9}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: shop, labels: {x: y}}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {app: db}}}]
    ports: [{port: http}]
  egress:
  - to: [{ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}]
    ports: [{port: 5432, protocol: TCP}]
"#;

    fn host() -> HostInfo {
        HostInfo {
            node_name: "node-a".into(),
            local_addresses: vec!["192.168.56.10".parse().unwrap()],
        }
    }

    #[test]
    fn trimmed_objects_give_the_same_desired_state() {
        let full = cluster();
        let trimmed: Vec<KubeObject> = full.iter().map(trim).collect();
        let a = Snapshot::from_objects(full, host());
        let b = Snapshot::from_objects(trimmed, host());
        assert!(!a.services.is_empty() && !a.pods.is_empty() && a.node.is_some());
        assert_eq!(services::desired(&a), services::desired(&b));
        let sa = services::desired(&a);
        assert_eq!(sa.health_checks.len(), 1, "healthCheckNodePort survives");
        let opts = policies::Options::default();
        let (pa, pb) = (policies::desired(&a, &opts), policies::desired(&b, &opts));
        assert!(!pa.sets.is_empty(), "the policy cluster programs something");
        assert_eq!(pa, pb);
    }

    #[test]
    fn a_node_keeps_its_pod_cidrs_and_addresses_only() {
        let mut node: Node = serde_json::from_value(noise(json!({
            "metadata": {"name": "node-a"},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:244:1::/64"],
                "providerID": "cloud://x"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.1.1"}],
                "capacity": {"cpu": "2"}}
        })))
        .unwrap();
        node.trim();
        let spec = node.spec.as_ref().unwrap();
        assert_eq!(spec.pod_cidrs.as_ref().unwrap().len(), 2);
        assert_eq!(spec.provider_id, None);
        assert_eq!(node.status.as_ref().unwrap().capacity, None);
    }

    #[test]
    fn managed_fields_and_foreign_annotations_go_kept_ones_stay() {
        let mut svc: Service = serde_json::from_value(noise(json!({
            "metadata": {"name": "web", "namespace": "shop",
                "labels": {"app": "web", "service.kubernetes.io/headless": ""},
                "annotations": {"kube-router.io/service.scheduler": "lc",
                    "ipwarden.io/service.schedflags": "flag-1",
                    "endpoints.kubernetes.io/last-change-trigger-time": "2026-01-01T00:00:00Z",
                    "kube-router.io.evil/x": "no",
                    "example.com/owner": "team-a"}},
            "spec": {"selector": {"app": "web"}, "clusterIP": "10.96.0.1",
                "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.1",
                "hostname": "lb.example.com"}]}}
        })))
        .unwrap();
        svc.trim();
        let m = &svc.metadata;
        assert_eq!(m.managed_fields, None);
        assert_eq!(m.resource_version, None);
        assert_eq!(m.uid, None);
        let ann: Vec<&str> = m
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(
            ann,
            [
                "endpoints.kubernetes.io/last-change-trigger-time",
                "ipwarden.io/service.schedflags",
                "kube-router.io/service.scheduler"
            ]
        );
        let labels: Vec<&str> = m.labels.iter().flatten().map(|(k, _)| k.as_str()).collect();
        assert_eq!(labels, ["service.kubernetes.io/headless"]);
        let spec = svc.spec.as_ref().unwrap();
        assert_eq!(spec.selector, None);
        assert_eq!(spec.cluster_ip.as_deref(), Some("10.96.0.1"));
        let ingress = &svc.status.unwrap().load_balancer.unwrap().ingress.unwrap()[0];
        assert_eq!(
            (ingress.ip.as_deref(), ingress.hostname.as_deref()),
            (Some("203.0.113.1"), None)
        );
    }

    #[test]
    fn a_pod_keeps_node_host_network_named_ports_in_one_container_phase_and_ips() {
        let mut pod: Pod = serde_json::from_value(noise(json!({
            "metadata": {"name": "p", "namespace": "a", "labels": {"app": "x"}},
            "spec": {"nodeName": "n", "hostNetwork": false, "serviceAccountName": "sa",
                "containers": [{"name": "c", "image": "i", "env": [{"name": "A", "value": "b"}],
                    "ports": [{"name": "http", "containerPort": 80}, {"containerPort": 81}]},
                    {"name": "side", "image": "j"},
                    {"name": "metrics", "image": "k",
                        "ports": [{"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                "hostIP": "192.168.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        })))
        .unwrap();
        pod.trim();
        let trimmed = serde_json::to_value(&pod).unwrap();
        assert_eq!(
            trimmed,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "a", "labels": {"app": "x"}},
                "spec": {"nodeName": "n", "hostNetwork": false,
                    "containers": [{"name": "", "ports": [{"name": "http", "containerPort": 80},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"}]}]},
                "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}]}
            })
        );
    }
}

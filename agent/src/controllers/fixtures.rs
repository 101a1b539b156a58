//! Builders for the objects a controller test is about, so each test shows
//! its whole cluster:
//!
//! ```text
//! snapshot([
//!     service("shop", "web").cluster_ip("10.96.0.10").port("http", 80, 8080, "TCP").build(),
//!     slice("shop", "web").port("http", 8080, "TCP").endpoint("10.244.1.5", Ready).on(NODE).build(),
//! ])
//! ```
//!
//! Objects are k8s-openapi types read from JSON written as in a manifest,
//! so a test sees what a user would write; fields a builder does not set
//! are left out, as the API server would.

use k8s_openapi::api::{
    core::v1::{Namespace, Node, Pod, Service},
    discovery::v1::EndpointSlice,
    networking::v1::NetworkPolicy,
};
use serde_json::{json, Value};

use crate::cluster::{HostInfo, KubeObject, Snapshot};

/// The node the controllers run on.
pub const NODE: &str = "node-a";

/// The cluster as `NODE` sees it, with one address on its interfaces.
pub fn snapshot(objects: impl IntoIterator<Item = KubeObject>) -> Snapshot {
    snapshot_with_addresses(&["192.168.56.10"], objects)
}

/// The cluster as `NODE` sees it, with `addresses` on its interfaces
/// (what `ipwarden-local-ips` is made of).
pub fn snapshot_with_addresses(
    addresses: &[&str],
    objects: impl IntoIterator<Item = KubeObject>,
) -> Snapshot {
    Snapshot::from_objects(objects, host(addresses))
}

fn host(addresses: &[&str]) -> HostInfo {
    HostInfo {
        node_name: NODE.into(),
        local_addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
    }
}

/// Snapshots of `objects` as given and in each of [`reorderings`], built
/// without the sort `Snapshot::from_objects` does, so a controller run on
/// them sees each order. Each must hold its objects in an order other than
/// the sorted one, so a test on them cannot quietly check the sort again.
pub fn unsorted_snapshots(objects: &[KubeObject]) -> Vec<Snapshot> {
    let sorted = object_order(&snapshot(objects.to_vec()));
    std::iter::once(objects.to_vec())
        .chain(reorderings(objects))
        .map(|order| {
            let s = Snapshot::in_given_order(order, host(&["192.168.56.10"]));
            assert_ne!(object_order(&s), sorted, "an order the sort would give");
            s
        })
        .collect()
}

/// "kind namespace/name" of every object, in the order `s` holds them.
pub fn object_order(s: &Snapshot) -> Vec<String> {
    use crate::cluster::compact::Stored;
    fn named(kind: &str, o: &impl Stored) -> String {
        let (ns, name) = o.key();
        format!("{kind} {ns}/{name}")
    }
    let services = s.services.iter().map(|o| named("Service", &**o));
    let slices = s
        .endpoint_slices
        .iter()
        .map(|o| named("EndpointSlice", &**o));
    let pods = s.pods.iter().map(|o| named("Pod", &**o));
    let namespaces = s.namespaces.iter().map(|o| named("Namespace", &**o));
    let policies = s
        .network_policies
        .iter()
        .map(|o| named("NetworkPolicy", &**o));
    services
        .chain(slices)
        .chain(pods)
        .chain(namespaces)
        .chain(policies)
        .collect()
}

/// The same objects in other orders: reversed, rotated by one, and every
/// other one first. A pure controller gives the same state for each.
pub fn reorderings(objects: &[KubeObject]) -> Vec<Vec<KubeObject>> {
    let reversed = objects.iter().rev().cloned().collect();
    let mut rotated = objects.to_vec();
    if !rotated.is_empty() {
        rotated.rotate_left(1);
    }
    let interleaved = objects
        .iter()
        .step_by(2)
        .chain(objects.iter().skip(1).step_by(2))
        .cloned()
        .collect();
    vec![reversed, rotated, interleaved]
}

fn from_json<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap()
}

/// Appends `item` to the list at `list`, creating the list if absent.
fn push(list: &mut Value, item: Value) {
    match list {
        Value::Array(items) => items.push(item),
        _ => *list = json!([item]),
    }
}

/// The last element of the list at `list`, which a builder step added.
fn last(list: &mut Value) -> &mut Value {
    list.as_array_mut()
        .and_then(|items| items.last_mut())
        .expect("add an item before setting its fields")
}

/// A Node with InternalIP `addresses` (one per family, first wins).
pub fn node(name: &str, addresses: &[&str]) -> KubeObject {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|a| json!({"type": "InternalIP", "address": a}))
        .collect();
    KubeObject::Node(Box::new(from_json::<Node>(json!({
        "metadata": {"name": name},
        "status": {"addresses": addresses},
    }))))
}

/// A Node with `addresses` and `spec.podCIDRs`.
pub fn node_with_pod_cidrs(name: &str, addresses: &[&str], cidrs: &[&str]) -> KubeObject {
    let KubeObject::Node(mut n) = node(name, addresses) else {
        unreachable!("node() builds a Node")
    };
    n.spec = Some(from_json(json!({ "podCIDRs": cidrs })));
    KubeObject::Node(n)
}

pub fn namespace(name: &str, labels: Value) -> KubeObject {
    KubeObject::Namespace(Box::new(from_json::<Namespace>(json!({
        "metadata": {"name": name, "labels": labels}
    }))))
}

/// A Service with no type (ClusterIP), no ports and no addresses yet.
pub struct ServiceBuilder(Value);

pub fn service(ns: &str, name: &str) -> ServiceBuilder {
    ServiceBuilder(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {},
    }))
}

impl ServiceBuilder {
    /// Adds a ClusterIP (a second one makes the Service dual-stack).
    pub fn cluster_ip(mut self, ip: &str) -> Self {
        let spec = &mut self.0["spec"];
        if spec["clusterIP"].is_null() {
            spec["clusterIP"] = json!(ip);
        }
        push(&mut spec["clusterIPs"], json!(ip));
        self
    }

    /// `clusterIP: None`.
    pub fn headless(mut self) -> Self {
        self.0["spec"]["clusterIP"] = json!("None");
        self
    }

    /// `type: ExternalName` pointing at `host`.
    pub fn external_name(mut self, host: &str) -> Self {
        self.0["spec"]["type"] = json!("ExternalName");
        self.0["spec"]["externalName"] = json!(host);
        self
    }

    /// A port; an empty `name` leaves it unnamed, as a single port may be.
    pub fn port(mut self, name: &str, port: u16, target: u16, proto: &str) -> Self {
        let mut p = json!({"port": port, "targetPort": target, "protocol": proto});
        if !name.is_empty() {
            p["name"] = json!(name);
        }
        push(&mut self.0["spec"]["ports"], p);
        self
    }

    /// A nodePort for the last port; the Service becomes a NodePort unless
    /// it is a LoadBalancer.
    pub fn node_port(mut self, node_port: u16) -> Self {
        let spec = &mut self.0["spec"];
        last(&mut spec["ports"])["nodePort"] = json!(node_port);
        if spec["type"] != "LoadBalancer" {
            spec["type"] = json!("NodePort");
        }
        self
    }

    pub fn external_ip(mut self, ip: &str) -> Self {
        push(&mut self.0["spec"]["externalIPs"], json!(ip));
        self
    }

    /// `externalTrafficPolicy: Local`.
    pub fn external_traffic_local(mut self) -> Self {
        self.0["spec"]["externalTrafficPolicy"] = json!("Local");
        self
    }

    /// `internalTrafficPolicy: Local`.
    pub fn internal_traffic_local(mut self) -> Self {
        self.0["spec"]["internalTrafficPolicy"] = json!("Local");
        self
    }

    /// `spec.healthCheckNodePort`.
    pub fn health_check_node_port(mut self, port: u16) -> Self {
        self.0["spec"]["healthCheckNodePort"] = json!(port);
        self
    }

    /// `type: LoadBalancer` with `ip` in its status' ingress.
    pub fn load_balancer(mut self, ip: &str) -> Self {
        self.0["spec"]["type"] = json!("LoadBalancer");
        push(
            &mut self.0["status"]["loadBalancer"]["ingress"],
            json!({"ip": ip}),
        );
        self
    }

    /// A load balancer ingress IP with `ipMode: Proxy` (the load balancer
    /// proxies to the node ports itself).
    pub fn proxied_load_balancer(mut self, ip: &str) -> Self {
        self.0["spec"]["type"] = json!("LoadBalancer");
        push(
            &mut self.0["status"]["loadBalancer"]["ingress"],
            json!({"ip": ip, "ipMode": "Proxy"}),
        );
        self
    }

    /// A `loadBalancerSourceRanges` entry.
    pub fn source_range(mut self, cidr: &str) -> Self {
        push(&mut self.0["spec"]["loadBalancerSourceRanges"], json!(cidr));
        self
    }

    /// ClientIP session affinity for `timeout` seconds.
    pub fn affinity(mut self, timeout: u32) -> Self {
        let spec = &mut self.0["spec"];
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": timeout}});
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["annotations"][key] = json!(value);
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.0["metadata"]["labels"][key] = json!(value);
        self
    }

    pub fn build(self) -> KubeObject {
        KubeObject::Service(Box::new(from_json::<Service>(self.0)))
    }
}

/// The conditions of an endpoint.
#[derive(Clone, Copy, Debug)]
pub enum State {
    /// Ready and serving.
    Ready,
    /// Shutting down but still serving: drained.
    Terminating,
    /// Neither ready nor serving.
    NotServing,
}

impl State {
    fn conditions(self) -> Value {
        match self {
            State::Ready => json!({"ready": true, "serving": true, "terminating": false}),
            State::Terminating => json!({"ready": false, "serving": true, "terminating": true}),
            State::NotServing => json!({"ready": false, "serving": false, "terminating": false}),
        }
    }
}

/// An EndpointSlice of a Service, named after it and its address type
/// (`web-ipv4`) unless `named`.
pub struct SliceBuilder(Value);

pub fn slice(ns: &str, service: &str) -> SliceBuilder {
    SliceBuilder(json!({
        "metadata": {
            "namespace": ns,
            "labels": {"kubernetes.io/service-name": service},
        },
        "endpoints": [],
    }))
}

impl SliceBuilder {
    pub fn named(mut self, name: &str) -> Self {
        self.0["metadata"]["name"] = json!(name);
        self
    }

    /// A port, named as the Service's port it serves.
    pub fn port(mut self, name: &str, port: u16, proto: &str) -> Self {
        let mut p = json!({"port": port, "protocol": proto});
        if !name.is_empty() {
            p["name"] = json!(name);
        }
        push(&mut self.0["ports"], p);
        self
    }

    /// An endpoint on no node yet; the first one sets the address type.
    pub fn endpoint(mut self, addr: &str, state: State) -> Self {
        if self.0["addressType"].is_null() {
            let v6 = addr.contains(':');
            self.0["addressType"] = json!(if v6 { "IPv6" } else { "IPv4" });
        }
        push(
            &mut self.0["endpoints"],
            json!({"addresses": [addr], "conditions": state.conditions()}),
        );
        self
    }

    /// Puts the last endpoint on `node`.
    pub fn on(mut self, node: &str) -> Self {
        last(&mut self.0["endpoints"])["nodeName"] = json!(node);
        self
    }

    pub fn build(mut self) -> KubeObject {
        if self.0["addressType"].is_null() {
            self.0["addressType"] = json!("IPv4");
        }
        if self.0["metadata"]["name"].is_null() {
            let service = &self.0["metadata"]["labels"]["kubernetes.io/service-name"];
            let family = self.0["addressType"].as_str().unwrap().to_lowercase();
            self.0["metadata"]["name"] = json!(format!("{}-{family}", service.as_str().unwrap()));
        }
        KubeObject::EndpointSlice(Box::new(from_json::<EndpointSlice>(self.0)))
    }
}

/// A running pod on `NODE`; `ips` may hold an IPv4 and an IPv6 address.
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
        push(
            &mut self.0["spec"]["containers"][0]["ports"],
            json!({"name": name, "containerPort": port, "protocol": proto}),
        );
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
        KubeObject::Pod(Box::new(from_json::<Pod>(self.0)))
    }
}

/// A NetworkPolicy with `spec` written as in a manifest.
pub fn policy(ns: &str, name: &str, spec: Value) -> KubeObject {
    KubeObject::NetworkPolicy(Box::new(from_json::<NetworkPolicy>(json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))))
}

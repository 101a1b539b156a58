//! The cluster a case runs against, and its NetworkPolicies, rendered as
//! the multi-document YAML `ipwarden run --manifests` reads.
//!
//! The standard cluster is the upstream e2e suite's: namespaces x, y, z
//! (labels `ns: <name>` and `kubernetes.io/metadata.name: <name>`), pods
//! a, b, c in each (label `pod: <name>`), every pod serving TCP and UDP on
//! 80 and 81 with container ports named `serve-80-tcp`, ... (plus
//! `serve-80-sctp` and `serve-81-sctp` in the cases that probe SCTP, as
//! upstream adds them when it tests SCTP). Addresses are
//! fixed and readable: on node-a, x/a is 10.244.1.10 and fd00:10:244:1::10,
//! x/b .11, y/a .20, z/c .32; on node-b the same numbers in 10.244.2.0/24
//! and fd00:10:244:2::/64.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, Ipv6Addr},
};

use serde_json::{json, Map, Value};

pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
pub const POD_NAMES: [&str; 3] = ["a", "b", "c"];
pub const PORTS: [u16; 2] = [80, 81];

/// The two nodes of every topology. The agent under test runs on node-a
/// only; node-b forwards plainly, so it enforces nothing for its own pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    A,
    B,
}

impl Node {
    pub fn name(self) -> &'static str {
        match self {
            Node::A => "node-a",
            Node::B => "node-b",
        }
    }

    /// Third octet of the node's pod CIDR (10.244.N.0/24, fd00:10:244:N::/64).
    pub fn subnet(self) -> u8 {
        match self {
            Node::A => 1,
            Node::B => 2,
        }
    }

    /// The node's own addresses (its InternalIP), on the link between the nodes.
    pub fn host_v4(self) -> Ipv4Addr {
        match self {
            Node::A => Ipv4Addr::new(192, 168, 56, 10),
            Node::B => Ipv4Addr::new(192, 168, 56, 11),
        }
    }

    pub fn host_v6(self) -> Ipv6Addr {
        format!("fd00:192:168:56::{}", self.host_v4().octets()[3])
            .parse()
            .unwrap()
    }

    /// Pod number `n` on this node: 10.244.N.n and fd00:10:244:N::n (n
    /// written in the same digits, so x/a reads .10 and ::10 in both).
    pub fn pod_v4(self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 244, self.subnet(), n)
    }

    pub fn pod_v6(self, n: u8) -> Ipv6Addr {
        format!("fd00:10:244:{}::{n}", self.subnet())
            .parse()
            .unwrap()
    }
}

/// One `containers[].ports[]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: String,
    pub port: u16,
    /// "TCP", "UDP" or "SCTP".
    pub protocol: &'static str,
}

/// The upstream suite's ports: serve-80-tcp, serve-80-udp, serve-81-tcp, serve-81-udp.
pub fn standard_ports() -> Vec<ContainerPort> {
    let mut ports = Vec::new();
    for port in PORTS {
        for protocol in ["TCP", "UDP"] {
            ports.push(ContainerPort {
                name: format!("serve-{port}-{}", protocol.to_lowercase()),
                port,
                protocol,
            });
        }
    }
    ports
}

/// serve-80-sctp, serve-81-sctp.
pub fn sctp_ports() -> Vec<ContainerPort> {
    PORTS
        .iter()
        .map(|&port| ContainerPort {
            name: format!("serve-{port}-sctp"),
            port,
            protocol: "SCTP",
        })
        .collect()
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub node: Node,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
    /// status.phase: "Running", "Succeeded", "Failed", ...
    pub phase: &'static str,
    pub host_network: bool,
    pub ports: Vec<ContainerPort>,
}

impl Pod {
    /// A running pod labelled `pod: <name>` with the standard ports.
    pub fn new(namespace: &str, name: &str, node: Node, number: u8) -> Pod {
        Pod {
            namespace: namespace.into(),
            name: name.into(),
            labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
            node,
            v4: node.pod_v4(number),
            v6: node.pod_v6(number),
            phase: "Running",
            host_network: false,
            ports: standard_ports(),
        }
    }

    /// A hostNetwork pod: its addresses are the node's, its listeners run
    /// in the node's namespace.
    pub fn host_network(namespace: &str, name: &str, node: Node) -> Pod {
        Pod {
            v4: node.host_v4(),
            v6: node.host_v6(),
            host_network: true,
            ..Pod::new(namespace, name, node, 0)
        }
    }

    /// "x/a".
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Gets a network namespace of its own (and listeners) in the topology.
    pub fn has_own_netns(&self) -> bool {
        self.phase == "Running" && !self.host_network
    }

    /// Is probed as a destination (own netns, or hostNetwork listeners in the node).
    pub fn is_probed(&self) -> bool {
        self.phase == "Running"
    }

    pub fn label(mut self, key: &str, value: &str) -> Pod {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn phase(mut self, phase: &'static str) -> Pod {
        self.phase = phase;
        self
    }

    /// Takes over another pod's addresses (an IP reused after a pod finished).
    pub fn ips_of(mut self, other: &Pod) -> Pod {
        self.v4 = other.v4;
        self.v6 = other.v6;
        self
    }

    /// Adds a container port.
    pub fn port(mut self, name: &str, port: u16, protocol: &'static str) -> Pod {
        self.ports.push(ContainerPort {
            name: name.into(),
            port,
            protocol,
        });
        self
    }

    fn to_json(&self) -> Value {
        // One container per port, like the upstream suite's agnhost pods
        // (named after the port: a pod may name one number twice).
        let containers: Vec<Value> = self
            .ports
            .iter()
            .map(|p| {
                json!({
                    "name": format!("cont-{}", p.name),
                    "image": "registry.k8s.io/e2e-test-images/agnhost:2.53",
                    "ports": [{"name": p.name, "containerPort": p.port, "protocol": p.protocol}],
                })
            })
            .collect();
        let mut spec = json!({"nodeName": self.node.name(), "containers": containers});
        if self.host_network {
            spec["hostNetwork"] = json!(true);
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
            "spec": spec,
            "status": {
                "phase": self.phase,
                "podIP": self.v4.to_string(),
                "podIPs": [{"ip": self.v4.to_string()}, {"ip": self.v6.to_string()}],
            },
        })
    }
}

#[derive(Clone, Debug)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug)]
pub struct Cluster {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
}

impl Cluster {
    /// x, y, z with pods a, b, c each, all on node-a.
    pub fn xyz() -> Cluster {
        let mut namespaces = Vec::new();
        let mut pods = Vec::new();
        for (i, ns) in NAMESPACES.iter().enumerate() {
            namespaces.push(Namespace {
                name: ns.to_string(),
                labels: BTreeMap::from([
                    ("ns".to_string(), ns.to_string()),
                    ("kubernetes.io/metadata.name".to_string(), ns.to_string()),
                ]),
            });
            for (j, pod) in POD_NAMES.iter().enumerate() {
                pods.push(Pod::new(ns, pod, Node::A, 10 * (i as u8 + 1) + j as u8));
            }
        }
        Cluster { namespaces, pods }
    }

    /// Moves the pods of `namespace` to node-b (same host numbers, node-b's CIDR).
    pub fn on_node_b(mut self, namespace: &str) -> Cluster {
        for pod in self.pods.iter_mut().filter(|p| p.namespace == namespace) {
            let n = pod.v4.octets()[3];
            pod.node = Node::B;
            pod.v4 = Node::B.pod_v4(n);
            pod.v6 = Node::B.pod_v6(n);
        }
        self
    }

    /// Gives every pod the SCTP container ports (once).
    pub fn with_sctp_ports(mut self) -> Cluster {
        for pod in &mut self.pods {
            for port in sctp_ports() {
                if !pod.ports.contains(&port) {
                    pod.ports.push(port);
                }
            }
        }
        self
    }

    pub fn pod(&self, id: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.id() == id)
            .unwrap_or_else(|| panic!("no pod {id} in the cluster"))
    }

    /// Changes pod `id` ("x/a").
    pub fn with_pod(mut self, id: &str, change: impl FnOnce(Pod) -> Pod) -> Cluster {
        let i = self
            .pods
            .iter()
            .position(|p| p.id() == id)
            .unwrap_or_else(|| panic!("no pod {id} in the cluster"));
        self.pods[i] = change(self.pods[i].clone());
        self
    }

    pub fn add_pod(mut self, pod: Pod) -> Cluster {
        self.pods.push(pod);
        self
    }

    pub fn ns_label(mut self, namespace: &str, key: &str, value: &str) -> Cluster {
        let ns = self
            .namespaces
            .iter_mut()
            .find(|n| n.name == namespace)
            .unwrap_or_else(|| panic!("no namespace {namespace}"));
        ns.labels.insert(key.into(), value.into());
        self
    }

    /// One line per namespace and pod (ports beyond the standard TCP, UDP
    /// and SCTP ones on 80 and 81 only), for failure reports.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for n in &self.namespaces {
            out.push_str(&format!("namespace {} {:?}\n", n.name, n.labels));
        }
        let mut standard = standard_ports();
        standard.extend(sctp_ports());
        for p in &self.pods {
            let extra: Vec<String> = p
                .ports
                .iter()
                .filter(|port| !standard.contains(port))
                .map(|port| format!("{}={}/{}", port.name, port.port, port.protocol))
                .collect();
            out.push_str(&format!(
                "pod {} {} {} {} {}{} {:?}{}\n",
                p.id(),
                p.node.name(),
                p.v4,
                p.v6,
                p.phase,
                if p.host_network { " hostNetwork" } else { "" },
                p.labels,
                if extra.is_empty() {
                    String::new()
                } else {
                    format!(" ports +{}", extra.join(","))
                }
            ));
        }
        out
    }

    /// The multi-document YAML: namespaces, pods, then the policies.
    pub fn render(&self, policies: &[Policy]) -> String {
        let mut docs: Vec<Value> = self
            .namespaces
            .iter()
            .map(|n| {
                json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": n.name, "labels": n.labels},
                })
            })
            .collect();
        docs.extend(self.pods.iter().map(Pod::to_json));
        docs.extend(policies.iter().map(Policy::to_json));
        render_yaml(&docs)
    }
}

pub fn render_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| serde_yaml_ng::to_string(d).expect("YAML of a JSON value"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A label selector.
#[derive(Clone, Debug, Default)]
pub struct Selector {
    labels: BTreeMap<String, String>,
    exprs: Vec<(String, Op, Vec<String>)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

impl Selector {
    pub fn label(mut self, key: &str, value: &str) -> Selector {
        self.labels.insert(key.into(), value.into());
        self
    }

    pub fn expr(mut self, key: &str, op: Op, values: &[&str]) -> Selector {
        self.exprs.push((
            key.into(),
            op,
            values.iter().map(|v| v.to_string()).collect(),
        ));
        self
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.labels.is_empty() {
            m.insert("matchLabels".into(), json!(self.labels));
        }
        if !self.exprs.is_empty() {
            let exprs: Vec<Value> = self
                .exprs
                .iter()
                .map(|(key, op, values)| {
                    let mut e = json!({"key": key, "operator": format!("{op:?}")});
                    if matches!(op, Op::In | Op::NotIn) {
                        e["values"] = json!(values);
                    }
                    e
                })
                .collect();
            m.insert("matchExpressions".into(), Value::Array(exprs));
        }
        Value::Object(m)
    }
}

/// `{}`: every pod (or namespace).
pub fn all() -> Selector {
    Selector::default()
}

/// `pod: <name>`.
pub fn pod(name: &str) -> Selector {
    all().label("pod", name)
}

/// `ns: <name>` (a namespace selector).
pub fn ns(name: &str) -> Selector {
    all().label("ns", name)
}

/// A selector of one expression.
pub fn expr(key: &str, op: Op, values: &[&str]) -> Selector {
    all().expr(key, op, values)
}

/// One `from`/`to` entry.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pods: Option<Selector>,
    namespaces: Option<Selector>,
    block: Option<(String, Vec<String>)>,
}

/// `podSelector` alone: pods of the policy's namespace.
pub fn pods(selector: Selector) -> Peer {
    Peer {
        pods: Some(selector),
        ..Peer::default()
    }
}

/// `namespaceSelector` alone: every pod of the selected namespaces.
pub fn namespaces(selector: Selector) -> Peer {
    Peer {
        namespaces: Some(selector),
        ..Peer::default()
    }
}

/// Both selectors in one peer: pods matching `pod_sel` in namespaces matching `ns_sel` (AND).
pub fn pods_in(ns_sel: Selector, pod_sel: Selector) -> Peer {
    Peer {
        pods: Some(pod_sel),
        namespaces: Some(ns_sel),
        block: None,
    }
}

/// `ipBlock: {cidr}` (written as given, valid or not).
pub fn ip_block(cidr: &str) -> Peer {
    Peer {
        block: Some((cidr.into(), Vec::new())),
        ..Peer::default()
    }
}

impl Peer {
    /// Adds an `except` entry to an ipBlock peer.
    pub fn except(mut self, cidr: &str) -> Peer {
        self.block
            .as_mut()
            .expect("except on a peer without ipBlock")
            .1
            .push(cidr.into());
        self
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(s) = &self.pods {
            m.insert("podSelector".into(), s.to_json());
        }
        if let Some(s) = &self.namespaces {
            m.insert("namespaceSelector".into(), s.to_json());
        }
        if let Some((cidr, except)) = &self.block {
            let mut b = json!({"cidr": cidr});
            if !except.is_empty() {
                b["except"] = json!(except);
            }
            m.insert("ipBlock".into(), b);
        }
        Value::Object(m)
    }
}

/// One `ports` entry.
#[derive(Clone, Debug, Default)]
pub struct Port {
    protocol: Option<&'static str>,
    port: Option<Value>,
    end_port: Option<i64>,
}

/// `{protocol: TCP, port: N}`.
pub fn tcp(port: u16) -> Port {
    number(port).protocol("TCP")
}

/// `{protocol: UDP, port: N}`.
pub fn udp(port: u16) -> Port {
    number(port).protocol("UDP")
}

/// `{protocol: SCTP, port: N}`.
pub fn sctp(port: u16) -> Port {
    number(port).protocol("SCTP")
}

/// `{port: N}` without a protocol (TCP by default).
pub fn number(port: u16) -> Port {
    Port {
        port: Some(json!(port)),
        ..Port::default()
    }
}

/// `{port: "<name>"}` without a protocol (TCP by default).
pub fn named(name: &str) -> Port {
    Port {
        port: Some(json!(name)),
        ..Port::default()
    }
}

/// `{protocol: P}`: every port of that protocol.
pub fn any_port(protocol: &'static str) -> Port {
    Port::default().protocol(protocol)
}

impl Port {
    pub fn protocol(mut self, protocol: &'static str) -> Port {
        self.protocol = Some(protocol);
        self
    }

    /// `endPort` (written as given, even below `port`).
    pub fn end(mut self, end_port: i64) -> Port {
        self.end_port = Some(end_port);
        self
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(p) = self.protocol {
            m.insert("protocol".into(), json!(p));
        }
        if let Some(p) = &self.port {
            m.insert("port".into(), p.clone());
        }
        if let Some(e) = self.end_port {
            m.insert("endPort".into(), json!(e));
        }
        Value::Object(m)
    }
}

/// One ingress or egress rule. `Rule::default()` (no peers, no ports) allows everything.
#[derive(Clone, Debug, Default)]
pub struct Rule {
    peers: Vec<Peer>,
    ports: Vec<Port>,
}

impl Rule {
    pub fn peer(mut self, peer: Peer) -> Rule {
        self.peers.push(peer);
        self
    }

    pub fn port(mut self, port: Port) -> Rule {
        self.ports.push(port);
        self
    }

    fn to_json(&self, peers_key: &str) -> Value {
        let mut m = Map::new();
        if !self.peers.is_empty() {
            m.insert(
                peers_key.into(),
                Value::Array(self.peers.iter().map(Peer::to_json).collect()),
            );
        }
        if !self.ports.is_empty() {
            m.insert(
                "ports".into(),
                Value::Array(self.ports.iter().map(Port::to_json).collect()),
            );
        }
        Value::Object(m)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dir {
    Ingress,
    Egress,
}

/// A NetworkPolicy (networking.k8s.io/v1). Without `select`, it selects
/// every pod of its namespace (`podSelector: {}`).
#[derive(Clone, Debug)]
pub struct Policy {
    namespace: String,
    name: String,
    select: Selector,
    types: Option<Vec<&'static str>>,
    ingress: Vec<Rule>,
    egress: Vec<Rule>,
    last: Dir,
}

impl Policy {
    fn with_types(namespace: &str, name: &str, types: Option<Vec<&'static str>>) -> Policy {
        let last = match types.as_deref() {
            Some(["Egress"]) => Dir::Egress,
            _ => Dir::Ingress,
        };
        Policy {
            namespace: namespace.into(),
            name: name.into(),
            select: all(),
            types,
            ingress: Vec::new(),
            egress: Vec::new(),
            last,
        }
    }

    /// `policyTypes: [Ingress]`; no rule yet (isolates the selected pods' ingress).
    pub fn ingress(namespace: &str, name: &str) -> Policy {
        Policy::with_types(namespace, name, Some(vec!["Ingress"]))
    }

    /// `policyTypes: [Egress]`.
    pub fn egress(namespace: &str, name: &str) -> Policy {
        Policy::with_types(namespace, name, Some(vec!["Egress"]))
    }

    /// `policyTypes: [Ingress, Egress]`.
    pub fn ingress_egress(namespace: &str, name: &str) -> Policy {
        Policy::with_types(namespace, name, Some(vec!["Ingress", "Egress"]))
    }

    /// No `policyTypes`: the API's default applies (Ingress, plus Egress
    /// when the policy has egress rules).
    pub fn untyped(namespace: &str, name: &str) -> Policy {
        Policy::with_types(namespace, name, None)
    }

    /// `podSelector`.
    pub fn select(mut self, selector: Selector) -> Policy {
        self.select = selector;
        self
    }

    pub fn ingress_rule(mut self, rule: Rule) -> Policy {
        self.ingress.push(rule);
        self.last = Dir::Ingress;
        self
    }

    pub fn egress_rule(mut self, rule: Rule) -> Policy {
        self.egress.push(rule);
        self.last = Dir::Egress;
        self
    }

    /// An empty ingress rule: allows all ingress.
    pub fn allow_all_ingress(self) -> Policy {
        self.ingress_rule(Rule::default())
    }

    /// An empty egress rule: allows all egress.
    pub fn allow_all_egress(self) -> Policy {
        self.egress_rule(Rule::default())
    }

    /// Adds `peer` to the last ingress rule (a new rule if there is none).
    pub fn from(mut self, peer: Peer) -> Policy {
        if self.ingress.is_empty() {
            self.ingress.push(Rule::default());
        }
        self.ingress.last_mut().unwrap().peers.push(peer);
        self.last = Dir::Ingress;
        self
    }

    /// Adds `peer` to the last egress rule (a new rule if there is none).
    pub fn to(mut self, peer: Peer) -> Policy {
        if self.egress.is_empty() {
            self.egress.push(Rule::default());
        }
        self.egress.last_mut().unwrap().peers.push(peer);
        self.last = Dir::Egress;
        self
    }

    /// Adds `port` to the last rule touched (of the policy's own direction
    /// if none was; a new rule if that direction has none).
    pub fn on(mut self, port: Port) -> Policy {
        let rules = match self.last {
            Dir::Ingress => &mut self.ingress,
            Dir::Egress => &mut self.egress,
        };
        if rules.is_empty() {
            rules.push(Rule::default());
        }
        rules.last_mut().unwrap().ports.push(port);
        self
    }

    pub fn to_json(&self) -> Value {
        let mut spec = Map::new();
        spec.insert("podSelector".into(), self.select.to_json());
        if let Some(types) = &self.types {
            spec.insert("policyTypes".into(), json!(types));
        }
        if !self.ingress.is_empty() {
            spec.insert(
                "ingress".into(),
                Value::Array(self.ingress.iter().map(|r| r.to_json("from")).collect()),
            );
        }
        if !self.egress.is_empty() {
            spec.insert(
                "egress".into(),
                Value::Array(self.egress.iter().map(|r| r.to_json("to")).collect()),
            );
        }
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        })
    }
}

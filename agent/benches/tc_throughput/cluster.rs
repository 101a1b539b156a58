//! The generated cluster every node is programmed from: 10k service
//! ports, 1000 pods (100 on this node) and a cautious cluster's policies.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use ipwarden::{
    cluster::{HostInfo, KubeObject, Snapshot},
    controllers::policies,
};
use serde_json::{json, Value};

use super::{
    tcp_rr, LOCAL_PODS, MEMBERS, NAMESPACES, NODE, PODS, RESTRICTED_SOURCES, TCP_PORT, UDP_PORT,
};

pub fn v4_of(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, i as u8 + 1, 1)
}

pub fn v6_of(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x201, i as u16 + 1, 0, 0, 0, 0, 1)
}

fn object<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("object")
}

fn namespace(n: usize) -> String {
    format!("ns-{n}")
}

/// ClusterIP Services with two ports each, a tenth of them IPv6, and one
/// dual-stack Service per receiver whose externalIPs are its addresses:
/// `MEMBERS` members of ipwarden-svip-prt in all.
fn services(receivers: usize) -> Vec<KubeObject> {
    let mut out = Vec::new();
    for i in 0..receivers {
        let (v4, v6) = (v4_of(i), v6_of(i));
        out.push(KubeObject::Service(Box::new(object(json!({
            "metadata": {"namespace": "bench", "name": format!("target-{i}")},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": format!("10.96.200.{}", i + 1),
                "clusterIPs": [format!("10.96.200.{}", i + 1), format!("fd00:96::200:{}", i + 1)],
                "ipFamilies": ["IPv4", "IPv6"],
                "ipFamilyPolicy": "RequireDualStack",
                "externalIPs": [v4.to_string(), v6.to_string()],
                "ports": [
                    {"name": "iperf", "port": TCP_PORT, "protocol": "TCP"},
                    {"name": "rr", "port": tcp_rr::RR_PORT, "protocol": "TCP"},
                    {"name": "udp", "port": UDP_PORT, "protocol": "UDP"},
                ],
            },
        })))));
    }
    // Each target Service is 3 ports x 4 addresses.
    let plain = (MEMBERS - receivers * 12) / 2;
    for k in 0..plain {
        let ip = if k % 10 == 9 {
            format!("fd00:96::{:x}", k + 1)
        } else {
            format!("10.96.{}.{}", (k + 1) >> 8, (k + 1) & 255)
        };
        let family = if ip.contains(':') { "IPv6" } else { "IPv4" };
        let second = if k % 4 == 3 { "UDP" } else { "TCP" };
        out.push(KubeObject::Service(Box::new(object(json!({
            "metadata": {"namespace": namespace(k % NAMESPACES), "name": format!("svc-{k}")},
            "spec": {
                "type": "ClusterIP",
                "clusterIP": ip,
                "clusterIPs": [ip],
                "ipFamilies": [family],
                "ports": [
                    {"name": "http", "port": 80 + (k % 100), "protocol": "TCP"},
                    {"name": "other", "port": 8000 + (k % 100), "protocol": second},
                ],
            },
        })))));
    }
    out
}

/// Namespaces, `PODS` dual-stack pods (`LOCAL_PODS` on this node) and, in
/// every namespace, the policies a cautious cluster has: default deny both
/// ways, ingress from clients on 8080, egress to DNS and within the
/// namespace. Every local pod is isolated both ways, so INPUT's policy
/// chain holds a jump per local pod address after its RETURN rules.
fn workloads() -> Vec<KubeObject> {
    let mut out = Vec::new();
    for n in 0..NAMESPACES {
        out.push(KubeObject::Namespace(Box::new(object(json!({
            "metadata": {"name": namespace(n), "labels": {"team": format!("team-{}", n % 3)}},
        })))));
        let policy = |name: &str, spec: Value| {
            KubeObject::NetworkPolicy(Box::new(object(json!({
                "metadata": {"namespace": namespace(n), "name": name},
                "spec": spec,
            }))))
        };
        out.push(policy(
            "default-deny",
            json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
        ));
        out.push(policy(
            "allow-clients",
            json!({
                "podSelector": {"matchLabels": {"role": "server"}},
                "ingress": [{
                    "from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                    "ports": [{"protocol": "TCP", "port": 8080}],
                }],
                "policyTypes": ["Ingress"],
            }),
        ));
        out.push(policy(
            "allow-dns",
            json!({
                "podSelector": {},
                "egress": [{"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}],
                "policyTypes": ["Egress"],
            }),
        ));
        out.push(policy(
            "allow-namespace",
            json!({
                "podSelector": {},
                "egress": [{"to": [{"podSelector": {}}]}],
                "policyTypes": ["Egress"],
            }),
        ));
    }
    for j in 0..PODS {
        let node = if j < LOCAL_PODS {
            NODE.to_string()
        } else {
            format!("node-{}", j % 9 + 1)
        };
        let (v4, v6) = (
            format!("10.244.{}.{}", j >> 8, j & 255),
            format!("fd00:244::{:x}", j + 1),
        );
        let role = if j % 2 == 0 { "server" } else { "client" };
        out.push(KubeObject::Pod(Box::new(object(json!({
            "metadata": {
                "namespace": namespace(j % NAMESPACES),
                "name": format!("pod-{j}"),
                "labels": {"app": format!("app-{}", j % 5), "role": role},
            },
            "spec": {"nodeName": node, "containers": [{"name": "main"}]},
            "status": {"phase": "Running", "podIP": v4, "podIPs": [{"ip": v4}, {"ip": v6}]},
        })))));
    }
    out
}

/// The cluster as receiver `i`'s node sees it.
pub fn snapshot(i: usize, receivers: usize) -> Snapshot {
    let mut objects = services(receivers);
    objects.extend(workloads());
    Snapshot::from_objects(
        objects,
        HostInfo {
            node_name: NODE.into(),
            local_addresses: vec![IpAddr::V4(v4_of(i)), IpAddr::V6(v6_of(i))],
        },
    )
}

/// kube-router's flags for the policy controller on this node: the
/// ClusterIP ranges and the external IP ranges the receivers' addresses
/// are in (so service traffic RETURNs from the policy chain).
pub fn policy_options() -> policies::Options {
    policies::Options {
        service_ranges: [
            "10.96.0.0/12",
            "fd00:96::/64",
            "10.201.0.0/16",
            "fd00:201::/32",
        ]
        .iter()
        .map(|r| r.parse().expect("range"))
        .collect(),
        ..policies::Options::default()
    }
}

/// Restricted sources the program checks every hit against: the egress-
/// isolated local pods of the generated cluster as the policy controller
/// publishes them, topped up with other pod addresses to
/// [`RESTRICTED_SOURCES`] (none of them the sender's).
pub fn restricted_sources(i: usize, receivers: usize) -> BTreeSet<IpAddr> {
    let pstate = policies::desired(&snapshot(i, receivers), &policy_options());
    let mut out = pstate.egress_restricted_sources();
    assert!(
        out.len() >= LOCAL_PODS,
        "the generated policies isolate {} local addresses",
        out.len()
    );
    let mut n = 0u32;
    while out.len() < RESTRICTED_SOURCES {
        out.insert(IpAddr::V4(Ipv4Addr::from(0x0af0_0000 + n)));
        n += 1;
    }
    out
}

//! The addresses a Service is reachable at, by kind.

use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;

use crate::{cluster::compact::Service, desired::Problem};

/// Why a virtual service exists; traffic policy and naming depend on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrontendKind {
    ClusterIp,
    NodePort,
    ExternalIp,
    LoadBalancer,
}

impl FrontendKind {
    pub fn label(self) -> &'static str {
        match self {
            FrontendKind::ClusterIp => "ClusterIP",
            FrontendKind::NodePort => "NodePort",
            FrontendKind::ExternalIp => "externalIP",
            FrontendKind::LoadBalancer => "LoadBalancer",
        }
    }

    /// Is this reached from outside the cluster (externalTrafficPolicy applies)?
    pub fn external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }
}

/// Parses a list of IP strings, reporting each bad one with its field.
pub fn parse_ips<'a>(
    object: &str,
    field: &str,
    values: impl Iterator<Item = &'a Box<str>>,
    problems: &mut Vec<Problem>,
) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for (i, v) in values.enumerate() {
        match v.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => problems.push(Problem {
                object: object.to_string(),
                field: format!("{field}[{i}]"),
                message: format!("{v:?} is not an IP address"),
                skipped: true,
            }),
        }
    }
    ips
}

/// Why `node_port` is not programmed, when it lies outside `range`.
pub fn outside_range(node_port: u16, range: Option<(u16, u16)>) -> Option<String> {
    let (lo, hi) = range?;
    (!(lo..=hi).contains(&node_port)).then(|| {
        format!("nodePort {node_port} is outside --node-port-range {lo}-{hi}: not programmed")
    })
}

/// ClusterIPs (dual-stack aware).
pub fn cluster_ips(object: &str, svc: &Service, problems: &mut Vec<Problem>) -> Vec<IpAddr> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    match &spec.cluster_ips {
        Some(ips) if !ips.is_empty() => parse_ips(object, "spec.clusterIPs", ips.iter(), problems),
        _ => parse_ips(object, "spec.clusterIP", spec.cluster_ip.iter(), problems),
    }
}

/// LoadBalancer ingress IPs, except those whose ipMode is Proxy (the load
/// balancer proxies to node ports itself, as kube-router does).
pub fn load_balancer_ips(object: &str, svc: &Service, problems: &mut Vec<Problem>) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for (i, ing) in svc.ingress.iter().enumerate() {
        if ing.ip_mode.as_deref() == Some("Proxy") {
            continue;
        }
        let Some(ip) = &ing.ip else { continue };
        match ip.parse() {
            Ok(ip) => ips.push(ip),
            Err(_) => problems.push(Problem {
                object: object.to_string(),
                field: format!("status.loadBalancer.ingress[{i}].ip"),
                message: format!("{ip:?} is not an IP address"),
                skipped: true,
            }),
        }
    }
    ips
}

/// The node's addresses for NodePorts: its InternalIPs, else ExternalIPs,
/// one per family (kube-router binds NodePorts to the node's primary IP of
/// each family).
pub fn node_ips(node: Option<&Node>) -> Vec<IpAddr> {
    let addrs = node
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.addresses.as_ref());
    let Some(addrs) = addrs else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = Vec::new();
    for kind in ["InternalIP", "ExternalIP"] {
        for a in addrs.iter().filter(|a| a.type_ == kind) {
            if let Ok(ip) = a.address.parse::<IpAddr>() {
                if !out.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
                    out.push(ip);
                }
            }
        }
    }
    out
}

/// Every address of the node NodePorts may listen on with
/// `--nodeport-bindon-all-ip`: not loopback, link-local or multicast.
pub fn all_node_ips(local_addresses: &[IpAddr]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = local_addresses
        .iter()
        .copied()
        .filter(|ip| !ip.is_loopback() && !ip.is_multicast() && !ip.is_unspecified())
        .filter(|ip| match ip {
            IpAddr::V4(v4) => !v4.is_link_local(),
            IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 != 0xfe80,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The Node's spec.podCIDRs (else spec.podCIDR); bad ones are ignored
/// (masquerading more is the safe side).
pub fn pod_cidrs(node: Option<&Node>) -> Vec<IpNet> {
    let Some(spec) = node.and_then(|n| n.spec.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<IpNet> = spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .filter_map(|c| c.trim().parse::<IpNet>().ok())
        .map(|c| c.trunc())
        .collect();
    out.sort();
    out.dedup();
    out
}

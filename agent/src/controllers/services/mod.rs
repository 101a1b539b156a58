//! The service controller: Services and EndpointSlices to IPVS virtual
//! services, VIPs on `ipwarden0`, the service sets and the VIP firewall.

mod annotations;
mod endpoints;
mod firewall;
mod frontends;
pub mod names;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;

use crate::{
    cluster::Snapshot,
    desired::{
        Family, Problem, Protocol, ServiceFlags, ServiceRef, ServiceState, VirtualService, VsKey,
    },
};

pub use firewall::{BpfRules, SourceRestriction};

#[cfg(test)]
mod tests;
use frontends::Kind;

/// Kubernetes' default ClientIP affinity timeout (3 hours).
const DEFAULT_AFFINITY_SECONDS: u32 = 10_800;

/// Settings that shape the desired state beyond the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The eBPF data plane's mode and mark, when it runs.
    pub bpf: Option<BpfRules>,
}

/// The desired service state for `snapshot`, without eBPF rules.
pub fn desired(snapshot: &Snapshot) -> ServiceState {
    desired_with(snapshot, &Options::default())
}

/// The desired service state for `snapshot`. Pure: no I/O, no clock.
pub fn desired_with(snapshot: &Snapshot, opts: &Options) -> ServiceState {
    let node_ips = frontends::node_ips(snapshot.node.as_deref());
    let shares: Vec<ServiceShare> = snapshot
        .services
        .iter()
        .map(|svc| share(svc, snapshot, &node_ips))
        .collect();
    assemble(shares.iter(), &snapshot.host.local_addresses, opts)
}

/// One Service's part of the desired state: what a partial sync recomputes
/// when that Service or its EndpointSlices change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceShare {
    /// Each virtual service, and whether its address is a VIP to hold on
    /// ipwarden0 (not a NodePort on a node address).
    pub virtual_services: Vec<(VirtualService, bool)>,
    pub restrictions: Vec<SourceRestriction>,
    pub problems: Vec<Problem>,
}

impl ServiceShare {
    pub fn keys(&self) -> impl Iterator<Item = VsKey> + '_ {
        self.virtual_services.iter().map(|(vs, _)| vs.key)
    }
}

/// The node addresses NodePorts listen on (from this node's Node).
pub fn node_ips(snapshot: &Snapshot) -> Vec<IpAddr> {
    frontends::node_ips(snapshot.node.as_deref())
}

/// The share of one Service (empty when it is skipped).
pub fn share(svc: &Service, snapshot: &Snapshot, node_ips: &[IpAddr]) -> ServiceShare {
    let ctx = ServiceCtx::new(svc);
    let mut out = ServiceShare::default();
    if ctx.skipped(svc) {
        return out;
    }
    out.virtual_services = ctx
        .virtual_services(
            svc,
            snapshot,
            node_ips,
            &mut out.problems,
            &mut out.restrictions,
        )
        .into_iter()
        .map(|(vs, kind)| (vs, kind != Kind::NodePort))
        .collect();
    out
}

/// The whole desired state from every Service's share, in Service order
/// (namespace, name): the first Service to claim a key keeps it.
pub fn assemble<'a>(
    shares: impl Iterator<Item = &'a ServiceShare>,
    local_addresses: &[IpAddr],
    opts: &Options,
) -> ServiceState {
    let mut problems = Vec::new();
    let mut services: BTreeMap<VsKey, VirtualService> = BTreeMap::new();
    let mut vips = BTreeSet::new();
    let mut restrictions = Vec::new();
    for share in shares {
        problems.extend(share.problems.iter().cloned());
        restrictions.extend(share.restrictions.iter().cloned());
        for (vs, is_vip) in &share.virtual_services {
            if let Some(existing) = services.get(&vs.key) {
                problems.push(Problem {
                    object: vs.service.to_string(),
                    field: "spec".into(),
                    message: format!("{} is already served by {}", vs.key, existing.origin),
                    skipped: true,
                });
                continue;
            }
            if *is_vip {
                vips.insert(vs.key.addr);
            }
            services.insert(vs.key, vs.clone());
        }
    }

    let keys: BTreeSet<VsKey> = services.keys().copied().collect();
    let local: BTreeSet<IpAddr> = local_addresses
        .iter()
        .copied()
        .filter(|a| !vips.contains(a))
        .collect();
    restrictions.sort();
    problems.sort();
    problems.dedup();
    let virtual_services: Vec<VirtualService> = services.into_values().collect();
    ServiceState {
        member_services: firewall::member_services(&virtual_services),
        virtual_services,
        vips,
        sets: firewall::sets(&keys, &local),
        iptables: Family::ALL
            .into_iter()
            .flat_map(|f| {
                [
                    firewall::filter_plan(f, &restrictions, opts.bpf),
                    firewall::nat_plan(f),
                ]
            })
            .collect(),
        problems,
    }
}

/// Service-wide settings, read once per Service.
struct ServiceCtx {
    /// "Service shop/web", for problems and origins.
    object: String,
    service: ServiceRef,
}

impl ServiceCtx {
    fn new(svc: &Service) -> Self {
        let namespace = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let service = ServiceRef::new(namespace, name);
        Self {
            object: service.to_string(),
            service,
        }
    }

    /// Services another proxy serves, or that have no virtual IP.
    fn skipped(&self, svc: &Service) -> bool {
        let labels = svc.metadata.labels.as_ref();
        let label = |k: &str| labels.and_then(|l| l.get(k)).map(String::as_str);
        if let Some(proxy) = label("service.kubernetes.io/service-proxy-name") {
            if !names::PROXY_NAMES.contains(&proxy) {
                return true;
            }
        }
        if label("service.kubernetes.io/headless").is_some() {
            return true;
        }
        let Some(spec) = &svc.spec else { return true };
        spec.type_.as_deref() == Some("ExternalName") || spec.cluster_ip.as_deref() == Some("None")
    }

    fn virtual_services(
        &self,
        svc: &Service,
        snapshot: &Snapshot,
        node_ips: &[IpAddr],
        problems: &mut Vec<Problem>,
        restrictions: &mut Vec<SourceRestriction>,
    ) -> Vec<(VirtualService, Kind)> {
        let Some(spec) = &svc.spec else {
            return Vec::new();
        };
        let ann = svc.metadata.annotations.as_ref();
        let scheduler = match annotations::scheduler(ann) {
            Ok(s) => s,
            Err((field, message)) => {
                problems.push(self.problem(field, message, true));
                return Vec::new();
            }
        };
        let mut flags = ServiceFlags::default();
        match annotations::sched_flags(ann) {
            Ok(Some((field, f))) if matches!(scheduler.as_str(), "sh" | "mh") => {
                let _ = field;
                flags = f;
            }
            Ok(Some((field, _))) => problems.push(self.problem(
                field,
                format!("scheduler flags only apply to sh and mh, not {scheduler}; ignored"),
                false,
            )),
            Ok(None) => {}
            Err((field, message)) => problems.push(self.problem(field, message, false)),
        }
        let timeout = self.affinity(svc, problems);
        flags.persistent = timeout > 0;

        let itp_local = spec.internal_traffic_policy.as_deref() == Some("Local");
        let etp_local = spec.external_traffic_policy.as_deref() == Some("Local");
        let cluster_ips = frontends::cluster_ips(&self.object, svc, problems);
        let external_ips = frontends::parse_ips(
            &self.object,
            "spec.externalIPs",
            spec.external_ips.iter().flatten(),
            problems,
        );
        let lb_ips = frontends::load_balancer_ips(&self.object, svc, problems);
        let ranges = self.source_ranges(svc, problems);
        let has_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        // NodePorts only on node IPs of the families the Service has.
        let families = service_families(spec, &cluster_ips);
        let node_ips: Vec<IpAddr> = node_ips
            .iter()
            .copied()
            .filter(|ip| families.contains(&ip.is_ipv4()))
            .collect();

        let mut out = Vec::new();
        for (pi, port) in spec.ports.iter().flatten().enumerate() {
            let proto_text = port.protocol.as_deref().unwrap_or("TCP");
            let Some(proto) = Protocol::from_kubernetes(proto_text) else {
                problems.push(self.problem(
                    format!("spec.ports[{pi}].protocol"),
                    format!("unknown protocol {proto_text:?} (TCP, UDP or SCTP)"),
                    true,
                ));
                continue;
            };
            let Some(svc_port) = valid_port(port.port) else {
                problems.push(self.problem(
                    format!("spec.ports[{pi}].port"),
                    format!("port {} is not in 1..65535", port.port),
                    true,
                ));
                continue;
            };
            let port_name = port.name.clone().unwrap_or_default();
            let backends = endpoints::backends(
                snapshot.slices_of(&self.service.namespace, &self.service.name),
                &port_name,
                proto,
                problems,
            );
            let local_node = snapshot.host.node_name.as_str();
            let pick = |local_only: bool, vip: IpAddr| {
                let mut ds: Vec<_> = backends
                    .iter()
                    .filter(|b| b.server.addr.is_ipv4() == vip.is_ipv4())
                    .filter(|b| !local_only || b.node == Some(local_node))
                    .map(|b| b.server)
                    .collect();
                ds.sort();
                ds
            };
            let mut frontends: Vec<(IpAddr, u16, Kind)> = Vec::new();
            frontends.extend(
                cluster_ips
                    .iter()
                    .map(|ip| (*ip, svc_port, Kind::ClusterIp)),
            );
            if has_node_ports {
                match port.node_port.map(valid_port) {
                    Some(Some(np)) => {
                        frontends.extend(node_ips.iter().map(|ip| (*ip, np, Kind::NodePort)))
                    }
                    Some(None) => problems.push(self.problem(
                        format!("spec.ports[{pi}].nodePort"),
                        format!("nodePort {:?} is not in 1..65535", port.node_port),
                        true,
                    )),
                    None => {}
                }
            }
            frontends.extend(
                external_ips
                    .iter()
                    .map(|ip| (*ip, svc_port, Kind::ExternalIp)),
            );
            frontends.extend(lb_ips.iter().map(|ip| (*ip, svc_port, Kind::LoadBalancer)));

            for (addr, port_no, kind) in frontends {
                let local_only = if kind.external() {
                    etp_local
                } else {
                    itp_local
                };
                let destinations = pick(local_only, addr);
                // As kube-router: with traffic policy Local and no local
                // endpoint, the frontend is not programmed (and so refused).
                if local_only && destinations.is_empty() {
                    continue;
                }
                let key = VsKey {
                    addr,
                    proto,
                    port: port_no,
                };
                if kind == Kind::LoadBalancer && !ranges.is_empty() {
                    let ranges = ranges
                        .iter()
                        .filter(|r| r.addr().is_ipv4() == addr.is_ipv4())
                        .copied()
                        .collect();
                    restrictions.push(SourceRestriction { key, ranges });
                }
                out.push((
                    VirtualService {
                        key,
                        scheduler: scheduler.clone(),
                        flags,
                        timeout,
                        netmask_bits: if addr.is_ipv4() { 32 } else { 128 },
                        destinations,
                        service: self.service.clone(),
                        origin: format!(
                            "{} port {} ({})",
                            self.object,
                            display_port(&port_name, svc_port),
                            kind.label()
                        ),
                    },
                    kind,
                ));
            }
        }
        out
    }

    /// ClientIP affinity timeout in seconds, 0 without affinity.
    fn affinity(&self, svc: &Service, problems: &mut Vec<Problem>) -> u32 {
        let Some(spec) = &svc.spec else { return 0 };
        if spec.session_affinity.as_deref() != Some("ClientIP") {
            return 0;
        }
        let configured = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds);
        match configured {
            None => DEFAULT_AFFINITY_SECONDS,
            Some(t) if (1..=86_400).contains(&t) => t as u32,
            Some(t) => {
                problems.push(self.problem(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
                    format!("{t} is not in 1..86400; using {DEFAULT_AFFINITY_SECONDS}"),
                    false,
                ));
                DEFAULT_AFFINITY_SECONDS
            }
        }
    }

    fn source_ranges(&self, svc: &Service, problems: &mut Vec<Problem>) -> Vec<IpNet> {
        let ranges = svc
            .spec
            .as_ref()
            .and_then(|s| s.load_balancer_source_ranges.as_ref());
        let mut out = Vec::new();
        for (i, r) in ranges.into_iter().flatten().enumerate() {
            match r.trim().parse::<IpNet>() {
                Ok(net) => out.push(net.trunc()),
                // Leaving a bad range out only narrows who may connect.
                Err(_) => problems.push(self.problem(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    format!("{r:?} is not a CIDR"),
                    true,
                )),
            }
        }
        out
    }

    fn problem(&self, field: String, message: String, skipped: bool) -> Problem {
        Problem {
            object: self.object.clone(),
            field,
            message,
            skipped,
        }
    }
}

/// The IP families (as "is IPv4") of a Service: spec.ipFamilies, else
/// those of its ClusterIPs.
fn service_families(
    spec: &k8s_openapi::api::core::v1::ServiceSpec,
    cluster_ips: &[IpAddr],
) -> Vec<bool> {
    match &spec.ip_families {
        Some(f) if !f.is_empty() => f.iter().map(|f| f == "IPv4").collect(),
        _ => cluster_ips.iter().map(IpAddr::is_ipv4).collect(),
    }
}

fn valid_port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p > 0)
}

fn display_port(name: &str, port: u16) -> String {
    if name.is_empty() {
        port.to_string()
    } else {
        name.to_string()
    }
}

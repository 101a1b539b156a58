//! The service controller: Services and EndpointSlices to IPVS virtual
//! services, VIPs on `ipwarden0`, the service sets and the VIP firewall.

mod annotations;
mod endpoints;
mod firewall;
mod frontends;
pub mod names;
mod service_wide;
mod share;
mod table;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use ipnet::IpNet;

use crate::{
    cluster::{
        compact::{Service, ServicePort, ServiceSpec, Stored},
        Snapshot,
    },
    desired::{
        Family, HealthCheck, Problem, Protocol, RealServer, ServiceRef, ServiceState,
        VirtualService, VsKey,
    },
};

pub use firewall::{BpfRules, NatException, SourceRestriction, Unserved};
use service_wide::ServiceWide;
pub use share::ServiceShare;
use share::ShareParts;
pub use table::{FullState, ServiceDelta, ServiceTable};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_annotations;
#[cfg(test)]
mod tests_nat;
#[cfg(test)]
mod tests_table;
use frontends::FrontendKind;

/// Settings that shape the desired state beyond the snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// The eBPF data plane's mode and mark, when it runs.
    pub bpf: Option<BpfRules>,
    /// Hairpin for every Service (kube-router's `--hairpin-mode`), not
    /// only those with the annotation.
    pub hairpin_all: bool,
    /// NodePorts on every address of the node (kube-router's
    /// `--nodeport-bindon-all-ip`), not only its InternalIP per family.
    pub nodeport_bindon_all_ip: bool,
    /// `--node-port-range`: a nodePort outside it is a problem and is not
    /// programmed (kube-proxy refuses it too). None: no check.
    pub node_port_range: Option<(u16, u16)>,
}

/// The desired service state for `snapshot`, without eBPF rules.
pub fn desired(snapshot: &Snapshot) -> ServiceState {
    desired_with(snapshot, &Options::default())
}

/// The desired service state for `snapshot`. Pure: no I/O, no clock.
pub fn desired_with(snapshot: &Snapshot, opts: &Options) -> ServiceState {
    let node_ips = node_ips(snapshot, opts);
    // In Service order (namespace, name), whatever order the snapshot
    // holds: the first Service to claim a key keeps it.
    let mut services: Vec<&Service> = snapshot.services.iter().map(|s| &**s).collect();
    services.sort_by(|a, b| object_key(a).cmp(&object_key(b)));
    let shares: Vec<ServiceShare> = services
        .into_iter()
        .map(|svc| share(svc, snapshot, &node_ips, opts))
        .collect();
    assemble(shares.iter(), &NodeView::of(snapshot), opts)
}

fn object_key(svc: &Service) -> (&str, &str) {
    svc.key()
}

/// What assembling needs to know of this node beyond the Services.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// The node's addresses, except those of ipwarden0.
    pub local_addresses: Vec<IpAddr>,
    /// The Node's spec.podCIDRs: traffic from them is not masqueraded.
    pub pod_cidrs: Vec<IpNet>,
}

impl NodeView {
    pub fn of(snapshot: &Snapshot) -> Self {
        Self {
            local_addresses: snapshot.host.local_addresses.clone(),
            pod_cidrs: frontends::pod_cidrs(snapshot.node.as_deref()),
        }
    }
}

/// The node addresses NodePorts listen on: this node's InternalIP (else
/// ExternalIP) per family, or with `nodeport_bindon_all_ip` every address
/// of the node (not loopback, link-local or ipwarden0's).
pub fn node_ips(snapshot: &Snapshot, opts: &Options) -> Vec<IpAddr> {
    if opts.nodeport_bindon_all_ip {
        frontends::all_node_ips(&snapshot.host.local_addresses)
    } else {
        frontends::node_ips(snapshot.node.as_deref())
    }
}

/// The share of one Service (empty when it is skipped).
pub fn share(
    svc: &Service,
    snapshot: &Snapshot,
    node_ips: &[IpAddr],
    opts: &Options,
) -> ServiceShare {
    let ctx = ServiceCtx::new(svc);
    let mut out = ShareParts::default();
    if ctx.skipped(svc) {
        return ServiceShare::default();
    }
    ctx.fill(svc, snapshot, node_ips, opts, &mut out);
    out.health_check = ctx.health_check(svc, snapshot, &mut out.problems);
    out.into()
}

/// The whole desired state from every Service's share, in Service order
/// (namespace, name): the first Service to claim a key keeps it.
pub fn assemble<'a>(
    shares: impl Iterator<Item = &'a ServiceShare>,
    node: &NodeView,
    opts: &Options,
) -> ServiceState {
    let mut problems = Vec::new();
    let mut services: BTreeMap<VsKey, VirtualService> = BTreeMap::new();
    let mut vips = BTreeSet::new();
    let mut restrictions = Vec::new();
    let mut unserved = Vec::new();
    let mut nat = Vec::new();
    let mut health = Vec::new();
    for share in shares {
        problems.extend(share.problems().iter().cloned());
        restrictions.extend(share.restrictions().iter().cloned());
        unserved.extend(share.unserved().iter().cloned());
        nat.extend(share.nat().iter().cloned());
        health.extend(share.health_check().cloned());
        for (vs, is_vip) in share.virtual_services.iter() {
            if let Some(existing) = services.get(&vs.key) {
                problems.push(already_served(vs, existing));
                continue;
            }
            if *is_vip {
                vips.insert(vs.key.addr);
            }
            services.insert(vs.key, vs.clone());
        }
    }

    let keys: BTreeSet<VsKey> = services.keys().copied().collect();
    // A key another Service serves is not refused.
    unserved.retain(|u| !keys.contains(&u.key));
    unserved.sort();
    unserved.dedup();
    vips.extend(unserved.iter().filter(|u| u.vip).map(|u| u.key.addr));
    let refused: BTreeSet<IpAddr> = unserved.iter().map(|u| u.key.addr).collect();
    let local: BTreeSet<IpAddr> = node
        .local_addresses
        .iter()
        .copied()
        .filter(|a| !vips.contains(a))
        .collect();
    let health_checks = health_checks(health, &mut problems);
    problems.sort();
    problems.dedup();
    let virtual_services: Vec<VirtualService> = services.into_values().collect();
    ServiceState {
        member_services: firewall::member_services(&virtual_services),
        virtual_services,
        vips,
        sets: firewall::sets(keys.iter(), &refused, &local),
        iptables: plans(restrictions, unserved, nat, node, opts),
        health_checks,
        problems,
    }
}

/// `vs` left out: `first` (of an earlier Service) serves its key.
fn already_served(vs: &VirtualService, first: &VirtualService) -> Problem {
    Problem {
        object: vs.service.to_string(),
        field: "spec".into(),
        message: format!("{} is already served by {}", vs.key, first.origin),
        skipped: true,
    }
}

/// The firewall and masquerade plans of both families; `unserved` are
/// those no Service serves, sorted and without duplicates.
fn plans(
    mut restrictions: Vec<SourceRestriction>,
    unserved: Vec<Unserved>,
    mut nat: Vec<NatException>,
    node: &NodeView,
    opts: &Options,
) -> Vec<crate::desired::TablePlan> {
    restrictions.sort();
    nat.sort();
    nat.dedup();
    Family::ALL
        .into_iter()
        .flat_map(|f| {
            [
                firewall::filter_plan(f, &restrictions, &unserved, opts.bpf),
                firewall::nat_plan(f, &nat, &node.pod_cidrs),
            ]
        })
        .collect()
}

/// Health checks sorted by port; the first Service (in Service order) to
/// claim a port keeps it.
fn health_checks(mut all: Vec<HealthCheck>, problems: &mut Vec<Problem>) -> Vec<HealthCheck> {
    all.sort_by(|a, b| (a.port, &a.service).cmp(&(b.port, &b.service)));
    let mut out: Vec<HealthCheck> = Vec::new();
    for hc in all {
        match out.last() {
            Some(prev) if prev.port == hc.port => problems.push(Problem {
                object: hc.service.to_string(),
                field: "spec.healthCheckNodePort".into(),
                message: format!(
                    "port {} is already the health check of {}",
                    hc.port, prev.service
                ),
                skipped: true,
            }),
            _ => out.push(hc),
        }
    }
    out
}

/// Service-wide settings, read once per Service.
struct ServiceCtx {
    /// "Service shop/web", for problems and origins.
    object: String,
    service: ServiceRef,
}

impl ServiceCtx {
    fn new(svc: &Service) -> Self {
        let namespace = svc.metadata.namespace().unwrap_or("default");
        let service = ServiceRef::new(namespace.to_string(), svc.metadata.name().to_string());
        Self {
            object: service.to_string(),
            service,
        }
    }

    /// Services another proxy serves, or that have no virtual IP.
    fn skipped(&self, svc: &Service) -> bool {
        let label = |k: &str| svc.metadata.labels.get(k);
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

    /// Fills `out` with the Service's virtual services, its unserved
    /// frontends, masquerade exceptions, restrictions and problems.
    fn fill(
        &self,
        svc: &Service,
        snapshot: &Snapshot,
        node_ips: &[IpAddr],
        opts: &Options,
        out: &mut ShareParts,
    ) {
        let Some(spec) = &svc.spec else { return };
        let Some(svc_wide) = self.wide(svc, spec, opts, &mut out.problems) else {
            return;
        };
        let frontends = self.frontend_ips(svc, node_ips, &mut out.problems);
        for (pi, port) in spec.ports.iter().enumerate() {
            let Some(p) = self.port(pi, port, &mut out.problems) else {
                continue;
            };
            let backends = endpoints::backends(
                snapshot.slices_of(&self.service.namespace, &self.service.name),
                &p.name,
                p.proto,
                &mut out.problems,
            );
            let ports = PortBackends {
                backends,
                local_node: snapshot.host.node_name.as_str(),
            };
            for (addr, port_no, kind) in
                self.port_frontends(pi, port, &p, &frontends, opts.node_port_range, out)
            {
                let key = VsKey {
                    addr,
                    proto: p.proto,
                    port: port_no,
                };
                let origin = format!(
                    "{} port {} ({})",
                    self.object,
                    display_port(&p.name, p.port),
                    kind.label()
                );
                self.frontend(&svc_wide, &ports, (key, kind, origin), out);
            }
        }
    }

    /// One frontend: its virtual service and masquerade exceptions, or,
    /// with traffic policy Local and no local endpoint, an unserved
    /// frontend (refused and counted, never sent to another node).
    fn frontend(
        &self,
        svc: &ServiceWide,
        ports: &PortBackends<'_>,
        (key, kind, origin): (VsKey, FrontendKind, String),
        out: &mut ShareParts,
    ) {
        let local_only = svc.policy.local_only(kind);
        let destinations = ports.pick(local_only, key.addr);
        if local_only && destinations.is_empty() {
            out.unserved.push(Unserved {
                key,
                service: self.service.clone(),
                vip: kind != FrontendKind::NodePort,
            });
            return;
        }
        if kind.external() && svc.policy.etp_local {
            out.nat.push(NatException::KeepSource { key });
        }
        if svc.policy.hairpin {
            out.nat.extend(
                ports
                    .local_addrs(key.addr)
                    .map(|endpoint| NatException::Hairpin { key, endpoint }),
            );
        }
        let source_ranges = kind == FrontendKind::LoadBalancer && !svc.ranges.is_empty();
        if source_ranges {
            let ranges = svc
                .ranges
                .iter()
                .filter(|r| r.addr().is_ipv4() == key.addr.is_ipv4())
                .copied()
                .collect();
            out.restrictions.push(SourceRestriction { key, ranges });
        }
        let vs = VirtualService {
            source_ranges,
            ..svc.template.with(key, destinations, origin)
        };
        out.virtual_services
            .push((vs, kind != FrontendKind::NodePort));
    }

    /// The Service's addresses by kind (NodePorts: the node addresses of
    /// the Service's families; no LoadBalancer IPs with `service.skiplbips`).
    fn frontend_ips(
        &self,
        svc: &Service,
        node_ips: &[IpAddr],
        problems: &mut Vec<Problem>,
    ) -> FrontendIps {
        let Some(spec) = &svc.spec else {
            return FrontendIps::default();
        };
        let cluster = frontends::cluster_ips(&self.object, svc, problems);
        let families = service_families(spec, &cluster);
        let has_node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let skip_lb_ips = self.read(
            annotations::skip_lb_ips(&svc.metadata.annotations),
            false,
            problems,
        );
        FrontendIps {
            node: node_ips
                .iter()
                .copied()
                .filter(|ip| has_node_ports && families.contains(&ip.is_ipv4()))
                .collect(),
            external: frontends::parse_ips(
                &self.object,
                "spec.externalIPs",
                spec.external_ips.iter().flatten(),
                problems,
            ),
            // Left out, not even read, with `service.skiplbips`.
            load_balancer: if skip_lb_ips {
                Vec::new()
            } else {
                frontends::load_balancer_ips(&self.object, svc, problems)
            },
            cluster,
        }
    }

    /// Protocol, port and name of `spec.ports[pi]`; None (reported) when
    /// the protocol or port is bad.
    fn port(&self, pi: usize, port: &ServicePort, problems: &mut Vec<Problem>) -> Option<PortSpec> {
        let proto_text = port.protocol.as_deref().unwrap_or("TCP");
        let Some(proto) = Protocol::from_kubernetes(proto_text) else {
            problems.push(self.problem(
                format!("spec.ports[{pi}].protocol"),
                format!("unknown protocol {proto_text:?} (TCP, UDP or SCTP)"),
                true,
            ));
            return None;
        };
        let Some(svc_port) = valid_port(port.port) else {
            problems.push(self.problem(
                format!("spec.ports[{pi}].port"),
                format!("port {} is not in 1..65535", port.port),
                true,
            ));
            return None;
        };
        Some(PortSpec {
            proto,
            port: svc_port,
            name: port.name.as_deref().unwrap_or_default().into(),
        })
    }

    /// (address, port, kind) of every frontend of one Service port.
    fn port_frontends(
        &self,
        pi: usize,
        port: &ServicePort,
        p: &PortSpec,
        ips: &FrontendIps,
        range: Option<(u16, u16)>,
        out: &mut ShareParts,
    ) -> Vec<(IpAddr, u16, FrontendKind)> {
        let mut fronts: Vec<(IpAddr, u16, FrontendKind)> = Vec::new();
        fronts.extend(
            ips.cluster
                .iter()
                .map(|ip| (*ip, p.port, FrontendKind::ClusterIp)),
        );
        if !ips.node.is_empty() {
            match port.node_port.map(valid_port) {
                Some(Some(np)) => match frontends::outside_range(np, range) {
                    None => {
                        fronts.extend(ips.node.iter().map(|ip| (*ip, np, FrontendKind::NodePort)))
                    }
                    Some(why) => out.problems.push(self.problem(
                        format!("spec.ports[{pi}].nodePort"),
                        why,
                        true,
                    )),
                },
                Some(None) => out.problems.push(self.problem(
                    format!("spec.ports[{pi}].nodePort"),
                    format!("nodePort {:?} is not in 1..65535", port.node_port),
                    true,
                )),
                None => {}
            }
        }
        fronts.extend(
            ips.external
                .iter()
                .map(|ip| (*ip, p.port, FrontendKind::ExternalIp)),
        );
        fronts.extend(
            ips.load_balancer
                .iter()
                .map(|ip| (*ip, p.port, FrontendKind::LoadBalancer)),
        );
        fronts
    }

    /// The health check of a LoadBalancer Service of external traffic
    /// policy Local with a healthCheckNodePort.
    fn health_check(
        &self,
        svc: &Service,
        snapshot: &Snapshot,
        problems: &mut Vec<Problem>,
    ) -> Option<HealthCheck> {
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() != Some("LoadBalancer")
            || spec.external_traffic_policy.as_deref() != Some("Local")
        {
            return None;
        }
        let raw = spec.health_check_node_port?;
        let Some(port) = valid_port(raw) else {
            problems.push(self.problem(
                "spec.healthCheckNodePort".into(),
                format!("{raw} is not in 1..65535"),
                true,
            ));
            return None;
        };
        Some(HealthCheck {
            port,
            service: self.service.clone(),
            local_endpoints: endpoints::local_ready(
                snapshot.slices_of(&self.service.namespace, &self.service.name),
                &snapshot.host.node_name,
            ),
        })
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

/// A Service's addresses by kind.
#[derive(Default)]
struct FrontendIps {
    cluster: Vec<IpAddr>,
    node: Vec<IpAddr>,
    external: Vec<IpAddr>,
    load_balancer: Vec<IpAddr>,
}

/// One valid Service port.
struct PortSpec {
    proto: Protocol,
    port: u16,
    name: String,
}

/// The backends of one Service port, seen from this node.
struct PortBackends<'a> {
    backends: Vec<endpoints::Backend<'a>>,
    local_node: &'a str,
}

impl PortBackends<'_> {
    /// Destinations of `vip`'s family, on this node only if `local_only`.
    fn pick(&self, local_only: bool, vip: IpAddr) -> Vec<RealServer> {
        let mut ds: Vec<_> = self
            .backends
            .iter()
            .filter(|b| b.server.addr.is_ipv4() == vip.is_ipv4())
            .filter(|b| !local_only || b.node == Some(self.local_node))
            .map(|b| b.server)
            .collect();
        ds.sort();
        ds
    }

    /// Addresses of this node's endpoints in `vip`'s family (hairpin).
    fn local_addrs(&self, vip: IpAddr) -> impl Iterator<Item = IpAddr> + '_ {
        self.pick(true, vip).into_iter().map(|rs| rs.addr)
    }
}

/// The IP families (as "is IPv4") of a Service: spec.ipFamilies, else
/// those of its ClusterIPs.
fn service_families(spec: &ServiceSpec, cluster_ips: &[IpAddr]) -> Vec<bool> {
    match &spec.ip_families {
        Some(f) if !f.is_empty() => f.iter().map(|f| &**f == "IPv4").collect(),
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

//! Desired virtual services to IPVS requests: a minimal diff against the
//! kernel's table. An unchanged service is not touched, and a service that
//! is not ours is never named.

use std::{
    borrow::Borrow,
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use super::{
    Destination, ForwardMethod, InvalidValue, IpvsClient, IpvsError, Netmask, Request, Scheduler,
    Service, ServiceConfig, ServiceFlagBits, ServiceKey,
};
use crate::desired::{Family, Forward, VirtualService, VsKey};

/// What a sync changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpvsReport {
    pub services_added: usize,
    pub services_edited: usize,
    pub services_removed: usize,
    pub destinations_added: usize,
    pub destinations_edited: usize,
    pub destinations_removed: usize,
    pub services_unchanged: usize,
}

impl IpvsReport {
    pub fn changed(&self) -> bool {
        self.services_added
            + self.services_edited
            + self.services_removed
            + self.destinations_added
            + self.destinations_edited
            + self.destinations_removed
            > 0
    }
}

/// Which kernel services are ipwarden's: those on a VIP (an address on our
/// dummy interface, or one we are about to put there) and NodePorts (a node
/// address and a port in the NodePort range). Anything else in the table
/// belongs to somebody else and is left alone.
#[derive(Clone, Debug, Default)]
pub struct IpvsScope {
    pub vips: BTreeSet<IpAddr>,
    pub node_ips: BTreeSet<IpAddr>,
    pub node_port_range: (u16, u16),
}

impl IpvsScope {
    pub fn owns(&self, key: &ServiceKey) -> bool {
        match key {
            ServiceKey::Addr { addr, port, .. } => {
                self.vips.contains(addr)
                    || (self.node_ips.contains(addr)
                        && (self.node_port_range.0..=self.node_port_range.1).contains(port))
            }
            ServiceKey::Fwmark { .. } => false,
        }
    }
}

/// The kernel key of a desired virtual service's key.
pub fn kernel_key(key: &VsKey) -> ServiceKey {
    let (protocol, addr, port) = (key.proto, key.addr, key.port);
    ServiceKey::Addr {
        protocol,
        addr,
        port,
    }
}

/// The kernel form of a desired virtual service.
pub fn to_kernel(vs: &VirtualService) -> Result<(Service, Vec<Destination>), InvalidValue> {
    let key = kernel_key(&vs.key);
    let flags = ServiceFlagBits::from(vs.flags);
    let mut service = Service::new(key, Scheduler::new(&vs.scheduler)?).with_flags(flags);
    if vs.flags.persistent {
        let family = Family::of(&vs.key.addr);
        service = service.persistent(vs.timeout, Netmask::prefix(family, vs.netmask_bits)?);
    }
    let destinations = vs
        .destinations
        .iter()
        .map(|d| {
            Destination::new(d.addr, d.port)
                .forward(match d.forward {
                    Forward::Masq => ForwardMethod::Masq,
                    Forward::Tunnel => ForwardMethod::Tunnel,
                    Forward::Route => ForwardMethod::Route,
                })
                .weight(d.weight)
        })
        .collect();
    Ok((service, destinations))
}

/// Whether [`to_kernel`] takes `vs`, without making its kernel form.
pub fn kernel_valid(vs: &VirtualService) -> bool {
    Scheduler::valid(&vs.scheduler)
        && (!vs.flags.persistent
            || Netmask::prefix(Family::of(&vs.key.addr), vs.netmask_bits).is_ok())
}

/// The kernel forms of the valid services of `desired`, made one at a
/// time as a plan takes them (all at once they were 2.4 MiB at 10k
/// Services); invalid ones were reported by the controller already.
pub fn kernel_forms<'a>(
    desired: &'a [&VirtualService],
) -> impl Iterator<Item = (Service, Vec<Destination>)> + 'a {
    desired.iter().filter_map(|vs| to_kernel(vs).ok())
}

/// The kernel keys of the valid services of `desired`.
pub fn kernel_keys<'a>(desired: &'a [&VirtualService]) -> impl Iterator<Item = ServiceKey> + 'a {
    desired
        .iter()
        .filter(|vs| kernel_valid(vs))
        .map(|vs| kernel_key(&vs.key))
}

/// The requests that turn `actual` into `desired`, and what they change.
/// Services are added before their destinations; deletions come last.
pub fn plan(
    desired: &[(Service, Vec<Destination>)],
    actual: &[ServiceConfig],
    scope: &IpvsScope,
) -> (Vec<Request>, IpvsReport) {
    let mut planner = Planner::new(actual);
    let mut reqs = Vec::new();
    for (svc, dests) in desired {
        planner.service(svc, dests, &mut reqs);
    }
    let report = planner.finish(scope, &mut reqs);
    (reqs, report)
}

/// [`plan`] one desired service at a time, so that a caller can run the
/// requests as they come instead of holding them all (a first sync at 10k
/// Services plans 40k requests: 4.5 MiB at the agent's peak).
struct Planner<'a> {
    actual: BTreeMap<ServiceKey, &'a ServiceConfig>,
    wanted: BTreeSet<ServiceKey>,
    /// Destination deletions, run after every addition.
    deletes: Vec<Request>,
    report: IpvsReport,
}

impl<'a> Planner<'a> {
    fn new(actual: &'a [ServiceConfig]) -> Self {
        Self {
            actual: actual.iter().map(|v| (v.service.key, v)).collect(),
            wanted: BTreeSet::new(),
            deletes: Vec::new(),
            report: IpvsReport::default(),
        }
    }

    /// The requests that bring `svc` and its destinations to `dests`,
    /// pushed onto `reqs` (its destination deletions wait for
    /// [`Self::finish`]).
    fn service(&mut self, svc: &Service, dests: &[Destination], reqs: &mut Vec<Request>) {
        let r = &mut self.report;
        self.wanted.insert(svc.key);
        let Some(have) = self.actual.get(&svc.key) else {
            reqs.push(Request::AddService(svc.clone()));
            r.services_added += 1;
            for d in dests {
                reqs.push(Request::AddDestination {
                    service: svc.key,
                    destination: *d,
                });
                r.destinations_added += 1;
            }
            return;
        };
        let mut touched = false;
        if !svc.same_config(&have.service) {
            reqs.push(Request::EditService(svc.clone()));
            r.services_edited += 1;
            touched = true;
        }
        let have_dests: BTreeMap<_, _> = have.destinations.iter().map(|d| (d.key(), d)).collect();
        let want_keys: BTreeSet<_> = dests.iter().map(Destination::key).collect();
        for d in dests {
            let (service, destination) = (svc.key, *d);
            reqs.push(match have_dests.get(&d.key()) {
                None => {
                    r.destinations_added += 1;
                    Request::AddDestination {
                        service,
                        destination,
                    }
                }
                Some(h) if *h != d => {
                    r.destinations_edited += 1;
                    Request::EditDestination {
                        service,
                        destination,
                    }
                }
                Some(_) => continue,
            });
            touched = true;
        }
        for k in have_dests.keys().filter(|k| !want_keys.contains(k)) {
            self.deletes.push(Request::DeleteDestination {
                service: svc.key,
                destination: *k,
            });
            r.destinations_removed += 1;
            touched = true;
        }
        if !touched {
            r.services_unchanged += 1;
        }
    }

    /// The last requests: the destination deletions, then the services of
    /// ours that no desired service wants.
    fn finish(mut self, scope: &IpvsScope, reqs: &mut Vec<Request>) -> IpvsReport {
        for key in self.actual.keys() {
            if !self.wanted.contains(key) && scope.owns(key) {
                self.deletes.push(Request::DeleteService(*key));
                self.report.services_removed += 1;
            }
        }
        reqs.append(&mut self.deletes);
        self.report
    }
}

/// Reads the table, applies the difference in batches, and returns what
/// changed, or every request that failed (the others still ran).
pub fn sync(
    client: &mut IpvsClient,
    desired: &[(Service, Vec<Destination>)],
    scope: &IpvsScope,
) -> Result<IpvsReport, Vec<IpvsError>> {
    let actual = client.list_configs().map_err(|e| vec![e])?;
    apply_plan(client, desired, &actual, scope)
}

/// A partial sync: reads back only the services in `keys` (those of the
/// Services that changed), and brings just them to `desired` (which holds
/// the desired services among `keys`; a key of `keys` missing from it is
/// deleted if it is ours). The rest of the table is not even listed.
pub fn sync_keys(
    client: &mut IpvsClient,
    desired: &[(Service, Vec<Destination>)],
    keys: &BTreeSet<ServiceKey>,
    scope: &IpvsScope,
) -> Result<IpvsReport, Vec<IpvsError>> {
    let mut actual = Vec::with_capacity(keys.len());
    for key in keys {
        actual.extend(client.config(key).map_err(|e| vec![e])?);
    }
    apply_plan(client, desired, &actual, scope)
}

/// Whether `actual` holds a service whose key is not `wanted`: only those
/// need an [`IpvsScope`] (which costs reading the node's routes and
/// addresses) to decide whether they are ours to delete.
pub fn has_strays(wanted: impl IntoIterator<Item = ServiceKey>, actual: &[ServiceConfig]) -> bool {
    let wanted: BTreeSet<ServiceKey> = wanted.into_iter().collect();
    actual.iter().any(|v| !wanted.contains(&v.service.key))
}

/// Plans `actual` -> `desired` and runs it, a few batches at a time as
/// planned, in [`plan`]'s order; every failed request is returned (the
/// others still ran). `desired` may make each kernel form as it is
/// planned ([`kernel_forms`]).
pub fn apply_plan<D: Borrow<(Service, Vec<Destination>)>>(
    client: &mut IpvsClient,
    desired: impl IntoIterator<Item = D>,
    actual: &[ServiceConfig],
    scope: &IpvsScope,
) -> Result<IpvsReport, Vec<IpvsError>> {
    // Full batches run as soon as this many requests wait: the batches
    // are those one run of the whole plan would send.
    let chunk = client.batch_size() * RUN_BATCHES;
    let mut planner = Planner::new(actual);
    let mut reqs = Vec::new();
    let mut errors = Vec::new();
    for one in desired {
        let (svc, dests) = one.borrow();
        planner.service(svc, dests, &mut reqs);
        if reqs.len() >= chunk {
            let ran = client.execute_full_batches(&reqs, |_, e| errors.push(e));
            reqs.drain(..ran);
        }
    }
    let report = planner.finish(scope, &mut reqs);
    client.execute_each(&reqs, |_, e| errors.push(e));
    if errors.is_empty() {
        Ok(report)
    } else {
        Err(errors)
    }
}

/// How many batches of requests [`apply_plan`] plans before running them.
const RUN_BATCHES: usize = 4;

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::desired::{Protocol, RealServer, ServiceFlags, ServiceRef, VsKey};

    pub(crate) fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A TCP service on `addr:port`, round robin, its destinations
    /// (address, weight) masqueraded to port 8080.
    pub(crate) fn vs(addr: &str, port: u16, dests: &[(&str, u32)]) -> VirtualService {
        VirtualService {
            key: VsKey {
                addr: ip(addr),
                proto: Protocol::Tcp,
                port,
            },
            scheduler: "rr".into(),
            flags: ServiceFlags::default(),
            timeout: 0,
            netmask_bits: 32,
            destinations: dests
                .iter()
                .map(|(a, w)| RealServer {
                    addr: ip(a),
                    port: 8080,
                    weight: *w,
                    forward: Forward::Masq,
                })
                .collect(),
            service: ServiceRef::default(),
            origin: String::new(),
            source_ranges: false,
        }
    }

    /// What the kernel would list after programming `v`.
    fn kernel(v: &VirtualService) -> ServiceConfig {
        let (mut service, destinations) = to_kernel(v).unwrap();
        service.flags |= ServiceFlagBits::HASHED;
        ServiceConfig {
            service,
            destinations,
        }
    }

    fn ours() -> IpvsScope {
        IpvsScope {
            vips: [ip("10.96.0.10"), ip("10.96.0.11")].into(),
            node_ips: [ip("192.168.56.10")].into(),
            node_port_range: (30000, 32767),
        }
    }

    fn desired(v: &[VirtualService]) -> Vec<(Service, Vec<Destination>)> {
        v.iter().map(|v| to_kernel(v).unwrap()).collect()
    }

    #[test]
    fn kernel_valid_takes_what_to_kernel_takes() {
        let plain = vs("10.96.0.10", 80, &[("10.244.1.5", 1)]);
        let mut bad_scheduler = plain.clone();
        bad_scheduler.scheduler = "a scheduler".into();
        let mut sticky = plain.clone();
        sticky.flags.persistent = true;
        sticky.netmask_bits = 24;
        let mut bad_mask = sticky.clone();
        bad_mask.netmask_bits = 33;
        // A netmask is only read when the service is persistent.
        let mut loose_mask = plain.clone();
        loose_mask.netmask_bits = 33;
        for (v, valid) in [
            (&plain, true),
            (&bad_scheduler, false),
            (&sticky, true),
            (&bad_mask, false),
            (&loose_mask, true),
        ] {
            assert_eq!(kernel_valid(v), valid, "{v:?}");
            assert_eq!(to_kernel(v).is_ok(), valid, "{v:?}");
        }
        let all = [&plain, &bad_scheduler, &sticky, &bad_mask, &loose_mask];
        let keys: Vec<ServiceKey> = kernel_keys(&all).collect();
        let forms: Vec<ServiceKey> = kernel_forms(&all).map(|(s, _)| s.key).collect();
        assert_eq!(keys, forms);
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn unchanged_services_produce_no_requests() {
        let want = [vs("10.96.0.10", 80, &[("10.244.1.5", 1)])];
        let (reqs, report) = plan(&desired(&want), &[kernel(&want[0])], &ours());
        assert!(reqs.is_empty(), "{reqs:?}");
        assert_eq!(report.services_unchanged, 1);
        assert!(!report.changed());
    }

    #[test]
    fn only_the_changed_destination_is_touched_and_foreign_services_are_kept() {
        let before = vs("10.96.0.10", 80, &[("10.244.1.5", 1), ("10.244.1.6", 1)]);
        let stale = vs("10.96.0.11", 53, &[("10.244.1.7", 1)]);
        let foreign = vs("172.16.0.1", 80, &[("172.16.0.2", 1)]);
        let foreign_nodeport = vs("192.168.56.10", 8080, &[]);
        let after = vs("10.96.0.10", 80, &[("10.244.1.5", 0), ("10.244.1.8", 1)]);
        let actual = [
            kernel(&before),
            kernel(&stale),
            kernel(&foreign),
            kernel(&foreign_nodeport),
        ];
        let (reqs, report) = plan(&desired(&[after]), &actual, &ours());
        let ops: Vec<String> = reqs
            .iter()
            .map(|r| format!("{} {}", r.op(), r.target()))
            .collect();
        assert_eq!(
            ops,
            [
                "edit destination 10.244.1.5:8080 of TCP 10.96.0.10:80",
                "add destination 10.244.1.8:8080 of TCP 10.96.0.10:80",
                "delete destination 10.244.1.6:8080 of TCP 10.96.0.10:80",
                "delete service TCP 10.96.0.11:53",
            ]
        );
        assert_eq!(
            (
                report.destinations_edited,
                report.destinations_added,
                report.destinations_removed
            ),
            (1, 1, 1)
        );
        assert_eq!(report.services_removed, 1);
    }

    #[test]
    fn new_services_come_with_their_destinations_and_config_changes_are_edits() {
        let mut sticky = vs("10.96.0.10", 80, &[("10.244.1.5", 1)]);
        let plain = kernel(&sticky);
        sticky.flags.persistent = true;
        sticky.timeout = 600;
        let fresh = vs("10.96.0.11", 443, &[("10.244.1.9", 1)]);
        let (reqs, report) = plan(&desired(&[sticky, fresh]), &[plain], &ours());
        assert_eq!(reqs.len(), 3);
        assert!(matches!(&reqs[0], Request::EditService(s) if s.timeout == 600));
        assert!(matches!(&reqs[1], Request::AddService(_)));
        assert!(matches!(&reqs[2], Request::AddDestination { .. }));
        assert_eq!((report.services_edited, report.services_added), (1, 1));
    }
}

//! The service proxy's part of a pass: its sets, IPVS, the VIP addresses
//! on ipwarden0, and its chains. It keeps each Service's share of the
//! desired state, so a partial sync recomputes only the Services that
//! changed and reads back and writes only their IPVS services.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use crate::{
    cluster::Snapshot,
    controllers::services::{self, names, ServiceShare},
    desired::{Family, Member, ServiceRef, ServiceState, SetChanges, Table, VsKey},
    kernel::iptables,
    store::{ApplyReport, Claim, Owner},
};

use super::{
    dataplane::{Dataplane, IpvsSelection},
    schedule::SyncKind,
    ReconcileError, ReconcileReport,
};

/// The set-store owner name of the service controller.
pub const SERVICES_OWNER: &str = "services";

/// Settings of the service proxy.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub node_port_range: (u16, u16),
    pub services: services::Options,
}

/// The service controller's claims in the set store.
pub fn services_owner() -> Owner {
    Owner::new(
        SERVICES_OWNER,
        [names::SET_SVIP, names::SET_SVIP_PRT, names::SET_LOCAL_IPS]
            .iter()
            .map(|n| Claim::Name(n.to_string()))
            .collect(),
    )
    .mirror(&[names::SET_SVIP_PRT, names::SET_SVIP])
}

/// What changed since the last sync, as far as Services are concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceChanges {
    pub services: BTreeSet<ServiceRef>,
    /// EndpointSlices by (namespace, name).
    pub slices: BTreeSet<(String, String)>,
    /// This node's Node changed (its addresses are the NodePorts').
    pub node: bool,
}

impl ServiceChanges {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && !self.node
    }
}

/// A computed pass, between its steps.
pub struct Prepared {
    pub state: ServiceState,
    /// The IPVS keys a partial sync reads back; None: the whole table.
    pub ipvs_keys: Option<BTreeSet<VsKey>>,
    pub kind: SyncKind,
}

/// The service controller with its dataplane and the last shares.
pub struct ServiceSync<D> {
    dataplane: D,
    opts: ProxyOptions,
    shares: BTreeMap<ServiceRef, ServiceShare>,
    /// Which Service each EndpointSlice served at the last sync, so a
    /// deleted slice still names its Service.
    slice_owners: BTreeMap<(String, String), ServiceRef>,
    node_ips: Vec<IpAddr>,
    /// The desired state of the last successful sync.
    last_state: Option<Arc<ServiceState>>,
}

impl<D: Dataplane> ServiceSync<D> {
    pub fn new(dataplane: D, opts: ProxyOptions) -> Self {
        Self {
            dataplane,
            opts,
            shares: BTreeMap::new(),
            slice_owners: BTreeMap::new(),
            node_ips: Vec::new(),
            last_state: None,
        }
    }

    /// The desired state of the last successful sync.
    pub fn last_state(&self) -> Option<Arc<ServiceState>> {
        self.last_state.clone()
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// The same controller over a changed dataplane (e.g. with eBPF).
    pub fn map_dataplane<E>(self, f: impl FnOnce(D) -> E) -> ServiceSync<E> {
        ServiceSync {
            dataplane: f(self.dataplane),
            opts: self.opts,
            shares: self.shares,
            slice_owners: self.slice_owners,
            node_ips: self.node_ips,
            last_state: self.last_state,
        }
    }

    /// Computes the desired state: every Service for a full sync, only the
    /// changed ones (and the Services of changed slices) for a partial one.
    /// A partial sync becomes full when the node's addresses changed.
    pub fn prepare(
        &mut self,
        kind: SyncKind,
        snapshot: &Snapshot,
        changes: &ServiceChanges,
    ) -> Prepared {
        let node_ips = services::node_ips(snapshot, &self.opts.services);
        let kind = if node_ips != self.node_ips || changes.node {
            SyncKind::Full
        } else {
            kind
        };
        self.node_ips = node_ips;
        let ipvs_keys = match kind {
            SyncKind::Full => {
                self.shares = snapshot
                    .services
                    .iter()
                    .map(|svc| {
                        (
                            service_ref(svc),
                            services::share(svc, snapshot, &self.node_ips, &self.opts.services),
                        )
                    })
                    .collect();
                None
            }
            SyncKind::Partial => Some(self.recompute(snapshot, changes)),
        };
        match kind {
            SyncKind::Full => self.slice_owners = slice_owners(snapshot),
            SyncKind::Partial => self.follow_slices(snapshot, &changes.slices),
        }
        let state = services::assemble(
            self.shares.values(),
            &services::NodeView::of(snapshot),
            &self.opts.services,
        );
        Prepared {
            state,
            ipvs_keys,
            kind,
        }
    }

    /// Recomputes the shares of the affected Services; returns their IPVS
    /// keys before and after.
    fn recompute(&mut self, snapshot: &Snapshot, changes: &ServiceChanges) -> BTreeSet<VsKey> {
        let mut affected = changes.services.clone();
        for slice in &changes.slices {
            let owner = snapshot
                .endpoint_slices
                .iter()
                .find(|s| {
                    s.metadata.namespace.as_deref() == Some(&slice.0)
                        && s.metadata.name.as_deref() == Some(&slice.1)
                })
                .and_then(|s| {
                    s.metadata
                        .labels
                        .as_ref()?
                        .get("kubernetes.io/service-name")
                        .cloned()
                })
                .map(|svc| ServiceRef::new(slice.0.clone(), svc))
                .or_else(|| self.slice_owners.get(slice).cloned());
            affected.extend(owner);
        }
        let mut keys = BTreeSet::new();
        for r in affected {
            if let Some(old) = self.shares.remove(&r) {
                keys.extend(old.keys());
            }
            let svc = snapshot.services.iter().find(|s| service_ref(s) == r);
            if let Some(svc) = svc {
                let share = services::share(svc, snapshot, &self.node_ips, &self.opts.services);
                keys.extend(share.keys());
                self.shares.insert(r, share);
            }
        }
        keys
    }

    /// Which Service each changed slice serves now (a deleted slice
    /// leaves the map).
    fn follow_slices(&mut self, snapshot: &Snapshot, changed: &BTreeSet<(String, String)>) {
        for key in changed {
            self.slice_owners.remove(key);
        }
        for slice in &snapshot.endpoint_slices {
            let (Some(ns), Some(name)) = (&slice.metadata.namespace, &slice.metadata.name) else {
                continue;
            };
            let key = (ns.clone(), name.clone());
            if !changed.contains(&key) {
                continue;
            }
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"));
            if let Some(svc) = service {
                self.slice_owners
                    .insert(key, ServiceRef::new(ns.clone(), svc.clone()));
            }
        }
    }

    /// The last applied state, when `p` is a partial sync that can build
    /// on it.
    fn base(&self, p: &Prepared) -> Option<Arc<ServiceState>> {
        p.ipvs_keys.as_ref().and(self.last_state.clone())
    }

    pub fn apply_sets(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        report.virtual_services = p.state.virtual_services.len();
        report.problems.extend(p.state.problems.iter().cloned());
        let applied = match self.base(p) {
            Some(last) => self.apply_set_changes(&last, &p.state)?,
            None => self.dataplane.apply_sets(
                SERVICES_OWNER,
                &p.state.sets,
                &p.state.member_services,
            )?,
        };
        report.sets = Some(applied);
        Ok(())
    }

    /// A partial sync's sets: the members that moved since `last`, and
    /// whole only the sets that appeared, changed type or went.
    fn apply_set_changes(
        &mut self,
        last: &ServiceState,
        now: &ServiceState,
    ) -> Result<ApplyReport, ReconcileError> {
        let touched: BTreeSet<Member> = now
            .member_services
            .iter()
            .filter(|(m, svc)| last.member_services.get(m) != Some(svc))
            .map(|(m, _)| *m)
            .collect();
        let changes = SetChanges::between(&last.sets, &now.sets, &touched);
        let mut report = ApplyReport::nothing(SERVICES_OWNER);
        if !changes.whole.is_empty() || !changes.removed.is_empty() {
            report.absorb(self.dataplane.apply_changed_sets(
                SERVICES_OWNER,
                &changes.whole,
                &changes.removed,
            )?);
        }
        if !changes.deltas.is_empty() {
            report.absorb(self.dataplane.apply_set_members(
                SERVICES_OWNER,
                &changes.deltas,
                &now.member_services,
            )?);
        }
        Ok(report)
    }

    /// IPVS, then the addresses its services listen on.
    pub fn apply_ipvs_and_addresses(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        let desired: Vec<_> = match &p.ipvs_keys {
            None => p.state.virtual_services.clone(),
            Some(keys) => p
                .state
                .virtual_services
                .iter()
                .filter(|vs| keys.contains(&vs.key))
                .cloned()
                .collect(),
        };
        let Some(last) = self.base(p) else {
            let all = IpvsSelection::All;
            report.ipvs = self
                .dataplane
                .sync_ipvs(&desired, all, &p.state.vips, &self.node_ips)?;
            report.addresses = self.dataplane.sync_addresses(&p.state.vips)?;
            return Ok(());
        };
        // A key of a Service that went is on a VIP of the last state.
        let vips: BTreeSet<IpAddr> = last.vips.union(&p.state.vips).copied().collect();
        let keys = IpvsSelection::Keys(p.ipvs_keys.as_ref().expect("partial"));
        report.ipvs = self
            .dataplane
            .sync_ipvs(&desired, keys, &vips, &self.node_ips)?;
        let add: BTreeSet<IpAddr> = p.state.vips.difference(&last.vips).copied().collect();
        let del: BTreeSet<IpAddr> = last.vips.difference(&p.state.vips).copied().collect();
        report.addresses = self.dataplane.change_addresses(&add, &del)?;
        Ok(())
    }

    /// The chains; a partial sync whose rules are those of the last state
    /// writes none (drift in them waits for the next full sync).
    pub fn apply_chains(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        if self
            .base(p)
            .is_some_and(|last| last.iptables == p.state.iptables)
        {
            return Ok(());
        }
        for plan in &p.state.iptables {
            let changes = self.dataplane.apply_table(plan)?;
            report.chains_written.extend(
                changes
                    .chains_written
                    .iter()
                    .map(|c| format!("{}/{:?}/{c}", plan.table, plan.family)),
            );
        }
        Ok(())
    }

    /// Last: the health checks answer for what is programmed.
    /// A partial sync leaves them alone when they are those of the last
    /// sync (a port that could not be bound is retried by the next full
    /// sync).
    pub fn serve_health_checks(&mut self, p: &Prepared, report: &mut ReconcileReport) {
        let unchanged = p.kind == SyncKind::Partial
            && self
                .last_state
                .as_ref()
                .is_some_and(|last| last.health_checks == p.state.health_checks);
        if unchanged {
            return;
        }
        let problems = self.dataplane.serve_health_checks(&p.state.health_checks);
        report.problems.extend(problems);
    }

    /// One whole pass of the service controller.
    pub fn sync(
        &mut self,
        kind: SyncKind,
        snapshot: &Snapshot,
        changes: &ServiceChanges,
    ) -> Result<ReconcileReport, ReconcileError> {
        let mut step = Stopwatch::start();
        let p = self.prepare(kind, snapshot, changes);
        step.lap("prepare");
        let mut report = ReconcileReport::default();
        self.apply_sets(&p, &mut report)?;
        step.lap("sets");
        self.apply_ipvs_and_addresses(&p, &mut report)?;
        step.lap("ipvs and addresses");
        self.apply_chains(&p, &mut report)?;
        step.lap("chains");
        self.serve_health_checks(&p, &mut report);
        step.lap("health checks");
        tracing::debug!(kind = ?p.kind, "service sync steps: {}", step.laps());
        self.last_state = Some(Arc::new(p.state));
        Ok(report)
    }
}

/// Packets refused at unserved frontends (traffic policy Local, no local
/// endpoint) per Service "NAMESPACE/NAME", both families.
pub fn no_local_endpoint_packets() -> Result<BTreeMap<String, u64>, ReconcileError> {
    let mut out = BTreeMap::new();
    for family in Family::ALL {
        for (service, packets) in
            iptables::comment_counters(family, Table::Filter, names::NO_LOCAL_ENDPOINT)?
        {
            *out.entry(service).or_default() += packets;
        }
    }
    Ok(out)
}

/// Step durations of one sync, for the debug log.
struct Stopwatch {
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Stopwatch {
    fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((step, now - self.last));
        self.last = now;
    }

    fn laps(&self) -> String {
        self.laps
            .iter()
            .map(|(s, d)| format!("{s} {:.1} ms", d.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn service_ref(svc: &k8s_openapi::api::core::v1::Service) -> ServiceRef {
    ServiceRef::new(
        svc.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

fn slice_owners(snapshot: &Snapshot) -> BTreeMap<(String, String), ServiceRef> {
    snapshot
        .endpoint_slices
        .iter()
        .filter_map(|s| {
            let ns = s.metadata.namespace.clone()?;
            let svc = s
                .metadata
                .labels
                .as_ref()?
                .get("kubernetes.io/service-name")?
                .clone();
            Some((
                (ns.clone(), s.metadata.name.clone()?),
                ServiceRef::new(ns, svc),
            ))
        })
        .collect()
}

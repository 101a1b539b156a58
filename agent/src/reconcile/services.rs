//! The service proxy's part of a pass: its sets, IPVS, the VIP addresses
//! on ipwarden0, and its chains. Its desired state is keyed
//! ([`ServiceTable`]): a partial sync recomputes only the Services a
//! change touches and writes the deltas at their keys, reading back only
//! their IPVS services; a full sync recomputes and reads back everything.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard},
};

use crate::{
    cluster::Snapshot,
    controllers::services::{self, names, FullState, ServiceDelta, ServiceTable},
    desired::{Family, ServiceRef, Table, VirtualService, VsKey},
    kernel::iptables,
    locks::RwLockOrRecover,
    store::{ApplyReport, Claim, Owner},
};

use super::{
    dataplane::{Dataplane, IpvsSelection},
    ipvs_settings::IpvsSettings,
    keep::KeepState,
    schedule::{FullReason, SyncKind},
    ReconcileError, ReconcileReport,
};

/// The set-store owner name of the service controller.
pub const SERVICES_OWNER: &str = "services";

/// Settings of the service proxy.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub node_port_range: (u16, u16),
    /// The node's IPVS settings, written when the proxy connects.
    pub ipvs: IpvsSettings,
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
    /// When the first of these changes reached the dispatcher: the sync
    /// reports the wait from there to its start as its "queued" step.
    pub first_noted: Option<std::time::Instant>,
}

impl ServiceChanges {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.slices.is_empty() && !self.node
    }
}

/// A computed pass, between its steps: what a full sync writes besides
/// the sets and virtual services (those it reads from the keyed table in
/// place), or what moved (partial).
pub enum Prepared {
    /// Shared with the controller, which hands the same one to the next
    /// full sync that keeps the table.
    Full(Arc<FullState>),
    Partial(ServiceDelta),
}

/// The service controller's keyed desired state, shared with `/state`
/// and the counters. A full sync reads it while it writes IPVS, so
/// readers share the lock; only computing a sync's state writes.
#[derive(Clone, Default)]
pub struct ServicesView(Arc<RwLock<ServiceTable>>);

impl ServicesView {
    /// `f` over the virtual services in key order, read in place under
    /// the table's lock: `/state` at 10k Services would otherwise assemble
    /// the whole state (sets, rules, members) to list them.
    pub fn with_virtual_services<R>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = &VirtualService>) -> R,
    ) -> R {
        let table = self.read();
        let mut all = table.virtual_services();
        f(&mut all)
    }

    /// Whether the last sync desired any no-local-endpoint refusal.
    pub fn has_unserved(&self) -> bool {
        self.read().has_unserved()
    }

    fn read(&self) -> RwLockReadGuard<'_, ServiceTable> {
        self.0.read_or_recover()
    }

    fn write(&self) -> RwLockWriteGuard<'_, ServiceTable> {
        self.0.write_or_recover()
    }
}

impl std::fmt::Debug for ServicesView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServicesView")
    }
}

/// The service controller with its dataplane and its keyed desired state.
pub struct ServiceSync<D> {
    dataplane: D,
    table: ServicesView,
    /// A full sync has been applied: partial syncs build on it.
    applied: bool,
    /// How long each step of the last sync took.
    steps: Vec<(&'static str, std::time::Duration)>,
    /// When a full sync may keep the table instead of recomputing it.
    keep: KeepState,
    /// The last full sync's state, while no partial sync has changed the
    /// table since: a full sync that keeps the table reuses it.
    kept: Option<Arc<FullState>>,
    /// This full sync keeps the table, so the set store's copy of the
    /// sets is still what the table would build.
    sets_kept: bool,
}

impl<D: Dataplane> ServiceSync<D> {
    pub fn new(dataplane: D, opts: ProxyOptions) -> Self {
        Self {
            dataplane,
            table: ServicesView(Arc::new(RwLock::new(ServiceTable::new(opts.services)))),
            applied: false,
            steps: Vec::new(),
            keep: KeepState::default(),
            kept: None,
            sets_kept: false,
        }
    }

    /// Why the next full sync runs (None: it is partial).
    pub fn set_full_reason(&mut self, reason: Option<FullReason>) {
        self.keep.set_reason(reason);
    }

    /// The desired state, for `/state` (assembled when read).
    pub fn view(&self) -> ServicesView {
        self.table.clone()
    }

    /// How long each step of the last sync took.
    pub fn last_steps(&self) -> &[(&'static str, std::time::Duration)] {
        &self.steps
    }

    pub fn dataplane(&self) -> &D {
        &self.dataplane
    }

    /// The same controller over a changed dataplane (e.g. with eBPF).
    pub fn map_dataplane<E>(self, f: impl FnOnce(D) -> E) -> ServiceSync<E> {
        ServiceSync {
            dataplane: f(self.dataplane),
            table: self.table,
            applied: self.applied,
            steps: self.steps,
            keep: self.keep,
            kept: self.kept,
            sets_kept: self.sets_kept,
        }
    }

    /// Computes the desired state: every Service for a full sync; for a
    /// partial one, only the changed Services and those of the changed
    /// slices, read back at their keys. A partial sync becomes full when
    /// the node's side changed, or before the first full sync.
    pub fn prepare(
        &mut self,
        kind: SyncKind,
        snapshot: &Snapshot,
        changes: &ServiceChanges,
    ) -> Prepared {
        let mut table = self.table.write();
        let partial = kind == SyncKind::Partial
            && self.applied
            && !changes.node
            && !table.node_changed(snapshot);
        if !partial {
            let unchanged = kind == SyncKind::Full
                && self.applied
                && changes.is_empty()
                && !table.node_changed(snapshot);
            self.sets_kept = self.keep.keep_now(unchanged);
            if self.sets_kept {
                let kept = self
                    .kept
                    .get_or_insert_with(|| Arc::new(table.full_state()));
                return Prepared::Full(kept.clone());
            }
            let state = Arc::new(table.rebuild(snapshot));
            self.kept = Some(state.clone());
            return Prepared::Full(state);
        }
        // The first partial sync after a full one: the kept state (at 50k
        // Services a large structure) is freed off this change's path.
        if let Some(stale) = self.kept.take() {
            drop_elsewhere(stale);
        }
        self.sets_kept = false;
        let mut affected = changes.services.clone();
        affected.extend(table.slice_services(&changes.slices, snapshot));
        Prepared::Partial(table.update(&affected, snapshot))
    }

    pub fn apply_sets(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        report.virtual_services = self.table.read().len();
        let applied = match p {
            Prepared::Full(state) => {
                report.problems.extend(state.problems.iter().cloned());
                if self.sets_kept {
                    self.dataplane.reapply_sets(SERVICES_OWNER)?
                } else {
                    // Built here for the store, which keeps them.
                    let (sets, members) = self.table.read().sets();
                    self.dataplane
                        .hand_over_sets(SERVICES_OWNER, sets, members)?
                }
            }
            Prepared::Partial(delta) => {
                report.problems.extend(delta.problems.iter().cloned());
                if delta.sets.is_empty() {
                    ApplyReport::nothing(SERVICES_OWNER)
                } else {
                    self.dataplane.apply_set_members(
                        SERVICES_OWNER,
                        &delta.sets,
                        &delta.member_services,
                    )?
                }
            }
        };
        report.sets = Some(applied);
        Ok(())
    }

    /// IPVS, then the addresses its services listen on.
    pub fn apply_ipvs_and_addresses(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        self.apply_ipvs(p, report)?;
        self.apply_addresses(p, report)
    }

    /// The IPVS services: all of them (full) or those at the changed keys.
    pub fn apply_ipvs(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        let table = self.table.read();
        let node_ips = table.node_ips();
        report.ipvs = match p {
            Prepared::Full(state) => {
                // Borrowed from the table, not copied out of it.
                let desired: Vec<&VirtualService> = table.virtual_services().collect();
                self.dataplane
                    .sync_ipvs(&desired, IpvsSelection::All, &state.vips, node_ips)?
            }
            Prepared::Partial(delta) => {
                let desired: Vec<&VirtualService> = delta.ipvs.values().flatten().collect();
                let keys: BTreeSet<VsKey> = delta.ipvs.keys().copied().collect();
                // Every address the keys are on (a key that went is on a
                // VIP that may have gone too).
                let vips = delta.addresses();
                self.dataplane
                    .sync_ipvs(&desired, IpvsSelection::Keys(&keys), &vips, node_ips)?
            }
        };
        Ok(())
    }

    /// The VIPs on ipwarden0 (after IPVS, which listens on them).
    pub fn apply_addresses(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        report.addresses = match p {
            Prepared::Full(state) => self.dataplane.sync_addresses(&state.vips)?,
            Prepared::Partial(delta) => self
                .dataplane
                .change_addresses(&delta.vips_added, &delta.vips_removed)?,
        };
        Ok(())
    }

    /// The chains; a partial sync whose rules did not move writes none
    /// (drift in them waits for the next full sync).
    pub fn apply_chains(
        &mut self,
        p: &Prepared,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        let plans = match p {
            Prepared::Full(state) => &state.iptables,
            Prepared::Partial(delta) => match &delta.tables {
                Some(plans) => plans,
                None => return Ok(()),
            },
        };
        for plan in plans {
            let changes = self
                .dataplane
                .apply_table_with(plan, read_back(plan.table))?;
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
    /// A partial sync leaves them alone when they did not move (a port
    /// that could not be bound is retried by the next full sync).
    pub fn serve_health_checks(&mut self, p: &Prepared, report: &mut ReconcileReport) {
        let checks = match p {
            Prepared::Full(state) => &state.health_checks,
            Prepared::Partial(delta) => match &delta.health {
                Some(checks) => checks,
                None => return,
            },
        };
        let problems = self.dataplane.serve_health_checks(checks);
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
        // A failed full sync leaves the kernel partly programmed: the next
        // sync must be full again.
        self.applied = false;
        self.apply_sets(&p, &mut report)?;
        step.lap("sets");
        self.apply_ipvs(&p, &mut report)?;
        step.lap("ipvs");
        self.apply_addresses(&p, &mut report)?;
        step.lap("vips");
        self.apply_chains(&p, &mut report)?;
        step.lap("chains");
        self.serve_health_checks(&p, &mut report);
        step.lap("health checks");
        let kind = match p {
            Prepared::Full(_) => SyncKind::Full,
            Prepared::Partial(_) => SyncKind::Partial,
        };
        tracing::debug!(?kind, "service sync steps: {}", step.laps());
        self.steps = step.into_laps();
        self.applied = true;
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

/// Drops `value` on a thread of its own, so that freeing it does not
/// delay the caller (a change's sync). When no thread starts, the value
/// was dropped with the closure, here.
fn drop_elsewhere<T: Send + 'static>(value: T) {
    let spawned = std::thread::Builder::new()
        .name("ipwarden-drop".into())
        .spawn(move || drop(value));
    if let Err(e) = spawned {
        tracing::debug!("freed on the sync's thread: {e}");
    }
}

/// Step durations of one sync, for the debug log and the summary.
pub(crate) struct Stopwatch {
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Stopwatch {
    pub(crate) fn start() -> Self {
        Self {
            last: std::time::Instant::now(),
            laps: Vec::new(),
        }
    }

    pub(crate) fn lap(&mut self, step: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((step, now - self.last));
        self.last = now;
    }

    pub(crate) fn laps(&self) -> String {
        show_steps(&self.laps)
    }

    pub(crate) fn extend(&mut self, laps: &[(&'static str, std::time::Duration)]) {
        self.laps.extend_from_slice(laps);
        self.last = std::time::Instant::now();
    }

    pub(crate) fn into_laps(self) -> Vec<(&'static str, std::time::Duration)> {
        self.laps
    }
}

/// "step 1.2 ms, step 0.3 ms".
fn show_steps(laps: &[(&'static str, std::time::Duration)]) -> String {
    laps.iter()
        .map(|(s, d)| format!("{s} {:.1} ms", d.as_secs_f64() * 1e3))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The filter rules' forms are tested canonical in every mode
/// (`tests/firewall_netns.rs`), so a restore that was the only commit
/// since the apply's read is not read back; the nat rules (`-m ipvs`
/// needs IPVS, which the test host lacks) are always read back.
fn read_back(table: Table) -> iptables::ReadBack {
    match table {
        Table::Filter => iptables::ReadBack::UnlessAlone,
        _ => iptables::ReadBack::Always,
    }
}

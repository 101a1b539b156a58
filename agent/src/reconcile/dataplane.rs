//! The kernel as a reconcile pass sees it: one trait with a method per step,
//! so the order of a pass and what a partial sync touches are tested
//! against a recording fake (`recording.rs`), without root. The real
//! implementation goes through the set store, the IPVS and link clients
//! and the iptables applier.

use std::{borrow::Borrow, collections::BTreeSet, net::IpAddr, sync::Mutex};

use crate::{
    bpf::runtime::BpfRuntime,
    controllers::services::names,
    desired::{
        ChainDelta, Family, HealthCheck, MemberServices, Problem, SetDelta, SetSpec, Table,
        TablePlan, VirtualService, VsKey,
    },
    kernel::{
        iptables::{self, Changes, ReadBack},
        ipvs::{full_read, IpvsClient},
        ipvs_sync::{self, IpvsReport, IpvsScope},
        link::{AddressReport, AddressWatch, LinkClient, LinkError},
    },
    store::{ApplyReport, SetStore, SourcePhase},
};

use super::{ipvs_settings::IpvsSettings, keep::Cadence, ReconcileError};

/// Which IPVS services a sync reads back and may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpvsSelection<'a> {
    /// The whole table (a full sync).
    All,
    /// Only these keys (a partial sync: the keys of the changed Services,
    /// before and after the change).
    Keys(&'a BTreeSet<VsKey>),
}

/// Serves health-check node ports. The reconcile pass calls it; the HTTP
/// side lives above (`api::health_checks`) and is wired in `cli/`.
pub trait HealthCheckSink: Send {
    /// Makes the listeners exactly `checks` (opened, answers updated,
    /// closed); a port that cannot be listened on is a problem of its
    /// Service, and the others are served all the same.
    fn serve(&self, checks: &[HealthCheck]) -> Vec<Problem>;
}

/// One step each, in the order a pass calls them: sets, IPVS, addresses,
/// chains, health checks.
pub trait Dataplane: Send {
    fn apply_sets(
        &mut self,
        owner: &'static str,
        sets: &[SetSpec],
        services: &MemberServices,
    ) -> Result<ApplyReport, ReconcileError>;

    /// [`Self::apply_sets`] of sets the caller no longer needs: the store
    /// keeps them as its desired state instead of a copy.
    fn hand_over_sets(
        &mut self,
        owner: &'static str,
        sets: Vec<SetSpec>,
        services: MemberServices,
    ) -> Result<ApplyReport, ReconcileError> {
        self.apply_sets(owner, &sets, &services)
    }

    /// A full sync's sets when the owner's desired sets have not moved
    /// since its last successful sync: the store reads the kernel back
    /// against the sets it holds and repairs drift, as [`Self::apply_sets`]
    /// with the same sets would.
    fn reapply_sets(&mut self, owner: &'static str) -> Result<ApplyReport, ReconcileError>;

    /// A partial sync's sets: only `changed` and `removed` are read and
    /// written.
    fn apply_changed_sets(
        &mut self,
        owner: &'static str,
        changed: &[SetSpec],
        removed: &[String],
    ) -> Result<ApplyReport, ReconcileError>;

    /// A partial sync's members: `deltas` of sets the owner applied before.
    fn apply_set_members(
        &mut self,
        owner: &'static str,
        deltas: &[SetDelta],
        services: &MemberServices,
    ) -> Result<ApplyReport, ReconcileError>;

    /// Brings the selected IPVS services to `desired`; `node_ips` and the
    /// NodePort range say which kernel services are ours to delete.
    fn sync_ipvs(
        &mut self,
        desired: &[&VirtualService],
        selection: IpvsSelection<'_>,
        vips: &BTreeSet<IpAddr>,
        node_ips: &[IpAddr],
    ) -> Result<IpvsReport, ReconcileError>;

    fn sync_addresses(&mut self, vips: &BTreeSet<IpAddr>) -> Result<AddressReport, ReconcileError>;

    /// A partial sync's VIPs: adds and deletes just these on ipwarden0.
    fn change_addresses(
        &mut self,
        add: &BTreeSet<IpAddr>,
        del: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, ReconcileError>;

    fn apply_table(&mut self, plan: &TablePlan) -> Result<Changes, ReconcileError>;

    /// [`Self::apply_table`], reading back as `read_back` says (fakes
    /// have nothing to read back).
    fn apply_table_with(
        &mut self,
        plan: &TablePlan,
        read_back: ReadBack,
    ) -> Result<Changes, ReconcileError> {
        let _ = read_back;
        self.apply_table(plan)
    }

    /// [`Self::apply_table_with`] of every plan, one result each, in
    /// order; a failed plan does not stop the others. The real kernel
    /// writes the tables at once (`iptables::apply_all_with`); the default
    /// applies them one after the other.
    fn apply_tables_with(
        &mut self,
        plans: &[TablePlan],
        read_back: ReadBack,
    ) -> Vec<Result<Changes, ReconcileError>> {
        plans
            .iter()
            .map(|plan| self.apply_table_with(plan, read_back))
            .collect()
    }

    /// Has nothing committed to `family`'s `table` since the owner `tag`'s
    /// last verified apply? (`iptables::untouched_since_verified`; fakes
    /// cannot tell, so they say no.)
    fn table_untouched(&self, family: Family, table: Table, tag: &str) -> bool {
        let _ = (family, table, tag);
        false
    }

    /// The sources whose traffic the tc program must never mark (the
    /// policy controller's egress-restricted pods), before or after the
    /// chains that restrict them (`store::SourcePhase`).
    fn restrict_sources(&mut self, sources: &BTreeSet<IpAddr>, phase: SourcePhase);

    /// A partial sync's chains: only those `delta` names, no read-back.
    fn apply_chain_delta(&mut self, delta: &ChainDelta) -> Result<Changes, ReconcileError>;

    /// The node's own addresses (for local-ips), without the VIPs.
    fn local_addresses(&self) -> Result<Vec<IpAddr>, ReconcileError>;

    /// The health-check node ports to serve; the problems of those that
    /// cannot be.
    fn serve_health_checks(&mut self, checks: &[HealthCheck]) -> Vec<Problem>;
}

/// The kernel of the calling thread's network namespace. Netlink sockets
/// belong to the namespace they were opened in: each controller's thread
/// opens its own, and never leaves the agent's namespace.
pub struct RealDataplane {
    store: SetStore,
    ipvs: Option<IpvsClient>,
    link: LinkClient,
    node_port_range: (u16, u16),
    bpf: Option<BpfRuntime>,
    health: Option<Box<dyn HealthCheckSink>>,
    /// The node's addresses, followed from rtnetlink notifications (the
    /// service proxy's; without it every call dumps them).
    watch: Mutex<Option<AddressWatch>>,
    /// The dummy's index as the last full sync found it: a partial sync
    /// writes its VIPs' routes there without listing the links.
    vip_index: Option<u32>,
    /// Which full syncs read IPVS fully by netlink.
    full_reads: FullReads,
    /// What the full syncs' IPVS reads found equal.
    ipvs_reads: full_read::FullRead,
}

/// A full sync reads IPVS cheaply (getsockopt, netlink only for what it
/// cannot show: `kernel::ipvs::readback`), except the first, every
/// `RECOMPUTE_EVERY`th, and the one after a failed sync: those read every
/// field by netlink, so drift the cheap read cannot see (a tunnel setting
/// on a service of ours) is still repaired.
#[derive(Debug, Default)]
struct FullReads {
    cadence: Cadence,
    /// Whether the last full sync succeeded (none yet: no).
    last_ok: bool,
}

impl FullReads {
    fn deep_now(&mut self) -> bool {
        !self.cadence.cheap_now(self.last_ok)
    }

    fn done(&mut self, ok: bool) {
        self.last_ok = ok;
    }
}

impl RealDataplane {
    /// Without IPVS (the policy controller, or a node without it).
    pub fn connect(store: SetStore) -> Result<Self, ReconcileError> {
        Ok(Self {
            store,
            ipvs: None,
            link: LinkClient::connect()?,
            node_port_range: (30000, 32767),
            bpf: None,
            health: None,
            watch: Mutex::new(None),
            vip_index: None,
            full_reads: FullReads::default(),
            ipvs_reads: full_read::FullRead::default(),
        })
    }

    /// With IPVS, the node's IPVS settings written as `settings` says
    /// (the service proxy).
    pub fn connect_ipvs(
        store: SetStore,
        node_port_range: (u16, u16),
        settings: &IpvsSettings,
    ) -> Result<Self, ReconcileError> {
        let mut ipvs = IpvsClient::connect().map_err(|e| ReconcileError::Ipvs(vec![e]))?;
        settings.apply(&mut ipvs)?;
        let watch = AddressWatch::subscribe(names::DUMMY_INTERFACE)
            .inspect_err(|e| tracing::warn!("{e}; node addresses are dumped on every sync"))
            .ok();
        Ok(Self {
            ipvs: Some(ipvs),
            node_port_range,
            watch: Mutex::new(watch),
            ..Self::connect(store)?
        })
    }

    /// Attaches the tc program to interfaces as they appear, after each
    /// address sync.
    pub fn with_bpf(mut self, bpf: BpfRuntime) -> Self {
        self.bpf = Some(bpf);
        self
    }

    /// Serves health-check node ports through `sink` (the daemon; a
    /// single pass serves none).
    pub fn with_health_checks(mut self, sink: Box<dyn HealthCheckSink>) -> Self {
        self.health = Some(sink);
        self
    }

    pub fn bpf(&self) -> Option<&BpfRuntime> {
        self.bpf.as_ref()
    }

    pub fn store(&self) -> &SetStore {
        &self.store
    }
    /// Whether the links changed since the last look (always, without
    /// the watch): the tc attachments follow them.
    fn links_changed(&self) -> bool {
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        watch.as_mut().is_none_or(AddressWatch::take_links_changed)
    }

    /// The dummy's index and whether it was created: the one the last full
    /// sync found, or looked up (and the dummy made) now.
    fn vip_interface(&mut self) -> Result<(u32, bool), ReconcileError> {
        if let Some(index) = self.vip_index {
            return Ok((index, false));
        }
        let (index, created) = self.link.ensure_dummy(names::DUMMY_INTERFACE)?;
        self.vip_index = Some(index);
        Ok((index, created))
    }
}

/// Which kernel services a full sync may delete: those on the VIPs of our
/// dummy interface (now or about to be) and NodePorts on the node's
/// addresses.
fn full_scope(
    link: &LinkClient,
    vips: &BTreeSet<IpAddr>,
    node_ips: &[IpAddr],
    node_port_range: (u16, u16),
) -> Result<IpvsScope, ReconcileError> {
    let mut owned = vips.clone();
    owned.extend(link.vips(names::DUMMY_INTERFACE)?);
    // NodePorts on any address of the node are ours, not only on those
    // listened on now: turning --nodeport-bindon-all-ip off removes the
    // ones on the other addresses.
    let mut node_addrs: BTreeSet<IpAddr> = node_ips.iter().copied().collect();
    node_addrs.extend(link.local_addresses(names::DUMMY_INTERFACE)?);
    Ok(IpvsScope {
        vips: owned,
        node_ips: node_addrs.into_iter().collect(),
        node_port_range,
    })
}

impl Dataplane for RealDataplane {
    fn apply_sets(
        &mut self,
        owner: &'static str,
        sets: &[SetSpec],
        services: &MemberServices,
    ) -> Result<ApplyReport, ReconcileError> {
        Ok(self.store.apply_full(owner, sets, services)?)
    }

    fn hand_over_sets(
        &mut self,
        owner: &'static str,
        sets: Vec<SetSpec>,
        services: MemberServices,
    ) -> Result<ApplyReport, ReconcileError> {
        Ok(self.store.apply_with_services(owner, sets, services)?)
    }

    fn reapply_sets(&mut self, owner: &'static str) -> Result<ApplyReport, ReconcileError> {
        Ok(self.store.reapply_full(owner)?)
    }

    fn apply_changed_sets(
        &mut self,
        owner: &'static str,
        changed: &[SetSpec],
        removed: &[String],
    ) -> Result<ApplyReport, ReconcileError> {
        Ok(self.store.apply_changed(owner, changed.to_vec(), removed)?)
    }

    fn apply_set_members(
        &mut self,
        owner: &'static str,
        deltas: &[SetDelta],
        services: &MemberServices,
    ) -> Result<ApplyReport, ReconcileError> {
        Ok(self.store.apply_members(owner, deltas, services)?)
    }

    fn sync_ipvs(
        &mut self,
        desired: &[&VirtualService],
        selection: IpvsSelection<'_>,
        vips: &BTreeSet<IpAddr>,
        node_ips: &[IpAddr],
    ) -> Result<IpvsReport, ReconcileError> {
        let Some(ipvs) = self.ipvs.as_mut() else {
            return Ok(IpvsReport::default());
        };
        let result = match selection {
            IpvsSelection::All => {
                let deep = self.full_reads.deep_now();
                // Services or references to them alike (main hands the latter).
                let desired: Vec<&VirtualService> = desired.iter().map(Borrow::borrow).collect();
                let read = self.ipvs_reads.read(ipvs, &desired, vips, node_ips, deep);
                let result = match read.map_err(|e| ReconcileError::Ipvs(vec![e]))? {
                    full_read::Table::Unchanged(services_unchanged) => Ok(IpvsReport {
                        services_unchanged,
                        ..IpvsReport::default()
                    }),
                    full_read::Table::Read { actual } => {
                        // Reading the node's routes and addresses is for
                        // deciding on services we do not want: a no-op
                        // sync has none.
                        let wanted = ipvs_sync::kernel_keys(&desired);
                        let scope = if ipvs_sync::has_strays(wanted, &actual) {
                            full_scope(&self.link, vips, node_ips, self.node_port_range)?
                        } else {
                            IpvsScope::default()
                        };
                        // Each kernel form made as it is planned.
                        let forms = ipvs_sync::kernel_forms(&desired);
                        let result = ipvs_sync::apply_plan(ipvs, forms, &actual, &scope);
                        self.ipvs_reads.planned(result.as_ref().ok());
                        result
                    }
                };
                self.full_reads.done(result.is_ok());
                result
            }
            IpvsSelection::Keys(keys) => {
                // The caller names every VIP the selected keys can be on.
                let scope = IpvsScope {
                    vips: vips.clone(),
                    node_ips: node_ips.iter().copied().collect(),
                    node_port_range: self.node_port_range,
                };
                let keys = keys.iter().map(ipvs_sync::kernel_key).collect();
                // Invalid ones were reported by the controller's pass already.
                let kernel: Vec<_> = desired
                    .iter()
                    .filter_map(|vs| ipvs_sync::to_kernel(vs).ok())
                    .collect();
                ipvs_sync::sync_keys(ipvs, &kernel, &keys, &scope)
            }
        };
        result.map_err(ReconcileError::Ipvs)
    }

    fn sync_addresses(&mut self, vips: &BTreeSet<IpAddr>) -> Result<AddressReport, ReconcileError> {
        // Looked up again: the dummy may have been deleted and made anew.
        self.vip_index = None;
        let (index, created) = self.vip_interface()?;
        let mut report = self.link.sync_vips_at(index, vips)?;
        report.created_link = created;
        // Looks at the links anyway: what the watch heard so far is seen.
        self.links_changed();
        if let Some(bpf) = &mut self.bpf {
            bpf.attach_new(&self.link, names::DUMMY_INTERFACE);
        }
        Ok(report)
    }

    fn change_addresses(
        &mut self,
        add: &BTreeSet<IpAddr>,
        del: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, ReconcileError> {
        let (index, created) = self.vip_interface()?;
        let mut report = match self.link.change_vips_at(index, add, del) {
            // The dummy went since the last full sync: made again here.
            Err(LinkError::Netlink {
                errno: Some(libc::ENODEV),
                ..
            }) => {
                self.vip_index = None;
                let (index, created) = self.vip_interface()?;
                let mut report = self.link.change_vips_at(index, add, del)?;
                report.created_link = created;
                report
            }
            other => other?,
        };
        report.created_link |= created;
        // One look at the links only when rtnetlink said they changed.
        if self.bpf.is_some() && self.links_changed() {
            if let Some(bpf) = &mut self.bpf {
                bpf.attach_new_if_links_changed(&self.link, names::DUMMY_INTERFACE);
            }
        }
        Ok(report)
    }

    fn apply_table(&mut self, plan: &TablePlan) -> Result<Changes, ReconcileError> {
        Ok(iptables::apply(plan)?.changes)
    }

    fn apply_table_with(
        &mut self,
        plan: &TablePlan,
        read_back: ReadBack,
    ) -> Result<Changes, ReconcileError> {
        Ok(iptables::apply_with(plan, read_back)?.changes)
    }

    fn apply_tables_with(
        &mut self,
        plans: &[TablePlan],
        read_back: ReadBack,
    ) -> Vec<Result<Changes, ReconcileError>> {
        iptables::apply_all_with(plans, read_back)
            .into_iter()
            .map(|r| Ok(r?.changes))
            .collect()
    }

    fn apply_chain_delta(&mut self, delta: &ChainDelta) -> Result<Changes, ReconcileError> {
        Ok(iptables::apply_partial(delta)?)
    }

    fn table_untouched(&self, family: Family, table: Table, tag: &str) -> bool {
        iptables::untouched_since_verified(family, table, tag)
    }

    fn restrict_sources(&mut self, sources: &BTreeSet<IpAddr>, phase: SourcePhase) {
        self.store.restrict_sources(sources, phase);
    }

    fn local_addresses(&self) -> Result<Vec<IpAddr>, ReconcileError> {
        let mut watch = self.watch.lock().unwrap_or_else(|p| p.into_inner());
        Ok(match watch.as_mut() {
            Some(w) => self.link.watched_addresses(w)?,
            None => self.link.local_addresses(names::DUMMY_INTERFACE)?,
        })
    }

    fn serve_health_checks(&mut self, checks: &[HealthCheck]) -> Vec<Problem> {
        match &self.health {
            Some(sink) => sink.serve(checks),
            None => Vec::new(),
        }
    }
}

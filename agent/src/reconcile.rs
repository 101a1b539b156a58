//! One reconcile pass: snapshot -> desired service state -> kernel, in an
//! order that never leaves a rule pointing at something missing: sets
//! first (rules match them), then IPVS, then the VIP addresses, then the
//! iptables chains.

pub mod policies;

use std::{
    collections::BTreeSet,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    bpf::runtime::BpfRuntime,
    cluster::Snapshot,
    controllers::services::{self, names},
    desired::{Problem, ServiceState},
    kernel::{
        iptables::{self, IptablesError},
        ipvs::{IpvsClient, IpvsError},
        ipvs_sync::{self, IpvsReport, IpvsScope},
        link::{AddressReport, LinkClient, LinkError},
        sysctl::{self, SysctlError},
    },
    store::{ApplyReport, Claim, Owner, SetStore, StoreError},
};

/// The set-store owner name of the service controller.
pub const SERVICES_OWNER: &str = "services";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("ipsets: {0}")]
    Sets(#[from] StoreError),
    #[error("IPVS: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Ipvs(Vec<IpvsError>),
    #[error("interface ipwarden0: {0}")]
    Link(#[from] LinkError),
    #[error("iptables: {0}")]
    Iptables(#[from] IptablesError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
}

impl ReconcileError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Sets(e) => e.metric_label(),
            ReconcileError::Ipvs(_) => "ipvs",
            ReconcileError::Link(_) => "link",
            ReconcileError::Iptables(_) => "iptables",
            ReconcileError::Sysctl(_) => "sysctl",
        }
    }
}

/// What one pass changed.
#[derive(Debug, Default)]
pub struct ReconcileReport {
    pub problems: Vec<Problem>,
    pub virtual_services: usize,
    pub sets: Option<ApplyReport>,
    pub ipvs: IpvsReport,
    pub addresses: AddressReport,
    pub chains_written: Vec<String>,
    pub duration: Duration,
}

impl ReconcileReport {
    /// One line for logs and `run --once`.
    pub fn summary(&self) -> String {
        let sets = self.sets.as_ref().map(|s| &s.executed);
        format!(
            "{} virtual services; ipvs +{} ~{} -{} services, +{} ~{} -{} destinations; \
             sets +{} -{} members; addresses +{} -{}; chains rewritten {:?}; {} problems; {:.1} ms",
            self.virtual_services,
            self.ipvs.services_added,
            self.ipvs.services_edited,
            self.ipvs.services_removed,
            self.ipvs.destinations_added,
            self.ipvs.destinations_edited,
            self.ipvs.destinations_removed,
            sets.map_or(0, |s| s.members_added),
            sets.map_or(0, |s| s.members_deleted),
            self.addresses.added.len(),
            self.addresses.removed.len(),
            self.chains_written,
            self.problems.len(),
            self.duration.as_secs_f64() * 1e3,
        )
    }
}

/// Settings of the service proxy.
#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub node_port_range: (u16, u16),
    pub services: services::Options,
}

/// Owns the kernel clients of the calling thread's network namespace.
pub struct Reconciler {
    store: SetStore,
    ipvs: IpvsClient,
    link: LinkClient,
    opts: ProxyOptions,
    bpf: Option<BpfRuntime>,
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

impl Reconciler {
    pub fn new(store: SetStore, opts: ProxyOptions) -> Result<Self, ReconcileError> {
        let ipvs = IpvsClient::connect().map_err(|e| ReconcileError::Ipvs(vec![e]))?;
        for path in sysctl::ensure_ipvs()? {
            tracing::info!(sysctl = path, "set");
        }
        store.register(services_owner())?;
        Ok(Self {
            store,
            ipvs,
            link: LinkClient::connect()?,
            opts,
            bpf: None,
        })
    }

    /// Runs the eBPF data plane beside the proxy: its mirror follows the
    /// service sets and it attaches to interfaces as they appear.
    pub fn with_bpf(mut self, bpf: BpfRuntime) -> Self {
        self.bpf = Some(bpf);
        self
    }

    pub fn bpf(&self) -> Option<&BpfRuntime> {
        self.bpf.as_ref()
    }

    pub fn store(&self) -> &SetStore {
        &self.store
    }

    /// The node's own addresses, read from the kernel for local-ips.
    pub fn local_addresses(&self) -> Result<Vec<IpAddr>, ReconcileError> {
        Ok(self.link.local_addresses(names::DUMMY_INTERFACE)?)
    }

    /// Computes the desired state of `snapshot` and programs it.
    pub fn reconcile(&mut self, snapshot: &Snapshot) -> Result<ReconcileReport, ReconcileError> {
        let start = Instant::now();
        let state = services::desired_with(snapshot, &self.opts.services);
        let mut report = ReconcileReport {
            virtual_services: state.virtual_services.len(),
            problems: state.problems.clone(),
            ..ReconcileReport::default()
        };
        report.sets = Some(self.store.apply_with_services(
            SERVICES_OWNER,
            state.sets.clone(),
            state.member_services.clone(),
        )?);
        report.ipvs = self.sync_ipvs(&state, snapshot, &mut report.problems)?;
        report.addresses = self
            .link
            .sync_addresses(names::DUMMY_INTERFACE, &state.vips)?;
        if let Some(bpf) = &mut self.bpf {
            bpf.attach_new(&self.link, names::DUMMY_INTERFACE);
        }
        for plan in &state.iptables {
            let r = iptables::apply(plan)?;
            report.chains_written.extend(
                r.changes
                    .chains_written
                    .iter()
                    .map(|c| format!("{}/{:?}/{c}", plan.table, plan.family)),
            );
        }
        report.duration = start.elapsed();
        Ok(report)
    }

    fn sync_ipvs(
        &mut self,
        state: &ServiceState,
        snapshot: &Snapshot,
        problems: &mut Vec<Problem>,
    ) -> Result<IpvsReport, ReconcileError> {
        let mut desired = Vec::with_capacity(state.virtual_services.len());
        for vs in &state.virtual_services {
            match ipvs_sync::to_kernel(vs) {
                Ok(k) => desired.push(k),
                Err(e) => problems.push(Problem {
                    object: vs.origin.clone(),
                    field: "ipvs".into(),
                    message: e.to_string(),
                    skipped: true,
                }),
            }
        }
        // Ours: services on addresses of our dummy interface (now or
        // about to be) and NodePorts on the node's addresses.
        let index = self.link.index_of(names::DUMMY_INTERFACE)?;
        let mut vips: BTreeSet<IpAddr> = state.vips.clone();
        vips.extend(
            self.link
                .addresses()?
                .into_iter()
                .filter(|(i, _, _)| Some(*i) == index)
                .map(|(_, a, _)| a),
        );
        let scope = IpvsScope {
            vips,
            node_ips: snapshot.host.local_addresses.iter().copied().collect(),
            node_port_range: self.opts.node_port_range,
        };
        ipvs_sync::sync(&mut self.ipvs, &desired, &scope).map_err(ReconcileError::Ipvs)
    }
}

//! One reconcile pass of both controllers: snapshot -> desired state ->
//! kernel, in an order that never leaves a rule pointing at something
//! missing: every owner's sets first (rules match them), then IPVS, then
//! the VIP addresses, then the iptables chains, then the policy sets no
//! chain uses any more. Either controller can be switched off.

pub mod policies;
pub mod schedule;
pub mod services;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{
    bpf::runtime::BpfRuntime,
    cluster::Snapshot,
    controllers::{policies as policy_controller, services::names},
    desired::Problem,
    kernel::{
        iptables::IptablesError,
        ipvs::IpvsError,
        ipvs_sync::IpvsReport,
        link::{AddressReport, LinkClient, LinkError},
        sysctl::SysctlError,
    },
    store::{ApplyReport, SetStore, StoreError},
};

pub use policies::{policies_owner, PolicyReport, POLICIES_OWNER};
pub use services::{services_owner, ProxyOptions, ServiceProxy, SERVICES_OWNER};

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
    /// Chains created or rewritten by either controller.
    pub chains_written: Vec<String>,
    pub policies: Option<PolicyReport>,
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
        ) + &self
            .policies
            .as_ref()
            .map(PolicyReport::summary)
            .unwrap_or_default()
    }
}

/// Owns the kernel clients of the calling thread's network namespace.
pub struct Reconciler {
    store: SetStore,
    link: LinkClient,
    proxy: Option<ServiceProxy>,
    firewall: Option<policy_controller::Options>,
}

impl Reconciler {
    /// `proxy`: the service proxy (None: `--run-service-proxy=false`, no
    /// IPVS needed); `firewall`: the policy controller (None:
    /// `--run-firewall=false`).
    pub fn new(
        store: SetStore,
        proxy: Option<ProxyOptions>,
        firewall: Option<policy_controller::Options>,
    ) -> Result<Self, ReconcileError> {
        let proxy = proxy.map(|o| ServiceProxy::new(&store, o)).transpose()?;
        if firewall.is_some() {
            store.register(policies_owner())?;
        }
        Ok(Self {
            store,
            link: LinkClient::connect()?,
            proxy,
            firewall,
        })
    }

    /// Runs the eBPF data plane beside the proxy: its mirror follows the
    /// service sets and it attaches to interfaces as they appear.
    pub fn with_bpf(mut self, bpf: BpfRuntime) -> Self {
        if let Some(proxy) = &mut self.proxy {
            proxy.bpf = Some(bpf);
        }
        self
    }

    pub fn bpf(&self) -> Option<&BpfRuntime> {
        self.proxy.as_ref()?.bpf.as_ref()
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
        let services = self.proxy.as_ref().map(|p| p.desired(snapshot));
        let policies = self
            .firewall
            .as_ref()
            .map(|o| policy_controller::desired(snapshot, o));
        let mut report = ReconcileReport::default();
        let mut policy_report = PolicyReport::default();
        if let Some(state) = &services {
            report.virtual_services = state.virtual_services.len();
            report.problems.extend(state.problems.iter().cloned());
        }
        if let Some(state) = &policies {
            report.problems.extend(state.problems.iter().cloned());
        }
        // 1. Sets of every owner.
        if let (Some(proxy), Some(state)) = (&self.proxy, &services) {
            proxy.apply_sets(&self.store, state, &mut report)?;
        }
        if let Some(state) = &policies {
            policies::apply_sets(&self.store, state, &mut policy_report)?;
        }
        // 2. IPVS and 3. the addresses it serves.
        if let (Some(proxy), Some(state)) = (&mut self.proxy, &services) {
            proxy.apply_ipvs_and_addresses(&self.link, state, snapshot, &mut report)?;
        }
        // 4. Chains, then the policy sets they no longer use.
        if let (Some(proxy), Some(state)) = (&self.proxy, &services) {
            proxy.apply_chains(state, &mut report)?;
        }
        if let Some(state) = &policies {
            policies::apply_chains(&self.store, state, &mut policy_report)?;
            report
                .chains_written
                .extend(policy_report.chains_written.iter().cloned());
            report.policies = Some(policy_report);
        }
        report.duration = start.elapsed();
        Ok(report)
    }
}

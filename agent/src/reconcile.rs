//! One reconcile pass of both controllers: snapshot -> desired state ->
//! kernel, in an order that never leaves a rule pointing at something
//! missing: every owner's sets first (rules match them), then IPVS, then
//! the VIP addresses, then the iptables chains, then the policy sets no
//! chain uses any more. Either controller can be switched off.

pub mod board;
mod cpu;
pub mod dataplane;
pub mod driver;
pub mod first_write;
mod ipvs_settings;
mod keep;
pub mod policies;
#[cfg(test)]
mod recording;
pub mod schedule;
pub mod services;
pub mod workers;

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

pub use policies::{policies_owner, PolicyReport, PolicySync, POLICIES_OWNER};
pub use services::{services_owner, ProxyOptions, ServiceChanges, ServiceSync, SERVICES_OWNER};

pub use ipvs_settings::IpvsSettings;

use dataplane::RealDataplane;
use schedule::SyncKind;

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
    /// The kernel refused the timeouts the flags named (the refusal's
    /// text is in the message, so it is not a `source` too).
    #[error("IPVS refused {flags}: {refusal}{hint}")]
    Timeouts {
        flags: String,
        refusal: Box<IpvsError>,
        hint: &'static str,
    },
}

impl ReconcileError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            ReconcileError::Sets(e) => e.metric_label(),
            ReconcileError::Ipvs(_) | ReconcileError::Timeouts { .. } => "ipvs",
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
    /// What the metrics record of this pass.
    pub fn counts(&self) -> driver::SyncCounts {
        let i = &self.ipvs;
        driver::SyncCounts {
            virtual_services: Some(self.virtual_services),
            problems: self.problems.len(),
            ipvs_changes: (i.services_added
                + i.services_edited
                + i.services_removed
                + i.destinations_added
                + i.destinations_edited
                + i.destinations_removed) as u64,
            set_member_changes: self.sets.as_ref().map_or(0, |s| {
                (s.executed.members_added + s.executed.members_deleted) as u64
            }) + self
                .policies
                .as_ref()
                .and_then(|p| p.sets.as_ref())
                .map_or(0, |s| {
                    (s.executed.members_added + s.executed.members_deleted) as u64
                }),
        }
    }

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

/// Both controllers in one pass (`run --once`, and the first pass of the
/// daemon), each with the kernel clients of the calling thread's network
/// namespace.
pub struct Reconciler {
    store: SetStore,
    link: LinkClient,
    proxy: Option<ServiceSync<RealDataplane>>,
    firewall: Option<PolicySync<RealDataplane>>,
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
        let proxy = match proxy {
            Some(opts) => {
                let dp =
                    RealDataplane::connect_ipvs(store.clone(), opts.node_port_range, &opts.ipvs)?;
                store.register(services_owner())?;
                Some(ServiceSync::new(dp, opts))
            }
            None => None,
        };
        let firewall = match firewall {
            Some(opts) => {
                store.register(policies_owner())?;
                Some(PolicySync::new(
                    RealDataplane::connect(store.clone())?,
                    opts,
                ))
            }
            None => None,
        };
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
        self.proxy = self.proxy.map(|p| p.map_dataplane(|dp| dp.with_bpf(bpf)));
        self
    }

    pub fn bpf(&self) -> Option<&BpfRuntime> {
        self.proxy.as_ref()?.dataplane().bpf()
    }

    pub fn store(&self) -> &SetStore {
        &self.store
    }

    /// The node's own addresses, read from the kernel for local-ips.
    pub fn local_addresses(&self) -> Result<Vec<IpAddr>, ReconcileError> {
        Ok(self.link.local_addresses(names::DUMMY_INTERFACE)?)
    }

    /// Computes the desired state of `snapshot` and programs all of it:
    /// every owner's sets, IPVS, addresses, every owner's chains, then the
    /// policy sets no chain uses any more.
    pub fn reconcile(&mut self, snapshot: &Snapshot) -> Result<ReconcileReport, ReconcileError> {
        let start = Instant::now();
        let mut report = ReconcileReport::default();
        let services = self
            .proxy
            .as_mut()
            .map(|p| p.prepare(SyncKind::Full, snapshot, &ServiceChanges::default()));
        let policies = self.firewall.as_ref().map(|f| f.prepare(snapshot));
        let mut policy_report = PolicyReport::default();
        if let Some(state) = &policies {
            report.problems.extend(state.problems.iter().cloned());
        }
        if let (Some(proxy), Some(p)) = (&mut self.proxy, &services) {
            proxy.apply_sets(p, &mut report)?;
        }
        if let (Some(f), Some(state)) = (&mut self.firewall, &policies) {
            f.apply_sets(state, &mut policy_report)?;
        }
        if let (Some(proxy), Some(p)) = (&mut self.proxy, &services) {
            proxy.apply_ipvs_and_addresses(p, &mut report)?;
            proxy.apply_chains(p, &mut report)?;
        }
        if let (Some(f), Some(state)) = (&mut self.firewall, &policies) {
            f.apply_chains(state, &mut policy_report)?;
            report
                .chains_written
                .extend(policy_report.chains_written.iter().cloned());
            report.policies = Some(policy_report);
        }
        report.duration = start.elapsed();
        Ok(report)
    }
}

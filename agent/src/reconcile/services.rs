//! The service proxy's part of a pass: its sets, IPVS, the VIP addresses
//! on ipwarden0, the eBPF attachments and its chains.

use std::{collections::BTreeSet, net::IpAddr};

use crate::{
    bpf::runtime::BpfRuntime,
    cluster::Snapshot,
    controllers::services::{self, names},
    desired::{Problem, ServiceState},
    kernel::{
        iptables,
        ipvs::IpvsClient,
        ipvs_sync::{self, IpvsReport, IpvsScope},
        link::LinkClient,
        sysctl,
    },
    store::{Claim, Owner, SetStore},
};

use super::{ReconcileError, ReconcileReport};

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

/// The IPVS client and settings of the service proxy.
pub struct ServiceProxy {
    ipvs: IpvsClient,
    pub(super) opts: ProxyOptions,
    pub(super) bpf: Option<BpfRuntime>,
}

impl ServiceProxy {
    /// Connects to IPVS, sets its sysctls and registers the owner.
    pub fn new(store: &SetStore, opts: ProxyOptions) -> Result<Self, ReconcileError> {
        let ipvs = IpvsClient::connect().map_err(|e| ReconcileError::Ipvs(vec![e]))?;
        for path in sysctl::ensure_ipvs()? {
            tracing::info!(sysctl = path, "set");
        }
        store.register(services_owner())?;
        Ok(Self {
            ipvs,
            opts,
            bpf: None,
        })
    }

    pub fn desired(&self, snapshot: &Snapshot) -> ServiceState {
        services::desired_with(snapshot, &self.opts.services)
    }

    pub fn apply_sets(
        &self,
        store: &SetStore,
        state: &ServiceState,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        report.sets = Some(store.apply_with_services(
            SERVICES_OWNER,
            state.sets.clone(),
            state.member_services.clone(),
        )?);
        Ok(())
    }

    /// IPVS, then the addresses IPVS services listen on, then the tc
    /// program on interfaces that appeared.
    pub fn apply_ipvs_and_addresses(
        &mut self,
        link: &LinkClient,
        state: &ServiceState,
        snapshot: &Snapshot,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        report.ipvs = self.sync_ipvs(link, state, snapshot, &mut report.problems)?;
        report.addresses = link.sync_addresses(names::DUMMY_INTERFACE, &state.vips)?;
        if let Some(bpf) = &mut self.bpf {
            bpf.attach_new(link, names::DUMMY_INTERFACE);
        }
        Ok(())
    }

    pub fn apply_chains(
        &self,
        state: &ServiceState,
        report: &mut ReconcileReport,
    ) -> Result<(), ReconcileError> {
        for plan in &state.iptables {
            let r = iptables::apply(plan)?;
            report.chains_written.extend(
                r.changes
                    .chains_written
                    .iter()
                    .map(|c| format!("{}/{:?}/{c}", plan.table, plan.family)),
            );
        }
        Ok(())
    }

    fn sync_ipvs(
        &mut self,
        link: &LinkClient,
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
        let index = link.index_of(names::DUMMY_INTERFACE)?;
        let mut vips: BTreeSet<IpAddr> = state.vips.clone();
        vips.extend(
            link.addresses()?
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

//! Desired state as plain values: what the controllers compute and the
//! kernel layer programs. No I/O here.

pub mod ipvs;
pub mod sets;

use std::{collections::BTreeSet, fmt, net::IpAddr};

use crate::kernel::iptables::TablePlan;

pub use ipvs::{Forward, Protocol, RealServer, ServiceFlags, VirtualService, VsKey};
pub use sets::{SetFamily, SetSpec, SetType};

/// Something wrong with one object of the input. `skipped` says whether the
/// object (or the part named by `field`) was left out; otherwise the value
/// was ignored and the rest programmed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// "Service shop/web".
    pub object: String,
    /// "spec.ports[1].protocol".
    pub field: String,
    pub message: String,
    pub skipped: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} field {}: {}", self.object, self.field, self.message)?;
        if self.skipped {
            f.write_str(" (skipped)")?;
        }
        Ok(())
    }
}

/// What the service controller wants programmed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceState {
    /// IPVS virtual services, sorted by key.
    pub virtual_services: Vec<VirtualService>,
    /// Addresses to hold on the dummy interface `ipwarden0` (ClusterIPs,
    /// externalIPs, LoadBalancer IPs; node IPs are already local).
    pub vips: BTreeSet<IpAddr>,
    /// ipwarden-svip, ipwarden-svip-prt, ipwarden-local-ips and their
    /// `inet6:` twins.
    pub sets: Vec<SetSpec>,
    /// The firewall chain and masquerade rules, per table and family.
    pub iptables: Vec<TablePlan>,
    pub problems: Vec<Problem>,
}

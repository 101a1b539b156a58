//! Desired state as plain values: what the controllers compute and the
//! store and kernel layers program. One type per idea; no I/O, and nothing
//! else from the crate is imported here (kernel/ converts these values to
//! its wire forms).
//!
//! - `family`, `protocol`: the address family and transport protocol.
//! - `sets`, `member`: ipsets (type, desired set, typed members).
//! - `iptables`: one owner's chains and jump rules per table and family.
//! - `ipvs`: virtual services, real servers and the Service they serve.
//! - `health`: health-check node ports.

pub mod family;
pub mod health;
pub mod iptables;
pub mod ipvs;
pub mod member;
pub mod protocol;
pub mod sets;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::IpAddr,
};

pub use family::Family;
pub use health::HealthCheck;
pub use iptables::{
    Chain, ChainDelta, ChainEdit, Jump, Ownership, Place, PlanError, Table, TablePlan, FIRST_TAG,
};
pub use ipvs::{Forward, RealServer, ServiceFlags, ServiceRef, VirtualService, VsKey};
pub use member::{Member, NtopAddr};
pub use protocol::Protocol;
pub use sets::{SetChanges, SetDelta, SetSpec, SetType};

/// What the eBPF mirror needs to know of one member of ipwarden-svip-prt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirroredMember {
    /// The Service it serves: the mirror tags the member's map entry with
    /// it, so an event can name it.
    pub service: ServiceRef,
    /// Only the chain may accept it (`loadBalancerSourceRanges`): the tc
    /// program counts it but never marks it.
    pub chain_decides: bool,
}

impl MirroredMember {
    pub fn of(vs: &VirtualService) -> Self {
        Self {
            service: vs.service.clone(),
            chain_decides: vs.source_ranges,
        }
    }
}

/// What the mirror knows of each mirrored set member.
pub type MemberServices = BTreeMap<Member, MirroredMember>;

/// Something wrong with one object of the input. `skipped` says whether the
/// object (or the part named by `field`) was left out; otherwise the value
/// was ignored and the rest programmed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// "Service shop/web".
    pub object: String,
    /// `spec.ports[1].protocol`.
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
    /// The Service of each member of ipwarden-svip-prt (both families).
    pub member_services: MemberServices,
    /// The firewall chain and masquerade rules, per table and family.
    pub iptables: Vec<TablePlan>,
    /// Health-check node ports to serve, sorted by port.
    pub health_checks: Vec<HealthCheck>,
    pub problems: Vec<Problem>,
}

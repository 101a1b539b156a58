//! IPVS virtual services and real servers as values.

use std::{fmt, net::IpAddr, sync::Arc};

use super::Protocol;

/// A virtual service's identity: what `ipvsadm -Ln` prints first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VsKey {
    pub addr: IpAddr,
    pub proto: Protocol,
    pub port: u16,
}

impl fmt::Display for VsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            IpAddr::V4(a) => write!(f, "{} {}:{}", self.proto, a, self.port),
            IpAddr::V6(a) => write!(f, "{} [{}]:{}", self.proto, a, self.port),
        }
    }
}

/// The IPVS service flags ipwarden sets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceFlags {
    /// Session affinity (IP_VS_SVC_F_PERSISTENT).
    pub persistent: bool,
    /// flag-1, flag-2, flag-3 (IP_VS_SVC_F_SCHED1..3): for sh, fallback and
    /// port; for mh, fallback and port.
    pub sched1: bool,
    pub sched2: bool,
    pub sched3: bool,
}

/// How IPVS forwards to a real server. Services are NAT (masquerade).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Forward {
    Masq,
    Tunnel,
    Route,
}

/// One backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RealServer {
    pub addr: IpAddr,
    pub port: u16,
    /// 0 drains a terminating endpoint: no new connections, old ones kept.
    pub weight: u32,
    pub forward: Forward,
}

/// One IPVS virtual service with its real servers (sorted).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VirtualService {
    pub key: VsKey,
    pub scheduler: String,
    pub flags: ServiceFlags,
    /// Persistence timeout in seconds (session affinity), 0 when off.
    pub timeout: u32,
    /// Persistence netmask: 32 (v4) or 128 (v6) prefix bits.
    pub netmask_bits: u8,
    pub destinations: Vec<RealServer>,
    /// The Service this frontend belongs to (the eBPF mirror tags its
    /// entries with it).
    pub service: ServiceRef,
    /// "Service shop/web port http (ClusterIP)", for logs and metrics.
    pub origin: String,
    /// Its sources are restricted (`loadBalancerSourceRanges`): only the
    /// service chain checks them, so the tc program never marks it.
    pub source_ranges: bool,
}

/// A Kubernetes Service by namespace and name. Shared, not copied: the
/// keyed table, its claims, the virtual services and the mirror's members
/// each hold a clone of the Service's one pair of strings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRef {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl ServiceRef {
    pub fn new(namespace: impl Into<Arc<str>>, name: impl Into<Arc<str>>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// `Service shop/web`, as problems and logs name it.
impl fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Service {}/{}", self.namespace, self.name)
    }
}

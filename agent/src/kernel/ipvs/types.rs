//! The values the IPVS client reads and writes. They check their invariants
//! when built, know nothing of attribute numbers, and print the way
//! `ipvsadm -Ln` does so logs and errors read familiarly.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use super::consts::SCHEDNAME_MAXLEN;
use crate::desired::{Family, Protocol, ServiceFlags};

/// The name `ipvsadm -Ln` prints for a protocol (`TCP`, `UDP`, `SCTP`).
pub fn protocol_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "TCP",
        Protocol::Udp => "UDP",
        Protocol::Sctp => "SCTP",
    }
}

/// What identifies a virtual service in the kernel: either (protocol,
/// address, port) or a firewall mark. The family of an address key is the
/// address's own, so the two can never disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKey {
    Addr {
        protocol: Protocol,
        addr: IpAddr,
        port: u16,
    },
    Fwmark {
        family: Family,
        mark: u32,
    },
}

impl ServiceKey {
    pub fn tcp(addr: IpAddr, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Tcp,
            addr,
            port,
        }
    }

    pub fn udp(addr: IpAddr, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Udp,
            addr,
            port,
        }
    }

    pub fn sctp(addr: IpAddr, port: u16) -> Self {
        ServiceKey::Addr {
            protocol: Protocol::Sctp,
            addr,
            port,
        }
    }

    pub fn fwmark(family: Family, mark: u32) -> Self {
        ServiceKey::Fwmark { family, mark }
    }

    pub fn family(&self) -> Family {
        match self {
            ServiceKey::Addr { addr, .. } => Family::of(addr),
            ServiceKey::Fwmark { family, .. } => *family,
        }
    }
}

/// `TCP 10.0.0.1:80`, `UDP [fd00::1]:53`, `FWM 7`, `FWM 7 IPv6`.
impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServiceKey::Addr {
                protocol,
                addr,
                port,
            } => write!(f, "{} {}", protocol_name(*protocol), SockAddr(*addr, *port)),
            ServiceKey::Fwmark { family, mark } => {
                write!(f, "FWM {mark}")?;
                if *family == Family::V6 {
                    f.write_str(" IPv6")?;
                }
                Ok(())
            }
        }
    }
}

/// `addr:port` with IPv6 in brackets, as ipvsadm prints it.
pub(crate) struct SockAddr(pub IpAddr, pub u16);

impl fmt::Display for SockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}:{}", self.1),
            IpAddr::V6(a) => write!(f, "[{a}]:{}", self.1),
        }
    }
}

/// A scheduler name (`rr`, `wrr`, `lc`, `sh`, `mh`, ...). The kernel loads
/// `ip_vs_<name>` on first use; the name must fit `IP_VS_SCHEDNAME_MAXLEN`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scheduler(String);

impl Scheduler {
    pub fn new(name: &str) -> Result<Self, InvalidValue> {
        if Self::valid(name) {
            Ok(Scheduler(name.to_owned()))
        } else {
            Err(InvalidValue::SchedulerName(name.to_owned()))
        }
    }

    /// Whether [`Scheduler::new`] takes `name`.
    pub fn valid(name: &str) -> bool {
        !name.is_empty()
            && name.len() < SCHEDNAME_MAXLEN
            && name.bytes().all(|b| b.is_ascii_graphic())
    }

    pub fn round_robin() -> Self {
        Scheduler("rr".into())
    }
    pub fn weighted_round_robin() -> Self {
        Scheduler("wrr".into())
    }
    pub fn least_connection() -> Self {
        Scheduler("lc".into())
    }
    pub fn weighted_least_connection() -> Self {
        Scheduler("wlc".into())
    }
    pub fn source_hashing() -> Self {
        Scheduler("sh".into())
    }
    pub fn maglev() -> Self {
        Scheduler("mh".into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

bitflags::bitflags! {
    /// `IP_VS_SVC_F_*` bits of a service, as the kernel holds them (with its
    /// own bookkeeping bits). Desired state says what it wants with
    /// [`ServiceFlags`], which converts into these.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct ServiceFlagBits: u32 {
        /// Clients stick to one destination for `Service::timeout` seconds.
        const PERSISTENT = 0x0001;
        /// Kernel bookkeeping: set on every service it holds. Ignored when sent.
        const HASHED = 0x0002;
        /// One-packet scheduling (UDP): no connection entry is kept.
        const ONE_PACKET = 0x0004;
        /// Scheduler flag 1 (sh/mh: fall back to another destination).
        const SCHED1 = 0x0008;
        /// Scheduler flag 2 (sh/mh: hash the source port too).
        const SCHED2 = 0x0010;
        /// Scheduler flag 3.
        const SCHED3 = 0x0020;
        // Bits a newer kernel may add are kept, and named in hex.
        const _ = !0;
    }
}

impl ServiceFlagBits {
    const NAMES: [(Self, &'static str); 6] = [
        (Self::PERSISTENT, "persistent"),
        (Self::HASHED, "hashed"),
        (Self::ONE_PACKET, "one-packet"),
        // ipvsadm's and keepalived's names (sh and mh read 1 as
        // "fallback" and 2 as "port").
        (Self::SCHED1, "flag-1"),
        (Self::SCHED2, "flag-2"),
        (Self::SCHED3, "flag-3"),
    ];

    /// The bits a caller can set: everything but `HASHED`. Compare desired
    /// and actual services on these.
    pub const fn settable(self) -> Self {
        self.difference(Self::HASHED)
    }

    /// Names of the known bits, e.g. `["persistent", "hashed"]`; unknown
    /// bits as hex so nothing the kernel holds goes unseen.
    pub fn names(self) -> Vec<String> {
        let mut left = self.bits();
        let mut out = Vec::new();
        for (bit, name) in Self::NAMES {
            if left & bit.bits() != 0 {
                out.push(name.to_owned());
                left &= !bit.bits();
            }
        }
        if left != 0 {
            out.push(format!("{left:#x}"));
        }
        out
    }
}

impl From<ServiceFlags> for ServiceFlagBits {
    /// The bits a desired service sets: persistence and the scheduler flags.
    fn from(flags: ServiceFlags) -> Self {
        let mut bits = Self::empty();
        for (on, bit) in [
            (flags.persistent, Self::PERSISTENT),
            (flags.sched1, Self::SCHED1),
            (flags.sched2, Self::SCHED2),
            (flags.sched3, Self::SCHED3),
        ] {
            if on {
                bits |= bit;
            }
        }
        bits
    }
}

/// Persistence granularity: clients in the same netmask stick to the same
/// destination. IPv4 uses a dotted mask, IPv6 a prefix length (1..=128),
/// exactly as the kernel and ipvsadm do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Netmask {
    V4(Ipv4Addr),
    V6(u8),
}

impl Netmask {
    /// One client address per persistence entry: ipvsadm's default.
    pub fn host(family: Family) -> Self {
        match family {
            Family::V4 => Netmask::V4(Ipv4Addr::BROADCAST),
            Family::V6 => Netmask::V6(128),
        }
    }

    /// A prefix of `len` bits in `family`.
    pub fn prefix(family: Family, len: u8) -> Result<Self, InvalidValue> {
        match family {
            Family::V4 if len <= 32 => {
                let bits = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                Ok(Netmask::V4(Ipv4Addr::from(bits)))
            }
            Family::V6 if (1..=128).contains(&len) => Ok(Netmask::V6(len)),
            _ => Err(InvalidValue::Netmask { family, len }),
        }
    }
}

impl fmt::Display for Netmask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Netmask::V4(m) => write!(f, "{m}"),
            Netmask::V6(len) => write!(f, "{len}"),
        }
    }
}

/// A virtual service as written with `ipvsadm -A` / `-E`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Service {
    pub key: ServiceKey,
    pub scheduler: Scheduler,
    pub flags: ServiceFlagBits,
    /// Persistence timeout in seconds (meaningful with `PERSISTENT`).
    pub timeout: u32,
    pub netmask: Netmask,
}

impl Service {
    /// A non-persistent service with the given scheduler.
    pub fn new(key: ServiceKey, scheduler: Scheduler) -> Self {
        Service {
            netmask: Netmask::host(key.family()),
            key,
            scheduler,
            flags: ServiceFlagBits::empty(),
            timeout: 0,
        }
    }

    /// Makes the service persistent (`ipvsadm -p timeout -M netmask`).
    pub fn persistent(mut self, timeout: u32, netmask: Netmask) -> Self {
        self.flags |= ServiceFlagBits::PERSISTENT;
        self.timeout = timeout;
        self.netmask = netmask;
        self
    }

    pub fn with_flags(mut self, flags: ServiceFlagBits) -> Self {
        self.flags |= flags;
        self
    }

    /// Same configuration, ignoring the kernel's `HASHED` bookkeeping bit:
    /// the test `store/` uses to decide whether an edit is needed.
    pub fn same_config(&self, other: &Service) -> bool {
        self.key == other.key
            && self.scheduler == other.scheduler
            && self.flags.settable() == other.flags.settable()
            && self.timeout == other.timeout
            && self.netmask == other.netmask
    }
}

/// How packets reach a destination: its `IP_VS_CONN_F_*` number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum ForwardMethod {
    /// NAT (`ipvsadm -m`).
    Masq = 0,
    /// The kernel's own choice when a destination address is local.
    Local = 1,
    /// IP-in-IP (`ipvsadm -i`).
    Tunnel = 2,
    /// Direct routing (`ipvsadm -g`).
    Route = 3,
}

impl ForwardMethod {
    const ALL: [Self; 4] = [Self::Masq, Self::Local, Self::Tunnel, Self::Route];

    pub(crate) fn to_wire(self) -> u32 {
        self as u32
    }

    /// The method in the low 3 bits of `conn_flags`.
    pub(crate) fn from_wire(v: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.to_wire() == v & 0x7)
    }

    /// The word `ipvsadm -Ln` prints in its Forward column.
    pub fn ipvsadm_name(self) -> &'static str {
        ["Masq", "Local", "Tunnel", "Route"][self as usize]
    }

    /// Lower-case name for JSON and logs.
    pub fn name(self) -> &'static str {
        ["masq", "local", "tunnel", "route"][self as usize]
    }
}

/// A real server behind a service, as written with `ipvsadm -a` / `-e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Destination {
    pub addr: IpAddr,
    pub port: u16,
    pub forward: ForwardMethod,
    /// 0 takes the destination out of scheduling without dropping it.
    pub weight: u32,
    /// Stop scheduling above this many connections (0: no limit).
    pub upper_threshold: u32,
    /// Resume scheduling below this many connections.
    pub lower_threshold: u32,
}

impl Destination {
    /// Masquerading, weight 1, no thresholds: ipvsadm's defaults.
    pub fn new(addr: IpAddr, port: u16) -> Self {
        Destination {
            addr,
            port,
            forward: ForwardMethod::Masq,
            weight: 1,
            upper_threshold: 0,
            lower_threshold: 0,
        }
    }

    pub fn forward(mut self, forward: ForwardMethod) -> Self {
        self.forward = forward;
        self
    }

    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    pub fn thresholds(mut self, upper: u32, lower: u32) -> Self {
        self.upper_threshold = upper;
        self.lower_threshold = lower;
        self
    }

    pub fn key(&self) -> DestinationKey {
        DestinationKey {
            addr: self.addr,
            port: self.port,
        }
    }
}

/// What identifies a destination within its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DestinationKey {
    pub addr: IpAddr,
    pub port: u16,
}

impl fmt::Display for DestinationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        SockAddr(self.addr, self.port).fmt(f)
    }
}

/// A service as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    pub service: Service,
    /// Persistence engine (`sip`), if one is bound; we never bind one.
    pub pe_name: Option<String>,
}

/// A destination as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationEntry {
    pub destination: Destination,
    pub active_conns: u32,
    pub inactive_conns: u32,
}

/// One service and its destinations, as `ipvsadm -Ln` lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualServer {
    pub entry: ServiceEntry,
    pub destinations: Vec<DestinationEntry>,
}

/// A service's configuration and its destinations', connection counts
/// left out: the kernel's table as a plan compares it (a listing's
/// counters, 80 bytes per service and per destination, were 3 MiB held by
/// a plan of 10k Services before the traffic counters were dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub service: Service,
    pub destinations: Vec<Destination>,
}

impl From<VirtualServer> for ServiceConfig {
    fn from(v: VirtualServer) -> Self {
        ServiceConfig {
            service: v.entry.service,
            destinations: v.destinations.iter().map(|d| d.destination).collect(),
        }
    }
}

/// Connection timeouts in seconds (`ipvsadm --set tcp tcpfin udp`). On
/// write, 0 leaves that timeout unchanged, as with ipvsadm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

/// `IPVS_CMD_GET_INFO`: version and connection table size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// e.g. 0x010201 for 1.2.1.
    pub version: u32,
    pub conn_tab_size: u32,
}

impl Info {
    /// `1.2.1`, as in ipvsadm's banner.
    pub fn version_string(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", (v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
    }
}

/// A value refused at construction or before encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidValue {
    #[error("scheduler name {0:?} must be 1 to 15 printable ASCII characters")]
    SchedulerName(String),
    #[error("netmask prefix /{len} is out of range for {family:?}")]
    Netmask { family: Family, len: u8 },
    #[error("netmask {netmask} does not match the service's family {family:?}")]
    NetmaskFamily { netmask: Netmask, family: Family },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_print_like_ipvsadm() {
        let v4 = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
        assert_eq!(v4.to_string(), "TCP 10.0.0.1:80");
        let v6 = ServiceKey::udp("fd00::1".parse().unwrap(), 53);
        assert_eq!(v6.to_string(), "UDP [fd00::1]:53");
        assert_eq!(ServiceKey::fwmark(Family::V4, 7).to_string(), "FWM 7");
        assert_eq!(ServiceKey::fwmark(Family::V6, 7).to_string(), "FWM 7 IPv6");
    }

    #[test]
    fn scheduler_names_are_checked() {
        assert!(Scheduler::new("wrr").is_ok());
        assert!(Scheduler::new("").is_err());
        assert!(Scheduler::new("a-name-way-too-long").is_err());
        assert!(Scheduler::new("r r").is_err());
        assert_eq!(
            Scheduler::new("0123456789abcde").map(|s| s.as_str().len()),
            Ok(15)
        );
    }

    #[test]
    fn netmask_prefixes() {
        assert_eq!(
            Netmask::prefix(Family::V4, 24),
            Ok(Netmask::V4("255.255.255.0".parse().unwrap()))
        );
        assert_eq!(
            Netmask::prefix(Family::V4, 0),
            Ok(Netmask::V4(Ipv4Addr::UNSPECIFIED))
        );
        assert_eq!(
            Netmask::prefix(Family::V4, 32),
            Ok(Netmask::host(Family::V4))
        );
        assert!(Netmask::prefix(Family::V4, 33).is_err());
        assert_eq!(Netmask::prefix(Family::V6, 64), Ok(Netmask::V6(64)));
        assert!(Netmask::prefix(Family::V6, 0).is_err());
        assert!(Netmask::prefix(Family::V6, 129).is_err());
    }

    #[test]
    fn flag_names() {
        let f = ServiceFlagBits::PERSISTENT
            | ServiceFlagBits::HASHED
            | ServiceFlagBits::from_bits_retain(0x400);
        assert_eq!(f.names(), ["persistent", "hashed", "0x400"]);
        assert_eq!(f.settable(), ServiceFlagBits::from_bits_retain(0x401));
    }

    #[test]
    fn same_config_ignores_hashed() {
        let key = ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80);
        let want = Service::new(key, Scheduler::round_robin());
        let mut got = want.clone();
        got.flags |= ServiceFlagBits::HASHED;
        assert!(want.same_config(&got));
        got.timeout = 1;
        assert!(!want.same_config(&got));
    }

    #[test]
    fn forward_methods_round_trip() {
        for m in [
            ForwardMethod::Masq,
            ForwardMethod::Local,
            ForwardMethod::Tunnel,
            ForwardMethod::Route,
        ] {
            assert_eq!(ForwardMethod::from_wire(m.to_wire()), Some(m));
        }
        assert_eq!(ForwardMethod::from_wire(4), None);
    }
}

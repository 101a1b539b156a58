//! Map key and value layouts.

/// IP family as stored in [`ServiceKey::family`] (the AF_* numbers).
pub const FAMILY_V4: u8 = 2;
pub const FAMILY_V6: u8 = 10;

/// IP protocol numbers as stored in [`ServiceKey::proto`].
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_SCTP: u8 = 132;

/// A service destination: what `ipset` writes as `10.0.0.1,tcp:80`.
///
/// IPv4 addresses sit in the first four bytes of `addr`, the rest zero, so
/// one map holds both families. `port` is in host byte order so that
/// `bpftool map dump` prints the number a person expects.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ServiceKey {
    pub family: u8,
    pub proto: u8,
    pub port: u16,
    pub addr: [u8; 16],
}

impl ServiceKey {
    pub const fn v4(addr: [u8; 4], proto: u8, port: u16) -> Self {
        let mut a = [0u8; 16];
        a[0] = addr[0];
        a[1] = addr[1];
        a[2] = addr[2];
        a[3] = addr[3];
        Self {
            family: FAMILY_V4,
            proto,
            port,
            addr: a,
        }
    }

    pub const fn v6(addr: [u8; 16], proto: u8, port: u16) -> Self {
        Self {
            family: FAMILY_V6,
            proto,
            port,
            addr,
        }
    }
}

/// Set by the auditor: the kernel ipset lacks this member although it is desired.
pub const FLAG_MISSING_FROM_KERNEL: u32 = 1;

/// A VIP: what `ipset` writes as `10.0.0.1` in `ipwarden-svip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VipKey {
    pub family: u8,
    pub _pad: [u8; 3],
    pub addr: [u8; 16],
}

impl VipKey {
    pub const fn of(key: &ServiceKey) -> Self {
        Self {
            family: key.family,
            _pad: [0; 3],
            addr: key.addr,
        }
    }
}

/// What the mirror knows about one VIP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VipValue {
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// Kinds of [`Event`].
pub const EVENT_WOULD_REJECT: u32 = 1;
pub const EVENT_RESCUED: u32 = 2;

/// A connection start to a mirrored service port that the kernel ipset
/// lacks: refused by the REJECT rule (mode log) or accepted thanks to the
/// mark (mode allow). Sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Event {
    pub kind: u32,
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub _pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

/// Per-CPU totals of the classifier, slot 0 of the stats array.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stats {
    /// Packets whose (daddr, proto, dport) is in the mirror.
    pub mirror_hits: u64,
    /// Of those, packets to a member flagged missing from the kernel set.
    pub missing_hits: u64,
    /// Packets to a VIP on a port the mirror does not hold (refused by design).
    pub vip_other_port: u64,
    /// Events lost because the ring buffer was full.
    pub events_dropped: u64,
}

/// What the mirror knows about one service destination.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ServiceValue {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Stable id of the owning Service (see the agent's service table).
    pub service_id: u32,
}

/// Per-CPU traffic seen for one [`ServiceKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HitCounter {
    pub packets: u64,
    pub bytes: u64,
}

/// What the classifier does on a mirror hit.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Count nothing, mark nothing.
    Off = 0,
    /// Count and mark hits; report traffic the ipset would reject.
    Log = 1,
    /// As `Log`; the service chain also accepts marked packets.
    Allow = 2,
}

/// Sizes of the maps (max_entries), shared so the agent can check a pinned
/// map against the object before adopting it. Room for every service port
/// of a large cluster (kube-router's biggest reported clusters have a few
/// thousand services, each with a few ports times ClusterIP, externalIPs
/// and LB IPs).
pub const MAX_SERVICE_PORTS: u32 = 65_536;
pub const MAX_VIPS: u32 = 65_536;
/// Ring buffer bytes: thousands of events between two reads of the agent.
pub const EVENTS_BYTES: u32 = 1 << 18;

/// The layout version the agent checks before adopting pinned maps.
pub const LAYOUT_VERSION: u32 = 2;

/// Runtime configuration, slot 0 of [`crate::names::MAP_CONFIG`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// A [`Mode`] as u32.
    pub mode: u32,
    /// Bit(s) OR-ed into skb->mark on a hit.
    pub mark: u32,
    /// [`LAYOUT_VERSION`] of the agent that wrote the maps.
    pub layout_version: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<ServiceKey>() == 20);
const _: () = assert!(core::mem::size_of::<ServiceValue>() == 8);
const _: () = assert!(core::mem::size_of::<HitCounter>() == 16);
const _: () = assert!(core::mem::size_of::<Config>() == 16);
const _: () = assert!(core::mem::size_of::<VipKey>() == 20);
const _: () = assert!(core::mem::size_of::<VipValue>() == 4);
const _: () = assert!(core::mem::size_of::<Event>() == 48);
const _: () = assert!(core::mem::size_of::<Stats>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all are #[repr(C)], have no implicit padding (checked by the
    // size asserts above) and every bit pattern is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::HitCounter {}
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipValue {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Stats {}
}

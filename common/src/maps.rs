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

/// The layout version the agent checks before adopting pinned maps.
pub const LAYOUT_VERSION: u32 = 1;

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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all four are #[repr(C)], have no padding bytes (checked by the
    // size asserts above) and every bit pattern is valid.
    unsafe impl aya::Pod for super::ServiceKey {}
    unsafe impl aya::Pod for super::ServiceValue {}
    unsafe impl aya::Pod for super::HitCounter {}
    unsafe impl aya::Pod for super::Config {}
}

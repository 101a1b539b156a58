//! The byte layouts of IPVS's getsockopt interface
//! (`include/uapi/linux/ip_vs.h`): requests encoded, replies decoded,
//! pure and safe. The `#[repr(C)]` structs are never read through a
//! pointer: they only give the compiler's offsets and sizes of the
//! kernel's structs, so no field is placed by hand.

use std::{
    hash::Hasher,
    mem::{offset_of, size_of},
    net::{IpAddr, Ipv4Addr},
};

use super::{
    Destination, ForwardMethod, Netmask, Scheduler, Service, ServiceConfig, ServiceFlagBits,
    ServiceKey,
};
use crate::desired::Protocol;

const BASE_CTL: libc::c_int = 64 + 1024 + 64;
/// `IP_VS_SO_GET_INFO`: `struct ip_vs_getinfo`.
pub(super) const GET_INFO: libc::c_int = BASE_CTL + 1;
/// `IP_VS_SO_GET_SERVICES`: `struct ip_vs_get_services` and its table.
pub(super) const GET_SERVICES: libc::c_int = BASE_CTL + 2;
/// `IP_VS_SO_GET_DESTS`: `struct ip_vs_get_dests` and its table.
pub(super) const GET_DESTS: libc::c_int = BASE_CTL + 4;

/// A table slot the kernel did not fill keeps this byte everywhere; a
/// filled one has a real protocol (0 for a mark) and a weight >= 0.
const UNFILLED: u8 = 0xff;

// The kernel's structs, for offsets and sizes only.
#[allow(dead_code)]
#[repr(C)]
struct StatsUser {
    conns: u32,
    inpkts: u32,
    outpkts: u32,
    inbytes: u64,
    outbytes: u64,
    cps: u32,
    inpps: u32,
    outpps: u32,
    inbps: u32,
    outbps: u32,
}

#[allow(dead_code)]
#[repr(C)]
struct GetInfo {
    version: u32,
    size: u32,
    num_services: u32,
}

#[allow(dead_code)]
#[repr(C)]
struct ServiceEntryC {
    protocol: u16,
    addr: u32,
    port: u16,
    fwmark: u32,
    sched_name: [u8; 16],
    flags: u32,
    timeout: u32,
    netmask: u32,
    num_dests: u32,
    stats: StatsUser,
}

#[allow(dead_code)]
#[repr(C)]
struct GetServices {
    num_services: u32,
    entrytable: [ServiceEntryC; 0],
}

#[allow(dead_code)]
#[repr(C)]
struct DestEntryC {
    addr: u32,
    port: u16,
    conn_flags: u32,
    weight: i32,
    u_threshold: u32,
    l_threshold: u32,
    activeconns: u32,
    inactconns: u32,
    persistconns: u32,
    stats: StatsUser,
}

#[allow(dead_code)]
#[repr(C)]
struct GetDests {
    protocol: u16,
    addr: u32,
    port: u16,
    fwmark: u32,
    num_dests: u32,
    entrytable: [DestEntryC; 0],
}

pub(super) const INFO_LEN: usize = size_of::<GetInfo>();
const SERVICE_LEN: usize = size_of::<ServiceEntryC>();
const DEST_LEN: usize = size_of::<DestEntryC>();
const SERVICES_HEAD: usize = offset_of!(GetServices, entrytable);
const DESTS_HEAD: usize = offset_of!(GetDests, entrytable);
/// A service entry's bytes up to its counters: its configuration.
const SERVICE_CONFIG: usize = offset_of!(ServiceEntryC, stats);
/// A destination entry's bytes up to its counters.
const DEST_CONFIG: usize = offset_of!(DestEntryC, activeconns);

/// A reply that does not read as the kernel's struct.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{what} {index}: {reason}")]
pub struct WireError {
    pub what: &'static str,
    pub index: usize,
    pub reason: &'static str,
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_ne_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_ne_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// A network-order field (`__be32` address or mask).
fn ipv4_at(b: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[off], b[off + 1], b[off + 2], b[off + 3])
}

fn port_at(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}

/// The number of services `GET_INFO`'s reply counts (every family).
pub(super) fn info_services(reply: &[u8]) -> u32 {
    u32_at(reply, offset_of!(GetInfo, num_services))
}

/// A `GET_SERVICES` request for `slots` entries, every slot unfilled.
pub(super) fn services_request(slots: usize) -> Vec<u8> {
    let mut buf = vec![UNFILLED; SERVICES_HEAD + slots * SERVICE_LEN];
    buf[..SERVICES_HEAD].fill(0);
    let n = u32::try_from(slots).expect("a service count fits u32");
    let off = offset_of!(GetServices, num_services);
    buf[off..off + 4].copy_from_slice(&n.to_ne_bytes());
    buf
}

/// The filled service entries of a `GET_SERVICES` reply, in the kernel's
/// order (IPv4 only: the interface shows no other family).
pub(super) fn service_entries(reply: &[u8]) -> impl Iterator<Item = RawService<'_>> {
    reply[SERVICES_HEAD..]
        .chunks_exact(SERVICE_LEN)
        .take_while(|e| {
            u16_at(e, offset_of!(ServiceEntryC, protocol)) != u16::from_ne_bytes([UNFILLED; 2])
        })
        .map(RawService)
}

/// One service entry as the kernel wrote it.
#[derive(Clone, Copy)]
pub(super) struct RawService<'a>(&'a [u8]);

impl RawService<'_> {
    /// The protocol number; 0 for a firewall-mark service.
    pub(super) fn protocol(&self) -> u16 {
        u16_at(self.0, offset_of!(ServiceEntryC, protocol))
    }

    pub(super) fn num_dests(&self) -> u32 {
        u32_at(self.0, offset_of!(ServiceEntryC, num_dests))
    }

    /// Feeds the configuration (counters left out) to `h`.
    pub(super) fn hash_config(&self, h: &mut impl Hasher) {
        h.write(&self.0[..SERVICE_CONFIG]);
    }

    /// The service's key, or None for one we never own (a mark, a
    /// protocol other than TCP, UDP, SCTP).
    pub(super) fn key(&self) -> Option<ServiceKey> {
        let b = self.0;
        // A mark service carries a protocol too (ipvsadm's TCP).
        if u32_at(b, offset_of!(ServiceEntryC, fwmark)) != 0 {
            return None;
        }
        let protocol = u8::try_from(self.protocol())
            .ok()
            .and_then(Protocol::from_number)?;
        Some(ServiceKey::Addr {
            protocol,
            addr: IpAddr::V4(ipv4_at(b, offset_of!(ServiceEntryC, addr))),
            port: port_at(b, offset_of!(ServiceEntryC, port)),
        })
    }

    /// The service, or None for one we never own ([`RawService::key`]).
    /// `index` names it in an error.
    pub(super) fn decode(&self, index: usize) -> Result<Option<Service>, WireError> {
        let b = self.0;
        let Some(key) = self.key() else {
            return Ok(None);
        };
        let bad = |reason| WireError {
            what: "IPVS service entry",
            index,
            reason,
        };
        let name = &b[offset_of!(ServiceEntryC, sched_name)..][..16];
        let name = name.split(|&c| c == 0).next().unwrap_or_default();
        let name = std::str::from_utf8(name).map_err(|_| bad("scheduler name not UTF-8"))?;
        let scheduler = Scheduler::new(name).map_err(|_| bad("bad scheduler name"))?;
        Ok(Some(Service {
            key,
            scheduler,
            flags: ServiceFlagBits::from_bits_retain(u32_at(b, offset_of!(ServiceEntryC, flags))),
            // Seconds, as netlink reports it (the kernel divides by HZ).
            timeout: u32_at(b, offset_of!(ServiceEntryC, timeout)),
            netmask: Netmask::V4(ipv4_at(b, offset_of!(ServiceEntryC, netmask))),
        }))
    }

    /// A `GET_DESTS` request for this service's destinations in `slots`
    /// entries, every slot unfilled.
    #[cfg(test)]
    pub(super) fn dests_request(&self, slots: usize) -> Vec<u8> {
        let mut buf = Vec::new();
        self.dests_request_into(&mut buf, slots);
        buf
    }

    /// [`RawService::dests_request`] written over `buf`, whose allocation
    /// one read reuses for every service.
    pub(super) fn dests_request_into(&self, buf: &mut Vec<u8>, slots: usize) {
        buf.clear();
        buf.resize(DESTS_HEAD + slots * DEST_LEN, UNFILLED);
        buf[..DESTS_HEAD].fill(0);
        let b = self.0;
        // The key fields, copied as the kernel wrote them.
        for (to, from, len) in [
            (
                offset_of!(GetDests, protocol),
                offset_of!(ServiceEntryC, protocol),
                2,
            ),
            (
                offset_of!(GetDests, addr),
                offset_of!(ServiceEntryC, addr),
                4,
            ),
            (
                offset_of!(GetDests, port),
                offset_of!(ServiceEntryC, port),
                2,
            ),
            (
                offset_of!(GetDests, fwmark),
                offset_of!(ServiceEntryC, fwmark),
                4,
            ),
        ] {
            buf[to..to + len].copy_from_slice(&b[from..from + len]);
        }
        let n = u32::try_from(slots).expect("a destination count fits u32");
        let off = offset_of!(GetDests, num_dests);
        buf[off..off + 4].copy_from_slice(&n.to_ne_bytes());
    }
}

/// The filled destination entries of a `GET_DESTS` reply.
pub(super) fn dest_entries(reply: &[u8]) -> impl Iterator<Item = RawDest<'_>> {
    reply[DESTS_HEAD..]
        .chunks_exact(DEST_LEN)
        .take_while(|e| {
            u32_at(e, offset_of!(DestEntryC, weight)) != u32::from_ne_bytes([UNFILLED; 4])
        })
        .map(RawDest)
}

/// One destination entry as the kernel wrote it.
#[derive(Clone, Copy)]
pub(super) struct RawDest<'a>(&'a [u8]);

impl RawDest<'_> {
    /// Feeds the configuration (counters left out) to `h`.
    pub(super) fn hash_config(&self, h: &mut impl Hasher) {
        h.write(&self.0[..DEST_CONFIG]);
    }

    /// The destination (IPv4: the interface skips any other family),
    /// counters left out.
    pub(super) fn decode(&self, index: usize) -> Result<Destination, WireError> {
        let b = self.0;
        let flags = u32_at(b, offset_of!(DestEntryC, conn_flags));
        let forward = ForwardMethod::from_wire(flags).ok_or(WireError {
            what: "IPVS destination entry",
            index,
            reason: "unknown forward method",
        })?;
        let weight = u32_at(b, offset_of!(DestEntryC, weight));
        let addr = IpAddr::V4(ipv4_at(b, offset_of!(DestEntryC, addr)));
        Ok(
            Destination::new(addr, port_at(b, offset_of!(DestEntryC, port)))
                .forward(forward)
                .weight(weight)
                .thresholds(
                    u32_at(b, offset_of!(DestEntryC, u_threshold)),
                    u32_at(b, offset_of!(DestEntryC, l_threshold)),
                ),
        )
    }
}

/// A decoded service with its decoded destinations, sorted by key as
/// netlink's read sorts them.
pub(super) fn service_config(service: Service, mut dests: Vec<Destination>) -> ServiceConfig {
    dests.sort_by_key(Destination::key);
    ServiceConfig {
        service,
        destinations: dests,
    }
}

#[cfg(test)]
#[path = "sockopt_wire_tests.rs"]
mod tests;

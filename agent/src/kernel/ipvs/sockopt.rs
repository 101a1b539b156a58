//! The IPv4 IPVS table read through the old getsockopt interface
//! (`IP_VS_SO_GET_INFO`, `_GET_SERVICES`, `_GET_DESTS`; what `ipvsadm`
//! used before netlink). One call lists every IPv4 service of the
//! socket's namespace with its destination count, one call per service
//! its destinations; each walks the table once under the IPVS mutex. At
//! 10k Services that is several times cheaper than the kernel printing
//! `/proc/net/ip_vs`, whose every `read()` restarts its walk
//! (BENCHMARKS.md, "The services' no-op `sets` step").
//!
//! It shows every field of an IPv4 service and destination a plan
//! compares (flags, timeout in seconds, netmask, thresholds), but no
//! IPv6 service and no destination of another family than its service's;
//! `GET_INFO` counts IPv4 services only, so an IPv6 one leaves no trace.
//! The kernel fills at most the slots it is given and says nothing when
//! the table grew meanwhile: every request carries one slot more than
//! the count it was made from, left unfilled ([`sockopt_wire`]); a filled
//! spare means the table changed, and the read starts again.

use std::{
    collections::BTreeSet,
    hash::{DefaultHasher, Hasher},
    io,
};

use super::{
    sockopt_wire::{self as wire, RawService, WireError},
    ServiceConfig, ServiceKey,
};
use crate::sys::ip_sockopt::IpSocket;

/// Reads of a table that changes under them before giving up.
const ATTEMPTS: usize = 3;

/// Why the interface gave no table.
#[derive(Debug, thiserror::Error)]
pub enum SockoptError {
    #[error("IPVS getsockopt {call}: {source}")]
    Call {
        call: &'static str,
        source: io::Error,
    },
    #[error("IPVS getsockopt: the table changed during each of {ATTEMPTS} reads")]
    KeptChanging,
    #[error("IPVS getsockopt: {0}")]
    Wire(#[from] WireError),
}

impl SockoptError {
    /// The kernel has no such interface (ENOPROTOOPT: IPVS not loaded, or
    /// built without it).
    pub fn unsupported(&self) -> bool {
        matches!(self, Self::Call { source, .. } if source.raw_os_error() == Some(libc::ENOPROTOOPT))
    }
}

/// The IPv4 table as one read found it.
#[derive(Debug, Default)]
pub struct Table {
    /// The TCP, UDP and SCTP address services (marks skipped, as the
    /// `/proc` read skips them), destinations sorted by key.
    pub services: Vec<ServiceConfig>,
    /// Services whose destinations the interface did not all show (one of
    /// another family than the service's): read them by netlink.
    pub partial: BTreeSet<ServiceKey>,
    /// Every configuration byte read, counters left out, and the count of
    /// all services: equal for two reads of the same table.
    pub fingerprint: u64,
}

/// One round of the read ended early: the table changed under it.
enum Round {
    Done(Table),
    Changed,
}

/// The IPv4 table of the calling thread's network namespace.
pub fn read() -> Result<Table, SockoptError> {
    let sock = IpSocket::open().map_err(|source| SockoptError::Call {
        call: "socket",
        source,
    })?;
    for _ in 0..ATTEMPTS {
        if let Round::Done(table) = read_once(&sock)? {
            return Ok(table);
        }
    }
    Err(SockoptError::KeptChanging)
}

/// `call` on `buf`; EINVAL (the kernel's answer to a length that no
/// longer matches) and ESRCH (a service deleted meanwhile) as a change.
fn get(
    sock: &IpSocket,
    call: &'static str,
    opt: i32,
    buf: &mut [u8],
) -> Result<bool, SockoptError> {
    match sock.get(opt, buf) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ESRCH)) => Ok(false),
        Err(source) => Err(SockoptError::Call { call, source }),
    }
}

fn read_once(sock: &IpSocket) -> Result<Round, SockoptError> {
    let mut info = [0u8; wire::INFO_LEN];
    if !get(sock, "GET_INFO", wire::GET_INFO, &mut info)? {
        return Ok(Round::Changed);
    }
    let count = wire::info_services(&info) as usize;
    let mut list = wire::services_request(count + 1);
    if !get(sock, "GET_SERVICES", wire::GET_SERVICES, &mut list)? {
        return Ok(Round::Changed);
    }
    let entries: Vec<RawService<'_>> = wire::service_entries(&list).collect();
    if entries.len() > count {
        return Ok(Round::Changed);
    }
    let mut h = DefaultHasher::new();
    h.write_usize(count);
    let mut table = Table::default();
    for (i, raw) in entries.iter().enumerate() {
        raw.hash_config(&mut h);
        let Some(service) = raw.decode(i)?.map(|e| e.service) else {
            continue;
        };
        let expected = raw.num_dests() as usize;
        let mut dests = raw.dests_request(expected + 1);
        if !get(sock, "GET_DESTS", wire::GET_DESTS, &mut dests)? {
            return Ok(Round::Changed);
        }
        let mut decoded = Vec::with_capacity(expected);
        for (j, d) in wire::dest_entries(&dests).enumerate() {
            d.hash_config(&mut h);
            decoded.push(d.decode(j)?.destination);
        }
        match decoded.len() {
            n if n > expected => return Ok(Round::Changed),
            n if n < expected => {
                table.partial.insert(service.key);
            }
            _ => {}
        }
        table.services.push(wire::service_config(service, decoded));
    }
    table.fingerprint = h.finish();
    Ok(Round::Done(table))
}

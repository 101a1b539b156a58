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
//!
//! [`summary`] reads the same calls but decodes nothing: it hashes the
//! entries as they came, in one buffer reused for every service, and
//! gives [`read`]'s fingerprint and partial services. A periodic full
//! sync that expects the table it last found equal pays only that
//! (BENCHMARKS.md, "Stop 19: the services' no-op IPVS read").

use std::{
    collections::BTreeSet,
    hash::{DefaultHasher, Hasher},
    io,
};

use super::{
    sockopt_wire::{self as wire, RawDest, RawService, WireError},
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

/// What a read tells of the table besides its services.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Services whose destinations the interface did not all show (one of
    /// another family than the service's): read them by netlink.
    pub partial: BTreeSet<ServiceKey>,
    /// Every configuration byte read, counters left out, and the count of
    /// all services: equal for two reads of the same table.
    pub fingerprint: u64,
}

/// The IPv4 table as one read found it.
#[derive(Debug, Default)]
pub struct Table {
    /// The TCP, UDP and SCTP address services (marks skipped, as the
    /// `/proc` read skips them), destinations sorted by key.
    pub services: Vec<ServiceConfig>,
    pub summary: Summary,
}

/// What a read keeps of each service of ours it lists.
trait Keep: Default {
    /// `raw` at `index` of the reply, with its `listed` destinations;
    /// `partial`: fewer than the service counts.
    fn service<'a>(
        &mut self,
        raw: RawService<'_>,
        index: usize,
        dests: impl Iterator<Item = RawDest<'a>>,
        listed: usize,
        partial: bool,
    ) -> Result<(), WireError>;

    /// Done: the read's summary.
    fn finish(self, summary: Summary) -> Self;
}

impl Keep for Table {
    fn service<'a>(
        &mut self,
        raw: RawService<'_>,
        index: usize,
        dests: impl Iterator<Item = RawDest<'a>>,
        listed: usize,
        partial: bool,
    ) -> Result<(), WireError> {
        let Some(service) = raw.decode(index)? else {
            return Ok(());
        };
        let mut decoded = Vec::with_capacity(listed);
        for (j, d) in dests.enumerate() {
            decoded.push(d.decode(j)?);
        }
        if partial {
            self.summary.partial.insert(service.key);
        }
        self.services.push(wire::service_config(service, decoded));
        Ok(())
    }

    fn finish(mut self, summary: Summary) -> Self {
        self.summary.fingerprint = summary.fingerprint;
        self
    }
}

impl Keep for Summary {
    fn service<'a>(
        &mut self,
        raw: RawService<'_>,
        _: usize,
        _: impl Iterator<Item = RawDest<'a>>,
        _: usize,
        partial: bool,
    ) -> Result<(), WireError> {
        if let (true, Some(key)) = (partial, raw.key()) {
            self.partial.insert(key);
        }
        Ok(())
    }

    fn finish(self, summary: Summary) -> Self {
        Summary {
            partial: self.partial,
            ..summary
        }
    }
}

/// One round of the read ended early: the table changed under it.
enum Round<T> {
    Done(T),
    Changed,
}

/// The IPv4 table of the calling thread's network namespace.
pub fn read() -> Result<Table, SockoptError> {
    read_keeping()
}

/// [`read`]'s summary of the table, without decoding it.
pub fn summary() -> Result<Summary, SockoptError> {
    read_keeping()
}

fn read_keeping<K: Keep>() -> Result<K, SockoptError> {
    let sock = IpSocket::open().map_err(|source| SockoptError::Call {
        call: "socket",
        source,
    })?;
    for _ in 0..ATTEMPTS {
        if let Round::Done(kept) = read_once(&sock)? {
            return Ok(kept);
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

fn read_once<K: Keep>(sock: &IpSocket) -> Result<Round<K>, SockoptError> {
    let mut info = [0u8; wire::INFO_LEN];
    if !get(sock, "GET_INFO", wire::GET_INFO, &mut info)? {
        return Ok(Round::Changed);
    }
    let count = wire::info_services(&info) as usize;
    let mut list = wire::services_request(count + 1);
    if !get(sock, "GET_SERVICES", wire::GET_SERVICES, &mut list)? {
        return Ok(Round::Changed);
    }
    let mut h = DefaultHasher::new();
    h.write_usize(count);
    let mut kept = K::default();
    // One request buffer for every service's destinations.
    let mut dests = Vec::new();
    for (i, raw) in wire::service_entries(&list).enumerate() {
        if i == count {
            return Ok(Round::Changed);
        }
        raw.hash_config(&mut h);
        if raw.key().is_none() {
            continue;
        }
        let expected = raw.num_dests() as usize;
        raw.dests_request_into(&mut dests, expected + 1);
        if !get(sock, "GET_DESTS", wire::GET_DESTS, &mut dests)? {
            return Ok(Round::Changed);
        }
        let mut listed = 0;
        for d in wire::dest_entries(&dests) {
            d.hash_config(&mut h);
            listed += 1;
        }
        if listed > expected {
            return Ok(Round::Changed);
        }
        kept.service(
            raw,
            i,
            wire::dest_entries(&dests),
            listed,
            listed < expected,
        )?;
    }
    let summary = Summary {
        partial: BTreeSet::new(),
        fingerprint: h.finish(),
    };
    Ok(Round::Done(kept.finish(summary)))
}

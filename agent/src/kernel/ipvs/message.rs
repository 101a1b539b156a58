//! Pure encode and decode of IPVS generic netlink messages: typed values in,
//! bytes out, and back. No socket here, so all of it is tested without root
//! (golden bytes in `tests/golden.rs`, arbitrary input in `tests/fuzz.rs`).
//!
//! Byte orders follow `net/netfilter/ipvs/ip_vs_ctl.c`: ports are big
//! endian, addresses raw 16-byte `nf_inet_addr`s, everything else host order.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use neli::consts::genl::{CtrlAttr, CtrlCmd};

use super::{
    consts::{
        CmdAttr, DestAttr, InfoAttr, IpvsCmd, SvcAttr, CTRL_VERSION, FAMILY_NAME, FAMILY_VERSION,
    },
    request::Request,
    types::{
        Destination, DestinationEntry, DestinationKey, ForwardMethod, Info, InvalidValue, Netmask,
        Scheduler, Service, ServiceEntry, ServiceFlagBits, ServiceKey, Timeouts,
    },
};
use crate::desired::{Family, Protocol};
use crate::kernel::netlink::{
    af, family_of,
    frame::{GENL_ID_CTRL, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST},
    message, Attr, AttrTable, DecodeError, Writer,
};

/// A read of the kernel's state; each has its own reply shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query<'a> {
    /// `IPVS_CMD_GET_SERVICE` as a dump: every service.
    Services,
    /// `IPVS_CMD_GET_SERVICE` for one key.
    Service(&'a ServiceKey),
    /// `IPVS_CMD_GET_DEST`, always a dump, of one service.
    Destinations(&'a ServiceKey),
    /// `IPVS_CMD_GET_CONFIG`.
    Timeouts,
    /// `IPVS_CMD_GET_INFO`.
    Info,
}

impl<'a> Query<'a> {
    pub(crate) fn is_dump(&self) -> bool {
        matches!(self, Query::Services | Query::Destinations(_))
    }

    pub(crate) fn op(&self) -> &'static str {
        self.parts().0
    }

    /// The verb, the command and the service it names, if any.
    fn parts(&self) -> (&'static str, IpvsCmd, Option<&'a ServiceKey>) {
        match *self {
            Query::Services => ("list services", IpvsCmd::GetService, None),
            Query::Service(k) => ("get service", IpvsCmd::GetService, Some(k)),
            Query::Destinations(k) => ("list destinations", IpvsCmd::GetDest, Some(k)),
            Query::Timeouts => ("get timeouts", IpvsCmd::GetConfig, None),
            Query::Info => ("get info", IpvsCmd::GetInfo, None),
        }
    }
}

/// Appends a change request, flagged for an ack, to `out`. On error
/// nothing is appended.
pub(crate) fn encode_request(
    req: &Request,
    family: u16,
    seq: u32,
    out: &mut Vec<u8>,
) -> Result<(), InvalidValue> {
    if let Request::AddService(s) | Request::EditService(s) = req {
        check_netmask(s)?;
    }
    let header = [req.verb().0.into(), FAMILY_VERSION, 0, 0];
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    message(out, (family, flags, seq), &header, |w| match req {
        Request::AddService(s) | Request::EditService(s) => service_attr(w, &s.key, Some(s)),
        Request::DeleteService(k) => service_attr(w, k, None),
        Request::AddDestination {
            service,
            destination,
        }
        | Request::EditDestination {
            service,
            destination,
        } => {
            service_attr(w, service, None);
            dest_attr(w, destination.key(), Some(destination));
        }
        Request::DeleteDestination {
            service,
            destination,
        } => {
            service_attr(w, service, None);
            dest_attr(w, *destination, None);
        }
        Request::SetTimeouts(t) => {
            w.put_u32(CmdAttr::TimeoutTcp, t.tcp);
            w.put_u32(CmdAttr::TimeoutTcpFin, t.tcp_fin);
            w.put_u32(CmdAttr::TimeoutUdp, t.udp);
        }
        Request::Flush => {}
    });
    Ok(())
}

/// Appends a query to `out`. Dumps end with NLMSG_DONE, the others with
/// their one reply (no ack asked, the reply is the answer).
pub(crate) fn encode_query(q: &Query<'_>, family: u16, seq: u32, out: &mut Vec<u8>) {
    let (_, cmd, key) = q.parts();
    let flags = if q.is_dump() {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST
    };
    let header = [cmd.into(), FAMILY_VERSION, 0, 0];
    message(out, (family, flags, seq), &header, |w| {
        if let Some(k) = key {
            service_attr(w, k, None);
        }
    });
}

/// Appends the controller's "which id has family IPVS?" request.
pub(crate) fn encode_resolve(seq: u32, out: &mut Vec<u8>) {
    let header = [CtrlCmd::Getfamily.into(), CTRL_VERSION, 0, 0];
    message(out, (GENL_ID_CTRL, NLM_F_REQUEST, seq), &header, |w| {
        w.put_str(CtrlAttr::FamilyName, FAMILY_NAME)
    });
}

/// `union nf_inet_addr`: 16 bytes, IPv4 in the first 4, the rest zero.
fn inet_addr(addr: &IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// `IPVS_CMD_ATTR_SERVICE`: the key, plus the settings when `full` is
/// given (add and edit need them all: the kernel refuses a partial one).
fn service_attr(w: &mut Writer<'_>, key: &ServiceKey, full: Option<&Service>) {
    let nest = w.nest_start(CmdAttr::Service);
    w.put_u16(SvcAttr::Af, af(key.family()).into());
    match key {
        ServiceKey::Fwmark { mark, .. } => w.put_u32(SvcAttr::Fwmark, *mark),
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            w.put_u16(SvcAttr::Protocol, protocol.number().into());
            w.put(SvcAttr::Addr, &inet_addr(addr));
            w.put(SvcAttr::Port, &port.to_be_bytes());
        }
    }
    if let Some(s) = full {
        // Mask all bits so an edit replaces the flags rather than merging;
        // never send HASHED: older kernels refuse to hash a service that has it.
        let mut flags = [0u8; 8];
        flags[..4].copy_from_slice(&s.flags.settable().bits().to_ne_bytes());
        flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        w.put_str(SvcAttr::SchedName, s.scheduler.as_str());
        w.put(SvcAttr::Flags, &flags);
        w.put_u32(SvcAttr::Timeout, s.timeout);
        w.put(SvcAttr::Netmask, &netmask_bytes(&s.netmask));
    }
    w.nest_end(nest);
}

/// The netmask must be of the service's family, and an IPv6 prefix 1..=128
/// (the kernel's own check, made before anything is sent).
fn check_netmask(s: &Service) -> Result<(), InvalidValue> {
    match (s.key.family(), s.netmask) {
        (Family::V4, Netmask::V4(_)) => Ok(()),
        (Family::V6, Netmask::V6(len)) if (1..=128).contains(&len) => Ok(()),
        (Family::V6, Netmask::V6(len)) => Err(InvalidValue::Netmask {
            family: Family::V6,
            len,
        }),
        (family, netmask) => Err(InvalidValue::NetmaskFamily { netmask, family }),
    }
}

/// IPv4: the mask in network order. IPv6: the prefix length as a
/// host-order u32 (the kernel reads both as a raw `__be32`).
fn netmask_bytes(netmask: &Netmask) -> [u8; 4] {
    match netmask {
        Netmask::V4(m) => m.octets(),
        Netmask::V6(len) => u32::from(*len).to_ne_bytes(),
    }
}

/// `IPVS_CMD_ATTR_DEST`: address and port, plus the settings when `full`.
fn dest_attr(w: &mut Writer<'_>, key: DestinationKey, full: Option<&Destination>) {
    let nest = w.nest_start(CmdAttr::Dest);
    w.put(DestAttr::Addr, &inet_addr(&key.addr));
    w.put(DestAttr::Port, &key.port.to_be_bytes());
    if let Some(d) = full {
        w.put_u32(DestAttr::FwdMethod, d.forward.to_wire());
        w.put_u32(DestAttr::Weight, d.weight);
        w.put_u32(DestAttr::UThresh, d.upper_threshold);
        w.put_u32(DestAttr::LThresh, d.lower_threshold);
    }
    // Explicit, since a destination's family may differ from its service's.
    w.put_u16(DestAttr::AddrFamily, af(Family::of(&key.addr)).into());
    w.nest_end(nest);
}

// ---- decoding ----

fn family_from(a: Attr<'_>, what: &'static str) -> Result<Family, DecodeError> {
    let n = a.u16()?;
    family_of(n).ok_or(DecodeError::Value {
        what,
        value: u64::from(n),
    })
}

fn addr_from(family: Family, a: Attr<'_>) -> Result<IpAddr, DecodeError> {
    Ok(match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(a.array::<4>()?)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(a.array::<16>()?)),
    })
}

fn protocol_from(a: Attr<'_>) -> Result<Protocol, DecodeError> {
    let n = a.u16()?;
    let protocol = u8::try_from(n).ok().and_then(Protocol::from_number);
    protocol.ok_or(DecodeError::Value {
        what: "service protocol",
        value: u64::from(n),
    })
}

/// Decodes the reply to `GET_SERVICE` (one message of a dump, or the single
/// answer).
pub(crate) fn decode_service(attrs: &[u8]) -> Result<ServiceEntry, DecodeError> {
    let top: AttrTable<CmdAttr> = AttrTable::parse(attrs)?;
    let svc: AttrTable<SvcAttr> = AttrTable::parse(top.need(CmdAttr::Service, "service")?.payload)?;
    let family = family_from(svc.need(SvcAttr::Af, "service af")?, "service af")?;
    let key = match svc.get(SvcAttr::Fwmark) {
        Some(mark) => ServiceKey::Fwmark {
            family,
            mark: mark.u32()?,
        },
        None => ServiceKey::Addr {
            protocol: protocol_from(svc.need(SvcAttr::Protocol, "service protocol")?)?,
            addr: addr_from(family, svc.need(SvcAttr::Addr, "service address")?)?,
            port: svc.need(SvcAttr::Port, "service port")?.be16()?,
        },
    };
    let sched = svc.need(SvcAttr::SchedName, "scheduler")?.str()?;
    let scheduler = Scheduler::new(sched).map_err(|_| DecodeError::Value {
        what: "scheduler name length",
        value: sched.len() as u64,
    })?;
    // `struct ip_vs_flags`: the kernel sends the flags and a full mask.
    let flags =
        ServiceFlagBits::from_bits_retain(svc.need(SvcAttr::Flags, "service flags")?.u32()?);
    let mask = svc.need(SvcAttr::Netmask, "service netmask")?;
    let netmask = match family {
        Family::V4 => Netmask::V4(Ipv4Addr::from(mask.array::<4>()?)),
        Family::V6 => {
            let len = mask.u32()?;
            Netmask::V6(u8::try_from(len).map_err(|_| DecodeError::Value {
                what: "service netmask",
                value: u64::from(len),
            })?)
        }
    };
    let pe_name = svc
        .get(SvcAttr::PeName)
        .map(|a| a.str().map(str::to_owned))
        .transpose()?;
    Ok(ServiceEntry {
        service: Service {
            key,
            scheduler,
            flags,
            timeout: svc.need(SvcAttr::Timeout, "service timeout")?.u32()?,
            netmask,
        },
        pe_name,
    })
}

/// Decodes one message of a `GET_DEST` dump. `service_family` fills in for
/// kernels that do not send `IPVS_DEST_ATTR_ADDR_FAMILY`.
pub(crate) fn decode_destination(
    attrs: &[u8],
    service_family: Family,
) -> Result<DestinationEntry, DecodeError> {
    let top: AttrTable<CmdAttr> = AttrTable::parse(attrs)?;
    let d: AttrTable<DestAttr> = AttrTable::parse(top.need(CmdAttr::Dest, "destination")?.payload)?;
    let family = match d.get(DestAttr::AddrFamily) {
        Some(a) => family_from(a, "destination af")?,
        None => service_family,
    };
    let fwd = d.need(DestAttr::FwdMethod, "forward method")?.u32()?;
    let forward = ForwardMethod::from_wire(fwd).ok_or(DecodeError::Value {
        what: "forward method",
        value: u64::from(fwd),
    })?;
    let u32_of = |ty, what| d.need(ty, what)?.u32();
    let opt_u32 = |ty| d.get(ty).map_or(Ok(0), |a| a.u32());
    Ok(DestinationEntry {
        destination: Destination {
            addr: addr_from(family, d.need(DestAttr::Addr, "destination address")?)?,
            port: d.need(DestAttr::Port, "destination port")?.be16()?,
            forward,
            weight: u32_of(DestAttr::Weight, "weight")?,
            upper_threshold: u32_of(DestAttr::UThresh, "upper threshold")?,
            lower_threshold: u32_of(DestAttr::LThresh, "lower threshold")?,
        },
        active_conns: opt_u32(DestAttr::ActiveConns)?,
        inactive_conns: opt_u32(DestAttr::InactConns)?,
    })
}

/// Decodes the `GET_CONFIG` reply. A kernel built without TCP or UDP
/// support omits those; they read as 0.
pub(crate) fn decode_timeouts(attrs: &[u8]) -> Result<Timeouts, DecodeError> {
    let top: AttrTable<CmdAttr> = AttrTable::parse(attrs)?;
    let get = |ty| top.get(ty).map_or(Ok(0), |a| a.u32());
    Ok(Timeouts {
        tcp: get(CmdAttr::TimeoutTcp)?,
        tcp_fin: get(CmdAttr::TimeoutTcpFin)?,
        udp: get(CmdAttr::TimeoutUdp)?,
    })
}

/// Decodes the `GET_INFO` reply.
pub(crate) fn decode_info(attrs: &[u8]) -> Result<Info, DecodeError> {
    let top: AttrTable<InfoAttr> = AttrTable::parse(attrs)?;
    Ok(Info {
        version: top.need(InfoAttr::Version, "version")?.u32()?,
        conn_tab_size: top
            .need(InfoAttr::ConnTabSize, "connection table size")?
            .u32()?,
    })
}

/// Decodes the controller's reply to `encode_resolve`: the family id.
pub(crate) fn decode_family_id(attrs: &[u8]) -> Result<u16, DecodeError> {
    let top: AttrTable<CtrlAttr> = AttrTable::parse(attrs)?;
    top.need(CtrlAttr::FamilyId, "family id")?.u16()
}

//! Pure encode and decode of IPVS generic netlink messages: typed values in,
//! bytes out, and back. No socket here, so all of it is tested without root
//! (golden bytes in `tests/golden.rs`, arbitrary input in `tests/fuzz.rs`).
//!
//! Byte orders follow `net/netfilter/ipvs/ip_vs_ctl.c`: ports are big
//! endian, addresses raw 16-byte `nf_inet_addr`s, everything else host order.

use std::{
    io::Cursor,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use neli::{
    consts::{
        genl::{Cmd, CtrlAttr, CtrlCmd, NlAttrType},
        nl::NlmF,
    },
    genl::{AttrTypeBuilder, GenlmsghdrBuilder, Nlattr, NlattrBuilder},
    nl::{NlPayload, NlmsghdrBuilder},
    types::{Buffer, GenlBuffer},
    Size, ToBytes,
};

use super::{
    consts::{
        CmdAttr, DestAttr, InfoAttr, IpvsCmd, StatsAttr, SvcAttr, AF_INET, AF_INET6, CTRL_VERSION,
        FAMILY_NAME, FAMILY_VERSION, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP,
    },
    error::{DecodeError, EncodeError},
    netlink::{parse_attrs, GENL_ID_CTRL, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST},
    request::Request,
    types::{
        Destination, DestinationEntry, Family, ForwardMethod, Info, InvalidValue, Netmask,
        Protocol, Scheduler, Service, ServiceEntry, ServiceFlags, ServiceKey, Stats, Timeouts,
    },
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

impl Query<'_> {
    pub(crate) fn is_dump(&self) -> bool {
        matches!(self, Query::Services | Query::Destinations(_))
    }

    pub(crate) fn op(&self) -> &'static str {
        match self {
            Query::Services => "list services",
            Query::Service(_) => "get service",
            Query::Destinations(_) => "list destinations",
            Query::Timeouts => "get timeouts",
            Query::Info => "get info",
        }
    }
}

/// Appends a change request, flagged for an ack, to `out`.
pub(crate) fn encode_request(
    req: &Request,
    family: u16,
    seq: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let (cmd, attrs) = match req {
        Request::AddService(s) => (IpvsCmd::NewService, vec![service_attr(&s.key, Some(s))?]),
        Request::EditService(s) => (IpvsCmd::SetService, vec![service_attr(&s.key, Some(s))?]),
        Request::DeleteService(k) => (IpvsCmd::DelService, vec![service_attr(k, None)?]),
        Request::AddDestination {
            service,
            destination,
        } => (
            IpvsCmd::NewDest,
            vec![
                service_attr(service, None)?,
                dest_attr(&destination.addr, destination.port, Some(destination))?,
            ],
        ),
        Request::EditDestination {
            service,
            destination,
        } => (
            IpvsCmd::SetDest,
            vec![
                service_attr(service, None)?,
                dest_attr(&destination.addr, destination.port, Some(destination))?,
            ],
        ),
        Request::DeleteDestination {
            service,
            destination,
        } => (
            IpvsCmd::DelDest,
            vec![
                service_attr(service, None)?,
                dest_attr(&destination.addr, destination.port, None)?,
            ],
        ),
        Request::SetTimeouts(t) => (
            IpvsCmd::SetConfig,
            vec![
                attr(CmdAttr::TimeoutTcp, t.tcp)?,
                attr(CmdAttr::TimeoutTcpFin, t.tcp_fin)?,
                attr(CmdAttr::TimeoutUdp, t.udp)?,
            ],
        ),
        Request::Flush => (IpvsCmd::Flush, vec![]),
    };
    push_message(
        out,
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        cmd,
        FAMILY_VERSION,
        attrs,
    )
}

/// Appends a query to `out`. Dumps end with NLMSG_DONE, the others with
/// their one reply (no ack asked, the reply is the answer).
pub(crate) fn encode_query(
    q: &Query<'_>,
    family: u16,
    seq: u32,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let (cmd, attrs) = match q {
        Query::Services => (IpvsCmd::GetService, vec![]),
        Query::Service(k) => (IpvsCmd::GetService, vec![service_attr(k, None)?]),
        Query::Destinations(k) => (IpvsCmd::GetDest, vec![service_attr(k, None)?]),
        Query::Timeouts => (IpvsCmd::GetConfig, vec![]),
        Query::Info => (IpvsCmd::GetInfo, vec![]),
    };
    let flags = if q.is_dump() {
        NLM_F_REQUEST | NLM_F_DUMP
    } else {
        NLM_F_REQUEST
    };
    push_message(out, family, flags, seq, cmd, FAMILY_VERSION, attrs)
}

/// Appends the controller's "which id has family IPVS?" request.
pub(crate) fn encode_resolve(seq: u32, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    push_message(
        out,
        GENL_ID_CTRL,
        NLM_F_REQUEST,
        seq,
        CtrlCmd::Getfamily,
        CTRL_VERSION,
        vec![attr(CtrlAttr::FamilyName, FAMILY_NAME)?],
    )
}

fn push_message<C: Cmd, T: NlAttrType>(
    out: &mut Vec<u8>,
    nl_type: u16,
    flags: u16,
    seq: u32,
    cmd: C,
    version: u8,
    attrs: Vec<Nlattr<T, Buffer>>,
) -> Result<(), EncodeError> {
    let genl = GenlmsghdrBuilder::default()
        .cmd(cmd)
        .version(version)
        .attrs(attrs.into_iter().collect::<GenlBuffer<T, Buffer>>())
        .build()
        .map_err(neli_err)?;
    let msg = NlmsghdrBuilder::default()
        .nl_type(nl_type)
        .nl_flags(NlmF::from(flags))
        .nl_seq(seq)
        // The kernel routes replies by the socket's port id, not this field.
        .nl_pid(0)
        .nl_payload(NlPayload::Payload(genl))
        .build()
        .map_err(neli_err)?;
    let mut cursor = Cursor::new(Vec::with_capacity(msg.padded_size()));
    msg.to_bytes(&mut cursor).map_err(neli_err)?;
    out.extend_from_slice(cursor.get_ref());
    Ok(())
}

fn neli_err(e: impl std::fmt::Display) -> EncodeError {
    EncodeError::Netlink(e.to_string())
}

fn attr<T: NlAttrType, P: Size + ToBytes>(
    ty: T,
    payload: P,
) -> Result<Nlattr<T, Buffer>, EncodeError> {
    NlattrBuilder::default()
        .nla_type(
            AttrTypeBuilder::default()
                .nla_type(ty)
                .build()
                .map_err(neli_err)?,
        )
        .nla_payload(payload)
        .build()
        .map_err(neli_err)
}

fn nest<T: NlAttrType, C: NlAttrType>(
    ty: T,
    children: Vec<Nlattr<C, Buffer>>,
) -> Result<Nlattr<T, Buffer>, EncodeError> {
    let mut outer = attr(ty, Buffer::new())?;
    for child in &children {
        // `nest` also sets NLA_F_NESTED, as current kernels prefer.
        outer = outer.nest(child).map_err(neli_err)?;
    }
    Ok(outer)
}

fn af(family: Family) -> u16 {
    match family {
        Family::V4 => AF_INET,
        Family::V6 => AF_INET6,
    }
}

fn proto(p: Protocol) -> u16 {
    match p {
        Protocol::Tcp => IPPROTO_TCP,
        Protocol::Udp => IPPROTO_UDP,
        Protocol::Sctp => IPPROTO_SCTP,
    }
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
fn service_attr(
    key: &ServiceKey,
    full: Option<&Service>,
) -> Result<Nlattr<CmdAttr, Buffer>, EncodeError> {
    let mut a = vec![attr(SvcAttr::Af, af(key.family()))?];
    match key {
        ServiceKey::Fwmark { mark, .. } => a.push(attr(SvcAttr::Fwmark, *mark)?),
        ServiceKey::Addr {
            protocol,
            addr,
            port,
        } => {
            a.push(attr(SvcAttr::Protocol, proto(*protocol))?);
            a.push(attr(SvcAttr::Addr, inet_addr(addr))?);
            a.push(attr(SvcAttr::Port, port.to_be_bytes())?);
        }
    }
    if let Some(s) = full {
        let netmask = netmask_bytes(s)?;
        // Mask all bits so an edit replaces the flags rather than merging;
        // never send HASHED: older kernels refuse to hash a service that has it.
        let mut flags = [0u8; 8];
        flags[..4].copy_from_slice(&s.flags.settable().bits().to_ne_bytes());
        flags[4..].copy_from_slice(&u32::MAX.to_ne_bytes());
        a.push(attr(SvcAttr::SchedName, s.scheduler.as_str())?);
        a.push(attr(SvcAttr::Flags, flags)?);
        a.push(attr(SvcAttr::Timeout, s.timeout)?);
        a.push(attr(SvcAttr::Netmask, netmask)?);
    }
    nest(CmdAttr::Service, a)
}

fn netmask_bytes(s: &Service) -> Result<[u8; 4], EncodeError> {
    match (s.key.family(), s.netmask) {
        (Family::V4, Netmask::V4(m)) => Ok(m.octets()),
        (Family::V6, Netmask::V6(len)) if (1..=128).contains(&len) => {
            Ok(u32::from(len).to_ne_bytes())
        }
        (Family::V6, Netmask::V6(len)) => Err(InvalidValue::Netmask {
            family: Family::V6,
            len,
        }
        .into()),
        (family, netmask) => Err(InvalidValue::NetmaskFamily { netmask, family }.into()),
    }
}

/// `IPVS_CMD_ATTR_DEST`: address and port, plus the settings when `full`.
fn dest_attr(
    addr: &IpAddr,
    port: u16,
    full: Option<&Destination>,
) -> Result<Nlattr<CmdAttr, Buffer>, EncodeError> {
    let mut a = vec![
        attr(DestAttr::Addr, inet_addr(addr))?,
        attr(DestAttr::Port, port.to_be_bytes())?,
    ];
    if let Some(d) = full {
        a.push(attr(DestAttr::FwdMethod, d.forward.to_wire())?);
        a.push(attr(DestAttr::Weight, d.weight)?);
        a.push(attr(DestAttr::UThresh, d.upper_threshold)?);
        a.push(attr(DestAttr::LThresh, d.lower_threshold)?);
    }
    // Explicit, since a destination's family may differ from its service's.
    a.push(attr(DestAttr::AddrFamily, af(Family::of(addr)))?);
    nest(CmdAttr::Dest, a)
}

// ---- decoding ----

type Attrs<T> = GenlBuffer<T, Buffer>;

fn find<T: NlAttrType>(attrs: &Attrs<T>, ty: T) -> Option<&[u8]> {
    attrs
        .iter()
        .find(|a| *a.nla_type().nla_type() == ty)
        .map(|a| a.nla_payload().as_ref())
}

fn need<'a, T: NlAttrType>(
    attrs: &'a Attrs<T>,
    ty: T,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    find(attrs, ty).ok_or(DecodeError::Missing { what })
}

fn fixed<const N: usize>(p: &[u8], what: &'static str) -> Result<[u8; N], DecodeError> {
    p.try_into()
        .map_err(|_| DecodeError::Length { what, len: p.len() })
}

fn get_u16(p: &[u8], what: &'static str) -> Result<u16, DecodeError> {
    fixed(p, what).map(u16::from_ne_bytes)
}

fn get_u32(p: &[u8], what: &'static str) -> Result<u32, DecodeError> {
    fixed(p, what).map(u32::from_ne_bytes)
}

fn get_be16(p: &[u8], what: &'static str) -> Result<u16, DecodeError> {
    fixed(p, what).map(u16::from_be_bytes)
}

/// A counter: `IPVS_SVC_ATTR_STATS` mixes u32 and u64, `STATS64` is all u64.
fn get_counter(p: &[u8], what: &'static str) -> Result<u64, DecodeError> {
    match p.len() {
        4 => get_u32(p, what).map(u64::from),
        _ => fixed(p, what).map(u64::from_ne_bytes),
    }
}

fn get_string(p: &[u8], what: &'static str) -> Result<String, DecodeError> {
    let text = p.split(|&b| b == 0).next().unwrap_or(&[]);
    std::str::from_utf8(text)
        .map(str::to_owned)
        .map_err(|_| DecodeError::Value {
            what,
            value: text.len() as u64,
        })
}

fn family_from(af: u16, what: &'static str) -> Result<Family, DecodeError> {
    match af {
        AF_INET => Ok(Family::V4),
        AF_INET6 => Ok(Family::V6),
        other => Err(DecodeError::Value {
            what,
            value: u64::from(other),
        }),
    }
}

fn addr_from(family: Family, p: &[u8], what: &'static str) -> Result<IpAddr, DecodeError> {
    match family {
        Family::V4 => {
            let b: [u8; 4] = p
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .ok_or(DecodeError::Length { what, len: p.len() })?;
            Ok(IpAddr::V4(Ipv4Addr::from(b)))
        }
        Family::V6 => {
            let b: [u8; 16] = p
                .get(..16)
                .and_then(|b| b.try_into().ok())
                .ok_or(DecodeError::Length { what, len: p.len() })?;
            Ok(IpAddr::V6(Ipv6Addr::from(b)))
        }
    }
}

/// The top-level attributes of an IPVS message.
fn cmd_attrs(attrs: &[u8]) -> Result<Attrs<CmdAttr>, DecodeError> {
    parse_attrs(attrs)
}

/// Decodes the reply to `GET_SERVICE` (one message of a dump, or the single
/// answer).
pub(crate) fn decode_service(attrs: &[u8]) -> Result<ServiceEntry, DecodeError> {
    let top = cmd_attrs(attrs)?;
    let svc: Attrs<SvcAttr> = parse_attrs(need(&top, CmdAttr::Service, "service")?)?;

    let family = family_from(
        get_u16(need(&svc, SvcAttr::Af, "service af")?, "service af")?,
        "service af",
    )?;
    let key = match find(&svc, SvcAttr::Fwmark) {
        Some(mark) => ServiceKey::Fwmark {
            family,
            mark: get_u32(mark, "service fwmark")?,
        },
        None => {
            let p = get_u16(
                need(&svc, SvcAttr::Protocol, "service protocol")?,
                "service protocol",
            )?;
            let protocol = match p {
                IPPROTO_TCP => Protocol::Tcp,
                IPPROTO_UDP => Protocol::Udp,
                IPPROTO_SCTP => Protocol::Sctp,
                other => {
                    return Err(DecodeError::Value {
                        what: "service protocol",
                        value: u64::from(other),
                    })
                }
            };
            ServiceKey::Addr {
                protocol,
                addr: addr_from(
                    family,
                    need(&svc, SvcAttr::Addr, "service address")?,
                    "service address",
                )?,
                port: get_be16(need(&svc, SvcAttr::Port, "service port")?, "service port")?,
            }
        }
    };

    let sched = get_string(need(&svc, SvcAttr::SchedName, "scheduler")?, "scheduler")?;
    let scheduler = Scheduler::new(&sched).map_err(|_| DecodeError::Value {
        what: "scheduler name length",
        value: sched.len() as u64,
    })?;
    // `struct ip_vs_flags`: the kernel sends the flags and a full mask.
    let flags_raw: [u8; 8] = fixed(
        need(&svc, SvcAttr::Flags, "service flags")?,
        "service flags",
    )?;
    let flags = ServiceFlags::from_bits(u32::from_ne_bytes([
        flags_raw[0],
        flags_raw[1],
        flags_raw[2],
        flags_raw[3],
    ]));
    let timeout = get_u32(
        need(&svc, SvcAttr::Timeout, "service timeout")?,
        "service timeout",
    )?;
    let mask: [u8; 4] = fixed(
        need(&svc, SvcAttr::Netmask, "service netmask")?,
        "service netmask",
    )?;
    let netmask = match family {
        Family::V4 => Netmask::V4(Ipv4Addr::from(mask)),
        Family::V6 => {
            let len = u32::from_ne_bytes(mask);
            Netmask::V6(u8::try_from(len).map_err(|_| DecodeError::Value {
                what: "service netmask",
                value: u64::from(len),
            })?)
        }
    };
    let pe_name = find(&svc, SvcAttr::PeName)
        .map(|p| get_string(p, "persistence engine"))
        .transpose()?;

    Ok(ServiceEntry {
        service: Service {
            key,
            scheduler,
            flags,
            timeout,
            netmask,
        },
        pe_name,
        stats: stats(find(&svc, SvcAttr::Stats64), find(&svc, SvcAttr::Stats))?,
    })
}

/// Decodes one message of a `GET_DEST` dump. `service_family` fills in for
/// kernels that do not send `IPVS_DEST_ATTR_ADDR_FAMILY`.
pub(crate) fn decode_destination(
    attrs: &[u8],
    service_family: Family,
) -> Result<DestinationEntry, DecodeError> {
    let top = cmd_attrs(attrs)?;
    let d: Attrs<DestAttr> = parse_attrs(need(&top, CmdAttr::Dest, "destination")?)?;
    let family = match find(&d, DestAttr::AddrFamily) {
        Some(p) => family_from(get_u16(p, "destination af")?, "destination af")?,
        None => service_family,
    };
    let fwd = get_u32(
        need(&d, DestAttr::FwdMethod, "forward method")?,
        "forward method",
    )?;
    let forward = ForwardMethod::from_wire(fwd).ok_or(DecodeError::Value {
        what: "forward method",
        value: u64::from(fwd),
    })?;
    let u32_of = |ty, what| -> Result<u32, DecodeError> { get_u32(need(&d, ty, what)?, what) };
    let opt_u32 = |ty, what| -> Result<u32, DecodeError> {
        find(&d, ty).map(|p| get_u32(p, what)).unwrap_or(Ok(0))
    };
    Ok(DestinationEntry {
        destination: Destination {
            addr: addr_from(
                family,
                need(&d, DestAttr::Addr, "destination address")?,
                "destination address",
            )?,
            port: get_be16(
                need(&d, DestAttr::Port, "destination port")?,
                "destination port",
            )?,
            forward,
            weight: u32_of(DestAttr::Weight, "weight")?,
            upper_threshold: u32_of(DestAttr::UThresh, "upper threshold")?,
            lower_threshold: u32_of(DestAttr::LThresh, "lower threshold")?,
        },
        active_conns: opt_u32(DestAttr::ActiveConns, "active connections")?,
        inactive_conns: opt_u32(DestAttr::InactConns, "inactive connections")?,
        persistent_conns: opt_u32(DestAttr::PersistConns, "persistent connections")?,
        stats: stats(find(&d, DestAttr::Stats64), find(&d, DestAttr::Stats))?,
    })
}

/// Prefers the 64-bit counters; older kernels only send the mixed set.
fn stats(stats64: Option<&[u8]>, stats32: Option<&[u8]>) -> Result<Stats, DecodeError> {
    let Some(bytes) = stats64.or(stats32) else {
        return Ok(Stats::default());
    };
    let attrs: Attrs<StatsAttr> = parse_attrs(bytes)?;
    let mut s = Stats::default();
    for a in attrs.iter() {
        let field = match a.nla_type().nla_type() {
            StatsAttr::Conns => &mut s.conns,
            StatsAttr::InPkts => &mut s.in_packets,
            StatsAttr::OutPkts => &mut s.out_packets,
            StatsAttr::InBytes => &mut s.in_bytes,
            StatsAttr::OutBytes => &mut s.out_bytes,
            StatsAttr::Cps => &mut s.cps,
            StatsAttr::InPps => &mut s.in_pps,
            StatsAttr::OutPps => &mut s.out_pps,
            StatsAttr::InBps => &mut s.in_bps,
            StatsAttr::OutBps => &mut s.out_bps,
            _ => continue,
        };
        *field = get_counter(a.nla_payload().as_ref(), "stats counter")?;
    }
    Ok(s)
}

/// Decodes the `GET_CONFIG` reply. A kernel built without TCP or UDP
/// support omits those; they read as 0.
pub(crate) fn decode_timeouts(attrs: &[u8]) -> Result<Timeouts, DecodeError> {
    let top = cmd_attrs(attrs)?;
    let get = |ty, what| -> Result<u32, DecodeError> {
        find(&top, ty).map(|p| get_u32(p, what)).unwrap_or(Ok(0))
    };
    Ok(Timeouts {
        tcp: get(CmdAttr::TimeoutTcp, "tcp timeout")?,
        tcp_fin: get(CmdAttr::TimeoutTcpFin, "tcpfin timeout")?,
        udp: get(CmdAttr::TimeoutUdp, "udp timeout")?,
    })
}

/// Decodes the `GET_INFO` reply.
pub(crate) fn decode_info(attrs: &[u8]) -> Result<Info, DecodeError> {
    let top: Attrs<InfoAttr> = parse_attrs(attrs)?;
    Ok(Info {
        version: get_u32(need(&top, InfoAttr::Version, "version")?, "version")?,
        conn_tab_size: get_u32(
            need(&top, InfoAttr::ConnTabSize, "connection table size")?,
            "connection table size",
        )?,
    })
}

/// Decodes the controller's reply to `encode_resolve`: the family id.
pub(crate) fn decode_family_id(attrs: &[u8]) -> Result<u16, DecodeError> {
    let top: Attrs<CtrlAttr> = parse_attrs(attrs)?;
    get_u16(need(&top, CtrlAttr::FamilyId, "family id")?, "family id")
}

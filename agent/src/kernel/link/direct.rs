//! One VIP route written on the caller's thread: a partial sync's few
//! routes go through kernel/'s own netlink socket, a request and its ack
//! per VIP, where neli's router hands every request and answer between
//! the caller and its reader thread (in the VM, under load, each hand-over
//! cost milliseconds). The full sync's thousands stay pipelined on the
//! router; its read of our VIP routes is one dump here, parsed in place
//! (through the router, 10k routes were 10k messages decoded into
//! attribute vectors and handed between threads).

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

use netlink_sys::protocols::NETLINK_ROUTE;

use crate::kernel::netlink::{
    begin, finish,
    frame::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST},
    nla::Attrs,
    Failure, Options, Socket, Writer,
};

use super::{vip_routes::VIP_ROUTE_PROTOCOL, LinkError};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
/// struct rtmsg's size: family, dst_len, src_len, tos, table, protocol,
/// scope, type, flags (u32).
const RTMSG_LEN: usize = 12;
const RT_TABLE_LOCAL: u8 = 255;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
/// A dump met a concurrent change this many times in a row: give up.
const DUMP_TRIES: usize = 3;

/// A socket answering on the thread that asks.
pub(super) fn open() -> Result<Socket, LinkError> {
    let opts = Options {
        rcvbuf: None,
        sndbuf: None,
        timeout: Duration::from_secs(10),
        datagram: 64 * 1024,
    };
    Socket::open(NETLINK_ROUTE, &opts).map_err(|e| LinkError::Netlink {
        op: "open",
        target: "NETLINK_ROUTE".into(),
        message: e.to_string(),
        errno: e.raw_os_error(),
    })
}

/// The VIPs of our routes on interface `index` (`local VIP/32 dev INDEX
/// table local proto 211`, or /128): one dump of the routes, read again
/// when it met a concurrent change.
pub(super) fn vip_routes(sock: &mut Socket, index: u32) -> Result<BTreeSet<IpAddr>, LinkError> {
    for _ in 0..DUMP_TRIES {
        let seq = sock.next_seq(1);
        let mut request = Vec::with_capacity(32);
        let start = begin(
            &mut request,
            RTM_GETROUTE,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            [0; 4],
        );
        request.extend_from_slice(&[0; RTMSG_LEN - 4]);
        finish(&mut request, start);
        let mut out = BTreeSet::new();
        let interrupted = sock
            .transact(&request, seq, false, |frame, _| {
                out.extend(our_route(frame.payload, index));
                Ok(())
            })
            .map_err(|f| failure("dump", "routes", f))?;
        if !interrupted {
            return Ok(out);
        }
    }
    Err(LinkError::Netlink {
        op: "dump",
        target: "routes".into(),
        message: format!("interrupted by changes {DUMP_TRIES} times in a row"),
        errno: None,
    })
}

/// The VIP of one RTM_NEWROUTE message, when the route is ours on `index`.
fn our_route(msg: &[u8], index: u32) -> Option<IpAddr> {
    let rtm = msg.get(..RTMSG_LEN)?;
    let (dst_len, mut table, protocol, kind) = (rtm[1], u32::from(rtm[4]), rtm[5], rtm[7]);
    if protocol != VIP_ROUTE_PROTOCOL || kind != RTN_LOCAL {
        return None;
    }
    let (mut oif, mut dst) = (None, None);
    for attr in Attrs::new(&msg[RTMSG_LEN..]) {
        let attr = attr.ok()?;
        match attr.ty {
            RTA_TABLE => table = attr.u32().ok()?,
            RTA_OIF => oif = Some(attr.u32().ok()?),
            RTA_DST => dst = Some(attr.payload),
            _ => {}
        }
    }
    if table != u32::from(RT_TABLE_LOCAL) || oif != Some(index) {
        return None;
    }
    match (dst?, dst_len) {
        (d, 32) => Some(IpAddr::from(<[u8; 4]>::try_from(d).ok()?)),
        (d, 128) => Some(IpAddr::from(<[u8; 16]>::try_from(d).ok()?)),
        _ => None,
    }
}

fn failure(op: &'static str, target: &str, f: Failure) -> LinkError {
    let (message, errno) = match f {
        Failure::Refused(r) => (
            r.extack
                .unwrap_or_else(|| std::io::Error::from_raw_os_error(r.errno).to_string()),
            Some(r.errno),
        ),
        Failure::Io(e) => (e.to_string(), e.raw_os_error()),
        Failure::Decode(e) => (e.to_string(), None),
    };
    LinkError::Netlink {
        op,
        target: target.into(),
        message,
        errno,
    }
}

/// Adds (or deletes) `local ADDR/32 dev INDEX table local proto 211 scope
/// host` (or /128) and waits for the kernel's ack.
pub(super) fn write_route(
    sock: &mut Socket,
    add: bool,
    index: u32,
    addr: IpAddr,
) -> Result<(), LinkError> {
    let seq = sock.next_seq(1);
    let request = route_request(seq, add, index, addr);
    sock.transact(&request, seq, false, |_, _| Ok(()))
        .map(|_| ())
        .map_err(|f| {
            let op = if add {
                "add local route"
            } else {
                "delete local route"
            };
            failure(op, &addr.to_string(), f)
        })
}

/// The `RTM_NEWROUTE` (create, exclusive) or `RTM_DELROUTE` message.
fn route_request(seq: u32, add: bool, index: u32, addr: IpAddr) -> Vec<u8> {
    let (family, prefix, dst) = match addr {
        IpAddr::V4(a) => (libc::AF_INET as u8, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (libc::AF_INET6 as u8, 128, a.octets().to_vec()),
    };
    let (ty, flags) = if add {
        (
            RTM_NEWROUTE,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        (RTM_DELROUTE, NLM_F_REQUEST | NLM_F_ACK)
    };
    let mut buf = Vec::with_capacity(64);
    // struct rtmsg: family, dst_len, src_len, tos | table, protocol,
    // scope, type | flags.
    let start = begin(&mut buf, ty, flags, seq, [family, prefix, 0, 0]);
    buf.extend_from_slice(&[RT_TABLE_LOCAL, VIP_ROUTE_PROTOCOL, RT_SCOPE_HOST, RTN_LOCAL]);
    buf.extend_from_slice(&0u32.to_ne_bytes());
    let mut attrs = Writer::new(&mut buf);
    attrs.put(RTA_DST, &dst);
    attrs.put_u32(RTA_OIF, index);
    finish(&mut buf, start);
    buf
}

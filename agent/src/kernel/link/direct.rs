//! One VIP route written on the caller's thread: a partial sync's few
//! routes go through kernel/'s own netlink socket, a request and its ack
//! per VIP, where neli's router hands every request and answer between
//! the caller and its reader thread (in the VM, under load, each hand-over
//! cost milliseconds). The full sync's thousands stay pipelined on the
//! router.

use std::{net::IpAddr, time::Duration};

use netlink_sys::protocols::NETLINK_ROUTE;

use crate::kernel::netlink::{
    begin, finish,
    frame::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST},
    Failure, Options, Socket, Writer,
};

use super::{vip_routes::VIP_ROUTE_PROTOCOL, LinkError};

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RT_TABLE_LOCAL: u8 = 255;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;

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
                target: addr.to_string(),
                message,
                errno,
            }
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

//! rtnetlink messages, both ways, on [`crate::kernel::netlink`]'s frame and
//! attribute codec: the fixed headers (`ifinfomsg`, `ifaddrmsg`, `rtmsg`)
//! and the few attributes kernel/link reads and writes. Pure bytes, so the
//! unit tests below need no root.

use std::net::IpAddr;

use libc::{
    IFA_ADDRESS, IFA_LOCAL, IFF_UP, IFLA_IFNAME, IFLA_INFO_KIND, IFLA_LINKINFO, RTA_DST, RTA_OIF,
    RTN_LOCAL, RT_SCOPE_HOST, RT_TABLE_LOCAL,
};

use crate::desired::Family;
use crate::kernel::netlink::{af, frame::ne_u32, Attr, Attrs, Writer};

/// `rtm_protocol` of ipwarden's VIP routes (`ip route show proto 211`);
/// unused by iproute2's `rt_protos` and by the routing daemons listed there.
pub(super) const VIP_ROUTE_PROTOCOL: u8 = 211;

/// `sizeof(struct ifinfomsg)`, `sizeof(struct ifaddrmsg)`,
/// `sizeof(struct rtmsg)`: where each message's attributes start.
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;

/// `struct ifinfomsg` (AF_UNSPEC) for interface `index`, setting IFF_UP
/// when `up` (an empty change mask leaves the flags alone).
pub(super) fn ifinfomsg(index: u32, up: bool) -> [u8; IFINFOMSG_LEN] {
    let flags = if up { IFF_UP as u32 } else { 0 };
    let mut h = [0u8; IFINFOMSG_LEN];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h[8..12].copy_from_slice(&flags.to_ne_bytes());
    h[12..16].copy_from_slice(&flags.to_ne_bytes());
    h
}

/// `struct ifaddrmsg` for a host address on interface `index`; without
/// an address, the zeroed one a dump of every family asks with.
pub(super) fn ifaddrmsg(index: u32, addr: Option<IpAddr>) -> [u8; IFADDRMSG_LEN] {
    let (family, prefix) = match addr {
        None => (0, 0),
        Some(a) => (family(a), host_prefix(a)),
    };
    let mut h = [family, prefix, 0, 0, 0, 0, 0, 0];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    h
}

/// `struct rtmsg` of a VIP route: `local ADDR/32 table local proto 211
/// scope host` (or /128); the zeroed one for a dump of every family.
pub(super) fn rtmsg(addr: Option<IpAddr>) -> [u8; RTMSG_LEN] {
    let Some(a) = addr else {
        return [0; RTMSG_LEN];
    };
    let mut h = [0u8; RTMSG_LEN];
    h[..2].copy_from_slice(&[family(a), host_prefix(a)]);
    h[4..8].copy_from_slice(&[RT_TABLE_LOCAL, VIP_ROUTE_PROTOCOL, RT_SCOPE_HOST, RTN_LOCAL]);
    h
}

/// The attributes of a VIP route: its destination and the dummy's index.
pub(super) fn route_attrs(index: u32, addr: IpAddr) -> impl FnOnce(&mut Writer) {
    move |w| {
        w.put_ip(RTA_DST, addr);
        w.put_u32(RTA_OIF, index);
    }
}

/// The attribute that names a host address (IFA_LOCAL) for its delete.
pub(super) fn address_attrs(addr: IpAddr) -> impl FnOnce(&mut Writer) {
    move |w| w.put_ip(IFA_LOCAL, addr)
}

/// The attributes that create interface `name` of `kind` (`dummy`, ...).
pub(super) fn link_attrs<'a>(name: &'a str, kind: &'a str) -> impl FnOnce(&mut Writer) + 'a {
    move |w| {
        w.put_str(IFLA_IFNAME, name);
        let info = w.nest_start(IFLA_LINKINFO);
        w.put_str(IFLA_INFO_KIND, kind);
        w.nest_end(info);
    }
}

/// (index, name) of an RTM_NEWLINK message's payload.
pub(super) fn link_of(payload: &[u8]) -> Option<(u32, String)> {
    let name = attrs(payload, IFINFOMSG_LEN)
        .find(|a| a.ty == IFLA_IFNAME)?
        .str()
        .ok()?
        .to_string();
    Some((ne_u32(payload.get(4..)?)?, name))
}

/// (interface index, address, prefix length) of an RTM_NEWADDR message's
/// payload. IFA_LOCAL is the local address (IFA_ADDRESS is the peer on
/// point-to-point links); IPv6 has only IFA_ADDRESS.
pub(super) fn address_of(payload: &[u8]) -> Option<(u32, IpAddr, u8)> {
    let (mut local, mut address) = (None, None);
    for a in attrs(payload, IFADDRMSG_LEN) {
        match a.ty {
            IFA_LOCAL => local = a.ip(),
            IFA_ADDRESS => address = a.ip(),
            _ => {}
        }
    }
    Some((
        ne_u32(payload.get(4..)?)?,
        local.or(address)?,
        *payload.get(1)?,
    ))
}

/// The VIP of an RTM_NEWROUTE message's payload when the route is one of
/// ours (local, table local, protocol 211, a host route) through `index`.
pub(super) fn our_vip(payload: &[u8], index: u32) -> Option<IpAddr> {
    let h = payload.get(..RTMSG_LEN)?;
    // Not the scope: the kernel reports every IPv6 route as universe.
    let (table, protocol, kind) = (h[4], h[5], h[7]);
    if (table, protocol, kind) != (RT_TABLE_LOCAL, VIP_ROUTE_PROTOCOL, RTN_LOCAL) {
        return None;
    }
    let (mut dst, mut oif) = (None, None);
    for a in attrs(payload, RTMSG_LEN) {
        match a.ty {
            RTA_DST => dst = a.ip(),
            RTA_OIF => oif = a.u32().ok(),
            _ => {}
        }
    }
    let dst = dst?;
    (oif? == index && h[1] == host_prefix(dst)).then_some(dst)
}

/// The attributes after a message's fixed header; a malformed one ends
/// the walk (what came before it is still read).
fn attrs(payload: &[u8], header: usize) -> impl Iterator<Item = Attr<'_>> {
    Attrs::new(payload.get(header..).unwrap_or_default()).map_while(Result::ok)
}

fn family(addr: IpAddr) -> u8 {
    af(Family::of(&addr))
}

fn host_prefix(addr: IpAddr) -> u8 {
    Family::of(&addr).host_prefix()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netlink::{
        frame::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST},
        frames, message as request,
    };

    fn payload_of(buf: &[u8]) -> Vec<u8> {
        frames(buf).next().unwrap().unwrap().payload.to_vec()
    }

    #[test]
    fn a_route_request_is_iproute2s_local_host_route() {
        let addr: IpAddr = "10.96.0.10".parse().unwrap();
        let mut buf = Vec::new();
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let header = rtmsg(Some(addr));
        request(&mut buf, (24, flags, 7), &header, route_attrs(3, addr));
        // What `strace ip route add local 10.96.0.10 dev d0 table local
        // proto 211` shows iproute2 send, d0 at index 3.
        let mut want = vec![44, 0, 0, 0, 24, 0, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0];
        want.extend([2, 32, 0, 0, 255, 211, 254, 2, 0, 0, 0, 0]);
        want.extend([8, 0, 1, 0, 10, 96, 0, 10, 8, 0, 4, 0]);
        want.extend(3u32.to_ne_bytes());
        assert_eq!(buf, want);
        assert_eq!(our_vip(&payload_of(&buf), 3), Some(addr));
        assert_eq!(our_vip(&payload_of(&buf), 4), None, "another interface");
    }

    #[test]
    fn only_our_protocol_and_host_routes_are_vips() {
        let addr: IpAddr = "fd00::11".parse().unwrap();
        let mut buf = Vec::new();
        let mut h = rtmsg(Some(addr));
        request(&mut buf, (24, 0, 1), &h, route_attrs(3, addr));
        assert_eq!(our_vip(&payload_of(&buf), 3), Some(addr));
        h[6] = 0; // as the kernel dumps IPv6 routes: scope universe
        buf.clear();
        request(&mut buf, (24, 0, 1), &h, route_attrs(3, addr));
        assert_eq!(our_vip(&payload_of(&buf), 3), Some(addr));
        for (at, other) in [(5, 2), (1, 64), (4, 254), (7, 1)] {
            h = rtmsg(Some(addr));
            h[at] = other; // proto kernel, a /64, table main, unicast
            buf.clear();
            request(&mut buf, (24, 0, 1), &h, route_attrs(3, addr));
            assert_eq!(our_vip(&payload_of(&buf), 3), None, "byte {at} = {other}");
        }
    }

    #[test]
    fn links_and_addresses_are_read_from_their_headers_and_attributes() {
        let mut buf = Vec::new();
        request(
            &mut buf,
            (16, 0, 1),
            &ifinfomsg(5, true),
            link_attrs("ipw0", "dummy"),
        );
        assert_eq!(link_of(&payload_of(&buf)), Some((5, "ipw0".into())));

        let addr: IpAddr = "192.168.56.10".parse().unwrap();
        let peer: IpAddr = "192.168.56.1".parse().unwrap();
        buf.clear();
        request(&mut buf, (20, 0, 1), &ifaddrmsg(9, Some(addr)), |w| {
            w.put_ip(IFA_ADDRESS, peer);
            w.put_ip(IFA_LOCAL, addr);
        });
        assert_eq!(address_of(&payload_of(&buf)), Some((9, addr, 32)));
        assert_eq!(address_of(&[1, 2, 3]), None, "truncated: no panic");
    }
}

//! The VIPs as local routes on the dummy: `ip route add local VIP/32 dev
//! ipwarden0 table local proto 211` (and `/128`). A local route is all IPVS
//! needs (it sees whatever the routing sends to LOCAL_IN), and inserting one
//! into the fib trie costs the same beside 10 VIPs or 10k, where an
//! address's add walks the interface's address list and queues a walk of
//! every IPv4 address of the host (quadratic: 44 s for 10k in the VM).
//! Our routes carry their own protocol number, so a read-back or a delete
//! never takes a local route of the kernel's (a node address) for ours.

use std::{
    collections::{BTreeSet, VecDeque},
    net::IpAddr,
};

use neli::{
    consts::{
        nl::NlmF,
        rtnl::{Ifa, RtAddrFamily, RtScope, RtTable, Rta, Rtm, Rtn, Rtprot},
    },
    nl::{NlPayload, Nlmsghdr},
    router::synchronous::NlRouterReceiverHandle,
    rtnl::{IfaddrmsgBuilder, RtattrBuilder, Rtmsg, RtmsgBuilder},
    types::{Buffer, RtBuffer},
};

use super::{build_err, err, AddressReport, LinkClient, LinkError};

/// `rtm_protocol` of ipwarden's VIP routes (`ip route show proto 211`);
/// unused by iproute2's `rt_protos` and by the routing daemons listed there.
pub const VIP_ROUTE_PROTOCOL: u8 = 211;

/// Requests sent ahead of their answers: their acks (about 1 KiB each with
/// the buffer's overhead) must fit the default receive buffer (ENOBUFS
/// failed whole full syncs).
const IN_FLIGHT: usize = 64;

/// One write for a VIP on the dummy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    AddRoute,
    DeleteRoute,
    /// An address left by an agent from before VIPs were routes.
    DeleteAddress,
}

impl Write {
    fn what(self) -> &'static str {
        match self {
            Write::AddRoute => "add local route",
            Write::DeleteRoute => "delete local route",
            Write::DeleteAddress => "delete address",
        }
    }

    /// The errno that means "already done": the VIP was local already (a
    /// node address's own route, or ours) or gone already.
    fn already(self) -> i32 {
        match self {
            Write::AddRoute => libc::EEXIST,
            Write::DeleteRoute => libc::ESRCH,
            Write::DeleteAddress => libc::EADDRNOTAVAIL,
        }
    }
}

impl LinkClient {
    /// The VIPs the dummy `name` serves: our local routes on it, and any
    /// address on it (an older agent's VIPs, removed by the next full sync).
    pub fn vips(&self, name: &str) -> Result<BTreeSet<IpAddr>, LinkError> {
        let Some(index) = self.index_of(name)? else {
            return Ok(BTreeSet::new());
        };
        let mut out = self.vip_routes(index)?;
        out.extend(self.vip_addresses(index)?);
        Ok(out)
    }

    /// Makes the dummy `name` (created if missing) serve exactly `wanted`,
    /// each as a local route of ours; deletes the addresses an older agent
    /// put there. A VIP that is local already by someone else's route (a
    /// node address used as an externalIP) is left to that route.
    pub fn sync_vips(
        &self,
        name: &str,
        wanted: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, LinkError> {
        let (index, created_link) = self.ensure_dummy(name)?;
        let mut report = self.sync_vips_at(index, wanted)?;
        report.created_link = created_link;
        Ok(report)
    }

    /// [`LinkClient::sync_vips`] on the dummy at `index`, known to exist.
    pub fn sync_vips_at(
        &self,
        index: u32,
        wanted: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, LinkError> {
        let have = self.vip_routes(index)?;
        let legacy = self.vip_addresses(index)?;
        let writes = legacy
            .iter()
            .map(|a| (Write::DeleteAddress, *a))
            .chain(have.difference(wanted).map(|a| (Write::DeleteRoute, *a)))
            .chain(wanted.difference(&have).map(|a| (Write::AddRoute, *a)));
        let mut report = self.write_vips(index, writes)?;
        // An address replaced by a route is no VIP removed.
        report.removed.retain(|a| !wanted.contains(a));
        Ok(report)
    }

    /// Adds `add` to and deletes `del` from the dummy `name` (created if
    /// missing), reading nothing else: a VIP local already or gone already
    /// is left out of the report, so it lists exactly what was written. For
    /// a partial sync; a full one uses [`LinkClient::sync_vips`].
    pub fn change_vips(
        &self,
        name: &str,
        add: &BTreeSet<IpAddr>,
        del: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, LinkError> {
        let (index, created_link) = self.ensure_dummy(name)?;
        let mut report = self.change_vips_at(index, add, del)?;
        report.created_link = created_link;
        Ok(report)
    }

    /// [`LinkClient::change_vips`] on the dummy at `index` (from the last
    /// full sync): one request per VIP and nothing else, no dump of the
    /// links, each answered on this thread. Fails with ENODEV when that
    /// interface is gone.
    pub fn change_vips_at(
        &self,
        index: u32,
        add: &BTreeSet<IpAddr>,
        del: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, LinkError> {
        let mut sock = self.direct.lock().unwrap_or_else(|p| p.into_inner());
        let mut report = AddressReport::default();
        let writes = add
            .iter()
            .map(|a| (Write::AddRoute, *a))
            .chain(del.iter().map(|a| (Write::DeleteRoute, *a)));
        for (write, addr) in writes {
            let added = write == Write::AddRoute;
            match super::direct::write_route(&mut sock, added, index, addr) {
                Err(LinkError::Netlink { errno: Some(n), .. }) if n == write.already() => {}
                Err(e) => return Err(e),
                Ok(()) if added => report.added.push(addr),
                Ok(()) => report.removed.push(addr),
            }
        }
        Ok(report)
    }

    /// The destinations of our local routes through interface `index`.
    fn vip_routes(&self, index: u32) -> Result<BTreeSet<IpAddr>, LinkError> {
        let msg = RtmsgBuilder::default()
            .rtm_family(RtAddrFamily::Unspecified)
            .rtm_dst_len(0)
            .rtm_src_len(0)
            .rtm_tos(0)
            .rtm_table(RtTable::Unspec)
            .rtm_protocol(Rtprot::Unspec)
            .rtm_scope(RtScope::Universe)
            .rtm_type(Rtn::Unspec)
            .build()
            .map_err(|e| build_err("dump", "routes", e))?;
        let recv = self
            .rtnl
            .send::<Rtm, Rtmsg, Rtm, Rtmsg>(Rtm::Getroute, NlmF::DUMP, NlPayload::Payload(msg))
            .map_err(err("dump", "routes"))?;
        let mut out = BTreeSet::new();
        for r in recv {
            let r: Nlmsghdr<Rtm, Rtmsg> = r.map_err(err("dump", "routes"))?;
            if let NlPayload::Payload(route) = r.nl_payload() {
                out.extend(our_vip(route, index));
            }
        }
        Ok(out)
    }

    /// The addresses on interface `index` but the kernel's IPv6 link-local.
    fn vip_addresses(&self, index: u32) -> Result<BTreeSet<IpAddr>, LinkError> {
        Ok(self
            .addresses()?
            .into_iter()
            .filter(|(i, _, _)| *i == index)
            .map(|(_, a, _)| a)
            .filter(|a| !matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80))
            .collect())
    }

    /// Sends `writes` on interface `index`, at most [`IN_FLIGHT`] ahead of
    /// the answers read: pipelined, 10k VIPs cost a few round trips' wait.
    /// Reports what was written; "already done" answers are left out.
    fn write_vips(
        &self,
        index: u32,
        writes: impl IntoIterator<Item = (Write, IpAddr)>,
    ) -> Result<AddressReport, LinkError> {
        let mut report = AddressReport::default();
        let mut answered = |write: Write, addr: IpAddr, answers| {
            match (first_error(write, addr, answers), write) {
                (Err(LinkError::Netlink { errno: Some(n), .. }), _) if n == write.already() => {}
                (Err(e), _) => return Err(e),
                (Ok(()), Write::AddRoute) => report.added.push(addr),
                (Ok(()), _) => report.removed.push(addr),
            }
            Ok(())
        };
        let mut pending = VecDeque::new();
        for (write, addr) in writes {
            if pending.len() == IN_FLIGHT {
                let (w, a, answers) = pending.pop_front().expect("a full window");
                answered(w, a, answers)?;
            }
            pending.push_back((write, addr, self.send_write(write, index, addr)?));
        }
        for (w, a, answers) in pending {
            answered(w, a, answers)?;
        }
        report.removed.sort();
        report.removed.dedup();
        Ok(report)
    }

    fn send_write(
        &self,
        write: Write,
        index: u32,
        addr: IpAddr,
    ) -> Result<NlRouterReceiverHandle<Rtm, Buffer>, LinkError> {
        let target = addr.to_string();
        match write {
            Write::AddRoute => self
                .rtnl
                .send::<Rtm, Rtmsg, Rtm, Buffer>(
                    Rtm::Newroute,
                    NlmF::CREATE | NlmF::EXCL | NlmF::ACK,
                    NlPayload::Payload(route_message(index, addr)?),
                )
                .map_err(err(write.what(), &target)),
            Write::DeleteRoute => self
                .rtnl
                .send::<Rtm, Rtmsg, Rtm, Buffer>(
                    Rtm::Delroute,
                    NlmF::ACK,
                    NlPayload::Payload(route_message(index, addr)?),
                )
                .map_err(err(write.what(), &target)),
            Write::DeleteAddress => {
                let (family, prefix, bytes) = family_of(addr);
                let mut attrs = RtBuffer::<Ifa, Buffer>::new();
                attrs.push(attr(Ifa::Local, bytes, &target)?);
                let msg = IfaddrmsgBuilder::default()
                    .ifa_family(family)
                    .ifa_prefixlen(prefix)
                    .ifa_scope(RtScope::Universe)
                    .ifa_index(index)
                    .rtattrs(attrs)
                    .build()
                    .map_err(|e| build_err("address", &target, e))?;
                self.rtnl
                    .send::<Rtm, _, Rtm, Buffer>(Rtm::Deladdr, NlmF::ACK, NlPayload::Payload(msg))
                    .map_err(err(write.what(), &target))
            }
        }
    }
}

/// `local ADDR/32 dev INDEX table local proto 211 scope host` (or /128).
fn route_message(index: u32, addr: IpAddr) -> Result<Rtmsg, LinkError> {
    let target = addr.to_string();
    let (family, prefix, bytes) = family_of(addr);
    let mut attrs = RtBuffer::<Rta, Buffer>::new();
    attrs.push(attr(Rta::Dst, bytes, &target)?);
    attrs.push(attr(Rta::Oif, index.to_ne_bytes().to_vec(), &target)?);
    RtmsgBuilder::default()
        .rtm_family(family)
        .rtm_dst_len(prefix)
        .rtm_src_len(0)
        .rtm_tos(0)
        .rtm_table(RtTable::Local)
        .rtm_protocol(Rtprot::from(VIP_ROUTE_PROTOCOL))
        .rtm_scope(RtScope::Host)
        .rtm_type(Rtn::Local)
        .rtattrs(attrs)
        .build()
        .map_err(|e| build_err("route", &target, e))
}

/// The VIP of `route` when it is one of ours through interface `index`.
fn our_vip(route: &Rtmsg, index: u32) -> Option<IpAddr> {
    let ours = u8::from(*route.rtm_protocol()) == VIP_ROUTE_PROTOCOL
        && *route.rtm_table() == RtTable::Local
        && *route.rtm_type() == Rtn::Local;
    if !ours {
        return None;
    }
    let attrs = route.rtattrs().get_attr_handle();
    let oif: &[u8] = attrs.get_attribute(Rta::Oif)?.rta_payload().as_ref();
    if u32::from_ne_bytes(oif.try_into().ok()?) != index {
        return None;
    }
    let dst: &[u8] = attrs.get_attribute(Rta::Dst)?.rta_payload().as_ref();
    match (dst.len(), *route.rtm_dst_len()) {
        (4, 32) => Some(IpAddr::from(<[u8; 4]>::try_from(dst).ok()?)),
        (16, 128) => Some(IpAddr::from(<[u8; 16]>::try_from(dst).ok()?)),
        _ => None,
    }
}

fn family_of(addr: IpAddr) -> (RtAddrFamily, u8, Vec<u8>) {
    match addr {
        IpAddr::V4(a) => (RtAddrFamily::Inet, 32, a.octets().to_vec()),
        IpAddr::V6(a) => (RtAddrFamily::Inet6, 128, a.octets().to_vec()),
    }
}

fn attr<T: neli::consts::rtnl::RtaType>(
    ty: T,
    payload: Vec<u8>,
    target: &str,
) -> Result<neli::rtnl::Rtattr<T, Buffer>, LinkError> {
    RtattrBuilder::default()
        .rta_type(ty)
        .rta_payload(Buffer::from(payload))
        .build()
        .map_err(|e| build_err("route", target, e))
}

/// The first error among one request's answers.
fn first_error(
    write: Write,
    addr: IpAddr,
    answers: NlRouterReceiverHandle<Rtm, Buffer>,
) -> Result<(), LinkError> {
    for r in answers {
        r.map_err(err(write.what(), addr))?;
    }
    Ok(())
}

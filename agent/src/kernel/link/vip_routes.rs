//! The VIPs as local routes on the dummy: `ip route add local VIP/32 dev
//! ipwarden0 table local proto 211` (and `/128`). A local route is all IPVS
//! needs (it sees whatever the routing sends to LOCAL_IN), and inserting one
//! into the fib trie costs the same beside 10 VIPs or 10k, where an
//! address's add walks the interface's address list and queues a walk of
//! every IPv4 address of the host (quadratic: 44 s for 10k in the VM).
//! Our routes carry their own protocol number, so a read-back or a delete
//! never takes a local route of the kernel's (a node address) for ours.

use std::{collections::BTreeSet, net::IpAddr};

use libc::{RTM_DELADDR, RTM_DELROUTE, RTM_GETROUTE, RTM_NEWROUTE};

use super::{err, message, AddressReport, LinkClient, LinkError};
use crate::kernel::netlink::{
    self,
    frame::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST},
    Failure, Refusal,
};

/// Every write is a request that wants its ack.
const ACK: u16 = NLM_F_REQUEST | NLM_F_ACK;
use crate::locks::LockOrRecover;

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

    /// Appends the request to `buf`.
    fn request(self, buf: &mut Vec<u8>, seq: u32, index: u32, addr: IpAddr) {
        let route = message::rtmsg(Some(addr));
        match self {
            Write::AddRoute => {
                let flags = ACK | NLM_F_CREATE | NLM_F_EXCL;
                let attrs = message::route_attrs(index, addr);
                netlink::message(buf, (RTM_NEWROUTE, flags, seq), &route, attrs)
            }
            Write::DeleteRoute => {
                let attrs = message::route_attrs(index, addr);
                netlink::message(buf, (RTM_DELROUTE, ACK, seq), &route, attrs)
            }
            Write::DeleteAddress => {
                let header = message::ifaddrmsg(index, Some(addr));
                let attrs = message::address_attrs(addr);
                netlink::message(buf, (RTM_DELADDR, ACK, seq), &header, attrs)
            }
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
    /// links. Fails with ENODEV when that interface is gone.
    pub fn change_vips_at(
        &self,
        index: u32,
        add: &BTreeSet<IpAddr>,
        del: &BTreeSet<IpAddr>,
    ) -> Result<AddressReport, LinkError> {
        let writes = add
            .iter()
            .map(|a| (Write::AddRoute, *a))
            .chain(del.iter().map(|a| (Write::DeleteRoute, *a)));
        self.write_vips(index, writes)
    }

    /// The destinations of our local routes through interface `index`.
    fn vip_routes(&self, index: u32) -> Result<BTreeSet<IpAddr>, LinkError> {
        let header = message::rtmsg(None);
        let routes = self.dump((RTM_GETROUTE, &header), "routes", |p| {
            message::our_vip(p, index)
        })?;
        Ok(routes.into_iter().collect())
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

    /// Sends `writes` on interface `index`, a batch to a datagram: 10k
    /// VIPs cost a few round trips. Reports what was written; "already
    /// done" answers are left out, any other refusal is the error.
    fn write_vips(
        &self,
        index: u32,
        writes: impl IntoIterator<Item = (Write, IpAddr)>,
    ) -> Result<AddressReport, LinkError> {
        let writes: Vec<_> = writes.into_iter().collect();
        let mut report = AddressReport::default();
        for batch in writes.chunks(self.batch) {
            for (&(write, addr), answer) in batch.iter().zip(self.send_batch(index, batch)?) {
                match answer {
                    Ok(()) if write == Write::AddRoute => report.added.push(addr),
                    Ok(()) => report.removed.push(addr),
                    Err(r) if r.errno == write.already() => {}
                    Err(r) => return Err(LinkError::new(write.what(), addr, Failure::Refused(r))),
                }
            }
        }
        report.removed.sort();
        report.removed.dedup();
        Ok(report)
    }

    /// Sends `writes` in one datagram and returns the kernel's answer to
    /// each, in order (the kernel carries on past a refusal).
    fn send_batch(
        &self,
        index: u32,
        writes: &[(Write, IpAddr)],
    ) -> Result<Vec<Result<(), Refusal>>, LinkError> {
        let mut sock = self.sock.lock_or_recover();
        let first = sock.next_seq(writes.len());
        let mut buf = Vec::with_capacity(64 * writes.len());
        for (i, (write, addr)) in writes.iter().enumerate() {
            let seq = first.wrapping_add(i as u32);
            write.request(&mut buf, seq, index, *addr);
        }
        let mut answers = vec![Ok(()); writes.len()];
        sock.batch(&buf, first, vec![true; writes.len()], |i, _, answer| {
            answers[i] = answer;
            true
        })
        .map_err(err("write", format!("{} VIPs", writes.len())))?;
        Ok(answers)
    }
}

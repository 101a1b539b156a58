//! The dummy interface `ipwarden0` and the VIPs on it (local routes, see
//! [`vip_routes`]), over rtnetlink, plus the node's own addresses for
//! `ipwarden-local-ips`. Equivalent to `ip link add ipwarden0 type dummy`,
//! `ip route add local VIP dev ipwarden0 table local proto 211`.
//! Everything goes through [`crate::kernel::netlink`]'s socket on the
//! caller's thread: dumps read to their end, a full sync's thousands of
//! routes in batches whose acks are filed by sequence number.

mod message;
mod vip_routes;
mod watch;

pub use watch::AddressWatch;

use std::{net::IpAddr, sync::Mutex, time::Duration};

use libc::{RTM_DELLINK, RTM_GETADDR, RTM_GETLINK, RTM_NEWLINK};
use netlink_sys::protocols::NETLINK_ROUTE;

use crate::{
    kernel::netlink::{
        self,
        frame::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST},
        Failure, Options, Socket, Writer,
    },
    locks::LockOrRecover,
};

/// The kernel doubles the receive buffer asked for; a batch's acks must
/// fit in it before we read (ENOBUFS once failed whole full syncs).
const SOCKET: Options = Options {
    rcvbuf: Some(1 << 20),
    sndbuf: None,
    timeout: Duration::from_secs(10),
    datagram: 64 * 1024,
};

/// Most route requests in one datagram (about 60 KiB of them).
const MAX_BATCH: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("rtnetlink {op} {target}: {message}")]
    Netlink {
        op: &'static str,
        target: String,
        message: String,
        /// The kernel's errno, when it answered with one.
        errno: Option<i32>,
    },
}

impl LinkError {
    fn new(op: &'static str, target: impl ToString, failure: Failure) -> Self {
        LinkError::Netlink {
            op,
            target: target.to_string(),
            errno: failure.errno(),
            message: failure.to_string(),
        }
    }
}

fn err(op: &'static str, target: impl ToString) -> impl FnOnce(Failure) -> LinkError {
    move |f| LinkError::new(op, target, f)
}

/// What a sync changed on the interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressReport {
    pub created_link: bool,
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
}

/// An rtnetlink socket in the calling thread's network namespace.
pub struct LinkClient {
    sock: Mutex<Socket>,
    /// Route requests per datagram.
    batch: usize,
}

impl LinkClient {
    pub fn connect() -> Result<Self, LinkError> {
        let sock = Socket::open(NETLINK_ROUTE, &SOCKET)
            .map_err(|e| LinkError::new("open", "NETLINK_ROUTE", Failure::Io(e)))?;
        Ok(Self {
            batch: sock.acks_room(MAX_BATCH),
            sock: Mutex::new(sock),
        })
    }

    /// Sends one request (`header`, then what `attrs` writes) and hands
    /// the payload of each answer to `on_data`, until its ack or the end
    /// of its dump.
    fn exchange(
        &self,
        (ty, flags): (u16, u16),
        header: &[u8],
        attrs: impl FnOnce(&mut Writer),
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(), Failure> {
        let mut sock = self.sock.lock_or_recover();
        let seq = sock.next_seq(1);
        let mut buf = Vec::new();
        netlink::message(&mut buf, (ty, flags | NLM_F_REQUEST, seq), header, attrs);
        sock.transact(&buf, seq, false, |frame, _| {
            on_data(frame.payload);
            Ok(())
        })
        .map(drop)
    }

    /// A dump of `ty`: what `parse` reads from each message of it.
    fn dump<T>(
        &self,
        (ty, header): (u16, &[u8]),
        what: &'static str,
        parse: impl Fn(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, LinkError> {
        let mut out = Vec::new();
        let mut on_data = |p: &[u8]| out.extend(parse(p));
        self.exchange((ty, NLM_F_DUMP), header, |_| {}, &mut on_data)
            .map_err(err("dump", what))?;
        Ok(out)
    }

    /// (index, name) of every interface.
    pub fn links(&self) -> Result<Vec<(u32, String)>, LinkError> {
        let header = message::ifinfomsg(0, false);
        self.dump((RTM_GETLINK, &header), "links", message::link_of)
    }

    pub fn index_of(&self, name: &str) -> Result<Option<u32>, LinkError> {
        Ok(self
            .links()?
            .into_iter()
            .find(|(_, n)| n == name)
            .map(|(i, _)| i))
    }

    /// Creates the dummy interface `name` if missing and sets it up;
    /// returns its index and whether it was created. On a kernel built
    /// without the dummy driver, a bridge without ports stands in: it holds
    /// local addresses the same way and forwards nothing.
    pub fn ensure_dummy(&self, name: &str) -> Result<(u32, bool), LinkError> {
        let created = match self.index_of(name)? {
            Some(_) => false,
            None => {
                match self.create(name, "dummy") {
                    Err(LinkError::Netlink {
                        errno: Some(libc::EOPNOTSUPP),
                        ..
                    }) => {
                        tracing::warn!(
                            interface = name,
                            "the kernel has no dummy driver; using a bridge without ports for the VIPs"
                        );
                        self.create(name, "bridge")?
                    }
                    other => other?,
                }
                true
            }
        };
        let index = self.index_of(name)?.ok_or_else(|| LinkError::Netlink {
            op: "create",
            target: name.to_string(),
            message: "link vanished after creation".into(),
            errno: None,
        })?;
        let up = message::ifinfomsg(index, true);
        self.exchange((RTM_NEWLINK, NLM_F_ACK), &up, |_| {}, |_| {})
            .map_err(err("set link up", name))?;
        Ok((index, created))
    }

    fn create(&self, name: &str, kind: &str) -> Result<(), LinkError> {
        let flags = NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let header = message::ifinfomsg(0, true);
        let attrs = message::link_attrs(name, kind);
        self.exchange((RTM_NEWLINK, flags), &header, attrs, |_| {})
            .map_err(err("create link", name))
    }

    /// Deletes interface `name`; Ok(false) if it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool, LinkError> {
        let Some(index) = self.index_of(name)? else {
            return Ok(false);
        };
        let header = message::ifinfomsg(index, false);
        self.exchange((RTM_DELLINK, NLM_F_ACK), &header, |_| {}, |_| {})
            .map_err(err("delete link", name))?;
        Ok(true)
    }

    /// (interface index, address, prefix length) of every address.
    pub fn addresses(&self) -> Result<Vec<(u32, IpAddr, u8)>, LinkError> {
        let header = message::ifaddrmsg(0, None);
        self.dump((RTM_GETADDR, &header), "addresses", message::address_of)
    }

    /// Addresses of every interface except `exclude` (the dummy).
    pub fn local_addresses(&self, exclude: &str) -> Result<Vec<IpAddr>, LinkError> {
        self.local_addresses_except(self.index_of(exclude)?)
    }

    fn local_addresses_except(&self, skip: Option<u32>) -> Result<Vec<IpAddr>, LinkError> {
        let mut out: Vec<IpAddr> = self
            .addresses()?
            .into_iter()
            .filter(|(i, _, _)| Some(*i) != skip)
            .map(|(_, a, _)| a)
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The addresses of every interface but `watch`'s dummy, dumped only
    /// when `watch` heard of a change on another interface (or lost
    /// notifications): a sync need not dump the dummy's thousands of VIPs
    /// to learn the few node addresses.
    pub fn watched_addresses(&self, watch: &mut AddressWatch) -> Result<Vec<IpAddr>, LinkError> {
        if let Some(addrs) = watch.fresh() {
            return Ok(addrs);
        }
        let skip = self.index_of(watch.exclude())?;
        let addrs = self.local_addresses_except(skip)?;
        watch.remember(skip, addrs.clone());
        Ok(addrs)
    }
}

//! The dummy interface `ipwarden0` and the VIPs on it (local routes, see
//! [`vip_routes`]), over rtnetlink (neli), plus the node's own addresses for
//! `ipwarden-local-ips`. Equivalent to `ip link add ipwarden0 type dummy`,
//! `ip route add local VIP dev ipwarden0 table local proto 211`.
//! Still neli's router rather than [`crate::kernel::netlink`]'s socket: it
//! pipelines 10k route requests through its reader thread.

mod direct;
mod vip_routes;

pub use vip_routes::VIP_ROUTE_PROTOCOL;

use std::net::IpAddr;

use crate::kernel::netlink::frames;

use neli::{
    consts::{
        nl::NlmF,
        rtnl::{Ifa, Ifla, IflaInfo, RtAddrFamily, RtScope, Rtm},
        socket::NlFamily,
    },
    err::RouterError,
    nl::{NlPayload, Nlmsghdr},
    router::synchronous::NlRouter,
    rtnl::{Ifaddrmsg, IfaddrmsgBuilder, Ifinfomsg, IfinfomsgBuilder, RtattrBuilder},
    types::{Buffer, RtBuffer},
    utils::Groups,
};

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

/// What a sync changed on the interface.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressReport {
    pub created_link: bool,
    pub added: Vec<IpAddr>,
    pub removed: Vec<IpAddr>,
}

/// rtnetlink sockets in the calling thread's network namespace.
pub struct LinkClient {
    rtnl: NlRouter,
    /// For a partial sync's few routes: answered on the asking thread.
    direct: std::sync::Mutex<crate::kernel::netlink::Socket>,
}

fn err<T: std::fmt::Debug, P: std::fmt::Debug>(
    op: &'static str,
    target: impl ToString,
) -> impl FnOnce(RouterError<T, P>) -> LinkError {
    move |e| {
        let errno = match &e {
            RouterError::Nlmsgerr(m) => Some(-*m.error()),
            _ => None,
        };
        let message = match errno {
            Some(n) => std::io::Error::from_raw_os_error(n).to_string(),
            None => format!("{e:?}"),
        };
        LinkError::Netlink {
            op,
            target: target.to_string(),
            message,
            errno,
        }
    }
}

fn build_err(op: &'static str, target: &str, e: impl std::fmt::Display) -> LinkError {
    LinkError::Netlink {
        op,
        target: target.to_string(),
        message: e.to_string(),
        errno: None,
    }
}

impl LinkClient {
    pub fn connect() -> Result<Self, LinkError> {
        let (rtnl, _) = NlRouter::connect(NlFamily::Route, None, Groups::empty())
            .map_err(|e| build_err("connect", "NETLINK_ROUTE", e))?;
        Ok(Self {
            rtnl,
            direct: std::sync::Mutex::new(direct::open()?),
        })
    }

    /// (index, name) of every interface.
    pub fn links(&self) -> Result<Vec<(u32, String)>, LinkError> {
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .build()
            .map_err(|e| build_err("dump", "links", e))?;
        let recv = self
            .rtnl
            .send::<Rtm, Ifinfomsg, Rtm, Ifinfomsg>(
                Rtm::Getlink,
                NlmF::DUMP,
                NlPayload::Payload(msg),
            )
            .map_err(err("dump", "links"))?;
        let mut out = Vec::new();
        for r in recv {
            let r: Nlmsghdr<Rtm, Ifinfomsg> = r.map_err(err("dump", "links"))?;
            if let NlPayload::Payload(info) = r.nl_payload() {
                let name = info
                    .rtattrs()
                    .get_attr_handle()
                    .get_attr_payload_as_with_len::<String>(Ifla::Ifname)
                    .unwrap_or_default();
                out.push((
                    *info.ifi_index() as u32,
                    name.trim_end_matches('\0').to_string(),
                ));
            }
        }
        Ok(out)
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
        let index = self
            .index_of(name)?
            .ok_or_else(|| build_err("create", name, "link vanished after creation"))?;
        let up = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(index as i32)
            .up()
            .build()
            .map_err(|e| build_err("set up", name, e))?;
        self.ack(Rtm::Newlink, NlmF::empty(), up, "set link up", name)?;
        Ok((index, created))
    }

    fn create(&self, name: &str, kind: &str) -> Result<(), LinkError> {
        let mut info = RtBuffer::<IflaInfo, Buffer>::new();
        info.push(
            RtattrBuilder::default()
                .rta_type(IflaInfo::Kind)
                .rta_payload(format!("{kind}\0"))
                .build()
                .map_err(|e| build_err("create", name, e))?,
        );
        let mut attrs = RtBuffer::<Ifla, Buffer>::new();
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Ifname)
                .rta_payload(format!("{name}\0"))
                .build()
                .map_err(|e| build_err("create", name, e))?,
        );
        attrs.push(
            RtattrBuilder::default()
                .rta_type(Ifla::Linkinfo)
                .rta_payload(info)
                .build()
                .map_err(|e| build_err("create", name, e))?,
        );
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .rtattrs(attrs)
            .up()
            .build()
            .map_err(|e| build_err("create", name, e))?;
        self.ack(
            Rtm::Newlink,
            NlmF::CREATE | NlmF::EXCL,
            msg,
            "create link",
            name,
        )
    }

    /// Deletes interface `name`; Ok(false) if it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool, LinkError> {
        let Some(index) = self.index_of(name)? else {
            return Ok(false);
        };
        let msg = IfinfomsgBuilder::default()
            .ifi_family(RtAddrFamily::Unspecified)
            .ifi_index(index as i32)
            .build()
            .map_err(|e| build_err("delete", name, e))?;
        self.ack(Rtm::Dellink, NlmF::empty(), msg, "delete link", name)?;
        Ok(true)
    }

    /// (interface index, address, prefix length) of every address.
    pub fn addresses(&self) -> Result<Vec<(u32, IpAddr, u8)>, LinkError> {
        let msg = IfaddrmsgBuilder::default()
            .ifa_family(RtAddrFamily::Unspecified)
            .ifa_prefixlen(0)
            .ifa_scope(RtScope::Universe)
            .ifa_index(0)
            .build()
            .map_err(|e| build_err("dump", "addresses", e))?;
        let recv = self
            .rtnl
            .send::<Rtm, Ifaddrmsg, Rtm, Ifaddrmsg>(
                Rtm::Getaddr,
                NlmF::DUMP,
                NlPayload::Payload(msg),
            )
            .map_err(err("dump", "addresses"))?;
        let mut out = Vec::new();
        for r in recv {
            let r: Nlmsghdr<Rtm, Ifaddrmsg> = r.map_err(err("dump", "addresses"))?;
            let NlPayload::Payload(a) = r.nl_payload() else {
                continue;
            };
            let attrs = a.rtattrs().get_attr_handle();
            // IFA_LOCAL is the local address (IFA_ADDRESS is the peer on
            // point-to-point links); IPv6 has only IFA_ADDRESS.
            let raw = attrs
                .get_attribute(Ifa::Local)
                .or_else(|| attrs.get_attribute(Ifa::Address));
            let Some(raw) = raw else { continue };
            let bytes: &[u8] = raw.rta_payload().as_ref();
            let addr = match bytes.len() {
                4 => IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default()),
                16 => IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap_or_default()),
                _ => continue,
            };
            out.push((*a.ifa_index(), addr, *a.ifa_prefixlen()));
        }
        Ok(out)
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
        let stale = watch.take_addresses_stale();
        match &watch.known {
            Some((_, addrs)) if !stale => Ok(addrs.clone()),
            _ => {
                let skip = self.index_of(&watch.exclude)?;
                let addrs = self.local_addresses_except(skip)?;
                watch.known = Some((skip, addrs.clone()));
                Ok(addrs)
            }
        }
    }

    /// Sends one request with NLM_F_ACK and waits for the kernel's answer.
    fn ack<P>(
        &self,
        ty: Rtm,
        flags: NlmF,
        msg: P,
        op: &'static str,
        target: &str,
    ) -> Result<(), LinkError>
    where
        P: neli::Size + neli::ToBytes + std::fmt::Debug,
    {
        let recv = self
            .rtnl
            .send::<Rtm, P, Rtm, Buffer>(ty, flags | NlmF::ACK, NlPayload::Payload(msg))
            .map_err(err(op, target))?;
        for r in recv {
            r.map_err(err(op, target))?;
        }
        Ok(())
    }
}

/// rtnetlink's link and address groups (RTNLGRP_LINK,
/// RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR).
const WATCHED_GROUPS: [u32; 3] = [1, 5, 9];
/// RTM_NEWADDR and RTM_DELADDR.
const ADDRESS_MESSAGES: [u16; 2] = [20, 21];
/// RTM_NEWLINK and RTM_DELLINK.
const LINK_MESSAGES: [u16; 2] = [16, 17];

/// A subscription to the link and address notifications of this network
/// namespace, with the addresses it last dumped.
pub struct AddressWatch {
    socket: neli::socket::NlSocket,
    /// The interface whose addresses are not the node's (the dummy).
    exclude: String,
    /// The dummy's index at the last dump, and the node's addresses then.
    known: Option<(Option<u32>, Vec<IpAddr>)>,
    /// Heard of another interface's address change since the last dump.
    addresses_stale: bool,
    /// Heard of a link added, changed or deleted since the last ask.
    links_changed: bool,
}

impl AddressWatch {
    /// Subscribes (before any dump, so no change falls between the two).
    pub fn subscribe(exclude: &str) -> Result<Self, LinkError> {
        let socket = neli::socket::NlSocket::connect(
            NlFamily::Route,
            None,
            Groups::new_groups(&WATCHED_GROUPS),
        )
        .and_then(|s| s.nonblock().map(|()| s))
        .map_err(|e| build_err("subscribe", "address notifications", e))?;
        Ok(Self {
            socket,
            exclude: exclude.to_string(),
            known: None,
            addresses_stale: false,
            links_changed: true,
        })
    }

    /// Whether a link was added, changed or deleted (or notifications were
    /// lost) since the last call: whoever follows the set of links (the
    /// tc attachments) dumps it only then.
    pub fn take_links_changed(&mut self) -> bool {
        self.drain();
        std::mem::take(&mut self.links_changed)
    }

    fn take_addresses_stale(&mut self) -> bool {
        self.drain();
        std::mem::take(&mut self.addresses_stale)
    }

    /// Reads every pending notification: the addresses are stale when one
    /// concerns another interface than the dummy; the links changed on a
    /// link message; both when some were lost (the buffer overflowed).
    fn drain(&mut self) {
        let dummy = self.known.as_ref().and_then(|(i, _)| *i);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self
                .socket
                .recv(&mut buf[..], neli::consts::socket::Msg::empty())
            {
                Ok((0, _)) => return,
                Ok((n, _)) => {
                    let got = &buf[..n];
                    self.addresses_stale |= address_indexes(got).any(|i| Some(i) != dummy);
                    self.links_changed |= has_link_message(got);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Lost notifications (ENOBUFS, read on) or worse.
                    self.addresses_stale = true;
                    self.links_changed = true;
                    if e.raw_os_error() != Some(libc::ENOBUFS) {
                        return;
                    }
                }
            }
        }
    }
}

/// Whether one datagram holds a link notification.
fn has_link_message(buf: &[u8]) -> bool {
    frames(buf)
        .map_while(Result::ok)
        .any(|f| LINK_MESSAGES.contains(&f.ty))
}

/// The interface index of each address message in one datagram.
fn address_indexes(buf: &[u8]) -> impl Iterator<Item = u32> + '_ {
    frames(buf)
        .map_while(Result::ok)
        .filter(|f| ADDRESS_MESSAGES.contains(&f.ty))
        // struct ifaddrmsg: family, prefixlen, flags, scope, then the index.
        .filter_map(|f| Some(u32::from_ne_bytes(f.payload.get(4..8)?.try_into().ok()?)))
}

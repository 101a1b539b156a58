//! A subscription to rtnetlink's link and address notifications: a sync
//! dumps the node's addresses only when one of another interface than the
//! dummy changed, and the links only when one came, changed or went.

use std::{io, net::IpAddr};

use libc::{
    ENOBUFS, RTM_DELADDR, RTM_DELLINK, RTM_NEWADDR, RTM_NEWLINK, RTNLGRP_IPV4_IFADDR,
    RTNLGRP_IPV6_IFADDR, RTNLGRP_LINK,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket};

use super::{Failure, LinkError};
use crate::kernel::netlink::{frame::ne_u32, frames};

/// A subscription to the link and address notifications of this network
/// namespace, with the addresses it last dumped.
pub struct AddressWatch {
    socket: Socket,
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
        let subscribe = || -> io::Result<Socket> {
            let mut socket = Socket::new(NETLINK_ROUTE)?;
            socket.bind_auto()?;
            for group in [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR] {
                socket.add_membership(group)?;
            }
            socket.set_non_blocking(true)?;
            Ok(socket)
        };
        let socket = subscribe()
            .map_err(|e| LinkError::new("subscribe", "notifications", Failure::Io(e)))?;
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

    /// The node's addresses of the last dump, unless an address changed
    /// since (then the caller dumps and [`AddressWatch::remember`]s).
    pub(super) fn fresh(&mut self) -> Option<Vec<IpAddr>> {
        self.drain();
        let stale = std::mem::take(&mut self.addresses_stale);
        match &self.known {
            Some((_, addrs)) if !stale => Some(addrs.clone()),
            _ => None,
        }
    }

    pub(super) fn exclude(&self) -> &str {
        &self.exclude
    }

    /// What a dump found: the dummy's index then, and the addresses.
    pub(super) fn remember(&mut self, dummy: Option<u32>, addrs: Vec<IpAddr>) {
        self.known = Some((dummy, addrs));
    }

    /// Reads every pending notification: the addresses are stale when one
    /// concerns another interface than the dummy; the links changed on a
    /// link message; both when some were lost (the buffer overflowed).
    fn drain(&mut self) {
        let dummy = self.known.as_ref().and_then(|(i, _)| *i);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match self.socket.recv(&mut &mut buf[..], 0) {
                Ok(0) => return,
                Ok(n) => {
                    for (ty, index) in notifications(&buf[..n.min(buf.len())]) {
                        self.links_changed |= [RTM_NEWLINK, RTM_DELLINK].contains(&ty);
                        self.addresses_stale |=
                            [RTM_NEWADDR, RTM_DELADDR].contains(&ty) && Some(index) != dummy;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Lost notifications (ENOBUFS, read on) or worse.
                    self.addresses_stale = true;
                    self.links_changed = true;
                    if e.raw_os_error() != Some(ENOBUFS) {
                        return;
                    }
                }
            }
        }
    }
}

/// The type and interface index of each message in one datagram: both
/// `ifinfomsg` and `ifaddrmsg` hold the index at bytes 4..8.
fn notifications(buf: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    frames(buf)
        .map_while(Result::ok)
        .filter_map(|f| Some((f.ty, ne_u32(f.payload.get(4..)?)?)))
}

//! Addresses in attributes as rtnetlink carries them: 4 or 16 bytes.

use std::net::IpAddr;

use super::{Attr, Writer};

impl Writer<'_> {
    /// An IPv4 address in 4 bytes, an IPv6 one in 16.
    pub(crate) fn put_ip(&mut self, ty: impl Into<u16>, addr: IpAddr) {
        match addr {
            IpAddr::V4(a) => self.put(ty, &a.octets()),
            IpAddr::V6(a) => self.put(ty, &a.octets()),
        }
    }
}

impl Attr<'_> {
    /// A payload of 4 or 16 bytes as an address; any other length is none.
    pub(crate) fn ip(&self) -> Option<IpAddr> {
        match self.payload.len() {
            4 => self.array::<4>().ok().map(IpAddr::from),
            16 => self.array::<16>().ok().map(IpAddr::from),
            _ => None,
        }
    }
}

//! ipsets as values. Members are kept as the text `ipset save` writes
//! (`10.0.0.1`, `10.0.0.1,tcp:80`, `10.1.0.0/16 nomatch`), which is
//! unambiguous, ordered and what a person debugging compares against.

use std::{collections::BTreeSet, net::IpAddr};

use super::Protocol;
// The set vocabulary is the kernel layer's: plain values, checked there.
pub use crate::kernel::ipset::{Family as SetFamily, SetType};

/// The name of a set in `family`: IPv6 twins get kube-router's `inet6:`
/// prefix.
pub fn family_set_name(family: SetFamily, base: &str) -> String {
    match family {
        SetFamily::Inet => base.to_string(),
        SetFamily::Inet6 => format!("inet6:{base}"),
    }
}

/// One set: name, type, family and every member.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SetSpec {
    pub name: String,
    pub set_type: SetType,
    pub family: SetFamily,
    pub members: BTreeSet<String>,
}

/// `10.0.0.1` / `fd00::1`.
pub fn ip_member(addr: IpAddr) -> String {
    addr.to_string()
}

/// `10.0.0.1,tcp:80` / `fd00::1,udp:53`.
pub fn ip_port_member(addr: IpAddr, proto: Protocol, port: u16) -> String {
    format!("{addr},{proto}:{port}")
}

//! ipsets as values. Members are kept as the text `ipset save` writes
//! (`10.0.0.1`, `10.0.0.1,tcp:80`, `10.1.0.0/16 nomatch`), which is
//! unambiguous, ordered and what a person debugging compares against.

use std::{collections::BTreeSet, fmt, net::IpAddr};

use super::Protocol;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetType {
    HashIp,
    HashIpPort,
    HashNet,
    HashNetPort,
    HashIpPortIp,
}

impl SetType {
    pub fn as_str(self) -> &'static str {
        match self {
            SetType::HashIp => "hash:ip",
            SetType::HashIpPort => "hash:ip,port",
            SetType::HashNet => "hash:net",
            SetType::HashNetPort => "hash:net,port",
            SetType::HashIpPortIp => "hash:ip,port,ip",
        }
    }
}

impl fmt::Display for SetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SetFamily {
    Inet,
    Inet6,
}

impl SetFamily {
    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => SetFamily::Inet,
            IpAddr::V6(_) => SetFamily::Inet6,
        }
    }

    /// The set name for this family: IPv6 twins get kube-router's `inet6:`
    /// prefix.
    pub fn set_name(self, base: &str) -> String {
        match self {
            SetFamily::Inet => base.to_string(),
            SetFamily::Inet6 => format!("inet6:{base}"),
        }
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

//! The address family: one type for IPVS, ipsets and iptables alike.

use std::net::IpAddr;

/// IPv4 or IPv6. Each kernel subsystem turns it into its own form
/// (NFPROTO numbers, `inet`/`inet6`, `iptables`/`ip6tables`) privately.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// Both families, IPv4 first.
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];

    pub fn of(addr: &IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The prefix length of a single host: 32 or 128.
    pub fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }

    /// The name of a set in this family: IPv6 twins get kube-router's
    /// `inet6:` prefix, so both families of one set share a base name.
    pub fn set_name(self, base: &str) -> String {
        match self {
            Family::V4 => base.to_string(),
            Family::V6 => format!("inet6:{base}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_twins_get_the_inet6_prefix() {
        assert_eq!(Family::V4.set_name("ipwarden-svip"), "ipwarden-svip");
        assert_eq!(Family::V6.set_name("ipwarden-svip"), "inet6:ipwarden-svip");
        assert_eq!(Family::of(&"fd00::1".parse().unwrap()), Family::V6);
        assert_eq!(Family::of(&"10.0.0.1".parse().unwrap()), Family::V4);
    }
}

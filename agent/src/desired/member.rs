//! A desired set member, typed. `Display` prints exactly what `ipset save`
//! prints for it (`10.0.0.1`, `10.0.0.1,tcp:80`, `10.1.0.0/16 nomatch`,
//! `fd00::1,udp:53`), so logs compare with what a person sees on a node.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

use ipnet::IpNet;

use super::{Family, Protocol, SetType};

/// One member of a hash:ip, hash:ip,port, hash:net or hash:net,port set.
/// Build it with the constructors: they normalise networks the way the
/// kernel stores them (host bits cleared), so a desired member equals the
/// one read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Member {
    /// hash:ip
    Ip(IpAddr),
    /// hash:ip,port
    IpPort {
        addr: IpAddr,
        proto: Protocol,
        port: u16,
    },
    /// hash:net; a host prefix prints without /32 or /128, as ipset does.
    Net { net: IpNet, nomatch: bool },
    /// hash:net,port
    NetPort {
        net: IpNet,
        proto: Protocol,
        port: u16,
        nomatch: bool,
    },
}

impl Member {
    /// `10.0.0.1` / `fd00::1`.
    pub fn ip(addr: IpAddr) -> Self {
        Member::Ip(addr)
    }

    /// `10.0.0.1,tcp:80` / `fd00::1,udp:53`.
    pub fn ip_port(addr: IpAddr, proto: Protocol, port: u16) -> Self {
        Member::IpPort { addr, proto, port }
    }

    /// `10.1.0.0/16`: host bits are cleared, as the kernel stores it.
    pub fn net(net: IpNet) -> Self {
        Member::Net {
            net: net.trunc(),
            nomatch: false,
        }
    }

    /// `10.1.0.0/16 nomatch`: an exception inside a hash:net set.
    pub fn net_nomatch(net: IpNet) -> Self {
        Member::Net {
            net: net.trunc(),
            nomatch: true,
        }
    }

    /// `10.1.0.0/16,tcp:80`.
    pub fn net_port(net: IpNet, proto: Protocol, port: u16) -> Self {
        Member::NetPort {
            net: net.trunc(),
            proto,
            port,
            nomatch: false,
        }
    }

    /// The set type whose members have this shape.
    pub fn set_type(&self) -> SetType {
        match self {
            Member::Ip(_) => SetType::HashIp,
            Member::IpPort { .. } => SetType::HashIpPort,
            Member::Net { .. } => SetType::HashNet,
            Member::NetPort { .. } => SetType::HashNetPort,
        }
    }

    /// The family of its address.
    pub fn family(&self) -> Family {
        match self {
            Member::Ip(addr) | Member::IpPort { addr, .. } => Family::of(addr),
            Member::Net { net, .. } | Member::NetPort { net, .. } => Family::of(&net.addr()),
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nomatch = match *self {
            Member::Ip(addr) => return write!(f, "{}", NtopAddr(addr)),
            Member::IpPort { addr, proto, port } => {
                return write!(f, "{},{proto}:{port}", NtopAddr(addr))
            }
            Member::Net { net, nomatch } => {
                write_net(f, net)?;
                nomatch
            }
            Member::NetPort {
                net,
                proto,
                port,
                nomatch,
            } => {
                write_net(f, net)?;
                write!(f, ",{proto}:{port}")?;
                nomatch
            }
        };
        if nomatch {
            f.write_str(" nomatch")?;
        }
        Ok(())
    }
}

/// ipset omits the prefix of a host network.
fn write_net(f: &mut fmt::Formatter<'_>, net: IpNet) -> fmt::Result {
    write!(f, "{}", NtopAddr(net.addr()))?;
    if net.prefix_len() != Family::of(&net.addr()).host_prefix() {
        write!(f, "/{}", net.prefix_len())?;
    }
    Ok(())
}

/// An address printed like glibc's inet_ntop, which ipset uses: Rust's
/// Display differs for IPv4-compatible IPv6 addresses (`::1.2.3.4`).
pub struct NtopAddr(pub IpAddr);

impl fmt::Display for NtopAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "{a}"),
            IpAddr::V6(a) => fmt_ipv6(&a, f),
        }
    }
}

/// (start, length) of a run of zero words.
type Run = (usize, usize);

fn fmt_ipv6(a: &Ipv6Addr, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let w = a.segments();
    // The first longest run of zero words, if at least two long.
    let (mut best, mut cur): (Option<Run>, Option<Run>) = (None, None);
    for (i, word) in w.iter().enumerate() {
        if *word == 0 {
            let run = cur.map_or((i, 1), |(b, l)| (b, l + 1));
            cur = Some(run);
            if best.is_none_or(|(_, bl)| run.1 > bl) {
                best = Some(run);
            }
        } else {
            cur = None;
        }
    }
    let best = best.filter(|(_, len)| *len >= 2);
    let mut i = 0;
    while i < 8 {
        if let Some((base, len)) = best {
            if i == base {
                f.write_str(":")?;
                i += len;
                continue;
            }
        }
        if i != 0 {
            f.write_str(":")?;
        }
        let embeds_v4 =
            matches!(best, Some((0, 6))) || (matches!(best, Some((0, 5))) && w[5] == 0xffff);
        if i == 6 && embeds_v4 {
            let o = a.octets();
            return write!(f, "{}.{}.{}.{}", o[12], o[13], o[14], o[15]);
        }
        write!(f, "{:x}", w[i])?;
        i += 1;
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        f.write_str(":")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn members_print_like_ipset_save() {
        let cases = [
            (Member::ip(ip("10.0.0.1")), "10.0.0.1"),
            (Member::ip(ip("::1.2.3.4")), "::1.2.3.4"),
            (
                Member::ip_port(ip("10.0.0.1"), Protocol::Tcp, 80),
                "10.0.0.1,tcp:80",
            ),
            (
                Member::ip_port(ip("fd00::1"), Protocol::Udp, 53),
                "fd00::1,udp:53",
            ),
            (
                Member::net_nomatch(net("10.1.0.0/16")),
                "10.1.0.0/16 nomatch",
            ),
            (
                Member::net_port(net("10.1.0.0/16"), Protocol::Sctp, 9),
                "10.1.0.0/16,sctp:9",
            ),
        ];
        for (m, want) in cases {
            assert_eq!(m.to_string(), want);
        }
    }

    #[test]
    fn networks_normalise_like_the_kernel() {
        // What `ipset save` printed on a 6.1 kernel for `add t 10.0.0.1/32`,
        // `add t 10.1.2.3/16` and `add t6 fd00:1::5/64`.
        assert_eq!(Member::net(net("10.0.0.1/32")).to_string(), "10.0.0.1");
        assert_eq!(Member::net(net("10.1.2.3/16")).to_string(), "10.1.0.0/16");
        assert_eq!(Member::net(net("fd00::1/128")).to_string(), "fd00::1");
        assert_eq!(Member::net(net("fd00:1::5/64")).to_string(), "fd00:1::/64");
        assert_eq!(
            Member::net(net("10.1.2.3/16")),
            Member::net(net("10.1.0.0/16"))
        );
        assert_eq!(Member::net(net("10.1.0.0/16")).set_type(), SetType::HashNet);
        assert_eq!(Member::ip(ip("fd00::1")).family(), Family::V6);
    }

    #[test]
    fn ipv6_text_matches_inet_ntop() {
        for (a, want) in [
            ("::", "::"),
            ("::1", "::1"),
            ("::ffff:0:0", "::ffff:0.0.0.0"),
            ("0:0:0:0:0:1:0:0", "::1:0:0"),
            ("1::", "1::"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("::0.1.0.0", "::0.1.0.0"),
        ] {
            assert_eq!(NtopAddr(ip(a)).to_string(), want, "{a}");
        }
    }

    unsafe extern "C" {
        // glibc's, declared here: the libc crate does not bind it.
        fn inet_ntop(
            af: libc::c_int,
            src: *const libc::c_void,
            dst: *mut libc::c_char,
            size: libc::socklen_t,
        ) -> *const libc::c_char;
    }

    /// glibc's inet_ntop, which ipset prints with: the oracle.
    fn glibc_ntop(a: &Ipv6Addr) -> String {
        let octets = a.octets();
        let mut buf = [0 as libc::c_char; 46]; // INET6_ADDRSTRLEN
                                               // SAFETY: `octets` is an in6_addr's 16 bytes; `buf` is as long as
                                               // inet_ntop is told, and it writes a NUL-terminated string there.
        let text = unsafe {
            inet_ntop(
                libc::AF_INET6,
                octets.as_ptr().cast(),
                buf.as_mut_ptr(),
                buf.len() as libc::socklen_t,
            )
        };
        assert!(!text.is_null(), "inet_ntop failed for {a:?}");
        // SAFETY: inet_ntop returned `buf`, NUL-terminated.
        let text = unsafe { std::ffi::CStr::from_ptr(text) };
        text.to_str().unwrap().to_string()
    }

    proptest::proptest! {
        /// Words drawn mostly 0 (runs of zeros to compress, IPv4-mapped and
        /// -compatible forms) or 0xffff, else anything.
        #[test]
        fn ipv6_text_is_glibc_inet_ntop(words in proptest::array::uniform8(
            proptest::prop_oneof![4 => proptest::strategy::Just(0u16),
                1 => proptest::strategy::Just(0xffffu16),
                2 => proptest::arbitrary::any::<u16>()],
        )) {
            let a = Ipv6Addr::from(words);
            proptest::prop_assert_eq!(NtopAddr(IpAddr::V6(a)).to_string(), glibc_ntop(&a));
        }
    }
}

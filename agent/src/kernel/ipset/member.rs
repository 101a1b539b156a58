//! Set members, printed exactly as `ipset save` writes them:
//! `10.0.0.1`, `10.1.0.0/16 nomatch`, `10.0.0.1,tcp:80`, `10.0.0.1,sctp:9`,
//! `10.1.0.0/16,udp:53`, `10.0.0.1,tcp:80,10.0.0.2`, `2001:db8::1,tcp:443`,
//! then ` timeout N`, ` nomatch`, ` packets P bytes B`, ` comment "..."`
//! in that order.

use std::{fmt, net::IpAddr};

use ipnet::IpNet;

use super::{
    consts::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE,
        IPSET_MAX_COMMENT_SIZE,
    },
    types::{family_name, member_syntax, ParseError},
};
use crate::desired::{Family, NtopAddr as Addr, SetType};

/// A network: the address has its host bits cleared at construction (as
/// the kernel stores it) and the prefix is 1..=32 or 1..=128, because no
/// hash:net type can hold a /0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Self, ParseError> {
        let net = IpNet::new(addr, prefix).ok().filter(|_| prefix != 0);
        let net = net.ok_or_else(|| {
            let max = Family::of(&addr).host_prefix();
            ParseError::new(
                "network",
                format!("{addr}/{prefix}"),
                format!("prefix must be 1..={max}"),
            )
        })?;
        Ok(Self {
            addr: net.trunc().addr(),
            prefix,
        })
    }

    /// A single host as a network (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        let prefix = Family::of(&addr).host_prefix();
        Self { addr, prefix }
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for Net {
    /// ipset omits the prefix of a host network.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Addr(self.addr))?;
        if self.prefix != Family::of(&self.addr).host_prefix() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Protocol and port of a member, as the kernel stores them: ICMP type and
/// code live in the port (type << 8 | code), protocols without ports have
/// port 0. Fields are private so every value is canonical.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProtoPort {
    proto: u8,
    port: u16,
}

impl ProtoPort {
    /// A value that is canonical by construction.
    pub(crate) const fn of(proto: u8, port: u16) -> Self {
        Self { proto, port }
    }

    pub fn tcp(port: u16) -> Self {
        Self::of(IPPROTO_TCP, port)
    }

    pub fn udp(port: u16) -> Self {
        Self::of(IPPROTO_UDP, port)
    }

    pub fn sctp(port: u16) -> Self {
        Self::of(IPPROTO_SCTP, port)
    }

    pub fn icmp(ty: u8, code: u8) -> Self {
        Self::of(IPPROTO_ICMP, u16::from_be_bytes([ty, code]))
    }

    pub fn icmpv6(ty: u8, code: u8) -> Self {
        Self::of(IPPROTO_ICMPV6, u16::from_be_bytes([ty, code]))
    }

    /// Any protocol by number. `port` must be 0 for protocols without ports
    /// (the kernel would store 0 anyway, and a member must round-trip).
    pub fn new(proto: u8, port: u16) -> Result<Self, ParseError> {
        if proto == 0 {
            return Err(ParseError::new("protocol", "0", "ipset rejects protocol 0"));
        }
        // `ip_set_proto_with_ports` in the kernel, or ICMP's type/code.
        let ports = matches!(
            proto,
            IPPROTO_TCP
                | IPPROTO_UDP
                | IPPROTO_SCTP
                | IPPROTO_UDPLITE
                | IPPROTO_ICMP
                | IPPROTO_ICMPV6
        );
        if port != 0 && !ports {
            return Err(ParseError::new(
                "port",
                port.to_string(),
                format!("protocol {proto} has no ports"),
            ));
        }
        Ok(Self { proto, port })
    }

    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// The port, or type << 8 | code for ICMP and ICMPv6 (the wire value).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for ProtoPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = self.proto.to_string();
        f.write_str(name_of(PROTO_NAMES, &proto).unwrap_or(&proto))?;
        let Some(table) = icmp_names(self.proto) else {
            return write!(f, ":{}", self.port);
        };
        let [ty, code] = self.port.to_be_bytes();
        let key = format!("{ty}/{code}");
        write!(f, ":{}", name_of(table, &key).unwrap_or(&key))
    }
}

/// The ICMP type/code names of `proto`, if it is ICMP or ICMPv6.
fn icmp_names(proto: u8) -> Option<&'static str> {
    match proto {
        IPPROTO_ICMP => Some(ICMP_NAMES),
        IPPROTO_ICMPV6 => Some(ICMPV6_NAMES),
        _ => None,
    }
}

/// The `KEY NAME` pairs of a names table below.
fn pairs(table: &'static str) -> impl Iterator<Item = (&'static str, &'static str)> {
    let mut words = table.split_whitespace();
    std::iter::from_fn(move || Some((words.next()?, words.next()?)))
}

fn name_of(table: &'static str, key: &str) -> Option<&'static str> {
    pairs(table).find(|(k, _)| *k == key).map(|(_, name)| name)
}

#[cfg(any(test, feature = "lab"))]
fn key_of(table: &'static str, name: &str) -> Option<&'static str> {
    pairs(table).find(|(_, n)| *n == name).map(|(key, _)| key)
}

#[cfg(any(test, feature = "lab"))]
/// The protocol number (as text) that ipset names `name`.
pub(crate) fn proto_key(name: &str) -> Option<&'static str> {
    key_of(PROTO_NAMES, name)
}

#[cfg(any(test, feature = "lab"))]
/// For ICMP and ICMPv6, `TYPE/CODE` of the name `s`, or `s` itself when
/// it names nothing; None for other protocols.
pub(crate) fn icmp_key(proto: u8, s: &str) -> Option<&str> {
    icmp_names(proto).map(|table| key_of(table, s).unwrap_or(s))
}

/// The element of a member: its shape is fixed by the set type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Entry {
    /// hash:ip
    Ip(IpAddr),
    /// hash:net
    Net(Net),
    /// hash:ip,port
    IpPort(IpAddr, ProtoPort),
    /// hash:net,port
    NetPort(Net, ProtoPort),
    /// hash:ip,port,ip
    IpPortIp(IpAddr, ProtoPort, IpAddr),
}

/// What a member of `set_type` holds after its first address: (a
/// protocol and port, a second address).
pub(crate) fn shape(set_type: SetType) -> (bool, bool) {
    match set_type {
        SetType::HashIp | SetType::HashNet => (false, false),
        SetType::HashIpPort | SetType::HashNetPort => (true, false),
        SetType::HashIpPortIp => (true, true),
    }
}

impl Entry {
    /// The parts in wire and text order: the first address as a network
    /// (a host in ip types), the protocol and port, the second address.
    pub(crate) fn parts(&self) -> (Net, Option<ProtoPort>, Option<IpAddr>) {
        match *self {
            Entry::Ip(a) => (Net::host(a), None, None),
            Entry::Net(n) => (n, None, None),
            Entry::IpPort(a, p) => (Net::host(a), Some(p), None),
            Entry::NetPort(n, p) => (n, Some(p), None),
            Entry::IpPortIp(a, p, b) => (Net::host(a), Some(p), Some(b)),
        }
    }

    /// The entry of `set_type` made of `parts`, if they fit its shape.
    pub(crate) fn from_parts(
        set_type: SetType,
        net: Net,
        pp: Option<ProtoPort>,
        ip2: Option<IpAddr>,
    ) -> Option<Self> {
        let a = net.addr();
        Some(match (set_type, pp, ip2) {
            (SetType::HashIp, None, None) => Entry::Ip(a),
            (SetType::HashNet, None, None) => Entry::Net(net),
            (SetType::HashIpPort, Some(p), None) => Entry::IpPort(a, p),
            (SetType::HashNetPort, Some(p), None) => Entry::NetPort(net, p),
            (SetType::HashIpPortIp, Some(p), Some(b)) => Entry::IpPortIp(a, p, b),
            _ => return None,
        })
    }

    /// The set type whose members have this shape.
    pub fn set_type(&self) -> SetType {
        match self {
            Entry::Ip(_) => SetType::HashIp,
            Entry::Net(_) => SetType::HashNet,
            Entry::IpPort(..) => SetType::HashIpPort,
            Entry::NetPort(..) => SetType::HashNetPort,
            Entry::IpPortIp(..) => SetType::HashIpPortIp,
        }
    }

    /// The family of the (first) address.
    pub fn family(&self) -> Family {
        Family::of(&self.parts().0.addr())
    }

    /// Why this entry cannot go into a set of `set_type` and `family`, if
    /// it cannot: the kernel would reject it or store something else.
    pub fn mismatch(&self, set_type: SetType, family: Family) -> Option<String> {
        let (_, pp, ip2) = self.parts();
        let fam = self.family();
        let (ours, theirs) = (member_syntax(set_type), member_syntax(self.set_type()));
        Some(match (pp.map(|p| p.proto()), family) {
            _ if self.set_type() != set_type => format!("{set_type} takes {ours}, not {theirs}"),
            _ if ip2.is_some_and(|b| Family::of(&b) != fam) => {
                "both addresses must be of one family".into()
            }
            _ if fam != family => format!(
                "{} address in a family {} set",
                family_name(fam),
                family_name(family)
            ),
            // The kernel zeroes the type/code of the other family's ICMP.
            (Some(IPPROTO_ICMP), Family::V6) => "icmp in a family inet6 set".into(),
            (Some(IPPROTO_ICMPV6), Family::V4) => "ipv6-icmp in a family inet set".into(),
            _ => return None,
        })
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (net, pp, ip2) = self.parts();
        write!(f, "{net}")?;
        pp.map_or(Ok(()), |p| write!(f, ",{p}"))?;
        ip2.map_or(Ok(()), |b| write!(f, ",{}", Addr(b)))
    }
}

/// A member comment: what ipset accepts (at most 255 bytes, no `"`, which
/// `ipset save` could not quote), no line breaks (a save line is a line),
/// and not empty (the kernel stores an empty comment as none).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Comment(String);

impl Comment {
    pub fn new(s: impl Into<String>) -> Result<Self, ParseError> {
        let s = s.into();
        let why = match s {
            _ if s.is_empty() => "empty (leave the comment out)",
            _ if s.len() > IPSET_MAX_COMMENT_SIZE => "longer than 255 bytes",
            _ if s.contains(['"', '\0', '\n', '\r']) => "contains a quote, NUL or line break",
            _ => return Ok(Self(s)),
        };
        Err(ParseError::new("comment", s, why))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Comment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Packet and byte counters of a member of a set created with `counters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// One set member as the kernel writes and lists it: the [`Entry`] with
/// its extensions. Desired state speaks [`crate::desired::Member`], which
/// converts to and from this (kernel/ipset/desired.rs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    pub entry: Entry,
    /// An exception inside a hash:net / hash:net,port set.
    pub nomatch: bool,
    /// Seconds; Some(0) is "never expires" in a set with a timeout. When
    /// listed, the kernel reports the time left.
    pub timeout: Option<u32>,
    pub counters: Option<Counters>,
    pub comment: Option<Comment>,
}

impl Element {
    pub fn new(entry: Entry) -> Self {
        Self {
            entry,
            nomatch: false,
            timeout: None,
            counters: None,
            comment: None,
        }
    }

    pub fn timeout(mut self, seconds: u32) -> Self {
        self.timeout = Some(seconds);
        self
    }

    pub fn comment(mut self, comment: Comment) -> Self {
        self.comment = Some(comment);
        self
    }

    pub fn counters(mut self, counters: Counters) -> Self {
        self.counters = Some(counters);
        self
    }
}

impl From<Entry> for Element {
    fn from(entry: Entry) -> Self {
        Element::new(entry)
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.entry)?;
        if let Some(t) = self.timeout {
            write!(f, " timeout {t}")?;
        }
        if self.nomatch {
            f.write_str(" nomatch")?;
        }
        if let Some(c) = self.counters {
            write!(f, " packets {} bytes {}", c.packets, c.bytes)?;
        }
        if let Some(c) = &self.comment {
            write!(f, " comment \"{c}\"")?;
        }
        Ok(())
    }
}

// Names tables: `KEY NAME` pairs, the key as ipset prints a value that has
// no name (`TYPE/CODE`, a protocol's number).

/// ICMP type/code names as ipset prints and parses them (libipset's table,
/// checked against `ipset save` for every type 0..=255, code 0..=20).
const ICMP_NAMES: &str = "\
    0/0 echo-reply 3/0 network-unreachable 3/1 host-unreachable 3/2 protocol-unreachable \
    3/3 port-unreachable 3/4 fragmentation-needed 3/5 source-route-failed \
    3/6 network-unknown 3/7 host-unknown 3/9 network-prohibited 3/10 host-prohibited \
    3/11 TOS-network-unreachable 3/12 TOS-host-unreachable 3/13 communication-prohibited \
    3/14 host-precedence-violation 3/15 precedence-cutoff 4/0 source-quench \
    5/0 network-redirect 5/1 host-redirect 5/2 TOS-network-redirect 5/3 TOS-host-redirect \
    8/0 echo-request 9/0 router-advertisement 10/0 router-solicitation \
    11/0 ttl-zero-during-transit 11/1 ttl-zero-during-reassembly 12/0 ip-header-bad \
    12/1 required-option-missing 13/0 timestamp-request 14/0 timestamp-reply \
    17/0 address-mask-request 18/0 address-mask-reply";

const ICMPV6_NAMES: &str = "\
    1/0 no-route 1/1 communication-prohibited 1/3 address-unreachable 1/4 port-unreachable \
    2/0 packet-too-big 3/0 ttl-zero-during-transit 3/1 ttl-zero-during-reassembly \
    4/0 bad-header 4/1 unknown-header-type 4/2 unknown-option 128/0 echo-request \
    129/0 echo-reply 133/0 router-solicitation 134/0 router-advertisement \
    135/0 neighbour-solicitation 136/0 neighbour-advertisement 137/0 redirect";

/// Protocol names ipset prints through getprotobynumber(3): the keywords
/// of netbase's /etc/protocols. A host with another protocols file prints
/// other names for the rare protocols; tcp/udp/sctp/icmp never differ.
const PROTO_NAMES: &str = "\
    1 icmp 2 igmp 3 ggp 4 ipencap 5 st 6 tcp 8 egp 9 igp 12 pup 17 udp 20 hmp 22 xns-idp \
    27 rdp 29 iso-tp4 33 dccp 36 xtp 37 ddp 38 idpr-cmtp 41 ipv6 43 ipv6-route \
    44 ipv6-frag 45 idrp 46 rsvp 47 gre 50 esp 51 ah 57 skip 58 ipv6-icmp 59 ipv6-nonxt \
    60 ipv6-opts 73 rspf 81 vmtp 88 eigrp 89 ospf 93 ax.25 94 ipip 97 etherip 98 encap \
    103 pim 108 ipcomp 112 vrrp 115 l2tp 124 isis 132 sctp 133 fc 135 mobility-header \
    136 udplite 137 mpls-in-ip 138 manet 139 hip 140 shim6 141 wesp 142 rohc 143 ethernet";

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn comments_follow_ipsets_rules() {
        assert!(Comment::new("a\"b").is_err());
        assert!(Comment::new("").is_err());
        assert!(Comment::new("x".repeat(256)).is_err());
        assert!(Comment::new("x".repeat(255)).is_ok());
    }

    #[test]
    fn names_tables_are_pairs_of_a_key_and_a_name() {
        for table in [ICMP_NAMES, ICMPV6_NAMES, PROTO_NAMES] {
            assert_eq!(table.split_whitespace().count() % 2, 0);
            assert!(pairs(table).all(|(k, _)| k.split('/').all(|n| n.parse::<u8>().is_ok())));
        }
    }

    #[test]
    fn mismatch_names_the_reason() {
        let e = Entry::IpPort(ip("10.0.0.1"), ProtoPort::tcp(1));
        assert!(e.mismatch(SetType::HashIpPort, Family::V4).is_none());
        assert!(e.mismatch(SetType::HashIp, Family::V4).is_some());
        assert!(e.mismatch(SetType::HashIpPort, Family::V6).is_some());
        let e = Entry::IpPort(ip("::1"), ProtoPort::icmp(8, 0));
        assert!(e.mismatch(SetType::HashIpPort, Family::V6).is_some());
        let e = Entry::IpPortIp(ip("10.0.0.1"), ProtoPort::tcp(1), ip("::1"));
        assert!(e.mismatch(SetType::HashIpPortIp, Family::V4).is_some());
    }
}

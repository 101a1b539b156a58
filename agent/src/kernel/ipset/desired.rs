//! Desired members to kernel elements and back. A desired member is the
//! bare element; the kernel's also carries extensions (timeout, counters,
//! comment), which ipwarden's sets are created without.

use ipnet::IpNet;

use super::{
    member::{Element, Entry, Net, ProtoPort},
    types::ParseError,
};
use crate::desired::{Member, Protocol};

fn proto_port(proto: Protocol, port: u16) -> ProtoPort {
    ProtoPort::of(proto.number(), port)
}

fn net(net: IpNet) -> Result<Net, ParseError> {
    Net::new(net.addr(), net.prefix_len())
}

impl TryFrom<&Member> for Element {
    type Error = ParseError;

    /// Fails only for what no hash:net set can hold (a /0).
    fn try_from(m: &Member) -> Result<Self, ParseError> {
        let (entry, nomatch) = match *m {
            Member::Ip(addr) => (Entry::Ip(addr), false),
            Member::IpPort { addr, proto, port } => {
                (Entry::IpPort(addr, proto_port(proto, port)), false)
            }
            Member::Net { net: n, nomatch } => (Entry::Net(net(n)?), nomatch),
            Member::NetPort {
                net: n,
                proto,
                port,
                nomatch,
            } => (Entry::NetPort(net(n)?, proto_port(proto, port)), nomatch),
        };
        Ok(Element {
            nomatch,
            ..Element::new(entry)
        })
    }
}

impl Element {
    /// The desired member this element is, or None when no desired member
    /// can stand for it (another protocol than TCP/UDP/SCTP, hash:ip,port,ip):
    /// in one of our sets that is drift to delete.
    pub fn to_desired(&self) -> Option<Member> {
        let pp = |p: ProtoPort| Some((Protocol::from_number(p.proto())?, p.port()));
        let ipnet = |n: Net| IpNet::new(n.addr(), n.prefix()).ok();
        Some(match self.entry {
            Entry::Ip(addr) => Member::Ip(addr),
            Entry::IpPort(addr, p) => {
                let (proto, port) = pp(p)?;
                Member::IpPort { addr, proto, port }
            }
            Entry::Net(n) => Member::Net {
                net: ipnet(n)?,
                nomatch: self.nomatch,
            },
            Entry::NetPort(n, p) => {
                let (proto, port) = pp(p)?;
                Member::NetPort {
                    net: ipnet(n)?,
                    proto,
                    port,
                    nomatch: self.nomatch,
                }
            }
            Entry::IpPortIp(..) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::SetType;

    #[test]
    fn desired_members_round_trip_through_the_kernel_form() {
        let members = [
            Member::ip("10.0.0.1".parse().unwrap()),
            Member::ip_port("fd00::1".parse().unwrap(), Protocol::Udp, 53),
            Member::net("10.0.0.1/32".parse().unwrap()),
            Member::net_nomatch("10.1.2.3/16".parse().unwrap()),
            Member::net_port("fd00:1::/64".parse().unwrap(), Protocol::Sctp, 9),
        ];
        for m in members {
            let e = Element::try_from(&m).unwrap();
            assert_eq!(e.to_string(), m.to_string(), "the same ipset save text");
            assert_eq!(e.entry.set_type(), m.set_type());
            assert_eq!(e.to_desired(), Some(m));
        }
    }

    #[test]
    fn what_no_desired_member_stands_for_is_none() {
        for (t, s) in [
            (SetType::HashIpPort, "10.0.0.1,icmp:echo-request"),
            (SetType::HashIpPort, "10.0.0.1,udplite:5"),
            (SetType::HashIpPortIp, "10.0.0.1,tcp:80,10.0.0.2"),
        ] {
            assert_eq!(Element::parse(t, s).unwrap().to_desired(), None, "{s}");
        }
        assert!(Element::try_from(&Member::net("0.0.0.0/0".parse().unwrap())).is_err());
    }
}

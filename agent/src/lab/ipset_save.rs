//! The tests' reader of `ipset save` text. The agent writes ipset values
//! and prints them as `ipset save` does (kernel/ipset), but never reads
//! that text back: only tests do, to compare what the kernel holds, as
//! the real `ipset` prints it, with what ipwarden asked for.

use std::{net::IpAddr, str::FromStr};

use crate::{
    desired::{Family, SetType},
    kernel::ipset::{
        icmp_key, member_syntax, parse_set_type, proto_key, Comment, Element, Entry, IpSet, Net,
        ParseError, ProtoPort, SetHeader, SetName,
    },
};

/// Parses the output of `ipset save` (sets of the supported types only).
pub fn parse_save(text: &str) -> Result<Vec<IpSet>, ParseError> {
    let mut sets: Vec<IpSet> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        let (name, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let name = SetName::new(name)?;
        match verb {
            "create" => sets.push(IpSet {
                name,
                header: rest.parse()?,
                stats: None,
                members: Vec::new(),
            }),
            "add" => {
                let set = sets
                    .iter_mut()
                    .rev()
                    .find(|s| s.name == name)
                    .ok_or_else(|| ParseError::new("save line", line, "add before create"))?;
                let member = Element::parse(set.header.set_type, rest)?;
                set.members.push(member);
            }
            _ => return Err(ParseError::new("save line", line, "expected create or add")),
        }
    }
    Ok(sets)
}

impl FromStr for SetHeader {
    type Err = ParseError;

    /// Parses what follows `create NAME ` in `ipset save`.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let mut words = s.split_whitespace();
        let set_type = parse_set_type(words.next().unwrap_or(""))?;
        // ipset's defaults for what a save line leaves out.
        let mut h = SetHeader {
            hashsize: 1024,
            maxelem: 65536,
            ..SetHeader::bare(set_type, Family::V4)
        };
        while let Some(word) = words.next() {
            let mut value = || {
                words
                    .next()
                    .ok_or_else(|| ParseError::new("create option", word, "missing value"))
            };
            match word {
                "family" => h.family = parse_family(value()?)?,
                "hashsize" => h.hashsize = number(value()?)?,
                "maxelem" => h.maxelem = number(value()?)?,
                "netmask" => h.netmask = Some(number(value()?)?),
                "timeout" => h.timeout = Some(number(value()?)?),
                "bucketsize" => h.bucketsize = Some(number(value()?)?),
                "initval" => {
                    let v = value()?;
                    let hex = v.strip_prefix("0x").unwrap_or(v);
                    h.initval = Some(
                        u32::from_str_radix(hex, 16)
                            .map_err(|_| ParseError::new("initval", v, "not hex"))?,
                    );
                }
                "counters" => h.counters = true,
                "comment" => h.comment = true,
                "skbinfo" => h.skbinfo = true,
                _ => return Err(ParseError::new("create option", word, "unknown option")),
            }
        }
        Ok(h)
    }
}

fn parse_family(s: &str) -> Result<Family, ParseError> {
    match s {
        "inet" => Ok(Family::V4),
        "inet6" => Ok(Family::V6),
        _ => Err(ParseError::new("family", s, "expected inet or inet6")),
    }
}

fn number<T: FromStr>(s: &str) -> Result<T, ParseError> {
    s.parse()
        .map_err(|_| ParseError::new("number", s, "out of range or not a number"))
}

impl Element {
    /// Parses a member as it follows `add SETNAME ` in `ipset save`.
    pub fn parse(set_type: SetType, s: &str) -> Result<Self, ParseError> {
        let (elem, mut rest) = split_word(s.trim());
        let mut m = Element::new(Entry::parse(set_type, elem)?);
        while !rest.is_empty() {
            if let Some(quoted) = rest.strip_prefix("comment \"") {
                let (text, after) = quoted
                    .split_once('"')
                    .ok_or_else(|| ParseError::new("comment", rest, "no closing quote"))?;
                m.comment = Some(Comment::new(text)?);
                rest = after.trim_start();
                continue;
            }
            let (word, after) = split_word(rest);
            if word == "nomatch" {
                (m.nomatch, rest) = (true, after);
                continue;
            }
            let (value, after) = split_word(after);
            let number = |what: &'static str| -> Result<u64, ParseError> {
                value
                    .parse()
                    .map_err(|_| ParseError::new(what, value, "expected a number"))
            };
            match word {
                "timeout" => {
                    let t = u32::try_from(number("timeout")?);
                    let out_of_range = |_| ParseError::new("timeout", value, "out of range");
                    m.timeout = Some(t.map_err(out_of_range)?);
                }
                "packets" => m.counters.get_or_insert_default().packets = number("packets")?,
                "bytes" => m.counters.get_or_insert_default().bytes = number("bytes")?,
                _ => return Err(ParseError::new("member option", word, "unknown option")),
            }
            rest = after;
        }
        Ok(m)
    }
}

/// The first word of `s` and the rest, its leading spaces trimmed.
fn split_word(s: &str) -> (&str, &str) {
    let (word, rest) = s.split_once(' ').unwrap_or((s, ""));
    (word, rest.trim_start())
}

impl Entry {
    /// Parses the element part of a member line for a set of `set_type`.
    pub fn parse(set_type: SetType, s: &str) -> Result<Self, ParseError> {
        let parts: Vec<&str> = s.split(',').collect();
        let shape = || {
            ParseError::new(
                "member",
                s,
                format!("does not fit {set_type} ({})", member_syntax(set_type)),
            )
        };
        let first = match (set_type.has_nomatch(), parts[0]) {
            (true, net) => net.parse()?,
            (false, ip) => Net::host(parse_ip(ip)?),
        };
        let (pp, ip2) = match parts[1..] {
            [] => (None, None),
            [pp] => (Some(pp.parse()?), None),
            [pp, ip2] => (Some(pp.parse()?), Some(parse_ip(ip2)?)),
            _ => return Err(shape()),
        };
        Self::from_parts(set_type, first, pp, ip2).ok_or_else(shape)
    }
}

impl FromStr for Net {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, ParseError> {
        match s.split_once('/') {
            None => Ok(Self::host(parse_ip(s)?)),
            Some((a, p)) => {
                let prefix = p
                    .parse()
                    .map_err(|_| ParseError::new("prefix", p, "not a number"))?;
                Self::new(parse_ip(a)?, prefix)
            }
        }
    }
}

impl FromStr for ProtoPort {
    type Err = ParseError;

    /// `[PROTO:]PORT`; a bare port means TCP, as in ipset.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let Some((p, rest)) = s.split_once(':') else {
            return parse_port(s).map(Self::tcp);
        };
        let name = if p == "icmpv6" { "ipv6-icmp" } else { p };
        let proto = proto_key(name)
            .unwrap_or(p)
            .parse()
            .map_err(|_| ParseError::new("protocol", p, "unknown protocol"))?;
        let Some(key) = icmp_key(proto, rest) else {
            return Self::new(proto, parse_port(rest)?);
        };
        let (ty, code) = key
            .split_once('/')
            .and_then(|(t, c)| Some((t.parse().ok()?, c.parse().ok()?)))
            .ok_or_else(|| ParseError::new("icmp type/code", rest, "expected NAME or TYPE/CODE"))?;
        Ok(Self::of(proto, u16::from_be_bytes([ty, code])))
    }
}

fn parse_port(s: &str) -> Result<u16, ParseError> {
    s.parse()
        .map_err(|_| ParseError::new("port", s, "expected a number 0..=65535"))
}

fn parse_ip(s: &str) -> Result<IpAddr, ParseError> {
    s.parse()
        .map_err(|_| ParseError::new("address", s, "not an IP address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_print_like_ipset_save() {
        let cases = [
            (SetType::HashIp, "10.0.0.1"),
            (SetType::HashIp, "2001:db8::1"),
            (SetType::HashIp, "::ffff:1.2.3.4"),
            (SetType::HashIp, "::1.2.3.4"),
            (SetType::HashIp, "::102"),
            (SetType::HashIp, "1:0:2::"),
            (SetType::HashIp, "1:0:2:0:3:0:4:5"),
            (SetType::HashNet, "10.1.0.0/16"),
            (SetType::HashNet, "10.1.0.0/16 nomatch"),
            (SetType::HashNet, "10.0.0.1"),
            (
                SetType::HashNet,
                "2001:db8::/32 timeout 49 nomatch packets 5 bytes 7 comment \"x y\"",
            ),
            (SetType::HashIpPort, "10.0.0.1,tcp:80"),
            (SetType::HashIpPort, "10.0.0.1,udp:53"),
            (SetType::HashIpPort, "10.0.0.1,sctp:9"),
            (SetType::HashIpPort, "10.0.0.1,udplite:5"),
            (SetType::HashIpPort, "10.0.0.1,gre:0"),
            (SetType::HashIpPort, "10.0.0.1,253:0"),
            (SetType::HashIpPort, "10.0.0.1,icmp:port-unreachable"),
            (SetType::HashIpPort, "10.0.0.1,icmp:200/7"),
            (
                SetType::HashIpPort,
                "2001:db8::2,ipv6-icmp:echo-request timeout 0",
            ),
            (SetType::HashNetPort, "10.1.0.0/24,icmp:echo-request"),
            (SetType::HashNetPort, "10.1.0.0/16,tcp:80 nomatch"),
            (SetType::HashIpPortIp, "10.0.0.1,tcp:80,10.0.0.2"),
            (
                SetType::HashIpPortIp,
                "2001:db8::1,tcp:1,::1 comment \"a b c\"",
            ),
        ];
        for (t, s) in cases {
            let m = Element::parse(t, s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(m.to_string(), s);
        }
    }

    #[test]
    fn input_forms_normalise_like_the_kernel() {
        let m = Element::parse(SetType::HashNet, "10.1.2.3/16").unwrap();
        assert_eq!(m.to_string(), "10.1.0.0/16");
        let m = Element::parse(SetType::HashIpPort, "10.0.0.1,80").unwrap();
        assert_eq!(m.to_string(), "10.0.0.1,tcp:80");
        let m = Element::parse(SetType::HashIpPort, "10.0.0.1,132:9").unwrap();
        assert_eq!(m.to_string(), "10.0.0.1,sctp:9");
        let m = Element::parse(SetType::HashIpPort, "::1,icmpv6:1/4").unwrap();
        assert_eq!(m.to_string(), "::1,ipv6-icmp:port-unreachable");
        assert_eq!(ProtoPort::icmp(8, 0).port(), 0x0800);
    }

    #[test]
    fn bad_members_are_errors() {
        for (t, s) in [
            (SetType::HashIp, "10.0.0.1,tcp:80"),
            (SetType::HashIpPort, "10.0.0.1"),
            (SetType::HashNet, "10.0.0.0/0"),
            (SetType::HashNet, "10.0.0.0/33"),
            (SetType::HashIpPort, "10.0.0.1,tcp:65536"),
            (SetType::HashIpPort, "10.0.0.1,gre:5"),
            (SetType::HashIpPort, "10.0.0.1,0:0"),
            (SetType::HashIpPort, "10.0.0.1,nope:1"),
            (SetType::HashIp, "10.0.0.1 timeout"),
            (SetType::HashIp, "10.0.0.1 comment \"open"),
            (SetType::HashIp, "10.0.0.1 bogus 1"),
        ] {
            assert!(Element::parse(t, s).is_err(), "{s} parsed");
        }
    }

    #[test]
    fn save_text_round_trips() {
        let text = "\
create b hash:ip,port family inet6 hashsize 64 maxelem 100 timeout 30 comment bucketsize 12 initval 0x0f61bb15
add b 2001:db8::1,tcp:80 timeout 29 comment \"hi there\"
add b 2001:db8::1,sctp:10 timeout 29
create c hash:net family inet hashsize 1024 maxelem 65536 counters bucketsize 12 initval 0x369e6e25
add c 10.1.0.0/16 nomatch packets 0 bytes 0
create a hash:ip family inet hashsize 1024 maxelem 65536 netmask 24 timeout 5 counters comment skbinfo bucketsize 12 initval 0x6134da5f
";
        let sets = parse_save(text).unwrap();
        assert_eq!(sets.len(), 3);
        assert_eq!(sets[0].members.len(), 2);
        let printed: String = sets.iter().map(|s| s.to_string()).collect();
        assert_eq!(printed, text);
    }
}

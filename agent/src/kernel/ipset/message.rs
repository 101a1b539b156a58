//! ipset messages: requests encoded into bytes and replies decoded from
//! bytes. Pure functions, no socket, so everything here is tested without
//! root (and fuzzed: arbitrary bytes decode to an error, never a panic).
//!
//! A request is `nlmsghdr` (type = NFNL_SUBSYS_IPSET << 8 | cmd) +
//! `nfgenmsg` (AF_INET, NFNETLINK_V0, res_id 0) + attributes, the first of
//! which is always IPSET_ATTR_PROTOCOL.

use std::{net::IpAddr, ops::Range};

use super::{
    consts::{
        cadt_flag, list_flag, AddrAttr, HeaderAttr, IpsetAttr, IpsetCmd, MemberAttr,
        IPSET_PROTOCOL, NFNETLINK_V0, NFNL_SUBSYS_IPSET,
    },
    member::{Comment, Counters, Element, Entry, Net, ProtoPort},
    types::{parse_set_type, CreateSet, IpSet, SetHeader, SetName, SetStats},
};
use crate::desired::{Family, SetType};
use crate::kernel::netlink::{
    af, family_of, finish,
    frame::{
        FAMILY_HDRLEN, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
    },
    nla::{NLA_F_NET_BYTEORDER, NLA_MAX_LEN},
    Attr, Attrs, DecodeError, Writer,
};

/// Starts a message: header with a placeholder length, nfgenmsg, protocol.
fn begin(buf: &mut Vec<u8>, command: IpsetCmd, nl_flags: u16, seq: u32) -> usize {
    let ty = u16::from(NFNL_SUBSYS_IPSET) << 8 | u16::from(u8::from(command));
    // nfgenmsg: AF_INET as libipset sends it (the ipset core ignores it).
    let nfgen = [af(Family::V4), NFNETLINK_V0, 0, 0];
    let start = crate::kernel::netlink::begin(buf, ty, nl_flags, seq, nfgen);
    Writer::new(buf).put_u8(IpsetAttr::Protocol, IPSET_PROTOCOL);
    start
}

/// NLM_F_EXCL unset is ipset's `-exist`: the kernel then ignores "already
/// exists" (create, add) and "does not exist" (destroy, del).
fn ack_flags(exist_ok: bool) -> u16 {
    let f = NLM_F_REQUEST | NLM_F_ACK;
    if exist_ok {
        f
    } else {
        f | NLM_F_EXCL
    }
}

/// IPSET_CMD_CREATE at the given type revision.
pub(super) fn create(buf: &mut Vec<u8>, seq: u32, spec: &CreateSet, revision: u8, exist_ok: bool) {
    let start = begin(
        buf,
        IpsetCmd::Create,
        ack_flags(exist_ok) | NLM_F_CREATE,
        seq,
    );
    let mut w = Writer::new(buf);
    w.put_str(IpsetAttr::Setname, spec.name.as_str());
    w.put_str(IpsetAttr::Typename, spec.set_type.name());
    w.put_u8(IpsetAttr::Revision, revision);
    w.put_u8(IpsetAttr::Family, af(spec.family));
    let nest = w.nest_start(IpsetAttr::Data);
    if let Some(t) = spec.timeout {
        w.put_be32(HeaderAttr::Timeout, t);
    }
    let mut cadt = 0;
    if spec.counters {
        cadt |= cadt_flag::WITH_COUNTERS;
    }
    if spec.comment {
        cadt |= cadt_flag::WITH_COMMENT;
    }
    if cadt != 0 {
        w.put_be32(HeaderAttr::CadtFlags, cadt);
    }
    if let Some(n) = spec.hashsize {
        w.put_be32(HeaderAttr::Hashsize, n);
    }
    if let Some(n) = spec.maxelem {
        w.put_be32(HeaderAttr::Maxelem, n);
    }
    w.nest_end(nest);
    finish(buf, start);
}

/// A command that takes one set name: destroy, flush, header.
pub(super) fn named(
    buf: &mut Vec<u8>,
    seq: u32,
    command: IpsetCmd,
    name: &SetName,
    exist_ok: bool,
) {
    let start = begin(buf, command, ack_flags(exist_ok), seq);
    Writer::new(buf).put_str(IpsetAttr::Setname, name.as_str());
    finish(buf, start);
}

/// Rename or swap: SETNAME and SETNAME2.
pub(super) fn two_names(buf: &mut Vec<u8>, seq: u32, command: IpsetCmd, a: &SetName, b: &SetName) {
    let start = begin(buf, command, ack_flags(false), seq);
    let mut w = Writer::new(buf);
    w.put_str(IpsetAttr::Setname, a.as_str());
    w.put_str(IpsetAttr::SETNAME2, b.as_str());
    finish(buf, start);
}

/// IPSET_CMD_TYPE: which revisions of `set_type` the kernel has.
pub(super) fn type_query(buf: &mut Vec<u8>, seq: u32, set_type: SetType, family: Family) {
    let start = begin(buf, IpsetCmd::Type, ack_flags(false), seq);
    let mut w = Writer::new(buf);
    w.put_str(IpsetAttr::Typename, set_type.name());
    w.put_u8(IpsetAttr::Family, af(family));
    finish(buf, start);
}

/// How much of each set a LIST dump returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ListDepth {
    /// Header and members (`ipset save`).
    Members,
    /// Header only (`ipset list -t`).
    Header,
    /// Names only (`ipset list -n`).
    Names,
}

/// IPSET_CMD_LIST as a dump: one set or all. No NLM_F_ACK: a dump that
/// cannot start already answers with one error.
pub(super) fn list(buf: &mut Vec<u8>, seq: u32, name: Option<&SetName>, depth: ListDepth) {
    let start = begin(buf, IpsetCmd::List, NLM_F_REQUEST | NLM_F_DUMP, seq);
    let mut w = Writer::new(buf);
    if let Some(n) = name {
        w.put_str(IpsetAttr::Setname, n.as_str());
    }
    let f = match depth {
        ListDepth::Members => 0,
        ListDepth::Header => list_flag::HEADER,
        ListDepth::Names => list_flag::SETNAME,
    };
    if f != 0 {
        // The dump policy reads IPSET_ATTR_FLAGS with ip_set_get_h32 (be32).
        w.put_be32(IpsetAttr::Flags, f);
    }
    finish(buf, start);
}

/// Add or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Adt {
    Add,
    Del,
}

/// One encoded ADT message of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct AdtMessage {
    pub seq: u32,
    /// Its bytes within the batch buffer.
    pub bytes: Range<usize>,
    /// The members it carries (indices into the caller's slice); the
    /// kernel's line number n points at `members.start + n - 1`.
    pub members: Range<usize>,
}

/// The longest ADT nest the kernel can read: nla_len is a u16.
pub(super) const MAX_ADT_NEST: usize = NLA_MAX_LEN;

/// Encodes `members` into as few ADT messages as the per-message limit
/// allows (`max_nest` bytes for the IPSET_ATTR_ADT nest; tests pass small
/// values), appending them to `buf`. Each element carries its 1-based line
/// number so an error names the member that failed.
pub(super) fn adt(
    buf: &mut Vec<u8>,
    op: Adt,
    set: &SetName,
    members: &[Element],
    exist_ok: bool,
    first_seq: u32,
    max_nest: usize,
) -> Vec<AdtMessage> {
    let command = match op {
        Adt::Add => IpsetCmd::Add,
        Adt::Del => IpsetCmd::Del,
    };
    let max_nest = max_nest.min(MAX_ADT_NEST);
    let mut out = Vec::new();
    let mut i = 0;
    while i < members.len() {
        let seq = first_seq.wrapping_add(out.len() as u32);
        let start = begin(buf, command, ack_flags(exist_ok), seq);
        let mut w = Writer::new(buf);
        w.put_str(IpsetAttr::Setname, set.as_str());
        // Required with ADT: the kernel writes the failing element's line
        // number here in its error reply. Big-endian, as libipset sends it.
        w.put_be32(IpsetAttr::Lineno, 0);
        let nest = w.nest_start(IpsetAttr::Adt);
        let first = i;
        while i < members.len() {
            let before = w.buf.len();
            put_member(&mut w, &members[i], (i - first + 1) as u32, op == Adt::Add);
            // One member always fits (the largest is a few hundred bytes).
            if w.buf.len() - nest > max_nest && i > first {
                w.buf.truncate(before);
                break;
            }
            i += 1;
        }
        w.nest_end(nest);
        finish(buf, start);
        out.push(AdtMessage {
            seq,
            bytes: start..buf.len(),
            members: first..i,
        });
    }
    out
}

/// One IPSET_ATTR_DATA element, attributes in libipset's order (by number,
/// line number last) so our bytes equal the CLI's. Deletes carry only the
/// element.
fn put_member(w: &mut Writer<'_>, m: &Element, lineno: u32, extensions: bool) {
    let (ip, cidr, pp, ip2) = match &m.entry {
        Entry::Ip(a) => (*a, None, None, None),
        Entry::Net(n) => (n.addr(), Some(n.prefix()), None, None),
        Entry::IpPort(a, p) => (*a, None, Some(*p), None),
        Entry::NetPort(n, p) => (n.addr(), Some(n.prefix()), Some(*p), None),
        Entry::IpPortIp(a, p, b) => (*a, None, Some(*p), Some(*b)),
    };
    let nest = w.nest_start(IpsetAttr::Data);
    put_ip(w, MemberAttr::Ip, &ip);
    if let Some(c) = cidr {
        w.put_u8(MemberAttr::Cidr, c);
    }
    if let Some(p) = pp {
        w.put_be16(MemberAttr::Port, p.port());
    }
    if let (Some(t), true) = (m.timeout, extensions) {
        w.put_be32(MemberAttr::Timeout, t);
    }
    if let Some(p) = pp {
        w.put_u8(MemberAttr::Proto, p.proto());
    }
    if m.nomatch && extensions {
        w.put_be32(MemberAttr::CadtFlags, cadt_flag::NOMATCH);
    }
    if let Some(b) = ip2 {
        put_ip(w, MemberAttr::Ip2, &b);
    }
    if let (Some(c), true) = (m.counters, extensions) {
        w.put_be64(MemberAttr::Bytes, c.bytes);
        w.put_be64(MemberAttr::Packets, c.packets);
    }
    if let (Some(c), true) = (&m.comment, extensions) {
        w.put_str(MemberAttr::Comment, c.as_str());
    }
    w.put_be32(MemberAttr::Lineno, lineno);
    w.nest_end(nest);
}

/// An address is a nest holding IPADDR_IPV4/IPV6 in network byte order.
fn put_ip(w: &mut Writer<'_>, ty: MemberAttr, a: &IpAddr) {
    let nest = w.nest_start(ty);
    match a {
        IpAddr::V4(v4) => w.put(
            u16::from(AddrAttr::Ipv4) | NLA_F_NET_BYTEORDER,
            &v4.octets(),
        ),
        IpAddr::V6(v6) => w.put(
            u16::from(AddrAttr::Ipv6) | NLA_F_NET_BYTEORDER,
            &v6.octets(),
        ),
    }
    w.nest_end(nest);
}

/// The failing element's line number in an echoed ADT request: ipset's
/// kernel side writes it into IPSET_ATTR_LINENO of its error reply.
pub(super) fn lineno(echoed: &[u8]) -> Option<u32> {
    let attrs = echoed.get(NLMSG_HDRLEN + FAMILY_HDRLEN..)?;
    Attrs::new(attrs)
        .filter_map(Result::ok)
        .find(|a| a.is(IpsetAttr::Lineno))
        // Sent big-endian (as libipset does); the kernel copies it back.
        .and_then(|a| a.be32().ok())
        .filter(|n| *n != 0)
}

/// The kernel's answer to IPSET_CMD_TYPE: (highest, lowest) revision.
pub(super) fn decode_type_reply(attrs: &[u8]) -> Result<(u8, u8), DecodeError> {
    let (mut max, mut min) = (None, None);
    for a in Attrs::new(attrs) {
        let a = a?;
        match a.kind::<IpsetAttr>() {
            IpsetAttr::Revision => max = Some(a.u8()?),
            IpsetAttr::RevisionMin => min = Some(a.u8()?),
            _ => {}
        }
    }
    let max = max.ok_or(DecodeError::Missing { what: "REVISION" })?;
    Ok((max, min.unwrap_or(0)))
}

/// The kernel's answer to IPSET_CMD_HEADER: type name, family, revision.
pub(super) fn decode_header_reply(attrs: &[u8]) -> Result<(String, u8, u8), DecodeError> {
    let (mut typename, mut family, mut revision) = (None, None, 0);
    for a in Attrs::new(attrs) {
        let a = a?;
        match a.kind::<IpsetAttr>() {
            IpsetAttr::Typename => typename = Some(a.str()?.to_owned()),
            IpsetAttr::Family => family = Some(a.u8()?),
            IpsetAttr::Revision => revision = a.u8()?,
            _ => {}
        }
    }
    Ok((
        typename.ok_or(DecodeError::Missing { what: "TYPENAME" })?,
        family.ok_or(DecodeError::Missing { what: "FAMILY" })?,
        revision,
    ))
}

/// A set the kernel listed that ipwarden cannot represent exactly: a type
/// it does not speak (bitmap, list:set, hash:mac, ...), or a name or member
/// another tool wrote that no `ipset save` line could carry. Reported by
/// name, never misread, and never a reason to fail a whole listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedSet {
    pub name: String,
    pub type_name: String,
    pub reason: String,
}

/// Collects the sets of a LIST dump. A set's first message carries its
/// header; the kernel continues long sets in further messages that repeat
/// only the name.
#[derive(Debug, Default)]
pub(super) struct ListDecoder {
    pub sets: Vec<IpSet>,
    pub unsupported: Vec<UnsupportedSet>,
    pub names: Vec<String>,
}

impl ListDecoder {
    /// Feeds the attributes of one IPSET_CMD_LIST message. Malformed
    /// framing is an error; a set that cannot be represented is moved to
    /// `unsupported`.
    pub(super) fn feed(&mut self, attrs: &[u8]) -> Result<(), DecodeError> {
        let mut name = None;
        let mut typename = None;
        let mut family = None;
        let mut revision = 0;
        let mut header = None;
        let mut adt = None;
        for a in Attrs::new(attrs) {
            let a = a?;
            match a.kind::<IpsetAttr>() {
                IpsetAttr::Setname => name = Some(a.str()?),
                IpsetAttr::Typename => typename = Some(a.str()?),
                IpsetAttr::Family => family = Some(a.u8()?),
                IpsetAttr::Revision => revision = a.u8()?,
                IpsetAttr::Data => header = Some(a),
                IpsetAttr::Adt => adt = Some(a),
                _ => {}
            }
        }
        let name = name.ok_or(DecodeError::Missing { what: "SETNAME" })?;
        if self.names.last().is_none_or(|n| n != name) {
            self.names.push(name.to_owned());
        }
        if let Some(typename) = typename {
            let header = header.ok_or(DecodeError::Missing { what: "DATA" })?;
            if let Err(reason) = self.start_set(name, typename, family, revision, header) {
                self.skip(name, typename, reason);
                return Ok(());
            }
        } else if self.unsupported.last().is_some_and(|u| u.name == name) {
            return Ok(());
        }
        let Some(adt) = adt else {
            return Ok(());
        };
        let set = match self.sets.last_mut() {
            Some(s) if s.name.as_str() == name => s,
            _ => {
                return Err(DecodeError::Orphan {
                    set: name.to_owned(),
                })
            }
        };
        let (set_type, fam) = (set.header.set_type, set.header.family);
        for d in adt.nested() {
            let d = d?;
            if !d.is(IpsetAttr::Data) {
                continue;
            }
            match decode_member(set_type, fam, &d) {
                Ok(m) => set.members.push(m),
                Err(e) => {
                    self.sets.pop();
                    self.skip(name, set_type.name(), format!("a member: {e}"));
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn start_set(
        &mut self,
        name: &str,
        typename: &str,
        family: Option<u8>,
        revision: u8,
        header: Attr<'_>,
    ) -> Result<(), String> {
        let set_type = parse_set_type(typename).map_err(|_| "type not supported".to_owned())?;
        let fam = family
            .and_then(|f| family_of(f.into()))
            .ok_or_else(|| format!("family {family:?} not supported"))?;
        let name = SetName::new(name).map_err(|e| e.to_string())?;
        let (header, mut stats) =
            decode_set_header(set_type, fam, header).map_err(|e| format!("header: {e}"))?;
        stats.revision = revision;
        self.sets.push(IpSet {
            name,
            header,
            stats: Some(stats),
            members: Vec::new(),
        });
        Ok(())
    }

    fn skip(&mut self, name: &str, type_name: &str, reason: String) {
        self.unsupported.push(UnsupportedSet {
            name: name.to_owned(),
            type_name: type_name.to_owned(),
            reason,
        });
    }
}

fn decode_set_header(
    set_type: SetType,
    family: Family,
    a: Attr<'_>,
) -> Result<(SetHeader, SetStats), DecodeError> {
    let mut h = SetHeader::bare(set_type, family);
    let mut s = SetStats::default();
    for a in a.nested() {
        let a = a?;
        match a.kind::<HeaderAttr>() {
            HeaderAttr::Hashsize => h.hashsize = a.be32()?,
            HeaderAttr::Maxelem => h.maxelem = a.be32()?,
            HeaderAttr::Netmask => h.netmask = Some(a.u8()?),
            HeaderAttr::Timeout => h.timeout = Some(a.be32()?),
            HeaderAttr::Bucketsize => h.bucketsize = Some(a.u8()?),
            HeaderAttr::Initval => h.initval = Some(a.be32()?),
            HeaderAttr::References => s.references = a.be32()?,
            HeaderAttr::Memsize => s.memsize = a.be32()?,
            HeaderAttr::Elements => s.entries = a.be32()?,
            HeaderAttr::CadtFlags => {
                let f = a.be32()?;
                h.counters = f & cadt_flag::WITH_COUNTERS != 0;
                h.comment = f & cadt_flag::WITH_COMMENT != 0;
                h.skbinfo = f & cadt_flag::WITH_SKBINFO != 0;
            }
            _ => {}
        }
    }
    Ok((h, s))
}

fn decode_ip(a: &Attr<'_>, family: Family) -> Result<IpAddr, DecodeError> {
    for inner in a.nested() {
        let inner = inner?;
        match (inner.kind(), family) {
            (AddrAttr::Ipv4, Family::V4) => return Ok(IpAddr::from(inner.array::<4>()?)),
            (AddrAttr::Ipv6, Family::V6) => return Ok(IpAddr::from(inner.array::<16>()?)),
            _ => {}
        }
    }
    Err(DecodeError::Missing {
        what: "IPADDR of the set's family",
    })
}

/// One member from its IPSET_ATTR_DATA nest.
pub(super) fn decode_member(
    set_type: SetType,
    family: Family,
    d: &Attr<'_>,
) -> Result<Element, DecodeError> {
    let (mut ip, mut ip2, mut cidr, mut port, mut proto) = (None, None, None, None, None);
    let mut m_flags = 0;
    let (mut timeout, mut packets, mut bytes, mut comment) = (None, None, None, None);
    for a in d.nested() {
        let a = a?;
        match a.kind::<MemberAttr>() {
            MemberAttr::Ip => ip = Some(decode_ip(&a, family)?),
            MemberAttr::Ip2 => ip2 = Some(decode_ip(&a, family)?),
            MemberAttr::Cidr => cidr = Some(a.u8()?),
            MemberAttr::Port => port = Some(a.be16()?),
            MemberAttr::Proto => proto = Some(a.u8()?),
            MemberAttr::CadtFlags => m_flags = a.be32()?,
            MemberAttr::Timeout => timeout = Some(a.be32()?),
            MemberAttr::Packets => packets = Some(a.be64()?),
            MemberAttr::Bytes => bytes = Some(a.be64()?),
            MemberAttr::Comment => comment = Some(a.str()?),
            _ => {}
        }
    }
    let bad = |ty: MemberAttr, e: super::types::ParseError| DecodeError::BadValue {
        ty: ty.into(),
        reason: e.to_string(),
    };
    let ip = ip.ok_or(DecodeError::Missing { what: "IP" })?;
    let net = || match cidr {
        Some(c) => Net::new(ip, c).map_err(|e| bad(MemberAttr::Cidr, e)),
        None => Ok(Net::host(ip)),
    };
    let pp = || {
        let proto = proto.ok_or(DecodeError::Missing { what: "PROTO" })?;
        ProtoPort::new(proto, port.unwrap_or(0)).map_err(|e| bad(MemberAttr::Proto, e))
    };
    let entry = match set_type {
        SetType::HashIp => Entry::Ip(ip),
        SetType::HashNet => Entry::Net(net()?),
        SetType::HashIpPort => Entry::IpPort(ip, pp()?),
        SetType::HashNetPort => Entry::NetPort(net()?, pp()?),
        SetType::HashIpPortIp => {
            Entry::IpPortIp(ip, pp()?, ip2.ok_or(DecodeError::Missing { what: "IP2" })?)
        }
    };
    let mut m = Element::new(entry);
    m.nomatch = m_flags & cadt_flag::NOMATCH != 0;
    m.timeout = timeout;
    if packets.is_some() || bytes.is_some() {
        m.counters = Some(Counters {
            packets: packets.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        });
    }
    if let Some(c) = comment {
        m.comment = Some(Comment::new(c).map_err(|e| bad(MemberAttr::Comment, e))?);
    }
    Ok(m)
}

#[cfg(test)]
mod tests;

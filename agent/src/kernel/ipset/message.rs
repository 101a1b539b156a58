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
        cadt_flag, list_flag, AddrAttr, HeaderAttr, IpsetAttr, MemberAttr, IPSET_PROTOCOL,
        NFNETLINK_V0, NFNL_SUBSYS_IPSET,
    },
    error::Op,
    member::{shape, Comment, Counters, Element, Entry, Net, ProtoPort},
    types::{parse_set_type, CreateSet, IpSet, ParseError, SetHeader, SetName, SetStats},
};
use crate::desired::{Family, SetType};
use crate::kernel::netlink::{
    af, family_of, finish,
    frame::{
        FAMILY_HDRLEN, NLMSG_HDRLEN, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
    },
    nla::{NLA_F_NET_BYTEORDER, NLA_MAX_LEN},
    Attr, AttrTable, Attrs, DecodeError, Writer,
};

/// Starts a message: header with a placeholder length, nfgenmsg, protocol.
fn begin(buf: &mut Vec<u8>, command: Op, nl_flags: u16, seq: u32) -> usize {
    let ty = u16::from(NFNL_SUBSYS_IPSET) << 8 | command as u16;
    // nfgenmsg: AF_INET as libipset sends it (the ipset core ignores it).
    let nfgen = [af(Family::V4), NFNETLINK_V0, 0, 0];
    let start = crate::kernel::netlink::begin(buf, ty, nl_flags, seq, nfgen);
    Writer::new(buf).put_u8(IpsetAttr::Protocol, IPSET_PROTOCOL);
    start
}

/// Appends one whole request: [`begin`], what `attrs` writes, the length.
fn request(buf: &mut Vec<u8>, command: Op, flags: u16, seq: u32, attrs: impl FnOnce(&mut Writer)) {
    let start = begin(buf, command, flags, seq);
    attrs(&mut Writer::new(buf));
    finish(buf, start);
}

/// NLM_F_EXCL unset is ipset's `-exist`: the kernel then ignores "already
/// exists" (create, add) and "does not exist" (destroy, del).
fn ack_flags(exist_ok: bool) -> u16 {
    let excl = if exist_ok { 0 } else { NLM_F_EXCL };
    NLM_F_REQUEST | NLM_F_ACK | excl
}

/// IPSET_CMD_CREATE at the given type revision.
pub(super) fn create(buf: &mut Vec<u8>, seq: u32, spec: &CreateSet, revision: u8, exist_ok: bool) {
    let flags = ack_flags(exist_ok) | NLM_F_CREATE;
    request(buf, Op::Create, flags, seq, |w| {
        w.put_str(IpsetAttr::Setname, spec.name.as_str());
        w.put_str(IpsetAttr::Typename, spec.set_type.name());
        w.put_u8(IpsetAttr::Revision, revision);
        w.put_u8(IpsetAttr::Family, af(spec.family));
        w.nested(IpsetAttr::Data, |w| {
            if let Some(t) = spec.timeout {
                w.put_be32(HeaderAttr::Timeout, t);
            }
            let cadt = flag(spec.counters, cadt_flag::WITH_COUNTERS)
                | flag(spec.comment, cadt_flag::WITH_COMMENT);
            if cadt != 0 {
                w.put_be32(HeaderAttr::CadtFlags, cadt);
            }
            for (ty, n) in [
                (HeaderAttr::Hashsize, spec.hashsize),
                (HeaderAttr::Maxelem, spec.maxelem),
            ] {
                n.inspect(|n| w.put_be32(ty, *n));
            }
        });
    });
}

fn flag(on: bool, bit: u32) -> u32 {
    if on {
        bit
    } else {
        0
    }
}

/// A command that takes one set name (destroy, flush, header), or two
/// (rename, swap: SETNAME2).
pub(super) fn named(buf: &mut Vec<u8>, seq: u32, command: Op, names: &[&SetName], exist_ok: bool) {
    request(buf, command, ack_flags(exist_ok), seq, |w| {
        for (ty, name) in [IpsetAttr::Setname, IpsetAttr::SETNAME2]
            .into_iter()
            .zip(names)
        {
            w.put_str(ty, name.as_str());
        }
    });
}

/// IPSET_CMD_TYPE: which revisions of `set_type` the kernel has.
pub(super) fn type_query(buf: &mut Vec<u8>, seq: u32, set_type: SetType, family: Family) {
    request(buf, Op::Type, ack_flags(false), seq, |w| {
        w.put_str(IpsetAttr::Typename, set_type.name());
        w.put_u8(IpsetAttr::Family, af(family));
    });
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
    request(buf, Op::List, NLM_F_REQUEST | NLM_F_DUMP, seq, |w| {
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
    });
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

/// Encodes the add or del (`op`) of `members` into as few ADT messages as
/// the per-message limit allows (`max_nest` bytes for the IPSET_ATTR_ADT
/// nest; tests pass small values), appending them to `buf`. Each element
/// carries its 1-based line number so an error names the member that failed.
pub(super) fn adt(
    buf: &mut Vec<u8>,
    op: Op,
    set: &SetName,
    members: &[Element],
    exist_ok: bool,
    first_seq: u32,
    max_nest: usize,
) -> Vec<AdtMessage> {
    let max_nest = max_nest.min(MAX_ADT_NEST);
    let mut out = Vec::new();
    let mut i = 0;
    while i < members.len() {
        let seq = first_seq.wrapping_add(out.len() as u32);
        let (start, first) = (buf.len(), i);
        request(buf, op, ack_flags(exist_ok), seq, |w| {
            w.put_str(IpsetAttr::Setname, set.as_str());
            // Required with ADT: the kernel writes the failing element's line
            // number here in its error reply. Big-endian, as libipset sends it.
            w.put_be32(IpsetAttr::Lineno, 0);
            w.nested(IpsetAttr::Adt, |w| {
                let nest = w.buf.len() - 4;
                while i < members.len() {
                    let before = w.buf.len();
                    put_member(w, &members[i], (i - first + 1) as u32, op == Op::Add);
                    // One member always fits (the largest is a few hundred bytes).
                    if w.buf.len() - nest > max_nest && i > first {
                        w.buf.truncate(before);
                        break;
                    }
                    i += 1;
                }
            });
        });
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
    let (net, pp, ip2) = m.entry.parts();
    let timeout = m.timeout.filter(|_| extensions);
    let counters = m.counters.filter(|_| extensions);
    let comment = m.comment.as_ref().filter(|_| extensions);
    w.nested(IpsetAttr::Data, |w| {
        put_ip(w, MemberAttr::Ip, &net.addr());
        if m.entry.set_type().has_nomatch() {
            w.put_u8(MemberAttr::Cidr, net.prefix());
        }
        pp.inspect(|p| w.put_be16(MemberAttr::Port, p.port()));
        timeout.inspect(|t| w.put_be32(MemberAttr::Timeout, *t));
        pp.inspect(|p| w.put_u8(MemberAttr::Proto, p.proto()));
        if m.nomatch && extensions {
            w.put_be32(MemberAttr::CadtFlags, cadt_flag::NOMATCH);
        }
        ip2.inspect(|b| put_ip(w, MemberAttr::Ip2, b));
        if let Some(c) = counters {
            w.put_be64(MemberAttr::Bytes, c.bytes);
            w.put_be64(MemberAttr::Packets, c.packets);
        }
        comment.inspect(|c| w.put_str(MemberAttr::Comment, c.as_str()));
        w.put_be32(MemberAttr::Lineno, lineno);
    });
}

/// An address is a nest holding IPADDR_IPV4/IPV6 in network byte order.
fn put_ip(w: &mut Writer<'_>, ty: MemberAttr, a: &IpAddr) {
    let ty_of = |kind: AddrAttr| u16::from(kind) | NLA_F_NET_BYTEORDER;
    w.nested(ty, |w| match a {
        IpAddr::V4(v4) => w.put(ty_of(AddrAttr::Ipv4), &v4.octets()),
        IpAddr::V6(v6) => w.put(ty_of(AddrAttr::Ipv6), &v6.octets()),
    });
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
    let t: AttrTable<IpsetAttr> = AttrTable::parse(attrs)?;
    let min = t.read(IpsetAttr::RevisionMin, Attr::u8)?;
    Ok((
        t.need(IpsetAttr::Revision, "REVISION")?.u8()?,
        min.unwrap_or(0),
    ))
}

/// The kernel's answer to IPSET_CMD_HEADER: type name, family, revision.
pub(super) fn decode_header_reply(attrs: &[u8]) -> Result<(String, u8, u8), DecodeError> {
    let t: AttrTable<IpsetAttr> = AttrTable::parse(attrs)?;
    let revision = t.read(IpsetAttr::Revision, Attr::u8)?;
    Ok((
        t.need(IpsetAttr::Typename, "TYPENAME")?.str()?.to_owned(),
        t.need(IpsetAttr::Family, "FAMILY")?.u8()?,
        revision.unwrap_or(0),
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
        let t: AttrTable<IpsetAttr> = AttrTable::parse(attrs)?;
        let name = t.need(IpsetAttr::Setname, "SETNAME")?.str()?;
        if self.names.last().is_none_or(|n| n != name) {
            self.names.push(name.to_owned());
        }
        if let Some(typename) = t.read(IpsetAttr::Typename, Attr::str)? {
            let header = t.need(IpsetAttr::Data, "DATA")?;
            let family = t.read(IpsetAttr::Family, Attr::u8)?;
            let revision = t.read(IpsetAttr::Revision, Attr::u8)?.unwrap_or(0);
            if let Err(reason) = self.start_set(name, typename, family, revision, header) {
                self.skip(name, typename, reason);
                return Ok(());
            }
        } else if self.unsupported.last().is_some_and(|u| u.name == name) {
            return Ok(());
        }
        let Some(adt) = t.get(IpsetAttr::Adt) else {
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
    let t: AttrTable<HeaderAttr> = AttrTable::parse(a.payload)?;
    let be32 = |ty| t.read(ty, Attr::be32);
    let u8_of = |ty| t.read(ty, Attr::u8);
    let flags = be32(HeaderAttr::CadtFlags)?.unwrap_or(0);
    let header = SetHeader {
        hashsize: be32(HeaderAttr::Hashsize)?.unwrap_or(0),
        maxelem: be32(HeaderAttr::Maxelem)?.unwrap_or(0),
        netmask: u8_of(HeaderAttr::Netmask)?,
        timeout: be32(HeaderAttr::Timeout)?,
        counters: flags & cadt_flag::WITH_COUNTERS != 0,
        comment: flags & cadt_flag::WITH_COMMENT != 0,
        skbinfo: flags & cadt_flag::WITH_SKBINFO != 0,
        bucketsize: u8_of(HeaderAttr::Bucketsize)?,
        initval: be32(HeaderAttr::Initval)?,
        ..SetHeader::bare(set_type, family)
    };
    let stats = SetStats {
        revision: 0,
        references: be32(HeaderAttr::References)?.unwrap_or(0),
        memsize: be32(HeaderAttr::Memsize)?.unwrap_or(0),
        entries: be32(HeaderAttr::Elements)?.unwrap_or(0),
    };
    Ok((header, stats))
}

/// The address of `family` in an IP or IP2 nest.
fn decode_ip(a: Attr<'_>, family: Family) -> Result<IpAddr, DecodeError> {
    let t: AttrTable<AddrAttr> = AttrTable::parse(a.payload)?;
    let missing = DecodeError::Missing {
        what: "IPADDR of the set's family",
    };
    Ok(match family {
        Family::V4 => IpAddr::from(t.get(AddrAttr::Ipv4).ok_or(missing)?.array::<4>()?),
        Family::V6 => IpAddr::from(t.get(AddrAttr::Ipv6).ok_or(missing)?.array::<16>()?),
    })
}

/// One member from its IPSET_ATTR_DATA nest.
pub(super) fn decode_member(
    set_type: SetType,
    family: Family,
    d: &Attr<'_>,
) -> Result<Element, DecodeError> {
    let t: AttrTable<MemberAttr> = AttrTable::parse(d.payload)?;
    let bad = |ty: MemberAttr| {
        move |e: ParseError| DecodeError::BadValue {
            ty: ty.into(),
            reason: e.to_string(),
        }
    };
    let ip = |ty, what| decode_ip(t.need(ty, what)?, family);
    let first = ip(MemberAttr::Ip, "IP")?;
    let net = match t.get(MemberAttr::Cidr) {
        Some(c) if set_type.has_nomatch() => {
            Net::new(first, c.u8()?).map_err(bad(MemberAttr::Cidr))?
        }
        _ => Net::host(first),
    };
    let (has_port, has_ip2) = shape(set_type);
    let pp = if has_port {
        let proto = t.need(MemberAttr::Proto, "PROTO")?.u8()?;
        let port = t.read(MemberAttr::Port, Attr::be16)?;
        Some(ProtoPort::new(proto, port.unwrap_or(0)).map_err(bad(MemberAttr::Proto))?)
    } else {
        None
    };
    let ip2 = has_ip2.then(|| ip(MemberAttr::Ip2, "IP2")).transpose()?;
    // `shape` gave exactly the parts the type takes, so this never fails.
    let parts = DecodeError::Missing { what: "a part" };
    let entry = Entry::from_parts(set_type, net, pp, ip2).ok_or(parts)?;
    let be32 = |ty| t.read(ty, Attr::be32);
    let be64 = |ty| t.read(ty, Attr::be64);
    let (packets, bytes) = (be64(MemberAttr::Packets)?, be64(MemberAttr::Bytes)?);
    let comment = t.read(MemberAttr::Comment, Attr::str)?;
    Ok(Element {
        entry,
        nomatch: be32(MemberAttr::CadtFlags)?.unwrap_or(0) & cadt_flag::NOMATCH != 0,
        timeout: be32(MemberAttr::Timeout)?,
        counters: (packets.is_some() || bytes.is_some()).then(|| Counters {
            packets: packets.unwrap_or(0),
            bytes: bytes.unwrap_or(0),
        }),
        comment: comment
            .map(Comment::new)
            .transpose()
            .map_err(bad(MemberAttr::Comment))?,
    })
}

#[cfg(test)]
mod tests;

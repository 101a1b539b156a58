//! Golden bytes captured from ipset v7.17 (`strace -e write=N` /
//! `-e read=N` on the CLI, kernel 6.18), then encode/decode properties.

use proptest::prelude::*;

use neli::consts::nl::NlmF;

use super::*;
use crate::kernel::ipset::member::Comment;
use crate::kernel::netlink::{frame::NLMSGERR_ATTR_MSG, frames, Frame, Reply};

/// Each message of a datagram: its sequence number, what it means, and
/// the line an error names.
fn read<'a>(buf: &'a [u8]) -> Vec<(u32, Reply<'a>, Option<u32>)> {
    let read = |f: Frame<'a>| (f.seq, f.reply().unwrap(), lineno(f.echoed()));
    frames(buf).map(|f| read(f.unwrap())).collect()
}

/// The attributes of an ipset message of command `cmd`.
fn ipset_attrs(f: Frame<'_>, cmd: Op) -> &[u8] {
    assert_eq!(f.ty, u16::from(NFNL_SUBSYS_IPSET) << 8 | cmd as u16);
    match f.reply().unwrap() {
        Reply::Data { attrs, .. } => attrs,
        other => panic!("not an ipset message: {other:?}"),
    }
}

fn name(s: &str) -> SetName {
    SetName::new(s).unwrap()
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

/// `ipset create g hash:net,port family inet6 hashsize 64 maxelem 100
/// timeout 30 comment`, seq 0x6b060938, revision 8.
const CREATE_GOLDEN: &str = "
    6c 00 00 00  02 06  05 06  38 09 06 6b  00 00 00 00
    02 00 00 00
    05 00 01 00  07 00 00 00
    06 00 02 00  67 00 00 00
    12 00 03 00  68 61 73 68 3a 6e 65 74 2c 70 6f 72 74 00 00 00
    05 00 04 00  08 00 00 00
    05 00 05 00  0a 00 00 00
    24 00 07 80
      08 00 06 40  00 00 00 1e
      08 00 08 40  00 00 00 10
      08 00 12 40  00 00 00 40
      08 00 13 40  00 00 00 64";
// len 108 | type IPSET<<8|CREATE | flags REQUEST|ACK|EXCL|CREATE | seq | pid
// nfgenmsg: AF_INET, v0, res_id 0
// PROTOCOL 7
// SETNAME "g"
// TYPENAME "hash:net,port"
// REVISION 8
// FAMILY NFPROTO_IPV6
// DATA (nested): TIMEOUT be32 30, CADT_FLAGS be32 WITH_COMMENT,
//                HASHSIZE be32 64, MAXELEM be32 100

#[test]
fn create_matches_the_cli_byte_for_byte() {
    let spec = CreateSet::new(name("g"), SetType::HashNetPort, Family::V6)
        .hashsize(64)
        .maxelem(100)
        .timeout(30)
        .comment();
    let mut buf = Vec::new();
    create(&mut buf, 0x6b06_0938, &spec, 8, false);
    assert_eq!(buf, hex(CREATE_GOLDEN));
}

/// `ipset restore` of "add c 10.0.0.3,udp:1,10.0.0.4" and
/// "add c 10.0.0.5,udp:2,10.0.0.6": one ADD with an ADT nest of two DATA.
const RESTORE_IPPORTIP_GOLDEN: &str = "
    98 00 00 00  09 06  05 02  39 09 06 6b  00 00 00 00
    02 00 00 00
    05 00 01 00  07 00 00 00
    06 00 02 00  63 00 00 00
    08 00 09 40  00 00 00 01
    6c 00 08 80
      34 00 07 80
        0c 00 01 80  08 00 01 40  0a 00 00 03
        06 00 04 40  00 01 00 00
        05 00 07 00  11 00 00 00
        0c 00 14 80  08 00 01 40  0a 00 00 04
        08 00 09 40  00 00 00 01
      34 00 07 80
        0c 00 01 80  08 00 01 40  0a 00 00 05
        06 00 04 40  00 02 00 00
        05 00 07 00  11 00 00 00
        0c 00 14 80  08 00 01 40  0a 00 00 06
        08 00 09 40  00 00 00 02";
// flags REQUEST|ACK|EXCL; LINENO (cmd level, be32): libipset sends the
// restore line, we send 0 (the kernel only writes it); ADT (nested):
// DATA { IP {IPV4 10.0.0.3}, PORT be16 1, PROTO 17, IP2 {IPV4 10.0.0.4},
// LINENO be32 1 }, DATA { ... line 2 }

/// `ipset restore` of `add g 2001:db8::/64,udp:53 timeout 5 comment "hi"
/// nomatch`.
const RESTORE_NETPORT6_GOLDEN: &str = "
    84 00 00 00  09 06  05 02  38 09 06 6b  00 00 00 00
    02 00 00 00
    05 00 01 00  07 00 00 00
    06 00 02 00  67 00 00 00
    08 00 09 40  00 00 00 01
    58 00 08 80
      54 00 07 80
        18 00 01 80  14 00 02 40  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 00
        05 00 03 00  40 00 00 00
        06 00 04 40  00 35 00 00
        08 00 06 40  00 00 00 05
        05 00 07 00  11 00 00 00
        08 00 08 40  00 00 00 04
        07 00 1a 00  68 69 00 00
        08 00 09 40  00 00 00 01";
// DATA { IP {IPV6 2001:db8::}, CIDR 64, PORT 53, TIMEOUT 5, PROTO 17,
// CADT_FLAGS NOMATCH, COMMENT "hi", LINENO 1 }

/// Offset of the command-level LINENO value: nlmsghdr 16 + nfgenmsg 4 +
/// PROTOCOL 8 + SETNAME of a one-letter name 8 + attribute header 4.
const CMD_LINENO_AT: usize = 40;

fn golden_without_cmd_lineno(s: &str) -> Vec<u8> {
    let mut b = hex(s);
    b[CMD_LINENO_AT..CMD_LINENO_AT + 4].copy_from_slice(&[0; 4]);
    b
}

#[test]
fn batched_add_matches_the_cli_byte_for_byte() {
    let members: Vec<Element> = ["10.0.0.3,udp:1,10.0.0.4", "10.0.0.5,udp:2,10.0.0.6"]
        .iter()
        .map(|m| Element::parse(SetType::HashIpPortIp, m).unwrap())
        .collect();
    let mut buf = Vec::new();
    let msgs = adt(
        &mut buf,
        Op::Add,
        &name("c"),
        &members,
        false,
        0x6b06_0939,
        MAX_ADT_NEST,
    );
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].members, 0..2);
    assert_eq!(buf, golden_without_cmd_lineno(RESTORE_IPPORTIP_GOLDEN));

    let m = Element::parse(
        SetType::HashNetPort,
        "2001:db8::/64,udp:53 timeout 5 nomatch comment \"hi\"",
    )
    .unwrap();
    let mut buf = Vec::new();
    adt(
        &mut buf,
        Op::Add,
        &name("g"),
        &[m],
        false,
        0x6b06_0938,
        MAX_ADT_NEST,
    );
    assert_eq!(buf, golden_without_cmd_lineno(RESTORE_NETPORT6_GOLDEN));
}

/// Reply to `ipset list n`: one LIST message (header and both members)...
const LIST_REPLY_GOLDEN: &str = "
    28 01 00 00  07 06  02 00  3e 09 06 6b  85 53 00 00
    02 00 00 00
    05 00 01 00  07 00 00 00
    06 00 02 00  6e 00 00 00
    12 00 03 00  68 61 73 68 3a 6e 65 74 2c 70 6f 72 74 00 00 00
    05 00 05 00  0a 00 00 00
    05 00 04 00  08 00 00 00
    06 00 0b 40  00 00 00 00
    4c 00 07 80
      08 00 12 40  00 00 00 40
      08 00 13 40  00 00 00 08
      05 00 15 00  0c 00 00 00
      08 00 11 40  40 65 bb de
      08 00 19 40  00 00 00 00
      08 00 1a 40  00 00 05 cc
      08 00 18 40  00 00 00 02
      08 00 06 40  00 00 00 64
      08 00 08 40  00 00 00 10
    8c 00 08 80
      3c 00 07 80
        18 00 01 80  14 00 02 00  20 01 0d b8 00 01 00 00 00 00 00 00 00 00 00 01
        06 00 04 40  01 bb 00 00
        05 00 03 00  80 00 00 00
        05 00 07 00  06 00 00 00
        08 00 06 40  00 00 00 00
      4c 00 07 80
        18 00 01 80  14 00 02 00  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 00
        06 00 04 40  00 35 00 00
        05 00 03 00  40 00 00 00
        05 00 07 00  11 00 00 00
        08 00 08 40  00 00 00 04
        08 00 06 40  00 00 00 00
        08 00 1a 00  64 6e 73 00";
// flags NLM_F_MULTI; PROTOCOL, SETNAME "n", TYPENAME, FAMILY inet6,
// REVISION 8, INDEX be16 0; DATA { HASHSIZE 64, MAXELEM 8, BUCKETSIZE 12,
// INITVAL, REFERENCES 0, MEMSIZE 1484, ELEMENTS 2, TIMEOUT 100,
// CADT_FLAGS WITH_COMMENT }; ADT { DATA {...}, DATA {...} }. The kernel
// writes IPADDR_IPV6 without NLA_F_NET_BYTEORDER.

/// ... then NLMSG_DONE with status 0.
const DONE_GOLDEN: &str = "14 00 00 00 03 00 02 00 3e 09 06 6b 85 53 00 00 00 00 00 00";

#[test]
fn a_list_reply_decodes_to_what_ipset_save_prints() {
    let mut bytes = hex(LIST_REPLY_GOLDEN);
    bytes.extend(hex(DONE_GOLDEN));
    let mut d = ListDecoder::default();
    let mut done = false;
    for f in frames(&bytes).map(Result::unwrap) {
        assert_eq!(f.seq, 0x6b06_093e);
        match f.reply().unwrap() {
            Reply::Done => done = true,
            _ => d.feed(ipset_attrs(f, Op::List)).unwrap(),
        }
    }
    assert!(done);
    assert_eq!(d.names, ["n"]);
    assert_eq!(d.sets.len(), 1);
    let set = &d.sets[0];
    assert_eq!(
        set.to_string(),
        "create n hash:net,port family inet6 hashsize 64 maxelem 8 timeout 100 comment \
         bucketsize 12 initval 0x4065bbde\n\
         add n 2001:db8:1::1,tcp:443 timeout 0\n\
         add n 2001:db8::/64,udp:53 timeout 0 nomatch comment \"dns\"\n"
    );
    assert_eq!(
        set.stats,
        Some(SetStats {
            revision: 8,
            references: 0,
            memsize: 0x5cc,
            entries: 2,
        })
    );
}

/// The kernel's answer when line 2 of a batched ADD already exists: the
/// request echoed whole, its LINENO set to the failing element's number.
const EXIST_ERROR_GOLDEN: &str = "
    cc 00 00 00  02 00  00 00  40 09 06 6b  89 53 00 00
    f9 ef ff ff
    b8 00 00 00  09 06 05 02  40 09 06 6b  00 00 00 00
    02 00 00 00
    05 00 01 00  07 00 00 00
    06 00 02 00  6e 00 00 00
    08 00 09 40  00 00 00 02
    8c 00 08 80
      44 00 07 80
        18 00 01 80  14 00 02 40  20 01 0d b8 00 02 00 00 00 00 00 00 00 00 00 00
        05 00 03 00  30 00 00 00
        06 00 04 40  00 01 00 00
        08 00 06 40  00 00 00 00
        05 00 07 00  06 00 00 00
        08 00 09 40  00 00 00 01
      44 00 07 80
        18 00 01 80  14 00 02 40  20 01 0d b8 00 00 00 00 00 00 00 00 00 00 00 00
        05 00 03 00  40 00 00 00
        06 00 04 40  00 35 00 00
        08 00 06 40  00 00 00 00
        05 00 07 00  11 00 00 00
        08 00 09 40  00 00 00 02";
// NLMSG_ERROR, error -4103 (IPSET_ERR_EXIST), then the request.

#[test]
fn an_adt_error_names_the_failing_line() {
    let bytes = hex(EXIST_ERROR_GOLDEN);
    let error = Reply::Error {
        errno: 4103,
        extack: None,
    };
    assert_eq!(read(&bytes), [(0x6b06_0940, error, Some(2))]);
}

#[test]
fn acks_capped_errors_and_extack_text_decode() {
    // An ACK: error 0 and the request's header.
    let mut b = Vec::new();
    b.extend_from_slice(&36u32.to_ne_bytes());
    b.extend_from_slice(&2u16.to_ne_bytes());
    b.extend_from_slice(&0u16.to_ne_bytes());
    b.extend_from_slice(&7u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&0i32.to_ne_bytes());
    b.extend_from_slice(&[0; 16]);
    // A capped error with an extack message TLV.
    let start = b.len();
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&2u16.to_ne_bytes());
    b.extend_from_slice(&(NlmF::CAPPED | NlmF::ACK_TLVS).bits().to_ne_bytes());
    b.extend_from_slice(&8u32.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    b.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
    b.extend_from_slice(&[0; 16]);
    Writer::new(&mut b).put_str(NLMSGERR_ATTR_MSG, "no such set");
    let len = (b.len() - start) as u32;
    b[start..start + 4].copy_from_slice(&len.to_ne_bytes());
    let error = Reply::Error {
        errno: libc::ENOENT,
        extack: Some("no such set".into()),
    };
    assert_eq!(read(&b), [(7, Reply::Ack, None), (8, error, None)]);
}

#[test]
fn type_and_header_replies_decode() {
    let mut b = Vec::new();
    let mut w = Writer::new(&mut b);
    w.put_u8(IpsetAttr::Protocol, 7);
    w.put_str(IpsetAttr::Typename, "hash:ip,port");
    w.put_u8(IpsetAttr::Family, 2);
    w.put_u8(IpsetAttr::Revision, 7);
    w.put_u8(IpsetAttr::RevisionMin, 0);
    assert_eq!(decode_type_reply(&b).unwrap(), (7, 0));
    assert_eq!(
        decode_header_reply(&b).unwrap(),
        ("hash:ip,port".to_owned(), 2, 7)
    );
    assert!(decode_type_reply(&[]).is_err());
}

#[test]
fn many_members_split_under_the_nest_limit() {
    let members: Vec<Element> = (0..100_000u32)
        .map(|i| {
            Element::new(Entry::IpPort(
                IpAddr::from((0x0a00_0000 + i).to_be_bytes()),
                ProtoPort::tcp((i % 65535) as u16 + 1),
            ))
        })
        .collect();
    let mut buf = Vec::new();
    let msgs = adt(
        &mut buf,
        Op::Add,
        &name("big"),
        &members,
        true,
        100,
        MAX_ADT_NEST,
    );
    assert!(msgs.len() > 1);
    let mut next = 0;
    for (k, m) in msgs.iter().enumerate() {
        assert_eq!(m.seq, 100 + k as u32);
        assert_eq!(m.members.start, next);
        next = m.members.end;
        let mut messages = frames(&buf[m.bytes.clone()]).map(Result::unwrap);
        let attrs = ipset_attrs(messages.next().unwrap(), Op::Add);
        assert!(messages.next().is_none());
        let adt_attr = Attrs::new(attrs)
            .map(Result::unwrap)
            .find(|a| a.is(IpsetAttr::Adt))
            .unwrap();
        assert!(adt_attr.payload.len() + 4 <= MAX_ADT_NEST);
    }
    assert_eq!(next, members.len());
    // Packed close to the limit: no more messages than needed plus one.
    let total: usize = msgs.iter().map(|m| m.bytes.len()).sum();
    assert!(msgs.len() <= total / MAX_ADT_NEST + 1);
}

/// Decodes the members of our own ADT messages back.
fn decode_adt(buf: &[u8], set_type: SetType, family: Family) -> Vec<Element> {
    let mut out = Vec::new();
    for f in frames(buf) {
        let attrs = ipset_attrs(f.unwrap(), Op::Add);
        for a in Attrs::new(attrs).map(Result::unwrap) {
            if a.is(IpsetAttr::Adt) {
                for d in a.nested().map(Result::unwrap) {
                    out.push(decode_member(set_type, family, &d).unwrap());
                }
            }
        }
    }
    out
}

fn arb_ip(family: Family) -> BoxedStrategy<IpAddr> {
    match family {
        Family::V4 => any::<[u8; 4]>().prop_map(IpAddr::from).boxed(),
        Family::V6 => any::<[u8; 16]>().prop_map(IpAddr::from).boxed(),
    }
}

fn arb_proto_port(family: Family) -> BoxedStrategy<ProtoPort> {
    let icmp = match family {
        Family::V4 => (any::<u8>(), any::<u8>())
            .prop_map(|(t, c)| ProtoPort::icmp(t, c))
            .boxed(),
        Family::V6 => (any::<u8>(), any::<u8>())
            .prop_map(|(t, c)| ProtoPort::icmpv6(t, c))
            .boxed(),
    };
    prop_oneof![
        any::<u16>().prop_map(ProtoPort::tcp),
        any::<u16>().prop_map(ProtoPort::udp),
        any::<u16>().prop_map(ProtoPort::sctp),
        icmp,
        (1u8..=255)
            .prop_filter("ports", |p| ![1, 6, 17, 58, 132, 136].contains(p))
            .prop_map(|p| ProtoPort::new(p, 0).unwrap()),
    ]
    .boxed()
}

fn arb_entry(set_type: SetType, family: Family) -> BoxedStrategy<Entry> {
    let net = (arb_ip(family), 1..=family.host_prefix())
        .prop_map(|(a, p)| Net::new(a, p).unwrap())
        .boxed();
    match set_type {
        SetType::HashIp => arb_ip(family).prop_map(Entry::Ip).boxed(),
        SetType::HashNet => net.prop_map(Entry::Net).boxed(),
        SetType::HashIpPort => (arb_ip(family), arb_proto_port(family))
            .prop_map(|(a, p)| Entry::IpPort(a, p))
            .boxed(),
        SetType::HashNetPort => (net, arb_proto_port(family))
            .prop_map(|(n, p)| Entry::NetPort(n, p))
            .boxed(),
        SetType::HashIpPortIp => (arb_ip(family), arb_proto_port(family), arb_ip(family))
            .prop_map(|(a, p, b)| Entry::IpPortIp(a, p, b))
            .boxed(),
    }
}

fn arb_member(set_type: SetType, family: Family) -> BoxedStrategy<Element> {
    (
        arb_entry(set_type, family),
        any::<bool>(),
        proptest::option::of(any::<u32>()),
        proptest::option::of((any::<u64>(), any::<u64>())),
        proptest::option::of("[a-zA-Z0-9 ._:-]{1,40}"),
    )
        .prop_map(
            move |(entry, nomatch, timeout, counters, comment)| Element {
                entry,
                nomatch: nomatch && set_type.has_nomatch(),
                timeout,
                counters: counters.map(|(packets, bytes)| Counters { packets, bytes }),
                comment: comment.map(|c| Comment::new(c).unwrap()),
            },
        )
        .boxed()
}

fn arb_typed_members() -> impl Strategy<Value = (SetType, Family, Vec<Element>)> {
    (
        proptest::sample::select(SetType::ALL.to_vec()),
        prop_oneof![Just(Family::V4), Just(Family::V6)],
    )
        .prop_flat_map(|(t, f)| {
            (
                Just(t),
                Just(f),
                proptest::collection::vec(arb_member(t, f), 1..60),
            )
        })
}

proptest! {
    /// What we encode decodes to the same members, split at any limit,
    /// and every member prints and parses back to itself.
    #[test]
    fn members_survive_encode_decode_and_text(
        (set_type, family, members) in arb_typed_members(),
        max_nest in 200usize..4000,
    ) {
        let mut buf = Vec::new();
        let msgs = adt(&mut buf, Op::Add, &name("p"), &members, false, 1, max_nest);
        prop_assert_eq!(msgs.last().map(|m| m.members.end), Some(members.len()));
        prop_assert_eq!(decode_adt(&buf, set_type, family), members.clone());
        for m in &members {
            let back = Element::parse(set_type, &m.to_string());
            prop_assert_eq!(back.as_ref(), Ok(m));
        }
    }

    /// Arbitrary bytes never panic a decoder: they decode or return Err.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for f in frames(&bytes).flatten() {
            let _ = (f.reply(), lineno(f.echoed()));
        }
        let _ = ListDecoder::default().feed(&bytes);
        let _ = decode_type_reply(&bytes);
        let _ = decode_header_reply(&bytes);
        for a in Attrs::new(&bytes).flatten() {
            for t in SetType::ALL {
                let _ = decode_member(t, Family::V4, &a);
                let _ = decode_member(t, Family::V6, &a);
            }
            let _ = (a.u8(), a.be16(), a.be32(), a.be64(), a.str());
        }
    }

    /// Well-formed framing around arbitrary attribute bytes: the attribute
    /// walkers behind LIST decoding never panic either.
    #[test]
    fn arbitrary_list_payloads_never_panic(
        attrs in proptest::collection::vec(any::<u8>(), 0..512),
        header_first in any::<bool>(),
    ) {
        let mut d = ListDecoder::default();
        if header_first {
            let mut b = Vec::new();
            let mut w = Writer::new(&mut b);
            w.put_str(IpsetAttr::Setname, "x");
            w.put_str(IpsetAttr::Typename, "hash:ip,port");
            w.put_u8(IpsetAttr::Family, 2);
            let n = w.nest_start(IpsetAttr::Data);
            w.nest_end(n);
            d.feed(&b).unwrap();
        }
        let mut b = Vec::new();
        let mut w = Writer::new(&mut b);
        w.put_str(IpsetAttr::Setname, "x");
        w.put(IpsetAttr::Adt, &attrs);
        let _ = d.feed(&b);
        let mut msg = Vec::new();
        let start = begin(&mut msg, Op::List, 0, 1);
        msg.extend_from_slice(&attrs);
        finish(&mut msg, start);
        for f in frames(&msg).flatten() {
            if let Ok(Reply::Data { attrs, .. }) = f.reply() {
                let _ = ListDecoder::default().feed(attrs);
            }
        }
    }
}

/// One LIST message: header (when `typename` is given) and members whose
/// comment is `comment`.
fn list_msg(set: &str, typename: Option<&str>, comments: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    let mut w = Writer::new(&mut b);
    w.put_str(IpsetAttr::Setname, set);
    if let Some(t) = typename {
        w.put_str(IpsetAttr::Typename, t);
        w.put_u8(IpsetAttr::Family, 2);
        let n = w.nest_start(IpsetAttr::Data);
        w.put_be32(HeaderAttr::Hashsize, 1024);
        w.put_be32(HeaderAttr::Maxelem, 65536);
        w.put_be32(HeaderAttr::CadtFlags, cadt_flag::WITH_COMMENT);
        w.nest_end(n);
    }
    let adt = w.nest_start(IpsetAttr::Adt);
    for (i, c) in comments.iter().enumerate() {
        let d = w.nest_start(IpsetAttr::Data);
        put_ip(
            &mut w,
            MemberAttr::Ip,
            &IpAddr::from([10, 0, 0, i as u8 + 1]),
        );
        w.put_str(MemberAttr::Comment, c);
        w.nest_end(d);
    }
    w.nest_end(adt);
    b
}

#[test]
fn sets_no_save_line_can_carry_are_reported_not_fatal() {
    let mut d = ListDecoder::default();
    // Another tool's comment with a quote: the set is skipped whole,
    // including the messages that continue it.
    d.feed(&list_msg("quoted", Some("hash:ip"), &["ok", "a\"b"]))
        .unwrap();
    d.feed(&list_msg("quoted", None, &["more"])).unwrap();
    // A name with a space.
    d.feed(&list_msg("two words", Some("hash:ip"), &[]))
        .unwrap();
    // A type ipwarden does not speak.
    d.feed(&list_msg("macs", Some("hash:mac"), &[])).unwrap();
    d.feed(&list_msg("good", Some("hash:ip"), &["x"])).unwrap();
    d.feed(&list_msg("good", None, &["y"])).unwrap();
    let skipped: Vec<&str> = d.unsupported.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(skipped, ["quoted", "two words", "macs"]);
    assert!(
        d.unsupported[0].reason.contains("comment"),
        "{:?}",
        d.unsupported[0]
    );
    assert_eq!(d.sets.len(), 1);
    assert_eq!(d.sets[0].members.len(), 2);
    assert_eq!(d.names, ["quoted", "two words", "macs", "good"]);
    // Members of a set whose header never came are a malformed dump.
    assert!(matches!(
        ListDecoder::default().feed(&list_msg("lost", None, &["x"])),
        Err(DecodeError::Orphan { .. })
    ));
}

//! Golden bytes, written field by field from `include/uapi/linux/ip_vs.h`
//! and the netlink policy and fill functions of
//! `net/netfilter/ipvs/ip_vs_ctl.c`: the kernel's replies, and our requests
//! where they differ from ipvsadm's (ipvsadm's own, captured, are in
//! ipvsadm.rs, with the services, timeouts and flush we send byte for byte). Each test checks both directions:
//! our encoder produces exactly these bytes, and our decoder reads them
//! back into the value. Integers in host order are little endian here,
//! hence the cfg.
#![cfg(target_endian = "little")]

use super::{attrs_of, encoded, ip, FAMILY};
use crate::desired::Family;
use crate::kernel::ipvs::{
    message::{
        decode_destination, decode_family_id, decode_info, decode_service, encode_query,
        encode_request, encode_resolve, Query,
    },
    Destination, DestinationEntry, DestinationKey, ForwardMethod, IpvsError, Netmask, Request,
    Scheduler, Service, ServiceEntry, ServiceFlagBits, ServiceKey,
};
use crate::kernel::netlink::{frames, Reply};

#[rustfmt::skip]
const ADD_DEST_FWMARK_V6: &[u8] = &[
    // struct nlmsghdr
    112, 0, 0, 0,           // nlmsg_len: 16 + 4 + 20 + 72
    0x34, 0x12,             // nlmsg_type
    0x05, 0x00,             // NLM_F_REQUEST | NLM_F_ACK
    2, 0, 0, 0,             // nlmsg_seq
    0, 0, 0, 0,             // nlmsg_pid
    // struct genlmsghdr
    5, 1, 0, 0,             // cmd IPVS_CMD_NEW_DEST, version 1, reserved
    // IPVS_CMD_ATTR_SERVICE, nested: only the key
    20, 0, 0x01, 0x80,
    6, 0, 1, 0,   10, 0, 0, 0,                // IPVS_SVC_ATTR_AF: AF_INET6, pad
    8, 0, 5, 0,   7, 0, 0, 0,                 // IPVS_SVC_ATTR_FWMARK: u32 7
    // IPVS_CMD_ATTR_DEST, nested
    72, 0, 0x02, 0x80,
    20, 0, 1, 0,  0xfd, 0, 0, 0, 0, 0, 0, 0,  // IPVS_DEST_ATTR_ADDR: fd00::2
                  0, 0, 0, 0, 0, 0, 0, 2,
    6, 0, 2, 0,   0x1f, 0x90, 0, 0,           // IPVS_DEST_ATTR_PORT: be16 8080, pad
    8, 0, 3, 0,   2, 0, 0, 0,                 // IPVS_DEST_ATTR_FWD_METHOD: IP_VS_CONN_F_TUNNEL
    8, 0, 4, 0,   5, 0, 0, 0,                 // IPVS_DEST_ATTR_WEIGHT: 5
    8, 0, 5, 0,   100, 0, 0, 0,               // IPVS_DEST_ATTR_U_THRESH: 100
    8, 0, 6, 0,   10, 0, 0, 0,                // IPVS_DEST_ATTR_L_THRESH: 10
    6, 0, 11, 0,  10, 0, 0, 0,                // IPVS_DEST_ATTR_ADDR_FAMILY: AF_INET6, pad
];

#[test]
fn add_destination_to_fwmark_v6() {
    let key = ServiceKey::fwmark(Family::V6, 7);
    let dest = Destination::new(ip("fd00::2"), 8080)
        .forward(ForwardMethod::Tunnel)
        .weight(5)
        .thresholds(100, 10);
    let req = Request::AddDestination {
        service: key,
        destination: dest,
    };
    assert_eq!(encoded(&req, 2), ADD_DEST_FWMARK_V6);

    let (cmd, attrs) = attrs_of(ADD_DEST_FWMARK_V6);
    assert_eq!(cmd, 5);
    let got = decode_destination(attrs, Family::V6).unwrap();
    assert_eq!(got.destination, dest);
}

#[rustfmt::skip]
const DEL_DEST_UDP_V4: &[u8] = &[
    // struct nlmsghdr
    108, 0, 0, 0,           // nlmsg_len: 16 + 4 + 48 + 40
    0x34, 0x12, 0x05, 0x00, // type, NLM_F_REQUEST | NLM_F_ACK
    3, 0, 0, 0,  0, 0, 0, 0,// seq 3, pid 0
    7, 1, 0, 0,             // IPVS_CMD_DEL_DEST, version 1
    // IPVS_CMD_ATTR_SERVICE: key only (AF, PROTOCOL, ADDR, PORT)
    48, 0, 0x01, 0x80,
    6, 0, 1, 0,   2, 0, 0, 0,                 // AF_INET
    6, 0, 2, 0,   17, 0, 0, 0,                // IPPROTO_UDP
    20, 0, 3, 0,  192, 168, 1, 1,  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    6, 0, 4, 0,   0, 53, 0, 0,                // port 53
    // IPVS_CMD_ATTR_DEST: key only (ADDR, PORT) and the family
    40, 0, 0x02, 0x80,
    20, 0, 1, 0,  10, 1, 0, 9,  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    6, 0, 2, 0,   0, 53, 0, 0,
    6, 0, 11, 0,  2, 0, 0, 0,
];

#[test]
fn delete_destination_sends_only_keys() {
    let req = Request::DeleteDestination {
        service: ServiceKey::udp(ip("192.168.1.1"), 53),
        destination: DestinationKey {
            addr: ip("10.1.0.9"),
            port: 53,
        },
    };
    assert_eq!(encoded(&req, 3), DEL_DEST_UDP_V4);
}

#[rustfmt::skip]
const DUMP_SERVICES: &[u8] = &[
    20, 0, 0, 0,
    0x34, 0x12,
    0x01, 0x03,             // NLM_F_REQUEST | NLM_F_DUMP (ROOT | MATCH)
    6, 0, 0, 0,  0, 0, 0, 0,
    4, 1, 0, 0,             // IPVS_CMD_GET_SERVICE, version 1
];

#[rustfmt::skip]
const DUMP_DESTS: &[u8] = &[
    40, 0, 0, 0,  0x34, 0x12, 0x01, 0x03,  7, 0, 0, 0,  0, 0, 0, 0,
    8, 1, 0, 0,             // IPVS_CMD_GET_DEST: which service, by key
    20, 0, 0x01, 0x80,
    6, 0, 1, 0,   2, 0, 0, 0,                 // AF_INET
    8, 0, 5, 0,   0x2a, 0, 0, 0,              // fwmark 42
];

#[rustfmt::skip]
const RESOLVE_FAMILY: &[u8] = &[
    32, 0, 0, 0,
    0x10, 0x00,             // GENL_ID_CTRL
    0x01, 0x00,             // NLM_F_REQUEST: the reply is the answer
    8, 0, 0, 0,  0, 0, 0, 0,
    3, 2, 0, 0,             // CTRL_CMD_GETFAMILY, controller version 2
    9, 0, 2, 0,   b'I', b'P', b'V', b'S', 0, 0, 0, 0, // CTRL_ATTR_FAMILY_NAME "IPVS\0", pad
];

#[test]
fn queries() {
    let mut out = Vec::new();
    encode_query(&Query::Services, FAMILY, 6, &mut out);
    assert_eq!(out, DUMP_SERVICES);

    let key = ServiceKey::fwmark(Family::V4, 42);
    out.clear();
    encode_query(&Query::Destinations(&key), FAMILY, 7, &mut out);
    assert_eq!(out, DUMP_DESTS);

    out.clear();
    encode_resolve(8, &mut out);
    assert_eq!(out, RESOLVE_FAMILY);
}

/// What `ip_vs_genl_dump_service` sends for
/// `ipvsadm -A -t 10.0.0.1:80 -s wrr -p 300 -M 255.255.255.0`, with a
/// few counters set. The kernel nests without NLA_F_NESTED.
#[rustfmt::skip]
const SERVICE_DUMP_MESSAGE: &[u8] = &[
    // struct nlmsghdr
    184, 0, 0, 0,           // nlmsg_len: 16 + 4 + 164
    0x34, 0x12,
    0x02, 0x00,             // NLM_F_MULTI
    9, 0, 0, 0,  0x78, 0x56, 0, 0,            // seq 9, our port id
    1, 1, 0, 0,             // IPVS_CMD_NEW_SERVICE, version 1
    164, 0, 1, 0,           // IPVS_CMD_ATTR_SERVICE (nla_nest_start_noflag)
    6, 0, 1, 0,   2, 0, 0, 0,                 // AF_INET
    6, 0, 2, 0,   6, 0, 0, 0,                 // IPPROTO_TCP
    20, 0, 3, 0,  10, 0, 0, 1,  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    6, 0, 4, 0,   0, 80, 0, 0,                // be16 80
    8, 0, 6, 0,   b'w', b'r', b'r', 0,        // "wrr\0"
    12, 0, 7, 0,  3, 0, 0, 0,                 // flags PERSISTENT | HASHED
                  0xff, 0xff, 0xff, 0xff,     // mask ~0
    8, 0, 8, 0,   0x2c, 0x01, 0, 0,           // timeout 300 (svc->timeout / HZ)
    8, 0, 9, 0,   255, 255, 255, 0,           // nla_put_be32 netmask 255.255.255.0
    // IPVS_SVC_ATTR_STATS: u32 counters, u64 bytes (after a PAD where
    // needed); the traffic counters here and below are skipped, not read
    40, 0, 10, 0,
    8, 0, 1, 0,   3, 0, 0, 0,                 // CONNS 3
    4, 0, 11, 0,                              // IPVS_STATS_ATTR_PAD
    12, 0, 4, 0,  0xe8, 0x03, 0, 0, 0, 0, 0, 0, // INBYTES 1000
    12, 0, 5, 0,  0, 0, 0, 0, 0, 0, 0, 0,     // OUTBYTES 0 (truncated below 2^32 here)
    // IPVS_SVC_ATTR_STATS64: every counter u64; preferred
    40, 0, 12, 0,
    12, 0, 1, 0,  3, 0, 0, 0, 0, 0, 0, 0,     // CONNS 3
    12, 0, 4, 0,  0xe8, 0x03, 0, 0, 0, 0, 0, 0, // INBYTES 1000
    12, 0, 5, 0,  0, 0xf2, 0x05, 0x2a, 1, 0, 0, 0, // OUTBYTES 5_000_000_000
];

#[test]
fn decode_service_dump_message() {
    let (cmd, attrs) = attrs_of(SERVICE_DUMP_MESSAGE);
    assert_eq!(cmd, 1);
    let want = ServiceEntry {
        service: Service {
            key: ServiceKey::tcp(ip("10.0.0.1"), 80),
            scheduler: Scheduler::weighted_round_robin(),
            flags: ServiceFlagBits::PERSISTENT | ServiceFlagBits::HASHED,
            timeout: 300,
            netmask: Netmask::prefix(Family::V4, 24).unwrap(),
        },
        pe_name: None,
    };
    assert_eq!(decode_service(attrs).unwrap(), want);

    // Writing it back sends the same key and settings, HASHED left out.
    let mut out = Vec::new();
    encode_request(
        &Request::EditService(want.service.clone()),
        FAMILY,
        9,
        &mut out,
    )
    .unwrap();
    let (_, sent) = attrs_of(&out);
    let back = decode_service(sent).unwrap().service;
    assert_eq!(back.flags, ServiceFlagBits::PERSISTENT);
    assert!(back.same_config(&want.service));
}

/// What `ip_vs_genl_dump_dest` sends for a route destination 10.1.0.1:8080
/// of weight 2, thresholds 50/5, with one active connection.
#[rustfmt::skip]
const DEST_DUMP_MESSAGE: &[u8] = &[
    152, 0, 0, 0,  0x34, 0x12, 0x02, 0x00,  10, 0, 0, 0,  0x78, 0x56, 0, 0,
    5, 1, 0, 0,             // IPVS_CMD_NEW_DEST
    132, 0, 2, 0,           // IPVS_CMD_ATTR_DEST
    20, 0, 1, 0,  10, 1, 0, 1,  0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // ADDR
    6, 0, 2, 0,   0x1f, 0x90, 0, 0,           // PORT be16 8080
    8, 0, 3, 0,   3, 0, 0, 0,                 // FWD_METHOD IP_VS_CONN_F_DROUTE
    8, 0, 4, 0,   2, 0, 0, 0,                 // WEIGHT 2
    5, 0, 13, 0,  0, 0, 0, 0,                 // TUN_TYPE u8 IPIP, pad
    6, 0, 14, 0,  0, 0, 0, 0,                 // TUN_PORT be16 0, pad
    6, 0, 15, 0,  0, 0, 0, 0,                 // TUN_FLAGS u16 0, pad
    8, 0, 5, 0,   50, 0, 0, 0,                // U_THRESH 50
    8, 0, 6, 0,   5, 0, 0, 0,                 // L_THRESH 5
    8, 0, 7, 0,   1, 0, 0, 0,                 // ACTIVE_CONNS 1
    8, 0, 8, 0,   0, 0, 0, 0,                 // INACT_CONNS 0
    8, 0, 9, 0,   0, 0, 0, 0,                 // PERSIST_CONNS 0
    6, 0, 11, 0,  2, 0, 0, 0,                 // ADDR_FAMILY AF_INET
    12, 0, 12, 0,                             // STATS64
    8, 0, 1, 0,   1, 0, 0, 0,                 //   a 4-byte counter, skipped too
];

#[test]
fn decode_destination_dump_message() {
    let (cmd, attrs) = attrs_of(DEST_DUMP_MESSAGE);
    assert_eq!(cmd, 5);
    let want = DestinationEntry {
        destination: Destination::new(ip("10.1.0.1"), 8080)
            .forward(ForwardMethod::Route)
            .weight(2)
            .thresholds(50, 5),
        active_conns: 1,
        inactive_conns: 0,
    };
    assert_eq!(decode_destination(attrs, Family::V4).unwrap(), want);
}

#[rustfmt::skip]
const INFO_REPLY: &[u8] = &[
    36, 0, 0, 0,  0x34, 0x12, 0, 0,  11, 0, 0, 0,  0x78, 0x56, 0, 0,
    14, 1, 0, 0,                              // IPVS_CMD_SET_INFO (GET_INFO's reply)
    8, 0, 1, 0,   0x01, 0x02, 0x01, 0x00,     // IPVS_INFO_ATTR_VERSION 0x010201
    8, 0, 2, 0,   0x00, 0x10, 0, 0,           // IPVS_INFO_ATTR_CONN_TAB_SIZE 4096
];

#[test]
fn decode_info_reply() {
    let info = decode_info(attrs_of(INFO_REPLY).1).unwrap();
    assert_eq!(info.version_string(), "1.2.1");
    assert_eq!(info.conn_tab_size, 4096);
}

#[rustfmt::skip]
const CTRL_REPLY: &[u8] = &[
    40, 0, 0, 0,  0x10, 0, 0, 0,  8, 0, 0, 0,  0x78, 0x56, 0, 0,
    1, 2, 0, 0,                               // CTRL_CMD_NEWFAMILY
    6, 0, 1, 0,   0x23, 0, 0, 0,              // CTRL_ATTR_FAMILY_ID 0x23, pad
    9, 0, 2, 0,   b'I', b'P', b'V', b'S', 0, 0, 0, 0, // CTRL_ATTR_FAMILY_NAME
];

#[test]
fn decode_controller_reply() {
    assert_eq!(decode_family_id(attrs_of(CTRL_REPLY).1).unwrap(), 0x23);
}

/// `netlink_ack` for `IPVS_CMD_NEW_SERVICE` refused with EEXIST, on a
/// socket with NETLINK_CAP_ACK: only the request's header is echoed.
#[rustfmt::skip]
const EEXIST_ACK: &[u8] = &[
    36, 0, 0, 0,
    2, 0,                   // NLMSG_ERROR
    0x00, 0x01,             // NLM_F_CAPPED
    1, 0, 0, 0,  0x78, 0x56, 0, 0,
    0xef, 0xff, 0xff, 0xff, // error: -EEXIST (-17)
    104, 0, 0, 0,  0x34, 0x12, 0x05, 0x00,  1, 0, 0, 0,  0, 0, 0, 0, // the request's header
];

#[test]
fn decode_error_ack() {
    let f = frames(EEXIST_ACK).next().unwrap().unwrap();
    assert_eq!(f.seq, 1);
    let Reply::Error { errno, extack } = f.reply().unwrap() else {
        panic!("not an error")
    };
    let req = Request::AddService(Service::new(
        ServiceKey::tcp(ip("10.0.0.1"), 80),
        Scheduler::round_robin(),
    ));
    let err = IpvsError::from_errno(req.op(), req.target(), errno, extack, req.scheduler());
    assert!(err.is_exists());
    assert_eq!(
        err.to_string(),
        "add service TCP 10.0.0.1:80: already exists"
    );
}

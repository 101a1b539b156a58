//! ipvsadm's own requests, captured (ipvsadm v1.31 of Debian 12, in the
//! IPVS VM on Debian's 6.1 kernel) with
//! `strace -f -xx -e trace=sendmsg ipvsadm ...`; each constant is the
//! message after its `struct nlmsghdr` (the genl header and attributes),
//! whose seq, port id and IPVS family id differ from run to run and are
//! set by `message` below. The command of each capture is above it.
//!
//! Where our request is ipvsadm's, it is compared byte for byte. Where
//! ipvsadm sends more (the whole service where only its key is needed, a
//! destination's tunnel fields, NLM_F_ACK on a dump), every attribute we
//! send is checked to be, byte for byte, one ipvsadm sends in the same
//! place, and ipvsadm's message decodes to our value.
#![cfg(target_endian = "little")]

use super::{encoded, ip, FAMILY};
use crate::desired::Family;
use crate::kernel::ipvs::{
    message::{decode_destination, decode_service, decode_timeouts, encode_query, Query},
    Destination, DestinationKey, ForwardMethod, Netmask, Request, Scheduler, Service,
    ServiceFlagBits, ServiceKey, Timeouts,
};

const NLM_F_REQUEST_ACK: u16 = 0x0005;
const NLA_F_NESTED: u16 = 0x8000;

/// A captured message under the header our encoder writes: length,
/// `FAMILY`, `flags`, `seq`, port id 0 (the kernel fills it in).
fn message(flags: u16, seq: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(16 + body.len() as u32).to_le_bytes());
    out.extend_from_slice(&FAMILY.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The attributes in `b`: (type with its flags, payload).
fn attrs(mut b: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_le_bytes([b[0], b[1]]) as usize;
        out.push((u16::from_le_bytes([b[2], b[3]]), &b[4..len]));
        b = &b[((len + 3) & !3).min(b.len())..];
    }
    out
}

/// Every attribute of `ours` (nested ones attribute by attribute) is, byte
/// for byte, one that ipvsadm sends in the same place.
fn assert_ipvsadm_sends(ours: &[u8], theirs: &[u8], at: &str) {
    let theirs = attrs(theirs);
    for (ty, value) in attrs(ours) {
        let Some(&(_, t)) = theirs.iter().find(|(t, _)| *t == ty) else {
            panic!("{at}: ipvsadm sends no attribute {ty:#06x}");
        };
        if ty & NLA_F_NESTED != 0 {
            assert_ipvsadm_sends(value, t, &format!("{at}/{:#x}", ty & !NLA_F_NESTED));
        } else {
            assert_eq!(value, t, "{at}: attribute {ty:#06x}");
        }
    }
}

/// Our request against ipvsadm's capture: the same flags, command and
/// version, and only attributes ipvsadm sends.
fn assert_subset_of_ipvsadm(ours: &[u8], captured: &[u8]) {
    assert_eq!(ours[6..8], NLM_F_REQUEST_ACK.to_le_bytes(), "flags");
    assert_eq!(ours[16..20], captured[..4], "genl header");
    assert_ipvsadm_sends(&ours[20..], &captured[4..], "attributes");
}

// ipvsadm -A -t 10.0.0.1:80 -s rr
#[rustfmt::skip]
const ADD_SERVICE_TCP_V4: &[u8] = &[
    1, 1, 0, 0, 84, 0, 1, 128, 6, 0, 1, 0, 2, 0, 0, 0,
    6, 0, 2, 0, 6, 0, 0, 0, 20, 0, 3, 0, 10, 0, 0, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 4, 0,
    0, 80, 0, 0, 7, 0, 6, 0, 114, 114, 0, 0, 12, 0, 7, 0,
    0, 0, 0, 0, 255, 255, 255, 255, 8, 0, 8, 0, 0, 0, 0, 0,
    8, 0, 9, 0, 255, 255, 255, 255,
];

// ipvsadm -A -t 10.0.0.2:80 -s wrr -p 300 -M 255.255.255.0
#[rustfmt::skip]
const ADD_SERVICE_WRR_PERSISTENT: &[u8] = &[
    1, 1, 0, 0, 84, 0, 1, 128, 6, 0, 1, 0, 2, 0, 0, 0,
    6, 0, 2, 0, 6, 0, 0, 0, 20, 0, 3, 0, 10, 0, 0, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 4, 0,
    0, 80, 0, 0, 8, 0, 6, 0, 119, 114, 114, 0, 12, 0, 7, 0,
    1, 0, 0, 0, 255, 255, 255, 255, 8, 0, 8, 0, 44, 1, 0, 0,
    8, 0, 9, 0, 255, 255, 255, 0,
];

// ipvsadm -E -t 10.0.0.2:80 -s rr
#[rustfmt::skip]
const EDIT_SERVICE: &[u8] = &[
    2, 1, 0, 0, 84, 0, 1, 128, 6, 0, 1, 0, 2, 0, 0, 0,
    6, 0, 2, 0, 6, 0, 0, 0, 20, 0, 3, 0, 10, 0, 0, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 4, 0,
    0, 80, 0, 0, 7, 0, 6, 0, 114, 114, 0, 0, 12, 0, 7, 0,
    0, 0, 0, 0, 255, 255, 255, 255, 8, 0, 8, 0, 0, 0, 0, 0,
    8, 0, 9, 0, 255, 255, 255, 255,
];

// ipvsadm --set 900 120 300
#[rustfmt::skip]
const SET_TIMEOUTS: &[u8] = &[
    12, 1, 0, 0, 8, 0, 4, 0, 132, 3, 0, 0, 8, 0, 5, 0,
    120, 0, 0, 0, 8, 0, 6, 0, 44, 1, 0, 0,
];

// ipvsadm -C
#[rustfmt::skip]
const FLUSH: &[u8] = &[
    17, 1, 0, 0,
];

// ipvsadm -D -t 10.0.0.2:80 (the whole service, an empty scheduler)
#[rustfmt::skip]
const DEL_SERVICE: &[u8] = &[
    3, 1, 0, 0, 84, 0, 1, 128, 6, 0, 1, 0, 2, 0, 0, 0,
    6, 0, 2, 0, 6, 0, 0, 0, 20, 0, 3, 0, 10, 0, 0, 2,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 4, 0,
    0, 80, 0, 0, 5, 0, 6, 0, 0, 0, 0, 0, 12, 0, 7, 0,
    0, 0, 0, 0, 255, 255, 255, 255, 8, 0, 8, 0, 0, 0, 0, 0,
    8, 0, 9, 0, 255, 255, 255, 255,
];

// ipvsadm -a -f 7 -6 -r [fd00::2]:8080 -i -w 5 -x 100 -y 10
#[rustfmt::skip]
const ADD_DEST_FWMARK_V6: &[u8] = &[
    5, 1, 0, 0, 56, 0, 1, 128, 6, 0, 1, 0, 10, 0, 0, 0,
    8, 0, 5, 0, 7, 0, 0, 0, 5, 0, 6, 0, 0, 0, 0, 0,
    12, 0, 7, 0, 0, 0, 0, 0, 255, 255, 255, 255, 8, 0, 8, 0,
    0, 0, 0, 0, 8, 0, 9, 0, 128, 0, 0, 0, 96, 0, 2, 128,
    6, 0, 11, 0, 10, 0, 0, 0, 20, 0, 1, 0, 253, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 6, 0, 2, 0,
    31, 144, 0, 0, 8, 0, 3, 0, 2, 0, 0, 0, 8, 0, 4, 0,
    5, 0, 0, 0, 5, 0, 13, 0, 0, 0, 0, 0, 6, 0, 14, 0,
    0, 0, 0, 0, 6, 0, 15, 0, 0, 0, 0, 0, 8, 0, 5, 0,
    100, 0, 0, 0, 8, 0, 6, 0, 10, 0, 0, 0,
];

// ipvsadm -d -u 192.168.1.1:53 -r 10.1.0.9:53
#[rustfmt::skip]
const DEL_DEST_UDP_V4: &[u8] = &[
    7, 1, 0, 0, 84, 0, 1, 128, 6, 0, 1, 0, 2, 0, 0, 0,
    6, 0, 2, 0, 17, 0, 0, 0, 20, 0, 3, 0, 192, 168, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 4, 0,
    0, 53, 0, 0, 5, 0, 6, 0, 0, 0, 0, 0, 12, 0, 7, 0,
    0, 0, 0, 0, 255, 255, 255, 255, 8, 0, 8, 0, 0, 0, 0, 0,
    8, 0, 9, 0, 255, 255, 255, 255, 96, 0, 2, 128, 6, 0, 11, 0,
    2, 0, 0, 0, 20, 0, 1, 0, 10, 1, 0, 9, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 6, 0, 2, 0, 0, 53, 0, 0,
    8, 0, 3, 0, 3, 0, 0, 0, 8, 0, 4, 0, 1, 0, 0, 0,
    5, 0, 13, 0, 0, 0, 0, 0, 6, 0, 14, 0, 0, 0, 0, 0,
    6, 0, 15, 0, 0, 0, 0, 0, 8, 0, 5, 0, 0, 0, 0, 0,
    8, 0, 6, 0, 0, 0, 0, 0,
];

// ipvsadm -Ln (a dump, flags NLM_F_REQUEST | NLM_F_ACK | NLM_F_DUMP)
#[rustfmt::skip]
const DUMP_SERVICES: &[u8] = &[
    4, 1, 0, 0,
];

// ipvsadm -Ln -f 42: the destinations of FWM 42 (a dump)
#[rustfmt::skip]
const DUMP_DESTS_FWMARK: &[u8] = &[
    8, 1, 0, 0, 20, 0, 1, 128, 6, 0, 1, 0, 2, 0, 0, 0,
    8, 0, 5, 0, 42, 0, 0, 0,
];

#[test]
fn services_are_encoded_as_ipvsadm_encodes_them() {
    let rr = |addr: &str| Service::new(ServiceKey::tcp(ip(addr), 80), Scheduler::round_robin());
    let add = Request::AddService(rr("10.0.0.1"));
    assert_eq!(
        encoded(&add, 1),
        message(NLM_F_REQUEST_ACK, 1, ADD_SERVICE_TCP_V4)
    );
    let persistent = Service {
        scheduler: Scheduler::weighted_round_robin(),
        flags: ServiceFlagBits::PERSISTENT,
        timeout: 300,
        netmask: Netmask::prefix(Family::V4, 24).unwrap(),
        ..rr("10.0.0.2")
    };
    assert_eq!(
        encoded(&Request::AddService(persistent), 1),
        message(NLM_F_REQUEST_ACK, 1, ADD_SERVICE_WRR_PERSISTENT)
    );
    let edit = Request::EditService(rr("10.0.0.2"));
    assert_eq!(
        encoded(&edit, 1),
        message(NLM_F_REQUEST_ACK, 1, EDIT_SERVICE)
    );
    // ipvsadm's request carries the layout the kernel's dump answers with.
    let service = decode_service(&ADD_SERVICE_TCP_V4[4..]).unwrap().service;
    assert_eq!(service, rr("10.0.0.1"));
}

#[test]
fn timeouts_and_flush_are_encoded_as_ipvsadm_encodes_them() {
    let t = Timeouts {
        tcp: 900,
        tcp_fin: 120,
        udp: 300,
    };
    assert_eq!(
        encoded(&Request::SetTimeouts(t), 1),
        message(NLM_F_REQUEST_ACK, 1, SET_TIMEOUTS)
    );
    // GET_CONFIG's reply carries the same three attributes.
    assert_eq!(decode_timeouts(&SET_TIMEOUTS[4..]).unwrap(), t);
    assert_eq!(
        encoded(&Request::Flush, 1),
        message(NLM_F_REQUEST_ACK, 1, FLUSH)
    );
}

/// A delete names the service by its key only, where ipvsadm sends its
/// whole (empty) configuration too.
#[test]
fn deletes_send_the_keys_ipvsadm_sends() {
    let key = ServiceKey::tcp(ip("10.0.0.2"), 80);
    assert_subset_of_ipvsadm(&encoded(&Request::DeleteService(key), 1), DEL_SERVICE);
    let req = Request::DeleteDestination {
        service: ServiceKey::udp(ip("192.168.1.1"), 53),
        destination: DestinationKey {
            addr: ip("10.1.0.9"),
            port: 53,
        },
    };
    assert_subset_of_ipvsadm(&encoded(&req, 1), DEL_DEST_UDP_V4);
}

/// A destination: the service by its key, the destination's fields as
/// ipvsadm writes them (it adds the tunnel fields, zero here); ipvsadm's
/// destination decodes to ours.
#[test]
fn destinations_are_encoded_with_ipvsadm_attributes() {
    let dest = Destination::new(ip("fd00::2"), 8080)
        .forward(ForwardMethod::Tunnel)
        .weight(5)
        .thresholds(100, 10);
    let req = Request::AddDestination {
        service: ServiceKey::fwmark(Family::V6, 7),
        destination: dest,
    };
    assert_subset_of_ipvsadm(&encoded(&req, 1), ADD_DEST_FWMARK_V6);
    let theirs = decode_destination(&ADD_DEST_FWMARK_V6[4..], Family::V6).unwrap();
    assert_eq!(theirs.destination, dest);
}

/// Dumps: ipvsadm's command and key, byte for byte; ipvsadm also asks
/// for an ack (NLM_F_ACK), which a dump's NLMSG_DONE makes needless.
#[test]
fn dumps_ask_what_ipvsadm_asks() {
    let mut out = Vec::new();
    encode_query(&Query::Services, FAMILY, 1, &mut out);
    assert_eq!(out[16..], DUMP_SERVICES[..]);
    assert_eq!(out[6..8], 0x0301u16.to_le_bytes(), "REQUEST | DUMP");
    out.clear();
    let key = ServiceKey::fwmark(Family::V4, 42);
    encode_query(&Query::Destinations(&key), FAMILY, 1, &mut out);
    assert_eq!(out[16..], DUMP_DESTS_FWMARK[..]);
}

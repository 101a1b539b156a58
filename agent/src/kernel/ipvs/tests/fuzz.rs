//! Property tests: the decoders take any bytes without panicking, and every
//! valid value survives encode then decode unchanged.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::{attrs_of, encoded};
use crate::desired::{Family, Protocol};
use crate::kernel::ipvs::{
    message::{
        decode_destination, decode_family_id, decode_info, decode_service, decode_timeouts,
        encode_request,
    },
    Destination, ForwardMethod, InvalidValue, Netmask, Request, Scheduler, Service,
    ServiceFlagBits, ServiceKey, Timeouts,
};
use crate::kernel::netlink::{frames, Reply};

/// Runs every decoder over `bytes`, as a datagram and as bare attributes.
fn decode_everything(bytes: &[u8]) {
    for frame in frames(bytes) {
        let Ok(frame) = frame else { break };
        if let Ok(Reply::Data { attrs, .. }) = frame.reply() {
            decode_attrs(attrs);
        }
    }
    decode_attrs(bytes);
}

fn decode_attrs(attrs: &[u8]) {
    let _ = decode_service(attrs);
    let _ = decode_destination(attrs, Family::V4);
    let _ = decode_destination(attrs, Family::V6);
    let _ = decode_timeouts(attrs);
    let _ = decode_info(attrs);
    let _ = decode_family_id(attrs);
}

fn any_addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|a| IpAddr::V4(Ipv4Addr::from(a))),
        any::<u128>().prop_map(|a| IpAddr::V6(Ipv6Addr::from(a))),
    ]
}

fn any_key() -> impl Strategy<Value = ServiceKey> {
    let proto = prop_oneof![
        Just(Protocol::Tcp),
        Just(Protocol::Udp),
        Just(Protocol::Sctp)
    ];
    let family = prop_oneof![Just(Family::V4), Just(Family::V6)];
    prop_oneof![
        (proto, any_addr(), any::<u16>()).prop_map(|(protocol, addr, port)| ServiceKey::Addr {
            protocol,
            addr,
            port
        }),
        (family, 1..u32::MAX).prop_map(|(family, mark)| ServiceKey::Fwmark { family, mark }),
    ]
}

fn any_service() -> impl Strategy<Value = Service> {
    (
        any_key(),
        "[a-z]{1,15}",
        0u32..0x40,
        any::<u32>(),
        0u8..=128,
    )
        .prop_map(|(key, sched, flags, timeout, len)| {
            let netmask = match key.family() {
                Family::V4 => Netmask::prefix(Family::V4, len % 33).unwrap(),
                Family::V6 => Netmask::prefix(Family::V6, len.max(1)).unwrap(),
            };
            Service {
                key,
                scheduler: Scheduler::new(&sched).unwrap(),
                // HASHED is never sent, so it cannot come back.
                flags: ServiceFlagBits::from_bits_retain(flags).settable(),
                timeout,
                netmask,
            }
        })
}

fn any_destination() -> impl Strategy<Value = Destination> {
    let fwd = prop_oneof![
        Just(ForwardMethod::Masq),
        Just(ForwardMethod::Local),
        Just(ForwardMethod::Tunnel),
        Just(ForwardMethod::Route),
    ];
    (
        any_addr(),
        any::<u16>(),
        fwd,
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(addr, port, forward, weight, upper_threshold, lower_threshold)| Destination {
                addr,
                port,
                forward,
                weight,
                upper_threshold,
                lower_threshold,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_everything(&bytes);
    }

    /// Random bytes rarely get past the first length check; corrupting a
    /// real message reaches the attribute decoders.
    #[test]
    fn corrupted_messages_never_panic(
        svc in any_service(),
        dest in any_destination(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        for mut msg in [
            encoded(&Request::AddService(svc.clone()), 1),
            encoded(&Request::AddDestination { service: svc.key, destination: dest }, 1),
        ] {
            for (at, byte) in &edits {
                let i = at % msg.len();
                msg[i] = *byte;
            }
            decode_everything(&msg);
            decode_everything(&msg[..cut % (msg.len() + 1)]);
        }
    }

    #[test]
    fn services_round_trip(svc in any_service()) {
        let msg = encoded(&Request::AddService(svc.clone()), 1);
        prop_assert_eq!(decode_service(attrs_of(&msg).1).unwrap().service, svc);
    }

    #[test]
    fn destinations_round_trip(key in any_key(), dest in any_destination()) {
        let msg = encoded(&Request::EditDestination { service: key, destination: dest }, 1);
        let got = decode_destination(attrs_of(&msg).1, key.family()).unwrap();
        prop_assert_eq!(got.destination, dest);
    }

    #[test]
    fn timeouts_round_trip(tcp in any::<u32>(), tcp_fin in any::<u32>(), udp in any::<u32>()) {
        let t = Timeouts { tcp, tcp_fin, udp };
        let msg = encoded(&Request::SetTimeouts(t), 1);
        prop_assert_eq!(decode_timeouts(attrs_of(&msg).1).unwrap(), t);
    }
}

#[test]
fn mismatched_netmask_is_refused_before_sending() {
    let mut svc = Service::new(
        ServiceKey::tcp("fd00::1".parse().unwrap(), 80),
        Scheduler::round_robin(),
    );
    svc.netmask = Netmask::host(Family::V4);
    let mut out = Vec::new();
    let err = encode_request(&Request::AddService(svc), 1, 1, &mut out).unwrap_err();
    assert!(matches!(err, InvalidValue::NetmaskFamily { .. }), "{err}");
    assert!(out.is_empty());
}

//! The kernel's layouts written by hand at the offsets `ip_vs.h` gives
//! them on a 64-bit kernel, so a wrong struct mirror fails here.

use std::hash::DefaultHasher;

use super::*;
use crate::desired::Family;

/// Writes `bytes` at `off` of `buf`.
fn put(buf: &mut [u8], off: usize, bytes: &[u8]) {
    buf[off..off + bytes.len()].copy_from_slice(bytes);
}

/// A `struct ip_vs_service_entry` (104 bytes) as the kernel fills it.
#[allow(clippy::too_many_arguments)]
fn service_entry(
    protocol: u16,
    addr: [u8; 4],
    port: u16,
    fwmark: u32,
    sched: &str,
    flags: u32,
    timeout: u32,
    netmask: [u8; 4],
    num_dests: u32,
    conns: u32,
) -> Vec<u8> {
    let mut e = vec![0u8; 104];
    put(&mut e, 0, &protocol.to_ne_bytes());
    put(&mut e, 4, &addr);
    put(&mut e, 8, &port.to_be_bytes());
    put(&mut e, 12, &fwmark.to_ne_bytes());
    put(&mut e, 16, sched.as_bytes());
    put(&mut e, 32, &flags.to_ne_bytes());
    put(&mut e, 36, &timeout.to_ne_bytes());
    put(&mut e, 40, &netmask);
    put(&mut e, 44, &num_dests.to_ne_bytes());
    // stats.conns
    put(&mut e, 48, &conns.to_ne_bytes());
    e
}

/// A `struct ip_vs_dest_entry` (96 bytes) as the kernel fills it.
fn dest_entry(addr: [u8; 4], port: u16, conn_flags: u32, weight: i32, active: u32) -> Vec<u8> {
    let mut e = vec![0u8; 96];
    put(&mut e, 0, &addr);
    put(&mut e, 4, &port.to_be_bytes());
    put(&mut e, 8, &conn_flags.to_ne_bytes());
    put(&mut e, 12, &weight.to_ne_bytes());
    put(&mut e, 16, &10u32.to_ne_bytes());
    put(&mut e, 20, &2u32.to_ne_bytes());
    put(&mut e, 24, &active.to_ne_bytes());
    e
}

/// `request` with `entries` written over its first slots, as the kernel
/// leaves it.
fn reply(mut request: Vec<u8>, head: usize, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut off = head;
    for e in entries {
        put(&mut request, off, e);
        off += e.len();
    }
    request
}

fn services_reply(entries: &[Vec<u8>], spare: usize) -> Vec<u8> {
    reply(services_request(entries.len() + spare), 8, entries)
}

#[test]
fn the_layouts_are_the_kernels() {
    assert_eq!(INFO_LEN, 12);
    assert_eq!((SERVICES_HEAD, SERVICE_LEN, SERVICE_CONFIG), (8, 104, 48));
    assert_eq!((DESTS_HEAD, DEST_LEN, DEST_CONFIG), (24, 96, 24));
    let mut info = [0u8; 12];
    put(&mut info, 8, &7u32.to_ne_bytes());
    assert_eq!(info_services(&info), 7);
    let req = services_request(3);
    assert_eq!(req.len(), 8 + 3 * 104);
    assert_eq!(&req[..4], &3u32.to_ne_bytes());
}

#[test]
fn decodes_services_and_stops_at_the_first_unfilled_slot() {
    let web = service_entry(6, [10, 0, 0, 1], 80, 0, "rr", 0x2, 0, [255; 4], 2, 9);
    let dns = service_entry(
        17,
        [10, 0, 0, 2],
        53,
        0,
        "wrr",
        0x1 | 0x2 | 0x8,
        300,
        [255, 255, 255, 0],
        1,
        0,
    );
    let mark = service_entry(6, [0; 4], 0, 5, "rr", 0x2, 0, [255; 4], 0, 0);
    let buf = services_reply(&[web, dns, mark], 2);
    let raw: Vec<RawService<'_>> = service_entries(&buf).collect();
    assert_eq!(raw.len(), 3);
    assert_eq!(raw[0].num_dests(), 2);
    let web = raw[0].decode(0).unwrap().unwrap();
    let want = Service::new(
        ServiceKey::tcp("10.0.0.1".parse().unwrap(), 80),
        Scheduler::round_robin(),
    )
    .with_flags(ServiceFlagBits::HASHED);
    assert_eq!(web, want);
    let dns = raw[1].decode(1).unwrap().unwrap();
    let want = Service::new(
        ServiceKey::udp("10.0.0.2".parse().unwrap(), 53),
        Scheduler::weighted_round_robin(),
    )
    .persistent(300, Netmask::prefix(Family::V4, 24).unwrap())
    .with_flags(ServiceFlagBits::HASHED | ServiceFlagBits::SCHED1);
    assert_eq!(dns, want);
    assert!(raw[2].decode(2).unwrap().is_none(), "a mark is never ours");
}

#[test]
fn a_dests_request_carries_the_services_key_and_its_slots() {
    let web = service_entry(6, [10, 0, 0, 1], 80, 0, "rr", 0x2, 0, [255; 4], 2, 0);
    let buf = services_reply(&[web], 0);
    let raw = service_entries(&buf).next().unwrap();
    let req = raw.dests_request(3);
    assert_eq!(req.len(), 24 + 3 * 96);
    assert_eq!(&req[0..2], &6u16.to_ne_bytes());
    assert_eq!(&req[4..8], &[10, 0, 0, 1]);
    assert_eq!(&req[8..10], &80u16.to_be_bytes());
    assert_eq!(&req[12..16], &0u32.to_ne_bytes());
    assert_eq!(&req[16..20], &3u32.to_ne_bytes());
    assert!(req[24..].iter().all(|&b| b == UNFILLED));
}

#[test]
fn decodes_destinations_with_thresholds() {
    // Route with the kernel's IP_VS_CONN_F_INACTIVE bit (0x0100) set.
    let d = dest_entry([10, 1, 0, 1], 8080, 0x0103, 5, 3);
    let buf = reply(vec![UNFILLED; 24 + 2 * 96], 24, &[d]);
    let dests: Vec<RawDest<'_>> = dest_entries(&buf).collect();
    assert_eq!(dests.len(), 1);
    let got = dests[0].decode(0).unwrap();
    let want = Destination::new("10.1.0.1".parse().unwrap(), 8080)
        .forward(ForwardMethod::Route)
        .weight(5)
        .thresholds(10, 2);
    assert_eq!(got, want);
}

#[test]
fn a_bad_entry_is_an_error_naming_it() {
    let d = dest_entry([10, 1, 0, 1], 8080, 0x7, 1, 0);
    let buf = reply(vec![UNFILLED; 24 + 2 * 96], 24, &[d.clone(), d]);
    let err = dest_entries(&buf).nth(1).unwrap().decode(1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "IPVS destination entry 1: unknown forward method"
    );
    let bad = service_entry(6, [10, 0, 0, 1], 80, 0, "", 0x2, 0, [255; 4], 0, 0);
    let buf = services_reply(&[bad], 0);
    let err = service_entries(&buf).next().unwrap().decode(0).unwrap_err();
    assert_eq!(err.to_string(), "IPVS service entry 0: bad scheduler name");
}

fn config_hash(service: &[u8], dest: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    let s = services_reply(&[service.to_vec()], 0);
    service_entries(&s).next().unwrap().hash_config(&mut h);
    let d = reply(vec![UNFILLED; 24 + 96], 24, &[dest.to_vec()]);
    dest_entries(&d).next().unwrap().hash_config(&mut h);
    h.finish()
}

#[test]
fn the_config_hash_ignores_the_counters_only() {
    let svc = |conns, sched, dests| {
        service_entry(
            6,
            [10, 0, 0, 1],
            80,
            0,
            sched,
            0x2,
            0,
            [255; 4],
            dests,
            conns,
        )
    };
    let dest = |weight, active| dest_entry([10, 1, 0, 1], 8080, 0x100, weight, active);
    let base = config_hash(&svc(0, "rr", 1), &dest(1, 0));
    assert_eq!(base, config_hash(&svc(42, "rr", 1), &dest(1, 7)));
    assert_ne!(
        base,
        config_hash(&svc(0, "lc", 1), &dest(1, 0)),
        "scheduler"
    );
    assert_ne!(
        base,
        config_hash(&svc(0, "rr", 2), &dest(1, 0)),
        "a hidden destination"
    );
    assert_ne!(base, config_hash(&svc(0, "rr", 1), &dest(2, 0)), "weight");
}

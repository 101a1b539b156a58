//! Fixed frames through BPF_PROG_TEST_RUN: the program's own time per
//! kind of frame, and an empty program's.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsFd,
};

use ipwarden::bpf::{test_run, TcProgram};
use ipwarden_common::{maps::PROTO_UDP, names::DEFAULT_MARK};

use super::{
    cluster::{v4_of, v6_of},
    PAYLOAD, UDP_PORT,
};

fn udp_frame(v6: bool, dst: IpAddr, ext: &[u8], first_next_header: u8) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    let udp_len = (8 + PAYLOAD) as u16;
    let mut udp = Vec::new();
    udp.extend_from_slice(&40000u16.to_be_bytes());
    udp.extend_from_slice(&UDP_PORT.to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(&[0x5a; PAYLOAD]);
    match (v6, dst) {
        (false, IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&(20 + udp_len).to_be_bytes());
            ip[8] = 64;
            ip[9] = PROTO_UDP;
            ip[12..16].copy_from_slice(&[10, 201, 1, 2]);
            ip[16..20].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
        }
        (true, IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&((ext.len() as u16) + udp_len).to_be_bytes());
            ip[6] = first_next_header;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&Ipv6Addr::new(0xfd00, 0x201, 1, 0, 0, 0, 0, 2).octets());
            ip[24..40].copy_from_slice(&d.octets());
            f.extend_from_slice(&ip);
            f.extend_from_slice(ext);
        }
        _ => unreachable!("family and address agree"),
    }
    f.extend_from_slice(&udp);
    f
}

/// Hop-by-hop, routing (type 0, no segments left), fragment (offset 0)
/// and destination options, then UDP.
fn four_extension_headers() -> (Vec<u8>, u8) {
    let mut ext = Vec::new();
    ext.extend_from_slice(&[43, 0, 1, 4, 0, 0, 0, 0]); // hop-by-hop, PadN
    ext.extend_from_slice(&[44, 2, 0, 0, 0, 0, 0, 0]); // routing, one address
    ext.extend_from_slice(&[0; 16]);
    ext.extend_from_slice(&[60, 0, 0, 0, 0, 0, 0, 1]); // fragment, offset 0
    ext.extend_from_slice(&[PROTO_UDP, 0, 1, 4, 0, 0, 0, 0]); // destination options
    (ext, 0)
}

pub struct FrameCost {
    pub label: &'static str,
    pub ns_per_run: f64,
    pub marked: bool,
}

/// The program's time per frame, from the kernel's statistics, over
/// `repeat` runs of each (best of three calls).
pub fn frame_costs(dp: &TcProgram, target: usize, repeat: u32) -> (Vec<FrameCost>, f64) {
    let (ext, first) = four_extension_headers();
    let frames: Vec<(&'static str, Vec<u8>)> = vec![
        (
            "IPv4 UDP to a mirrored VIP:port",
            udp_frame(false, v4_of(target).into(), &[], 0),
        ),
        ("IPv4 UDP to a VIP, another port", {
            let mut f = udp_frame(false, v4_of(target).into(), &[], 0);
            f[14 + 20 + 2..14 + 20 + 4].copy_from_slice(&(UDP_PORT + 1).to_be_bytes());
            f
        }),
        (
            "IPv4 UDP to an address that is no VIP",
            udp_frame(false, Ipv4Addr::new(10, 202, 0, 9).into(), &[], 0),
        ),
        (
            "IPv6 UDP to a mirrored VIP:port",
            udp_frame(true, v6_of(target).into(), &[], PROTO_UDP),
        ),
        (
            "IPv6 UDP to an address that is no VIP",
            udp_frame(true, "fd00:202::9".parse().expect("v6"), &[], PROTO_UDP),
        ),
        (
            "IPv6 UDP to a mirrored VIP:port behind 4 extension headers",
            udp_frame(true, v6_of(target).into(), &ext, first),
        ),
    ];
    let mut out = Vec::new();
    for (label, frame) in frames {
        let mut best = f64::MAX;
        let mut marked = false;
        for _ in 0..3 {
            let before = dp.run_stats().expect("stats");
            let r = dp.test_run(&frame, repeat).expect("test run");
            let after = dp.run_stats().expect("stats");
            marked = r.mark & DEFAULT_MARK != 0;
            if let Some(ns) = after.ns_per_run_since(&before) {
                best = best.min(ns);
            }
        }
        out.push(FrameCost {
            label,
            ns_per_run: best,
            marked,
        });
    }
    let empty = test_run::empty_program().expect("load an empty program");
    let frame = udp_frame(false, v4_of(target).into(), &[], 0);
    let mut floor = f64::MAX;
    for _ in 0..3 {
        let (t0, c0) = test_run::stats(empty.as_fd()).expect("stats");
        test_run::run(empty.as_fd(), &frame, repeat).expect("test run");
        let (t1, c1) = test_run::stats(empty.as_fd()).expect("stats");
        if c1 > c0 {
            floor = floor.min((t1 - t0) as f64 / (c1 - c0) as f64);
        }
    }
    (out, floor)
}

// ---------------------------------------------------------------------

//! The tc classifier on a real veth pair, with real packets, in throw-away
//! network namespaces. Oracles: the per-CPU hit counter read back through
//! aya, an iptables mark-match rule's packet counter, and
//! `bpftool -j map dump`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

use ipwarden::{
    bpf::{self, Attachment, ProgramLogLevel, TcProgram},
    netns::{privileged, NetNs},
};
use ipwarden_common::{
    maps::{PROTO_TCP, PROTO_UDP},
    Mode, ServiceKey, ServiceValue,
};

const MARK: u32 = 0x0040_0000;
const NODE_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const NODE_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1);
const PEER_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2);
const PAYLOAD: &[u8] = b"ipwarden test payload";

/// Collects the program's aya-log lines.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl log::Log for Lines {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

/// Two namespaces joined by a veth pair: `node` (10.200.0.1, fd00:200::1)
/// where the program runs, and `peer` (10.200.0.2, fd00:200::2) that sends.
fn topology() -> (NetNs, NetNs) {
    let node = NetNs::new("ipw-tc-node").unwrap();
    let peer = NetNs::new("ipw-tc-peer").unwrap();
    node.veth_to(
        &peer,
        ("veth0", &["10.200.0.1/24", "fd00:200::1/64"]),
        ("veth1", &["10.200.0.2/24", "fd00:200::2/64"]),
    )
    .unwrap();
    (node, peer)
}

/// Sends `count` UDP datagrams from `peer` to `to` and waits until `rx`
/// (bound in the node namespace) has received them all: arrival is the
/// synchronisation, so the counters are final when this returns.
fn send_udp(peer: &NetNs, rx: &UdpSocket, from: SocketAddr, to: SocketAddr, count: usize) {
    let tx = peer.run(|| UdpSocket::bind(from)).unwrap().unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 64];
    for _ in 0..count {
        tx.send_to(PAYLOAD, to).unwrap();
        let n = rx.recv(&mut buf).expect("datagram did not arrive");
        assert_eq!(&buf[..n], PAYLOAD);
    }
}

/// The next connection on `listener`, or a panic after `limit`.
fn accept_within(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((stream, _)) => return stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no connection accepted within {limit:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Packet counter of the INPUT rule whose text contains `needle`, from
/// `iptables-save -c`.
fn iptables_counter(ns: &NetNs, ip6: bool, needle: &str) -> u64 {
    let save = ns
        .output(
            if ip6 {
                "ip6tables-save"
            } else {
                "iptables-save"
            },
            &["-c", "-t", "filter"],
        )
        .unwrap();
    let line = save
        .lines()
        .find(|l| l.contains("-A INPUT") && l.contains(needle))
        .unwrap_or_else(|| panic!("no INPUT rule with {needle:?} in:\n{save}"));
    // "[packets:bytes] -A INPUT ..."
    let counters = line.trim_start_matches('[').split(']').next().unwrap();
    counters.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn classifier_counts_marks_and_logs_hits_on_a_veth() {
    if !privileged("classifier_counts_marks_and_logs_hits_on_a_veth") {
        return;
    }
    let (node, peer) = topology();
    let udp4 = ServiceKey::v4(NODE_V4.octets(), PROTO_UDP, 7777);
    let udp6 = ServiceKey::v6(NODE_V6.octets(), PROTO_UDP, 7777);
    let tcp4 = ServiceKey::v4(NODE_V4.octets(), PROTO_TCP, 7780);

    // Load, configure and attach inside the node namespace.
    let (mut dp, attachment) = node
        .run(|| {
            let mut dp = TcProgram::load(&bpf::object_path_from_env(), ProgramLogLevel::Debug)
                .expect("load: set IPWARDEN_BPF_OBJECT or run `cargo xtask build-ebpf`");
            dp.configure(Mode::Log, MARK).unwrap();
            let mut mirror = dp.services().unwrap();
            for (i, key) in [udp4, udp6, tcp4].into_iter().enumerate() {
                let value = ServiceValue {
                    flags: 0,
                    service_id: 40 + i as u32,
                };
                mirror.insert(key, value).unwrap();
            }
            let attachment = dp.attach_ingress("veth0").unwrap();
            (dp, attachment)
        })
        .unwrap();
    let expected = if std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|r| kernel_at_least(&r, 6, 6))
        .unwrap_or(false)
    {
        Attachment::Tcx
    } else {
        Attachment::Clsact
    };
    assert_eq!(attachment, expected);
    let lines = Lines::default();
    let mut logger = dp.logger(lines.clone()).unwrap();

    // Counting rules: marked traffic to the member port, and marked
    // traffic to a port that is not in the mirror (must stay at zero).
    for (cmd, port) in [
        ("iptables", "7777"),
        ("iptables", "7779"),
        ("ip6tables", "7777"),
    ] {
        let rule = format!("-p udp --dport {port} -m mark --mark {MARK:#x}/{MARK:#x}");
        let mut args = vec!["-w", "-A", "INPUT"];
        args.extend(rule.split(' '));
        node.output(cmd, &args).unwrap();
    }

    let rx4 = node
        .run(|| UdpSocket::bind((NODE_V4, 7777)))
        .unwrap()
        .unwrap();
    let rx4_other = node
        .run(|| UdpSocket::bind((NODE_V4, 7779)))
        .unwrap()
        .unwrap();
    let rx6 = node
        .run(|| UdpSocket::bind((NODE_V6, 7777)))
        .unwrap()
        .unwrap();
    let peer4: SocketAddr = "10.200.0.2:0".parse().unwrap();
    send_udp(&peer, &rx4, peer4, (NODE_V4, 7777).into(), 10);
    send_udp(&peer, &rx4_other, peer4, (NODE_V4, 7779).into(), 5);
    send_udp(&peer, &rx6, (PEER_V6, 0).into(), (NODE_V6, 7777).into(), 4);

    // A TCP connection: the SYN and the rest of the client's segments hit.
    let listener = node
        .run(|| TcpListener::bind((NODE_V4, 7780)))
        .unwrap()
        .unwrap();
    // Every wait here has a deadline: a lost packet fails the test, it
    // never hangs it.
    let client = peer
        .run(|| TcpStream::connect_timeout(&(NODE_V4, 7780).into(), Duration::from_secs(30)))
        .unwrap()
        .expect("TCP connect to the node");
    let _server = accept_within(&listener, Duration::from_secs(30));
    drop(client);

    let mirror = dp.services().unwrap();
    let hits4 = mirror.hits(&udp4).unwrap();
    assert_eq!(hits4.packets, 10, "v4 UDP hits");
    // skb->len at tc ingress covers Ethernet + IPv4 + UDP + payload.
    assert_eq!(hits4.bytes, 10 * (14 + 20 + 8 + PAYLOAD.len() as u64));
    assert_eq!(mirror.hits(&udp6).unwrap().packets, 4, "v6 UDP hits");
    assert!(
        mirror.hits(&tcp4).unwrap().packets >= 2,
        "TCP SYN and ACK hit"
    );
    let miss = ServiceKey::v4(NODE_V4.octets(), PROTO_UDP, 7779);
    assert_eq!(
        mirror.hits(&miss).unwrap().packets,
        0,
        "non-member never counted"
    );

    assert_eq!(
        iptables_counter(&node, false, "--dport 7777"),
        10,
        "marked v4"
    );
    assert_eq!(
        iptables_counter(&node, false, "--dport 7779"),
        0,
        "non-member unmarked"
    );
    assert_eq!(
        iptables_counter(&node, true, "--dport 7777"),
        4,
        "marked v6"
    );

    // bpftool prints the BTF-named fields of the key and value.
    let id = mirror.map_id().unwrap().to_string();
    let dump = node
        .output("bpftool", &["-j", "map", "dump", "id", &id])
        .unwrap();
    let entries: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let found = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["formatted"])
        .find(|f| f["key"]["port"] == 7777 && f["key"]["family"] == 2)
        .unwrap_or_else(|| panic!("no formatted v4 7777 key in {dump}"));
    assert_eq!(found["key"]["proto"], 17);
    assert_eq!(found["key"]["addr"][0], 10);
    assert_eq!(found["value"]["service_id"], 40);
    assert_eq!(found["value"]["flags"], 0);

    // aya-log: the program's debug line for a hit reached user space.
    logger.flush();
    let lines = lines.0.lock().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("mirror hit proto 17 port 7777")),
        "no hit line among {} aya-log lines: {:?}",
        lines.len(),
        lines.iter().take(5).collect::<Vec<_>>()
    );
}

#[test]
fn mode_off_neither_counts_nor_marks() {
    if !privileged("mode_off_neither_counts_nor_marks") {
        return;
    }
    let (node, peer) = topology();
    let udp4 = ServiceKey::v4(NODE_V4.octets(), PROTO_UDP, 7777);
    let mut dp = node
        .run(|| {
            let mut dp =
                TcProgram::load(&bpf::object_path_from_env(), ProgramLogLevel::Info).unwrap();
            dp.configure(Mode::Off, MARK).unwrap();
            dp.services()
                .unwrap()
                .insert(udp4, ServiceValue::default())
                .unwrap();
            dp.attach_ingress("veth0").unwrap();
            dp
        })
        .unwrap();
    node.output(
        "iptables",
        &[
            "-w",
            "-A",
            "INPUT",
            "-p",
            "udp",
            "--dport",
            "7777",
            "-m",
            "mark",
            "--mark",
            "0x400000/0x400000",
        ],
    )
    .unwrap();
    let rx = node
        .run(|| UdpSocket::bind((NODE_V4, 7777)))
        .unwrap()
        .unwrap();
    send_udp(
        &peer,
        &rx,
        "10.200.0.2:0".parse().unwrap(),
        (NODE_V4, 7777).into(),
        3,
    );
    assert_eq!(dp.services().unwrap().hits(&udp4).unwrap().packets, 0);
    assert_eq!(iptables_counter(&node, false, "--dport 7777"), 0);

    // The mode is read per packet: switching to log needs no reload.
    node.run(|| dp.configure(Mode::Log, MARK)).unwrap().unwrap();
    send_udp(
        &peer,
        &rx,
        "10.200.0.2:0".parse().unwrap(),
        (NODE_V4, 7777).into(),
        3,
    );
    assert_eq!(dp.services().unwrap().hits(&udp4).unwrap().packets, 3);
    assert_eq!(iptables_counter(&node, false, "--dport 7777"), 3);
}

/// An Ethernet frame carrying IPv6 `ext` (a chain of extension headers
/// whose first is `first`) then UDP from PEER_V6:40000 to NODE_V6:`port`.
fn ipv6_udp_frame(first: u8, ext: &[u8], port: u16) -> Vec<u8> {
    let mut f = vec![0xff; 6]; // broadcast: tc sees it either way
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&0x86DDu16.to_be_bytes());
    let udp_len = (8 + PAYLOAD.len()) as u16;
    let mut ip = [0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(ext.len() as u16 + udp_len).to_be_bytes());
    ip[6] = first;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&PEER_V6.octets());
    ip[24..40].copy_from_slice(&NODE_V6.octets());
    f.extend_from_slice(&ip);
    f.extend_from_slice(ext);
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&port.to_be_bytes());
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(PAYLOAD);
    f
}

const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;

/// One extension header of 8 bytes (or `len8` more 8-byte units) whose
/// next header is `next`; a fragment header carries `frag_offset` (in
/// 8-byte units) instead of a length.
fn ext_header(kind: u8, next: u8, len8: u8, frag_offset: u16) -> Vec<u8> {
    let mut h = vec![next, 0, 0, 0, 0, 0, 0, 0];
    if kind == FRAGMENT {
        h[2..4].copy_from_slice(&(frag_offset << 3).to_be_bytes());
        h[7] = 1; // identification
    } else {
        h[1] = len8;
        h.extend(std::iter::repeat_n(0u8, usize::from(len8) * 8));
        // PadN over the rest of the first 8 bytes (options headers).
        if kind != ROUTING {
            h[2] = 1;
            h[3] = 4;
        }
    }
    h
}

/// An extension header: (kind, extra 8-byte units, fragment offset).
type Ext = (u8, u8, u16);

/// A chain of `kinds` (each header's next is the following one's kind,
/// the last one's UDP): (first next-header value, bytes).
fn chain(kinds: &[Ext]) -> (u8, Vec<u8>) {
    let mut bytes = Vec::new();
    for (i, &(kind, len8, frag)) in kinds.iter().enumerate() {
        let next = kinds.get(i + 1).map_or(PROTO_UDP, |k| k.0);
        bytes.extend(ext_header(kind, next, len8, frag));
    }
    (kinds.first().map_or(PROTO_UDP, |k| k.0), bytes)
}

/// Sends raw `frames` out of `iface` in the calling thread's namespace.
fn send_raw(iface: &str, frames: &[Vec<u8>]) {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "{iface}");
    // SAFETY: plain socket(2); the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a zeroed sockaddr_ll is valid; the fields set make it an
    // address on `ifindex`.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    for f in frames {
        // SAFETY: `f` and `addr` are valid for the call.
        let n = unsafe {
            libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                std::ptr::from_ref(&addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(
            n,
            f.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: our own fd.
    unsafe { libc::close(fd) };
}

#[test]
fn ipv6_extension_headers_are_walked_to_the_transport_header() {
    if !privileged("ipv6_extension_headers_are_walked_to_the_transport_header") {
        return;
    }
    let (node, peer) = topology();
    // One mirrored port per case, so each case has its own counter.
    let cases: Vec<(&str, Vec<Ext>, bool)> = vec![
        ("no extension header", vec![], true),
        ("hop-by-hop", vec![(HOP_BY_HOP, 0, 0)], true),
        (
            "destination options, 24 bytes",
            vec![(DEST_OPTS, 2, 0)],
            true,
        ),
        ("routing", vec![(ROUTING, 2, 0)], true),
        ("first fragment", vec![(FRAGMENT, 0, 0)], true),
        (
            "hop-by-hop, destination options, routing, first fragment, destination options",
            vec![
                (HOP_BY_HOP, 0, 0),
                (DEST_OPTS, 1, 0),
                (ROUTING, 2, 0),
                (FRAGMENT, 0, 0),
                (DEST_OPTS, 0, 0),
            ],
            true,
        ),
        // No ports in a later fragment: never looked up.
        ("a fragment at offset 8", vec![(FRAGMENT, 0, 1)], false),
        // Longer than the walk goes (six headers): not ours, never a drop.
        (
            "seven destination options headers",
            vec![(DEST_OPTS, 0, 0); 7],
            false,
        ),
    ];
    let port = |i: usize| 7800 + i as u16;
    let keys: Vec<ServiceKey> = (0..cases.len())
        .map(|i| ServiceKey::v6(NODE_V6.octets(), PROTO_UDP, port(i)))
        .collect();
    let barrier = ServiceKey::v6(NODE_V6.octets(), PROTO_UDP, 7899);
    let mut dp = node
        .run(|| {
            let mut dp =
                TcProgram::load(&bpf::object_path_from_env(), ProgramLogLevel::Info).unwrap();
            dp.configure(Mode::Log, MARK).unwrap();
            dp.services()
                .unwrap()
                .insert_all(
                    keys.iter()
                        .chain([&barrier])
                        .map(|k| (*k, ServiceValue::default())),
                )
                .unwrap();
            dp.attach_ingress("veth0").unwrap();
            dp
        })
        .unwrap();
    let frames: Vec<Vec<u8>> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, kinds, _))| {
            let (first, ext) = chain(kinds);
            ipv6_udp_frame(first, &ext, port(i))
        })
        .collect();

    // The same frames through BPF_PROG_TEST_RUN: marked exactly when
    // the walk reaches the UDP header.
    for ((label, _, found), frame) in cases.iter().zip(&frames) {
        let run = dp.test_run(frame, 1).unwrap();
        assert_eq!(run.retval, 0, "{label}: never anything but TC_ACT_OK");
        assert_eq!(run.mark & MARK != 0, *found, "{label}: marked");
    }

    // (The test runs counted too: the wire's counts are the differences.)
    let before: Vec<u64> = {
        let mirror = dp.services().unwrap();
        keys.iter()
            .map(|k| mirror.hits(k).unwrap().packets)
            .collect()
    };
    // And on the wire, three of each. Counts are polled, never slept on:
    // first until every case that is looked up has counted its three, then
    // a barrier frame, sent only after those, must be counted too, so the
    // frames sent with them have gone through the program as well.
    let wire: Vec<Vec<u8>> = frames
        .iter()
        .flat_map(|f| [f.clone(), f.clone(), f.clone()])
        .collect();
    peer.run(|| send_raw("veth1", &wire)).unwrap();
    let mut counted = |i: usize| dp.services().unwrap().hits(&keys[i]).unwrap().packets - before[i];
    let looked_up: Vec<usize> = (0..cases.len()).filter(|&i| cases[i].2).collect();
    assert!(
        ipwarden::lab::wait_until(ipwarden::lab::VM_WAIT, || {
            looked_up.iter().all(|&i| counted(i) >= 3)
        }),
        "the frames that are looked up were never all counted"
    );
    peer.run(|| send_raw("veth1", &[ipv6_udp_frame(PROTO_UDP, &[], 7899)]))
        .unwrap();
    assert!(
        ipwarden::lab::wait_until(ipwarden::lab::VM_WAIT, || {
            dp.services().unwrap().hits(&barrier).unwrap().packets > 0
        }),
        "the barrier frame never arrived"
    );
    let mirror = dp.services().unwrap();
    for (i, (label, _, found)) in cases.iter().enumerate() {
        let hits = mirror.hits(&keys[i]).unwrap().packets - before[i];
        assert_eq!(hits, if *found { 3 } else { 0 }, "{label}: counted");
    }
}

/// An Ethernet frame carrying a TCP segment with `flags` from
/// 10.200.0.2:40000 (or PEER_V6) to `dst`:`port`.
fn tcp_frame(dst: IpAddr, port: u16, flags: u8) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    match dst {
        IpAddr::V4(dst) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&40u16.to_be_bytes());
            ip[8] = 64;
            ip[9] = PROTO_TCP;
            ip[12..16].copy_from_slice(&[10, 200, 0, 2]);
            ip[16..20].copy_from_slice(&dst.octets());
            f.extend_from_slice(&ip);
        }
        IpAddr::V6(dst) => {
            f.extend_from_slice(&0x86DDu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&20u16.to_be_bytes());
            ip[6] = PROTO_TCP;
            ip[7] = 64;
            ip[8..24].copy_from_slice(&PEER_V6.octets());
            ip[24..40].copy_from_slice(&dst.octets());
            f.extend_from_slice(&ip);
        }
    }
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&port.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    f.extend_from_slice(&tcp);
    f
}

#[test]
fn a_flagged_member_reports_connection_starts_with_their_five_tuple() {
    if !privileged("a_flagged_member_reports_connection_starts_with_their_five_tuple") {
        return;
    }
    use ipwarden_common::{
        maps::{EVENT_RESCUED, EVENT_WOULD_REJECT, FAMILY_V4, FLAG_MISSING_FROM_KERNEL},
        Event,
    };
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let mut dp = TcProgram::load(&bpf::object_path_from_env(), ProgramLogLevel::Info).unwrap();
    dp.configure(Mode::Log, MARK).unwrap();
    let key = ServiceKey::v4(vip.octets(), PROTO_TCP, 80);
    let flagged = ServiceValue {
        flags: FLAG_MISSING_FROM_KERNEL,
        service_id: 7,
    };
    dp.services().unwrap().insert(key, flagged).unwrap();
    let mut ring = dp.take_events().unwrap();
    let mut next_event = || {
        ring.next()
            // SAFETY: the program writes exactly one Event per entry.
            .map(|item| unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<Event>()) })
    };
    let (syn, ack) = (
        tcp_frame(vip.into(), 80, 0x02),
        tcp_frame(vip.into(), 80, 0x10),
    );

    for (mode, kind) in [
        (Mode::Log, EVENT_WOULD_REJECT),
        (Mode::Allow, EVENT_RESCUED),
    ] {
        dp.configure(mode, MARK).unwrap();
        let run = dp.test_run(&syn, 1).unwrap();
        assert_eq!(
            (run.retval, run.mark),
            (0, MARK),
            "{mode:?}: marked, passed"
        );
        let e = next_event().unwrap_or_else(|| panic!("{mode:?}: no event for the SYN"));
        assert_eq!(e.kind, kind, "{mode:?}");
        assert_eq!((e.family, e.proto), (FAMILY_V4, PROTO_TCP));
        assert_eq!((e.sport, e.dport), (40000, 80));
        assert_eq!(&e.saddr[..4], &[10, 200, 0, 2]);
        assert_eq!(&e.daddr[..4], &vip.octets());
        // The rest of the connection is counted and marked, not reported.
        assert_eq!(dp.test_run(&ack, 1).unwrap().mark, MARK);
        assert!(next_event().is_none(), "{mode:?}: only connection starts");
    }
    // Unflagged, the same SYN is only counted.
    dp.services()
        .unwrap()
        .insert(key, ServiceValue::default())
        .unwrap();
    dp.test_run(&syn, 1).unwrap();
    assert!(next_event().is_none());
    assert_eq!(dp.services().unwrap().hits(&key).unwrap().packets, 5);
}

/// Distinct (address, port) pairs spread like hashed input (xorshift64),
/// each IPv4 address in 10.0.0.0/8 for `tag` 0, 11.0.0.0/8 for 1, each
/// IPv6 one in fd00:<tag>::/32 with both of its 64-bit halves varied (the
/// hash takes one half at a time): two such lists never share a pair.
fn spread(tag: u8, count: usize, v6: bool) -> Vec<(IpAddr, u16)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(tag);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = (x >> 7) as u16 | 1;
        let addr: IpAddr = if v6 {
            let w = |i: u32| (x >> (16 * i)) as u16;
            Ipv6Addr::new(0xfd00, tag.into(), w(0), w(1), w(2), w(3), w(1) ^ w(2), 1).into()
        } else {
            let [_, b, c, d] = (x as u32).to_be_bytes();
            Ipv4Addr::new(10 + tag, b, c, d).into()
        };
        seen.insert((addr, port));
    }
    seen.into_iter().collect()
}

/// Row "the classifier's table holds every member in one of its two
/// buckets", with the kernel as the judge: the table is placed by the
/// agent's hash compiled for x86_64 and looked up by the same hash
/// compiled for bpfel. Thousands of members of each family are
/// published; a frame to each is marked by the program (found), a frame
/// to each of as many other pairs is not.
#[test]
fn the_kernel_finds_every_published_member_and_no_other() {
    if !privileged("the_kernel_finds_every_published_member_and_no_other") {
        return;
    }
    const MEMBERS: usize = 4096;
    let mut dp = TcProgram::load(&bpf::object_path_from_env(), ProgramLogLevel::Info).unwrap();
    dp.configure(Mode::Log, MARK).unwrap();
    let members: Vec<_> = [false, true]
        .into_iter()
        .flat_map(|v6| spread(0, MEMBERS, v6))
        .collect();
    dp.services()
        .unwrap()
        .insert_all(members.iter().map(|(a, port)| {
            let key = match a {
                IpAddr::V4(a) => ServiceKey::v4(a.octets(), PROTO_TCP, *port),
                IpAddr::V6(a) => ServiceKey::v6(a.octets(), PROTO_TCP, *port),
            };
            (key, ServiceValue::default())
        }))
        .unwrap();
    let marked = |dp: &mut TcProgram, (a, port): &(IpAddr, u16)| {
        dp.test_run(&tcp_frame(*a, *port, 0x10), 1).unwrap().mark == MARK
    };
    let missed: Vec<_> = members.iter().filter(|m| !marked(&mut dp, m)).collect();
    assert!(
        missed.is_empty(),
        "{} members not found: {missed:?}",
        missed.len()
    );
    let others: Vec<_> = [false, true]
        .into_iter()
        .flat_map(|v6| spread(1, MEMBERS, v6))
        .collect();
    let found: Vec<_> = others.iter().filter(|m| marked(&mut dp, m)).collect();
    assert!(found.is_empty(), "non-members found: {found:?}");
}

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

//! The tc classifier on a real veth pair, with real packets, in throw-away
//! network namespaces. Oracles: the per-CPU hit counter read back through
//! aya, an iptables mark-match rule's packet counter, and
//! `bpftool -j map dump`.

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{Arc, Mutex},
    time::Duration,
};

use ipwarden::{
    bpf::{self, Attachment, Dataplane, ProgramLogLevel},
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
            let mut dp = Dataplane::load(&bpf::object_path_from_env(), ProgramLogLevel::Debug)
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
        let mut args = vec!["-A", "INPUT"];
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
    let client = peer
        .run(|| TcpStream::connect((NODE_V4, 7780)))
        .unwrap()
        .unwrap();
    let (_server, _) = listener.accept().unwrap();
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
                Dataplane::load(&bpf::object_path_from_env(), ProgramLogLevel::Info).unwrap();
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

fn kernel_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut parts = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (ma, mi) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (ma, mi) >= (major, minor)
}

//! The service proxy with real traffic, inside the IPVS VM: a client
//! namespace, two backend "pods" behind veths, and `ipwarden run --once`
//! in the node namespace. Oracles: the bytes the backends answer with,
//! `ipvsadm -Ln`, `ipset list`, `iptables-save -c`.

use std::{
    collections::BTreeSet,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    time::Duration,
};

use ipwarden::netns::{privileged, BpfFs, NetNs};

const CLUSTER: &str = include_str!("fixtures/proxy/cluster.yaml");
const TIMEOUT: Duration = Duration::from_secs(10);

struct Lab {
    node: NetNs,
    client: NetNs,
    _pods: Vec<NetNs>,
    manifests: PathBuf,
    bpffs: BpfFs,
}

/// Starts a backend in `pod`: TCP 8080 and UDP 5353 answer with its name.
fn backend(pod: &NetNs, name: &'static str) {
    let tcp = pod
        .run(|| TcpListener::bind("0.0.0.0:8080"))
        .unwrap()
        .unwrap();
    let udp = pod
        .run(|| UdpSocket::bind("0.0.0.0:5353"))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for mut conn in tcp.incoming().flatten() {
            let _ = conn.write_all(name.as_bytes());
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(name.as_bytes(), from);
        }
    });
}

fn lab() -> Lab {
    let node = NetNs::new("ipw-node").unwrap();
    let client = NetNs::new("ipw-client").unwrap();
    node.veth_to(
        &client,
        ("eth0", &["10.0.1.1/24"]),
        ("eth0", &["10.0.1.2/24"]),
    )
    .unwrap();
    client
        .ip(&["route", "add", "default", "via", "10.0.1.1"])
        .unwrap();
    let mut pods = Vec::new();
    for (i, name) in [(1, "pod1"), (2, "pod2")] {
        let pod = NetNs::new(name).unwrap();
        let node_side = format!("10.244.{i}.1/24");
        let pod_side = format!("10.244.{i}.2/24");
        node.veth_to(
            &pod,
            (&format!("vp{i}"), &[&node_side]),
            ("eth0", &[&pod_side]),
        )
        .unwrap();
        pod.ip(&["route", "add", "default", "via", &format!("10.244.{i}.1")])
            .unwrap();
        backend(&pod, name);
        pods.push(pod);
    }
    node.output("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let dir = std::env::temp_dir().join(format!("ipw-manifests-{}", node.name()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cluster.yaml"), CLUSTER).unwrap();
    let bpffs = BpfFs::new(node.name()).unwrap();
    Lab {
        bpffs,
        node,
        client,
        _pods: pods,
        manifests: dir,
    }
}

/// `ipwarden run --once --json` in the node namespace; its report. The
/// eBPF data plane runs too (mode log), pinned on a bpffs of the lab's own.
fn run_once(lab: &Lab) -> serde_json::Value {
    let out = lab
        .node
        .command(env!("CARGO_BIN_EXE_ipwarden"))
        .args(["run", "--once", "--json", "--node-name", "node-a"])
        .arg("--bpf-pin-dir")
        .arg(lab.bpffs.path())
        .arg("--manifests")
        .arg(&lab.manifests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ipwarden run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn tcp_answer(client: &NetNs, to: SocketAddr) -> std::io::Result<String> {
    client
        .run(|| {
            let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
            s.set_read_timeout(Some(TIMEOUT))?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .unwrap()
}

fn udp_answer(client: &NetNs, to: SocketAddr) -> String {
    client
        .run(|| {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            s.send_to(b"q", to).unwrap();
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf).expect("no UDP answer");
            String::from_utf8_lossy(&buf[..n]).into_owned()
        })
        .unwrap()
}

fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Packet counter of the IPWARDEN-SERVICES rule containing `needle`.
fn chain_counter(node: &NetNs, needle: &str) -> u64 {
    let save = node
        .output("iptables-save", &["-c", "-t", "filter"])
        .unwrap();
    let line = save
        .lines()
        .find(|l| l.contains("-A IPWARDEN-SERVICES") && l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle} in\n{save}"));
    line[1..].split(':').next().unwrap().parse().unwrap()
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_services_carry_real_traffic_and_the_firewall_refuses_other_ports() {
    if !privileged("vm_services_carry_real_traffic_and_the_firewall_refuses_other_ports") {
        return;
    }
    let lab = lab();
    let report = run_once(&lab);
    // web: 2 ports x (ClusterIP, NodePort, externalIP); sticky: 1.
    assert_eq!(report["virtual_services"], 7, "{report}");
    assert_eq!(report["ipvs"]["services_added"], 7);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("Service shop/broken field spec.ports[0].protocol"),
        "{problems}"
    );

    // What the kernel holds, per the tools nobody here wrote.
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    for needle in [
        "TCP  10.96.0.10:80 rr",
        "UDP  10.96.0.10:53 rr",
        "TCP  10.0.1.1:30080 rr",
        "TCP  203.0.113.10:80 rr",
        "TCP  10.96.0.20:80 rr persistent 300",
        "-> 10.244.1.2:8080",
        "-> 10.244.2.2:5353",
    ] {
        assert!(ipvs.contains(needle), "{needle} missing from\n{ipvs}");
    }
    let sets = lab
        .node
        .output("ipset", &["list", "ipwarden-svip-prt"])
        .unwrap();
    for m in [
        "10.96.0.10,tcp:80",
        "10.96.0.10,udp:53",
        "203.0.113.10,tcp:80",
        "10.0.1.1,tcp:30080",
    ] {
        assert!(sets.contains(m), "{m} missing from\n{sets}");
    }
    assert!(
        !sets.contains("10.96.0.99"),
        "the broken service is skipped"
    );
    let rules = lab.node.output("iptables-save", &["-t", "filter"]).unwrap();
    assert!(rules.contains("-A INPUT -m set --match-set ipwarden-svip dst -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES"), "{rules}");

    // Traffic: ClusterIP (both backends over a few connections), UDP,
    // NodePort, externalIP.
    let seen: BTreeSet<String> = (0..4)
        .map(|_| tcp_answer(&lab.client, addr("10.96.0.10", 80)).unwrap())
        .collect();
    assert_eq!(
        seen,
        ["pod1", "pod2"].iter().map(|s| s.to_string()).collect()
    );
    assert!(udp_answer(&lab.client, addr("10.96.0.10", 53)).starts_with("pod"));
    assert!(tcp_answer(&lab.client, addr("10.0.1.1", 30080))
        .unwrap()
        .starts_with("pod"));
    assert!(tcp_answer(&lab.client, addr("203.0.113.10", 80))
        .unwrap()
        .starts_with("pod"));

    // Session affinity: one client, one backend.
    let sticky: BTreeSet<String> = (0..6)
        .map(|_| tcp_answer(&lab.client, addr("10.96.0.20", 80)).unwrap())
        .collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");

    // A VIP port that is no service port is refused by the firewall.
    let before = chain_counter(&lab.node, "-j REJECT");
    assert!(tcp_answer(&lab.client, addr("10.96.0.10", 81)).is_err());
    assert!(
        chain_counter(&lab.node, "-j REJECT") > before,
        "the REJECT rule did not fire"
    );

    // Unchanged manifests: nothing is written.
    let again = run_once(&lab);
    assert_eq!(again["ipvs"]["services_unchanged"], 7, "{again}");
    assert_eq!(again["ipvs"]["destinations_added"], 0);
    assert_eq!(again["sets"]["members_added"], 0);
    assert_eq!(
        again["chains_written"].as_array().unwrap().len(),
        0,
        "{again}"
    );

    // pod2 leaves web: only web's destinations change.
    let changed = CLUSTER.replacen(
        "- {addresses: [10.244.2.2], conditions: {ready: true}, nodeName: node-a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky",
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky",
        1,
    );
    assert_ne!(changed, CLUSTER);
    std::fs::write(lab.manifests.join("cluster.yaml"), changed).unwrap();
    let diff = run_once(&lab);
    assert_eq!(diff["ipvs"]["destinations_removed"], 6, "{diff}");
    assert_eq!(diff["ipvs"]["services_added"], 0);
    assert_eq!(diff["ipvs"]["services_removed"], 0);
    assert_eq!(diff["ipvs"]["services_unchanged"], 1, "sticky untouched");
    assert_eq!(diff["sets"]["members_added"], 0);
    assert_eq!(diff["sets"]["members_deleted"], 0);
    let after: BTreeSet<String> = (0..3)
        .map(|_| tcp_answer(&lab.client, addr("10.96.0.10", 80)).unwrap())
        .collect();
    assert_eq!(after, ["pod1".to_string()].into());
}

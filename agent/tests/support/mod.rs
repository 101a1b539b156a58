//! The lab of the VM tests: a node namespace running ipwarden, a client
//! namespace, and two backend "pods" behind veths, with helpers to send
//! real traffic and read the kernel's state.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use ipwarden::netns::{BpfFs, NetNs};

pub const CLUSTER: &str = include_str!("../fixtures/proxy/cluster.yaml");
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Lab {
    pub node: NetNs,
    pub client: NetNs,
    _pods: Vec<NetNs>,
    pub manifests: PathBuf,
    pub bpffs: BpfFs,
}

/// Starts a backend in `pod`: TCP 8080 and UDP 5353 answer with its name.
pub fn backend(pod: &NetNs, name: &'static str) {
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

pub fn lab() -> Lab {
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
pub fn run_once(lab: &Lab) -> serde_json::Value {
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

pub fn tcp_answer(client: &NetNs, to: SocketAddr) -> std::io::Result<String> {
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

pub fn udp_answer(client: &NetNs, to: SocketAddr) -> String {
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

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

/// Packet counter of the IPWARDEN-SERVICES rule containing `needle`.
pub fn chain_counter(node: &NetNs, needle: &str) -> u64 {
    let save = node
        .output("iptables-save", &["-c", "-t", "filter"])
        .unwrap();
    let line = save
        .lines()
        .find(|l| l.contains("-A IPWARDEN-SERVICES") && l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle} in\n{save}"));
    line[1..].split(':').next().unwrap().parse().unwrap()
}

/// Polls `cond` every 100 ms until it holds; panics after `within` with
/// `what`. Waiting for a condition, not for time.
pub fn wait_until(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent as a daemon in the node namespace; killed on drop.
pub struct Agent {
    child: Child,
}

impl Agent {
    /// Starts `ipwarden run` with `extra` flags and waits for its first pass.
    pub fn start(lab: &Lab, extra: &[&str]) -> Agent {
        let ready = std::env::temp_dir().join(format!("ipw-ready-{}", lab.node.name()));
        let _ = std::fs::remove_file(&ready);
        let child = lab
            .node
            .command(env!("CARGO_BIN_EXE_ipwarden"))
            .args(["run", "--node-name", "node-a"])
            .arg("--bpf-pin-dir")
            .arg(lab.bpffs.path())
            .arg("--manifests")
            .arg(&lab.manifests)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap();
        let mut agent = Agent { child };
        wait_until("the agent's first pass", Duration::from_secs(60), || {
            if let Ok(Some(status)) = agent.child.try_wait() {
                panic!("the agent exited early: {status}");
            }
            ready.exists()
        });
        agent
    }

    /// SIGKILL: no chance to clean up, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bpftool -j map dump pinned <pins>/maps/<map>`, parsed.
pub fn dump_pinned(lab: &Lab, map: &str) -> serde_json::Value {
    let path = lab.bpffs.path().join("maps").join(map);
    let out = lab
        .node
        .output(
            "bpftool",
            &["-j", "map", "dump", "pinned", path.to_str().unwrap()],
        )
        .unwrap();
    serde_json::from_str(&out).unwrap()
}

/// The formatted value of the mirror entry for (v4 `addr`, TCP, `port`).
pub fn mirror_entry(lab: &Lab, map: &str, addr: [u8; 4], port: u16) -> Option<serde_json::Value> {
    dump_pinned(lab, map)
        .as_array()?
        .iter()
        .map(|e| &e["formatted"])
        .find(|f| {
            f["key"]["port"] == port
                && f["key"]["proto"] == 6
                && (0..4).all(|i| f["key"]["addr"][i] == addr[i])
        })
        .map(|f| f["value"].clone())
}

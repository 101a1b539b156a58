//! A small cluster node in network namespaces, for the demo and the VM
//! tests: a node namespace where ipwarden runs, a client namespace, and two
//! backend "pods" behind veths (10.244.1.2 and 10.244.2.2) answering with
//! their name on TCP 8080 and UDP 5353, and with the address they see the
//! connection come from on TCP 8081. `Lab::dual_stack` adds IPv6
//! (node fd00:1::1, client fd00:1::2, pods fd00:244:N::2). Everything goes
//! with the value.
//!
//! `ipset_save` is the tests' reader of `ipset save` text.

pub mod ipset_save;

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use crate::netns::{BpfFs, NetNs};

/// The cluster the lab serves, seen from node-a (10.0.1.1): Services web
/// (ClusterIP 10.96.0.10, NodePort, externalIP 203.0.113.10) and sticky.
pub const CLUSTER: &str = include_str!("../tests/fixtures/proxy/cluster.yaml");
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// How long a test waits for something the agent does (its first pass, a
/// sync, an audit, a restart). One figure for all code that runs in the
/// IPVS VM: qemu TCG, two tests at a time, each step a process, on a host
/// busy with other builds (90 s for a first pass was seen to run out
/// there). A ceiling: waits poll and end early.
pub const VM_WAIT: Duration = Duration::from_secs(180);
/// The backends' port that answers with the peer address it sees.
pub const PEER_PORT: u16 = 8081;

pub struct Lab {
    pub node: NetNs,
    pub client: NetNs,
    pods: Vec<NetNs>,
    /// A folder holding cluster.yaml, for `ipwarden run --manifests`.
    pub manifests: PathBuf,
    /// A bpffs of the lab's own for the agent's pins (`ip netns exec`
    /// hides /sys/fs/bpf).
    pub bpffs: BpfFs,
}

/// Starts a backend in `pod`: TCP 8080 and UDP 5353 answer with its name.
fn backend(pod: &NetNs, name: &'static str) -> io::Result<()> {
    let tcp = pod.run(|| TcpListener::bind("0.0.0.0:8080"))??;
    let udp = pod.run(|| UdpSocket::bind("0.0.0.0:5353"))??;
    // [::] takes both families; an IPv4 peer shows as ::ffff:a.b.c.d.
    let peer = pod.run(|| TcpListener::bind(("::", PEER_PORT)))??;
    std::thread::spawn(move || {
        for mut conn in peer.incoming().flatten() {
            if let Ok(from) = conn.peer_addr() {
                let _ = conn.write_all(from.ip().to_canonical().to_string().as_bytes());
            }
        }
    });
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
    Ok(())
}

impl Lab {
    /// Builds the topology (IPv4) and writes `cluster` as the manifests.
    pub fn new(cluster: &str) -> io::Result<Lab> {
        Self::build(cluster, false)
    }

    /// The same topology with IPv6 addresses and routes as well.
    pub fn dual_stack(cluster: &str) -> io::Result<Lab> {
        Self::build(cluster, true)
    }

    fn build(cluster: &str, ipv6: bool) -> io::Result<Lab> {
        let v6 = |a: &'static str| if ipv6 { vec![a] } else { vec![] };
        let node = NetNs::new("ipw-node")?;
        let client = NetNs::new("ipw-client")?;
        let node_eth: Vec<&str> = [vec!["10.0.1.1/24"], v6("fd00:1::1/64")].concat();
        let client_eth: Vec<&str> = [vec!["10.0.1.2/24"], v6("fd00:1::2/64")].concat();
        node.veth_to(&client, ("eth0", &node_eth), ("eth0", &client_eth))?;
        client.ip(&["route", "add", "default", "via", "10.0.1.1"])?;
        if ipv6 {
            client.ip(&["-6", "route", "add", "default", "via", "fd00:1::1"])?;
        }
        let mut pods = Vec::new();
        for (i, name) in [(1, "pod1"), (2, "pod2")] {
            let pod = NetNs::new(name)?;
            let mut node_side = vec![format!("10.244.{i}.1/24")];
            let mut pod_side = vec![format!("10.244.{i}.2/24")];
            if ipv6 {
                node_side.push(format!("fd00:244:{i}::1/64"));
                pod_side.push(format!("fd00:244:{i}::2/64"));
            }
            node.veth_to(
                &pod,
                (&format!("vp{i}"), &strs(&node_side)),
                ("eth0", &strs(&pod_side)),
            )?;
            pod.ip(&["route", "add", "default", "via", &format!("10.244.{i}.1")])?;
            if ipv6 {
                pod.ip(&[
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("fd00:244:{i}::1"),
                ])?;
            }
            backend(&pod, name)?;
            pods.push(pod);
        }
        node.output("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        if ipv6 {
            node.output("sysctl", &["-qw", "net.ipv6.conf.all.forwarding=1"])?;
        }
        let manifests = std::env::temp_dir().join(format!("ipw-manifests-{}", node.name()));
        std::fs::create_dir_all(&manifests)?;
        std::fs::write(manifests.join("cluster.yaml"), cluster)?;
        let bpffs = BpfFs::new("lab")?;
        Ok(Lab {
            bpffs,
            node,
            client,
            pods,
            manifests,
        })
    }

    /// A TCP connection from the client to `to`: the backend's name.
    pub fn tcp(&self, to: SocketAddr) -> io::Result<String> {
        tcp_from(&self.client, to, TIMEOUT)
    }

    /// Backend pod `i` (1 or 2), e.g. to connect from it.
    pub fn pod(&self, i: usize) -> &NetNs {
        &self.pods[i - 1]
    }

    /// A UDP question from the client to `to`: the backend's name.
    pub fn udp(&self, to: SocketAddr) -> io::Result<String> {
        self.client.run(|| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.set_read_timeout(Some(TIMEOUT))?;
            s.send_to(b"q", to)?;
            let mut buf = [0u8; 64];
            let n = s.recv(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        })?
    }

    /// Packet counter of the IPWARDEN-SERVICES rule containing `needle`.
    pub fn chain_counter(&self, needle: &str) -> io::Result<u64> {
        let save = self.node.output("iptables-save", &["-c", "-t", "filter"])?;
        save.lines()
            .find(|l| l.contains("-A IPWARDEN-SERVICES") && l.contains(needle))
            .and_then(|l| l.get(1..)?.split(':').next()?.parse().ok())
            .ok_or_else(|| io::Error::other(format!("no rule with {needle} in\n{save}")))
    }

    /// `bpftool -j map dump pinned` of one of the agent's maps.
    pub fn dump_pinned(&self, map: &str) -> io::Result<serde_json::Value> {
        let path = self.bpffs.path().join("maps").join(map);
        let out = self.node.output(
            "bpftool",
            &["-j", "map", "dump", "pinned", &path.to_string_lossy()],
        )?;
        serde_json::from_str(&out).map_err(io::Error::other)
    }

    /// The formatted value of the entry for (v4 `addr`, TCP, `port`) in `map`.
    pub fn mirror_entry(&self, map: &str, addr: [u8; 4], port: u16) -> Option<serde_json::Value> {
        self.dump_pinned(map)
            .ok()?
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
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A TCP connection from namespace `ns` to `to`, connecting and reading
/// within `timeout` each: all the server wrote before closing.
pub fn tcp_from(ns: &NetNs, to: SocketAddr, timeout: Duration) -> io::Result<String> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&to, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        Ok(answer)
    })?
}

/// A plain HTTP/1.1 GET from `ns` to `to`: the status code and the body.
pub fn http_get_from(ns: &NetNs, to: SocketAddr, path: &str) -> io::Result<(u16, String)> {
    ns.run(|| {
        let mut s = TcpStream::connect_timeout(&to, TIMEOUT)?;
        s.set_read_timeout(Some(TIMEOUT))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| io::Error::other(format!("not an HTTP answer: {out:?}")))?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    })?
}

/// Polls `cond` every 100 ms until it holds, for at most `within`.
/// Waiting for a condition, not for time.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `ipwarden run` as a daemon in the lab's node namespace; killed on drop.
pub struct AgentProcess {
    child: Child,
    /// The `--ready-file`: written once every controller has synced fully.
    ready: PathBuf,
}

impl AgentProcess {
    /// Starts `bin run --manifests` (the lab's cluster) with `extra` flags
    /// and waits for its first pass.
    pub fn start(lab: &Lab, bin: &Path, extra: &[&str]) -> io::Result<AgentProcess> {
        let manifests = lab.manifests.to_string_lossy();
        let source = ["--manifests", manifests.as_ref()];
        let mut agent = Self::spawn(lab, bin, &source, extra)?;
        agent.wait_ready(VM_WAIT)?;
        Ok(agent)
    }

    /// Starts `bin run` with the `source` flags (`--manifests DIR`,
    /// `--kubeconfig FILE`) and `extra`; does not wait for anything.
    pub fn spawn(lab: &Lab, bin: &Path, source: &[&str], extra: &[&str]) -> io::Result<Self> {
        let ready = std::env::temp_dir().join(format!("ipw-ready-{}", lab.node.name()));
        let _ = std::fs::remove_file(&ready);
        let child = lab
            .node
            .command(&bin.to_string_lossy())
            .args(["run", "--node-name", "node-a"])
            .arg("--bpf-pin-dir")
            .arg(lab.bpffs.path())
            .args(source)
            .arg("--ready-file")
            .arg(&ready)
            .args(extra)
            // IPWARDEN_AGENT_LOG=info shows each sync (and reaches the VM).
            .env(
                "RUST_LOG",
                std::env::var("IPWARDEN_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .spawn()?;
        Ok(AgentProcess { child, ready })
    }

    /// The agent's process id (`ip netns exec` execs it in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Has every controller programmed the kernel (the ready file)?
    pub fn is_ready(&self) -> bool {
        self.ready.exists()
    }

    /// Waits for the first full sync of every controller; an error if the
    /// agent exits or `within` runs out first.
    pub fn wait_ready(&mut self, within: Duration) -> io::Result<()> {
        let mut exited = None;
        let up = wait_until(within, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                exited = Some(status);
                return true;
            }
            self.ready.exists()
        });
        match (up, exited) {
            (_, Some(status)) => Err(io::Error::other(format!(
                "the agent exited early: {status}"
            ))),
            (false, _) => Err(io::Error::other(format!(
                "the agent did not finish its first pass in {within:?}"
            ))),
            (true, None) => Ok(()),
        }
    }

    /// SIGTERM, as a rolling update sends it; waits for the exit.
    pub fn terminate(mut self) -> io::Result<std::process::ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).map_err(io::Error::from)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(
                    "the agent did not exit within 30 s of SIGTERM",
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no chance to clean up, as in a crash or an OOM kill.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ready);
    }
}

/// The lab's manifests folder goes with it (its namespaces and bpffs
/// clean themselves up).
impl Drop for Lab {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.manifests);
    }
}

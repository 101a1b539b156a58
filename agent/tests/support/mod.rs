//! The VM tests' side of `ipwarden::lab`: the same lab, with helpers that
//! panic (a panic keeps the stack trace) and the agent binary under test.
#![allow(dead_code)] // each test binary uses a different part

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use ipwarden::lab::{self, AgentProcess};

pub mod openmetrics;
pub use ipwarden::lab::{Lab, CLUSTER, VM_WAIT};

pub fn lab() -> Lab {
    Lab::new(CLUSTER).unwrap()
}

/// `ipwarden run --once --json` in the node namespace; its report. The
/// eBPF data plane runs too (mode log), pinned on a bpffs of the lab's own.
pub fn run_once(lab: &Lab) -> serde_json::Value {
    run_once_with(lab, &[])
}

/// The same with `extra` flags.
pub fn run_once_with(lab: &Lab, extra: &[&str]) -> serde_json::Value {
    let out = lab
        .node
        .command(env!("CARGO_BIN_EXE_ipwarden"))
        .args(["run", "--once", "--json", "--node-name", "node-a"])
        .arg("--bpf-pin-dir")
        .arg(lab.bpffs.path())
        .arg("--manifests")
        .arg(&lab.manifests)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ipwarden run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn tcp_answer(lab: &Lab, to: SocketAddr) -> std::io::Result<String> {
    lab.tcp(to)
}

pub fn udp_answer(lab: &Lab, to: SocketAddr) -> String {
    lab.udp(to).expect("no UDP answer")
}

pub fn addr(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().unwrap(), port)
}

pub fn chain_counter(lab: &Lab, needle: &str) -> u64 {
    lab.chain_counter(needle).unwrap()
}

pub fn wait_until(what: &str, within: Duration, cond: impl FnMut() -> bool) {
    assert!(
        lab::wait_until(within, cond),
        "timed out waiting for {what}"
    );
}

pub fn dump_pinned(lab: &Lab, map: &str) -> serde_json::Value {
    lab.dump_pinned(map).unwrap()
}

pub fn mirror_entry(lab: &Lab, map: &str, addr: [u8; 4], port: u16) -> Option<serde_json::Value> {
    lab.mirror_entry(map, addr, port)
}

/// IPVS's connection timeouts as `ipvsadm -L --timeout` prints them:
/// `Timeout (tcp tcpfin udp): 900 120 300`.
pub fn ipvs_timeouts(lab: &Lab) -> String {
    let out = lab.node.output("ipvsadm", &["-L", "--timeout"]).unwrap();
    out.trim().to_string()
}

/// `ipvsadm --set TCP TCPFIN UDP` in the node namespace.
pub fn set_ipvs_timeouts(lab: &Lab, tcp_tcpfin_udp: [&str; 3]) {
    let args = [&["--set"][..], &tcp_tcpfin_udp[..]].concat();
    lab.node.output("ipvsadm", &args).unwrap();
}

/// The agent under test as a daemon; killed on drop.
pub struct Agent(AgentProcess);

impl Agent {
    pub fn start(lab: &Lab, extra: &[&str]) -> Agent {
        Agent(AgentProcess::start(lab, Path::new(env!("CARGO_BIN_EXE_ipwarden")), extra).unwrap())
    }

    /// The agent on the API server of `kubeconfig`; does not wait for its
    /// first pass.
    pub fn spawn_kube(lab: &Lab, kubeconfig: &Path, extra: &[&str]) -> Agent {
        let kubeconfig = kubeconfig.to_string_lossy();
        Agent(
            AgentProcess::spawn(
                lab,
                Path::new(env!("CARGO_BIN_EXE_ipwarden")),
                &["--kubeconfig", kubeconfig.as_ref()],
                extra,
            )
            .unwrap(),
        )
    }

    /// The agent on the API server of `kubeconfig`, after its first pass.
    pub fn start_kube(lab: &Lab, kubeconfig: &Path, extra: &[&str]) -> Agent {
        let mut agent = Self::spawn_kube(lab, kubeconfig, extra);
        agent.wait_ready(VM_WAIT);
        agent
    }

    /// Waits for the first full sync of every controller (the ready file).
    pub fn wait_ready(&mut self, within: Duration) {
        self.0.wait_ready(within).unwrap()
    }

    pub fn is_ready(&self) -> bool {
        self.0.is_ready()
    }

    pub fn kill(self) {
        self.0.kill()
    }

    /// SIGTERM; the agent's exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        self.0.terminate().unwrap()
    }
}

/// A plain HTTP GET to the agent's API in the node namespace.
pub fn http_get(lab: &Lab, path: &str) -> String {
    try_http_get(lab, path).unwrap()
}

/// The same, an error while the agent's API is not up.
pub fn try_http_get(lab: &Lab, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    lab.node.run(|| {
        let mut s = std::net::TcpStream::connect("127.0.0.1:20244")?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })?
}

/// What selects ipwarden's VIP routes for `ip route show|flush`: the
/// local table, ipwarden's protocol 211, the dummy ipwarden0.
pub const VIP_ROUTES: [&str; 6] = ["table", "local", "proto", "211", "dev", "ipwarden0"];

/// The IPv4 VIPs on ipwarden0: its local routes of ipwarden's protocol
/// 211, as bare addresses (none when the interface does not exist).
pub fn vip_routes(lab: &Lab) -> std::collections::BTreeSet<String> {
    let args: Vec<&str> = ["-j", "-4", "route", "show"]
        .into_iter()
        .chain(VIP_ROUTES)
        .collect();
    let out = match lab.node.output("ip", &args) {
        Ok(out) => out,
        Err(e) if e.to_string().contains("Cannot find device") => String::new(),
        Err(e) => panic!("ip {args:?}: {e}"),
    };
    let routes: Vec<serde_json::Value> =
        serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })
            .unwrap_or_else(|e| panic!("ip -j route: {e}: {out}"));
    routes
        .iter()
        .filter_map(|r| Some(r["dst"].as_str()?.to_string()))
        .collect()
}

/// `ipwarden bpf dump --json` of the lab's pins.
pub fn bpf_dump(lab: &Lab) -> serde_json::Value {
    let dump = lab
        .node
        .output(
            env!("CARGO_BIN_EXE_ipwarden"),
            &[
                "bpf",
                "dump",
                "--json",
                "--bpf-pin-dir",
                lab.bpffs.path().to_str().unwrap(),
            ],
        )
        .unwrap();
    serde_json::from_str(&dump).unwrap()
}

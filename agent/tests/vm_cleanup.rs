//! `ipwarden cleanup` inside the IPVS VM: every IPVS service the agent
//! could have created goes, and nothing else. The agent ran with NodePorts
//! on a Node address that is on no interface (192.0.2.10) and with a wide
//! `--node-port-range`, so one NodePort (80) lies outside the range
//! cleanup is given: the scope of a running agent misses both, the record
//! in `ipwarden-svip-prt` does not. Oracle: `ipvsadm -Ln`.

use ipwarden::{lab::Lab, netns::privileged};

mod support;

use support::*;

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_cleanup_removes_every_service_the_agent_made_and_only_those() {
    if !privileged("vm_cleanup_removes_every_service_the_agent_made_and_only_those") {
        return;
    }
    let cluster = CLUSTER
        .replace(
            "{type: InternalIP, address: 10.0.1.1}",
            "{type: InternalIP, address: 192.0.2.10}",
        )
        .replace("nodePort: 30080", "nodePort: 80");
    let lab = Lab::new(&cluster).unwrap();
    run_once_with(&lab, &["--node-port-range", "1-32767", "--bpf-mode", "off"]);
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    for needle in [
        "TCP  192.0.2.10:80 rr",
        "UDP  192.0.2.10:30053 rr",
        "TCP  10.96.0.10:80 rr",
    ] {
        assert!(ipvs.contains(needle), "{needle} missing from\n{ipvs}");
    }
    // Somebody else's service on a node address stays.
    lab.node
        .output("ipvsadm", &["-A", "-t", "10.0.1.1:9999", "-s", "rr"])
        .unwrap();

    let out = lab
        .node
        .command(env!("CARGO_BIN_EXE_ipwarden"))
        .args(["cleanup", "--bpf-pin-dir"])
        .arg(lab.bpffs.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cleanup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    let services: Vec<&str> = ipvs
        .lines()
        .filter(|l| l.starts_with("TCP") || l.starts_with("UDP") || l.starts_with("SCTP"))
        .collect();
    assert_eq!(services, ["TCP  10.0.1.1:9999 rr"], "{ipvs}");
}

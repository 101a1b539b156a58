//! The IPVS VM itself: ip_vs is loaded and ipvsadm round-trips a service.
//! Runs only inside `cargo xtask vm-test` (this host kernel has no IPVS),
//! which `cargo xtask test` does for every `vm_*` test binary.

use ipwarden::netns::{privileged, NetNs};

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_ipvsadm_round_trips_a_service() {
    if !privileged("vm_ipvsadm_round_trips_a_service") {
        return;
    }
    let modules = std::fs::read_to_string("/proc/modules").unwrap();
    assert!(
        modules.lines().any(|l| l.starts_with("ip_vs ")),
        "ip_vs is not loaded: /proc/modules has {} lines",
        modules.lines().count()
    );
    let ns = NetNs::new("ipw-vm-smoke").unwrap();
    ns.output("ipvsadm", &["-A", "-t", "10.0.0.1:80", "-s", "rr"])
        .unwrap();
    ns.output(
        "ipvsadm",
        &[
            "-a",
            "-t",
            "10.0.0.1:80",
            "-r",
            "10.0.0.2:8080",
            "-m",
            "-w",
            "3",
        ],
    )
    .unwrap();
    let listing = ns.output("ipvsadm", &["-Ln", "--exact"]).unwrap();
    let rows: Vec<Vec<&str>> = listing
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(
        rows.contains(&vec!["TCP", "10.0.0.1:80", "rr"]),
        "service missing:\n{listing}"
    );
    assert!(
        rows.contains(&vec!["->", "10.0.0.2:8080", "Masq", "3", "0", "0"]),
        "destination missing:\n{listing}"
    );
    // IPVS is per network namespace: the service is not visible outside.
    let host = std::process::Command::new("ipvsadm")
        .args(["-Ln"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("10.0.0.1:80"));
}

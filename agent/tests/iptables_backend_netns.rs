//! Our chains go to the iptables backend the node's other rules are in:
//! `ipwarden run --once` (the policy controller, on this host's kernel) in
//! a fresh namespace where "kube-proxy" wrote its rules with
//! iptables-legacy or iptables-nft. Oracle: `iptables-legacy-save` and
//! `iptables-nft-save`, which each read only their own backend.

use std::path::Path;

use ipwarden::netns::{privileged, NetNs};

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

/// kube-proxy's nat hooks, written with `iptables-BACKEND`: `rules` rules.
fn kube_proxy_rules(ns: &NetNs, backend: &str, rules: usize) {
    let ipt = format!("iptables-{backend}");
    ns.output(&ipt, &["-t", "nat", "-N", "KUBE-SERVICES"])
        .unwrap();
    for (i, hook) in ["PREROUTING", "OUTPUT", "POSTROUTING"]
        .iter()
        .cycle()
        .take(rules)
        .enumerate()
    {
        let comment = format!("kube-proxy {i}");
        ns.output(
            &ipt,
            &[
                "-t",
                "nat",
                "-A",
                hook,
                "-m",
                "comment",
                "--comment",
                &comment,
                "-j",
                "KUBE-SERVICES",
            ],
        )
        .unwrap();
    }
}

/// The kubelet's hint, an empty chain in mangle, written with `backend`.
fn kubelet_hint(ns: &NetNs, backend: &str) {
    let ipt = format!("iptables-{backend}");
    ns.output(&ipt, &["-t", "mangle", "-N", "KUBE-IPTABLES-HINT"])
        .unwrap();
}

/// One policy pass; returns its log (JSON lines).
fn run_once(ns: &NetNs, extra: &[&str]) -> String {
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/netpol.yaml");
    let out = ns
        .command(AGENT)
        .args(["run", "--once", "--node-name", "node-a"])
        .args(["--run-service-proxy=false", "--bpf-mode", "off"])
        .args(["--log-format", "json"])
        .arg("--manifests")
        .arg(&manifests)
        .args(extra)
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    log
}

/// Does `iptables-BACKEND-save` show the policy controller's chains?
fn ours_in(ns: &NetNs, backend: &str) -> bool {
    let save = ns
        .output(&format!("iptables-{backend}-save"), &["-t", "filter"])
        .unwrap();
    save.lines().any(|l| l.starts_with(":IPW-"))
}

/// The backend the agent logged, and why.
fn logged_backend(log: &str) -> (String, String) {
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "iptables backend")
        .unwrap_or_else(|| panic!("no iptables backend line in {log}"));
    let field = |name: &str| line[name].as_str().unwrap_or_default().to_string();
    (field("backend"), field("why"))
}

fn assert_chains_in(ns: &NetNs, backend: &str, other: &str, log: &str) {
    assert!(ours_in(ns, backend), "no IPW- chain in {backend}: {log}");
    assert!(!ours_in(ns, other), "IPW- chains in {other} too: {log}");
    assert_eq!(logged_backend(log).0, backend, "{log}");
}

#[test]
fn chains_follow_kube_proxy_into_legacy() {
    if !privileged("chains_follow_kube_proxy_into_legacy") {
        return;
    }
    let ns = NetNs::new("ipw-ipt-legacy").unwrap();
    kube_proxy_rules(&ns, "legacy", 3);
    let log = run_once(&ns, &[]);
    assert_chains_in(&ns, "legacy", "nft", &log);
    assert_eq!(
        logged_backend(&log).1,
        "detected: 3 legacy rules, 0 nft rules"
    );
}

#[test]
fn chains_follow_kube_proxy_into_nft() {
    if !privileged("chains_follow_kube_proxy_into_nft") {
        return;
    }
    let ns = NetNs::new("ipw-ipt-nft").unwrap();
    // Some legacy leftovers, fewer than the rules in use.
    kube_proxy_rules(&ns, "legacy", 1);
    kube_proxy_rules(&ns, "nft", 3);
    let log = run_once(&ns, &[]);
    assert_chains_in(&ns, "nft", "legacy", &log);
}

#[test]
fn the_kubelet_hint_outweighs_rule_counts() {
    if !privileged("the_kubelet_hint_outweighs_rule_counts") {
        return;
    }
    let ns = NetNs::new("ipw-ipt-hint").unwrap();
    kube_proxy_rules(&ns, "nft", 3);
    kubelet_hint(&ns, "legacy");
    let log = run_once(&ns, &[]);
    assert_chains_in(&ns, "legacy", "nft", &log);
    assert!(
        logged_backend(&log).1.contains("KUBE-IPTABLES-HINT"),
        "{log}"
    );
}

#[test]
fn the_flag_forces_a_backend() {
    if !privileged("the_flag_forces_a_backend") {
        return;
    }
    let ns = NetNs::new("ipw-ipt-force").unwrap();
    kube_proxy_rules(&ns, "nft", 3);
    let log = run_once(&ns, &["--iptables-backend", "legacy"]);
    assert_chains_in(&ns, "legacy", "nft", &log);
}

/// Asking x_tables for a table by name creates it, and its hooks then cost
/// every packet of the node: detecting the backend on an nft node must
/// leave the legacy backend without a single table (the kernel's own
/// list of them).
#[test]
fn detection_creates_no_legacy_table() {
    if !privileged("detection_creates_no_legacy_table") {
        return;
    }
    let ns = NetNs::new("ipw-ipt-notable").unwrap();
    kube_proxy_rules(&ns, "nft", 3);
    let log = run_once(&ns, &[]);
    for names in ["/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"] {
        let tables = ns.output("cat", &[names]).unwrap_or_default();
        assert_eq!(tables.trim(), "", "legacy tables in {names}: {log}");
    }
    // Last: iptables-legacy-save -t filter creates the legacy filter table.
    assert_chains_in(&ns, "nft", "legacy", &log);
}

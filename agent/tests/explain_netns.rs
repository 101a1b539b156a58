//! `ipwarden explain` for a pod and `ipwarden status`, against a running
//! agent (the policy controller alone, so it runs on this host's kernel) in
//! a throw-away network namespace.

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use ipwarden::{
    lab::{http_get_from, AgentProcess, Lab, CLUSTER, VM_WAIT},
    netns::{privileged, NetNs},
};

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(ns: &NetNs, args: &[&str]) -> String {
    let out = ns.command(AGENT).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ipwarden {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn explain_names_the_policies_isolating_a_pod_and_status_the_syncs() {
    if !privileged("explain_names_the_policies_isolating_a_pod_and_status_the_syncs") {
        return;
    }
    let ns = NetNs::new("ipw-explain").unwrap();
    let ready = std::env::temp_dir().join(format!("{}.ready", ns.name()));
    let manifests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples/netpol.yaml");
    // No agent yet: explain says so.
    let out = ns
        .command(AGENT)
        .args(["explain", "10.244.1.10"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("no agent answers"),
        "{out:?}"
    );
    assert!(
        !out.status.success(),
        "the agent could not be asked: {out:?}"
    );
    let status = ns.command(AGENT).arg("status").output().unwrap();
    assert!(!status.status.success(), "{status:?}");

    let _daemon = Daemon(
        ns.command(AGENT)
            .args([
                "run",
                "--node-name",
                "node-a",
                "--run-service-proxy=false",
                "--bpf-mode",
                "off",
            ])
            .arg("--manifests")
            .arg(&manifests)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + ipwarden::lab::VM_WAIT;
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the agent did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&ready);

    let text = run(&ns, &["explain", "10.244.1.10"]);
    assert!(text.contains("pod shop/api"), "{text}");
    assert!(
        text.contains("ingress: isolated by shop/api-ingress"),
        "{text}"
    );
    assert!(
        text.contains("from pods {role=frontend} in namespaces {team=front} or 192.168.0.0/16 except 192.168.66.0/24, ports tcp named \"http\""),
        "{text}"
    );
    assert!(text.contains("egress: not isolated"), "{text}");
    // By name, as kubectl names it: the same answer.
    let by_name = run(&ns, &["explain", "shop/api"]);
    assert!(
        by_name.contains("ingress: isolated by shop/api-ingress"),
        "{by_name}"
    );
    // No pod of this node: said, not "not restricted".
    let other = run(&ns, &["explain", "10.244.9.9"]);
    assert!(
        other.contains("no pod of node node-a is at 10.244.9.9"),
        "{other}"
    );
    let elsewhere = run(&ns, &["explain", "front/web"]);
    assert!(
        elsewhere.contains("no pod of node node-a is named front/web"),
        "{elsewhere}"
    );

    let status = run(&ns, &["status"]);
    assert!(status.contains("policies: "), "{status}");
    assert!(
        status.starts_with("ready: yes, every controller has programmed the kernel"),
        "{status}"
    );
    assert!(status.contains(": listed"), "{status}");
    assert!(
        status.contains("last full sync:    ") && !status.contains("last full sync:    never"),
        "{status}"
    );
    assert!(status.contains("2 Pod"), "{status}");
    assert!(status.contains("eBPF: off"), "{status}");
    // A fresh namespace holds no rules: nft, said with the counts.
    assert!(
        status.contains("iptables: nft backend (detected: 0 legacy rules, "),
        "{status}"
    );
    let json: serde_json::Value = serde_json::from_str(&run(&ns, &["status", "--json"])).unwrap();
    assert_eq!(json["controllers"]["policies"]["failures"], 0, "{json}");
}

/// `/state` lists every Service, pod and rule: a pod that reaches the node
/// on its address gets health and metrics, never that.
#[test]
fn state_is_answered_on_loopback_only() {
    if !privileged("state_is_answered_on_loopback_only") {
        return;
    }
    let lab = Lab::new(CLUSTER).unwrap();
    let source = ["--manifests", lab.manifests.to_str().unwrap()];
    let extra = ["--run-service-proxy=false", "--bpf-mode", "off"];
    let mut agent = AgentProcess::spawn(&lab, Path::new(AGENT), &source, &extra).unwrap();
    agent.wait_ready(VM_WAIT).unwrap();
    // The node's address as the client namespace (a pod) reaches it.
    let from_pod = |to: &str, path: &str| http_get_from(&lab.client, to.parse().unwrap(), path);

    assert_eq!(from_pod("10.0.1.1:20244", "/healthz").unwrap().0, 200);
    assert_eq!(from_pod("10.0.1.1:20244", "/readyz").unwrap().0, 200);
    let (code, metrics) = from_pod("10.0.1.1:20244", "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("ipwarden_"), "{metrics}");
    let (code, body) = from_pod("10.0.1.1:20244", "/state").unwrap();
    assert_eq!(code, 404, "/state on the node's address: {body}");
    let refused = from_pod("10.0.1.1:20246", "/state");
    assert!(
        refused.is_err(),
        "the status port on a node address: {refused:?}"
    );

    let (code, body) =
        http_get_from(&lab.node, "127.0.0.1:20246".parse().unwrap(), "/state").unwrap();
    assert_eq!(code, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(state["controllers"]["policies"].is_object(), "{state}");
    // status finds it there by default, and at `:PORT` and `localhost:PORT`.
    for agent in ["127.0.0.1:20246", ":20246", "localhost:20246"] {
        let text = run(&lab.node, &["status", "--agent", agent]);
        assert!(text.contains("policies: "), "{agent}: {text}");
    }
}

/// With ClusterNetworkPolicies (the README's example,
/// tests/fixtures/cluster-policy.yaml).
#[test]
fn explain_names_the_tiers_deciding_each_direction_and_status_counts_them() {
    if !privileged("explain_names_the_tiers_deciding_each_direction_and_status_counts_them") {
        return;
    }
    let ns = NetNs::new("ipw-explain-cnp").unwrap();
    let ready = std::env::temp_dir().join(format!("{}.ready", ns.name()));
    let manifests =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cluster-policy.yaml");
    let _daemon = Daemon(
        ns.command(AGENT)
            .args(["run", "--node-name", "node-a", "--run-service-proxy=false"])
            .arg("--manifests")
            .arg(&manifests)
            .arg("--ready-file")
            .arg(&ready)
            .env("RUST_LOG", "warn")
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + VM_WAIT;
    while !ready.exists() {
        assert!(Instant::now() < deadline, "the agent did not become ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&ready);

    // shop/api: Admin tier, then its NetworkPolicy (no Baseline).
    let api = run(&ns, &["explain", "10.244.1.10"]);
    let expected = [
        "ingress: Admin tier (cluster-rules), first matching rule decides:",
        "  cluster-rules (priority 10): Accept monitoring: from pods {} in namespaces {kubernetes.io/metadata.name=monitoring}",
        "ingress: isolated by shop/api-from-front; allowed:",
        "egress: Admin tier (cluster-rules), first matching rule decides:",
        "  cluster-rules (priority 10): Deny no-metadata: to 169.254.169.254/32, any port",
    ];
    for line in expected {
        assert!(api.contains(line), "no {line:?} in:\n{api}");
    }
    assert!(!api.contains("Baseline"), "{api}");
    // front/web: no NetworkPolicy, so the Baseline tier decides after Admin.
    let web = run(&ns, &["explain", "10.244.1.20"]);
    let expected = [
        "ingress: no NetworkPolicy selects it",
        "ingress: Baseline tier (namespace-default), first matching rule decides:",
        "  namespace-default (priority 100): Deny default-deny: from pods {} in namespaces {}, any port",
        "ingress: whatever no tier decided is allowed",
    ];
    for line in expected {
        assert!(web.contains(line), "no {line:?} in:\n{web}");
    }

    let status = run(&ns, &["status"]);
    assert!(
        status.contains("ClusterNetworkPolicies in force: 2 (Admin 1, Baseline 1)"),
        "{status}"
    );
    // The chains the tiers programmed, as iptables-save prints them.
    let save = ns.command("iptables-save").output().unwrap();
    let save = String::from_utf8_lossy(&save.stdout);
    assert!(
        save.contains("--comment \"ipwarden:denied cnp:cluster-rules/no-metadata egress\""),
        "{save}"
    );
    assert!(
        save.contains("-d 10.244.1.20/32 -m mark --mark 0x40000/0x60000 -j DROP"),
        "{save}"
    );
}

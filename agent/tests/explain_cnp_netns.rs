//! `ipwarden explain` and `status` with ClusterNetworkPolicies, against a
//! running agent (the policy controller alone) in a throw-away network
//! namespace, on the README's example (tests/fixtures/cluster-policy.yaml).

use std::{
    path::Path,
    process::Child,
    time::{Duration, Instant},
};

use ipwarden::netns::{privileged, NetNs};

const AGENT: &str = env!("CARGO_BIN_EXE_ipwarden");
const API: &str = "127.0.0.1:20244";

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
            .args([
                "run",
                "--node-name",
                "node-a",
                "--run-service-proxy=false",
                "--api-addr",
                API,
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

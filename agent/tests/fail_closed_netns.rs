//! Fail closed, fail loud, on real packets and real exit statuses.
//!
//! - A running agent whose NetworkPolicy is edited into a type error keeps
//!   the pod isolated as before (its last good version), and a policy that
//!   was never readable isolates its namespace's pods both ways.
//! - `run --once` with a broken document exits non-zero and leaves the
//!   kernel byte-identical.
//! - Bad flags exit 2 with a sentence (no root needed for these).
//!
//! The kernel tests need root (skipped without it unless
//! IPWARDEN_PRIVILEGED=1) and run in the lab's own network namespaces:
//! a client (10.0.1.2) routed through the node (10.0.1.1) to two pods
//! (10.244.1.2, 10.244.2.2) answering on TCP 8080 and 8081.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use ipwarden::{
    lab::{http_get_from, tcp_from, wait_until, AgentProcess, Lab},
    netns::privileged,
};

const BIN: &str = env!("CARGO_BIN_EXE_ipwarden");
const WAIT: Duration = Duration::from_secs(30);
/// A refused connection is REJECTed at once; an answer comes well within.
const PROBE: Duration = Duration::from_secs(3);

/// node-a, namespace shop, and its pod web-1 (the lab's pod1).
const CLUSTER: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a}\n\
    status: {addresses: [{type: InternalIP, address: 10.0.1.1}]}\n---\n\
    apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
    apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, labels: {app: web}}\n\
    spec: {nodeName: node-a, containers: [{name: web, ports: [{name: http, containerPort: 8080}]}]}\n\
    status: {phase: Running, podIP: 10.244.1.2, podIPs: [{ip: 10.244.1.2}]}\n";

/// Isolates web-1 for ingress and allows TCP 8080 only.
const ALLOW_WEB: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
    metadata: {name: allow-web, namespace: shop}\n\
    spec:\n  podSelector: {matchLabels: {app: web}}\n  policyTypes: [Ingress]\n\
    \x20 ingress:\n  - ports: [{protocol: TCP, port: http}]\n";

/// The edit of the issue: `port: http` written `port: {name: http}`.
fn typo(policy: &str) -> String {
    policy.replace("port: http}", "port: {name: http}}")
}

/// Replaces a file at once (write aside, rename), as kubectl and ConfigMap
/// volumes do.
/// The lab's cluster with the readable policy in its own file, whose path
/// is returned for the tests' edits.
fn lab_allowing_web() -> (Lab, PathBuf) {
    let lab = Lab::new(CLUSTER).unwrap();
    let policy = lab.manifests.join("policy.yaml");
    write(&policy, ALLOW_WEB);
    (lab, policy)
}

fn write(path: &Path, text: &str) {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, text).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

fn connects(from: &ipwarden::netns::NetNs, to: &str) -> bool {
    tcp_from(from, to.parse().unwrap(), PROBE).is_ok()
}

fn get(lab: &Lab, path: &str) -> String {
    let (status, body) = http_get_from(&lab.node, "127.0.0.1:20246".parse().unwrap(), path)
        .unwrap_or((0, String::new()));
    assert!(status == 200 || status == 503, "{path}: {status} {body}");
    body
}

#[test]
fn a_policy_edited_into_a_type_error_keeps_the_pod_isolated() {
    if !privileged("a_policy_edited_into_a_type_error_keeps_the_pod_isolated") {
        return;
    }
    let (lab, policy) = lab_allowing_web();
    let source = ["--manifests", lab.manifests.to_str().unwrap()];
    let extra = [
        "--run-service-proxy=false",
        "--bpf-mode",
        "off",
        "--api-addr",
        "127.0.0.1:20244",
    ];
    let mut agent = AgentProcess::spawn(&lab, Path::new(BIN), &source, &extra).unwrap();
    agent.wait_ready(Duration::from_secs(60)).unwrap();
    let (web, web_other) = ("10.244.1.2:8080", "10.244.1.2:8081");
    assert!(connects(&lab.client, web), "8080 is allowed");
    assert!(!connects(&lab.client, web_other), "web-1 is isolated");

    // The type error: the last good version stays, loudly.
    write(&policy, &typo(ALLOW_WEB));
    assert!(
        wait_until(WAIT, || get(&lab, "/state")
            .contains("NetworkPolicy shop/allow-web")),
        "status never named the unreadable policy: {}",
        get(&lab, "/state")
    );
    let state = get(&lab, "/state");
    assert!(state.contains("spec.ingress[0].ports[0].port"), "{state}");
    assert!(
        !connects(&lab.client, web_other),
        "the pod must stay isolated"
    );
    assert!(
        connects(&lab.client, web),
        "and what was allowed stays allowed"
    );
    assert!(get(&lab, "/metrics").contains("ipwarden_unreadable_objects{kind=\"NetworkPolicy\"} 1"));

    // A policy never readable: its namespace's pods isolated both ways
    // (policies add up: allow-web still allows 8080 in).
    let pod2 = "10.244.2.2:8080";
    assert!(connects(lab.pod(1), pod2), "web-1 may connect out before");
    let never = lab.manifests.join("never.yaml");
    write(&never, &typo(&ALLOW_WEB.replace("allow-web", "never-read")));
    assert!(
        wait_until(WAIT, || !connects(lab.pod(1), pod2)),
        "the deny-all stand-in never isolated web-1's egress"
    );
    assert!(connects(&lab.client, web) && !connects(&lab.client, web_other));
    assert!(get(&lab, "/metrics").contains("ipwarden_unreadable_objects{kind=\"NetworkPolicy\"} 2"));
    // allow-web removed: the stand-in alone isolates web-1's ingress.
    std::fs::remove_file(&policy).unwrap();
    assert!(
        wait_until(WAIT, || !connects(&lab.client, web)),
        "the deny-all stand-in never isolated web-1's ingress"
    );
    assert!(!connects(&lab.client, web_other));

    // Fixed: as written.
    std::fs::remove_file(&never).unwrap();
    write(&policy, ALLOW_WEB);
    assert!(wait_until(WAIT, || connects(&lab.client, web)));
    assert!(connects(lab.pod(1), pod2));
    assert!(!connects(&lab.client, web_other));
    assert!(wait_until(WAIT, || !get(&lab, "/state")
        .contains("NetworkPolicy shop/allow-web")));
    agent.terminate().unwrap();
}

/// iptables and ipsets as the kernel holds them (iptables-save's dated
/// comment lines left out).
fn kernel(lab: &Lab) -> String {
    let tables = lab.node.output("iptables-save", &[]).unwrap();
    let sets = lab.node.output("ipset", &["save"]).unwrap();
    let rules: Vec<&str> = tables.lines().filter(|l| !l.starts_with('#')).collect();
    format!("{}\n{sets}", rules.join("\n"))
}

#[test]
fn run_once_with_a_broken_document_exits_non_zero_and_changes_nothing() {
    if !privileged("run_once_with_a_broken_document_exits_non_zero_and_changes_nothing") {
        return;
    }
    let (lab, policy) = lab_allowing_web();
    let once = || {
        lab.node
            .command(BIN)
            .args(["run", "--once", "--node-name", "node-a"])
            .args(["--run-service-proxy=false", "--bpf-mode", "off"])
            .arg("--manifests")
            .arg(&lab.manifests)
            .output()
            .unwrap()
    };
    let first = once();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let before = kernel(&lab);
    assert!(before.contains("IPW-POD-FW-"), "{before}");

    write(&policy, &typo(ALLOW_WEB));
    let out = once();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 problems: 1 document(s) cannot be read, nothing was changed"),
        "{stderr}"
    );
    assert!(stderr.contains("policy.yaml document 1 (NetworkPolicy shop/allow-web): field spec.ingress[0].ports[0].port"), "{stderr}");
    assert_eq!(kernel(&lab), before, "the kernel must stay byte-identical");
    assert!(
        !connects(&lab.client, "10.244.1.2:8081"),
        "web-1 stays isolated"
    );
}

/// `ipwarden run FLAGS` as a user types it: exit status and stderr.
fn run(flags: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("run")
        .args(flags)
        .args(["--api-addr", "off", "--bpf-mode", "off"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_exit_2_with_a_sentence() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--service-cluster-ip-range", "10.96.0.1/12"],
            "10.96.0.1/12 has host bits set; did you mean 10.96.0.0/12?",
        ),
        (
            &["--service-external-ip-range", "203.0.113.7/24"],
            "did you mean 203.0.113.0/24?",
        ),
        (
            &["--run-service-proxy=false", "--run-firewall=false"],
            "leave nothing to run; keep at least one",
        ),
        (
            &["--node-port-range", "32767:30000"],
            "32767 is above 30000",
        ),
        (
            &["--node-port-range", "30000"],
            "expected FIRST-LAST or FIRST:LAST",
        ),
        (
            &["--status-bind-address", "0.0.0.0:20246"],
            "/state describes the cluster and is served on loopback only",
        ),
    ];
    for (flags, message) in cases {
        let (code, stderr) = run(flags);
        assert_eq!(code, Some(2), "{flags:?}: {stderr}");
        assert!(stderr.contains(message), "{flags:?}: {stderr}");
    }
    // An address that does not resolve: refused before anything starts.
    let out = Command::new(BIN)
        .args([
            "run",
            "--metrics-bind-address",
            "no-such-host.invalid:1",
            "--bpf-mode",
            "off",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--metrics-bind-address no-such-host.invalid:1"),
        "{stderr}"
    );
}

#[test]
fn flags_read_as_kube_router_and_client_go_read_them() {
    if !privileged("flags_read_as_kube_router_and_client_go_read_them") {
        return;
    }
    let lab = Lab::new(CLUSTER).unwrap();
    let out = lab
        .node
        .command(BIN)
        .args([
            "run",
            "--once",
            "--node-name",
            "node-a",
            "--bpf-mode",
            "off",
        ])
        .args([
            "--run-service-proxy=false",
            "--node-port-range",
            "30000:32767",
        ])
        .args(["--metrics-bind-address", "localhost:20244"])
        .args(["--healthz-bind-address", ":20245"])
        .arg("--manifests")
        .arg(&lab.manifests)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A manifest that never parses: /healthz fails once
/// `--source-list-deadline` has passed, naming the file, and status says
/// so; fixed, both clear.
#[test]
fn healthz_fails_while_the_source_has_not_listed_within_the_deadline() {
    if !privileged("healthz_fails_while_the_source_has_not_listed_within_the_deadline") {
        return;
    }
    let lab = Lab::new(CLUSTER).unwrap();
    let broken = lab.manifests.join("broken.yaml");
    write(
        &broken,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web",
    );
    let source = ["--manifests", lab.manifests.to_str().unwrap()];
    let extra = [
        "--run-service-proxy=false",
        "--bpf-mode",
        "off",
        "--api-addr",
        "127.0.0.1:20244",
        "--source-list-deadline",
        "1s",
    ];
    let mut agent = AgentProcess::spawn(&lab, Path::new(BIN), &source, &extra).unwrap();
    let health = || {
        http_get_from(&lab.node, "127.0.0.1:20244".parse().unwrap(), "/healthz")
            .unwrap_or((0, String::new()))
    };
    assert!(
        wait_until(WAIT, || health().0 == 503),
        "/healthz never failed: {:?}",
        health()
    );
    let (_, why) = health();
    assert!(why.contains("has not completed a list within 1s"), "{why}");
    assert!(why.contains("broken.yaml"), "{why}");
    assert!(get(&lab, "/state").contains("broken.yaml"));
    write(
        &broken,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n",
    );
    agent.wait_ready(Duration::from_secs(60)).unwrap();
    assert!(wait_until(WAIT, || health().0 == 200), "{:?}", health());
    agent.terminate().unwrap();
}

//! `ipwarden run --once --kubeconfig K` end to end: the agent binary reads
//! the cluster from a fake API server (tests/support/fake_apiserver.rs)
//! and programs the policy chains of a throw-away network namespace. The
//! server listens inside that namespace, so the agent reaches it on
//! loopback. Needs root (skips without it unless IPWARDEN_PRIVILEGED=1);
//! the service proxy is off because IPVS needs the VM's kernel.

#[path = "support/fake_apiserver.rs"]
mod fake_apiserver;

use fake_apiserver::{FakeApiServer, Res};
use ipwarden::netns::{privileged, NetNs};
use serde_json::json;

/// A fresh netns with the fake API server on its loopback, holding
/// namespace `x`.
fn server_in_a_netns() -> (NetNs, FakeApiServer) {
    let ns = NetNs::new("ipw-kube").unwrap();
    let listener = ns
        .run(|| std::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap()
        .unwrap();
    let server = FakeApiServer::start_on_std(listener);
    server.apply(Res::Namespaces, json!({"metadata": {"name": "x"}}));
    (ns, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_programs_what_the_api_server_holds() {
    if !privileged("run_once_programs_what_the_api_server_holds") {
        return;
    }
    let (ns, server) = server_in_a_netns();
    server.apply(
        Res::Pods,
        json!({"metadata": {"name": "a", "namespace": "x", "labels": {"pod": "a"}},
            "spec": {"nodeName": "node-a", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.2", "podIPs": [{"ip": "10.244.1.2"}]}}),
    );
    server.apply(
        Res::NetworkPolicies,
        json!({"metadata": {"name": "deny-all", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
    );
    server.apply(
        Res::Nodes,
        json!({"metadata": {"name": "node-a"},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.56.10"}]}}),
    );
    let dir = std::env::temp_dir().join(format!("ipw-kube-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = server.kubeconfig(&dir);

    let mut cmd = ns.command(env!("CARGO_BIN_EXE_ipwarden"));
    cmd.args(["run", "--once", "--json", "--node-name", "node-a"])
        .args([
            "--run-service-proxy=false",
            "--bpf-mode",
            "off",
            "--api-addr",
            "off",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "ipwarden run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["policies"]["chains_written"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{report}"
    );
    let save = ns.command("iptables-save").output().unwrap();
    let save = String::from_utf8_lossy(&save.stdout);
    assert!(
        save.contains("-A IPW-TO-POD-2 -d 10.244.1.2/32 -g IPW-POD-FW-"),
        "{save}"
    );
    // Every kind was listed, the Node with its field selector.
    let requests = server.requests();
    for path in [
        "/api/v1/services?",
        "/apis/discovery.k8s.io/v1/endpointslices?",
        "/api/v1/pods?",
        "/api/v1/namespaces?",
        "/apis/networking.k8s.io/v1/networkpolicies?",
        "/api/v1/nodes?&fieldSelector=metadata.name=node-a",
    ] {
        assert!(
            requests.iter().any(|r| r.contains(path)),
            "{path}: {requests:#?}"
        );
    }
}

/// `--once` is strict: a NetworkPolicy the API server serves but the agent
/// cannot read (`port: {name: http}`) makes it exit non-zero before it
/// writes anything; the namespace's kernel stays as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_refuses_an_object_it_cannot_read_and_writes_nothing() {
    if !privileged("run_once_refuses_an_object_it_cannot_read_and_writes_nothing") {
        return;
    }
    let (ns, server) = server_in_a_netns();
    server.apply(
        Res::NetworkPolicies,
        json!({"metadata": {"name": "allow-web", "namespace": "x"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                "ingress": [{"ports": [{"protocol": "TCP", "port": {"name": "http"}}]}]}}),
    );
    server.apply(Res::Nodes, json!({"metadata": {"name": "node-a"}}));
    let dir = std::env::temp_dir().join(format!("ipw-kube-strict-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = server.kubeconfig(&dir);
    // iptables-save's dated comment lines left out.
    let rules = || {
        let out = ns.command("iptables-save").output().unwrap().stdout;
        String::from_utf8_lossy(&out)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let before = rules();

    let mut cmd = ns.command(env!("CARGO_BIN_EXE_ipwarden"));
    cmd.args(["run", "--once", "--node-name", "node-a"])
        .args(["--run-service-proxy=false", "--bpf-mode", "off"])
        .arg("--kubeconfig")
        .arg(&kubeconfig);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 problems: 1 object(s) cannot be read, nothing was changed: NetworkPolicy x/allow-web (field spec.ingress[0].ports[0].port"),
        "{stderr}"
    );
    assert_eq!(rules(), before, "nothing was written");
}

/// `ipwarden status` beside an agent whose API server refuses one kind:
/// not ready, each resource listed or failing with its error, the
/// controller never synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_beside_an_api_server_that_refuses_a_kind() {
    if !privileged("status_beside_an_api_server_that_refuses_a_kind") {
        return;
    }
    let (ns, server) = server_in_a_netns();
    server.apply(Res::Nodes, json!({"metadata": {"name": "node-a"}}));
    server.fail_lists(Res::Pods, 403, 100_000);
    let dir = std::env::temp_dir().join(format!("ipw-kube-status-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = server.kubeconfig(&dir);
    let mut agent = ns
        .command(env!("CARGO_BIN_EXE_ipwarden"))
        .args(["run", "--node-name", "node-a"])
        .args(["--run-service-proxy=false", "--bpf-mode", "off"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("RUST_LOG", "error")
        .spawn()
        .unwrap();
    let status = || {
        let out = ns
            .command(env!("CARGO_BIN_EXE_ipwarden"))
            .arg("status")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let done = tokio::task::block_in_place(|| {
        ipwarden::lab::wait_until(ipwarden::lab::VM_WAIT, || {
            let (ok, text) = status();
            ok && text.contains("  pods: failing") && text.contains("  services: listed")
        })
    });
    let (_, text) = status();
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(done, "{text}");
    assert!(
        text.starts_with("ready: no, the source has not listed pods"),
        "{text}"
    );
    assert!(text.contains("is forbidden"), "the last error: {text}");
    assert!(text.contains("  nodes: listed"), "{text}");
    assert!(text.contains("policies: 0 syncs"), "{text}");
    assert!(text.contains("last full sync:    never"), "{text}");
}

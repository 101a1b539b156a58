//! The service proxy and the policy controller in one pass, inside the
//! IPVS VM: a VIP keeps answering while a policy isolates a pod, and
//! service traffic that IPVS sends to an isolated pod meets that pod's
//! ingress policy (it passes OUTPUT after IPVS, as in kube-router).

use ipwarden::{lab::Lab, netns::privileged};

mod support;

use support::*;

/// Two Services: `solo` is served by pod1 only, `other` by pod2 only.
const SERVICES: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
status: {addresses: [{type: InternalIP, address: 10.0.1.1}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {team: shop}}
---
apiVersion: v1
kind: Service
metadata: {name: solo, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: solo-1, namespace: shop, labels: {kubernetes.io/service-name: solo}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node-a}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec:
  clusterIP: 10.96.0.40
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: other-1, namespace: shop, labels: {kubernetes.io/service-name: other}}
addressType: IPv4
ports: [{name: http, port: 8080, protocol: TCP}]
endpoints: [{addresses: [10.244.2.2], conditions: {ready: true}, nodeName: node-a}]
---
apiVersion: v1
kind: Pod
metadata: {name: pod1, namespace: shop, labels: {app: solo}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{name: http, containerPort: 8080}]}]}
status: {phase: Running, podIP: 10.244.1.2}
---
apiVersion: v1
kind: Pod
metadata: {name: pod2, namespace: shop, labels: {app: other}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {phase: Running, podIP: 10.244.2.2}
"#;

fn with_policy(allowed_block: &str) -> String {
    format!(
        r#"{SERVICES}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: solo-ingress, namespace: shop}}
spec:
  podSelector: {{matchLabels: {{app: solo}}}}
  ingress:
  - from: [{{ipBlock: {{cidr: "{allowed_block}"}}}}]
    ports: [{{port: http}}]
"#
    )
}

fn run_once(lab: &Lab) -> serde_json::Value {
    support::run_once(lab)
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_service_traffic_meets_the_backend_pods_ingress_policy() {
    if !privileged("vm_service_traffic_meets_the_backend_pods_ingress_policy") {
        return;
    }
    // The client (10.0.1.2) is outside the allowed block: pod1 is isolated
    // from it, pod2 is not selected by any policy.
    let lab = Lab::new(&with_policy("192.0.2.0/24")).unwrap();
    let report = run_once(&lab);
    assert_eq!(report["virtual_services"], 2, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    assert_eq!(
        tcp_answer(&lab, addr("10.96.0.40", 80)).unwrap(),
        "pod2",
        "the VIP of an unrestricted pod answers beside the policy chains"
    );
    let refused = tcp_answer(&lab, addr("10.96.0.30", 80));
    assert!(
        refused.is_err(),
        "IPVS sent the client to pod1, whose policy refuses it: {refused:?}"
    );
    let counted = lab
        .node
        .output("iptables-save", &["-c", "-t", "filter"])
        .unwrap();
    let denied = counted
        .lines()
        .find(|l| l.contains("ipwarden:denied shop/solo-ingress ingress"))
        .unwrap_or_else(|| panic!("no counting rule in\n{counted}"));
    assert!(
        !denied.starts_with("[0:"),
        "the refusal was counted: {denied}"
    );
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    assert!(ipvs.contains("TCP  10.96.0.30:80 rr"), "{ipvs}");

    // The policy now allows the client's network: the same VIP answers.
    std::fs::write(
        lab.manifests.join("cluster.yaml"),
        with_policy("10.0.1.0/24"),
    )
    .unwrap();
    let report = run_once(&lab);
    assert_eq!(
        report["chains_written"],
        serde_json::json!([]),
        "a peer change is a set change: {report}"
    );
    assert_eq!(tcp_answer(&lab, addr("10.96.0.30", 80)).unwrap(), "pod1");
    assert_eq!(tcp_answer(&lab, addr("10.96.0.40", 80)).unwrap(), "pod2");
}

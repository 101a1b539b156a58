//! Issue 13 with real traffic, inside the IPVS VM: who the backend sees
//! (the client through a frontend of externalTrafficPolicy Local, the
//! node through a Cluster one), Local frontends without a local endpoint
//! refused and counted, hairpin, health-check node ports, NodePorts on
//! every node address, kube-router's `service.local` and
//! `service.skiplbips`. Oracles: the peer address the backend answers
//! with (`lab::PEER_PORT`), HTTP answers, /metrics, ipvsadm.

use std::{net::SocketAddr, time::Duration};

use ipwarden::{
    lab::{http_get_from, tcp_from},
    netns::privileged,
};

mod support;

use support::*;

const SOURCE_IP: &str = include_str!("fixtures/proxy/source_ip.yaml");

/// One family of the lab: the node's address, the client's, the node's
/// address towards pod1, and the LB IPs of local, wide and remote.
struct Family {
    node: &'static str,
    client: &'static str,
    node_to_pod1: &'static str,
    lb: [&'static str; 3],
}

const FAMILIES: [Family; 2] = [
    Family {
        node: "10.0.1.1",
        client: "10.0.1.2",
        node_to_pod1: "10.244.1.1",
        lb: ["198.51.100.30", "198.51.100.31", "198.51.100.32"],
    },
    Family {
        node: "fd00:1::1",
        client: "fd00:1::2",
        node_to_pod1: "fd00:244:1::1",
        lb: ["2001:db8::30", "2001:db8::31", "2001:db8::32"],
    },
];

/// The address the backend saw the client's connection come from.
fn peer_seen(lab: &Lab, to: SocketAddr) -> std::io::Result<String> {
    lab.tcp(to)
}

/// Packets counted by the IPWARDEN-SERVICES rules containing `needle`,
/// both families.
fn refused_packets(lab: &Lab, needle: &str) -> u64 {
    ["iptables-save", "ip6tables-save"]
        .iter()
        .map(|cmd| {
            let save = lab.node.output(cmd, &["-c", "-t", "filter"]).unwrap();
            save.lines()
                .filter(|l| l.contains("-A IPWARDEN-SERVICES") && l.contains(needle))
                .filter_map(|l| l.get(1..)?.split(':').next()?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_local_frontends_show_the_client_address_and_cluster_ones_the_node() {
    if !privileged("vm_local_frontends_show_the_client_address_and_cluster_ones_the_node") {
        return;
    }
    let lab = Lab::dual_stack(SOURCE_IP).unwrap();
    let report = run_once(&lab);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
    for f in &FAMILIES {
        let at = |ip: &str, port: u16| addr(ip, port);
        for to in [at(f.node, 30081), at(f.lb[0], 81)] {
            assert_eq!(
                peer_seen(&lab, to).unwrap(),
                f.client,
                "Local {to}: the backend sees the client"
            );
        }
        for to in [at(f.node, 30082), at(f.lb[1], 81)] {
            assert_eq!(
                peer_seen(&lab, to).unwrap(),
                f.node_to_pod1,
                "Cluster {to}: the backend sees the node (masqueraded)"
            );
        }
        let before = refused_packets(&lab, "ipwarden:no-local-endpoint shop/remote");
        for to in [at(f.node, 30083), at(f.lb[2], 81)] {
            let refused = peer_seen(&lab, to);
            assert!(
                refused.is_err(),
                "Local {to} without a local endpoint must not reach node-b's pod: {refused:?}"
            );
        }
        assert!(
            refused_packets(&lab, "ipwarden:no-local-endpoint shop/remote") >= before + 2,
            "the refusals of {} are counted by their rules",
            f.node
        );
    }
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    assert!(
        !ipvs.contains(":30083"),
        "no IPVS service for remote's NodePort\n{ipvs}"
    );

    // The masquerade rules are written as iptables-save prints them: a
    // second pass writes no chain.
    let again = run_once(&lab);
    let nat = lab.node.output("iptables-save", &["-t", "nat"]).unwrap()
        + &lab.node.output("ip6tables-save", &["-t", "nat"]).unwrap();
    assert_eq!(
        again["chains_written"].as_array().unwrap().len(),
        0,
        "{again}\n{nat}"
    );
}

/// The manifests with `from` replaced by `to` (which must occur).
fn edited(from: &str, to: &str) -> String {
    assert!(SOURCE_IP.contains(from), "{from}");
    SOURCE_IP.replacen(from, to, 1)
}

/// The manifests with kube-router's annotations: `wide` (policy Cluster)
/// forced Local by `service.local`, `local`'s LB IPs left out by
/// `service.skiplbips`.
fn kube_router_annotated() -> String {
    let annotate = |text: String, name: &str, annotation: &str| {
        let from = format!("metadata: {{name: {name}, namespace: shop}}");
        assert!(text.contains(&from), "{from}");
        let to =
            format!("metadata: {{name: {name}, namespace: shop, annotations: {{{annotation}}}}}");
        text.replacen(&from, &to, 1)
    };
    let text = annotate(
        SOURCE_IP.to_string(),
        "wide",
        "kube-router.io/service.local: \"true\"",
    );
    annotate(text, "local", "kube-router.io/service.skiplbips: \"\"")
}

/// What holds an address in the kernel: IPVS, the VIP routes of both
/// families, the sets.
fn kernel_state(lab: &Lab) -> [(&'static str, String); 4] {
    let vips = |family: &str| {
        let args = [family, "route", "show", "table", "local", "proto", "211"];
        lab.node.output("ip", &args).unwrap()
    };
    [
        ("ipvsadm -Ln", lab.node.output("ipvsadm", &["-Ln"]).unwrap()),
        ("ip -4 route", vips("-4")),
        ("ip -6 route", vips("-6")),
        ("ipset save", lab.node.output("ipset", &["save"]).unwrap()),
    ]
}

/// kube-router's `service.local` and `service.skiplbips`, by what the
/// backend sees and what the kernel holds.
#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_service_local_keeps_the_client_and_skiplbips_leaves_the_lb_ips_out() {
    if !privileged("vm_service_local_keeps_the_client_and_skiplbips_leaves_the_lb_ips_out") {
        return;
    }
    let lab = Lab::dual_stack(&kube_router_annotated()).unwrap();
    let report = run_once(&lab);
    assert_eq!(report["problems"].as_array().unwrap().len(), 0, "{report}");
    let kernel = kernel_state(&lab);
    for f in &FAMILIES {
        for to in [addr(f.node, 30082), addr(f.lb[1], 81)] {
            assert_eq!(
                peer_seen(&lab, to).unwrap(),
                f.client,
                "wide {to} with service.local: the backend sees the client"
            );
        }
        // local's other frontends stay.
        assert_eq!(peer_seen(&lab, addr(f.node, 30081)).unwrap(), f.client);
        for (what, text) in &kernel {
            assert!(
                !text.contains(f.lb[0]),
                "skipped LB IP {} in {what}\n{text}",
                f.lb[0]
            );
        }
    }
    let (ipvs, vips4, vips6) = (&kernel[0].1, &kernel[1].1, &kernel[2].1);
    for cluster_ip in ["10.96.0.30:81", "[fd00:96::30]:81"] {
        assert!(ipvs.contains(cluster_ip), "{cluster_ip}\n{ipvs}");
    }
    assert!(vips4.contains("10.96.0.30") && vips6.contains("fd00:96::30"));
    assert!(kernel[3].1.contains("10.96.0.30,tcp:81"), "{}", kernel[3].1);
}

/// Status and body of the health check at `port` on each node address.
fn health(lab: &Lab, port: u16) -> Vec<std::io::Result<(u16, String)>> {
    FAMILIES
        .iter()
        .map(|f| http_get_from(&lab.client, addr(f.node, port), "/healthz"))
        .collect()
}

fn all_answer(lab: &Lab, port: u16, status: u16, endpoints: u64) -> bool {
    health(lab, port).into_iter().all(|r| match r {
        Ok((s, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            s == status
                && v["localEndpoints"] == endpoints
                && v["service"]["namespace"] == "shop"
                && v["service"]["name"] == "local"
        }
        Err(_) => false,
    })
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_health_check_ports_follow_the_local_endpoints_and_refusals_are_counted() {
    if !privileged("vm_health_check_ports_follow_the_local_endpoints_and_refusals_are_counted") {
        return;
    }
    let lab = Lab::dual_stack(SOURCE_IP).unwrap();
    let _agent = Agent::start(&lab, &[]);
    let within = VM_WAIT;
    wait_until("200 with localEndpoints 1 on both families", within, || {
        all_answer(&lab, 32081, 200, 1)
    });
    wait_until("503 with localEndpoints 0 for remote", within, || {
        health(&lab, 32083)
            .into_iter()
            .all(|r| r.is_ok_and(|(s, b)| s == 503 && b.contains("\"localEndpoints\":0")))
    });

    // A refused connection shows up in /metrics.
    assert!(lab.tcp(addr("10.0.1.1", 30083)).is_err());
    let metric =
        "ipwarden_service_no_local_endpoint_rejected_packets_total{service=\"shop/remote\"}";
    wait_until("the refusal in /metrics", within, || {
        try_http_get(&lab, "/metrics").is_ok_and(|m| {
            m.lines()
                .find(|l| l.starts_with(metric))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .is_some_and(|n| n >= 1)
        })
    });

    // The local endpoint goes away: 503 with 0.
    let gone = edited(
        "- {addresses: [\"10.244.1.2\"], conditions: {ready: true}, nodeName: node-a}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: local-ipv6",
        "- {addresses: [\"10.244.1.2\"], conditions: {ready: false}, nodeName: node-a}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: local-ipv6",
    )
    .replacen(
        "- {addresses: [\"fd00:244:1::2\"], conditions: {ready: true}, nodeName: node-a}",
        "- {addresses: [\"fd00:244:1::2\"], conditions: {ready: false}, nodeName: node-a}",
        1,
    );
    std::fs::write(lab.manifests.join("cluster.yaml"), &gone).unwrap();
    wait_until("503 with localEndpoints 0 on both families", within, || {
        all_answer(&lab, 32081, 503, 0)
    });

    // The Service is deleted: nothing listens on its port any more.
    let without: Vec<&str> = gone
        .split("\n---\n")
        .filter(|doc| !doc.contains("metadata: {name: local, namespace: shop}"))
        .collect();
    let without = without.join("\n---\n");
    std::fs::write(lab.manifests.join("cluster.yaml"), without).unwrap();
    wait_until("port 32081 closed on both families", within, || {
        health(&lab, 32081).into_iter().all(|r| r.is_err())
    });
    assert!(
        all_answer_remote_still(&lab),
        "the other Service's health check stays"
    );
}

fn all_answer_remote_still(lab: &Lab) -> bool {
    health(lab, 32083)
        .into_iter()
        .all(|r| r.is_ok_and(|(s, _)| s == 503))
}

/// web (ClusterIP 10.96.0.40) whose only endpoint is pod1, on a Node whose
/// pod CIDR holds both pods (so pod traffic is not masqueraded).
const HAIRPIN: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node-a}
spec: {podCIDRs: [10.244.0.0/16]}
status:
  addresses:
  - {type: InternalIP, address: 10.0.1.1}
---
apiVersion: v1
kind: Service
metadata: {name: self, namespace: shop ANNOTATIONS}
spec:
  clusterIP: 10.96.0.40
  ports:
  - {name: http, port: 80, targetPort: 8080, protocol: TCP}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: self-1
  namespace: shop
  labels: {kubernetes.io/service-name: self}
addressType: IPv4
ports:
- {name: http, port: 8080, protocol: TCP}
endpoints:
- {addresses: [10.244.1.2], conditions: {ready: true}, nodeName: node-a}
"#;

/// pod1 to its own Service: its name, or the error.
fn pod1_to_itself(lab: &Lab) -> std::io::Result<String> {
    tcp_from(lab.pod(1), addr("10.96.0.40", 80), ipwarden::lab::TIMEOUT)
}

/// The nat rule that masquerades pod1's connections to itself through
/// its Service, as iptables-save prints it.
const HAIRPIN_RULE: &str = "-s 10.244.1.2/32 -d 10.244.1.2/32 -m ipvs --vproto 6 \
                            --vaddr 10.96.0.40 --vport 80 -j MASQUERADE";

fn hairpin_rule(lab: &Lab) -> bool {
    let nat = lab.node.output("iptables-save", &["-t", "nat"]).unwrap();
    nat.contains(HAIRPIN_RULE)
}

/// Hairpin on: the rule is there and pod1 reaches itself.
fn assert_hairpin(lab: &Lab, why: &str) {
    assert!(
        hairpin_rule(lab),
        "{why}: no hairpin rule in iptables-save -t nat"
    );
    assert_eq!(pod1_to_itself(lab).unwrap(), "pod1", "{why}");
}

/// Hairpin off: no rule, and pod1's connection to itself goes unanswered
/// (pod1 drops packets whose source is its own address), which a slow
/// answer or another failure must not pass for.
fn assert_no_hairpin(lab: &Lab, why: &str) {
    assert!(
        !hairpin_rule(lab),
        "{why}: a hairpin rule in iptables-save -t nat"
    );
    let err = pod1_to_itself(lab).expect_err(why);
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        "{why}: {err}, expected no answer"
    );
}

fn with_annotation(lab: &Lab, annotations: &str) {
    let text = HAIRPIN.replace("ANNOTATIONS", annotations);
    std::fs::write(lab.manifests.join("cluster.yaml"), text).unwrap();
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_a_pod_reaches_itself_through_its_service_with_hairpin() {
    if !privileged("vm_a_pod_reaches_itself_through_its_service_with_hairpin") {
        return;
    }
    let lab = Lab::new(&HAIRPIN.replace("ANNOTATIONS", "")).unwrap();
    run_once(&lab);
    assert_eq!(
        tcp_from(&lab.client, addr("10.96.0.40", 80), Duration::from_secs(5)).unwrap(),
        "pod1",
        "the Service works from outside"
    );
    assert_no_hairpin(&lab, "without hairpin");
    for ann in [
        "kube-router.io/service.hairpin",
        "ipwarden.io/service.hairpin",
    ] {
        with_annotation(&lab, &format!(", annotations: {{{ann}: \"\"}}"));
        run_once(&lab);
        assert_hairpin(&lab, ann);
    }
    let again = run_once(&lab);
    assert_eq!(
        again["chains_written"].as_array().unwrap().len(),
        0,
        "the hairpin rule is written as iptables-save prints it: {again}"
    );
    with_annotation(&lab, "");
    run_once_with(&lab, &["--hairpin-mode"]);
    assert_hairpin(&lab, "--hairpin-mode");
    run_once(&lab);
    assert_no_hairpin(&lab, "hairpin off again");
}

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_node_ports_answer_on_a_second_node_address_with_bindon_all_ip() {
    if !privileged("vm_node_ports_answer_on_a_second_node_address_with_bindon_all_ip") {
        return;
    }
    let lab = lab();
    let second = addr("10.244.1.1", 30080);
    run_once(&lab);
    assert!(tcp_answer(&lab, addr("10.0.1.1", 30080))
        .unwrap()
        .starts_with("pod"));
    assert!(
        tcp_answer(&lab, second).is_err(),
        "only the InternalIP by default"
    );
    run_once_with(&lab, &["--nodeport-bindon-all-ip"]);
    assert!(tcp_answer(&lab, second).unwrap().starts_with("pod"));
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    assert!(
        ipvs.contains("TCP  10.244.2.1:30080"),
        "every address\n{ipvs}"
    );
    run_once(&lab);
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    assert!(
        !ipvs.contains("10.244.1.1:30080"),
        "the flag off removes them again\n{ipvs}"
    );
}

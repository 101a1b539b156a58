//! The service proxy with real traffic, inside the IPVS VM: a client
//! namespace, two backend "pods" behind veths, and `ipwarden run --once`
//! in the node namespace. Oracles: the bytes the backends answer with,
//! `ipvsadm -Ln`, `ipset list`, `iptables-save -c`.

use std::collections::BTreeSet;

use ipwarden::netns::privileged;

mod support;

use support::*;

#[test]
#[ignore = "needs IPVS: run inside the VM by cargo xtask test"]
fn vm_services_carry_real_traffic_and_the_firewall_refuses_other_ports() {
    if !privileged("vm_services_carry_real_traffic_and_the_firewall_refuses_other_ports") {
        return;
    }
    let lab = lab();
    let report = run_once(&lab);
    // web: 2 ports x (ClusterIP, NodePort, externalIP); sticky: 1.
    assert_eq!(report["virtual_services"], 7, "{report}");
    assert_eq!(report["ipvs"]["services_added"], 7);
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("Service shop/broken field spec.ports[0].protocol"),
        "{problems}"
    );

    // What the kernel holds, per the tools nobody here wrote.
    let ipvs = lab.node.output("ipvsadm", &["-Ln"]).unwrap();
    for needle in [
        "TCP  10.96.0.10:80 rr",
        "UDP  10.96.0.10:53 rr",
        "TCP  10.0.1.1:30080 rr",
        "TCP  203.0.113.10:80 rr",
        "TCP  10.96.0.20:80 rr persistent 300",
        "-> 10.244.1.2:8080",
        "-> 10.244.2.2:5353",
    ] {
        assert!(ipvs.contains(needle), "{needle} missing from\n{ipvs}");
    }
    let sets = lab
        .node
        .output("ipset", &["list", "ipwarden-svip-prt"])
        .unwrap();
    for m in [
        "10.96.0.10,tcp:80",
        "10.96.0.10,udp:53",
        "203.0.113.10,tcp:80",
        "10.0.1.1,tcp:30080",
    ] {
        assert!(sets.contains(m), "{m} missing from\n{sets}");
    }
    assert!(
        !sets.contains("10.96.0.99"),
        "the broken service is skipped"
    );
    let rules = lab.node.output("iptables-save", &["-t", "filter"]).unwrap();
    assert!(rules.contains("-A INPUT -m set --match-set ipwarden-svip dst -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES"), "{rules}");

    // Traffic: ClusterIP (both backends over a few connections), UDP,
    // NodePort, externalIP.
    let seen: BTreeSet<String> = (0..4)
        .map(|_| tcp_answer(&lab, addr("10.96.0.10", 80)).unwrap())
        .collect();
    assert_eq!(
        seen,
        ["pod1", "pod2"].iter().map(|s| s.to_string()).collect()
    );
    assert!(udp_answer(&lab, addr("10.96.0.10", 53)).starts_with("pod"));
    assert!(tcp_answer(&lab, addr("10.0.1.1", 30080))
        .unwrap()
        .starts_with("pod"));
    assert!(tcp_answer(&lab, addr("203.0.113.10", 80))
        .unwrap()
        .starts_with("pod"));

    // Session affinity: one client, one backend.
    let sticky: BTreeSet<String> = (0..6)
        .map(|_| tcp_answer(&lab, addr("10.96.0.20", 80)).unwrap())
        .collect();
    assert_eq!(sticky.len(), 1, "{sticky:?}");

    // A VIP port that is no service port is refused by the firewall.
    let before = chain_counter(&lab, "-j REJECT");
    assert!(tcp_answer(&lab, addr("10.96.0.10", 81)).is_err());
    assert!(
        chain_counter(&lab, "-j REJECT") > before,
        "the REJECT rule did not fire"
    );

    // Unchanged manifests: nothing is written.
    let again = run_once(&lab);
    assert_eq!(again["ipvs"]["services_unchanged"], 7, "{again}");
    assert_eq!(again["ipvs"]["destinations_added"], 0);
    assert_eq!(again["sets"]["members_added"], 0);
    assert_eq!(
        again["chains_written"].as_array().unwrap().len(),
        0,
        "{again}"
    );

    // pod2 leaves web: only web's destinations change.
    let changed = CLUSTER.replacen(
        "- {addresses: [10.244.2.2], conditions: {ready: true}, nodeName: node-a}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky",
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: sticky",
        1,
    );
    assert_ne!(changed, CLUSTER);
    std::fs::write(lab.manifests.join("cluster.yaml"), changed).unwrap();
    let diff = run_once(&lab);
    assert_eq!(diff["ipvs"]["destinations_removed"], 6, "{diff}");
    assert_eq!(diff["ipvs"]["services_added"], 0);
    assert_eq!(diff["ipvs"]["services_removed"], 0);
    assert_eq!(diff["ipvs"]["services_unchanged"], 1, "sticky untouched");
    assert_eq!(diff["sets"]["members_added"], 0);
    assert_eq!(diff["sets"]["members_deleted"], 0);
    let after: BTreeSet<String> = (0..3)
        .map(|_| tcp_answer(&lab, addr("10.96.0.10", 80)).unwrap())
        .collect();
    assert_eq!(after, ["pod1".to_string()].into());
}

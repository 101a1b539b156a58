//! The service controller, seen from node-a, on the few objects each test
//! builds (builders in `controllers/fixtures.rs`).

use std::{collections::BTreeSet, net::IpAddr};

use super::desired;
use crate::{
    cluster::{KubeObject, Snapshot},
    controllers::fixtures::{
        node, object_order, reorderings, service, slice, snapshot, snapshot_with_addresses,
        unsorted_snapshots,
        State::{NotServing, Ready, Terminating},
        NODE,
    },
    desired::{
        Family, Forward, Member, Protocol, RealServer, ServiceRef, ServiceState, SetSpec, Table,
        TablePlan, VirtualService,
    },
};

/// This node with an address of each family, for NodePorts.
fn node_a() -> KubeObject {
    node(NODE, &["192.168.56.10", "fd00:56::10"])
}

fn state(objects: Vec<KubeObject>) -> ServiceState {
    desired(&snapshot(objects))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn vs<'a>(st: &'a ServiceState, addr: &str, proto: Protocol, port: u16) -> &'a VirtualService {
    st.virtual_services
        .iter()
        .find(|v| v.key.addr == ip(addr) && v.key.proto == proto && v.key.port == port)
        .unwrap_or_else(|| panic!("no virtual service {proto} {addr}:{port}"))
}

fn has_vs(st: &ServiceState, addr: &str, port: u16) -> bool {
    st.virtual_services
        .iter()
        .any(|v| v.key.addr == ip(addr) && v.key.port == port)
}

fn rs(addr: &str, port: u16, weight: u32) -> RealServer {
    RealServer {
        addr: ip(addr),
        port,
        weight,
        forward: Forward::Masq,
    }
}

fn set<'a>(st: &'a ServiceState, name: &str) -> &'a SetSpec {
    st.sets.iter().find(|s| s.name == name).unwrap()
}

/// A set's members as `ipset save` prints them.
fn members(st: &ServiceState, name: &str) -> BTreeSet<String> {
    set(st, name)
        .members
        .iter()
        .map(Member::to_string)
        .collect()
}

fn filter_v4(st: &ServiceState) -> &TablePlan {
    st.iptables
        .iter()
        .find(|p| p.family == Family::V4 && p.table == Table::Filter)
        .unwrap()
}

#[test]
fn cluster_ip_ports_get_ready_and_serving_endpoints_with_terminating_drained() {
    let st = state(vec![
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .port("dns", 53, 5353, "UDP")
            .build(),
        slice("shop", "web")
            .port("http", 8080, "TCP")
            .port("dns", 5353, "UDP")
            .endpoint("10.244.1.5", Ready)
            .on(NODE)
            .endpoint("10.244.2.7", Ready)
            .on("node-b")
            .endpoint("10.244.1.9", Terminating)
            .on(NODE)
            .endpoint("10.244.2.8", NotServing)
            .on("node-b")
            .build(),
    ]);
    let http = vs(&st, "10.96.0.10", Protocol::Tcp, 80);
    assert_eq!(http.scheduler, "rr");
    assert!(!http.flags.persistent);
    assert_eq!(
        http.destinations,
        [
            rs("10.244.1.5", 8080, 1),
            rs("10.244.1.9", 8080, 0),
            rs("10.244.2.7", 8080, 1)
        ],
        "not-serving 10.244.2.8 is left out, terminating 10.244.1.9 drains at weight 0"
    );
    let dns = vs(&st, "10.96.0.10", Protocol::Udp, 53);
    assert_eq!(dns.destinations[0], rs("10.244.1.5", 5353, 1));
    assert_eq!(http.origin, "Service shop/web port http (ClusterIP)");
}

#[test]
fn node_port_with_local_policy_uses_local_endpoints_and_skips_families_without_one() {
    let st = state(vec![
        node_a(),
        service("shop", "api")
            .cluster_ip("10.96.0.20")
            .cluster_ip("fd00:96::20")
            .port("https", 443, 8443, "TCP")
            .node_port(30443)
            .external_traffic_local()
            .build(),
        slice("shop", "api")
            .port("https", 8443, "TCP")
            .endpoint("10.244.1.20", Ready)
            .on(NODE)
            .endpoint("10.244.2.20", Ready)
            .on("node-b")
            .build(),
        slice("shop", "api")
            .port("https", 8443, "TCP")
            .endpoint("fd00:244:2::20", Ready)
            .on("node-b")
            .build(),
    ]);
    let np = vs(&st, "192.168.56.10", Protocol::Tcp, 30443);
    assert_eq!(np.destinations, [rs("10.244.1.20", 8443, 1)]);
    assert!(
        !has_vs(&st, "fd00:56::10", 30443),
        "no local IPv6 endpoint: the v6 NodePort is not programmed"
    );
    // ClusterIPs keep every endpoint (internalTrafficPolicy Cluster).
    let v4 = vs(&st, "10.96.0.20", Protocol::Tcp, 443);
    assert_eq!(v4.destinations.len(), 2);
    let v6 = vs(&st, "fd00:96::20", Protocol::Tcp, 443);
    assert_eq!(v6.destinations, [rs("fd00:244:2::20", 8443, 1)]);
    assert_eq!(v6.netmask_bits, 128);
    assert!(
        !st.vips.contains(&ip("192.168.56.10")),
        "node IPs are not VIPs"
    );
}

#[test]
fn external_ip_gets_affinity_and_kube_router_scheduler_annotations() {
    let st = state(vec![
        service("shop", "ext")
            .annotation("kube-router.io/service.scheduler", "sh")
            .annotation("kube-router.io/service.schedflags", "flag-1,flag-2")
            .cluster_ip("10.96.0.30")
            .external_ip("203.0.113.10")
            .affinity(600)
            .port("", 8000, 8000, "TCP")
            .build(),
        slice("shop", "ext")
            .port("", 8000, "TCP")
            .endpoint("10.244.1.30", Ready)
            .on(NODE)
            .build(),
    ]);
    for addr in ["10.96.0.30", "203.0.113.10"] {
        let v = vs(&st, addr, Protocol::Tcp, 8000);
        assert_eq!(v.scheduler, "sh");
        assert!(v.flags.persistent && v.flags.sched1 && v.flags.sched2 && !v.flags.sched3);
        assert_eq!(v.timeout, 600);
    }
    assert!(st.vips.contains(&ip("203.0.113.10")));
}

#[test]
fn load_balancer_ip_is_served_unless_proxied_and_restricted_to_source_ranges() {
    let st = state(vec![
        node_a(),
        service("shop", "lb")
            .load_balancer("198.51.100.7")
            .proxied_load_balancer("198.51.100.8")
            .cluster_ip("10.96.0.40")
            .source_range("192.0.2.0/24")
            .port("sig", 3868, 3868, "SCTP")
            .node_port(31868)
            .build(),
        slice("shop", "lb")
            .port("sig", 3868, "SCTP")
            .endpoint("10.244.2.40", Ready)
            .on("node-b")
            .build(),
    ]);
    let lb = vs(&st, "198.51.100.7", Protocol::Sctp, 3868);
    assert_eq!(lb.destinations, [rs("10.244.2.40", 3868, 1)]);
    assert!(
        !has_vs(&st, "198.51.100.8", 3868),
        "ipMode Proxy is left to the LB"
    );
    assert!(has_vs(&st, "192.168.56.10", 31868), "the LB's NodePort");
    assert!(
        !has_vs(&st, "fd00:56::10", 31868),
        "an IPv4-only Service has no v6 NodePort"
    );
    let rules = &filter_v4(&st).chains[0].rules;
    let accept = rules
        .iter()
        .position(|r| {
            r == "-s 192.0.2.0/24 -d 198.51.100.7/32 -p sctp -m sctp --dport 3868 -j ACCEPT"
        })
        .expect("source range accept");
    let reject = rules
        .iter()
        .position(|r| {
            r == "-d 198.51.100.7/32 -p sctp -m sctp --dport 3868 -j REJECT --reject-with icmp-port-unreachable"
        })
        .expect("reject for other sources");
    let svip_prt = rules
        .iter()
        .position(|r| r.contains("ipwarden-svip-prt"))
        .unwrap();
    assert!(accept < reject && reject < svip_prt, "{rules:#?}");
}

#[test]
fn services_of_other_proxies_headless_and_external_names_are_skipped() {
    let st = state(vec![
        service("shop", "headless")
            .headless()
            .port("", 80, 80, "TCP")
            .build(),
        service("shop", "alias")
            .external_name("example.com")
            .build(),
        service("shop", "other-proxy")
            .label("service.kubernetes.io/service-proxy-name", "cilium")
            .cluster_ip("10.96.0.60")
            .port("", 80, 80, "TCP")
            .build(),
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .build(),
    ]);
    assert!(!has_vs(&st, "10.96.0.60", 80));
    assert!(st
        .virtual_services
        .iter()
        .all(|v| !v.origin.contains("headless") && !v.origin.contains("alias")));
    assert!(
        has_vs(&st, "10.96.0.10", 80),
        "an ordinary Service beside them"
    );
    assert!(st.problems.is_empty(), "skipping is not a problem");
}

#[test]
fn bad_input_is_reported_by_object_and_field_and_everything_else_programmed() {
    let st = state(vec![
        service("shop", "badsched")
            .annotation("ipwarden.io/service.scheduler", "fastest")
            .cluster_ip("10.96.0.70")
            .port("", 80, 80, "TCP")
            .build(),
        service("shop", "mixed")
            .cluster_ip("10.96.0.80")
            .external_ip("not-an-ip")
            .external_ip("203.0.113.80")
            .port("icmp", 1, 1, "ICMP")
            .port("ok", 8080, 8080, "TCP")
            .build(),
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .build(),
    ]);
    let fields: Vec<(&str, &str, bool)> = st
        .problems
        .iter()
        .map(|p| (p.object.as_str(), p.field.as_str(), p.skipped))
        .collect();
    assert!(fields.contains(&(
        "Service shop/badsched",
        "metadata.annotations[ipwarden.io/service.scheduler]",
        true
    )));
    assert!(fields.contains(&("Service shop/mixed", "spec.externalIPs[0]", true)));
    assert!(fields.contains(&("Service shop/mixed", "spec.ports[0].protocol", true)));
    assert!(
        !has_vs(&st, "10.96.0.70", 80),
        "bad scheduler: service skipped"
    );
    assert!(
        has_vs(&st, "10.96.0.80", 8080),
        "the good port of a bad service"
    );
    assert!(
        has_vs(&st, "203.0.113.80", 8080),
        "the good externalIP of a bad service"
    );
    assert!(has_vs(&st, "10.96.0.10", 80), "other services unaffected");
    let text = st
        .problems
        .iter()
        .find(|p| p.field == "spec.ports[0].protocol")
        .unwrap();
    assert_eq!(
        text.to_string(),
        "Service shop/mixed field spec.ports[0].protocol: unknown protocol \"ICMP\" (TCP, UDP or SCTP) (skipped)"
    );
}

#[test]
fn the_service_port_set_holds_every_kind_of_frontend_in_its_family() {
    let st = state(vec![
        node_a(),
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .port("dns", 53, 5353, "UDP")
            .build(),
        service("shop", "api")
            .cluster_ip("10.96.0.20")
            .cluster_ip("fd00:96::20")
            .port("https", 443, 8443, "TCP")
            .node_port(30443)
            .build(),
        service("shop", "ext")
            .cluster_ip("10.96.0.30")
            .external_ip("203.0.113.10")
            .port("", 8000, 8000, "TCP")
            .build(),
        service("shop", "lb")
            .load_balancer("198.51.100.7")
            .cluster_ip("10.96.0.40")
            .port("sig", 3868, 3868, "SCTP")
            .build(),
    ]);
    let prt = members(&st, "ipwarden-svip-prt");
    for m in [
        "10.96.0.10,tcp:80",
        "10.96.0.10,udp:53",
        "203.0.113.10,tcp:8000",
        "198.51.100.7,sctp:3868",
        "192.168.56.10,tcp:30443",
    ] {
        assert!(prt.contains(m), "{m} missing from {prt:?}");
    }
    assert!(members(&st, "inet6:ipwarden-svip-prt").contains("fd00:96::20,tcp:443"));
    assert!(set(&st, "ipwarden-svip")
        .members
        .contains(&Member::ip(ip("10.96.0.10"))));
    assert_eq!(st.sets.len(), 6);
}

#[test]
fn local_ips_are_the_node_addresses_except_vips() {
    let addresses = ["192.168.56.10", "fd00:56::10", "127.0.0.1", "10.96.0.10"];
    let st = desired(&snapshot_with_addresses(
        &addresses,
        [service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .build()],
    ));
    let local = members(&st, "ipwarden-local-ips");
    assert!(local.contains("192.168.56.10") && local.contains("127.0.0.1"));
    assert!(
        !local.contains("10.96.0.10"),
        "a VIP is never a local IP: its REJECT must apply"
    );
    assert!(members(&st, "inet6:ipwarden-local-ips").contains("fd00:56::10"));
    assert_eq!(st.sets.len(), 6);
}

#[test]
fn every_service_port_member_names_its_service() {
    let st = state(vec![
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .build(),
        service("shop", "api")
            .cluster_ip("10.96.0.20")
            .cluster_ip("fd00:96::20")
            .port("https", 443, 8443, "TCP")
            .build(),
    ]);
    let web = ServiceRef::new("shop", "web");
    let http = Member::ip_port(ip("10.96.0.10"), Protocol::Tcp, 80);
    assert_eq!(
        st.member_services.get(&http).map(|m| &m.service),
        Some(&web)
    );
    assert!(st.member_services.values().all(|m| !m.chain_decides));
    assert_eq!(vs(&st, "10.96.0.10", Protocol::Tcp, 80).service, web);
    let prt: BTreeSet<&Member> = st
        .sets
        .iter()
        .filter(|s| s.name.ends_with("ipwarden-svip-prt"))
        .flat_map(|s| &s.members)
        .collect();
    assert_eq!(
        st.member_services.keys().collect::<BTreeSet<_>>(),
        prt,
        "exactly the members of ipwarden-svip-prt, both families"
    );
}

/// Something of every kind the controller reads, with the cases where
/// order could leak through: the same name in two namespaces, one endpoint
/// in two slices, two Services claiming one frontend, bad input.
fn every_kind() -> Vec<KubeObject> {
    vec![
        node_a(),
        node("node-b", &["192.168.56.11"]),
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .port("dns", 53, 5353, "UDP")
            .build(),
        slice("shop", "web")
            .port("http", 8080, "TCP")
            .port("dns", 5353, "UDP")
            .endpoint("10.244.1.5", Ready)
            .on(NODE)
            .endpoint("10.244.1.9", Terminating)
            .on(NODE)
            .build(),
        slice("shop", "web")
            .named("web-2")
            .port("http", 8080, "TCP")
            .endpoint("10.244.1.9", Ready)
            .on(NODE)
            .endpoint("10.244.2.8", NotServing)
            .on("node-b")
            .build(),
        service("blog", "web")
            .cluster_ip("10.96.0.11")
            .port("http", 80, 8080, "TCP")
            .build(),
        slice("blog", "web")
            .port("http", 8080, "TCP")
            .endpoint("10.244.2.7", Ready)
            .on("node-b")
            .build(),
        service("shop", "copy")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .build(),
        service("shop", "api")
            .cluster_ip("10.96.0.20")
            .cluster_ip("fd00:96::20")
            .port("https", 443, 8443, "TCP")
            .node_port(30443)
            .external_traffic_local()
            .build(),
        slice("shop", "api")
            .port("https", 8443, "TCP")
            .endpoint("10.244.1.20", Ready)
            .on(NODE)
            .build(),
        slice("shop", "api")
            .port("https", 8443, "TCP")
            .endpoint("fd00:244:2::20", Ready)
            .on("node-b")
            .build(),
        service("shop", "ext")
            .annotation("kube-router.io/service.scheduler", "sh")
            .cluster_ip("10.96.0.30")
            .external_ip("203.0.113.10")
            .affinity(600)
            .port("", 8000, 8000, "TCP")
            .build(),
        service("shop", "lb")
            .load_balancer("198.51.100.7")
            .cluster_ip("10.96.0.40")
            .source_range("192.0.2.0/24")
            .port("sig", 3868, 3868, "SCTP")
            .node_port(31868)
            .build(),
        service("shop", "mixed")
            .cluster_ip("10.96.0.80")
            .external_ip("not-an-ip")
            .port("icmp", 1, 1, "ICMP")
            .build(),
    ]
}

/// The source's order never reaches the controller: the snapshot sorts.
#[test]
fn same_cluster_in_any_order_gives_the_same_state() {
    let objects = every_kind();
    let a = state(objects.clone());
    assert!(
        a.problems
            .iter()
            .any(|p| p.message.contains("already served")),
        "the clash is in the cluster: {:?}",
        a.problems
    );
    for other in reorderings(&objects) {
        let b = state(other);
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

/// The controller itself, on snapshots that really hold other orders.
#[test]
fn the_controller_gives_the_same_state_whatever_order_the_snapshot_holds() {
    let objects = every_kind();
    let a = state(objects.clone());
    for unsorted in unsorted_snapshots(&objects) {
        let b = desired(&unsorted);
        assert_eq!(a, b, "{:?}", object_order(&unsorted));
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}

#[test]
fn a_snapshot_holds_every_kind_sorted_whatever_order_it_is_given() {
    let objects = vec![
        service("shop", "web").cluster_ip("10.96.0.10").build(),
        slice("shop", "web")
            .named("web-b")
            .endpoint("10.244.1.5", Ready)
            .build(),
        service("blog", "web").cluster_ip("10.96.0.11").build(),
        slice("shop", "web")
            .named("web-a")
            .endpoint("10.244.1.6", Ready)
            .build(),
        service("blog", "api").cluster_ip("10.96.0.12").build(),
        slice("blog", "web").endpoint("10.244.2.7", Ready).build(),
    ];
    let sorted = [
        "Service blog/api",
        "Service blog/web",
        "Service shop/web",
        "EndpointSlice blog/web-ipv4",
        "EndpointSlice shop/web-a",
        "EndpointSlice shop/web-b",
    ];
    let name = |s: &crate::cluster::compact::EndpointSlice| s.metadata.name().to_string();
    for order in std::iter::once(objects.clone()).chain(reorderings(&objects)) {
        let s = snapshot(order);
        assert_eq!(object_order(&s), sorted);
        assert_eq!(
            s.slices_of("shop", "web").map(name).collect::<Vec<_>>(),
            ["web-a", "web-b"]
        );
        // The stores' path: the same vectors, reversed.
        fn rev<T: Clone>(v: &[T]) -> Vec<T> {
            v.iter().rev().cloned().collect()
        }
        let shared = Snapshot::from_shared(
            rev(&s.services),
            rev(&s.endpoint_slices),
            rev(&s.pods),
            rev(&s.namespaces),
            rev(&s.network_policies),
            s.node.clone(),
            s.host.clone(),
        );
        assert_eq!(format!("{shared:?}"), format!("{s:?}"));
    }
}

#[test]
fn empty_cluster_keeps_the_firewall_and_empty_sets() {
    let st = desired(&snapshot([]));
    assert!(st.virtual_services.is_empty() && st.vips.is_empty());
    assert_eq!(st.sets.len(), 6);
    assert!(set(&st, "ipwarden-svip-prt").members.is_empty());
    assert_eq!(st.iptables.len(), 4);
}

/// A LoadBalancer on 198.51.100.7, restricted to 192.0.2.0/24 or not.
fn load_balancer(restricted: bool) -> Snapshot {
    let lb = service("shop", "lb")
        .load_balancer("198.51.100.7")
        .cluster_ip("10.96.0.40")
        .port("sig", 3868, 3868, "SCTP");
    let lb = if restricted {
        lb.source_range("192.0.2.0/24")
    } else {
        lb
    };
    snapshot([lb.build()])
}

#[test]
fn allow_mode_accepts_marked_traffic_first_in_input_and_never_marks_restricted_members() {
    use super::{desired_with, BpfRules, Options};
    use crate::desired::Place;
    use ipwarden_common::Mode;
    let bpf = Some(BpfRules {
        mode: Mode::Allow,
        mark: 0x40_0000,
    });
    let mark_accept = "-m mark --mark 0x400000/0x400000 -m comment --comment \"ipwarden:services ipwarden:first\" -j ACCEPT";
    for restricted in [false, true] {
        let st = desired_with(
            &load_balancer(restricted),
            &Options {
                bpf,
                ..Options::default()
            },
        );
        let plan = filter_v4(&st);
        // The first rule of INPUT, before any set lookup, with or without
        // source ranges: the program never marks a restricted member.
        assert_eq!(
            (plan.jumps[0].rule.as_str(), plan.jumps[0].place),
            (mark_accept, Place::First)
        );
        // Below the policy jump: what the program marked from an
        // egress-restricted pod, then the service chain.
        assert_eq!(
            (plan.jumps[1].rule.as_str(), plan.jumps[1].place),
            (
                "-m mark --mark 0x800000/0x800000 -m comment --comment \"ipwarden:services\" -j ACCEPT",
                Place::Last
            )
        );
        assert!(plan.jumps[2].rule.contains("--match-set ipwarden-svip dst"));
        assert_eq!(plan.jumps[2].place, Place::Last);
        assert!(!plan.chains[0].rules.iter().any(|r| r.contains("--mark")));
        let lb = Member::ip_port(ip("198.51.100.7"), Protocol::Sctp, 3868);
        let cluster_ip = Member::ip_port(ip("10.96.0.40"), Protocol::Sctp, 3868);
        assert_eq!(st.member_services[&lb].chain_decides, restricted);
        assert!(
            !st.member_services[&cluster_ip].chain_decides,
            "the ClusterIP has no source ranges"
        );
    }
}

#[test]
fn log_mode_counts_marked_traffic_just_before_the_reject() {
    use super::{desired_with, BpfRules, Options};
    use ipwarden_common::Mode;
    let bpf = Some(BpfRules {
        mode: Mode::Log,
        mark: 0x40_0000,
    });
    let st = desired_with(
        &load_balancer(true),
        &Options {
            bpf,
            ..Options::default()
        },
    );
    let rules = &filter_v4(&st).chains[0].rules;
    let n = rules.len();
    assert_eq!(
        rules[n - 2],
        "-m mark --mark 0x400000/0x400000 -m comment --comment \"ipwarden:bpf-refused\""
    );
    assert!(rules[n - 1].contains("-j REJECT"));
}

#[test]
fn a_node_port_outside_the_range_is_a_problem_and_not_programmed() {
    let snap = snapshot(vec![
        node_a(),
        service("shop", "web")
            .cluster_ip("10.96.0.30")
            .port("http", 80, 8080, "TCP")
            .node_port(80)
            .build(),
    ]);
    let opts = super::Options {
        node_port_range: Some((30000, 32767)),
        ..super::Options::default()
    };
    let st = super::desired_with(&snap, &opts);
    assert!(!has_vs(&st, "192.168.56.10", 80), "nodePort 80 is refused");
    assert!(has_vs(&st, "10.96.0.30", 80), "the ClusterIP stays");
    let p = st
        .problems
        .iter()
        .find(|p| p.field == "spec.ports[0].nodePort")
        .expect("a problem names the field");
    assert!(
        p.message.contains("outside --node-port-range 30000-32767"),
        "{p:?}"
    );
    // Without a range (the default), as before.
    assert!(has_vs(&desired(&snap), "192.168.56.10", 80));
}

#[test]
fn the_service_chain_accepts_the_icmp_the_pod_chains_accept_packet_too_big_included() {
    let st = desired(&load_balancer(false));
    for family in Family::ALL {
        let plan = st
            .iptables
            .iter()
            .find(|p| p.family == family && p.table == Table::Filter)
            .unwrap();
        let accepts: Vec<String> = crate::controllers::fragments::icmp_accepts(family)
            .iter()
            .map(|a| a.render())
            .collect();
        assert_eq!(plan.chains[0].rules[..accepts.len()], accepts[..]);
    }
    let v6 = st
        .iptables
        .iter()
        .find(|p| p.family == Family::V6 && p.table == Table::Filter)
        .unwrap();
    assert!(v6.chains[0]
        .rules
        .contains(&"-p ipv6-icmp -m icmp6 --icmpv6-type 2 -j ACCEPT".to_string()));
}

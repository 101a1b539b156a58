//! Masquerade per frontend, hairpin, unserved Local frontends, health
//! checks and NodePorts on every address: the pure parts of issue 13.

use std::net::IpAddr;

use super::{desired_with, Options};
use crate::{
    cluster::KubeObject,
    controllers::fixtures::{
        node, node_with_pod_cidrs, service, slice, snapshot, snapshot_with_addresses,
        State::{Ready, Terminating},
        NODE,
    },
    desired::{Family, Member, ServiceRef, ServiceState, Table, TablePlan},
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn plan(st: &ServiceState, family: Family, table: Table) -> &TablePlan {
    st.iptables
        .iter()
        .find(|p| p.family == family && p.table == table)
        .unwrap()
}

fn rules(st: &ServiceState, family: Family, table: Table) -> Vec<String> {
    plan(st, family, table).chains[0].rules.clone()
}

fn state(objects: Vec<KubeObject>, opts: &Options) -> ServiceState {
    desired_with(&snapshot(objects), opts)
}

/// web: ClusterIP, NodePort 30080, LoadBalancer 198.51.100.7, both
/// families, externalTrafficPolicy Local, with one endpoint per family
/// on `node` and one on node-b.
fn local_web(node_of_local: &str) -> Vec<KubeObject> {
    vec![
        node(NODE, &["192.168.56.10", "fd00:56::10"]),
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .cluster_ip("fd00:96::10")
            .port("http", 80, 8080, "TCP")
            .node_port(30080)
            .load_balancer("198.51.100.7")
            .load_balancer("2001:db8::7")
            .external_traffic_local()
            .health_check_node_port(32100)
            .build(),
    ]
    .into_iter()
    .chain(web_slices(node_of_local))
    .collect()
}

/// web's endpoints: one per family on `node_of_local`, an IPv4 one on
/// node-b.
pub(super) fn web_slices(node_of_local: &str) -> [KubeObject; 2] {
    [
        slice("shop", "web")
            .port("http", 8080, "TCP")
            .endpoint("10.244.1.2", Ready)
            .on(node_of_local)
            .endpoint("10.244.2.2", Ready)
            .on("node-b")
            .build(),
        slice("shop", "web")
            .port("http", 8080, "TCP")
            .endpoint("fd00:244:1::2", Ready)
            .on(node_of_local)
            .build(),
    ]
}

#[test]
fn local_frontends_keep_the_client_source_and_the_rest_is_masqueraded() {
    let st = state(local_web(NODE), &Options::default());
    let v4 = rules(&st, Family::V4, Table::Nat);
    assert_eq!(
        v4,
        [
            "-m ipvs --vproto 6 --vaddr 192.168.56.10 --vport 30080 -j RETURN",
            "-m ipvs --vproto 6 --vaddr 198.51.100.7 --vport 80 -j RETURN",
            "-m ipvs --vdir ORIGINAL --vmethod MASQ -j MASQUERADE",
        ],
        "the ClusterIP is masqueraded as before"
    );
    let v6 = rules(&st, Family::V6, Table::Nat);
    assert!(
        v6.contains(&"-m ipvs --vproto 6 --vaddr 2001:db8::7 --vport 80 -j RETURN".into()),
        "{v6:?}"
    );
    assert_eq!(
        v6.last().unwrap(),
        "-m ipvs --vdir ORIGINAL --vmethod MASQ -j MASQUERADE"
    );
}

#[test]
fn a_local_frontend_without_a_local_endpoint_is_refused_and_named_in_the_comment() {
    let st = state(local_web("node-b"), &Options::default());
    let lb = ip("198.51.100.7");
    assert!(
        !st.virtual_services.iter().any(|v| v.key.addr == lb),
        "no IPVS service sends it to another node"
    );
    assert!(st.vips.contains(&lb), "the LB IP stays on ipwarden0");
    let svip = st
        .sets
        .iter()
        .find(|s| s.name == "ipwarden-svip")
        .unwrap()
        .members
        .clone();
    assert!(
        svip.contains(&Member::ip(lb)),
        "its traffic meets the chain"
    );
    assert!(svip.contains(&Member::ip(ip("192.168.56.10"))));
    let filter = rules(&st, Family::V4, Table::Filter);
    for (host, port) in [("198.51.100.7/32", 80), ("192.168.56.10/32", 30080)] {
        let want = format!("-d {host} -p tcp -m tcp --dport {port} -m comment --comment \"ipwarden:no-local-endpoint shop/web\" -j REJECT --reject-with icmp-port-unreachable");
        assert!(filter.contains(&want), "{want} missing from {filter:#?}");
    }
    let nat = rules(&st, Family::V4, Table::Nat);
    assert_eq!(nat.len(), 1, "nothing to keep the source of: {nat:?}");
    let hc = &st.health_checks[0];
    assert_eq!((hc.port, hc.local_endpoints), (32100, 0));
}

#[test]
fn health_checks_count_ready_local_endpoints_of_local_load_balancers_only() {
    let mut objects = local_web(NODE);
    objects.push(
        slice("shop", "web")
            .named("web-terminating")
            .port("http", 8080, "TCP")
            .endpoint("10.244.1.9", Terminating)
            .on(NODE)
            .build(),
    );
    // A NodePort Service of policy Local has no health check.
    objects.push(
        service("shop", "np")
            .cluster_ip("10.96.0.11")
            .port("http", 80, 8080, "TCP")
            .node_port(30081)
            .external_traffic_local()
            .health_check_node_port(32101)
            .build(),
    );
    let st = state(objects, &Options::default());
    assert_eq!(st.health_checks.len(), 1, "{:?}", st.health_checks);
    let hc = &st.health_checks[0];
    assert_eq!(hc.service, ServiceRef::new("shop", "web"));
    // 10.244.1.2 and fd00:244:1::2 are one dual-stack pod; the
    // terminating one does not count.
    assert_eq!(hc.local_endpoints, 1);
}

#[test]
fn a_health_check_port_claimed_twice_is_kept_by_the_first_service() {
    let mut objects = local_web(NODE);
    objects.push(
        service("shop", "zz")
            .cluster_ip("10.96.0.12")
            .port("http", 80, 8080, "TCP")
            .node_port(30082)
            .load_balancer("198.51.100.8")
            .external_traffic_local()
            .health_check_node_port(32100)
            .build(),
    );
    let st = state(objects, &Options::default());
    assert_eq!(st.health_checks.len(), 1);
    assert_eq!(&*st.health_checks[0].service.name, "web");
    assert!(
        st.problems
            .iter()
            .any(|p| p.object == "Service shop/zz" && p.field == "spec.healthCheckNodePort"),
        "{:?}",
        st.problems
    );
}

fn hairpin_web(annotation: Option<(&str, &str)>) -> Vec<KubeObject> {
    let mut svc = service("shop", "web")
        .cluster_ip("10.96.0.10")
        .port("http", 80, 8080, "TCP");
    if let Some((k, v)) = annotation {
        svc = svc.annotation(k, v);
    }
    vec![
        node_with_pod_cidrs(
            NODE,
            &["192.168.56.10"],
            &["10.244.0.0/16", "fd00:244::/56"],
        ),
        svc.build(),
        slice("shop", "web")
            .port("http", 8080, "TCP")
            .endpoint("10.244.1.2", Ready)
            .on(NODE)
            .endpoint("10.244.9.2", Ready)
            .on("node-b")
            .build(),
    ]
}

const HAIRPIN_RULE: &str =
    "-s 10.244.1.2/32 -d 10.244.1.2/32 -m ipvs --vproto 6 --vaddr 10.96.0.10 --vport 80 -j MASQUERADE";

#[test]
fn pod_traffic_keeps_its_source_unless_it_hairpins() {
    let off = state(hairpin_web(None), &Options::default());
    assert_eq!(
        rules(&off, Family::V4, Table::Nat),
        [
            "-s 10.244.0.0/16 -j RETURN",
            "-m ipvs --vdir ORIGINAL --vmethod MASQ -j MASQUERADE"
        ]
    );
    assert_eq!(
        rules(&off, Family::V6, Table::Nat)[0],
        "-s fd00:244::/56 -j RETURN"
    );
    for ann in [
        "kube-router.io/service.hairpin",
        "ipwarden.io/service.hairpin",
    ] {
        let on = state(hairpin_web(Some((ann, ""))), &Options::default());
        let nat = rules(&on, Family::V4, Table::Nat);
        assert_eq!(
            nat[0], HAIRPIN_RULE,
            "{ann}: hairpin first, local endpoints only"
        );
        assert_eq!(nat.len(), 3, "{nat:?}");
    }
    let all = Options {
        hairpin_all: true,
        ..Options::default()
    };
    let flag = state(hairpin_web(None), &all);
    assert_eq!(rules(&flag, Family::V4, Table::Nat)[0], HAIRPIN_RULE);
    let opted_out = state(
        hairpin_web(Some(("ipwarden.io/service.hairpin", "false"))),
        &all,
    );
    assert_eq!(rules(&opted_out, Family::V4, Table::Nat).len(), 2);
}

#[test]
fn node_ports_listen_on_every_node_address_with_bindon_all_ip() {
    let objects = vec![
        node(NODE, &["192.168.56.10"]),
        service("shop", "web")
            .cluster_ip("10.96.0.10")
            .port("http", 80, 8080, "TCP")
            .node_port(30080)
            .build(),
    ];
    let addrs = [
        "127.0.0.1",
        "192.168.56.10",
        "10.244.1.1",
        "fe80::1",
        "fd00:56::10",
    ];
    let snap = snapshot_with_addresses(&addrs, objects);
    let has_np = |st: &ServiceState, a: &str| {
        st.virtual_services
            .iter()
            .any(|v| v.key.addr == ip(a) && v.key.port == 30080)
    };
    let one = desired_with(&snap, &Options::default());
    assert!(has_np(&one, "192.168.56.10") && !has_np(&one, "10.244.1.1"));
    let opts = Options {
        nodeport_bindon_all_ip: true,
        ..Options::default()
    };
    let all = desired_with(&snap, &opts);
    assert!(has_np(&all, "192.168.56.10") && has_np(&all, "10.244.1.1"));
    assert!(!has_np(&all, "127.0.0.1"), "not loopback");
    assert!(!has_np(&all, "fd00:56::10"), "an IPv4-only Service");
    assert!(
        !all.vips.contains(&ip("10.244.1.1")),
        "node addresses are not VIPs"
    );
}

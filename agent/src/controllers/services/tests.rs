//! The service controller on a cluster written as a user would write it
//! (tests/fixtures/services/cluster.yaml), seen from node-a.

use std::{collections::BTreeSet, net::IpAddr, path::Path};

use super::desired;
use crate::{
    cluster::{manifests, HostInfo, Snapshot},
    desired::{
        Family, Forward, Member, Protocol, RealServer, ServiceRef, ServiceState, SetSpec, Table,
        TablePlan, VirtualService,
    },
};

const CLUSTER: &str = include_str!("../../../tests/fixtures/services/cluster.yaml");

fn host() -> HostInfo {
    HostInfo {
        node_name: "node-a".into(),
        local_addresses: ["192.168.56.10", "fd00:56::10", "127.0.0.1", "10.96.0.10"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect(),
    }
}

fn snapshot_of(text: &str) -> Snapshot {
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("cluster.yaml"), text, &mut loaded);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    Snapshot::from_objects(loaded.objects, host())
}

fn state() -> ServiceState {
    desired(&snapshot_of(CLUSTER))
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

#[test]
fn cluster_ip_ports_get_ready_and_serving_endpoints_with_terminating_drained() {
    let st = state();
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
    let st = state();
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
    let st = state();
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
    let st = state();
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
    let filter_v4 = st
        .iptables
        .iter()
        .find(|p| p.family == Family::V4 && p.table == Table::Filter)
        .unwrap();
    let rules = &filter_v4.chains[0].rules;
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
    let st = state();
    assert!(!has_vs(&st, "10.96.0.60", 80));
    assert!(st
        .virtual_services
        .iter()
        .all(|v| !v.origin.contains("headless") && !v.origin.contains("alias")));
}

#[test]
fn bad_input_is_reported_by_object_and_field_and_everything_else_programmed() {
    let st = state();
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
fn sets_hold_every_frontend_and_local_ips_exclude_vips() {
    let st = state();
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
    let st = state();
    let web = ServiceRef::new("shop", "web");
    let http = Member::ip_port(ip("10.96.0.10"), Protocol::Tcp, 80);
    assert_eq!(st.member_services.get(&http), Some(&web));
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

#[test]
fn same_cluster_in_any_order_gives_the_same_state() {
    let a = state();
    let mut docs: Vec<&str> = CLUSTER.split("\n---\n").collect();
    docs.reverse();
    let b = desired(&snapshot_of(&docs.join("\n---\n")));
    assert_eq!(a, b);
    assert_eq!(
        format!("{a:?}"),
        format!("{:?}", desired(&snapshot_of(CLUSTER)))
    );
}

#[test]
fn empty_cluster_keeps_the_firewall_and_empty_sets() {
    let st = desired(&Snapshot::from_objects(Vec::new(), host()));
    assert!(st.virtual_services.is_empty() && st.vips.is_empty());
    assert_eq!(st.sets.len(), 6);
    assert!(set(&st, "ipwarden-svip-prt").members.is_empty());
    assert_eq!(st.iptables.len(), 4);
}

fn filter_v4(st: &ServiceState) -> &TablePlan {
    st.iptables
        .iter()
        .find(|p| p.family == Family::V4 && p.table == Table::Filter)
        .unwrap()
}

#[test]
fn allow_mode_accepts_marked_traffic_first_in_input_when_no_port_is_restricted() {
    use super::{desired_with, BpfRules, Options};
    use ipwarden_common::Mode;
    let bpf = Some(BpfRules {
        mode: Mode::Allow,
        mark: 0x40_0000,
    });
    let mark_accept =
        "-m mark --mark 0x400000/0x400000 -m comment --comment \"ipwarden:services\" -j ACCEPT";
    // Without source ranges: the first INPUT rule, before any set lookup.
    let plain = CLUSTER.replace("  loadBalancerSourceRanges: [192.0.2.0/24]\n", "");
    let st = desired_with(&snapshot_of(&plain), &Options { bpf });
    let plan = filter_v4(&st);
    assert_eq!(plan.jumps[0].rule, mark_accept);
    assert!(plan.jumps[1].rule.contains("--match-set ipwarden-svip dst"));
    assert!(!plan.chains[0].rules.iter().any(|r| r.contains("--mark")));
    // With them: in the chain, after the range rules, never before.
    let st = desired_with(&snapshot_of(CLUSTER), &Options { bpf });
    let plan = filter_v4(&st);
    assert_eq!(plan.jumps.len(), 1);
    let rules = &plan.chains[0].rules;
    let reject = rules
        .iter()
        .position(|r| r.contains("198.51.100.7/32") && r.contains("REJECT"))
        .unwrap();
    let accept = rules.iter().position(|r| r == mark_accept).unwrap();
    assert!(reject < accept, "{rules:#?}");
}

#[test]
fn log_mode_counts_marked_traffic_just_before_the_reject() {
    use super::{desired_with, BpfRules, Options};
    use ipwarden_common::Mode;
    let bpf = Some(BpfRules {
        mode: Mode::Log,
        mark: 0x40_0000,
    });
    let st = desired_with(&snapshot_of(CLUSTER), &Options { bpf });
    let rules = &filter_v4(&st).chains[0].rules;
    let n = rules.len();
    assert_eq!(
        rules[n - 2],
        "-m mark --mark 0x400000/0x400000 -m comment --comment \"ipwarden:bpf-refused\""
    );
    assert!(rules[n - 1].contains("-j REJECT"));
}

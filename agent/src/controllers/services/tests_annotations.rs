//! kube-router's `service.local`, `service.skiplbips` and
//! `service.hairpin.externalips` (and our `ipwarden.io/` twins), on whole
//! desired states: each is checked against what the same Service gives
//! without it.

use std::net::IpAddr;

use super::{desired_with, tests_nat::web_slices, Options};
use crate::{
    cluster::KubeObject,
    controllers::fixtures::{
        node, node_with_pod_cidrs, service, slice, snapshot, ServiceBuilder, State::Ready, NODE,
    },
    desired::{Family, Member, Problem, ServiceState, Table},
};

const LB_IPS: [&str; 2] = ["198.51.100.7", "2001:db8::7"];

fn state(objects: Vec<KubeObject>) -> ServiceState {
    desired_with(&snapshot(objects), &Options::default())
}

/// web, dual-stack: ClusterIPs, NodePort 30080, externalIP 203.0.113.10,
/// LoadBalancer IPs [`LB_IPS`], as `edit` finishes it; one endpoint per
/// family on `local_node`, another on node-b.
fn web(local_node: &str, edit: impl FnOnce(ServiceBuilder) -> ServiceBuilder) -> Vec<KubeObject> {
    let svc = service("shop", "web")
        .cluster_ip("10.96.0.10")
        .cluster_ip("fd00:96::10")
        .port("http", 80, 8080, "TCP")
        .node_port(30080)
        .external_ip("203.0.113.10")
        .load_balancer(LB_IPS[0])
        .load_balancer(LB_IPS[1]);
    vec![
        node(NODE, &["192.168.56.10", "fd00:56::10"]),
        edit(svc).build(),
    ]
    .into_iter()
    .chain(web_slices(local_node))
    .collect()
}

fn annotated(
    name: &'static str,
    value: &'static str,
) -> impl FnOnce(ServiceBuilder) -> ServiceBuilder {
    move |s| s.annotation(name, value)
}

fn lb(addr: &IpAddr) -> bool {
    LB_IPS.iter().any(|l| l.parse::<IpAddr>().unwrap() == *addr)
}

fn on_lb(m: &Member) -> bool {
    match m {
        Member::Ip(a) | Member::IpPort { addr: a, .. } => lb(a),
        _ => false,
    }
}

/// `st` without anything of the LoadBalancer IPs: IPVS services, VIPs,
/// set members and rules naming them.
fn without_lb(mut st: ServiceState) -> ServiceState {
    st.virtual_services.retain(|v| !lb(&v.key.addr));
    st.vips.retain(|a| !lb(a));
    for set in &mut st.sets {
        set.members.retain(|m| !on_lb(m));
    }
    st.member_services.retain(|m, _| !on_lb(m));
    for plan in &mut st.iptables {
        for chain in &mut plan.chains {
            chain.rules.retain(|r| {
                !LB_IPS
                    .iter()
                    .any(|l| r.contains(&format!("{l} ")) || r.contains(&format!("{l}/")))
            });
        }
    }
    st
}

fn problems_of(st: &ServiceState) -> Vec<(&str, &str, bool)> {
    st.problems
        .iter()
        .map(|p: &Problem| (p.field.as_str(), p.message.as_str(), p.skipped))
        .collect()
}

#[test]
fn service_local_gives_the_state_of_external_traffic_policy_local() {
    // With a local endpoint (served, source kept) and without (refused).
    for local_node in [NODE, "node-b"] {
        let by_spec = state(web(local_node, |s| s.external_traffic_local()));
        let cluster = state(web(local_node, |s| s));
        assert_ne!(by_spec, cluster, "the fixture must tell the policies apart");
        for name in ["kube-router.io/service.local", "ipwarden.io/service.local"] {
            let by_annotation = state(web(local_node, annotated(name, "true")));
            assert_eq!(
                by_annotation, by_spec,
                "{name} with endpoints on {local_node}"
            );
        }
    }
}

#[test]
fn service_local_leaves_the_internal_policy_as_the_spec_says() {
    let local_both = state(web(NODE, |s| {
        s.internal_traffic_local().external_traffic_local()
    }));
    let annotated_itp_local = state(web(NODE, |s| {
        s.internal_traffic_local()
            .annotation("kube-router.io/service.local", "true")
    }));
    assert_eq!(annotated_itp_local, local_both, "ClusterIPs stay Local");
    let cluster_ip = |st: &ServiceState| {
        st.virtual_services
            .iter()
            .find(|v| v.key.addr == "10.96.0.10".parse::<IpAddr>().unwrap())
            .unwrap()
            .destinations
            .len()
    };
    assert_eq!(cluster_ip(&annotated_itp_local), 1, "this node's endpoint");
    let annotated = state(web(NODE, annotated("kube-router.io/service.local", "true")));
    assert_eq!(cluster_ip(&annotated), 2, "ClusterIPs keep every endpoint");
}

#[test]
fn service_local_false_or_ours_false_leaves_the_spec_policy() {
    let cluster = state(web(NODE, |s| s));
    let off = state(web(
        NODE,
        annotated("kube-router.io/service.local", "false"),
    ));
    assert_eq!(off, cluster);
    let ours_off = state(web(NODE, |s| {
        s.annotation("kube-router.io/service.local", "true")
            .annotation("ipwarden.io/service.local", "false")
    }));
    assert_eq!(ours_off, cluster, "ours win");
    let spec_local = state(web(NODE, |s| s.external_traffic_local()));
    let false_on_local = state(web(NODE, |s| {
        s.external_traffic_local()
            .annotation("kube-router.io/service.local", "false")
    }));
    assert_eq!(false_on_local, spec_local, "\"false\" forces nothing");
}

#[test]
fn skiplbips_drops_exactly_the_load_balancer_frontends() {
    for (local_node, edit) in [
        (NODE, (|s| s) as fn(ServiceBuilder) -> ServiceBuilder),
        // Local without a local endpoint: the LB IPs are not even refused.
        ("node-b", |s: ServiceBuilder| s.external_traffic_local()),
    ] {
        let full = state(web(local_node, edit));
        assert!(full.vips.iter().any(lb), "the fixture programs its LB IPs");
        for name in [
            "kube-router.io/service.skiplbips",
            "ipwarden.io/service.skiplbips",
        ] {
            let skipped = state(web(local_node, |s| edit(s).annotation(name, "")));
            assert_eq!(skipped, without_lb(full.clone()), "{name} on {local_node}");
        }
    }
}

#[test]
fn skiplbips_false_from_us_keeps_the_load_balancer_frontends() {
    let full = state(web(NODE, |s| s));
    let kept = state(web(NODE, |s| {
        s.annotation("kube-router.io/service.skiplbips", "")
            .annotation("ipwarden.io/service.skiplbips", "false")
    }));
    assert_eq!(kept, full);
}

#[test]
fn a_bad_value_is_one_problem_and_the_service_is_programmed_without_it() {
    let cases = [
        (
            "kube-router.io/service.local",
            "yes",
            "\"yes\" is not \"true\" or \"false\"",
        ),
        (
            "ipwarden.io/service.skiplbips",
            "maybe",
            "\"maybe\" is not \"true\", \"false\" or empty",
        ),
        (
            "kube-router.io/service.hairpin.externalips",
            "1",
            "\"1\" is not \"true\", \"false\" or empty",
        ),
    ];
    let plain = state(web(NODE, |s| s));
    for (name, value, message) in cases {
        let mut st = state(web(NODE, annotated(name, value)));
        let field = format!("metadata.annotations[{name}]");
        assert_eq!(problems_of(&st), [(field.as_str(), message, false)]);
        assert_eq!(st.problems[0].object, "Service shop/web");
        st.problems.clear();
        assert_eq!(
            st, plain,
            "{name}: the value is ignored, the rest programmed"
        );
    }
}

/// self: ClusterIP and externalIP 203.0.113.20, one endpoint here.
fn self_service(annotations: &[(&'static str, &'static str)]) -> Vec<KubeObject> {
    let mut svc = service("shop", "self")
        .cluster_ip("10.96.0.20")
        .external_ip("203.0.113.20")
        .port("http", 80, 8080, "TCP");
    for (k, v) in annotations {
        svc = svc.annotation(k, v);
    }
    vec![
        node_with_pod_cidrs(NODE, &["192.168.56.10"], &["10.244.0.0/16"]),
        svc.build(),
        slice("shop", "self")
            .port("http", 8080, "TCP")
            .endpoint("10.244.1.2", Ready)
            .on(NODE)
            .build(),
    ]
}

fn hairpinned(st: &ServiceState) -> Vec<String> {
    let nat = st
        .iptables
        .iter()
        .find(|p| p.family == Family::V4 && p.table == Table::Nat)
        .unwrap();
    nat.chains[0]
        .rules
        .iter()
        .filter(|r| r.starts_with("-s 10.244.1.2/32 -d 10.244.1.2/32"))
        .cloned()
        .collect()
}

#[test]
fn hairpin_covers_external_ips_already_and_hairpin_externalips_alone_turns_nothing_on() {
    let ext = "kube-router.io/service.hairpin.externalips";
    let hairpin = "kube-router.io/service.hairpin";
    let rule = |vip: &str| {
        format!("-s 10.244.1.2/32 -d 10.244.1.2/32 -m ipvs --vproto 6 --vaddr {vip} --vport 80 -j MASQUERADE")
    };
    let on = state(self_service(&[(hairpin, "")]));
    assert_eq!(hairpinned(&on), [rule("10.96.0.20"), rule("203.0.113.20")]);
    let both = state(self_service(&[(hairpin, ""), (ext, "")]));
    assert_eq!(
        both, on,
        "with hairpin it adds nothing: the externalIP is in"
    );
    let alone = state(self_service(&[(ext, "")]));
    assert_eq!(
        alone,
        state(self_service(&[])),
        "as in kube-router, alone it does nothing"
    );
    assert!(hairpinned(&alone).is_empty());
}

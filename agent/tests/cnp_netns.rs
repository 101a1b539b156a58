//! ClusterNetworkPolicy on real packets: truth tables in the NetworkPolicy
//! harness (netpol/, see netpol_netns.rs for its conventions), translated
//! from the Network Policy API's conformance suite (conformance/tests/:
//! its namespaces and ports mapped onto x, y, z x a, b, c and ports 80/81)
//! and from the user stories of its API overview.
//!
//! Addresses: x/a 10.244.1.10, x/b .11, x/c .12, y/a .20, y/b .21, y/c
//! .22, z/a .30, z/b .31, z/c .32 (fd00:10:244:1::10, ...). Every matrix
//! starts from "everything connects"; node-a's own traffic to its pods is
//! always allowed.

#[macro_use]
mod netpol;

use netpol::{
    all,
    cluster_policy::{
        in_namespaces, named_port, networks, pods_of, tcp_port, tcp_range, udp_any, udp_port,
        ClusterPolicy,
    },
    expr,
    matrix::Outcome,
    ns, pod, pods, Case, Op, Policy,
};
use serde_json::Value;

fn ns_peer(name: &str) -> Value {
    in_namespaces(ns(name))
}

/// Every namespace (`namespaces: {}`).
fn everyone() -> Value {
    in_namespaces(all())
}

/// User story "isolate a namespace": an Admin Deny of ingress from y into
/// every pod of x.
fn cnp_admin_deny_ingress_from_a_namespace(case: Case) -> Case {
    case.cluster_policy(
        ClusterPolicy::admin("x-not-from-y", 10, ns_peer("x")).ingress(
            "Deny",
            &[ns_peer("y")],
            &[],
        ),
    )
    .expect(|r| {
        r.expect("y/*", "x/*", false);
    })
}

/// Egress the same way, from the subject's side.
fn cnp_admin_deny_egress_to_a_namespace(case: Case) -> Case {
    case.cluster_policy(ClusterPolicy::admin("x-not-to-z", 10, ns_peer("x")).egress(
        "Deny",
        &[ns_peer("z")],
        &[],
    ))
    .expect(|r| {
        r.expect("x/*", "z/*", false);
    })
}

/// "Always allow the monitoring namespace": an Admin Accept wins over a
/// NetworkPolicy that isolates x (the namespace owner cannot override it).
fn cnp_admin_accept_wins_over_a_network_policy(case: Case) -> Case {
    case.policy(Policy::ingress("x", "deny-all"))
        .cluster_policy(ClusterPolicy::admin("monitoring", 1, everyone()).ingress(
            "Accept",
            &[ns_peer("y")],
            &[],
        ))
        .expect(|r| {
            r.deny_to("x/*").allow("y/*", "x/*");
        })
}

/// Pass hands the decision to the NetworkPolicy tier, skipping the rest of
/// the Admin tier (the Deny below it): y reaches x because x's
/// NetworkPolicy allows it; z is denied by the Admin tier.
fn cnp_admin_pass_defers_to_network_policy(case: Case) -> Case {
    case.policy(Policy::ingress("x", "from-y").from(netpol::namespaces(ns("y"))))
        .cluster_policy(
            ClusterPolicy::admin("pass-y-deny-rest", 5, ns_peer("x"))
                .ingress("Pass", &[ns_peer("y")], &[])
                .ingress("Deny", &[everyone()], &[]),
        )
        .expect(|r| {
            r.deny_to("x/*").allow("y/*", "x/*");
        })
}

/// Lower priority first: Accept (priority 1) before Deny (priority 2);
/// equal priorities go by name ("a-..." before "b-...").
fn cnp_priority_then_name_order(case: Case) -> Case {
    case.cluster_policy(ClusterPolicy::admin("z-deny-all", 2, ns_peer("x")).ingress(
        "Deny",
        &[everyone()],
        &[],
    ))
    .cluster_policy(ClusterPolicy::admin("accept-y", 1, ns_peer("x")).ingress(
        "Accept",
        &[ns_peer("y")],
        &[],
    ))
    .cluster_policy(ClusterPolicy::admin("b-deny-z", 0, ns_peer("x")).ingress(
        "Deny",
        &[ns_peer("z")],
        &[],
    ))
    .cluster_policy(
        ClusterPolicy::admin("a-accept-z-b", 0, ns_peer("x")).ingress(
            "Accept",
            &[pods_of(ns("z"), pod("b"))],
            &[],
        ),
    )
    .expect(|r| {
        r.deny_to("x/*").allow("y/*", "x/*").allow("z/b", "x/*");
    })
}

/// Rules of one policy in written order, first match decides.
fn cnp_rule_order_first_match_decides(case: Case) -> Case {
    case.cluster_policy(
        ClusterPolicy::admin("ordered", 3, ns_peer("x"))
            .ingress("Deny", &[pods_of(ns("y"), pod("a"))], &[])
            .ingress("Accept", &[ns_peer("y")], &[])
            .ingress("Deny", &[everyone()], &[]),
    )
    .expect(|r| {
        r.deny_to("x/*").allow("y/b,y/c", "x/*");
    })
}

/// Baseline applies to pods no NetworkPolicy selects (x) and not to those
/// one does (z, whose policy allows all ingress).
fn cnp_baseline_only_without_a_network_policy(case: Case) -> Case {
    case.policy(Policy::ingress("z", "allow-all").allow_all_ingress())
        .cluster_policy(
            ClusterPolicy::baseline(
                "default-deny-from-y",
                10,
                in_namespaces(expr("ns", Op::In, &["x", "z"])),
            )
            .ingress("Deny", &[ns_peer("y")], &[]),
        )
        .expect(|r| {
            r.expect("y/*", "x/*", false);
        })
}

/// Admin Pass skips the rest of the Admin tier (its Accept) and reaches the
/// Baseline tier, which denies y; an Admin Accept (z) skips Baseline.
fn cnp_pass_into_baseline_and_accept_skips_it(case: Case) -> Case {
    case.cluster_policy(ClusterPolicy::admin("pass-y", 1, ns_peer("x")).ingress(
        "Pass",
        &[ns_peer("y")],
        &[],
    ))
    .cluster_policy(ClusterPolicy::admin("accept-all", 2, ns_peer("x")).ingress(
        "Accept",
        &[everyone()],
        &[],
    ))
    .cluster_policy(
        ClusterPolicy::baseline("deny-all", 1, ns_peer("x")).ingress("Deny", &[everyone()], &[]),
    )
    .expect(|r| {
        r.expect("y/*", "x/*", false);
    })
}

/// Baseline Accept over Baseline Deny, and a Baseline Pass falls through
/// to the default allow.
fn cnp_baseline_accept_and_pass(case: Case) -> Case {
    case.cluster_policy(
        ClusterPolicy::baseline("x-defaults", 1, ns_peer("x"))
            .ingress("Accept", &[ns_peer("y")], &[])
            .ingress("Pass", &[ns_peer("z")], &[])
            .ingress("Deny", &[everyone()], &[]),
    )
    .expect(|r| {
        r.deny_to("x/*").allow("y/*,z/*", "x/*");
    })
}

/// An egress Accept still meets the destination's ingress: x's Admin
/// Accept to everyone overrides x's own egress NetworkPolicy, but y's
/// ingress NetworkPolicy still refuses x.
fn cnp_egress_accept_still_meets_destination_ingress(case: Case) -> Case {
    case.policy(Policy::egress("x", "no-egress"))
        .policy(Policy::ingress("y", "not-from-x").from(netpol::namespaces(ns("z"))))
        .cluster_policy(ClusterPolicy::admin("x-out", 1, ns_peer("x")).egress(
            "Accept",
            &[everyone()],
            &[],
        ))
        .expect(|r| {
            r.deny_to("y/*").allow("z/*", "y/*");
        })
}

/// User story "deny to a network": `networks` match pod IPs too (y/a's
/// address), on TCP 80 only.
fn cnp_networks_peer_matches_pod_ips(case: Case) -> Case {
    case.dual_stack()
        .cluster_policy(ClusterPolicy::admin("no-y-a-80", 1, ns_peer("x")).egress(
            "Deny",
            &[networks(&["10.244.1.20/32", "fd00:10:244:1::20/128"])],
            &[tcp_port(80)],
        ))
        .expect(|r| {
            r.expect_on("x/*", "y/a", "tcp/80", false);
        })
}

/// Port numbers, inclusive ranges and named ports (resolved on the
/// destination pod, whatever its protocol), TCP and UDP.
fn cnp_ports_ranges_and_named_ports(case: Case) -> Case {
    case.cluster_policy(
        ClusterPolicy::admin("ports", 1, ns_peer("x"))
            .ingress(
                "Deny",
                &[ns_peer("y")],
                &[tcp_range(81, 90), named_port("serve-80-udp")],
            )
            .ingress("Deny", &[ns_peer("z")], &[udp_port(81)])
            .egress("Deny", &[pods_of(ns("z"), pod("a"))], &[udp_any()]),
    )
    .expect(|r| {
        r.expect_on("y/*", "x/*", "tcp/81", false)
            .expect_on("y/*", "x/*", "udp/80", false)
            .expect_on("z/*", "x/*", "udp/81", false)
            .expect_on("x/*", "z/a", "udp", false);
    })
}

/// Pod subjects and pod peers (both selectors: AND).
fn cnp_pod_subject_and_pod_peers(case: Case) -> Case {
    case.cluster_policy(
        ClusterPolicy::admin("a-not-from-b", 1, pods_of(all(), pod("a"))).ingress(
            "Deny",
            &[pods_of(expr("ns", Op::In, &["y", "z"]), pod("b"))],
            &[],
        ),
    )
    .expect(|r| {
        r.expect("y/b,z/b", "*/a", false);
    })
}

/// IPv6 obeys the same tiers.
fn cnp_dual_stack_tiers(case: Case) -> Case {
    cnp_admin_pass_defers_to_network_policy(case.dual_stack())
}

/// A Deny rule with an unsupported peer (nodes) fails closed: it denies
/// everything into its subject in its place; the other policy applies.
fn cnp_bad_deny_rule_fails_closed(case: Case) -> Case {
    let mut bad = ClusterPolicy::admin("bad", 1, pods_of(ns("x"), pod("a"))).to_json();
    bad["spec"]["ingress"] = serde_json::json!([
        {"name": "nodes", "action": "Deny", "from": [{"nodes": {}}]}
    ]);
    case.cluster_policy_json(bad)
        .cluster_policy(ClusterPolicy::admin("good", 2, ns_peer("y")).ingress(
            "Deny",
            &[ns_peer("z")],
            &[],
        ))
        .expect(|r| {
            r.deny_to("x/a").expect("z/*", "y/*", false);
        })
}

cases!(
    cnp_admin_deny_ingress_from_a_namespace,
    cnp_admin_deny_egress_to_a_namespace,
    cnp_admin_accept_wins_over_a_network_policy,
    cnp_admin_pass_defers_to_network_policy,
    cnp_priority_then_name_order,
    cnp_rule_order_first_match_decides,
    cnp_baseline_only_without_a_network_policy,
    cnp_pass_into_baseline_and_accept_skips_it,
    cnp_baseline_accept_and_pass,
    cnp_egress_accept_still_meets_destination_ingress,
    cnp_networks_peer_matches_pod_ips,
    cnp_ports_ranges_and_named_ports,
    cnp_pod_subject_and_pod_peers,
    cnp_dual_stack_tiers,
    cnp_bad_deny_rule_fails_closed,
);

/// A Deny drops (the API requires a denied connection to time out), where
/// a NetworkPolicy refuses: TCP from y to x times out, from z is refused.
#[test]
fn cnp_deny_drops_while_network_policy_refuses() {
    let case = Case::new("cnp_deny_drops_while_network_policy_refuses")
        .policy(Policy::ingress("x", "only-from-x").from(pods(all())))
        .cluster_policy(ClusterPolicy::admin("drop-y", 1, ns_peer("x")).ingress(
            "Deny",
            &[ns_peer("y")],
            &[],
        ))
        .expect(|r| {
            r.deny_to("x/*").allow("x/*", "x/*");
        });
    let Some(run) = case.observe() else {
        return;
    };
    run.matrix.compare(&run.observed).unwrap();
    let index = |names: &[String], n: &str| names.iter().position(|x| x == n).unwrap();
    let (y, z, x) = (
        index(&run.matrix.sources, "y/a"),
        index(&run.matrix.sources, "z/a"),
        index(&run.matrix.targets, "x/a"),
    );
    let tcp = |s: usize| {
        run.observed
            .iter()
            .filter(|((si, ti, t), _)| {
                *si == s && *ti == x && t.proto == netpol::matrix::Proto::Tcp
            })
            .map(|(_, o)| o.clone())
            .collect::<Vec<_>>()
    };
    assert!(
        tcp(y).iter().all(|o| *o == Outcome::Timeout),
        "{:?}",
        tcp(y)
    );
    assert!(
        tcp(z).iter().all(|o| *o == Outcome::Refused),
        "{:?}",
        tcp(z)
    );
}

/// No privileges needed: every case's manifests parse with the agent's own
/// reader (every object kept).
#[test]
fn every_cnp_case_renders_manifests_the_agent_reads() {
    for (name, case) in CASES {
        let case = case(Case::new(name));
        case.check_manifests();
        assert!(case.matrix().cells().count() > 0, "{name}");
    }
}

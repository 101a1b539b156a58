//! NetworkPolicy on real packets: a truth table per case.
//!
//! Each case builds its own nodes and pods in network namespaces (see
//! netpol/topology.rs), writes the cluster and its policies as manifests,
//! runs `ipwarden run --once` in node-a, then probes every ordered pair of
//! endpoints on TCP and UDP 80 and 81 and compares what connects with the
//! expected matrix, written by hand from the NetworkPolicy API semantics
//! (modelled on the upstream e2e suite, test/e2e/network/netpol, and on
//! cyclonus). A mismatch prints the expected, observed and comparison
//! tables.
//!
//! Conventions of every matrix: rows are sources ("node" is node-a itself,
//! whose traffic to its pods is always allowed), columns destinations; a pod
//! never probes itself. Pods on node-b are never selected by a policy: the
//! agent under test programs node-a only.
//!
//! Until the agent has the NetworkPolicy controller (`run
//! --run-service-proxy`), the policy cases skip with a message
//! (IPWARDEN_NETPOL_REQUIRE=1 makes that a failure); the harness_* tests
//! run without the agent and prove the harness itself.

mod netpol;

use netpol::{
    matrix::{Family, Outcome},
    Case, Cluster, Node, Pod,
};

// ---- the harness itself (no agent) ----

/// Every topology feature: x, y on node-a, z on node-b, a hostNetwork pod x/h.
fn full_cluster() -> Cluster {
    Cluster::xyz()
        .on_node_b("z")
        .add_pod(Pod::host_network("x", "h", Node::A))
}

/// No policies and no agent: every cell connects, IPv4 and IPv6, bridged
/// pods, pods on node-b and a hostNetwork pod.
#[test]
fn harness_baseline_everything_connects() {
    Case::new("harness_baseline_everything_connects")
        .cluster(full_cluster())
        .dual_stack()
        .without_agent()
        .run();
}

/// The same with node-a routed (no bridge).
#[test]
fn harness_baseline_routed_everything_connects() {
    Case::new("harness_baseline_routed_everything_connects")
        .cluster(full_cluster())
        .routed()
        .dual_stack()
        .without_agent()
        .run();
}

/// A hand-written `iptables -I FORWARD -d <x/a> -j REJECT` in node-a (after
/// an ESTABLISHED,RELATED accept, so that replies pass as they do with the
/// agent; without it the replies to x/a's own connections would be
/// rejected too) must fail exactly the x/a column for IPv4: every pod,
/// local or on node-b, refused at once; node-a's own traffic leaves through
/// OUTPUT and still connects. The matrix must report exactly those cells.
fn self_test(name: &'static str, routed: bool) {
    let mut case = Case::new(name)
        .cluster(Cluster::xyz().on_node_b("z"))
        .dual_stack()
        .without_agent()
        .before_probe(|topo| {
            topo.node_a
                .output(
                    "iptables",
                    &["-I", "FORWARD", "-d", "10.244.1.10", "-j", "REJECT"],
                )
                .unwrap();
            topo.node_a
                .output(
                    "iptables",
                    &[
                        "-I",
                        "FORWARD",
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "ESTABLISHED,RELATED",
                        "-j",
                        "ACCEPT",
                    ],
                )
                .unwrap();
        });
    if routed {
        case = case.routed();
    }
    let Some(run) = case.observe() else {
        return;
    };
    let m = &run.matrix;
    let mut blocked = 0;
    for (&(s, t, tr), outcome) in &run.observed {
        let column = m.targets[t] == "x/a" && m.sources[s] != "node" && tr.family == Family::V4;
        if column {
            assert_eq!(
                *outcome,
                Outcome::Refused,
                "{} -> {} {tr}: a REJECT must refuse at once",
                m.sources[s],
                m.targets[t]
            );
            blocked += 1;
        } else {
            assert!(
                outcome.connected(),
                "{} -> {} {tr}: {outcome}, only the x/a column is rejected",
                m.sources[s],
                m.targets[t]
            );
        }
    }
    // 8 other pods x {tcp, udp} x {80, 81}.
    assert_eq!(blocked, 32);

    // "Everything connects" mismatches in exactly those cells, and the
    // comparison table marks the x/a column of the pod rows only.
    let wrong = m.mismatches(&run.observed);
    assert_eq!(wrong.len(), 32);
    assert!(wrong.iter().all(|&(s, t, tr)| m.targets[t] == "x/a"
        && m.sources[s] != "node"
        && tr.family == Family::V4));
    let report = m.compare(&run.observed).unwrap_err();
    eprintln!("{name}: the report of the mismatch, as a failing case prints it:\n{report}");
    let comparison = report
        .split("comparison ('.' as expected, 'X' mismatch):\n")
        .nth(1)
        .expect("a comparison table");
    let rows: Vec<&str> = comparison.lines().take(m.sources.len() + 1).collect();
    let x_a = rows[0].find("x/a").unwrap() + 2; // the column's last character
    for row in &rows[1..] {
        let marks: Vec<(usize, char)> = row
            .char_indices()
            .skip(5)
            .filter(|&(_, c)| c == 'X')
            .collect();
        if row.starts_with("node") || row.starts_with("x/a ") {
            assert!(marks.is_empty(), "{row}");
        } else {
            assert_eq!(marks, vec![(x_a, 'X')], "{row}");
        }
    }

    // Written upstream-style, the expectation holds.
    let mut expected = m.clone();
    expected.expect_on("*", "x/a", "v4", false);
    expected.compare(&run.observed).unwrap();
    eprintln!("{name}: {:?}", run.timings);
}

#[test]
fn harness_self_test_reject_fails_exactly_one_column() {
    self_test("harness_self_test_reject_fails_exactly_one_column", false);
}

#[test]
fn harness_self_test_routed_reject_fails_exactly_one_column() {
    self_test(
        "harness_self_test_routed_reject_fails_exactly_one_column",
        true,
    );
}

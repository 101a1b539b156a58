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
//! SCTP is not probed here: this host's kernel has no SCTP sockets. The
//! cases on real SCTP traffic are in vm_netpol_sctp.rs and run in the VM;
//! `sctp_rule_does_not_allow_tcp_or_udp` below checks that an SCTP rule
//! opens no TCP or UDP.
//!
//! Conventions of every matrix: rows are sources ("node" is node-a itself,
//! whose traffic to its pods is always allowed), columns destinations; a pod
//! never probes itself. Pods on node-b are never selected by a policy: the
//! agent under test programs node-a only.
//!
//! The harness_* tests run without the agent and prove the harness itself.
//! IPWARDEN_NETPOL_AGENT_ARGS adds arguments to every `ipwarden run` (split
//! on whitespace, e.g. `--bpf-mode off`).
//!
//! Timing (2 cores, 2 test threads, no agent): a topology of two nodes and
//! nine pods takes 0.45-0.7 s, probing its 324 (IPv4) or 648 (dual-stack)
//! cells 20-60 ms; the whole file about 17 s, plus the agent's own time
//! per case.

#[macro_use]
mod netpol;

use netpol::{
    all, any_port, expr, ip_block,
    matrix::{Family, Outcome, Proto},
    named, namespaces, ns, number, pod, pods, pods_in, tcp,
    topology::Topology,
    udp, Case, Cluster, Node, Op, Pod, Policy, Rule,
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
    let ratelimit = || std::fs::read_to_string("/proc/sys/net/ipv4/icmp_ratelimit").unwrap();
    let host_before = ratelimit();
    Case::new("harness_baseline_everything_connects")
        .cluster(full_cluster())
        .dual_stack()
        .without_agent()
        .before_probe(move |topo| {
            // The topology's in-process sysctl writes land in the node's
            // namespace, not the host's.
            let sysctl = |key: &str| topo.node_a.output("sysctl", &["-n", key]).unwrap();
            assert_eq!(sysctl("net.ipv4.icmp_ratelimit").trim(), "0");
            assert_eq!(sysctl("net.ipv6.conf.all.forwarding").trim(), "1");
            assert_eq!(sysctl("net.bridge.bridge-nf-call-ip6tables").trim(), "1");
            // The host's own value, whatever it is, is left as it was.
            assert_eq!(
                ratelimit(),
                host_before,
                "the host's own setting was changed"
            );
        })
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

/// `net.bridge.bridge-nf-call-iptables` and `-ip6tables` are per network
/// namespace on this kernel: a node's setting is its own.
#[test]
fn harness_bridge_nf_sysctls_are_per_netns() {
    if !ipwarden::netns::privileged("harness_bridge_nf_sysctls_are_per_netns") {
        return;
    }
    let (one, other) = (
        ipwarden::netns::NetNs::new("np-sysctl").unwrap(),
        ipwarden::netns::NetNs::new("np-sysctl").unwrap(),
    );
    for family in ["iptables", "ip6tables"] {
        let key = format!("net.bridge.bridge-nf-call-{family}");
        one.output("sysctl", &["-qw", &format!("{key}=0")]).unwrap();
        other
            .output("sysctl", &["-qw", &format!("{key}=1")])
            .unwrap();
        assert_eq!(one.output("sysctl", &["-n", &key]).unwrap().trim(), "0");
        assert_eq!(other.output("sysctl", &["-n", &key]).unwrap().trim(), "1");
    }
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
                    &["-w", "-I", "FORWARD", "-d", "10.244.1.10", "-j", "REJECT"],
                )
                .unwrap();
            topo.node_a
                .output(
                    "iptables",
                    &[
                        "-w",
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

// ---- the cases ----
//
// Each case is a function that dresses up `Case::new(<its name>)`; `cases!`
// at the end makes a #[test] of each (module `run`) and a list of all of
// them for `every_case_renders_manifests_the_agent_reads`. Addresses: x/a
// 10.244.1.10, x/b .11, x/c .12, y/a .20, y/b .21, y/c .22, z/a .30, z/b .31,
// z/c .32 (fd00:10:244:1::10, ...); on node-b the same in 10.244.2.0/24.
// Every matrix starts from "everything connects".

/// upstream "should support a 'default-deny-ingress' policy".
fn default_deny_ingress(case: Case) -> Case {
    case.policy(Policy::ingress("x", "deny-ingress"))
        .expect(|r| {
            r.deny_to("x/*");
        })
}

/// upstream "should deny egress from all pods in a namespace".
fn default_deny_egress(case: Case) -> Case {
    case.policy(Policy::egress("x", "deny-egress")).expect(|r| {
        r.deny_from("x/*");
    })
}

/// upstream "should support a 'default-deny-all' policy".
fn default_deny_ingress_and_egress(case: Case) -> Case {
    case.policy(Policy::ingress_egress("x", "deny-all"))
        .expect(|r| {
            r.deny_to("x/*").deny_from("x/*");
        })
}

/// The same in routed mode (no bridge: policies on routed traffic).
fn default_deny_ingress_and_egress_routed(case: Case) -> Case {
    default_deny_ingress_and_egress(case).routed()
}

/// x's pods on node-a (x/a, x/b, x/c of the standard cluster).
const X_PODS: [&str; 3] = ["10.244.1.10", "10.244.1.11", "10.244.1.12"];

/// For the cases whose matrix is "everything connects", which an agent
/// that programmed nothing would pass too: node-a's iptables-save and ipset
/// show each of `pods` isolated (in the guarded set IPWARDEN-FORWARD
/// matches, and dispatched to its pod chain from the bucket of its low 4
/// bits, by destination for ingress, by source for egress), so it is the
/// policies' allow rules that let the traffic through.
fn isolated(direction: &'static str, pods: &'static [&'static str]) -> impl Fn(&Topology) {
    let (flag, dir, set, dispatch) = if direction == "ingress" {
        ("-d", "dst", "IPW-GUARDED-INGRESS", "IPW-TO-POD")
    } else {
        ("-s", "src", "IPW-GUARDED-EGRESS", "IPW-FROM-POD")
    };
    move |topo| {
        let save = topo
            .node_a
            .output("iptables-save", &["-t", "filter"])
            .unwrap();
        let entry = format!("-A IPWARDEN-FORWARD -m set --match-set {set} {dir} -j {dispatch}");
        assert!(save.contains(&entry), "no `{entry}` ({direction}):\n{save}");
        let members = topo.node_a.output("ipset", &["list", set]).unwrap();
        for ip in pods {
            let bucket = ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() & 15;
            let jump = format!("-A {dispatch}-{bucket} {flag} {ip}/32 -g IPW-POD-FW-");
            assert!(
                save.contains(&jump),
                "{ip} not isolated ({direction}):\n{save}"
            );
            assert!(
                members.lines().any(|l| l == *ip),
                "{ip} not in {set}:\n{members}"
            );
        }
    }
}

/// An empty ingress rule allows everything, whatever another policy
/// isolates (upstream "ingress allow-all policy taking precedence").
fn allow_all_ingress_empty_rule_wins_over_deny(case: Case) -> Case {
    case.policy(Policy::ingress("x", "deny-ingress"))
        .policy(Policy::ingress("x", "allow-all").allow_all_ingress())
        .before_probe(isolated("ingress", &X_PODS))
}

/// The same for egress.
fn allow_all_egress_empty_rule_wins_over_deny(case: Case) -> Case {
    case.policy(Policy::egress("x", "deny-egress"))
        .policy(Policy::egress("x", "allow-all").allow_all_egress())
        .before_probe(isolated("egress", &X_PODS))
}

/// A podSelector peer alone: pods of the policy's namespace (upstream
/// "allow traffic from pods within server namespace based on PodSelector").
fn ingress_pod_selector(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-from-b")
            .select(pod("a"))
            .from(pods(pod("b"))),
    )
    .expect(|r| {
        r.deny_to("x/a").allow("x/b", "x/a");
    })
}

/// The same in routed mode.
fn ingress_pod_selector_routed(case: Case) -> Case {
    ingress_pod_selector(case).routed()
}

/// A namespaceSelector peer alone: every pod of those namespaces.
fn ingress_namespace_selector(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-from-y")
            .select(pod("a"))
            .from(namespaces(ns("y"))),
    )
    .expect(|r| {
        r.deny_to("x/a").allow("y/*", "x/a");
    })
}

/// Both selectors in one peer: pods b of namespaces y and z (AND).
fn peer_with_both_selectors_is_and(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-from-b-in-y-z")
            .select(pod("a"))
            .from(pods_in(expr("ns", Op::In, &["y", "z"]), pod("b"))),
    )
    .expect(|r| {
        r.deny_to("x/a").allow("y/b,z/b", "x/a");
    })
}

/// Two peers: namespace y, or pods b of x (OR; the podSelector peer does
/// not reach z/b).
fn two_peers_are_or(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-from-y-or-b")
            .select(pod("a"))
            .from(namespaces(ns("y")))
            .from(pods(pod("b"))),
    )
    .expect(|r| {
        r.deny_to("x/a").allow("y/*", "x/a").allow("x/b", "x/a");
    })
}

/// matchExpressions In and NotIn, on the default namespace label
/// (upstream "Multiple PodSelectors and NamespaceSelectors").
fn match_expressions_in_and_not_in(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-from-b-c-elsewhere")
            .select(pod("a"))
            .from(pods_in(
                expr("kubernetes.io/metadata.name", Op::NotIn, &["x"]),
                expr("pod", Op::In, &["b", "c"]),
            )),
    )
    .expect(|r| {
        r.deny_to("x/a").allow("y/b,y/c,z/b,z/c", "x/a");
    })
}

/// matchExpressions Exists on pods of every namespace.
fn match_expression_exists(case: Case) -> Case {
    case.cluster(
        Cluster::xyz()
            .with_pod("x/b", |p| p.label("team", "blue"))
            .with_pod("y/c", |p| p.label("team", "blue"))
            .with_pod("z/a", |p| p.label("team", "red")),
    )
    .policy(
        Policy::ingress("x", "a-from-any-team")
            .select(pod("a"))
            .from(pods_in(all(), expr("team", Op::Exists, &[]))),
    )
    .expect(|r| {
        r.deny_to("x/a").allow("x/b,y/c,z/a", "x/a");
    })
}

/// matchExpressions DoesNotExist in the policy's own podSelector.
fn match_expression_does_not_exist_selects_targets(case: Case) -> Case {
    case.cluster(Cluster::xyz().with_pod("y/c", |p| p.label("team", "blue")))
        .policy(Policy::ingress("y", "isolate-teamless").select(expr(
            "team",
            Op::DoesNotExist,
            &[],
        )))
        .expect(|r| {
            r.deny_to("y/a,y/b");
        })
}

/// A port by number with its protocol (upstream "should enforce policy based on Ports").
fn ports_by_number(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-from-y-on-81")
            .select(pod("a"))
            .from(namespaces(ns("y")))
            .on(tcp(81)),
    )
    .expect(|r| {
        r.deny_to("x/a").expect_on("y/*", "x/a", "tcp/81", true);
    })
}

/// A port without a protocol is TCP.
fn port_without_protocol_is_tcp(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-on-81")
            .select(pod("a"))
            .ingress_rule(Rule::default().port(number(81))),
    )
    .expect(|r| {
        r.deny_to("x/a").expect_on("*", "x/a", "tcp/81", true);
    })
}

/// A UDP rule allows UDP only (upstream "should not allow access by TCP
/// when a policy specifies only UDP").
fn udp_rule_does_not_allow_tcp(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-udp-81")
            .select(pod("a"))
            .ingress_rule(Rule::default().port(udp(81))),
    )
    .expect(|r| {
        r.deny_to("x/a").expect_on("*", "x/a", "udp/81", true);
    })
}

/// A protocol without a port: every port of it (upstream "allowing any
/// port traffic to a server on a specific protocol").
fn protocol_without_port_allows_every_port(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-any-udp")
            .select(pod("a"))
            .ingress_rule(Rule::default().port(any_port("UDP"))),
    )
    .expect(|r| {
        r.deny_to("x/a").expect_on("*", "x/a", "udp", true);
    })
}

/// An SCTP rule must not open TCP or UDP (upstream "should not mistakenly
/// treat 'protocol: SCTP' as 'protocol: TCP'").
fn sctp_rule_does_not_allow_tcp_or_udp(case: Case) -> Case {
    case.policy(Policy::ingress("x", "deny-ingress"))
        .policy(
            Policy::ingress("x", "a-sctp-only")
                .select(pod("a"))
                .ingress_rule(
                    Rule::default()
                        .port(number(80).protocol("SCTP"))
                        .port(number(81).protocol("SCTP")),
                ),
        )
        .expect(|r| {
            r.deny_to("x/*");
        })
}

/// endPort: TCP 80-81 from y to x/a; UDP 81-90 to x/b (80 is outside).
fn end_port_ranges(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-tcp-80-81-from-y")
            .select(pod("a"))
            .from(namespaces(ns("y")))
            .on(tcp(80).end(81)),
    )
    .policy(
        Policy::ingress("x", "b-udp-81-90")
            .select(pod("b"))
            .ingress_rule(Rule::default().port(udp(81).end(90))),
    )
    .expect(|r| {
        r.deny_to("x/a,x/b")
            .expect_on("y/*", "x/a", "tcp", true)
            .expect_on("*", "x/b", "udp/81", true);
    })
}

/// A named ingress port is resolved on each target pod: "web" is 80 on
/// x/a, 81 on x/b, and x/c has no such port (so nothing reaches it).
fn named_port_ingress_resolved_on_each_target(case: Case) -> Case {
    case.cluster(
        Cluster::xyz()
            .with_pod("x/a", |p| p.port("web", 80, "TCP"))
            .with_pod("x/b", |p| p.port("web", 81, "TCP")),
    )
    .policy(Policy::ingress("x", "allow-web").ingress_rule(Rule::default().port(named("web"))))
    .expect(|r| {
        r.deny_to("x/*")
            .expect_on("*", "x/a", "tcp/80", true)
            .expect_on("*", "x/b", "tcp/81", true);
    })
}

/// A named port with its protocol (upstream "should allow ingress access on
/// one named port", on UDP).
fn named_port_udp(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "allow-serve-81-udp")
            .ingress_rule(Rule::default().port(named("serve-81-udp").protocol("UDP"))),
    )
    .expect(|r| {
        r.deny_to("x/*").expect_on("*", "x/*", "udp/81", true);
    })
}

/// A named egress port is resolved on each peer pod: "web" is 80 on y/a,
/// 81 on y/b; other destinations have no such port.
fn named_port_egress_resolved_on_each_peer(case: Case) -> Case {
    case.cluster(
        Cluster::xyz()
            .with_pod("y/a", |p| p.port("web", 80, "TCP"))
            .with_pod("y/b", |p| p.port("web", 81, "TCP")),
    )
    .policy(
        Policy::egress("x", "a-to-web")
            .select(pod("a"))
            .egress_rule(Rule::default().port(named("web"))),
    )
    .expect(|r| {
        r.deny_from("x/a")
            .expect_on("x/a", "y/a", "tcp/80", true)
            .expect_on("x/a", "y/b", "tcp/81", true);
    })
}

/// ipBlock with except, IPv4: an IPv4 block says nothing of IPv6 sources.
fn ip_block_ingress_with_except_v4(case: Case) -> Case {
    case.dual_stack()
        .policy(
            Policy::ingress("x", "a-from-node-a-pods-but-y-a-b")
                .select(pod("a"))
                .from(ip_block("10.244.1.0/24").except("10.244.1.20/31")),
        )
        .expect(|r| {
            r.deny_to("x/a")
                .expect_on("*", "x/a", "v4", true)
                .expect_on("y/a,y/b", "x/a", "v4", false);
        })
}

/// ipBlock with except, IPv6, egress: fd00:10:244:1::30/127 is z/a and z/b.
fn ip_block_egress_with_except_v6(case: Case) -> Case {
    case.dual_stack()
        .policy(
            Policy::egress("x", "a-to-v6-pods-but-z-a-b")
                .select(pod("a"))
                .to(ip_block("fd00:10:244:1::/64").except("fd00:10:244:1::30/127")),
        )
        .expect(|r| {
            r.deny_from("x/a")
                .expect_on("x/a", "*", "v6", true)
                .expect_on("x/a", "z/a,z/b", "v6", false);
        })
}

/// Several policies on one pod: the union of their rules, each rule's
/// peers with its own ports only.
fn several_policies_on_one_pod_are_a_union(case: Case) -> Case {
    case.policy(
        Policy::ingress("x", "a-from-b-tcp-80")
            .select(pod("a"))
            .from(pods(pod("b")))
            .on(tcp(80)),
    )
    .policy(
        Policy::ingress("x", "a-from-y-udp-81")
            .select(pod("a"))
            .from(namespaces(ns("y")))
            .on(udp(81)),
    )
    .expect(|r| {
        r.deny_to("x/a")
            .expect_on("x/b", "x/a", "tcp/80", true)
            .expect_on("y/*", "x/a", "udp/81", true);
    })
}

/// policyTypes [Egress] isolates egress only: its ingress rules are moot
/// and the pod's ingress stays open.
fn egress_only_policy_types_leave_ingress_open(case: Case) -> Case {
    case.policy(
        Policy::egress("x", "a-egress-to-y")
            .select(pod("a"))
            .to(namespaces(ns("y")))
            .ingress_rule(Rule::default().peer(pods(pod("b")))),
    )
    .expect(|r| {
        r.deny_from("x/a").allow("x/a", "y/*");
    })
}

/// No policyTypes and egress rules: the API default is [Ingress, Egress],
/// so the pod's ingress is isolated too (it has no ingress rule).
fn untyped_policy_with_egress_rules_isolates_both(case: Case) -> Case {
    case.policy(
        Policy::untyped("x", "a-to-y")
            .select(pod("a"))
            .to(namespaces(ns("y"))),
    )
    .expect(|r| {
        r.deny_to("x/a").deny_from("x/a").allow("x/a", "y/*");
    })
}

/// No policyTypes and no egress rules: Ingress only, egress stays open.
fn untyped_policy_without_egress_rules_is_ingress_only(case: Case) -> Case {
    case.policy(
        Policy::untyped("x", "a-from-b")
            .select(pod("a"))
            .from(pods(pod("b"))),
    )
    .expect(|r| {
        r.deny_to("x/a").allow("x/b", "x/a");
    })
}

/// policyTypes [Ingress, Egress] in one policy (upstream "should work with
/// Ingress, Egress specified together"): ingress from x/b only, egress on
/// TCP 80 only.
fn ingress_and_egress_in_one_policy(case: Case) -> Case {
    case.policy(
        Policy::ingress_egress("x", "a-both")
            .select(pod("a"))
            .from(pods(pod("b")))
            .egress_rule(Rule::default().port(number(80))),
    )
    .expect(|r| {
        r.deny_to("x/a")
            .allow("x/b", "x/a")
            .deny_from("x/a")
            .expect_on("x/a", "*", "tcp/80", true);
    })
}

/// The client's egress policy denies what the server's ingress policy
/// allows (upstream "denying of egress traffic on the client side").
fn client_egress_deny_wins_over_server_ingress_allow(case: Case) -> Case {
    let from_x_a = || pods_in(ns("x"), pod("a"));
    case.policy(
        Policy::egress("x", "a-to-y-a")
            .select(pod("a"))
            .to(pods_in(ns("y"), pod("a"))),
    )
    .policy(
        Policy::ingress("y", "a-from-x-a")
            .select(pod("a"))
            .from(from_x_a()),
    )
    .policy(
        Policy::ingress("y", "b-from-x-a")
            .select(pod("b"))
            .from(from_x_a()),
    )
    .expect(|r| {
        r.deny_from("x/a").deny_to("y/a,y/b").allow("x/a", "y/a");
    })
}

/// Egress to namespaces NotIn [y] on the default namespace label.
fn egress_namespace_selector_not_in(case: Case) -> Case {
    case.policy(
        Policy::egress("x", "a-not-to-y")
            .select(pod("a"))
            .to(namespaces(expr(
                "kubernetes.io/metadata.name",
                Op::NotIn,
                &["y"],
            ))),
    )
    .expect(|r| {
        r.expect("x/a", "y/*", false);
    })
}

/// An empty podSelector peer: every pod of the policy's namespace, no other
/// (upstream "should deny ingress from pods on other namespaces").
fn empty_pod_selector_peer_is_own_namespace(case: Case) -> Case {
    case.policy(Policy::ingress("x", "from-own-namespace").from(pods(all())))
        .expect(|r| {
            r.deny_to("x/*").allow("x/*", "x/*");
        })
}

/// An empty namespaceSelector peer: every pod of every namespace, pods on
/// node-b included.
fn empty_namespace_selector_peer_is_every_pod(case: Case) -> Case {
    case.cluster(Cluster::xyz().on_node_b("z"))
        .policy(Policy::ingress("x", "from-every-pod").from(namespaces(all())))
        .before_probe(isolated("ingress", &X_PODS))
}

/// Policies whose podSelector matches no pod change nothing: the agent
/// ran (its FORWARD jump is there) and isolated no pod.
fn policy_selecting_no_pod_changes_nothing(case: Case) -> Case {
    case.policy(Policy::ingress_egress("x", "selects-nobody").select(pod("nobody")))
        .policy(Policy::ingress("y", "selects-nobody").select(expr("pod", Op::In, &["q", "r"])))
        .before_probe(|topo| {
            let save = topo
                .node_a
                .output("iptables-save", &["-t", "filter"])
                .unwrap();
            assert!(
                save.contains("-j IPWARDEN-FORWARD"),
                "the agent programmed nothing:\n{save}"
            );
            assert!(!save.contains("IPW-POD-FW-"), "a pod isolated:\n{save}");
        })
}

/// A policy selects pods of its own namespace only: y/a and z/a carry the
/// same labels as x/a and stay open.
fn policy_selects_pods_of_its_namespace_only(case: Case) -> Case {
    case.policy(Policy::ingress("x", "isolate-a").select(pod("a")))
        .expect(|r| {
            r.deny_to("x/a");
        })
}

/// A namespace without any policy is unrestricted, however isolated the others are.
fn namespace_without_policy_is_unrestricted(case: Case) -> Case {
    case.policy(Policy::ingress_egress("x", "deny-all"))
        .policy(Policy::ingress_egress("y", "deny-all"))
        .expect(|r| {
            r.deny_to("x/*,y/*").deny_from("x/*,y/*");
        })
}

/// hostNetwork and finished pods are skipped: x/h (hostNetwork, node-a's
/// addresses) is selected by x's default deny and stays reachable; x/old
/// (Succeeded, labelled pod=b, holding x/c's addresses) does not let x/c
/// into x/a; y/gone (Failed, holding y/b's addresses) does not isolate y/b.
fn host_network_and_finished_pods_are_skipped(case: Case) -> Case {
    let xyz = Cluster::xyz();
    let old = Pod::new("x", "old", Node::A, 0)
        .ips_of(xyz.pod("x/c"))
        .label("pod", "b")
        .phase("Succeeded");
    let gone = Pod::new("y", "gone", Node::A, 0)
        .ips_of(xyz.pod("y/b"))
        .phase("Failed");
    case.cluster(
        xyz.add_pod(Pod::host_network("x", "h", Node::A))
            .add_pod(old)
            .add_pod(gone),
    )
    .dual_stack()
    .policy(Policy::ingress("x", "deny-ingress"))
    .policy(
        Policy::ingress("x", "a-from-b")
            .select(pod("a"))
            .from(pods(pod("b"))),
    )
    .policy(Policy::ingress("y", "isolate-gone").select(pod("gone")))
    .expect(|r| {
        r.deny_to("x/a,x/b,x/c").allow("x/b", "x/a");
    })
}

/// Traffic from the node to its pods is always allowed, even into pods
/// isolated both ways.
fn node_to_pods_always_allowed(case: Case) -> Case {
    case.dual_stack()
        .policy(Policy::ingress_egress("x", "deny-all"))
        .policy(Policy::ingress_egress("y", "deny-all"))
        .policy(Policy::ingress_egress("z", "deny-all"))
        .expect(|r| {
            r.all(false);
        })
}

/// IPv6 probes obey the same policies as IPv4 ones.
fn dual_stack_ipv6_obeys_the_same_policy(case: Case) -> Case {
    case.dual_stack()
        .policy(
            Policy::ingress("x", "from-y-tcp-80-udp-81")
                .from(namespaces(ns("y")))
                .on(tcp(80))
                .on(udp(81)),
        )
        .policy(Policy::egress("x", "c-no-egress").select(pod("c")))
        .expect(|r| {
            r.deny_to("x/*")
                .expect_on("y/*", "x/*", "tcp/80", true)
                .expect_on("y/*", "x/*", "udp/81", true)
                .deny_from("x/c");
        })
}

/// Rules the API server would refuse (an invalid IPv4 and IPv6 CIDR,
/// endPort below port) are dropped and their policies' pods stay isolated
/// (fail closed), while the other policies still apply.
fn bad_rules_fail_closed_other_policies_apply(case: Case) -> Case {
    case.dual_stack()
        .policy(
            Policy::ingress("x", "a-bad-cidr")
                .select(pod("a"))
                .from(ip_block("10.244.1.300/24")),
        )
        .policy(
            Policy::ingress("x", "c-bad-v6-cidr")
                .select(pod("c"))
                .from(ip_block("fd00:10:244::/129")),
        )
        .policy(
            Policy::egress("x", "b-end-port-below-port")
                .select(pod("b"))
                .egress_rule(Rule::default().port(tcp(81).end(80))),
        )
        .policy(
            Policy::ingress("y", "a-from-z")
                .select(pod("a"))
                .from(namespaces(ns("z"))),
        )
        .expect(|r| {
            r.deny_to("x/a,x/c")
                .deny_from("x/b")
                .deny_to("y/a")
                .allow("z/*", "y/a");
        })
}

/// Egress to pods on node-b by namespace selector, IPv4 and IPv6.
fn egress_to_remote_node_pods(case: Case) -> Case {
    case.cluster(Cluster::xyz().on_node_b("z"))
        .dual_stack()
        .policy(
            Policy::egress("x", "a-to-z")
                .select(pod("a"))
                .to(namespaces(ns("z"))),
        )
        .expect(|r| {
            r.deny_from("x/a").allow("x/a", "z/*");
        })
}

/// Ingress from one pod on node-b (both selectors) into every pod of x.
fn ingress_from_remote_node_pod(case: Case) -> Case {
    case.cluster(Cluster::xyz().on_node_b("z"))
        .policy(Policy::ingress("x", "from-z-b").from(pods_in(ns("z"), pod("b"))))
        .expect(|r| {
            r.deny_to("x/*").allow("z/b", "x/*");
        })
}

/// Egress to node-b's pod CIDR except z/c.
fn ip_block_egress_to_remote_pod_cidr(case: Case) -> Case {
    case.cluster(Cluster::xyz().on_node_b("z"))
        .policy(
            Policy::egress("x", "a-to-node-b-pods-but-z-c")
                .select(pod("a"))
                .to(ip_block("10.244.2.0/24").except("10.244.2.32/32")),
        )
        .expect(|r| {
            r.deny_from("x/a").allow("x/a", "z/a,z/b");
        })
}

cases!(
    default_deny_ingress,
    default_deny_egress,
    default_deny_ingress_and_egress,
    default_deny_ingress_and_egress_routed,
    allow_all_ingress_empty_rule_wins_over_deny,
    allow_all_egress_empty_rule_wins_over_deny,
    ingress_pod_selector,
    ingress_pod_selector_routed,
    ingress_namespace_selector,
    peer_with_both_selectors_is_and,
    two_peers_are_or,
    match_expressions_in_and_not_in,
    match_expression_exists,
    match_expression_does_not_exist_selects_targets,
    ports_by_number,
    port_without_protocol_is_tcp,
    udp_rule_does_not_allow_tcp,
    protocol_without_port_allows_every_port,
    sctp_rule_does_not_allow_tcp_or_udp,
    end_port_ranges,
    named_port_ingress_resolved_on_each_target,
    named_port_udp,
    named_port_egress_resolved_on_each_peer,
    ip_block_ingress_with_except_v4,
    ip_block_egress_with_except_v6,
    several_policies_on_one_pod_are_a_union,
    egress_only_policy_types_leave_ingress_open,
    untyped_policy_with_egress_rules_isolates_both,
    untyped_policy_without_egress_rules_is_ingress_only,
    ingress_and_egress_in_one_policy,
    client_egress_deny_wins_over_server_ingress_allow,
    egress_namespace_selector_not_in,
    empty_pod_selector_peer_is_own_namespace,
    empty_namespace_selector_peer_is_every_pod,
    policy_selecting_no_pod_changes_nothing,
    policy_selects_pods_of_its_namespace_only,
    namespace_without_policy_is_unrestricted,
    host_network_and_finished_pods_are_skipped,
    node_to_pods_always_allowed,
    dual_stack_ipv6_obeys_the_same_policy,
    bad_rules_fail_closed_other_policies_apply,
    egress_to_remote_node_pods,
    ingress_from_remote_node_pod,
    ip_block_egress_to_remote_pod_cidr,
);

/// No privileges needed: every case's manifests parse with the agent's own
/// reader (every object kept) and its expectation names only cells of its
/// matrix.
#[test]
fn every_case_renders_manifests_the_agent_reads() {
    assert!(CASES.len() >= 30);
    for (name, case) in CASES {
        let case = case(Case::new(name));
        case.check_manifests();
        let matrix = case.matrix();
        assert!(matrix.cells().count() > 0, "{name}");
        assert!(
            matrix.traffic.iter().all(|t| t.proto != Proto::Sctp),
            "{name}: this host has no SCTP; SCTP cases go to vm_netpol_sctp.rs"
        );
    }
}

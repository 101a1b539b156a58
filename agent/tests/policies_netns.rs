//! The policy controller's chains and sets in a real netns: rules written
//! the way iptables-save prints them (a second apply writes nothing), an
//! edit rewrites only what it changes, stale sets go once no chain uses
//! them, and the service chain and the policy chains share INPUT without
//! pushing each other around.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Barrier, Mutex, RwLock, RwLockReadGuard,
    },
};

#[path = "support/kernel_text.rs"]
mod kernel_text;
use ipwarden::{
    cluster::{manifests, HostInfo, Snapshot},
    controllers::{
        policies::{self, PolicyState},
        services,
    },
    kernel::{ipset::IpsetClient, iptables},
    netns::{privileged, NetNs},
    reconcile::{policies as reconcile_policies, services_owner},
    store::SetStore,
};
use kernel_text::{assert_wrote_nothing, kernel_text, output};

const SERVICES: &str = include_str!("fixtures/services/cluster.yaml");

fn snapshot(yaml: &str) -> Snapshot {
    let mut loaded = manifests::Loaded::default();
    manifests::parse_text(Path::new("case.yaml"), yaml, &mut loaded);
    assert!(loaded.problems.is_empty(), "{:?}", loaded.problems);
    let host = HostInfo {
        node_name: "node-a".into(),
        local_addresses: vec!["192.168.56.10".parse().unwrap()],
    };
    Snapshot::from_objects(loaded.objects, host)
}

const PODS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {ns: x}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec: {nodeName: node-a, containers: [{name: c, ports: [{name: serve-80-tcp, containerPort: 80}]}]}
status: {phase: Running, podIP: 10.244.1.2, podIPs: [{ip: 10.244.1.2}, {ip: "fd00:10:244:1::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {pod: b}}
spec: {nodeName: node-a, containers: [{name: c}]}
status: {phase: Running, podIP: 10.244.1.3}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {pod: c}}
spec: {nodeName: node-b, containers: [{name: c}]}
status: {phase: Running, podIP: 10.244.2.2}
"#;

fn policy(from_label: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: allow, namespace: x}}
spec:
  podSelector: {{matchLabels: {{pod: a}}}}
  policyTypes: [Ingress, Egress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{pod: {from_label}}}}}}}, {{ipBlock: {{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}}}}]
    ports: [{{port: serve-80-tcp}}, {{protocol: UDP, port: 53, endPort: 60}}, {{protocol: SCTP, port: 9}}]
  egress:
  - to: [{{namespaceSelector: {{}}}}, {{ipBlock: {{cidr: "::/0"}}}}]
"#
    )
}

fn desired(yaml: &str) -> PolicyState {
    let st = policies::desired(&snapshot(yaml), &policies::Options::default());
    assert!(st.problems.is_empty(), "{:?}", st.problems);
    st
}

/// What an owner's last apply verified is kept once per process and
/// owner, so a test that relies on it (`a_periodic_no_op_sync_...`) runs
/// alone; the others, which only read more when it is not theirs, share.
static VERIFIED: RwLock<()> = RwLock::new(());

fn sharing_the_owner() -> RwLockReadGuard<'static, ()> {
    VERIFIED.read().unwrap_or_else(|e| e.into_inner())
}

fn store() -> SetStore {
    let store = SetStore::new(IpsetClient::new().unwrap());
    store
        .register(reconcile_policies::policies_owner())
        .unwrap();
    store
}

#[test]
fn policy_rules_are_canonical_and_a_second_apply_writes_nothing() {
    if !privileged("policy_rules_are_canonical_and_a_second_apply_writes_nothing") {
        return;
    }
    let _shared = sharing_the_owner();
    let ns = NetNs::new("ipw-pol").unwrap();
    let state = desired(&format!("{PODS}{}", policy("b")));
    ns.run(|| {
        let store = store();
        let first = reconcile_policies::apply(&store, &state).unwrap();
        assert!(first.sets.as_ref().unwrap().changed());
        assert!(!first.chains_written.is_empty());
        for plan in &state.iptables {
            let saved = iptables::read_table(plan.family, plan.table).unwrap();
            let (script, _) = iptables::script(plan, &saved);
            assert_eq!(
                script, None,
                "{:?}: iptables-save prints our rules differently",
                plan.family
            );
        }
        // The kernel's word, not only ours: nft numbers every rule it
        // adds, so a rule or chain rewritten shows new handles.
        let rules = || output(&ns, "nft", &["-a", "list", "ruleset"]);
        let before = rules();
        let second = reconcile_policies::apply(&store, &state).unwrap();
        assert!(!second.sets.as_ref().unwrap().changed(), "{second:?}");
        assert!(second.chains_written.is_empty(), "{second:?}");
        assert_eq!(rules(), before, "the second apply rewrote a rule");
    })
    .unwrap();
    // What the tools nobody here wrote say.
    let save = output(&ns, "iptables-save", &["-t", "filter"]);
    assert!(
        save.contains("-A FORWARD -m comment --comment \"ipwarden:policies\" -j IPWARDEN-FORWARD"),
        "{save}"
    );
    assert!(
        save.contains("-A IPW-TO-POD-2 -d 10.244.1.2/32 -g IPW-POD-FW-"),
        "{save}"
    );
    assert!(
        save.contains("-j REJECT --reject-with icmp-port-unreachable"),
        "{save}"
    );
    let save6 = output(&ns, "ip6tables-save", &["-t", "filter"]);
    assert!(
        save6.contains("-A IPW-TO-POD-2 -d fd00:10:244:1::2/128 -g IPW-POD-FW-"),
        "{save6}"
    );
    let sets = output(&ns, "ipset", &["list", "-n"]);
    assert!(sets.lines().any(|l| l.starts_with("IPW-SRC-")), "{sets}");
    assert!(
        sets.lines().any(|l| l.starts_with("inet6:IPW-DST-")),
        "{sets}"
    );
    let all = output(&ns, "ipset", &["save"]);
    assert!(
        all.contains("add IPW-GUARDED-INGRESS 10.244.1.2\n"),
        "x/a is in the set the top chains match:\n{all}"
    );
    assert!(
        all.contains(" 10.244.1.3\n"),
        "x/b is the allowed peer:\n{all}"
    );
    assert!(all.contains(" 10.1.0.0/16 nomatch\n"), "{all}");
    assert!(
        all.contains(" 10.244.1.2,tcp:80\n"),
        "the named port resolved on x/a:\n{all}"
    );
}

#[test]
fn an_edit_changes_members_and_stale_sets_go_after_their_chains() {
    if !privileged("an_edit_changes_members_and_stale_sets_go_after_their_chains") {
        return;
    }
    let _shared = sharing_the_owner();
    let ns = NetNs::new("ipw-pol").unwrap();
    let with_b = desired(&format!("{PODS}{}", policy("b")));
    let with_c = desired(&format!("{PODS}{}", policy("c")));
    let without = desired(PODS);
    ns.run(|| {
        let store = store();
        reconcile_policies::apply(&store, &with_b).unwrap();
        let edit = reconcile_policies::apply(&store, &with_c).unwrap();
        let sets = edit.sets.unwrap();
        assert_eq!(
            (sets.executed.members_added, sets.executed.members_deleted),
            (1, 1),
            "x/b out, x/c in"
        );
        assert!(
            edit.chains_written.is_empty(),
            "a peer change is a set change: {:?}",
            edit.chains_written
        );
        // The kernel's word: x/c's address came into the source set and
        // x/b's went.
        let saved = output(&ns, "ipset", &["save"]);
        let src: Vec<&str> = saved
            .lines()
            .filter(|l| l.starts_with("add IPW-SRC-"))
            .collect();
        assert!(src.iter().any(|l| l.ends_with(" 10.244.2.2")), "{saved}");
        assert!(!src.iter().any(|l| l.ends_with(" 10.244.1.3")), "{saved}");
        let removed = reconcile_policies::apply(&store, &without).unwrap();
        assert!(!removed.chains_deleted.is_empty());
        assert!(
            !removed
                .sets
                .as_ref()
                .unwrap()
                .executed
                .destroy_deferred
                .is_empty(),
            "sets in use are kept until the chains are gone"
        );
        assert!(
            removed.sets.as_ref().unwrap().verified,
            "deferred destroys are expected"
        );
        assert!(!removed.sets_destroyed.is_empty());
    })
    .unwrap();
    let sets = output(&ns, "ipset", &["list", "-n"]);
    assert_eq!(sets.trim(), "", "nothing left: {sets}");
    // No pod or policy chain, no jump to one and no match on a policy set
    // is left (the base chains stay, with their own rules, as does the
    // chain every pod chain starts with).
    let common = policies::names::CHAIN_POD_COMMON;
    let base =
        |l: &str| l.starts_with(&format!(":{common} ")) || l.starts_with(&format!("-A {common} "));
    for save in ["iptables-save", "ip6tables-save"] {
        let rules = output(&ns, save, &["-t", "filter"]);
        let left: Vec<&str> = rules
            .lines()
            .filter(|l| l.contains("IPW-") && !base(l))
            .collect();
        assert!(left.is_empty(), "{save}: rules left: {left:#?}");
    }
}

#[test]
fn service_and_policy_chains_share_input_without_moving_each_other() {
    if !privileged("service_and_policy_chains_share_input_without_moving_each_other") {
        return;
    }
    let _shared = sharing_the_owner();
    let ns = NetNs::new("ipw-pol").unwrap();
    let policy_state = desired(&format!("{PODS}{}", policy("b")));
    let service_state = services::desired_with(&snapshot(SERVICES), &services::Options::default());
    ns.run(|| {
        let store = store();
        store.register(services_owner()).unwrap();
        store.apply("services", service_state.sets.clone()).unwrap();
        let filters = || {
            service_state
                .iptables
                .iter()
                .filter(|p| p.table == ipwarden::desired::Table::Filter)
        };
        let input = || {
            let save = output(&ns, "iptables-save", &["-t", "filter"]);
            let rules = save.lines().filter(|l| l.starts_with("-A INPUT"));
            rules.map(str::to_string).collect::<Vec<_>>()
        };
        let mut printed = Vec::new();
        for round in 0..2 {
            let mut written = 0;
            for plan in filters() {
                written += iptables::apply(plan).unwrap().changes.jumps_rewritten.len();
            }
            let policies = reconcile_policies::apply(&store, &policy_state).unwrap();
            written += policies.chains_written.len() + policies.jumps_rewritten.len();
            if round == 1 {
                assert_eq!(written, 0, "the second round finds everything in place");
            }
            printed.push(input());
        }
        assert_eq!(printed[0], printed[1], "INPUT moved in the second round");
    })
    .unwrap();
    let save = output(&ns, "iptables-save", &["-t", "filter"]);
    let input: Vec<&str> = save.lines().filter(|l| l.starts_with("-A INPUT")).collect();
    assert_eq!(input.len(), 2, "{save}");
    assert!(input.iter().any(|l| l.contains("IPWARDEN-SERVICES")));
    assert!(input.iter().any(|l| l.contains("IPWARDEN-INPUT")));
}

#[test]
fn the_allow_mark_is_first_and_the_service_chain_below_the_policy_jump_whichever_owner_writes_first(
) {
    if !privileged("the_allow_mark_is_first_and_the_service_chain_below_the_policy_jump") {
        return;
    }
    let _shared = sharing_the_owner();
    let policy_state = desired(&format!("{PODS}{}", policy("b")));
    let bpf = Some(services::BpfRules {
        mode: ipwarden_common::Mode::Allow,
        mark: 0x40_0000,
    });
    let web = r#"
apiVersion: v1
kind: Service
metadata: {namespace: x, name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP}]
"#;
    let service_state = services::desired_with(
        &snapshot(web),
        &services::Options {
            bpf,
            ..Default::default()
        },
    );
    // A pass applies the service chains, then the policy chains; an agent
    // whose policy controller started first (or an older build's order,
    // the mark below the policy jump) must end the same way.
    for services_first in [true, false] {
        let ns = NetNs::new("ipw-pol").unwrap();
        ns.run(|| {
            let store = store();
            store.register(services_owner()).unwrap();
            store.apply("services", service_state.sets.clone()).unwrap();
            let services = || {
                service_state
                    .iptables
                    .iter()
                    .filter(|p| p.table == ipwarden::desired::Table::Filter)
                    .map(|plan| iptables::apply(plan).unwrap().changes.jumps_rewritten.len())
                    .sum::<usize>()
            };
            let policies = || {
                let p = reconcile_policies::apply(&store, &policy_state).unwrap();
                p.chains_written.len() + p.jumps_rewritten.len()
            };
            for round in 0..3 {
                let mut written = 0;
                if services_first {
                    written += services();
                }
                written += policies();
                if !services_first {
                    written += services();
                }
                if round > 0 {
                    assert_eq!(written, 0, "settled in one round (round {round})");
                }
            }
        })
        .unwrap();
        let save = output(&ns, "iptables-save", &["-t", "filter"]);
        let input: Vec<String> = save
            .lines()
            .filter(|l| l.starts_with("-A INPUT"))
            .map(str::to_owned)
            .collect();
        // Service traffic the tc program marked meets one rule; the
        // service chain's own ACCEPTs stay below the policy chain's egress
        // rules for local pods.
        assert_eq!(
            input_order(&input),
            [
                "mark ACCEPT",
                "policy jump",
                "checked mark ACCEPT",
                "services jump"
            ],
            "{save}"
        );
        // The kernel's word that a further pass of either owner, in either
        // order, writes nothing: every rule keeps its nft handle.
        let handles = || {
            output(
                &ns,
                "nft",
                &["-a", "list", "chain", "ip", "filter", "INPUT"],
            )
        };
        let before = handles();
        ns.run(|| {
            let store = store();
            store.register(services_owner()).unwrap();
            for plan in service_state
                .iptables
                .iter()
                .filter(|p| p.table == ipwarden::desired::Table::Filter)
            {
                iptables::apply(plan).unwrap();
            }
            reconcile_policies::apply(&store, &policy_state).unwrap();
        })
        .unwrap();
        assert_eq!(handles(), before);
        assert!(before.contains("# handle"), "{before}");
    }
}

/// What each of INPUT's rules is, in order.
fn input_order(input: &[String]) -> Vec<&'static str> {
    input
        .iter()
        .map(|l| {
            if l.contains("-j IPWARDEN-INPUT") {
                "policy jump"
            } else if l.contains("--mark 0x400000/0x400000") && l.ends_with("-j ACCEPT") {
                "mark ACCEPT"
            } else if l.contains("--mark 0x800000/0x800000") && l.ends_with("-j ACCEPT") {
                "checked mark ACCEPT"
            } else if l.contains("-j IPWARDEN-SERVICES") {
                "services jump"
            } else {
                "other"
            }
        })
        .collect()
}

/// One iptables apply at a time in the process: the service controller's
/// filter plans (allow mode, so INPUT's order matters) and the policy
/// controller's apply, each on its own thread as in the agent, started
/// together after INPUT is emptied, so both have jumps to write in every
/// round. A script rendered from a save the other thread has since changed
/// puts a jump at a stale position; iptables-save after each round says
/// whether that happened.
#[test]
fn concurrent_service_and_policy_applies_keep_input_in_order() {
    if !privileged("concurrent_service_and_policy_applies_keep_input_in_order") {
        return;
    }
    let _shared = sharing_the_owner();
    const ROUNDS: usize = 100;
    let policy_state = desired(&format!("{PODS}{}", policy("b")));
    let web = r#"
apiVersion: v1
kind: Service
metadata: {namespace: x, name: web}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, protocol: TCP}]
"#;
    let service_state = services::desired_with(
        &snapshot(web),
        &services::Options {
            bpf: Some(services::BpfRules {
                mode: ipwarden_common::Mode::Allow,
                mark: 0x40_0000,
            }),
            ..Default::default()
        },
    );
    let ns = NetNs::new("ipw-pol").unwrap();
    let input_rules = || -> Vec<String> {
        output(&ns, "iptables-save", &["-t", "filter"])
            .lines()
            .filter(|l| l.starts_with("-A INPUT"))
            .map(str::to_owned)
            .collect()
    };
    // Each round: main empties INPUT, both threads apply, main reads INPUT.
    // Nothing in the threads panics (a panic would leave the others at a
    // barrier): errors and the first bad round are recorded, then all stop.
    let (start, done) = (Barrier::new(3), Barrier::new(3));
    let stop = AtomicBool::new(false);
    let errors = Mutex::new(Vec::<String>::new());
    let mut first_bad = None;
    ns.run(|| {
        let store = store();
        store.register(services_owner()).unwrap();
        store.apply("services", service_state.sets.clone()).unwrap();
        let each_round = |apply: &(dyn Fn() -> Result<(), String> + Sync)| loop {
            start.wait();
            if stop.load(Ordering::SeqCst) {
                break;
            }
            if let Err(e) = apply() {
                errors.lock().unwrap().push(e);
            }
            done.wait();
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                each_round(&|| {
                    for plan in service_state
                        .iptables
                        .iter()
                        .filter(|p| p.table == ipwarden::desired::Table::Filter)
                    {
                        iptables::apply(plan).map_err(|e| format!("services: {e}"))?;
                    }
                    Ok(())
                })
            });
            s.spawn(|| {
                each_round(&|| {
                    reconcile_policies::apply(&store, &policy_state)
                        .map(|_| ())
                        .map_err(|e| format!("policies: {e}"))
                })
            });
            for round in 0..ROUNDS {
                // Both owners find their INPUT jumps gone.
                output(&ns, "iptables", &["-w", "-F", "INPUT"]);
                start.wait();
                done.wait();
                let input = input_rules();
                let want = [
                    "mark ACCEPT",
                    "policy jump",
                    "checked mark ACCEPT",
                    "services jump",
                ];
                if input_order(&input) != want {
                    first_bad = Some(format!("round {round}:\n{}", input.join("\n")));
                }
                if first_bad.is_some() || !errors.lock().unwrap().is_empty() {
                    break;
                }
            }
            stop.store(true, Ordering::SeqCst);
            start.wait();
        });
    })
    .unwrap();
    assert_eq!(errors.into_inner().unwrap(), Vec::<String>::new());
    assert_eq!(
        first_bad, None,
        "INPUT as iptables-save prints it, out of order"
    );
    // Settled: one more sequential pass leaves the table as it was.
    let before = output(&ns, "iptables-save", &["-t", "filter"]);
    ns.run(|| {
        let store = store();
        store.register(services_owner()).unwrap();
        for plan in service_state
            .iptables
            .iter()
            .filter(|p| p.table == ipwarden::desired::Table::Filter)
        {
            iptables::apply(plan).unwrap();
        }
        reconcile_policies::apply(&store, &policy_state).unwrap();
    })
    .unwrap();
    let after = output(&ns, "iptables-save", &["-t", "filter"]);
    let rules = |save: &str| -> Vec<String> {
        save.lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(rules(&before), rules(&after));
}

#[test]
fn partial_syncs_leave_exactly_what_a_full_sync_writes() {
    if !privileged("partial_syncs_leave_exactly_what_a_full_sync_writes") {
        return;
    }
    let _shared = sharing_the_owner();
    use ipwarden::{
        controllers::policies::incremental::PolicyChanges,
        reconcile::{dataplane::RealDataplane, policies::PolicySync, schedule::SyncKind},
    };
    let base = format!("{PODS}{}", policy("b"));
    // A new local pod the policy isolates, and the remote pod becoming a peer.
    let added = format!(
        "{base}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: d, namespace: x, labels: {{pod: a}}}}\n\
         spec: {{nodeName: node-a, containers: [{{name: c}}]}}\n\
         status: {{phase: Running, podIP: 10.244.1.9}}\n"
    );
    let relabelled = added.replace(
        "{name: c, namespace: x, labels: {pod: c}}",
        "{name: c, namespace: x, labels: {pod: b}}",
    );
    assert_ne!(relabelled, added);
    let pod = |name: &str| PolicyChanges {
        pods: [("x".to_string(), name.to_string())].into(),
        ..PolicyChanges::default()
    };
    let steps = [
        (added.clone(), pod("d")),
        (relabelled, pod("c")),
        (added, pod("c")),
        (base, pod("d")),
    ];
    let opts = policies::Options::default();
    let fresh = NetNs::new("ipw-pol-full").unwrap();
    let ns = NetNs::new("ipw-pol-part").unwrap();
    let partial_store = ns.run(store).unwrap();
    let mut sync = ns
        .run(|| {
            PolicySync::new(
                RealDataplane::connect(partial_store.clone()).unwrap(),
                opts.clone(),
            )
        })
        .unwrap();
    let first = snapshot(&format!("{PODS}{}", policy("b")));
    ns.run(|| sync.sync(SyncKind::Full, &first, &PolicyChanges::default()))
        .unwrap()
        .unwrap();
    for (i, (yaml, changes)) in steps.iter().enumerate() {
        let snap = snapshot(yaml);
        let (_, report) = ns
            .run(|| sync.sync(SyncKind::Partial, &snap, changes))
            .unwrap()
            .unwrap();
        if i == 0 {
            // Its chain, and the dispatch buckets of its address (the first
            // pod there).
            assert_eq!(report.chains_written.len(), 3, "{report:?}");
            assert!(report.chains_written[0].contains("IPW-POD-FW-"));
            assert_eq!(
                report.chains_written[1..],
                ["filter/V4/IPW-TO-POD-9", "filter/V4/IPW-FROM-POD-9"]
            );
        }
        if i == 1 {
            assert!(report.chains_written.is_empty(), "{report:?}");
            assert!(report.sets.as_ref().unwrap().executed.members_added > 0);
        }
        // The same cluster written whole into a fresh netns.
        let state = desired(yaml);
        fresh
            .run(|| {
                let store = store();
                reconcile_policies::apply(&store, &state).unwrap();
            })
            .unwrap();
        assert_eq!(kernel_text(&ns), kernel_text(&fresh), "after step {i}");
        // And a full sync of the partial netns finds nothing to do.
        let again = ns
            .run(|| reconcile_policies::apply(&partial_store, &state).unwrap())
            .unwrap();
        assert_wrote_nothing(&again, i);
    }
}

/// A periodic full sync of an unchanged cluster renders no chain while
/// nothing committed to the tables since its last verified apply (the
/// nf_tables generation), yet every drift is repaired: a pod chain
/// flushed, a top-chain jump or the built-in jump deleted (each
/// moves the generation, so the chains are rendered, read and rewritten),
/// a set member deleted (the sets are read back every time).
#[test]
fn a_periodic_no_op_sync_renders_no_chain_and_still_repairs_drift() {
    if !privileged("a_periodic_no_op_sync_renders_no_chain_and_still_repairs_drift") {
        return;
    }
    let _alone = VERIFIED.write().unwrap_or_else(|e| e.into_inner());
    use ipwarden::{
        controllers::policies::incremental::PolicyChanges,
        reconcile::{
            dataplane::RealDataplane,
            policies::PolicySync,
            schedule::{FullReason, SyncKind},
        },
    };
    let ns = NetNs::new("ipw-pol-noop").unwrap();
    let store = ns.run(store).unwrap();
    let mut sync = ns
        .run(|| {
            PolicySync::new(
                RealDataplane::connect(store.clone()).unwrap(),
                policies::Options::default(),
            )
        })
        .unwrap();
    let snap = snapshot(&format!("{PODS}{}", policy("b")));
    let none = PolicyChanges::default();
    let mut full = |reason| {
        sync.set_full_reason(Some(reason));
        ns.run(|| sync.sync(SyncKind::Full, &snap, &none))
            .unwrap()
            .unwrap()
    };
    let (first, _) = full(FullReason::Start);
    assert!(!first.iptables.is_empty());
    let programmed = kernel_text(&ns);
    let (noop, report) = full(FullReason::Period);
    assert!(noop.iptables.is_empty(), "chains rendered: {report:?}");
    assert_wrote_nothing(&report, 0);

    let save = output(&ns, "iptables-save", &["-t", "filter"]);
    let pod_chain = save
        .lines()
        .find_map(|l| l.strip_prefix(":IPW-POD-FW-"))
        .and_then(|l| l.split(' ').next())
        .map(|h| format!("IPW-POD-FW-{h}"))
        .expect("a pod chain");
    let member = output(&ns, "ipset", &["save"])
        .lines()
        .find(|l| l.starts_with("add IPW-SRC-") && l.ends_with(" 10.244.1.3"))
        .map(|l| l.split(' ').skip(1).map(str::to_owned).collect::<Vec<_>>())
        .expect("x/b in a source set");
    let drifts: [(&str, &str, Vec<&str>); 5] = [
        ("pod chain flushed", "iptables", vec!["-F", &pod_chain]),
        (
            "top jump deleted",
            "iptables",
            vec!["-D", "IPWARDEN-FORWARD", "1"],
        ),
        (
            "v6 chain flushed",
            "ip6tables",
            vec!["-F", "IPWARDEN-FORWARD"],
        ),
        (
            "built-in jump deleted",
            "iptables",
            vec!["-D", "FORWARD", "1"],
        ),
        (
            "member deleted",
            "ipset",
            vec!["del", &member[0], &member[1]],
        ),
    ];
    for (what, cmd, args) in drifts {
        output(&ns, cmd, &args);
        assert_ne!(kernel_text(&ns), programmed, "{what}: no drift");
        let (_, repair) = full(FullReason::Period);
        assert_eq!(
            kernel_text(&ns),
            programmed,
            "{what}: not repaired ({repair:?})"
        );
        let (again, report) = full(FullReason::Period);
        assert!(again.iptables.is_empty(), "{what}: chains rendered again");
        assert_wrote_nothing(&report, 1);
    }
}

//! The iptables applier against real iptables in throw-away namespaces.
//! Oracle: `iptables-save` / `ip6tables-save`.

use ipwarden::{
    desired::{Chain, Family, Jump, Ownership, Table, TablePlan},
    kernel::iptables::{self, IptablesError, ReadBack},
    netns::{privileged, NetNs},
};

const TAG: &str = "ipwarden:services";

fn plan(family: Family, rules: &[&str]) -> TablePlan {
    let reject = match family {
        Family::V4 => "-j REJECT --reject-with icmp-port-unreachable",
        Family::V6 => "-j REJECT --reject-with icmp6-port-unreachable",
    };
    let mut chain_rules: Vec<String> = rules.iter().map(|r| r.to_string()).collect();
    chain_rules.push(reject.to_string());
    TablePlan {
        family,
        table: Table::Filter,
        owns: vec![Ownership::Prefix("IPWARDEN-".into())],
        tag: TAG.into(),
        chains: vec![Chain {
            name: "IPWARDEN-SERVICES".into(),
            rules: chain_rules,
        }],
        jumps: vec![Jump::new(
            "INPUT",
            format!("-m comment --comment \"{TAG}\" -j IPWARDEN-SERVICES"),
        )],
    }
}

/// The table as iptables-save prints it, without comments and counters.
fn save(ns: &NetNs, family: Family) -> Vec<String> {
    let cmd = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    ns.output(cmd, &["-t", "filter"])
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap().to_string())
        .collect()
}

/// Lines that are not ours: other programs' chains and rules, in order.
fn foreign(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| !l.contains("IPWARDEN-"))
        .cloned()
        .collect()
}

fn add_foreign_rules(ns: &NetNs, family: Family) {
    let ipt = match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    };
    let src = match family {
        Family::V4 => "192.0.2.7",
        Family::V6 => "2001:db8::7",
    };
    for args in [
        vec!["-N", "ISTIO-INBOUND"],
        vec![
            "-A",
            "ISTIO-INBOUND",
            "-p",
            "tcp",
            "--dport",
            "15008",
            "-j",
            "RETURN",
        ],
        vec!["-A", "INPUT", "-s", src, "-j", "ISTIO-INBOUND"],
        vec!["-A", "INPUT", "-p", "tcp", "--dport", "22", "-j", "ACCEPT"],
    ] {
        ns.output(ipt, &args).unwrap();
    }
}

fn in_ns<T: Send>(ns: &NetNs, f: impl FnOnce() -> T + Send) -> T {
    ns.run(f).unwrap()
}

#[test]
fn applier_owns_its_chains_and_leaves_foreign_rules_alone() {
    if !privileged("applier_owns_its_chains_and_leaves_foreign_rules_alone") {
        return;
    }
    for family in [Family::V4, Family::V6] {
        let ns = NetNs::new("ipw-ipt").unwrap();
        add_foreign_rules(&ns, family);
        let before = save(&ns, family);

        let first = plan(family, &["-p tcp -m tcp --dport 80 -j ACCEPT"]);
        let report = in_ns(&ns, || iptables::apply(&first)).unwrap();
        assert_eq!(report.changes.chains_written, ["IPWARDEN-SERVICES"]);
        assert_eq!(report.changes.jumps_rewritten, ["INPUT"]);
        assert!(report.canonical, "{family:?}: plan text is not canonical");

        let after = save(&ns, family);
        assert_eq!(
            foreign(&after),
            foreign(&before),
            "{family:?}: foreign rules changed"
        );
        let input: Vec<&String> = after.iter().filter(|l| l.starts_with("-A INPUT")).collect();
        assert_eq!(
            input[0],
            &format!("-A INPUT -m comment --comment \"{TAG}\" -j IPWARDEN-SERVICES"),
            "{family:?}: our jump is not first"
        );
        let ours: Vec<&String> = after
            .iter()
            .filter(|l| l.starts_with("-A IPWARDEN-SERVICES"))
            .collect();
        assert_eq!(ours.len(), 2);
        assert_eq!(
            ours[0],
            "-A IPWARDEN-SERVICES -p tcp -m tcp --dport 80 -j ACCEPT"
        );

        // Same plan again: nothing to write.
        let again = in_ns(&ns, || iptables::apply(&first)).unwrap();
        assert!(again.changes.is_empty(), "{family:?}: {:?}", again.changes);
        assert_eq!(save(&ns, family), after);

        // Another program inserts above us: the jump moves back to the top,
        // the other rule stays.
        let ipt = if family == Family::V4 {
            "iptables"
        } else {
            "ip6tables"
        };
        ns.output(
            ipt,
            &[
                "-I", "INPUT", "1", "-p", "udp", "--dport", "53", "-j", "ACCEPT",
            ],
        )
        .unwrap();
        let moved = in_ns(&ns, || iptables::apply(&first)).unwrap();
        assert_eq!(moved.changes.jumps_rewritten, ["INPUT"]);
        let input: Vec<String> = save(&ns, family)
            .into_iter()
            .filter(|l| l.starts_with("-A INPUT"))
            .collect();
        assert!(input[0].contains("IPWARDEN-SERVICES"));
        assert_eq!(input[1], "-A INPUT -p udp -m udp --dport 53 -j ACCEPT");

        // A changed chain is rewritten, the jump left alone.
        let second = plan(family, &["-p tcp -m tcp --dport 443 -j ACCEPT"]);
        let report = in_ns(&ns, || iptables::apply(&second)).unwrap();
        assert_eq!(report.changes.chains_written, ["IPWARDEN-SERVICES"]);
        assert!(report.changes.jumps_rewritten.is_empty());

        // An empty plan removes everything of ours and nothing else.
        let mut empty = second.clone();
        empty.chains.clear();
        empty.jumps.clear();
        let report = in_ns(&ns, || iptables::apply(&empty)).unwrap();
        assert_eq!(report.changes.chains_deleted, ["IPWARDEN-SERVICES"]);
        let end = save(&ns, family);
        assert!(end.iter().all(|l| !l.contains("IPWARDEN")), "{end:?}");
        assert_eq!(
            foreign(&end)
                .into_iter()
                .filter(|l| !l.contains("--dport 53"))
                .collect::<Vec<_>>(),
            foreign(&before)
        );
    }
}

#[test]
fn a_bad_rule_fails_naming_the_line_and_changes_nothing() {
    if !privileged("a_bad_rule_fails_naming_the_line_and_changes_nothing") {
        return;
    }
    let ns = NetNs::new("ipw-ipt-bad").unwrap();
    add_foreign_rules(&ns, Family::V4);
    let before = save(&ns, Family::V4);
    let bad = plan(Family::V4, &["-p tcp -m tcp --dport 80 -j NO-SUCH-TARGET"]);
    let err = in_ns(&ns, || iptables::apply(&bad)).unwrap_err();
    match &err {
        // legacy names the input line, nft the missing chain: either way
        // the message points at the bad rule.
        IptablesError::Failed { .. } => {
            assert!(err.to_string().contains("NO-SUCH-TARGET"), "{err}")
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(
        save(&ns, Family::V4),
        before,
        "a failed restore must be atomic"
    );
}

#[test]
fn a_plan_cannot_name_a_chain_it_does_not_own() {
    let mut p = plan(Family::V4, &[]);
    p.chains[0].name = "KUBE-SERVICES".into();
    let err = iptables::apply(&p).unwrap_err();
    assert!(matches!(err, IptablesError::Plan(_)), "{err}");
    assert!(err.to_string().contains("KUBE-SERVICES"));
}

/// A no-op apply does not read the table when nothing changed since the
/// last one (nf_tables' ruleset generation says so); every change made
/// behind our back must still be seen and repaired by the next apply,
/// also when the writes are not read back (`ReadBack::UnlessAlone`).
#[test]
fn drift_after_a_no_op_apply_is_repaired() {
    if !privileged("drift_after_a_no_op_apply_is_repaired") {
        return;
    }
    for read_back in [ReadBack::Always, ReadBack::UnlessAlone] {
        drift_is_repaired(read_back);
    }
}

fn drift_is_repaired(read_back: ReadBack) {
    let drifts: [(&str, &[&str]); 6] = [
        ("rule deleted", &["-D", "IPWARDEN-SERVICES", "1"]),
        ("chain flushed", &["-F", "IPWARDEN-SERVICES"]),
        (
            "rule replaced",
            &["-R", "IPWARDEN-SERVICES", "1", "-p", "tcp", "-j", "DROP"],
        ),
        ("jump deleted", &["-D", "INPUT", "1"]),
        (
            "jump moved",
            &[
                "-I", "INPUT", "1", "-p", "tcp", "--dport", "22", "-j", "DROP",
            ],
        ),
        (
            "rule appended",
            &["-A", "IPWARDEN-SERVICES", "-j", "ACCEPT"],
        ),
    ];
    for family in [Family::V4, Family::V6] {
        let ipt = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let p = plan(family, &["-p tcp -m tcp --dport 80 -j ACCEPT"]);
        for (what, args) in drifts {
            let ns = NetNs::new("ipw-ipt-drift").unwrap();
            add_foreign_rules(&ns, family);
            in_ns(&ns, || iptables::apply_with(&p, read_back)).unwrap();
            let programmed = save(&ns, family);
            let noop = in_ns(&ns, || iptables::apply_with(&p, read_back)).unwrap();
            assert!(
                noop.changes.is_empty(),
                "{read_back:?} {family:?} {what}: {noop:?}"
            );

            ns.output(ipt, args).unwrap();
            assert_ne!(
                save(&ns, family),
                programmed,
                "{read_back:?} {family:?} {what}: no drift"
            );
            let repair = in_ns(&ns, || iptables::apply_with(&p, read_back)).unwrap();
            assert!(
                !repair.changes.is_empty(),
                "{read_back:?} {family:?} {what}: not seen"
            );
            let ours = |lines: Vec<String>| -> Vec<String> {
                lines
                    .into_iter()
                    .filter(|l| l.contains("IPWARDEN-"))
                    .collect()
            };
            assert_eq!(
                ours(save(&ns, family)),
                ours(programmed.clone()),
                "{read_back:?} {family:?} {what}: not repaired"
            );
            let again = in_ns(&ns, || iptables::apply_with(&p, read_back)).unwrap();
            assert!(
                again.changes.is_empty(),
                "{read_back:?} {family:?} {what}: {again:?}"
            );
        }
    }
}

/// A write that was the only commit since its read is not read back
/// under `ReadBack::UnlessAlone`, so a plan in a form iptables-save
/// prints differently goes unnoticed until something else commits; under
/// `Always` the read-back says so at once. (Here `--dport` without `-m
/// tcp`, which iptables-save prints with it.)
#[test]
fn a_restore_alone_is_not_read_back_unless_asked() {
    if !privileged("a_restore_alone_is_not_read_back_unless_asked") {
        return;
    }
    // An owner of its own: what an owner verified is kept per process,
    // and the other tests here apply the same plan tag in parallel.
    let tag = "ipwarden:trust-test";
    let mut p = plan(Family::V4, &["-p tcp --dport 82 -j ACCEPT"]);
    p.tag = tag.into();
    p.jumps = vec![Jump::new(
        "INPUT",
        format!("-m comment --comment \"{tag}\" -j IPWARDEN-SERVICES"),
    )];
    let ns = NetNs::new("ipw-ipt-trust").unwrap();
    let trusted = in_ns(&ns, || iptables::apply_with(&p, ReadBack::UnlessAlone)).unwrap();
    assert_eq!(trusted.changes.chains_written, ["IPWARDEN-SERVICES"]);
    assert!(trusted.canonical, "read back: {trusted:?}");
    // Recorded as verified: the same plan on the same generation reads
    // and writes nothing.
    let again = in_ns(&ns, || iptables::apply_with(&p, ReadBack::UnlessAlone)).unwrap();
    assert!(again.changes.is_empty(), "{again:?}");
    assert!(save(&ns, Family::V4)
        .contains(&"-A IPWARDEN-SERVICES -p tcp -m tcp --dport 82 -j ACCEPT".to_string()));
    // Another commit: the next apply reads, sees the other form, writes.
    ns.output("iptables", &["-N", "OTHER"]).unwrap();
    let read = in_ns(&ns, || iptables::apply(&p)).unwrap();
    assert_eq!(read.changes.chains_written, ["IPWARDEN-SERVICES"]);
    assert!(!read.canonical, "{read:?}");
}

/// What was verified in one namespace says nothing about another, even
/// one created later with the same plan and the same ruleset generation.
#[test]
fn a_new_namespace_is_written_even_with_a_plan_verified_elsewhere() {
    if !privileged("a_new_namespace_is_written_even_with_a_plan_verified_elsewhere") {
        return;
    }
    let p = plan(Family::V4, &["-p tcp -m tcp --dport 81 -j ACCEPT"]);
    for _ in 0..3 {
        let ns = NetNs::new("ipw-ipt-fresh").unwrap();
        let report = in_ns(&ns, || iptables::apply(&p)).unwrap();
        assert_eq!(report.changes.chains_written, ["IPWARDEN-SERVICES"]);
        assert_eq!(
            in_ns(&ns, || iptables::apply(&p)).unwrap().changes,
            Default::default()
        );
        drop(ns);
    }
}

/// A filter table with `chains` pod chains, each with two counting rules
/// whose counters are set (`iptables-restore -c`), plus a foreign
/// commented rule; IPv6 addresses for the v6 table.
fn counting_table(family: Family, chains: usize) -> String {
    let mut s = String::from("*filter\n");
    for i in 0..chains {
        s.push_str(&format!(":IPW-POD-FW-{i:05} - [0:0]\n"));
    }
    for i in 0..chains {
        let addr = match family {
            Family::V4 => format!("10.244.{}.{}/32", i / 250, i % 250 + 1),
            Family::V6 => format!("fd00::{:x}/128", i + 1),
        };
        let c = format!("IPW-POD-FW-{i:05}");
        s.push_str(&format!(
            "[{}:{}] -A {c} -d {addr} -m mark ! --mark 0x10000/0x10000 -m comment --comment \"ipwarden:denied ns-{}/p{} ingress\" -j DROP\n",
            i + 1, (i + 1) * 60, i % 3, i % 5
        ));
        s.push_str(&format!(
            "[{}:0] -A {c} -s {addr} -m comment --comment \"ipwarden:denied ns-{}/q egress\" -j DROP\n",
            i % 4, i % 2
        ));
    }
    s.push_str("[9:540] -A INPUT -m comment --comment \"kube-proxy: other\" -j ACCEPT\nCOMMIT\n");
    s
}

#[test]
fn comment_counters_equal_what_iptables_save_c_shows() {
    if !privileged("comment_counters_equal_what_iptables_save_c_shows") {
        return;
    }
    let ns = NetNs::new("ipw-counters").unwrap();
    for family in [Family::V4, Family::V6] {
        let restore = match family {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        };
        let mut child = ns
            .command(restore)
            .args(["-c"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(counting_table(family, 300).as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success());
        let prefix = "ipwarden:denied ";
        let (ours, saved) = in_ns(&ns, || {
            (
                iptables::comment_counters(family, Table::Filter, prefix).unwrap(),
                iptables::comment_counters_from_save(family, Table::Filter, prefix).unwrap(),
            )
        });
        // 3 x 5 ingress comments and 2 egress ones, each summed.
        assert_eq!(ours.len(), 17, "{family:?}: {ours:?}");
        assert_eq!(ours, saved, "{family:?}");
        // ip6tables-restore -c (1.8.9, nf_tables) leaves the counters at
        // 0, so only the v4 sums are known.
        if family == Family::V4 {
            let ingress: u64 = (1..=300).sum();
            let egress: u64 = (0..300).map(|i| i % 4).sum();
            assert_eq!(ours.values().sum::<u64>(), ingress + egress);
        }
    }
}

/// A plan of more than 2,000 rules in three levels: the top chain jumps
/// to every pod-like chain, each of those to a leaf. `odd` adds one rule
/// in a form iptables-save prints differently (`-m tcp` added).
fn large_plan(tag: &str, odd: bool) -> TablePlan {
    let leaves = 25;
    let mut chains = vec![Chain {
        name: "IPWARDEN-TOP".into(),
        rules: (0..250)
            .map(|i| format!("-d 10.1.{}.{}/32 -j IPWARDEN-P{i}", i / 200, i % 200 + 1))
            .collect(),
    }];
    for i in 0..250 {
        chains.push(Chain {
            name: format!("IPWARDEN-P{i}"),
            rules: (0..8)
                .map(|k| {
                    format!(
                        "-p tcp -m tcp --dport {} -j IPWARDEN-L{}",
                        1000 + k,
                        (i + k) % leaves
                    )
                })
                .collect(),
        });
    }
    for j in 0..leaves {
        let mut rules: Vec<String> = (0..3)
            .map(|k| format!("-s 10.2.{j}.{}/32 -j ACCEPT", k + 1))
            .collect();
        if odd && j == 0 {
            rules.push("-p tcp --dport 82 -j ACCEPT".into());
        }
        chains.push(Chain {
            name: format!("IPWARDEN-L{j}"),
            rules,
        });
    }
    TablePlan {
        family: Family::V4,
        table: Table::Filter,
        owns: vec![Ownership::Prefix("IPWARDEN-".into())],
        tag: tag.into(),
        chains,
        jumps: vec![Jump::new(
            "INPUT",
            format!("-m comment --comment \"{tag}\" -j IPWARDEN-TOP"),
        )],
    }
}

/// A first write this large is restored as two halves parsing at once
/// (kernel/iptables/split.rs): the table must end as the plan, with the
/// jump into it, and the two commits count as ours alone.
#[test]
fn a_large_first_write_in_two_halves_leaves_the_plan_and_is_trusted() {
    if !privileged("a_large_first_write_in_two_halves_leaves_the_plan_and_is_trusted") {
        return;
    }
    let tag = "ipwarden:split-test";
    let p = large_plan(tag, false);
    let ns = NetNs::new("ipw-ipt-split").unwrap();
    add_foreign_rules(&ns, Family::V4);
    let before = save(&ns, Family::V4);
    let report = in_ns(&ns, || iptables::apply(&p)).unwrap();
    assert_eq!(report.changes.chains_written.len(), p.chains.len());
    assert!(report.canonical, "read back differs: {report:?}");
    let after = save(&ns, Family::V4);
    let expected: Vec<String> = p
        .chains
        .iter()
        .flat_map(|c| c.rules.iter().map(move |r| format!("-A {} {r}", c.name)))
        .collect();
    let mut ours: Vec<String> = after
        .iter()
        .filter(|l| l.starts_with("-A IPWARDEN-"))
        .cloned()
        .collect();
    let mut want = expected.clone();
    ours.sort();
    want.sort();
    assert_eq!(ours.len(), 250 + 2000 + 75);
    assert_eq!(ours, want);
    assert!(after.contains(&format!(
        "-A INPUT -m comment --comment \"{tag}\" -j IPWARDEN-TOP"
    )));
    assert_eq!(foreign(&after), foreign(&before), "foreign rules changed");
    let again = in_ns(&ns, || iptables::apply(&p)).unwrap();
    assert!(again.changes.is_empty(), "{:?}", again.changes);

    // Not read back after the two commits when trusted: the odd rule's
    // form would show (as in a_restore_alone_is_not_read_back_unless_asked).
    let odd = large_plan("ipwarden:split-trust", true);
    let fresh = NetNs::new("ipw-ipt-split2").unwrap();
    let trusted = in_ns(&fresh, || iptables::apply_with(&odd, ReadBack::UnlessAlone)).unwrap();
    assert!(
        trusted.canonical,
        "read back: two commits not taken as ours alone"
    );
    let lines = save(&fresh, Family::V4);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("-A IPWARDEN-"))
            .count(),
        250 + 2000 + 76
    );
}

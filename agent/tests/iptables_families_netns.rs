//! Both families' filter tables applied at once (`iptables::apply_all_with`,
//! the policy controller's chains) in throw-away namespaces. Oracle:
//! `iptables-save` / `ip6tables-save`.

use ipwarden::{
    desired::{Chain, Family, Jump, Ownership, Table, TablePlan},
    kernel::iptables::{self, IptablesError, ReadBack, Report},
    netns::{privileged, NetNs},
};

/// A rule iptables-save prints with `-m tcp` added: seen only when the
/// table is read back after the write (`Report::canonical` false).
const ODD: &str = "-p tcp --dport 82 -j ACCEPT";

/// One chain of `rules` plus a chain of 2,250 rules when `large` (cut in
/// two restores on the nft backend: `split.rs`), jumped to from INPUT.
fn plan(family: Family, tag: &str, rules: &[&str], large: bool) -> TablePlan {
    let mut chains = vec![Chain {
        name: "IPWARDEN-TOP".into(),
        rules: rules.iter().map(|r| r.to_string()).collect(),
    }];
    if large {
        for i in 0..250 {
            chains[0].rules.push(format!(
                "-d 10.1.{}.{}/32 -j IPWARDEN-P{i}",
                i / 200,
                i % 200 + 1
            ));
            chains.push(Chain {
                name: format!("IPWARDEN-P{i}"),
                rules: (0..8)
                    .map(|k| format!("-p tcp -m tcp --dport {} -j ACCEPT", 1000 + k))
                    .collect(),
            });
        }
    }
    TablePlan {
        family,
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

/// Our `-A` lines in the family's filter table, without counters.
fn ours(ns: &NetNs, family: Family) -> Vec<String> {
    let cmd = match family {
        Family::V4 => "iptables-save",
        Family::V6 => "ip6tables-save",
    };
    ns.output(cmd, &["-t", "filter"])
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("-A IPWARDEN-"))
        .map(String::from)
        .collect()
}

fn apply_all(
    ns: &NetNs,
    plans: &[TablePlan],
    read_back: ReadBack,
) -> Vec<Result<Report, IptablesError>> {
    ns.run(|| iptables::apply_all_with(plans, read_back))
        .unwrap()
}

/// Three commits (the IPv4 table's two halves and the IPv6 restore) made
/// at once are judged ours alone together: neither table is read back
/// under `UnlessAlone` (the odd forms go unseen), both are recorded as
/// verified (the next apply reads and writes nothing), and under
/// `Always` both are read back.
#[test]
fn both_families_at_once_are_trusted_when_the_commits_are_ours_alone() {
    if !privileged("both_families_at_once_are_trusted_when_the_commits_are_ours_alone") {
        return;
    }
    // Owners of their own: what an owner verified is kept per process.
    let tag = "ipwarden:families-test";
    let plans = [
        plan(Family::V4, tag, &[ODD], true),
        plan(Family::V6, tag, &[ODD], false),
    ];
    let ns = NetNs::new("ipw-ipt-fam").unwrap();
    let first = apply_all(&ns, &plans, ReadBack::UnlessAlone);
    let [v4, v6] = [&first[0], &first[1]].map(|r| r.as_ref().unwrap());
    assert_eq!(v4.changes.chains_written.len(), 251);
    assert_eq!(v6.changes.chains_written, ["IPWARDEN-TOP"]);
    assert!(v4.canonical && v6.canonical, "read back: {first:?}");
    assert_eq!(ours(&ns, Family::V4).len(), 1 + 250 + 250 * 8);
    assert_eq!(
        ours(&ns, Family::V6),
        ["-A IPWARDEN-TOP -p tcp -m tcp --dport 82 -j ACCEPT"]
    );

    let again = apply_all(&ns, &plans, ReadBack::UnlessAlone);
    for result in &again {
        assert!(result.as_ref().unwrap().changes.is_empty(), "{again:?}");
    }

    let tag = "ipwarden:families-always";
    let plans = [
        plan(Family::V4, tag, &[ODD], true),
        plan(Family::V6, tag, &[ODD], false),
    ];
    let fresh = NetNs::new("ipw-ipt-fam2").unwrap();
    let read = apply_all(&fresh, &plans, ReadBack::Always);
    for result in &read {
        assert!(
            !result.as_ref().unwrap().canonical,
            "not read back: {read:?}"
        );
    }
}

/// A family whose restore fails fails alone: the other table is written
/// (and, its commits no longer known to be the only ones, read back),
/// the failed one is left as it was.
#[test]
fn a_failed_family_fails_alone_and_the_other_is_read_back() {
    if !privileged("a_failed_family_fails_alone_and_the_other_is_read_back") {
        return;
    }
    let tag = "ipwarden:families-fail";
    let plans = [
        plan(Family::V4, tag, &[ODD], false),
        plan(
            Family::V6,
            tag,
            &["-p tcp -m tcp --dport 99999 -j ACCEPT"],
            false,
        ),
    ];
    let ns = NetNs::new("ipw-ipt-famfail").unwrap();
    let results = apply_all(&ns, &plans, ReadBack::UnlessAlone);
    let v4 = results[0].as_ref().unwrap();
    assert_eq!(v4.changes.chains_written, ["IPWARDEN-TOP"]);
    assert!(!v4.canonical, "not read back after a failure: {v4:?}");
    assert_eq!(
        ours(&ns, Family::V4),
        ["-A IPWARDEN-TOP -p tcp -m tcp --dport 82 -j ACCEPT"]
    );
    let err = results[1].as_ref().unwrap_err();
    assert!(matches!(err, IptablesError::Failed { .. }), "{err}");
    assert!(ours(&ns, Family::V6).is_empty(), "a failed restore wrote");
}

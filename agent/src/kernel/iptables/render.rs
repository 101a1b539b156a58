//! The restore script: pure, so what will be written can be tested and
//! logged without a kernel.

use std::fmt::Write;

use super::SavedTable;
use crate::desired::TablePlan;

/// What a script changes, for reports and logs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Our chains created or rewritten.
    pub chains_written: Vec<String>,
    /// Our chains flushed and deleted because the plan no longer has them.
    pub chains_deleted: Vec<String>,
    /// Built-in chains whose block of our rules was replaced.
    pub jumps_rewritten: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.chains_written.is_empty()
            && self.chains_deleted.is_empty()
            && self.jumps_rewritten.is_empty()
    }
}

/// The `iptables-restore --noflush` input that turns `saved` into `plan`,
/// touching only the owner's chains and tagged rules; `None` when the table
/// already matches.
///
/// Order inside the script matters: chains are declared before the jumps
/// into them are inserted, and stale chains are deleted last, after the
/// rules that referenced them are gone. The whole script is one transaction.
pub fn script(plan: &TablePlan, saved: &SavedTable) -> (Option<String>, Changes) {
    let mut changes = Changes::default();
    let mut declare = String::new();
    let mut body = String::new();

    for chain in &plan.chains {
        if saved.rules(&chain.name) == Some(chain.rules.as_slice()) {
            continue;
        }
        // With --noflush, declaring a chain creates it or flushes it.
        let _ = writeln!(declare, ":{} - [0:0]", chain.name);
        for rule in &chain.rules {
            let _ = writeln!(body, "-A {} {}", chain.name, rule);
        }
        changes.chains_written.push(chain.name.clone());
    }

    let stale: Vec<&String> = saved
        .chains
        .keys()
        .filter(|name| plan.owns(name) && !plan.chains.iter().any(|c| &c.name == *name))
        .collect();
    for name in &stale {
        let _ = writeln!(declare, ":{name} - [0:0]");
        changes.chains_deleted.push((*name).clone());
    }

    // Built-in (not owned) chains that hold tagged rules now or should.
    let mut hosts: Vec<&str> = plan.jumps.iter().map(|j| j.from.as_str()).collect();
    for (name, rules) in &saved.chains {
        if !plan.owns(name) && rules.iter().any(|r| r.contains(&plan.tag)) {
            hosts.push(name);
        }
    }
    hosts.sort_unstable();
    hosts.dedup();
    for host in hosts {
        let wanted: Vec<&str> = plan
            .jumps
            .iter()
            .filter(|j| j.from == host)
            .map(|j| j.rule.as_str())
            .collect();
        let current = saved.rules(host).unwrap_or_default();
        let ours: Vec<&String> = current.iter().filter(|r| r.contains(&plan.tag)).collect();
        let in_place = jumps_in_place(current, &plan.tag, &wanted, plan.below_other_owners);
        if in_place {
            continue;
        }
        for rule in ours {
            let _ = writeln!(body, "-D {host} {rule}");
        }
        // An owner that ACCEPTs goes right below the other owners' rules at
        // the top of the chain (as they stand once ours are deleted); any
        // other goes first.
        let at = if plan.below_other_owners {
            1 + current
                .iter()
                .filter(|r| !r.contains(&plan.tag))
                .take_while(|r| r.contains(ANY_OWNER_TAG))
                .count()
        } else {
            1
        };
        for rule in wanted.iter().rev() {
            let _ = writeln!(body, "-I {host} {at} {rule}");
        }
        changes.jumps_rewritten.push(host.to_string());
    }

    for name in &stale {
        let _ = writeln!(body, "-X {name}");
    }

    if changes.is_empty() {
        return (None, changes);
    }
    let script = format!("*{}\n{declare}{body}COMMIT\n", plan.table);
    (Some(script), changes)
}

/// Tag prefix shared by every ipwarden owner's rules in built-in chains.
const ANY_OWNER_TAG: &str = "ipwarden:";

/// Are this owner's rules in `current` exactly `wanted`, in order, inside
/// the block of ipwarden rules at the top of the chain? Several owners
/// (services, policies) each keep their rules there; requiring each to be
/// first would make them push each other down forever. An owner that
/// ACCEPTs (`below`: the services owner, whose mark rule and service chain
/// accept) must also be the last in that block, so that no other owner's
/// rule (the policy chain's egress rules for local pods) is ever skipped
/// by its ACCEPT. The other owners insert at the top, above it, so this
/// settles at once.
fn jumps_in_place(current: &[String], tag: &str, wanted: &[&str], below: bool) -> bool {
    let top = current
        .iter()
        .take_while(|r| r.contains(ANY_OWNER_TAG))
        .count();
    let ours_on_top: Vec<&str> = current[..top]
        .iter()
        .filter(|r| r.contains(tag))
        .map(String::as_str)
        .collect();
    let ours_total = current.iter().filter(|r| r.contains(tag)).count();
    if ours_on_top != wanted || ours_total != wanted.len() {
        return false;
    }
    if below {
        let first = current[..top]
            .iter()
            .position(|r| r.contains(tag))
            .unwrap_or(top);
        return current[first..top].iter().all(|r| r.contains(tag));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Chain, Family, Jump, Ownership, Table};

    fn plan() -> TablePlan {
        TablePlan {
            family: Family::V4,
            table: Table::Filter,
            owns: vec![Ownership::Prefix("IPWARDEN-".into())],
            tag: "ipwarden:services".into(),
            chains: vec![Chain {
                name: "IPWARDEN-SERVICES".into(),
                rules: vec!["-p icmp -j ACCEPT".into(), "-j REJECT".into()],
            }],
            jumps: vec![Jump {
                from: "INPUT".into(),
                rule: "-m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES".into(),
            }],
            below_other_owners: false,
        }
    }

    #[test]
    fn empty_table_gets_chain_then_jump() {
        let (script, changes) = script(&plan(), &SavedTable::default());
        assert_eq!(
            script.unwrap(),
            "*filter\n:IPWARDEN-SERVICES - [0:0]\n-A IPWARDEN-SERVICES -p icmp -j ACCEPT\n\
             -A IPWARDEN-SERVICES -j REJECT\n\
             -I INPUT 1 -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES\nCOMMIT\n"
        );
        assert_eq!(changes.chains_written, ["IPWARDEN-SERVICES"]);
        assert_eq!(changes.jumps_rewritten, ["INPUT"]);
    }

    #[test]
    fn matching_table_needs_no_script() {
        let saved = SavedTable::parse(
            ":INPUT ACCEPT [0:0]\n:IPWARDEN-SERVICES - [0:0]\n\
             -A INPUT -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES\n\
             -A INPUT -j OTHER\n-A IPWARDEN-SERVICES -p icmp -j ACCEPT\n-A IPWARDEN-SERVICES -j REJECT\n",
        );
        assert_eq!(script(&plan(), &saved), (None, Changes::default()));
    }

    #[test]
    fn jump_pushed_down_by_another_program_is_moved_back_to_the_top() {
        let saved = SavedTable::parse(
            ":INPUT ACCEPT [0:0]\n:IPWARDEN-SERVICES - [0:0]\n-A INPUT -j OTHER\n\
             -A INPUT -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES\n\
             -A IPWARDEN-SERVICES -p icmp -j ACCEPT\n-A IPWARDEN-SERVICES -j REJECT\n",
        );
        let (script, changes) = script(&plan(), &saved);
        assert_eq!(
            script.unwrap(),
            "*filter\n-D INPUT -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES\n\
             -I INPUT 1 -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES\nCOMMIT\n"
        );
        assert_eq!(changes.jumps_rewritten, ["INPUT"]);
        assert!(changes.chains_written.is_empty());
    }

    #[test]
    fn two_owners_share_the_top_of_a_built_in_chain() {
        let rules = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let svc = "-m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES";
        let pol = "-m comment --comment \"ipwarden:policies\" -j IPWARDEN-INPUT";
        let current = rules(&[pol, svc, "-j OTHER"]);
        assert!(jumps_in_place(&current, "ipwarden:services", &[svc], false));
        assert!(jumps_in_place(&current, "ipwarden:policies", &[pol], false));
        let pushed_down = rules(&[pol, "-j OTHER", svc]);
        assert!(!jumps_in_place(
            &pushed_down,
            "ipwarden:services",
            &[svc],
            false
        ));
        let twice = rules(&[svc, pol, svc]);
        assert!(!jumps_in_place(&twice, "ipwarden:services", &[svc], false));
    }

    #[test]
    fn the_accepting_owner_stays_below_the_policy_jump() {
        let rules = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mark =
            "-m mark --mark 0x400000/0x400000 -m comment --comment \"ipwarden:services\" -j ACCEPT";
        let svc = "-m set --match-set ipwarden-svip dst -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES";
        let pol = "-m comment --comment \"ipwarden:policies\" -j IPWARDEN-INPUT";
        // The mark ACCEPT above the policy jump (the order an earlier
        // build kept): an egress-isolated pod's packet to a marked VIP
        // would skip its egress rules. Not in place for services.
        let current = rules(&[mark, svc, pol, "-j OTHER"]);
        assert!(!jumps_in_place(
            &current,
            "ipwarden:services",
            &[mark, svc],
            true
        ));
        assert!(jumps_in_place(&current, "ipwarden:policies", &[pol], false));
        let split = rules(&[mark, pol, svc, "-j OTHER"]);
        assert!(!jumps_in_place(
            &split,
            "ipwarden:services",
            &[mark, svc],
            true
        ));
        let fixed = rules(&[pol, mark, svc, "-j OTHER"]);
        assert!(jumps_in_place(
            &fixed,
            "ipwarden:services",
            &[mark, svc],
            true
        ));
        assert!(jumps_in_place(&fixed, "ipwarden:policies", &[pol], false));
        // Alone (no policy controller), the mark is first in INPUT.
        let alone = rules(&[mark, svc, "-j OTHER"]);
        assert!(jumps_in_place(
            &alone,
            "ipwarden:services",
            &[mark, svc],
            true
        ));

        // The services owner moves its block below the policy jump.
        let mut p = plan();
        p.chains.clear();
        p.below_other_owners = true;
        p.jumps = [mark, svc]
            .iter()
            .map(|r| Jump {
                from: "INPUT".into(),
                rule: r.to_string(),
            })
            .collect();
        let saved = SavedTable::parse(&format!(
            ":INPUT ACCEPT [0:0]\n-A INPUT {mark}\n-A INPUT {svc}\n-A INPUT {pol}\n"
        ));
        let (text, _) = script(&p, &saved);
        let text = text.unwrap();
        assert!(
            text.contains(&format!("-I INPUT 2 {svc}\n-I INPUT 2 {mark}\n")),
            "{text}"
        );
        // On a fresh node it goes first, and the policy owner, which
        // writes after it in a pass, inserts above it.
        let saved = SavedTable::parse(":INPUT ACCEPT [0:0]\n-A INPUT -j OTHER\n");
        let (text, _) = script(&p, &saved);
        assert!(text
            .unwrap()
            .contains(&format!("-I INPUT 1 {svc}\n-I INPUT 1 {mark}\n")));
        let mut p = plan();
        p.chains.clear();
        p.tag = "ipwarden:policies".into();
        p.jumps = vec![Jump {
            from: "INPUT".into(),
            rule: pol.to_string(),
        }];
        let saved = SavedTable::parse(&format!(
            ":INPUT ACCEPT [0:0]\n-A INPUT {mark}\n-A INPUT {svc}\n"
        ));
        let (text, _) = script(&p, &saved);
        assert!(text.unwrap().contains(&format!("-I INPUT 1 {pol}\n")));
    }

    #[test]
    fn stale_owned_chain_is_deleted_after_its_jump_and_foreign_chains_are_not() {
        let mut p = plan();
        p.chains.clear();
        p.jumps.clear();
        let saved = SavedTable::parse(
            ":INPUT ACCEPT [0:0]\n:IPWARDEN-SERVICES - [0:0]\n:KUBE-SERVICES - [0:0]\n\
             -A INPUT -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES\n\
             -A INPUT -j KUBE-SERVICES\n-A IPWARDEN-SERVICES -j REJECT\n",
        );
        let (script, changes) = script(&p, &saved);
        assert_eq!(
            script.unwrap(),
            "*filter\n:IPWARDEN-SERVICES - [0:0]\n\
             -D INPUT -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES\n\
             -X IPWARDEN-SERVICES\nCOMMIT\n"
        );
        assert_eq!(changes.chains_deleted, ["IPWARDEN-SERVICES"]);
    }
}

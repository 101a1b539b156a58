//! The restore script: pure, so what will be written can be tested and
//! logged without a kernel.

use std::fmt::Write;

use super::SavedTable;
use crate::desired::{Jump, Place, TablePlan, FIRST_TAG};

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
        let mut wanted: Vec<&Jump> = plan.jumps.iter().filter(|j| j.from == host).collect();
        // Stable: the plan's order within each place.
        wanted.sort_by_key(|j| j.place);
        let current = saved.rules(host).unwrap_or_default();
        if jumps_in_place(current, &plan.tag, &wanted) {
            continue;
        }
        for rule in current.iter().filter(|r| r.contains(&plan.tag)) {
            let _ = writeln!(body, "-D {host} {rule}");
        }
        for (at, rule) in insert_positions(current, &plan.tag, &wanted) {
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
    // The body becomes the script: a copy of it beside the body (grown by
    // doubling) held three times the policies' 1.2 MiB at 10k at once.
    let mut script = body;
    script.insert_str(0, &format!("*{}\n{declare}", plan.table));
    script.push_str("COMMIT\n");
    script.shrink_to_fit();
    (Some(script), changes)
}

/// Tag prefix shared by every ipwarden owner's rules in built-in chains.
const ANY_OWNER_TAG: &str = "ipwarden:";

/// Where each of `wanted` (sorted by place) is inserted, 1-based and in
/// order, once this owner's rules are deleted from `current`: its first
/// rules at the top, its block rules below the other owners' first rules,
/// its last rules below the whole block of ipwarden rules.
fn insert_positions<'a>(
    current: &[String],
    tag: &str,
    wanted: &[&'a Jump],
) -> Vec<(usize, &'a str)> {
    let rest = current.iter().filter(|r| !r.contains(tag));
    let rest_first = rest.clone().take_while(|r| r.contains(FIRST_TAG)).count();
    let rest_top = rest.take_while(|r| r.contains(ANY_OWNER_TAG)).count();
    let mut at = 1;
    let mut out = Vec::with_capacity(wanted.len());
    let mut place = Place::First;
    for j in wanted {
        if j.place != place {
            // Skip the other owners' rules that go between.
            if place == Place::First {
                at += rest_first;
            }
            if j.place == Place::Last {
                at += rest_top - rest_first;
            }
            place = j.place;
        }
        out.push((at, j.rule.as_str()));
        at += 1;
    }
    out
}

/// Are this owner's rules in `current` exactly `wanted` (sorted by place),
/// in order, inside the block of ipwarden rules at the top of the chain,
/// each where its [`Place`] says? Several owners (services, policies) each
/// keep their rules there; a place is checked for the owner's own rules
/// only (its first ones are the chain's first rules; its last ones end
/// the block), so the owners never push each other around: an order that
/// holds is left alone, whichever owner wrote first.
fn jumps_in_place(current: &[String], tag: &str, wanted: &[&Jump]) -> bool {
    let top = current
        .iter()
        .take_while(|r| r.contains(ANY_OWNER_TAG))
        .count();
    let ours_on_top: Vec<&str> = current[..top]
        .iter()
        .filter(|r| r.contains(tag))
        .map(String::as_str)
        .collect();
    let texts: Vec<&str> = wanted.iter().map(|j| j.rule.as_str()).collect();
    let ours_total = current.iter().filter(|r| r.contains(tag)).count();
    if ours_on_top != texts || ours_total != wanted.len() {
        return false;
    }
    let first = wanted.iter().filter(|j| j.place == Place::First).count();
    if current[..first].iter().any(|r| !r.contains(tag)) {
        return false;
    }
    let Some(last) = wanted.iter().position(|j| j.place == Place::Last) else {
        return true;
    };
    let from = current[..top]
        .iter()
        .position(|r| r == wanted[last].rule.as_str())
        .unwrap_or(top);
    current[from..top].iter().all(|r| r.contains(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::{Chain, Family, Ownership, Table};

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
            jumps: vec![Jump::new(
                "INPUT",
                "-m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES",
            )],
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

    fn jumps(rules: &[(&str, Place)]) -> Vec<Jump> {
        rules
            .iter()
            .map(|(r, place)| Jump::new("INPUT", *r).at(*place))
            .collect()
    }

    fn in_place(current: &[&str], tag: &str, wanted: &[(&str, Place)]) -> bool {
        let current: Vec<String> = current.iter().map(|s| s.to_string()).collect();
        let wanted = jumps(wanted);
        jumps_in_place(&current, tag, &wanted.iter().collect::<Vec<_>>())
    }

    const SVC: &str = "-m set --match-set ipwarden-svip dst -m comment --comment \"ipwarden:services\" -j IPWARDEN-SERVICES";
    const MARK: &str = "-m mark --mark 0x400000/0x400000 -m comment --comment \"ipwarden:services ipwarden:first\" -j ACCEPT";
    const POL: &str = "-m comment --comment \"ipwarden:policies\" -j IPWARDEN-INPUT";
    const SERVICES: &str = "ipwarden:services";
    const POLICIES: &str = "ipwarden:policies";

    #[test]
    fn two_owners_share_the_top_of_a_built_in_chain() {
        let svc = [(SVC, Place::Block)];
        let pol = [(POL, Place::Block)];
        assert!(in_place(&[POL, SVC, "-j OTHER"], SERVICES, &svc));
        assert!(in_place(&[POL, SVC, "-j OTHER"], POLICIES, &pol));
        assert!(!in_place(&[POL, "-j OTHER", SVC], SERVICES, &svc));
        assert!(!in_place(&[SVC, POL, SVC], SERVICES, &svc));
    }

    #[test]
    fn the_mark_is_first_and_the_service_chain_below_the_policy_jump() {
        let svc = [(MARK, Place::First), (SVC, Place::Last)];
        let pol = [(POL, Place::Block)];
        // The order both owners want: each finds its rules in place.
        let fixed = [MARK, POL, SVC, "-j OTHER"];
        assert!(in_place(&fixed, SERVICES, &svc));
        assert!(in_place(&fixed, POLICIES, &pol));
        // The policy jump above the mark: the mark must move.
        assert!(!in_place(&[POL, MARK, SVC, "-j OTHER"], SERVICES, &svc));
        // The service chain above the policy jump: its ACCEPTs would skip
        // the egress rules of local pods.
        assert!(!in_place(&[MARK, SVC, POL, "-j OTHER"], SERVICES, &svc));
        // Alone (no policy controller).
        assert!(in_place(&[MARK, SVC, "-j OTHER"], SERVICES, &svc));

        let mut p = plan();
        p.chains.clear();
        p.jumps = jumps(&svc);
        let rewrite = |current: &[&str]| {
            let text: String = current.iter().map(|r| format!("-A INPUT {r}\n")).collect();
            let saved = SavedTable::parse(&format!(":INPUT ACCEPT [0:0]\n{text}"));
            script(&p, &saved).0.unwrap()
        };
        // Services after the policy owner wrote above its rules.
        let text = rewrite(&[POL, MARK, SVC, "-j OTHER"]);
        assert!(
            text.ends_with(&format!(
                "-D INPUT {MARK}\n-D INPUT {SVC}\n-I INPUT 1 {MARK}\n-I INPUT 3 {SVC}\nCOMMIT\n"
            )),
            "{text}"
        );
        // On a fresh node.
        let text = rewrite(&["-j OTHER"]);
        assert!(
            text.ends_with(&format!("-I INPUT 1 {MARK}\n-I INPUT 2 {SVC}\nCOMMIT\n")),
            "{text}"
        );
        // The policy owner, writing after it, goes between the two.
        let mut p = plan();
        p.chains.clear();
        p.tag = POLICIES.into();
        p.jumps = jumps(&pol);
        let saved = SavedTable::parse(&format!(
            ":INPUT ACCEPT [0:0]\n-A INPUT {MARK}\n-A INPUT {SVC}\n"
        ));
        let (text, _) = script(&p, &saved);
        assert!(text.unwrap().contains(&format!("-I INPUT 2 {POL}\n")));
        // And the result is in place for both.
        let after = [MARK, POL, SVC];
        assert!(in_place(&after, SERVICES, &svc) && in_place(&after, POLICIES, &pol));
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

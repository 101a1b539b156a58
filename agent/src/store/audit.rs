//! The auditor: kernel vs desired vs mirror, on a timer. Drift is counted
//! by kind and healed through the same plan-and-execute path as an apply.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Display,
    time::{Duration, Instant},
};

use super::{actual::actual_for, execute, plan_all, Inner, Plan, StoreError};
use crate::desired::{Member, SetSpec};

/// Running totals since start, exported as metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DriftCounters {
    pub audits: u64,
    /// Desired members the kernel did not hold (deleted by someone else).
    pub members_missing: u64,
    /// Members the kernel held that nobody wants (added by someone else).
    pub members_unexpected: u64,
    /// Desired sets that did not exist (destroyed by someone else).
    pub sets_missing: u64,
    /// Sets of the wrong type or family.
    pub sets_wrong_type: u64,
    /// Mirror entries that differed from the desired sets (and restricted
    /// sources that differed from the policy controller's).
    pub mirror_entries_wrong: u64,
    /// Drift repaired.
    pub heals: u64,
}

/// What one audit found (before healing).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditReport {
    pub members_missing: usize,
    pub members_unexpected: usize,
    pub sets_missing: usize,
    pub sets_wrong_type: usize,
    pub mirror_entries_wrong: usize,
    /// Mirrored members missing from the kernel and not healed in this
    /// pass (still flagged in the mirror), by set.
    pub missing_mirrored: BTreeMap<String, BTreeSet<Member>>,
}

impl AuditReport {
    pub fn drifted(&self) -> bool {
        self.members_missing
            + self.members_unexpected
            + self.sets_missing
            + self.sets_wrong_type
            + self.mirror_entries_wrong
            > 0
    }
}

/// In words, for the log: only what drifted, and the mirrored members
/// still missing by set ("1 member missing from its set; flagged in the
/// mirror until healed: ipwarden-svip-prt 203.0.113.10,tcp:80").
impl Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let counts = [
            (
                self.members_missing,
                "member missing from its set",
                "members missing from their sets",
            ),
            (
                self.members_unexpected,
                "member in a set that should not hold it",
                "members in sets that should not hold them",
            ),
            (self.sets_missing, "set missing", "sets missing"),
            (
                self.sets_wrong_type,
                "set of the wrong type",
                "sets of the wrong type",
            ),
            (
                self.mirror_entries_wrong,
                "mirror entry wrong",
                "mirror entries wrong",
            ),
        ];
        let parts: Vec<String> = counts
            .iter()
            .filter(|(n, ..)| *n > 0)
            .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
            .collect();
        if parts.is_empty() {
            f.write_str("no drift")?;
        } else {
            f.write_str(&parts.join(", "))?;
        }
        let flagged: Vec<String> = self
            .missing_mirrored
            .iter()
            .filter(|(_, members)| !members.is_empty())
            .map(|(set, members)| {
                let list: Vec<String> = members.iter().map(ToString::to_string).collect();
                format!("{set} {}", list.join(" "))
            })
            .collect();
        if !flagged.is_empty() {
            write!(
                f,
                "; flagged in the mirror until healed: {}",
                flagged.join(", ")
            )?;
        }
        Ok(())
    }
}

/// One difference between kernel and desired state, as the auditor
/// tracks it between passes: (set, member as `ipset save` prints it; None
/// for the whole set). Text, because a member no desired member stands
/// for is drift too.
pub(super) type DriftItem = (String, Option<String>);

fn member_item(set: &str, member: &impl Display) -> DriftItem {
    (set.to_string(), Some(member.to_string()))
}

/// The members of `list` for which `keep` holds, by set.
fn keep_members<M: Clone + Display>(
    list: &[(String, Vec<M>)],
    mut keep: impl FnMut(DriftItem) -> bool,
) -> Vec<(String, Vec<M>)> {
    let mut out = Vec::new();
    for (set, members) in list {
        let kept: Vec<M> = members
            .iter()
            .filter(|m| keep(member_item(set, *m)))
            .cloned()
            .collect();
        if !kept.is_empty() {
            out.push((set.clone(), kept));
        }
    }
    out
}

/// Keeps the parts of `plan` whose drift was first seen at least
/// `heal_after` ago, and records when new drift was first seen.
fn aged<'a>(
    plan: &Plan<'a>,
    seen: &mut BTreeMap<DriftItem, Instant>,
    now: Instant,
    heal_after: Duration,
) -> Plan<'a> {
    let mut old_enough =
        |item: DriftItem| now.duration_since(*seen.entry(item).or_insert(now)) >= heal_after;
    let mut whole_set_aged = |name: &String| old_enough((name.clone(), None));
    let create = aged_sets(&plan.create, &mut whole_set_aged);
    let replace = aged_sets(&plan.replace, &mut whole_set_aged);
    let destroy = plan
        .destroy
        .iter()
        .filter(|n| whole_set_aged(n))
        .cloned()
        .collect();
    Plan {
        create,
        replace,
        destroy,
        add: keep_members(&plan.add, &mut old_enough),
        delete: keep_members(&plan.delete, &mut old_enough),
        delete_unrepresentable: keep_members(&plan.delete_unrepresentable, &mut old_enough),
    }
}

/// The sets of `list` for which `keep` holds.
fn aged_sets<'a>(list: &[&'a SetSpec], keep: &mut impl FnMut(&String) -> bool) -> Vec<&'a SetSpec> {
    list.iter().filter(|s| keep(&s.name)).copied().collect()
}

/// The drift items of `plan`, to forget those that are gone.
fn items(plan: &Plan<'_>) -> BTreeSet<DriftItem> {
    let mut out = BTreeSet::new();
    for s in plan.create.iter().chain(&plan.replace) {
        out.insert((s.name.clone(), None));
    }
    for n in &plan.destroy {
        out.insert((n.clone(), None));
    }
    for (set, members) in plan.add.iter().chain(&plan.delete) {
        out.extend(members.iter().map(|m| member_item(set, m)));
    }
    for (set, members) in &plan.delete_unrepresentable {
        out.extend(members.iter().map(|m| member_item(set, m)));
    }
    out
}

/// Audits every owner. Drift is healed once it has lasted `heal_after`
/// (zero: at once); until then mirrored members missing from the kernel
/// stay flagged in the mirror, so the tc program reports traffic to them.
pub(super) fn run(inner: &mut Inner, heal_after: Duration) -> Result<AuditReport, StoreError> {
    let mut report = AuditReport::default();
    let now = Instant::now();
    let owners = inner.owners.clone();
    let mut still_drifting = BTreeSet::new();
    for owner in &owners {
        let actual = actual_for(inner, owner)?;
        let plan = plan_all(&inner.desired[owner.name], owner, &actual);
        report.members_missing += plan.add.iter().map(|(_, m)| m.len()).sum::<usize>()
            + plan.create.iter().map(|s| s.members.len()).sum::<usize>();
        report.members_unexpected += plan
            .delete
            .iter()
            .map(|(_, m)| m.len())
            .chain(plan.delete_unrepresentable.iter().map(|(_, m)| m.len()))
            .sum::<usize>();
        report.sets_missing += plan.create.len();
        report.sets_wrong_type += plan.replace.len();
        let heal = aged(&plan, &mut inner.drift_seen, now, heal_after);
        let healed = items(&heal);
        for (set, members) in &plan.add {
            if owner.mirrors(set) {
                let left = members
                    .iter()
                    .filter(|m| !healed.contains(&member_item(set, *m)));
                report
                    .missing_mirrored
                    .entry(set.clone())
                    .or_default()
                    .extend(left.map(|&&m| m));
            }
        }
        for spec in plan.create.iter().filter(|s| owner.mirrors(&s.name)) {
            if !healed.contains(&(spec.name.clone(), None)) {
                report
                    .missing_mirrored
                    .entry(spec.name.clone())
                    .or_default()
                    .extend(spec.members.iter().cloned());
            }
        }
        report.missing_mirrored.retain(|_, m| !m.is_empty());
        still_drifting.extend(items(&plan).difference(&healed).cloned());
        if !heal.is_empty() {
            execute::run(inner.kernel.as_mut(), &heal)?;
            inner.drift.heals += 1;
        }
        if let Some(sink) = inner.mirror.as_mut() {
            let mirrored: Vec<_> = inner.desired[owner.name]
                .values()
                .filter(|s| owner.mirrors(&s.name))
                .collect();
            if !mirrored.is_empty() {
                report.mirror_entries_wrong += sink.audit(&mirrored, &inner.services[owner.name]);
            }
        }
    }
    inner
        .drift_seen
        .retain(|item, _| still_drifting.contains(item));
    if let Some(sink) = inner.mirror.as_mut() {
        sink.missing_from_kernel(&report.missing_mirrored);
    }
    report.mirror_entries_wrong += inner.sources.audit();
    let d = &mut inner.drift;
    d.audits += 1;
    d.members_missing += report.members_missing as u64;
    d.members_unexpected += report.members_unexpected as u64;
    d.sets_missing += report.sets_missing as u64;
    d.sets_wrong_type += report.sets_wrong_type as u64;
    d.mirror_entries_wrong += report.mirror_entries_wrong as u64;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Protocol;

    #[test]
    fn the_report_says_what_drifted_in_words() {
        let mut a = AuditReport {
            members_missing: 1,
            sets_missing: 2,
            ..AuditReport::default()
        };
        assert_eq!(
            a.to_string(),
            "1 member missing from its set, 2 sets missing"
        );
        a.missing_mirrored.insert(
            "ipwarden-svip-prt".into(),
            [Member::ip_port(
                "203.0.113.10".parse().unwrap(),
                Protocol::Tcp,
                80,
            )]
            .into(),
        );
        assert_eq!(
            a.to_string(),
            "1 member missing from its set, 2 sets missing; flagged in the mirror until healed: ipwarden-svip-prt 203.0.113.10,tcp:80"
        );
        assert_eq!(AuditReport::default().to_string(), "no drift");
    }
}

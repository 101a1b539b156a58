//! The auditor: kernel vs desired vs mirror, on a timer. Drift is counted
//! by kind and healed through the same plan-and-execute path as an apply.

use std::collections::{BTreeMap, BTreeSet};

use super::{execute, plan_for, Inner, StoreError};

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
    /// Mirror entries that differed from the desired sets.
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
    /// Mirrored members missing from the kernel, by set.
    pub missing_mirrored: BTreeMap<String, BTreeSet<String>>,
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

pub(super) fn run(inner: &mut Inner) -> Result<AuditReport, StoreError> {
    let mut report = AuditReport::default();
    let owners = inner.owners.clone();
    for owner in &owners {
        let plan = plan_for(inner, owner)?;
        report.members_missing += plan.add.iter().map(|(_, m)| m.len()).sum::<usize>()
            + plan.create.iter().map(|s| s.members.len()).sum::<usize>();
        report.members_unexpected += plan.delete.iter().map(|(_, m)| m.len()).sum::<usize>();
        report.sets_missing += plan.create.len();
        report.sets_wrong_type += plan.replace.len();
        for (set, members) in &plan.add {
            if owner.mirrors(set) {
                report
                    .missing_mirrored
                    .entry(set.clone())
                    .or_default()
                    .extend(members.iter().cloned());
            }
        }
        for spec in plan.create.iter().filter(|s| owner.mirrors(&s.name)) {
            report
                .missing_mirrored
                .entry(spec.name.clone())
                .or_default()
                .extend(spec.members.iter().cloned());
        }
        if !plan.is_empty() {
            execute::run(&mut inner.client, &plan)?;
            inner.drift.heals += 1;
        }
        if let Some(sink) = inner.mirror.as_mut() {
            let mirrored: Vec<_> = inner.desired[owner.name]
                .values()
                .filter(|s| owner.mirrors(&s.name))
                .collect();
            if !mirrored.is_empty() {
                report.mirror_entries_wrong += sink.audit(&mirrored);
            }
        }
    }
    if let Some(sink) = inner.mirror.as_mut() {
        sink.missing_from_kernel(&report.missing_mirrored);
    }
    let d = &mut inner.drift;
    d.audits += 1;
    d.members_missing += report.members_missing as u64;
    d.members_unexpected += report.members_unexpected as u64;
    d.sets_missing += report.sets_missing as u64;
    d.sets_wrong_type += report.sets_wrong_type as u64;
    d.mirror_entries_wrong += report.mirror_entries_wrong as u64;
    Ok(report)
}

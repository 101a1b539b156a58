//! The policy controller's part of a pass: its sets before any chain uses
//! them, its chains, then the sets no chain references any more.

use std::collections::BTreeMap;

use crate::{
    cluster::Snapshot,
    controllers::policies::{self, chains::DENY_COMMENT, names, PolicyState},
    desired::{Family, MemberServices, Table},
    kernel::iptables,
    store::{ApplyReport, Claim, Owner, SetStore},
};

use super::{
    dataplane::{Dataplane, RealDataplane},
    ReconcileError,
};

/// The set-store owner name of the policy controller.
pub const POLICIES_OWNER: &str = "policies";

/// The policy controller's claim: every `IPW-` set, in both families.
pub fn policies_owner() -> Owner {
    Owner::new(POLICIES_OWNER, vec![Claim::Prefix(names::PREFIX.into())])
}

/// What the policy part of a pass changed.
#[derive(Debug, Default)]
pub struct PolicyReport {
    pub sets: Option<ApplyReport>,
    /// "filter/V4/IPW-POD-FW-..." for every chain created or rewritten.
    pub chains_written: Vec<String>,
    pub chains_deleted: Vec<String>,
    /// Built-in chains whose jump into ours was (re)written.
    pub jumps_rewritten: Vec<String>,
    /// Sets destroyed after the chains stopped using them.
    pub sets_destroyed: Vec<String>,
}

impl PolicyReport {
    /// The policy part of the one-line summary.
    pub fn summary(&self) -> String {
        let sets = self.sets.as_ref().map(|s| &s.executed);
        format!(
            "; policies: sets +{} -{} members, {} created, {} destroyed; chains written {}, deleted {}",
            sets.map_or(0, |s| s.members_added),
            sets.map_or(0, |s| s.members_deleted),
            sets.map_or(0, |s| s.created.len()),
            sets.map_or(0, |s| s.destroyed.len()) + self.sets_destroyed.len(),
            self.chains_written.len(),
            self.chains_deleted.len(),
        )
    }
}

/// Step 1: every set the new chains use exists with its members. Sets the
/// old chains still use cannot be destroyed yet; the store defers them.
pub fn apply_sets(
    dp: &mut impl Dataplane,
    state: &PolicyState,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    report.sets = Some(dp.apply_sets(POLICIES_OWNER, &state.sets, &MemberServices::new())?);
    Ok(())
}

/// Step 2: the chains, one iptables-restore per family (so no packet
/// meets a half-written chain), then step 3: the sets left over.
pub fn apply_chains(
    dp: &mut impl Dataplane,
    state: &PolicyState,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    for plan in &state.iptables {
        let changes = dp.apply_table(plan)?;
        let label = |c: &String| format!("{}/{:?}/{c}", plan.table, plan.family);
        report
            .chains_written
            .extend(changes.chains_written.iter().map(label));
        report
            .chains_deleted
            .extend(changes.chains_deleted.iter().map(label));
        report
            .jumps_rewritten
            .extend(changes.jumps_rewritten.iter().map(label));
    }
    let deferred = report
        .sets
        .as_ref()
        .is_some_and(|s| !s.executed.destroy_deferred.is_empty());
    if deferred {
        let again = dp.apply_sets(POLICIES_OWNER, &state.sets, &MemberServices::new())?;
        report.sets_destroyed = again.executed.destroyed;
    }
    Ok(())
}

/// All three steps through the kernel of the calling thread's namespace.
pub fn apply(store: &SetStore, state: &PolicyState) -> Result<PolicyReport, ReconcileError> {
    let mut dp = RealDataplane::connect(store.clone())?;
    let mut report = PolicyReport::default();
    apply_sets(&mut dp, state, &mut report)?;
    apply_chains(&mut dp, state, &mut report)?;
    Ok(report)
}

/// The policy controller with its dataplane. Every sync recomputes the
/// whole policy state (cheap next to the kernel work) and the kernel side
/// writes only differences: a partial sync and a full one differ only in
/// that the store and the applier read everything back either way.
pub struct PolicySync<D> {
    dataplane: D,
    opts: policies::Options,
}

impl<D: Dataplane> PolicySync<D> {
    pub fn new(dataplane: D, opts: policies::Options) -> Self {
        Self { dataplane, opts }
    }

    pub fn prepare(&self, snapshot: &Snapshot) -> PolicyState {
        policies::desired(snapshot, &self.opts)
    }

    pub fn apply_sets(
        &mut self,
        state: &PolicyState,
        report: &mut PolicyReport,
    ) -> Result<(), ReconcileError> {
        apply_sets(&mut self.dataplane, state, report)
    }

    pub fn apply_chains(
        &mut self,
        state: &PolicyState,
        report: &mut PolicyReport,
    ) -> Result<(), ReconcileError> {
        apply_chains(&mut self.dataplane, state, report)
    }

    /// One whole pass of the policy controller; its problems are in the
    /// returned state.
    pub fn sync(
        &mut self,
        snapshot: &Snapshot,
    ) -> Result<(PolicyState, PolicyReport), ReconcileError> {
        let state = self.prepare(snapshot);
        let mut report = PolicyReport::default();
        self.apply_sets(&state, &mut report)?;
        self.apply_chains(&state, &mut report)?;
        Ok((state, report))
    }
}

/// Packets denied per (policy "NS/NAME", direction), both families, from
/// the counting rules of the pod chains.
pub fn denied_packets() -> Result<BTreeMap<(String, String), u64>, ReconcileError> {
    let mut out = BTreeMap::new();
    for family in [Family::V4, Family::V6] {
        for (text, packets) in iptables::comment_counters(family, Table::Filter, DENY_COMMENT)? {
            if let Some((policy, direction)) = text.split_once(' ') {
                *out.entry((policy.to_string(), direction.to_string()))
                    .or_default() += packets;
            }
        }
    }
    Ok(out)
}

//! The policy controller's part of a pass: its sets before any chain uses
//! them, its chains, then the sets no chain references any more.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use crate::{
    cluster::Snapshot,
    controllers::policies::{
        self,
        chains::DENY_COMMENT,
        incremental::{PolicyChanges, PolicyDelta, PolicyIndex},
        names, PolicyState,
    },
    desired::{Family, MemberServices, Table},
    kernel::iptables::{self, Changes, ReadBack},
    store::{ApplyReport, Claim, Owner, SetStore, SourcePhase},
};

use super::{
    dataplane::{Dataplane, RealDataplane},
    first_write::{self, FirstWrite},
    keep::KeepState,
    schedule::{FullReason, SyncKind},
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
    /// How long each step of a full sync took ("index 1.2 ms, ..."):
    /// where the first sync's time goes (BENCHMARKS.md).
    pub steps: String,
}

impl PolicyReport {
    /// The policy part of the one-line summary.
    pub fn summary(&self) -> String {
        let sets = self.sets.as_ref().map(|s| &s.executed);
        let steps = if self.steps.is_empty() {
            String::new()
        } else {
            format!("; steps: {}", self.steps)
        };
        format!(
            "; policies: sets +{} -{} members, {} created, {} destroyed; chains written {}, deleted {}{steps}",
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

/// Step 1 of a sync that needs its sets no more: they are handed to the
/// store, which keeps them as its desired state (no second copy of the
/// 1,600 sets while they are written), and `state` keeps none.
pub fn hand_over_sets(
    dp: &mut impl Dataplane,
    state: &mut PolicyState,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    let sets = std::mem::take(&mut state.sets);
    report.sets = Some(dp.hand_over_sets(POLICIES_OWNER, sets, MemberServices::new())?);
    Ok(())
}

/// Step 2: the chains, one iptables-restore per family (so no packet
/// meets a half-written chain), the families written at once (they share
/// no chain), between the two phases of the restricted sources (the tc
/// program stops marking a newly restricted pod before its chain is
/// relied on, and marks a released one only after its chain is gone),
/// then step 3: the sets left over, destroyed by repeating the sets'
/// apply from the store's copy (the same sets step 1 applied).
pub fn apply_chains(
    dp: &mut impl Dataplane,
    state: &PolicyState,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    let sources = state.egress_restricted_sources();
    dp.restrict_sources(&sources, SourcePhase::BeforeChains);
    apply_tables(dp, &state.iptables, report)?;
    dp.restrict_sources(&sources, SourcePhase::AfterChains);
    let deferred = report
        .sets
        .as_ref()
        .is_some_and(|s| !s.executed.destroy_deferred.is_empty());
    if deferred {
        let again = dp.reapply_sets(POLICIES_OWNER)?;
        report.sets_destroyed = again.executed.destroyed;
    }
    Ok(())
}

/// Every table of `plans` at once, their changes recorded as
/// "filter/V4/CHAIN"; the first failure fails the sync (fail closed: the
/// sources stay restricted), after the other tables' changes are recorded.
///
/// No read-back of restores that were the only commits since the apply's
/// read (`ReadBack::UnlessAlone`): each table then holds its plan, and our
/// rule forms are what iptables-save prints (`tests/policies_netns.rs`,
/// `policy_rules_are_canonical_and_a_second_apply_writes_nothing`). At 5k
/// pods that read was seconds of the first sync (BENCHMARKS.md). A failed
/// restore still fails the sync; drift made after it moves the ruleset's
/// generation, so the next full sync reads the table and repairs it.
fn apply_tables(
    dp: &mut impl Dataplane,
    plans: &[crate::desired::TablePlan],
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    let results = dp.apply_tables_with(plans, ReadBack::UnlessAlone);
    let mut failed = None;
    for (plan, result) in plans.iter().zip(results) {
        match result {
            Ok(changes) => record(report, plan.table, plan.family, &changes),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Records `changes` of one table as "filter/V4/CHAIN".
fn record(report: &mut PolicyReport, table: Table, family: Family, changes: &Changes) {
    let label = |c: &String| format!("{table}/{family:?}/{c}");
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

/// All three steps through the kernel of the calling thread's namespace.
pub fn apply(store: &SetStore, state: &PolicyState) -> Result<PolicyReport, ReconcileError> {
    let mut dp = RealDataplane::connect(store.clone())?;
    let mut report = PolicyReport::default();
    apply_sets(&mut dp, state, &mut report)?;
    apply_chains(&mut dp, state, &mut report)?;
    Ok(report)
}

/// The policy controller with its dataplane. It keeps the keyed
/// [`PolicyIndex`] of the cluster it last applied. A full sync brings that
/// index up to date with the whole snapshot ([`PolicyIndex::changes_since`]
/// compares every object; the first sync, and the first after a failure,
/// builds it), assembles the whole policy state from it
/// ([`PolicyIndex::state`], equal to [`policies::desired`] of the same
/// cluster; the sets are handed to the store and the chains rendered
/// only then, so the two are never held at once), reads every policy set
/// and both filter tables back and repairs drift. A partial sync updates the index with the changed
/// objects only and writes its delta: set members through the store's
/// member path, sets created before and destroyed after the chains, and
/// the moved chains and lines through one `iptables-restore --noflush`
/// per family that names only them (no read of the table).
pub struct PolicySync<D> {
    dataplane: D,
    opts: policies::Options,
    /// The cluster the last successful sync applied, keyed.
    applied: Option<PolicyIndex>,
    /// The restricted sources that sync published.
    sources: BTreeSet<IpAddr>,
    /// When a full sync may keep the index instead of comparing every
    /// object of the snapshot with it.
    keep: KeepState,
    /// Waited on once, before the first chain write: the service
    /// controller's first sync (`first_write.rs`).
    first_write: Option<FirstWrite>,
}

impl<D: Dataplane> PolicySync<D> {
    pub fn new(dataplane: D, opts: policies::Options) -> Self {
        Self {
            dataplane,
            opts,
            applied: None,
            sources: BTreeSet::new(),
            keep: KeepState::default(),
            first_write: None,
        }
    }

    /// The first chain write waits (bounded) for the service controller's
    /// first sync, which `latch` says is over.
    pub fn after_first_service_sync(mut self, latch: FirstWrite) -> Self {
        self.first_write = Some(latch);
        self
    }

    /// Before the first chain write: the service controller's first sync.
    fn wait_for_first_service_sync(&mut self) {
        if let Some(latch) = self.first_write.take() {
            if !latch.wait(first_write::WAIT_AT_MOST) {
                tracing::warn!(
                    "the service controller's first sync is not over after {:?}: writing the policy chains anyway",
                    first_write::WAIT_AT_MOST
                );
            }
        }
    }

    /// The whole state of the index the last sync applied.
    #[cfg(test)]
    pub fn applied_state(&self) -> Option<PolicyState> {
        self.applied.as_ref().map(PolicyIndex::state)
    }

    /// Why the next full sync runs (None: it is partial).
    pub fn set_full_reason(&mut self, reason: Option<FullReason>) {
        self.keep.set_reason(reason);
    }

    /// The whole desired state of `snapshot`, computed from scratch (a
    /// one-off pass; the daemon's syncs assemble it from the index).
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

    /// One pass of the policy controller; its problems are in the
    /// returned state. A partial sync returns the state without its sets
    /// and chains ([`PolicyIndex::summary`]).
    pub fn sync(
        &mut self,
        kind: SyncKind,
        snapshot: &Snapshot,
        changes: &PolicyChanges,
    ) -> Result<(PolicyState, PolicyReport), ReconcileError> {
        let mut report = PolicyReport::default();
        // Forget what was applied until this pass succeeds: a failure may
        // have left anything half done (and the next sync is full anyway).
        match (kind, self.applied.take()) {
            (SyncKind::Partial, Some(mut index)) => {
                let delta = index.update(snapshot, changes);
                let state = index.summary();
                let sources = state.egress_restricted_sources();
                // Published only when they moved: an unchanged partial
                // sync writes nothing.
                let moved = sources != self.sources;
                if moved {
                    self.dataplane
                        .restrict_sources(&sources, SourcePhase::BeforeChains);
                }
                apply_delta(&mut self.dataplane, &delta, &mut report)?;
                if moved {
                    self.dataplane
                        .restrict_sources(&sources, SourcePhase::AfterChains);
                }
                self.sources = sources;
                self.applied = Some(index);
                Ok((state, report))
            }
            (_, held) => {
                let unchanged = held.is_some() && changes.is_empty();
                let mut step = super::services::Stopwatch::start();
                let (index, kept) = match held {
                    Some(index) if self.keep.keep_now(unchanged) => (index, true),
                    held => (self.caught_up(held, snapshot), false),
                };
                step.lap("index");
                let render_chains = !(kept && self.tables_untouched());
                let mut state = index.state_without_chains();
                step.lap("state");
                // Handed over: not held through the wait and the chains.
                hand_over_sets(&mut self.dataplane, &mut state, &mut report)?;
                step.lap("sets");
                self.wait_for_first_service_sync();
                step.lap("waited");
                if render_chains {
                    state.iptables = index.table_plans();
                }
                step.lap("rendered");
                self.apply_chains(&state, &mut report)?;
                step.lap("chains");
                report.steps = step.laps();
                self.sources = state.egress_restricted_sources();
                self.applied = Some(index);
                Ok((state, report))
            }
        }
    }

    /// Do both filter tables still hold what our last verified apply
    /// left, with no commit of anyone since? Asked only when the index is
    /// kept (no change since the last successful sync), so the plan is
    /// the one verified then, or a partial sync has written chains since,
    /// which moved the generation: then the chains are rendered and
    /// applied (read and repaired) as always. Drift in the tables moves
    /// the generation too; the sets are read back either way.
    fn tables_untouched(&self) -> bool {
        [Family::V4, Family::V6].into_iter().all(|family| {
            self.dataplane
                .table_untouched(family, Table::Filter, names::OWNER_TAG)
        })
    }

    /// `held` brought up to date with every object of `snapshot`, or the
    /// index of `snapshot` built anew when there is none.
    fn caught_up(&self, held: Option<PolicyIndex>, snapshot: &Snapshot) -> PolicyIndex {
        match held {
            Some(mut index) => {
                let changes = index.changes_since(snapshot);
                // The full sync writes the whole state: its delta is moot.
                index.update(snapshot, &changes);
                index
            }
            None => PolicyIndex::build(snapshot, &self.opts),
        }
    }
}

/// A partial sync's kernel work: new sets and moved members, then the
/// chains, then the sets no chain uses any more.
pub fn apply_delta(
    dp: &mut impl Dataplane,
    delta: &PolicyDelta,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    apply_delta_sets(dp, delta, report)?;
    apply_delta_chains(dp, delta, report)?;
    destroy_unused_sets(dp, delta, report)
}

/// Step 1 of [`apply_delta`]: sets created, members added and removed.
pub fn apply_delta_sets(
    dp: &mut impl Dataplane,
    delta: &PolicyDelta,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    let mut sets = ApplyReport::nothing(POLICIES_OWNER);
    if !delta.created.is_empty() {
        sets.absorb(dp.apply_changed_sets(POLICIES_OWNER, &delta.created, &[])?);
    }
    if !delta.members.is_empty() {
        let services = MemberServices::new();
        sets.absorb(dp.apply_set_members(POLICIES_OWNER, &delta.members, &services)?);
    }
    report.sets = Some(sets);
    Ok(())
}

/// Step 2: the chains and lines that moved, one restore per family.
pub fn apply_delta_chains(
    dp: &mut impl Dataplane,
    delta: &PolicyDelta,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    for chains in &delta.chains {
        let changes = dp.apply_chain_delta(chains)?;
        record(report, chains.table, chains.family, &changes);
    }
    Ok(())
}

/// Step 3: the sets the old chains used and the new ones do not.
pub fn destroy_unused_sets(
    dp: &mut impl Dataplane,
    delta: &PolicyDelta,
    report: &mut PolicyReport,
) -> Result<(), ReconcileError> {
    if !delta.destroyed.is_empty() {
        let gone = dp.apply_changed_sets(POLICIES_OWNER, &[], &delta.destroyed)?;
        report.sets_destroyed = gone.executed.destroyed;
    }
    Ok(())
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

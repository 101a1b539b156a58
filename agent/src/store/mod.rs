//! The set store: the one path through which every ipset change goes.
//!
//! Owners register the sets they own. `apply(owner, sets)` replaces that
//! owner's desired state and then, under one lock: reads what the kernel
//! holds for that owner's sets (save), diffs ([`diff::plan`]), writes only
//! the difference ([`execute::run`]) and reads back. Nothing is cached
//! between applies: the kernel is the truth for "now", so a member another
//! process deleted is seen and put back, and a stale copy can never be
//! restored over a fresh one (kube-router #1732).
//! Private by default (`unreachable_pub`): what is `pub` is what the tests
//! and benches use.
#![warn(unreachable_pub)]

mod actual;
mod audit;
mod diff;
mod execute;
#[cfg(test)]
mod fake_kernel;
mod kernel;
mod members;
mod mirror;
mod normal;
pub(crate) mod owners;
#[cfg(feature = "lab")]
pub mod race;
mod readback;
#[cfg(test)]
mod readback_tests;
mod sources;
#[cfg(test)]
mod tests;

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use actual::{actual_for, list_actual};
use normal::{normalise, normalised};
use readback::Read;

use crate::{
    desired::{MemberServices, SetSpec},
    kernel::{ipset::IpsetError, iptables::IptablesError},
    locks::LockOrRecover,
};

pub use audit::{AuditReport, DriftCounters};
pub use diff::{ActualSet, Plan};
pub use execute::Executed;
pub use kernel::SetKernel;
pub use mirror::MirrorSink;
pub use owners::{Claim, Owner, OwnershipError};
pub use readback::{BY_NAME_RATIO, SCRUB_PERIODS};
pub use sources::{SourcePhase, SourceSink};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unknown set owner {0:?}")]
    UnknownOwner(String),
    #[error(transparent)]
    Ownership(#[from] OwnershipError),
    #[error("owner {owner} cannot write set {set}: it is not one of its sets")]
    NotOwned { owner: String, set: String },
    #[error("set {set}: bad name: {reason}")]
    BadName { set: String, reason: String },
    #[error("set {set}: member {member:?}: {reason}")]
    BadMember {
        set: String,
        member: String,
        reason: String,
    },
    #[error("moving rules from set {from} to {to}: {source}")]
    Switch {
        from: String,
        to: String,
        // Boxed: an iptables error is large and this variant is rare.
        #[source]
        source: Box<IptablesError>,
    },
    #[error("owner {owner} changed members of set {set} before applying the set")]
    NotApplied { owner: String, set: String },
    #[error("owner {owner} has no full apply to repeat")]
    NoFullApply { owner: String },
    #[error(transparent)]
    Kernel(#[from] IpsetError),
}

impl StoreError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            StoreError::UnknownOwner(_) | StoreError::Ownership(_) => "ownership",
            StoreError::NotOwned { .. } => "not_owned",
            StoreError::NotApplied { .. } | StoreError::NoFullApply { .. } => "not_applied",
            StoreError::BadName { .. } | StoreError::BadMember { .. } => "bad_input",
            StoreError::Switch { .. } => "switch_rules",
            StoreError::Kernel(e) => e.metric_label(),
        }
    }
}

/// What one apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyReport {
    pub owner: String,
    pub executed: Executed,
    /// False when the read-back differed from the desired state (another
    /// writer changed a set between our write and our read).
    pub verified: bool,
    pub duration: Duration,
}

impl ApplyReport {
    pub fn changed(&self) -> bool {
        self.executed != Executed::default()
    }

    /// An apply that wrote and read nothing.
    pub fn nothing(owner: &str) -> Self {
        Self {
            owner: owner.to_string(),
            executed: Executed::default(),
            verified: true,
            duration: Duration::ZERO,
        }
    }

    /// Folds in `other`, an apply of the same sync.
    pub fn absorb(&mut self, other: ApplyReport) {
        let (e, o) = (&mut self.executed, other.executed);
        e.created.extend(o.created);
        e.replaced.extend(o.replaced);
        e.destroyed.extend(o.destroyed);
        e.destroy_deferred.extend(o.destroy_deferred);
        e.members_added += o.members_added;
        e.members_deleted += o.members_deleted;
        self.verified &= other.verified;
        self.duration += other.duration;
    }
}

struct Inner {
    kernel: Box<dyn SetKernel>,
    owners: Vec<Owner>,
    desired: BTreeMap<&'static str, BTreeMap<String, SetSpec>>,
    /// Per owner, the Service of each mirrored member, as last applied.
    services: BTreeMap<&'static str, MemberServices>,
    mirror: Option<Box<dyn MirrorSink + Send>>,
    /// The sources the tc program must never mark.
    sources: sources::Sources,
    drift: DriftCounters,
    /// When each piece of drift was first seen (for heal delays).
    drift_seen: BTreeMap<audit::DriftItem, Instant>,
    /// Owners whose last full apply told the mirror its content, with no
    /// other apply of theirs since: an unchanged no-op apply skips it.
    mirror_current: BTreeSet<&'static str>,
    /// Per owner, how its next full apply reads the kernel.
    rotations: BTreeMap<&'static str, readback::Rotation>,
    /// Owners that made a full apply: only theirs can be repeated.
    fully_applied: BTreeSet<&'static str>,
}

/// Shared by every controller; cheap to clone.
#[derive(Clone)]
pub struct SetStore {
    inner: Arc<Mutex<Inner>>,
}

impl SetStore {
    /// A store writing through `kernel` (an
    /// [`IpsetClient`](crate::kernel::ipset::IpsetClient), which must live
    /// in the network namespace to program).
    pub fn new(kernel: impl SetKernel + 'static) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                kernel: Box::new(kernel),
                owners: Vec::new(),
                desired: BTreeMap::new(),
                services: BTreeMap::new(),
                mirror: None,
                sources: sources::Sources::default(),
                drift: DriftCounters::default(),
                drift_seen: BTreeMap::new(),
                mirror_current: BTreeSet::new(),
                rotations: BTreeMap::new(),
                fully_applied: BTreeSet::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic in another apply leaves the kernel, not this state,
        // possibly half-written: the next apply starts from the kernel.
        self.inner.lock_or_recover()
    }

    pub fn register(&self, owner: Owner) -> Result<(), StoreError> {
        let mut inner = self.lock();
        owners::check(&inner.owners, &owner)?;
        inner.desired.insert(owner.name, BTreeMap::new());
        inner.services.insert(owner.name, MemberServices::new());
        inner
            .rotations
            .insert(owner.name, readback::Rotation::default());
        inner.owners.push(owner);
        Ok(())
    }

    /// Where the mirrored sets' desired content goes after each apply.
    pub fn set_mirror(&self, sink: Box<dyn MirrorSink + Send>) {
        self.lock().mirror = Some(sink);
    }

    /// Replaces `owner`'s desired sets and brings the kernel to them.
    pub fn apply(&self, owner: &str, sets: Vec<SetSpec>) -> Result<ApplyReport, StoreError> {
        self.apply_with_services(owner, sets, MemberServices::new())
    }

    /// As [`Self::apply`], also telling the mirror which Service each
    /// mirrored member serves. The sets are handed over: when they differ
    /// from the owner's last apply they become its desired state as they
    /// are, without a copy (the policies' sets at a first sync, 3.5 MiB at
    /// 10k).
    pub fn apply_with_services(
        &self,
        owner: &str,
        sets: Vec<SetSpec>,
        services: MemberServices,
    ) -> Result<ApplyReport, StoreError> {
        self.settled_apply(owner, |inner, o| {
            full_apply(inner, o, Cow::Owned(sets), Cow::Owned(services))
        })
    }

    /// As [`Self::apply_with_services`], copying `sets` and `services` only
    /// when they differ from the owner's last apply (a periodic full sync
    /// of 10k Services hands over the same 20k members and 10k Services).
    pub fn apply_full(
        &self,
        owner: &str,
        sets: &[SetSpec],
        services: &MemberServices,
    ) -> Result<ApplyReport, StoreError> {
        self.settled_apply(owner, |inner, o| {
            full_apply(inner, o, Cow::Borrowed(sets), Cow::Borrowed(services))
        })
    }

    /// A full apply of the sets `owner` last applied, for an owner whose
    /// desired state has not moved since its last successful sync: the
    /// kernel is read back and repaired exactly as [`Self::apply_full`]
    /// would with the same sets, without the caller building them again.
    pub fn reapply_full(&self, owner: &str) -> Result<ApplyReport, StoreError> {
        self.settled_apply(owner, |inner, o| {
            // Without a full apply before, its desired state is empty, not
            // known: repeating it would delete every set the owner holds.
            if !inner.fully_applied.contains(o.name) {
                return Err(StoreError::NoFullApply {
                    owner: o.name.to_string(),
                });
            }
            let mirror_moved = !inner.mirror_current.remove(o.name);
            verify_owner(inner, o, BTreeSet::new(), mirror_moved)
        })
    }

    /// A full apply under the lock: `apply` reads and writes, its outcome
    /// settles (or unsettles) how the owner's next full apply reads.
    fn settled_apply(
        &self,
        owner: &str,
        apply: impl FnOnce(&mut Inner, &Owner) -> Result<(Executed, bool), StoreError>,
    ) -> Result<ApplyReport, StoreError> {
        let start = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let o = registered(inner, owner)?;
        let applied = apply(inner, &o);
        settle(inner, &o, applied.as_ref().map(|(_, verified)| *verified));
        let (executed, verified) = applied?;
        Ok(ApplyReport {
            owner: owner.to_string(),
            executed,
            verified,
            duration: start.elapsed(),
        })
    }

    /// A partial apply: replaces the desired content of the sets in
    /// `changed` and drops the sets named in `removed` from `owner`'s
    /// desired state, then reads, diffs and writes only those sets (a full
    /// [`Self::apply`] reads every set of the owner). What is read is still
    /// the kernel's content, never a cached copy; drift in the other sets
    /// waits for the next full apply or audit.
    pub fn apply_changed(
        &self,
        owner: &str,
        changed: Vec<SetSpec>,
        removed: &[String],
    ) -> Result<ApplyReport, StoreError> {
        let start = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let o = registered(inner, owner)?;
        let applied = changed_apply(inner, &o, changed, removed);
        unsettle_unless(inner, &o, matches!(applied, Ok((_, true))));
        let (executed, verified) = applied?;
        Ok(ApplyReport {
            owner: owner.to_string(),
            executed,
            verified,
            duration: start.elapsed(),
        })
    }
    /// The desired sets of every owner, as last applied.
    pub fn desired(&self) -> Vec<SetSpec> {
        self.lock()
            .desired
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// Compares kernel, desired and mirror for every owner, counts drift
    /// and heals it through the same path as an apply.
    pub fn audit(&self) -> Result<AuditReport, StoreError> {
        self.audit_healing_after(Duration::ZERO)
    }

    /// As [`Self::audit`], healing only drift that has lasted `heal_after`
    /// (see audit::run).
    pub fn audit_healing_after(&self, heal_after: Duration) -> Result<AuditReport, StoreError> {
        let mut guard = self.lock();
        let audited = audit::run(&mut guard, heal_after);
        if audited.is_err() {
            // It may have stopped halfway through a heal.
            let owners = guard.owners.clone();
            owners
                .iter()
                .for_each(|o| unsettle_unless(&mut guard, o, false));
        }
        audited
    }

    pub fn drift(&self) -> DriftCounters {
        self.lock().drift.clone()
    }
}

/// A partial apply under the lock (see [`SetStore::apply_changed`]);
/// returns what ran and whether the read-back found the desired state.
fn changed_apply(
    inner: &mut Inner,
    o: &Owner,
    changed: Vec<SetSpec>,
    removed: &[String],
) -> Result<(Executed, bool), StoreError> {
    inner.mirror_current.remove(o.name);
    let mut only: BTreeSet<String> = removed.iter().cloned().collect();
    let desired = inner.desired.entry(o.name).or_default();
    for name in removed {
        desired.remove(name);
    }
    for mut s in changed {
        if !o.owns(&s.name) {
            return Err(StoreError::NotOwned {
                owner: o.name.to_string(),
                set: s.name,
            });
        }
        s.members = normalise(&s)?;
        only.insert(s.name.clone());
        desired.insert(s.name.clone(), s);
    }
    let executed = run_some(inner, o, &only)?;
    let verified = executed == Executed::default() || {
        let actual = actual_some(inner, o, &only)?;
        plan_some(&inner.desired[o.name], o, &only, &actual)
            .is_empty_but_destroying(&executed.destroy_deferred)
    };
    if let Some(sink) = inner.mirror.as_mut() {
        let mirrored: Vec<&SetSpec> = inner.desired[o.name]
            .values()
            .filter(|s| o.mirrors(&s.name))
            .collect();
        if !mirrored.is_empty() && only.iter().any(|n| o.mirrors(n)) {
            let services = inner.services.get(o.name).cloned().unwrap_or_default();
            sink.mirror(&mirrored, &services);
        }
    }
    Ok((executed, verified))
}

/// A full apply under the lock: the desired sets replaced (when they
/// changed: copied when lent, taken as they are when handed over), the
/// kernel read as the owner's rotation says, brought to them and read
/// back; the mirror told when anything moved. Returns what ran and whether
/// the read-back found the desired state.
fn full_apply(
    inner: &mut Inner,
    o: &Owner,
    sets: Cow<'_, [SetSpec]>,
    services: Cow<'_, MemberServices>,
) -> Result<(Executed, bool), StoreError> {
    if let Some(s) = sets.iter().find(|s| !o.owns(&s.name)) {
        return Err(StoreError::NotOwned {
            owner: o.name.to_string(),
            set: s.name.clone(),
        });
    }
    let last = &inner.desired[o.name];
    // The last apply's sets were normalised: equal input normalises
    // to them again.
    let same_sets = last.len() == sets.len() && sets.iter().all(|s| last.get(&s.name) == Some(s));
    let same_services = inner.services[o.name] == *services;
    let wanted = if same_sets {
        None
    } else {
        Some(normalised(sets)?)
    };
    let mirrored_moved = wanted
        .as_ref()
        .is_some_and(|w| mirrored(&inner.desired[o.name], o) != mirrored(w, o));
    let mirror_moved = mirrored_moved || !same_services || !inner.mirror_current.remove(o.name);
    let changed = wanted
        .as_ref()
        .map(|w| readback::changed_sets(&inner.desired[o.name], w))
        .unwrap_or_default();
    if let Some(wanted) = wanted {
        inner.desired.insert(o.name, wanted);
    }
    inner.fully_applied.insert(o.name);
    if !same_services {
        inner.services.insert(o.name, services.into_owned());
    }
    verify_owner(inner, o, changed, mirror_moved)
}

/// Reads `owner`'s sets back (the changed ones and the rotation's share in
/// full), repairs what differs from its desired state, and mirrors them
/// when anything was written or the mirror moved.
fn verify_owner(
    inner: &mut Inner,
    o: &Owner,
    changed: BTreeSet<String>,
    mirror_moved: bool,
) -> Result<(Executed, bool), StoreError> {
    let read = inner
        .rotations
        .entry(o.name)
        .or_default()
        .read(&inner.desired[o.name], changed);
    let (executed, verified) = sync_owner(inner, o, &read)?;
    // A no-op apply of unchanged content leaves the mirror as the last
    // apply left it (the auditor still compares and heals its maps):
    // rewriting them and the classifier's table is most of a no-op
    // full sync's `sets` step.
    let wrote = executed != Executed::default();
    if let Some(sink) = inner.mirror.as_mut().filter(|_| wrote || mirror_moved) {
        let mirrored = mirrored(&inner.desired[o.name], o);
        if !mirrored.is_empty() {
            sink.mirror(&mirrored, &inner.services[o.name]);
        }
    }
    inner.mirror_current.insert(o.name);
    Ok((executed, verified))
}

/// The sets of `desired` that `owner` mirrors.
fn mirrored<'a>(desired: &'a BTreeMap<String, SetSpec>, owner: &Owner) -> Vec<&'a SetSpec> {
    desired
        .values()
        .filter(|s| owner.mirrors(&s.name))
        .collect()
}

/// The plan for every set of `owner` (`desired`, its desired sets)
/// against `actual` (the kernel's sets as read): it refers to both, so it
/// takes the desired sets, not the store, which the plan's run writes.
fn plan_all<'a>(
    desired: &'a BTreeMap<String, SetSpec>,
    owner: &Owner,
    actual: &'a [ActualSet],
) -> Plan<'a> {
    diff::plan(desired.values(), actual, |n| owner.owns(n))
}

fn registered(inner: &Inner, owner: &str) -> Result<Owner, StoreError> {
    inner
        .owners
        .iter()
        .find(|o| o.name == owner)
        .cloned()
        .ok_or_else(|| StoreError::UnknownOwner(owner.to_string()))
}

/// The kernel's sets named in `only` (a partial apply): each is listed by
/// name, none of the others is read.
fn actual_some(
    inner: &mut Inner,
    owner: &Owner,
    only: &BTreeSet<String>,
) -> Result<Vec<ActualSet>, StoreError> {
    let mut actual = Vec::with_capacity(only.len());
    for n in only {
        actual.extend(list_actual(inner, owner, n)?);
    }
    Ok(actual)
}

/// The plan for just the sets named in `only` against `actual`.
fn plan_some<'a>(
    desired: &'a BTreeMap<String, SetSpec>,
    owner: &Owner,
    only: &BTreeSet<String>,
    actual: &'a [ActualSet],
) -> Plan<'a> {
    diff::plan(only.iter().filter_map(|n| desired.get(n)), actual, |n| {
        owner.owns(n) && only.contains(n)
    })
}

/// Reads the sets named in `only` and writes what differs from their
/// desired content.
fn run_some(
    inner: &mut Inner,
    owner: &Owner,
    only: &BTreeSet<String>,
) -> Result<Executed, StoreError> {
    let actual = actual_some(inner, owner, only)?;
    let plan = plan_some(&inner.desired[owner.name], owner, only, &actual);
    if plan.is_empty() {
        return Ok(Executed::default());
    }
    execute::run(inner.kernel.as_mut(), &plan)
}

/// Every set of `owner` in the kernel, read as `read` says.
fn read_actual(
    inner: &mut Inner,
    owner: &Owner,
    read: &Read,
) -> Result<Vec<ActualSet>, StoreError> {
    match read {
        Read::Deep => actual_for(inner, owner),
        Read::Headers(deep) => readback::actual_by_headers(inner, owner, deep),
    }
}

/// Brings the kernel to `owner`'s desired sets and reads back what was
/// written (the same way it read, naming the written sets); a no-op apply
/// just read the kernel. Returns what ran and whether the read-back found
/// the desired state: sets whose destruction was deferred (a rule still
/// uses them) are expected to be left over, not a sign of another writer.
fn sync_owner(
    inner: &mut Inner,
    owner: &Owner,
    read: &Read,
) -> Result<(Executed, bool), StoreError> {
    let actual = read_actual(inner, owner, read)?;
    let plan = plan_all(&inner.desired[owner.name], owner, &actual);
    if plan.is_empty() {
        return Ok((Executed::default(), true));
    }
    let executed = execute::run(inner.kernel.as_mut(), &plan)?;
    let again = match read {
        Read::Deep => Read::Deep,
        Read::Headers(_) => Read::Headers(plan.sets()),
    };
    drop(actual);
    let actual = read_actual(inner, owner, &again)?;
    let verified = plan_all(&inner.desired[owner.name], owner, &actual)
        .is_empty_but_destroying(&executed.destroy_deferred);
    Ok((executed, verified))
}

/// Records how a full apply of `owner` ended: only a verified one lets
/// its next full apply read cheaply (see readback.rs).
fn settle(inner: &mut Inner, owner: &Owner, outcome: Result<bool, &StoreError>) {
    if let Some(r) = inner.rotations.get_mut(owner.name) {
        r.settle(matches!(outcome, Ok(true)));
    }
}

/// After a partial apply of `owner` that failed or was not verified, its
/// next full apply reads deep.
fn unsettle_unless(inner: &mut Inner, owner: &Owner, ok: bool) {
    if !ok {
        settle(inner, owner, Ok(false));
    }
}

//! The smallest apply: the few members a partial sync adds to and drops
//! from sets the owner already has. Each member is written with a request
//! the kernel refuses when it already agrees (an add of a present member,
//! a del of an absent one), so the kernel is still what decides what is
//! written, and the cost follows the change, not the size of the sets.
//! Drift in the members not named waits for the next full apply or audit.

use std::{collections::BTreeSet, time::Instant};

use crate::{
    desired::{Member, MemberServices, SetDelta},
    kernel::ipset::{IpsetErrorKind, Request},
};

use super::{
    execute::{self, Executed},
    registered, run_some, unsettle_unless, ApplyReport, Inner, Owner, SetStore, StoreError,
};

/// What writing one member found.
enum Outcome {
    Written,
    AlreadySo,
    /// The set itself is gone from the kernel: apply it whole.
    SetMissing,
}

fn write(inner: &mut Inner, set: &str, member: &Member, add: bool) -> Result<Outcome, StoreError> {
    let name = execute::name(set)?;
    let element = [execute::element(set, member)?];
    let request = if add {
        Request::add(name, element)
    } else {
        Request::del(name, element)
    };
    match inner.kernel.execute(&request) {
        Ok(()) => Ok(Outcome::Written),
        Err(e) if add && e.is(IpsetErrorKind::MemberExists) => Ok(Outcome::AlreadySo),
        Err(e) if !add && e.is(IpsetErrorKind::MemberMissing) => Ok(Outcome::AlreadySo),
        Err(e) if e.is(IpsetErrorKind::SetMissing) => Ok(Outcome::SetMissing),
        Err(e) => Err(e.into()),
    }
}

impl SetStore {
    /// Adds and drops the members of `deltas` in `owner`'s desired sets
    /// (each set must be one the owner applied before) and in the kernel;
    /// `services` names the Service of each added mirrored member. A set
    /// found missing from the kernel is applied whole.
    pub fn apply_members(
        &self,
        owner: &str,
        deltas: &[SetDelta],
        services: &MemberServices,
    ) -> Result<ApplyReport, StoreError> {
        let start = Instant::now();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let o = registered(inner, owner)?;
        let applied = members_apply(inner, &o, deltas, services);
        unsettle_unless(inner, &o, applied.is_ok());
        Ok(ApplyReport {
            owner: owner.to_string(),
            executed: applied?,
            verified: true,
            duration: start.elapsed(),
        })
    }
}

/// [`SetStore::apply_members`] under the lock.
fn members_apply(
    inner: &mut Inner,
    o: &Owner,
    deltas: &[SetDelta],
    services: &MemberServices,
) -> Result<Executed, StoreError> {
    inner.mirror_current.remove(o.name);
    let desired = inner.desired.entry(o.name).or_default();
    if let Some(d) = deltas.iter().find(|d| !desired.contains_key(&d.set)) {
        return Err(StoreError::NotApplied {
            owner: o.name.to_string(),
            set: d.set.clone(),
        });
    }
    for d in deltas {
        let spec = desired.get_mut(&d.set).expect("checked above");
        spec.members.extend(d.add.iter().copied());
        for m in &d.del {
            spec.members.remove(m);
        }
    }
    let mut executed = Executed::default();
    let mut missing = BTreeSet::new();
    for d in deltas {
        let writes = d.add.iter().map(|m| (m, true));
        for (member, add) in writes.chain(d.del.iter().map(|m| (m, false))) {
            match write(inner, &d.set, member, add)? {
                Outcome::Written if add => executed.members_added += 1,
                Outcome::Written => executed.members_deleted += 1,
                Outcome::AlreadySo => {}
                Outcome::SetMissing => {
                    missing.insert(d.set.clone());
                    break;
                }
            }
        }
    }
    if !missing.is_empty() {
        let whole = run_some(inner, o, &missing)?;
        executed.created.extend(whole.created);
        executed.members_added += whole.members_added;
    }
    follow_services(inner, o.name, deltas, services);
    if let Some(sink) = inner.mirror.as_mut() {
        let mirrored: Vec<&SetDelta> = deltas.iter().filter(|d| o.mirrors(&d.set)).collect();
        if !mirrored.is_empty() {
            sink.mirror_changes(&mirrored, &inner.services[o.name]);
        }
    }
    Ok(executed)
}

/// Keeps the owner's member -> Service map in step with the deltas.
fn follow_services(
    inner: &mut Inner,
    owner: &'static str,
    deltas: &[SetDelta],
    services: &MemberServices,
) {
    let known = inner.services.entry(owner).or_default();
    for d in deltas {
        for m in &d.del {
            known.remove(m);
        }
        for m in &d.add {
            if let Some(svc) = services.get(m) {
                known.insert(*m, svc.clone());
            }
        }
    }
}

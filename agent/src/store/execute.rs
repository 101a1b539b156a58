//! Running a [`Plan`] through the kernel, make-before-break.

use crate::{
    desired::{Member, SetSpec},
    kernel::ipset::{CreateSet, Element, IpsetErrorKind, Request, SetName},
};

use super::{diff::Plan, SetKernel, StoreError};

/// Suffix of the name a replacement uses for a moment; it stays within
/// the owner's claim (see owners::Claim::covers).
pub(super) const NEW_SUFFIX: &str = ".new";

/// What one run of a plan did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Executed {
    pub created: Vec<String>,
    pub replaced: Vec<String>,
    pub destroyed: Vec<String>,
    /// Sets that could not be destroyed because iptables still references
    /// them; retried on the next apply or audit.
    pub destroy_deferred: Vec<String>,
    pub members_added: usize,
    pub members_deleted: usize,
}

pub(super) fn name(s: &str) -> Result<SetName, StoreError> {
    SetName::new(s).map_err(|e| StoreError::BadName {
        set: s.to_string(),
        reason: e.to_string(),
    })
}

/// The kernel form of a desired member of `set`.
pub(super) fn element(set: &str, member: &Member) -> Result<Element, StoreError> {
    Element::try_from(member).map_err(|e| StoreError::BadMember {
        set: set.to_string(),
        member: member.to_string(),
        reason: e.to_string(),
    })
}

/// The kernel form of desired members of `set`.
pub(super) fn elements<'a>(
    set: &str,
    members: impl IntoIterator<Item = &'a Member>,
) -> Result<Vec<Element>, StoreError> {
    members.into_iter().map(|m| element(set, m)).collect()
}

fn members(spec: &SetSpec) -> Result<Vec<Element>, StoreError> {
    elements(&spec.name, &spec.members)
}

/// The kernel's default cap on members; ours is raised for big sets.
const DEFAULT_MAXELEM: u32 = 65_536;

fn kernel_spec(spec: &SetSpec, as_name: &str) -> Result<CreateSet, StoreError> {
    let n = u32::try_from(spec.members.len()).unwrap_or(u32::MAX);
    // Room to double before "set full"; a hash table sized for the members
    // from the start instead of resized again and again while filling.
    let maxelem = DEFAULT_MAXELEM.max(n.saturating_mul(2).next_power_of_two());
    let hashsize = n.next_power_of_two().clamp(1024, 1 << 20);
    Ok(CreateSet::new(name(as_name)?, spec.set_type, spec.family)
        .maxelem(maxelem)
        .hashsize(hashsize))
}

/// Runs `plan`. Members change one by one (never a flush of a set in use).
/// A set whose type or family changes cannot be swapped, renamed or
/// destroyed while a rule uses it, so it is replaced make-before-break:
/// built under `NAME.new`, the rules moved to it, the old set destroyed,
/// the set rebuilt as `NAME`, the rules moved back, `NAME.new` destroyed.
pub(super) fn run(kernel: &mut dyn SetKernel, plan: &Plan<'_>) -> Result<Executed, StoreError> {
    let mut done = Executed::default();
    for spec in &plan.create {
        // Another writer may have created it since we listed: -exist.
        kernel.execute(&Request::create(kernel_spec(spec, &spec.name)?).exist_ok())?;
        let m = members(spec)?;
        done.members_added += m.len();
        kernel.execute(&Request::add(name(&spec.name)?, m).exist_ok())?;
        done.created.push(spec.name.clone());
    }
    for spec in &plan.replace {
        replace(kernel, spec, &mut done)?;
    }
    for (set, add) in &plan.add {
        let m = elements(set, add.iter().copied())?;
        done.members_added += m.len();
        kernel.execute(&Request::add(name(set)?, m).exist_ok())?;
    }
    for (set, del) in &plan.delete {
        let m = elements(set, del.iter().copied())?;
        done.members_deleted += m.len();
        kernel.execute(&Request::del(name(set)?, m).exist_ok())?;
    }
    for (set, del) in &plan.delete_unrepresentable {
        done.members_deleted += del.len();
        let m: Vec<Element> = del.iter().map(|&e| e.clone()).collect();
        kernel.execute(&Request::del(name(set)?, m).exist_ok())?;
    }
    for set in &plan.destroy {
        destroy(kernel, set, &mut done)?;
    }
    Ok(done)
}

fn replace(
    kernel: &mut dyn SetKernel,
    spec: &SetSpec,
    done: &mut Executed,
) -> Result<(), StoreError> {
    let new = format!("{}{NEW_SUFFIX}", spec.name);
    // Leftovers of an interrupted replacement.
    if destroy_if_there(kernel, &new).is_err() {
        switch(kernel, &new, &spec.name)?;
        destroy_if_there(kernel, &new)?;
    }
    // Make: the new content under a fresh name; rules move to it.
    create_filled(kernel, spec, &new, done)?;
    switch(kernel, &spec.name, &new)?;
    // Break: nothing references the old set now.
    destroy_if_there(kernel, &spec.name)?;
    // And back under the real name, so rules and names stay stable.
    create_filled(kernel, spec, &spec.name, done)?;
    switch(kernel, &new, &spec.name)?;
    destroy_if_there(kernel, &new)?;
    done.replaced.push(spec.name.clone());
    Ok(())
}

fn create_filled(
    kernel: &mut dyn SetKernel,
    spec: &SetSpec,
    as_name: &str,
    done: &mut Executed,
) -> Result<(), StoreError> {
    kernel.execute(&Request::create(kernel_spec(spec, as_name)?))?;
    let m = members(spec)?;
    done.members_added += m.len();
    kernel.execute(&Request::add(name(as_name)?, m).exist_ok())?;
    Ok(())
}

fn switch(kernel: &mut dyn SetKernel, from: &str, to: &str) -> Result<(), StoreError> {
    kernel
        .switch_references(from, to)
        .map(drop)
        .map_err(|source| StoreError::Switch {
            from: from.to_string(),
            to: to.to_string(),
            source: Box::new(source),
        })
}

/// `ipset -exist destroy`: a set already gone is success.
fn destroy_if_there(kernel: &mut dyn SetKernel, set: &str) -> Result<(), StoreError> {
    Ok(kernel.execute(&Request::destroy(name(set)?).exist_ok())?)
}

/// Destroys `set`; a set still referenced by a rule is left for later.
fn destroy(kernel: &mut dyn SetKernel, set: &str, done: &mut Executed) -> Result<(), StoreError> {
    match kernel.execute(&Request::destroy(name(set)?).exist_ok()) {
        Ok(()) => {
            done.destroyed.push(set.to_string());
            Ok(())
        }
        Err(e) if e.is(IpsetErrorKind::InUse) => {
            done.destroy_deferred.push(set.to_string());
            Ok(())
        }
        Err(e) => Err(StoreError::Kernel(e)),
    }
}

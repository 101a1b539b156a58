//! What the kernel holds of an owner's sets, listed by name and compared
//! with what the owner wants (a set that holds exactly the desired members
//! is not copied member by member).

use std::collections::BTreeSet;

use super::{diff::ActualSet, execute, Inner, Owner, StoreError};
use crate::{
    desired::{Member, SetSpec},
    kernel::ipset::{Element, IpSet, IpsetErrorKind},
};

/// The kernel's sets within `owner`'s claims (and only those: a foreign
/// set is never even listed with its members).
pub(super) fn actual_for(inner: &mut Inner, owner: &Owner) -> Result<Vec<ActualSet>, StoreError> {
    let names: Vec<String> = inner
        .kernel
        .list_names()?
        .into_iter()
        .filter(|n| owner.owns(n))
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        out.extend(list_actual(inner, owner, &n)?);
    }
    Ok(out)
}

/// Set `name` listed with its members and compared with `owner`'s desired
/// set of that name; None when it is gone (destroyed by someone since the
/// dump that named it: it is missing).
pub(super) fn list_actual(
    inner: &mut Inner,
    owner: &Owner,
    name: &str,
) -> Result<Option<ActualSet>, StoreError> {
    let set = match inner.kernel.list(&execute::name(name)?) {
        Ok(s) => s,
        Err(e) if e.is(IpsetErrorKind::SetMissing) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let want = inner.desired.get(owner.name).and_then(|d| d.get(name));
    Ok(Some(actual_set(name.to_string(), set, want)))
}

/// One listed set; its members are compared with `want` (the desired set
/// of that name) in place and kept only when they differ.
fn actual_set(name: String, set: IpSet, want: Option<&SetSpec>) -> ActualSet {
    let as_desired = want.is_some_and(|w| holds_exactly(&set.members, &w.members));
    let (members, unrepresentable) = if as_desired {
        (BTreeSet::new(), Vec::new())
    } else {
        typed_members(set.members)
    };
    ActualSet {
        name,
        set_type: set.header.set_type,
        family: set.header.family,
        members,
        unrepresentable,
        as_desired,
    }
}

/// Whether the kernel's `elements` are exactly `want` (a set lists each
/// member once, so as many, each wanted, is the same set).
fn holds_exactly(elements: &[Element], want: &BTreeSet<Member>) -> bool {
    elements.len() == want.len()
        && elements
            .iter()
            .all(|e| e.to_desired().is_some_and(|m| want.contains(&m)))
}

/// The kernel's members as desired members, and those none stands for.
fn typed_members(elements: Vec<Element>) -> (BTreeSet<Member>, Vec<Element>) {
    let mut typed = BTreeSet::new();
    let mut other = Vec::new();
    for e in elements {
        match e.to_desired() {
            Some(m) => {
                typed.insert(m);
            }
            None => other.push(e),
        }
    }
    (typed, other)
}

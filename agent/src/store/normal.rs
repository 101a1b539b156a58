//! Desired members as the kernel will hold them (a network's host bits
//! cleared), so that the diff against what it lists is exact; a member no
//! set of that type can hold is refused before anything is written.

use std::{
    borrow::Cow,
    collections::{BTreeMap, BTreeSet},
};

use super::{execute, StoreError};
use crate::desired::{Member, SetSpec};

/// `sets` by name, their members normalised: lent sets are copied one at a
/// time, handed ones kept as they are unless a member changes.
pub(super) fn normalised(
    sets: Cow<'_, [SetSpec]>,
) -> Result<BTreeMap<String, SetSpec>, StoreError> {
    let mut wanted = BTreeMap::new();
    let mut keep = |mut s: SetSpec| {
        normalise_in_place(&mut s)?;
        wanted.insert(s.name.clone(), s);
        Ok::<_, StoreError>(())
    };
    match sets {
        Cow::Borrowed(sets) => sets.iter().cloned().try_for_each(&mut keep)?,
        Cow::Owned(sets) => sets.into_iter().try_for_each(&mut keep)?,
    }
    Ok(wanted)
}

/// [`normalise`]d, rebuilding the members only when one of them changes
/// (most sets hold addresses, which normalise to themselves).
fn normalise_in_place(s: &mut SetSpec) -> Result<(), StoreError> {
    let mut unchanged = true;
    for m in &s.members {
        unchanged &= normal_form(s, m)? == *m;
    }
    if !unchanged {
        s.members = normalise(s)?;
    }
    Ok(())
}

/// Members as the kernel will hold them (a network's host bits cleared),
/// so comparisons with what it lists are exact; a member that does not fit
/// the set's type, or that no set can hold, is refused.
pub(super) fn normalise(s: &SetSpec) -> Result<BTreeSet<Member>, StoreError> {
    s.members.iter().map(|m| normal_form(s, m)).collect()
}

/// Member `m` of `s` as the kernel will hold it.
fn normal_form(s: &SetSpec, m: &Member) -> Result<Member, StoreError> {
    if m.set_type() != s.set_type {
        return Err(StoreError::BadMember {
            set: s.name.clone(),
            member: m.to_string(),
            reason: format!("a {} member in a {} set", m.set_type(), s.set_type),
        });
    }
    let element = execute::element(&s.name, m)?;
    Ok(element.to_desired().unwrap_or(*m))
}

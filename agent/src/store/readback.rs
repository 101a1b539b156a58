//! What a full apply reads of the kernel.
//!
//! A deep read dumps every set of the owner with its members (one dump per
//! set). Once an owner's full apply has left the kernel verified equal to
//! its sets, its next full applies read cheaply: one dump of every set's
//! header (`ipset list -t`: name, type, family and entry count, no member),
//! compared with the desired sets, which catches a set destroyed, flushed,
//! retyped, a member deleted or a foreign one added; and the members of
//! only the sets whose header differs, whose desired content changed since
//! the last apply, and a rotating share of the others (the scrub), so that
//! drift keeping the count (a member swapped for another) is found within
//! [`SCRUB_PERIODS`] full applies. The first full apply of an owner, and
//! the first after any failed or unverified apply of it, read deep.
//!
//! The header dump costs the kernel a walk of every set on the node (it
//! counts a hash set's entries bucket by bucket), so an owner with few of
//! the node's sets (the service proxy's six beside the policies' 1,600)
//! instead takes the names (a dump that walks no set) and asks for the
//! header of each of its sets by name.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound::{Excluded, Included, Unbounded},
};

use super::{actual::list_actual, diff::ActualSet, execute, Inner, Owner, StoreError};
use crate::{
    desired::SetSpec,
    kernel::ipset::{IpSet, IpsetErrorKind, Listing},
};

/// Every set is compared member by member at least once in this many
/// cheap full applies of its owner (`--help` of the sync periods says so).
pub const SCRUB_PERIODS: usize = 10;

/// One header request by name costs about as much as this many sets of
/// the node-wide header dump (BENCHMARKS.md, "The services' no-op `sets`
/// step: headers by name"): an owner reads its headers by name while its
/// sets times this are fewer than the node's sets.
pub const BY_NAME_RATIO: usize = 4;

/// How one full apply reads the kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Read {
    /// Every set of the owner, with its members.
    Deep,
    /// Every set's header; the members of these sets, and of those whose
    /// header differs from the desired set.
    Headers(BTreeSet<String>),
}

/// One owner's reads, between its full applies.
#[derive(Debug, Default)]
pub(super) struct Rotation {
    /// The owner's last full apply left the kernel verified equal to its
    /// desired sets, and no apply of it failed since.
    settled: bool,
    scrub: Scrub,
    /// How many sets the node held at the owner's last read of every
    /// set's name or header (None: not read yet, so the first read is the
    /// dump, which counts them).
    node_sets: Option<usize>,
    /// Reads by name since the node's set names were last read.
    names_age: usize,
    /// The owner's sets the last read found: read by name again with the
    /// desired ones, so a set no longer desired is still seen to destroy.
    known: BTreeSet<String>,
}

impl Rotation {
    /// How this full apply reads, `changed` naming the sets whose desired
    /// content it changes.
    pub(super) fn read(
        &mut self,
        desired: &BTreeMap<String, SetSpec>,
        changed: BTreeSet<String>,
    ) -> Read {
        if !self.settled {
            return Read::Deep;
        }
        let mut deep = changed;
        deep.extend(self.scrub.share(desired));
        Read::Headers(deep)
    }

    /// Whether the kernel was left verified equal to the desired sets.
    pub(super) fn settle(&mut self, settled: bool) {
        self.settled = settled;
    }

    /// Whether an owner of `owned` sets reads their headers by name.
    fn by_name(&self, owned: usize) -> bool {
        self.node_sets
            .is_some_and(|node| owned.saturating_mul(BY_NAME_RATIO) < node)
    }

    /// Whether this read by name takes the node's set names first: at
    /// least once in [`SCRUB_PERIODS`] of them, the only way to see a set
    /// of ours that another program created.
    fn names_due(&mut self) -> bool {
        self.names_age += 1;
        self.names_age >= SCRUB_PERIODS
    }

    /// The node's `sets` were all read (names or headers).
    fn counted(&mut self, sets: usize) {
        self.node_sets = Some(sets);
        self.names_age = 0;
    }
}

/// The round robin over an owner's sets whose members the cheap reads
/// list. Each share is paid from a credit of a [`SCRUB_PERIODS`]-th of the
/// sets' cost (a set costs its members plus one, for its dump): a big set
/// takes a share to itself and the next shares pay off its debt, so the
/// work is spread over the periods, and [`SCRUB_PERIODS`] shares in a row
/// walk the whole cycle, taking every set (while the sets stay the same).
#[derive(Debug, Default)]
pub(super) struct Scrub {
    /// Where the next share starts (None: at the first set).
    next: Option<String>,
    /// Cost that may still be taken; negative after a big set.
    credit: i64,
}

impl Scrub {
    /// This time's share: the sets from where the last one stopped, round
    /// robin, while there is credit.
    pub(super) fn share(&mut self, desired: &BTreeMap<String, SetSpec>) -> BTreeSet<String> {
        let cost = |s: &SetSpec| s.members.len() + 1;
        let total: usize = desired.values().map(cost).sum();
        self.credit += total.div_ceil(SCRUB_PERIODS) as i64;
        let from = self.next.take().unwrap_or_default();
        let mut cycle = desired
            .range::<str, _>((Included(from.as_str()), Unbounded))
            .chain(desired.range::<str, _>((Unbounded, Excluded(from.as_str()))))
            .peekable();
        let mut share = BTreeSet::new();
        while self.credit > 0 {
            let Some((name, set)) = cycle.next() else {
                break;
            };
            share.insert(name.clone());
            self.credit -= cost(set) as i64;
        }
        self.next = match cycle.peek() {
            Some((name, _)) => Some((*name).clone()),
            // The whole cycle taken: the next share starts where this one
            // began, with no credit left over.
            None => {
                self.credit = self.credit.min(0);
                Some(from)
            }
        };
        share
    }
}

/// The kernel's sets within `owner`'s claims, read as `deep` says: a set
/// whose header matches its desired set and that is not named is taken as
/// desired without listing its members.
pub(super) fn actual_by_headers(
    inner: &mut Inner,
    owner: &Owner,
    deep: &BTreeSet<String>,
) -> Result<Vec<ActualSet>, StoreError> {
    let listing = owned_headers(inner, owner)?;
    let desired = &inner.desired[owner.name];
    // A set of ours ipwarden cannot read is listed to fail as a deep read does.
    let mut to_list: Vec<String> = listing
        .unsupported
        .into_iter()
        .map(|u| u.name)
        .filter(|n| owner.owns(n))
        .collect();
    let mut out = Vec::new();
    for set in listing.sets {
        let name = set.name.as_str();
        if !owner.owns(name) {
            continue;
        }
        // A set nobody wants is destroyed and one of another type or
        // family replaced: neither needs its members read.
        let Some(want) = desired.get(name).filter(|w| same_kind(&set, w)) else {
            out.push(header_only(set, false));
            continue;
        };
        let entries = set.stats.map(|s| s.entries as usize);
        if deep.contains(name) || entries != Some(want.members.len()) {
            to_list.push(name.to_string());
        } else {
            out.push(header_only(set, true));
        }
    }
    for name in to_list {
        out.extend(list_actual(inner, owner, &name)?);
    }
    Ok(out)
}

/// The headers of the kernel's sets, at least of every set `owner`
/// claims: one header dump of every set, or one header request per set of
/// the owner's, whichever its rotation finds cheaper. By name, the sets
/// asked for are the desired ones and those the last read found; the
/// node's names (a dump that costs as much as the rest of a no-op
/// `sets` step: BENCHMARKS.md, "Stop 19's final main") are read only once
/// in [`SCRUB_PERIODS`] reads, so a set of ours another program created
/// is destroyed within as many full applies.
fn owned_headers(inner: &mut Inner, owner: &Owner) -> Result<Listing, StoreError> {
    let desired = &inner.desired[owner.name];
    let rotation = inner.rotations.entry(owner.name).or_default();
    if !rotation.by_name(desired.len()) {
        let listing = inner.kernel.list_headers()?;
        rotation.counted(listing.sets.len() + listing.unsupported.len());
        rotation.known = listing
            .sets
            .iter()
            .map(|s| s.name.to_string())
            .filter(|n| owner.owns(n))
            .collect();
        return Ok(listing);
    }
    let names: BTreeSet<String> = if rotation.names_due() {
        let names = inner.kernel.list_names()?;
        rotation.counted(names.len());
        names.into_iter().filter(|n| owner.owns(n)).collect()
    } else {
        let known = std::mem::take(&mut rotation.known);
        known.into_iter().chain(desired.keys().cloned()).collect()
    };
    let mut sets = Vec::new();
    for name in names.iter().filter(|n| owner.owns(n)) {
        // A set we cannot read fails here as a deep read's list does.
        match inner.kernel.list_header(&execute::name(name)?) {
            Ok(set) => sets.push(set),
            // Destroyed since the names were read: it is missing.
            Err(e) if e.is(IpsetErrorKind::SetMissing) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let rotation = inner.rotations.entry(owner.name).or_default();
    rotation.known = sets.iter().map(|s| s.name.to_string()).collect();
    Ok(Listing {
        sets,
        unsupported: Vec::new(),
    })
}

/// Type and family as desired; another one is replaced whole.
fn same_kind(set: &IpSet, want: &SetSpec) -> bool {
    set.header.set_type == want.set_type && set.header.family == want.family
}

fn header_only(set: IpSet, as_desired: bool) -> ActualSet {
    ActualSet {
        name: set.name.to_string(),
        set_type: set.header.set_type,
        family: set.header.family,
        members: BTreeSet::new(),
        unrepresentable: Vec::new(),
        as_desired,
    }
}

/// The names of `desired`'s sets whose content differs from `last`'s.
pub(super) fn changed_sets(
    last: &BTreeMap<String, SetSpec>,
    desired: &BTreeMap<String, SetSpec>,
) -> BTreeSet<String> {
    desired
        .iter()
        .filter(|(name, s)| last.get(*name) != Some(*s))
        .map(|(name, _)| name.clone())
        .collect()
}

//! The hook through which the eBPF mirror follows the service sets. The
//! store calls it, so the store owns the trait; bpf/ implements it and
//! cli/ wires the two together.

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::{Member, MemberServices, SetDelta, SetSpec};

/// A subscriber to the mirrored sets (the BPF map writer).
pub trait MirrorSink {
    /// Called after every successful apply with exactly the desired content
    /// of the owner's mirrored sets, and the Service each member serves
    /// (as the owner handed them to the store).
    fn mirror(&mut self, sets: &[&SetSpec], services: &MemberServices);

    /// Called after a member-level apply with the members the owner's
    /// mirrored sets gained and lost, and the owner's member -> Service map
    /// as it now stands.
    fn mirror_changes(&mut self, deltas: &[&SetDelta], services: &MemberServices);

    /// Called by the auditor with the mirrored members it found desired but
    /// missing from the kernel (set name -> members); an empty map means
    /// none are missing any more.
    fn missing_from_kernel(&mut self, _missing: &BTreeMap<String, BTreeSet<Member>>) {}

    /// Compares the mirror with `sets`, repairs any difference and returns
    /// how many entries were wrong.
    fn audit(&mut self, _sets: &[&SetSpec], _services: &MemberServices) -> usize {
        0
    }
}

//! The hook through which the eBPF mirror follows the service sets.

use std::collections::{BTreeMap, BTreeSet};

use crate::desired::SetSpec;

/// A subscriber to the mirrored sets (the BPF map writer).
pub trait MirrorSink {
    /// Called after every successful apply with exactly the desired content
    /// of the owner's mirrored sets.
    fn mirror(&mut self, sets: &[&SetSpec]);

    /// Called by the auditor with the mirrored members it found desired but
    /// missing from the kernel (set name -> members); an empty map means
    /// none are missing any more.
    fn missing_from_kernel(&mut self, _missing: &BTreeMap<String, BTreeSet<String>>) {}

    /// Compares the mirror with `sets`, repairs any difference and returns
    /// how many entries were wrong.
    fn audit(&mut self, _sets: &[&SetSpec]) -> usize {
        0
    }
}

//! When a full sync may keep a controller's incremental state instead of
//! recomputing it from the snapshot: a periodic full sync with no change
//! noted since the last successful sync. The property tests hold the
//! incremental state equal to a recompute (`controllers/services/
//! tests_table.rs`, `controllers/policies/incremental/`); every
//! `RECOMPUTE_EVERY`th full sync, any other full sync (start, relist,
//! after a failure) and any with changes recompute all the same. The
//! kernel is read back and repaired either way.

use super::schedule::FullReason;

/// One full sync in this many recomputes even when nothing changed.
pub const RECOMPUTE_EVERY: u32 = 10;

/// A cheap way taken at most `RECOMPUTE_EVERY - 1` times in a row, and
/// only while allowed: the full way comes back on its own.
#[derive(Debug, Default)]
pub struct Cadence {
    cheap_in_a_row: u32,
}

impl Cadence {
    /// Whether this time may take the cheap way.
    pub fn cheap_now(&mut self, allowed: bool) -> bool {
        let cheap = allowed && self.cheap_in_a_row + 1 < RECOMPUTE_EVERY;
        self.cheap_in_a_row = if cheap { self.cheap_in_a_row + 1 } else { 0 };
        cheap
    }
}

#[derive(Debug, Default)]
pub struct KeepState {
    periodic: bool,
    cadence: Cadence,
}

impl KeepState {
    /// Why the next full sync runs (None: it is partial).
    pub fn set_reason(&mut self, reason: Option<FullReason>) {
        self.periodic = reason == Some(FullReason::Period);
    }

    /// Whether this full sync keeps the state; `unchanged`: no change
    /// noted since the last successful sync, which left a state to keep.
    pub fn keep_now(&mut self, unchanged: bool) -> bool {
        self.cadence.cheap_now(self.periodic && unchanged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unchanged_periodic_syncs_keep_and_every_tenth_recomputes() {
        let mut k = KeepState::default();
        k.set_reason(Some(FullReason::Start));
        assert!(!k.keep_now(true));
        k.set_reason(Some(FullReason::Period));
        assert!(!k.keep_now(false));
        let kept: Vec<bool> = (0..RECOMPUTE_EVERY).map(|_| k.keep_now(true)).collect();
        let mut want = vec![true; RECOMPUTE_EVERY as usize - 1];
        want.push(false);
        assert_eq!(kept, want);
        for reason in [FullReason::Relist, FullReason::Failure] {
            k.set_reason(Some(reason));
            assert!(!k.keep_now(true), "{reason:?}");
        }
    }
}

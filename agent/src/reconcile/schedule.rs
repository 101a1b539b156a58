//! When a controller syncs, and how much: a port of kube-proxy's
//! BoundedFrequencyRunner as a pure state machine (no clock of its own, so
//! every decision is unit-tested with made-up instants).
//!
//! - Requests coalesce: any number of changes before a sync starts make one
//!   sync.
//! - A sync starts no sooner than `min_interval` after the previous one
//!   started (the debounce, kube-proxy's `--min-sync-period`).
//! - A full sync (read everything back, repair drift) runs first, after a
//!   failure, after a relist, and every `full_interval`; other syncs are
//!   partial (only what changed).
//! - A failed sync is retried after a backoff that doubles up to a cap, and
//!   the retry is full (a failure may have left anything half done).

use std::time::{Duration, Instant};

/// How much a sync covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncKind {
    /// Only the objects that changed since the last sync.
    Partial,
    /// Everything, read back from the kernel and repaired.
    Full,
}

/// Why a full sync is due (for logs and metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullReason {
    Start,
    Relist,
    Failure,
    Period,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    pub min_interval: Duration,
    pub full_interval: Duration,
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(1),
            full_interval: Duration::from_secs(300),
            retry_min: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
        }
    }
}

/// One controller's schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    intervals: Intervals,
    /// Changes arrived since the last sync started.
    pending: bool,
    /// When the first of those changes arrived (for "queued too long").
    pending_since: Option<Instant>,
    full_due: Option<FullReason>,
    last_start: Option<Instant>,
    last_full: Option<Instant>,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// What to do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Start a sync of this kind now.
    Sync(SyncKind),
    /// Nothing before this instant (unless a request comes).
    WaitUntil(Instant),
}

impl Schedule {
    /// A schedule whose first sync is full, as soon as the source is ready.
    pub fn new(intervals: Intervals) -> Self {
        Self {
            intervals,
            pending: false,
            pending_since: None,
            full_due: Some(FullReason::Start),
            last_start: None,
            last_full: None,
            retry_at: None,
            backoff: intervals.retry_min,
        }
    }

    /// Something this controller reads changed.
    pub fn request(&mut self, now: Instant) {
        self.pending = true;
        self.pending_since.get_or_insert(now);
    }

    /// A relist (or anything that may hide deletes): the next sync is full.
    pub fn request_full(&mut self, now: Instant, reason: FullReason) {
        self.request(now);
        if self.full_due.is_none() {
            self.full_due = Some(reason);
        }
    }

    /// Since when work has waited, if any (kube-proxy's healthz rule).
    pub fn queued_since(&self) -> Option<Instant> {
        self.pending_since
    }

    pub fn full_reason(&self) -> Option<FullReason> {
        self.full_due
    }

    /// The decision at `now`.
    pub fn next(&self, now: Instant) -> Next {
        let period_due = self
            .last_full
            .map(|t| t + self.intervals.full_interval)
            .unwrap_or(now);
        let full = self.full_due.is_some() || now >= period_due;
        let mut due = if full || self.pending {
            now
        } else {
            period_due
        };
        if let Some(retry) = self.retry_at {
            due = due.max(retry);
        }
        if let Some(last) = self.last_start {
            due = due.max(last + self.intervals.min_interval);
        }
        if due > now {
            return Next::WaitUntil(due);
        }
        Next::Sync(if full {
            SyncKind::Full
        } else {
            SyncKind::Partial
        })
    }

    /// Why the full sync `next` just chose is due.
    pub fn full_sync_reason(&self) -> FullReason {
        match (self.full_due, self.last_full) {
            (Some(reason), _) => reason,
            (None, None) => FullReason::Start,
            (None, Some(_)) => FullReason::Period,
        }
    }

    /// A sync of `kind` starts: what was pending is now being handled.
    pub fn started(&mut self, now: Instant, kind: SyncKind) {
        self.last_start = Some(now);
        self.pending = false;
        self.pending_since = None;
        if kind == SyncKind::Full {
            self.full_due = None;
        }
    }

    /// The sync that started at `started` ended.
    pub fn finished(&mut self, now: Instant, started: Instant, kind: SyncKind, ok: bool) {
        if ok {
            self.retry_at = None;
            self.backoff = self.intervals.retry_min;
            if kind == SyncKind::Full {
                self.last_full = Some(started);
            }
        } else {
            self.retry_at = Some(now + self.backoff);
            self.backoff = (self.backoff * 2).min(self.intervals.retry_max);
            self.full_due = Some(FullReason::Failure);
            // The work is not done: it counts as queued again.
            self.pending = true;
            self.pending_since.get_or_insert(started);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intervals() -> Intervals {
        Intervals {
            min_interval: Duration::from_secs(1),
            full_interval: Duration::from_secs(300),
            retry_min: Duration::from_secs(2),
            retry_max: Duration::from_secs(8),
        }
    }

    fn s(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    #[test]
    fn the_first_sync_is_full_and_then_idle_until_the_period() {
        let t0 = Instant::now();
        let mut sch = Schedule::new(intervals());
        assert_eq!(sch.next(t0), Next::Sync(SyncKind::Full));
        sch.started(t0, SyncKind::Full);
        sch.finished(s(t0, 0.2), t0, SyncKind::Full, true);
        assert_eq!(sch.next(s(t0, 0.2)), Next::WaitUntil(s(t0, 300.0)));
        assert_eq!(sch.next(s(t0, 300.0)), Next::Sync(SyncKind::Full));
        assert_eq!(sch.full_sync_reason(), FullReason::Period);
    }

    #[test]
    fn changes_coalesce_into_one_partial_sync_no_sooner_than_the_debounce() {
        let t0 = Instant::now();
        let mut sch = Schedule::new(intervals());
        sch.started(t0, SyncKind::Full);
        sch.finished(s(t0, 0.1), t0, SyncKind::Full, true);
        sch.request(s(t0, 0.3));
        sch.request(s(t0, 0.5));
        assert_eq!(sch.queued_since(), Some(s(t0, 0.3)));
        // Within a second of the last start: wait for the debounce.
        assert_eq!(sch.next(s(t0, 0.5)), Next::WaitUntil(s(t0, 1.0)));
        assert_eq!(sch.next(s(t0, 1.0)), Next::Sync(SyncKind::Partial));
        sch.started(s(t0, 1.0), SyncKind::Partial);
        assert_eq!(sch.queued_since(), None);
        sch.finished(s(t0, 1.01), s(t0, 1.0), SyncKind::Partial, true);
        assert!(
            matches!(sch.next(s(t0, 1.02)), Next::WaitUntil(_)),
            "both changes were handled by one sync"
        );
    }

    #[test]
    fn a_relist_makes_the_next_sync_full() {
        let t0 = Instant::now();
        let mut sch = Schedule::new(intervals());
        sch.started(t0, SyncKind::Full);
        sch.finished(t0, t0, SyncKind::Full, true);
        sch.request_full(s(t0, 5.0), FullReason::Relist);
        assert_eq!(sch.next(s(t0, 5.0)), Next::Sync(SyncKind::Full));
        assert_eq!(sch.full_sync_reason(), FullReason::Relist);
    }

    #[test]
    fn failures_retry_fully_with_a_doubling_capped_backoff() {
        let t0 = Instant::now();
        let mut sch = Schedule::new(intervals());
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..4 {
            let Next::Sync(kind) = sch.next(now) else {
                panic!("a retry is due at {now:?}")
            };
            assert_eq!(kind, SyncKind::Full, "a retry after a failure is full");
            sch.started(now, kind);
            sch.finished(now, now, kind, false);
            assert_eq!(sch.full_reason(), Some(FullReason::Failure));
            let Next::WaitUntil(at) = sch.next(now) else {
                panic!("a failed sync is not retried at once")
            };
            waits.push((at - now).as_secs());
            now = at;
        }
        assert_eq!(waits, [2, 4, 8, 8]);
        let Next::Sync(kind) = sch.next(now) else {
            panic!()
        };
        sch.started(now, kind);
        sch.finished(now, now, kind, true);
        sch.request(s(now, 0.0));
        assert_eq!(
            sch.next(s(now, 1.0)),
            Next::Sync(SyncKind::Partial),
            "success resets the backoff"
        );
    }

    #[test]
    fn work_queued_during_a_failed_sync_stays_queued() {
        let t0 = Instant::now();
        let mut sch = Schedule::new(intervals());
        sch.started(t0, SyncKind::Full);
        sch.finished(s(t0, 1.0), t0, SyncKind::Full, false);
        assert_eq!(sch.queued_since(), Some(t0));
    }
}

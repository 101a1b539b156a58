//! The order of the two controllers' first filter writes.
//!
//! Both write the IPv4 filter table under one lock, and each write reads
//! the whole table first and again after. The policy controller's first
//! write is thousands of rules; when it goes first, the service
//! controller's ten lines wait for its restore and then read those
//! thousands of rules twice (BENCHMARKS.md, "The order of the first
//! filter writes": 63 s of waiting and 21 s of reading at 10k Services in
//! the VM). So the policy controller's first chain write waits until the
//! service controller's first sync is over (written or failed), for at
//! most [`WAIT_AT_MOST`]: its index and sets are built meanwhile.

use std::{
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use crate::locks::LockOrRecover;

/// A stuck or slow service controller delays the policies this long.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(30);

/// Opened once by the service controller's first sync; waited on once by
/// the policy controller's first chain write.
#[derive(Clone, Debug, Default)]
pub struct FirstWrite(Arc<(Mutex<bool>, Condvar)>);

impl FirstWrite {
    pub fn new() -> Self {
        Self::default()
    }

    /// The service controller's first sync is over.
    pub fn open(&self) {
        let (done, changed) = &*self.0;
        *done.lock_or_recover() = true;
        changed.notify_all();
    }

    /// Waits until [`Self::open`], or `at_most`; true when opened.
    pub fn wait(&self, at_most: Duration) -> bool {
        let (done, changed) = &*self.0;
        let guard = done.lock_or_recover();
        let (guard, _) = changed
            .wait_timeout_while(guard, at_most, |done| !*done)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::FirstWrite;

    #[test]
    fn a_wait_ends_when_opened_or_at_the_bound() {
        let latch = FirstWrite::new();
        assert!(!latch.wait(Duration::from_millis(1)), "not opened yet");
        let opener = latch.clone();
        let t = std::thread::spawn(move || opener.open());
        assert!(latch.wait(Duration::from_secs(600)), "opened by the thread");
        t.join().unwrap();
        assert!(latch.wait(Duration::ZERO), "stays open");
    }
}

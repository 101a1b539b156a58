//! One lock policy for the crate: a poisoned lock is taken anyway.
//!
//! A panic ends the agent (cli/panics.rs), so poison is only ever seen by
//! the threads still running while it exits, and by tests. Panicking there
//! too would bury the first panic under others. What these locks guard is
//! either rebuilt from the cluster or the kernel on the next pass, or
//! changed in one step under the lock, so the value is usable as it is.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `lock()` that recovers from poison.
pub trait LockOrRecover<T: ?Sized> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T>;
}

impl<T: ?Sized> LockOrRecover<T> for Mutex<T> {
    fn lock_or_recover(&self) -> MutexGuard<'_, T> {
        self.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `read()` and `write()` that recover from poison.
pub trait RwLockOrRecover<T: ?Sized> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T>;
    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T>;
}

impl<T: ?Sized> RwLockOrRecover<T> for RwLock<T> {
    fn read_or_recover(&self) -> RwLockReadGuard<'_, T> {
        self.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_or_recover(&self) -> RwLockWriteGuard<'_, T> {
        self.write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lock_poisoned_by_a_panic_is_still_taken_with_its_value() {
        let m = Mutex::new(1);
        let rw = RwLock::new(1);
        let _ = std::panic::catch_unwind(|| {
            let _m = m.lock().unwrap();
            let _rw = rw.write().unwrap();
            panic!("poison both");
        });
        assert!(m.is_poisoned() && rw.is_poisoned());
        *m.lock_or_recover() += 1;
        *rw.write_or_recover() += 1;
        assert_eq!((*m.lock_or_recover(), *rw.read_or_recover()), (2, 2));
    }
}

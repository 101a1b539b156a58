//! Strings that repeat across objects (namespaces, label keys and values,
//! node names, protocols, phases) held once and shared: a pod's five
//! labels were ten small allocations of malloc's 32 bytes at least, the
//! same few words thousands of times (BENCHMARKS.md, "Where the agent's
//! memory goes"). Names and addresses, unique per object, stay [`super::Text`].

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use crate::locks::LockOrRecover;

/// A string held once for every object that has it.
pub type Shared = Arc<str>;

/// The strings in use; the ones no object holds any more are dropped
/// when the pool has doubled since it was last swept.
struct Pool {
    strings: HashSet<Shared>,
    sweep_at: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// The pool's copy of `s`.
pub fn shared(s: &str) -> Shared {
    let mut pool = POOL.lock_or_recover();
    let pool = pool.get_or_insert_with(|| Pool {
        strings: HashSet::new(),
        sweep_at: 1024,
    });
    if let Some(kept) = pool.strings.get(s) {
        return kept.clone();
    }
    if pool.strings.len() >= pool.sweep_at {
        pool.strings.retain(|kept| Arc::strong_count(kept) > 1);
        pool.sweep_at = (2 * pool.strings.len()).max(1024);
    }
    let kept: Shared = Arc::from(s);
    pool.strings.insert(kept.clone());
    kept
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::shared;

    #[test]
    fn equal_strings_share_one_allocation() {
        let a = shared("pool-test-app");
        let b = shared(&String::from("pool-test-app"));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &shared("pool-test-web")));
    }
}

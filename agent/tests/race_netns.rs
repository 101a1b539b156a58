//! The race harness can see the bug, and the store does not have it.

use ipwarden::{
    netns::{privileged, NetNs},
    store::race::{self, Options},
};

fn run(naive: bool) -> race::Outcome {
    let ns = NetNs::new("ipw-race-test").unwrap();
    let opts = Options {
        iterations: 400,
        naive,
        refresh_every: 50,
    };
    ns.run(|| race::run(opts)).unwrap().unwrap()
}

#[test]
fn naive_cached_restores_lose_members_and_the_store_loses_none() {
    if !privileged("naive_cached_restores_lose_members_and_the_store_loses_none") {
        return;
    }
    let naive = run(true);
    assert_eq!(naive.applies, 800);
    assert!(naive.observations > 0);
    assert!(
        naive.lost > 0,
        "the harness saw no loss in kube-router's mode: it cannot detect the bug ({naive:?})"
    );
    let store = run(false);
    assert_eq!(store.applies, 800);
    assert!(
        store.observations > 100,
        "the observer barely looked: {store:?}"
    );
    assert_eq!(store.lost, 0, "{store:?}");
}

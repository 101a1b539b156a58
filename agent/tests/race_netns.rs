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

/// At most this many runs of each mode: how fast the host is changes how
/// many runs it takes to see enough, not the outcome.
const RUNS: usize = 5;

#[test]
fn naive_cached_restores_lose_members_and_the_store_loses_none() {
    if !privileged("naive_cached_restores_lose_members_and_the_store_loses_none") {
        return;
    }
    // The control: kube-router's mode loses members within a few runs.
    let mut naive = Vec::new();
    while naive.len() < RUNS && naive.last().is_none_or(|r: &race::Outcome| r.lost == 0) {
        let r = run(true);
        assert_eq!(r.applies, 800);
        naive.push(r);
    }
    assert!(
        naive.iter().any(|r| r.lost > 0),
        "the harness saw no loss in kube-router's mode: it cannot detect the bug ({naive:?})"
    );
    // The store loses none, over runs until the observer has looked often.
    let mut looks = 0;
    for _ in 0..RUNS {
        let store = run(false);
        assert_eq!(store.applies, 800);
        assert_eq!(store.lost, 0, "{store:?}");
        looks += store.observations;
        if looks > 100 {
            break;
        }
    }
    assert!(
        looks > 100,
        "the observer barely looked: {looks} times in {RUNS} runs"
    );
    eprintln!(
        "naive mode lost members in run {}; the observer looked {looks} times",
        naive.len()
    );
}

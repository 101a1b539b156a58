//! The cheap full apply (readback.rs) against the in-memory kernel: what it
//! reads, and every drift it must still repair. tests/store_netns.rs runs
//! the same drifts against the real kernel.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{
    fake_kernel::FakeKernel,
    readback::{Scrub, SCRUB_PERIODS},
    Claim, Owner, SetKernel, SetStore,
};
use crate::{
    desired::{Family, Member, SetDelta, SetSpec, SetType},
    kernel::ipset::{CreateSet, Element, Request, SetName},
};

/// More sets than one scrub share takes, so most are read by header only.
const SETS: usize = 30;

fn ip(i: usize) -> Member {
    Member::ip([10, 0, (i / 250) as u8, (i % 250) as u8 + 1].into())
}

fn set_name(i: usize) -> String {
    format!("IPW-S-{i:02}")
}

/// Set i holds members i*10 .. i*10+3.
fn sets() -> Vec<SetSpec> {
    (0..SETS)
        .map(|i| SetSpec {
            name: set_name(i),
            set_type: SetType::HashIp,
            family: Family::V4,
            members: (i * 10..i * 10 + 3).map(ip).collect(),
        })
        .collect()
}

/// A store with the policies owner, its sets applied once (a deep read)
/// and once more (the first cheap read), the log cleared.
fn settled() -> (FakeKernel, SetStore) {
    let kernel = FakeKernel::default().with_set(
        CreateSet::new(
            SetName::new("kube-router-x").unwrap(),
            SetType::HashIp,
            Family::V4,
        ),
        &[],
    );
    let store = SetStore::new(kernel.clone());
    store
        .register(Owner::new("policies", vec![Claim::Prefix("IPW-".into())]))
        .unwrap();
    store.apply("policies", sets()).unwrap();
    assert!(!store.apply("policies", sets()).unwrap().changed());
    kernel.take_log();
    (kernel, store)
}

fn element(member: &Member) -> Element {
    Element::try_from(member).unwrap()
}

/// Another program's write.
fn outside(kernel: &FakeKernel, request: Request) {
    kernel.clone().execute(&request).unwrap();
}

fn name(i: usize) -> SetName {
    SetName::new(set_name(i)).unwrap()
}

fn members_of(kernel: &FakeKernel, i: usize) -> BTreeSet<Member> {
    let set = kernel.set(&set_name(i)).expect("the set exists");
    set.members.iter().filter_map(Element::to_desired).collect()
}

/// The sets a log shows listed with their members.
fn listed(log: &[String]) -> BTreeSet<String> {
    log.iter()
        .filter_map(|l| l.strip_prefix("list "))
        .filter(|l| !l.starts_with('-'))
        .map(str::to_string)
        .collect()
}

/// Applies the same sets until the kernel holds them again; how many
/// applies that took (None: not within `limit`).
fn applies_until_repaired(kernel: &FakeKernel, store: &SetStore, limit: usize) -> Option<usize> {
    let want = sets();
    (1..=limit).find(|_| {
        store.apply("policies", sets()).unwrap();
        (0..SETS).all(|i| members_of(kernel, i) == want[i].members)
    })
}

#[test]
fn the_first_full_apply_reads_every_set_and_the_next_only_headers_and_a_share() {
    let kernel = FakeKernel::default();
    let store = SetStore::new(kernel.clone());
    store
        .register(Owner::new("policies", vec![Claim::Prefix("IPW-".into())]))
        .unwrap();
    store.apply("policies", sets()).unwrap();
    let log = kernel.take_log();
    assert_eq!(log[0], "list -n", "the first full apply reads deep");
    store.apply("policies", sets()).unwrap();
    let log = kernel.take_log();
    assert_eq!(log[0], "list -t");
    assert_eq!(
        listed(&log).len(),
        SETS.div_ceil(SCRUB_PERIODS),
        "one share of the sets: {log:?}"
    );
}

#[test]
fn a_member_deleted_or_added_by_another_program_is_repaired_at_the_next_full_apply() {
    let (kernel, store) = settled();
    outside(&kernel, Request::del(name(7), [element(&ip(71))]));
    outside(&kernel, Request::add(name(8), [element(&ip(999))]));
    let report = store.apply("policies", sets()).unwrap();
    assert_eq!(
        (
            report.executed.members_added,
            report.executed.members_deleted
        ),
        (1, 1)
    );
    assert!(report.verified);
    assert_eq!(members_of(&kernel, 7), sets()[7].members);
    assert_eq!(members_of(&kernel, 8), sets()[8].members);
}

#[test]
fn a_set_destroyed_flushed_or_retyped_is_repaired_at_the_next_full_apply() {
    let (kernel, store) = settled();
    outside(&kernel, Request::destroy(name(3)));
    outside(&kernel, Request::flush(name(4)));
    outside(&kernel, Request::destroy(name(5)));
    let net = CreateSet::new(name(5), SetType::HashNet, Family::V4);
    outside(&kernel, Request::create(net));
    let stray = CreateSet::new(
        SetName::new("IPW-STRAY").unwrap(),
        SetType::HashIp,
        Family::V4,
    );
    outside(&kernel, Request::create(stray));
    let report = store.apply("policies", sets()).unwrap();
    assert_eq!(report.executed.created, [set_name(3)]);
    assert_eq!(report.executed.replaced, [set_name(5)]);
    assert_eq!(report.executed.destroyed, ["IPW-STRAY"]);
    for i in [3, 4, 5] {
        assert_eq!(members_of(&kernel, i), sets()[i].members, "set {i}");
    }
    assert_eq!(
        kernel.set(&set_name(5)).unwrap().header.set_type,
        SetType::HashIp
    );
}

#[test]
fn a_swapped_member_is_repaired_within_the_scrub_periods() {
    let (kernel, store) = settled();
    // The settling apply's share was sets 0-2: set 2 is the last the
    // scrub reaches again.
    outside(&kernel, Request::del(name(2), [element(&ip(20))]));
    outside(&kernel, Request::add(name(2), [element(&ip(998))]));
    let took = applies_until_repaired(&kernel, &store, SCRUB_PERIODS);
    assert!(took.is_some(), "not repaired in {SCRUB_PERIODS} applies");
    assert_eq!(took, Some(SCRUB_PERIODS), "the header alone cannot see it");
}

#[test]
fn the_scrub_lists_every_set_within_the_scrub_periods() {
    let (kernel, store) = settled();
    let mut seen = BTreeSet::new();
    for _ in 0..SCRUB_PERIODS {
        store.apply("policies", sets()).unwrap();
        seen.extend(listed(&kernel.take_log()));
    }
    let all: BTreeSet<String> = (0..SETS).map(set_name).collect();
    assert_eq!(seen, all, "only ours, every one");
}

/// Our own change that keeps a set's size is read member by member (the
/// header cannot show it).
#[test]
fn a_set_whose_desired_content_changed_is_read_with_its_members() {
    let (kernel, store) = settled();
    let mut moved = sets();
    let set = &mut moved[17].members;
    set.remove(&ip(170));
    set.insert(ip(997));
    let report = store.apply("policies", moved.clone()).unwrap();
    assert!(report.verified);
    assert_eq!(members_of(&kernel, 17), moved[17].members);
}

#[test]
fn after_a_failed_apply_the_next_full_apply_reads_deep() {
    let (kernel, store) = settled();
    let unknown = SetDelta {
        set: "IPW-NOT-APPLIED".into(),
        add: vec![ip(1)],
        del: vec![],
    };
    assert!(store
        .apply_members("policies", &[unknown], &Default::default())
        .is_err());
    store.apply("policies", sets()).unwrap();
    let log = kernel.take_log();
    assert_eq!(log[0], "list -n");
    assert_eq!(listed(&log).len(), SETS);
    store.apply("policies", sets()).unwrap();
    assert_eq!(kernel.take_log()[0], "list -t", "settled again");
}

#[test]
fn foreign_sets_are_neither_listed_nor_written_by_a_cheap_apply() {
    let (kernel, store) = settled();
    let foreign = SetName::new("kube-router-x").unwrap();
    outside(&kernel, Request::add(foreign, [element(&ip(5))]));
    kernel.take_log();
    for _ in 0..SCRUB_PERIODS {
        store.apply("policies", sets()).unwrap();
    }
    let log = kernel.take_log();
    assert!(
        log.iter().all(|l| !l.contains("kube-router")),
        "touched a foreign set: {log:?}"
    );
    assert_eq!(kernel.set("kube-router-x").unwrap().members.len(), 1);
}

fn by_name(sets: &[SetSpec]) -> BTreeMap<String, SetSpec> {
    sets.iter().map(|s| (s.name.clone(), s.clone())).collect()
}

/// Sets of the given sizes.
fn sized(sizes: &[usize]) -> BTreeMap<String, SetSpec> {
    let specs: Vec<SetSpec> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| SetSpec {
            name: set_name(i),
            set_type: SetType::HashIp,
            family: Family::V4,
            members: (0..*n).map(|k| ip(i * 1000 + k)).collect(),
        })
        .collect();
    by_name(&specs)
}

/// Which of `shares` calls took each set.
fn takes(
    sets: &BTreeMap<String, SetSpec>,
    scrub: &mut Scrub,
    shares: usize,
) -> BTreeMap<String, Vec<usize>> {
    let mut out: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for call in 0..shares {
        for name in scrub.share(sets) {
            out.entry(name).or_default().push(call);
        }
    }
    out
}

#[test]
fn after_a_big_set_the_next_shares_pay_for_it() {
    // Six sets as the service proxy has them: one of 2000 members.
    let sets = sized(&[10, 2000, 10, 5, 5, 0]);
    let taken = takes(&sets, &mut Scrub::default(), SCRUB_PERIODS);
    assert_eq!(taken[&set_name(1)], [0], "once in the periods");
    let busy: BTreeSet<usize> = taken.values().flatten().copied().collect();
    assert_eq!(busy, [0, SCRUB_PERIODS - 1].into(), "{taken:?}");
    assert_eq!(taken.len(), 6, "every set: {taken:?}");
}

proptest! {
    /// Whatever the sizes, every set is taken within SCRUB_PERIODS shares
    /// of the start, and again within SCRUB_PERIODS of each take.
    #[test]
    fn every_set_is_taken_within_the_scrub_periods(
        sizes in prop::collection::vec(0usize..300, 1..40),
    ) {
        let sets = sized(&sizes);
        let taken = takes(&sets, &mut Scrub::default(), 4 * SCRUB_PERIODS);
        prop_assert_eq!(taken.len(), sets.len());
        for (set, calls) in &taken {
            prop_assert!(calls[0] < SCRUB_PERIODS, "{} first at {}", set, calls[0]);
            for pair in calls.windows(2) {
                prop_assert!(pair[1] - pair[0] <= SCRUB_PERIODS, "{}: {:?}", set, calls);
            }
            prop_assert!(4 * SCRUB_PERIODS - calls[calls.len() - 1] <= SCRUB_PERIODS, "{}: {:?}", set, calls);
        }
    }
}

/// The same drift made on a settled store.
fn drifted() -> (FakeKernel, SetStore) {
    let (kernel, store) = settled();
    outside(&kernel, Request::del(name(7), [element(&ip(71))]));
    outside(&kernel, Request::add(name(8), [element(&ip(999))]));
    outside(&kernel, Request::Flush { set: name(3) });
    (kernel, store)
}

#[test]
fn a_reapply_reads_and_repairs_what_an_apply_of_the_same_sets_does() {
    let (applied_kernel, applied) = drifted();
    let (reapplied_kernel, reapplied) = drifted();
    for round in 0..SCRUB_PERIODS {
        let by_apply = applied.apply("policies", sets()).unwrap();
        let by_reapply = reapplied.reapply_full("policies").unwrap();
        assert_eq!(by_reapply.executed, by_apply.executed, "round {round}");
        assert_eq!(by_reapply.verified, by_apply.verified, "round {round}");
        assert_eq!(
            reapplied_kernel.take_log(),
            applied_kernel.take_log(),
            "round {round}: the same reads and writes"
        );
    }
    assert!((0..SETS).all(|i| members_of(&reapplied_kernel, i) == sets()[i].members));
}

#[test]
fn a_reapply_of_an_owner_that_never_applied_is_refused_and_deletes_nothing() {
    let kernel = FakeKernel::default().with_set(
        CreateSet::new(name(1), SetType::HashIp, Family::V4),
        &[element(&ip(10))],
    );
    let store = SetStore::new(kernel.clone());
    store
        .register(Owner::new("policies", vec![Claim::Prefix("IPW-".into())]))
        .unwrap();
    assert!(matches!(
        store.reapply_full("policies"),
        Err(super::StoreError::NoFullApply { .. })
    ));
    assert_eq!(members_of(&kernel, 1), BTreeSet::from([ip(10)]));
}

/// The sets of an owner with few of the node's sets (as the service
/// proxy's six beside the policies' many).
const FEW: [&str; 4] = ["ipwarden-a", "ipwarden-b", "ipwarden-c", "ipwarden-d"];

fn few_sets() -> Vec<SetSpec> {
    FEW.iter()
        .enumerate()
        .map(|(i, n)| SetSpec {
            name: n.to_string(),
            set_type: SetType::HashIp,
            family: Family::V4,
            members: (500 + i * 10..500 + i * 10 + 3).map(ip).collect(),
        })
        .collect()
}

fn few_members(kernel: &FakeKernel, set: &str) -> BTreeSet<Member> {
    let set = kernel.set(set).expect("the set exists");
    set.members.iter().filter_map(Element::to_desired).collect()
}

/// The policies' sets settled beside a "services" owner of [`FEW`] sets,
/// applied once deep, once with the header dump (which counts the
/// node's sets) and once by name; the log cleared.
fn few_settled() -> (FakeKernel, SetStore) {
    let (kernel, store) = settled();
    let claims = FEW.iter().map(|n| Claim::Name(n.to_string())).collect();
    store.register(Owner::new("services", claims)).unwrap();
    assert!(
        FEW.len() * super::BY_NAME_RATIO < SETS,
        "too few sets beside"
    );
    for _ in 0..3 {
        assert!(store.apply("services", few_sets()).unwrap().verified);
    }
    kernel.take_log();
    (kernel, store)
}

#[test]
fn an_owner_of_few_sets_reads_their_headers_by_name_not_every_set() {
    let (kernel, store) = few_settled();
    let r = store.apply("services", few_sets()).unwrap();
    assert!(!r.changed() && r.verified, "{r:?}");
    let log = kernel.take_log();
    assert!(!log.contains(&"list -t".to_string()), "the dump: {log:?}");
    assert!(!log.contains(&"list -n".to_string()), "the names: {log:?}");
    for set in FEW {
        assert!(log.contains(&format!("list -t {set}")), "{set}: {log:?}");
    }
    assert!(
        log.iter()
            .all(|l| !l.contains("IPW-") && !l.contains("kube")),
        "another owner's or a foreign set read: {log:?}"
    );
}

#[test]
fn an_owner_of_few_sets_reads_the_nodes_names_once_in_the_scrub_periods() {
    let (kernel, store) = few_settled();
    let mut names = 0;
    for _ in 0..super::SCRUB_PERIODS {
        let r = store.apply("services", few_sets()).unwrap();
        assert!(!r.changed() && r.verified, "{r:?}");
        let log = kernel.take_log();
        names += log.iter().filter(|l| *l == "list -n").count();
        assert!(!log.contains(&"list -t".to_string()), "the dump: {log:?}");
    }
    assert_eq!(names, 1);
}

#[test]
fn a_set_no_longer_desired_is_destroyed_at_the_next_full_apply_by_name() {
    let (kernel, store) = few_settled();
    let fewer: Vec<SetSpec> = few_sets().into_iter().skip(1).collect();
    let r = store.apply("services", fewer.clone()).unwrap();
    assert_eq!(r.executed.destroyed, [FEW[0]]);
    assert!(r.verified, "{r:?}");
    assert!(kernel.take_log().iter().all(|l| l != "list -n"));
    assert!(!store.apply("services", fewer).unwrap().changed());
}

#[test]
fn an_owner_of_few_sets_still_repairs_every_drift_at_the_next_full_apply() {
    let (kernel, store) = few_settled();
    let set = |n: &str| SetName::new(n).unwrap();
    let want = few_sets();
    outside(&kernel, Request::del(set(FEW[0]), [element(&ip(500))]));
    outside(&kernel, Request::add(set(FEW[1]), [element(&ip(999))]));
    outside(&kernel, Request::Flush { set: set(FEW[2]) });
    outside(&kernel, Request::destroy(set(FEW[3])));
    let net = CreateSet::new(set(FEW[3]), SetType::HashNet, Family::V4);
    outside(&kernel, Request::create(net));
    let stray = CreateSet::new(set("ipwarden-a.new"), SetType::HashIp, Family::V4);
    outside(&kernel, Request::create(stray));
    let r = store.apply("services", few_sets()).unwrap();
    assert!(r.verified, "{r:?}");
    assert_eq!(r.executed.replaced, [FEW[3]]);
    for (name, spec) in FEW.iter().zip(&want) {
        assert_eq!(few_members(&kernel, name), spec.members, "{name}");
    }
    // A set of ours another program created is seen only in the node's
    // names, read once in the scrub periods.
    let mut destroyed = r.executed.destroyed;
    for _ in 1..super::SCRUB_PERIODS {
        if !destroyed.is_empty() {
            break;
        }
        destroyed = store
            .apply("services", few_sets())
            .unwrap()
            .executed
            .destroyed;
    }
    assert_eq!(destroyed, ["ipwarden-a.new"]);
    outside(&kernel, Request::destroy(set(FEW[1])));
    let r = store.apply("services", few_sets()).unwrap();
    assert_eq!(r.executed.created, [FEW[1]]);
    assert_eq!(few_members(&kernel, FEW[1]), want[1].members);
}

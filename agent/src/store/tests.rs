//! The store against the in-memory kernel (fake_kernel.rs): no root.
//! tests/store_netns.rs checks the same paths against the real kernel.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use super::{
    fake_kernel::FakeKernel, Claim, MirrorSink, Owner, SetKernel, SetStore, StoreError,
    SCRUB_PERIODS,
};
use crate::{
    desired::{Family, Member, MemberServices, Protocol, SetDelta, SetSpec, SetType},
    kernel::ipset::{CreateSet, Element, Request, SetName},
};

const SVIP: &str = "ipwarden-svip";
const SVIP_PRT: &str = "ipwarden-svip-prt";

fn services_owner() -> Owner {
    Owner::new(
        "services",
        vec![Claim::Name(SVIP.into()), Claim::Name(SVIP_PRT.into())],
    )
    .mirror(&[SVIP_PRT])
}

fn store_on(kernel: &FakeKernel) -> SetStore {
    let store = SetStore::new(kernel.clone());
    store.register(services_owner()).unwrap();
    store
        .register(Owner::new("policies", vec![Claim::Prefix("IPW-".into())]))
        .unwrap();
    store
}

fn spec(name: &str, set_type: SetType, members: &[Member]) -> SetSpec {
    SetSpec {
        name: name.into(),
        set_type,
        family: Family::V4,
        members: members.iter().copied().collect(),
    }
}

fn ip(s: &str) -> Member {
    Member::ip(s.parse().unwrap())
}

fn port80(s: &str) -> Member {
    Member::ip_port(s.parse().unwrap(), Protocol::Tcp, 80)
}

fn kernel_members(kernel: &FakeKernel, set: &str) -> BTreeSet<Member> {
    let listed = kernel.set(set).unwrap_or_else(|| panic!("{set} exists"));
    listed
        .members
        .iter()
        .filter_map(|e| e.to_desired())
        .collect()
}

fn create(name: &str, set_type: SetType) -> CreateSet {
    CreateSet::new(SetName::new(name).unwrap(), set_type, Family::V4)
}

/// What the mirror was told, one line per call.
#[derive(Clone, Default)]
struct RecordingMirror(Arc<Mutex<Vec<String>>>);

impl RecordingMirror {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

fn listed<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl MirrorSink for RecordingMirror {
    fn mirror(&mut self, sets: &[&SetSpec], _: &MemberServices) {
        for s in sets {
            self.push(format!("mirror {}: {}", s.name, listed(&s.members)));
        }
    }

    fn mirror_changes(&mut self, deltas: &[&SetDelta], _: &MemberServices) {
        for d in deltas {
            let (add, del) = (listed(&d.add), listed(&d.del));
            self.push(format!("changes {}: +{add} -{del}", d.set));
        }
    }

    fn missing_from_kernel(&mut self, missing: &BTreeMap<String, BTreeSet<Member>>) {
        let sets = missing.iter().map(|(s, m)| format!("{s} {}", listed(m)));
        self.push(format!("missing: {}", listed(sets)));
    }
}

#[test]
fn sets_outside_the_owners_claims_are_never_read_or_written() {
    let kernel = FakeKernel::default()
        .with_set(create("kube-router-svip", SetType::HashIp), &[])
        .with_set(create("IPW-SRC-A", SetType::HashIp), &[]);
    let store = store_on(&kernel);
    store.apply("services", vec![]).unwrap();
    store
        .apply(
            "services",
            vec![spec(SVIP, SetType::HashIp, &[ip("10.96.0.1")])],
        )
        .unwrap();
    let log = kernel.take_log();
    assert!(
        log.iter()
            .all(|l| !l.contains("kube-router") && !l.contains("IPW-")),
        "the services owner touched a set it does not own: {log:?}"
    );
    let foreign = store.apply("services", vec![spec("IPW-SRC-A", SetType::HashIp, &[])]);
    assert!(matches!(foreign, Err(StoreError::NotOwned { .. })));
    assert_eq!(kernel.take_writes(), Vec::<String>::new());
    assert_eq!(
        kernel.names(),
        ["IPW-SRC-A", "ipwarden-svip", "kube-router-svip"]
    );
}

#[test]
fn a_type_change_fills_the_new_set_before_the_rules_move_and_destroys_the_old_after() {
    let old = Element::parse(SetType::HashIp, "10.96.0.1").unwrap();
    let kernel = FakeKernel::default().with_set(create(SVIP, SetType::HashIp), &[old]);
    kernel.reference(SVIP);
    let store = store_on(&kernel);
    let net = Member::net("10.96.0.0/24".parse().unwrap());
    let report = store
        .apply("services", vec![spec(SVIP, SetType::HashNet, &[net])])
        .unwrap();
    assert_eq!(
        kernel.take_writes(),
        [
            "destroy ipwarden-svip.new",
            // Make: the new set, filled, before any rule uses it.
            "create ipwarden-svip.new hash:net",
            "add ipwarden-svip.new 10.96.0.0/24",
            "switch ipwarden-svip ipwarden-svip.new",
            // Break: only now that no rule uses it.
            "destroy ipwarden-svip",
            "create ipwarden-svip hash:net",
            "add ipwarden-svip 10.96.0.0/24",
            "switch ipwarden-svip.new ipwarden-svip",
            "destroy ipwarden-svip.new",
        ]
    );
    assert_eq!(report.executed.replaced, [SVIP]);
    assert!(report.verified);
    assert_eq!(kernel.set(SVIP).unwrap().header.set_type, SetType::HashNet);
    assert_eq!(kernel_members(&kernel, SVIP), [net].into());
    assert_eq!(kernel.references(SVIP), 1, "the rule is back on its set");
    assert_eq!(kernel.names(), [SVIP], "no .new set is left");
}

#[test]
fn a_set_a_rule_still_uses_is_destroyed_later_not_failed() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    store
        .apply("policies", vec![spec("IPW-SRC-A", SetType::HashIp, &[])])
        .unwrap();
    kernel.reference("IPW-SRC-A");
    let report = store.apply("policies", vec![]).unwrap();
    assert_eq!(report.executed.destroy_deferred, ["IPW-SRC-A"]);
    assert!(report.verified, "a deferred destroy is not another writer");
    assert_eq!(kernel.names(), ["IPW-SRC-A"]);
}

#[test]
fn a_partial_apply_reads_and_writes_only_the_sets_it_names() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    let a = spec("IPW-SRC-A", SetType::HashIp, &[ip("10.244.0.1")]);
    let b = spec("IPW-SRC-B", SetType::HashIp, &[ip("10.244.0.2")]);
    store.apply("policies", vec![a, b]).unwrap();
    kernel.take_log();
    let a2 = spec("IPW-SRC-A", SetType::HashIp, &[ip("10.244.0.3")]);
    let report = store.apply_changed("policies", vec![a2], &[]).unwrap();
    assert_eq!(
        kernel.take_log(),
        [
            "list IPW-SRC-A",
            "add IPW-SRC-A 10.244.0.3",
            "del IPW-SRC-A 10.244.0.1",
            "list IPW-SRC-A",
        ]
    );
    assert_eq!(
        (
            report.executed.members_added,
            report.executed.members_deleted
        ),
        (1, 1)
    );
}

#[test]
fn member_writes_count_only_what_the_kernel_did_not_have() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    let set = spec(SVIP_PRT, SetType::HashIpPort, &[port80("10.96.0.1")]);
    store.apply("services", vec![set]).unwrap();
    let delta = SetDelta {
        set: SVIP_PRT.into(),
        add: vec![port80("10.96.0.1"), port80("10.96.0.2")],
        del: vec![port80("10.96.0.9")],
    };
    let report = store
        .apply_members("services", &[delta], &MemberServices::new())
        .unwrap();
    assert_eq!(
        (
            report.executed.members_added,
            report.executed.members_deleted
        ),
        (1, 0),
        "an add of a present member and a del of an absent one change nothing"
    );
    assert_eq!(
        kernel_members(&kernel, SVIP_PRT),
        [port80("10.96.0.1"), port80("10.96.0.2")].into()
    );
}

#[test]
fn a_member_write_to_a_set_gone_from_the_kernel_applies_the_set_whole() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    let set = spec(SVIP_PRT, SetType::HashIpPort, &[port80("10.96.0.1")]);
    store.apply("services", vec![set]).unwrap();
    kernel
        .clone()
        .execute(&Request::destroy(SetName::new(SVIP_PRT).unwrap()))
        .unwrap();
    let delta = SetDelta {
        set: SVIP_PRT.into(),
        add: vec![port80("10.96.0.2")],
        del: vec![],
    };
    let report = store
        .apply_members("services", &[delta], &MemberServices::new())
        .unwrap();
    assert_eq!(report.executed.created, [SVIP_PRT]);
    assert_eq!(
        kernel_members(&kernel, SVIP_PRT),
        [port80("10.96.0.1"), port80("10.96.0.2")].into()
    );
}

#[test]
fn the_mirror_hears_of_its_sets_only() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    let mirror = RecordingMirror::default();
    store.set_mirror(Box::new(mirror.clone()));
    let prt = spec(SVIP_PRT, SetType::HashIpPort, &[port80("10.96.0.1")]);
    let vip = spec(SVIP, SetType::HashIp, &[ip("10.96.0.1")]);
    store.apply("services", vec![prt, vip.clone()]).unwrap();
    assert_eq!(
        mirror.take(),
        ["mirror ipwarden-svip-prt: 10.96.0.1,tcp:80"]
    );
    store.apply_changed("services", vec![vip], &[]).unwrap();
    assert_eq!(
        mirror.take(),
        Vec::<String>::new(),
        "no mirrored set changed"
    );
    let delta = SetDelta {
        set: SVIP_PRT.into(),
        add: vec![port80("10.96.0.2")],
        del: vec![port80("10.96.0.1")],
    };
    store
        .apply_members("services", &[delta], &MemberServices::new())
        .unwrap();
    assert_eq!(
        mirror.take(),
        ["changes ipwarden-svip-prt: +10.96.0.2,tcp:80 -10.96.0.1,tcp:80"]
    );
    store
        .apply("policies", vec![spec("IPW-SRC-A", SetType::HashIp, &[])])
        .unwrap();
    assert_eq!(
        mirror.take(),
        Vec::<String>::new(),
        "policies mirror nothing"
    );
}

/// A full apply that writes nothing and hands over the content the mirror
/// last heard of leaves the mirror alone; a write, new content or any
/// partial apply since makes the next full apply tell it again.
#[test]
fn an_unchanged_no_op_apply_leaves_the_mirror_alone() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    let mirror = RecordingMirror::default();
    store.set_mirror(Box::new(mirror.clone()));
    let prt = |a| spec(SVIP_PRT, SetType::HashIpPort, &[port80(a)]);
    let told = ["mirror ipwarden-svip-prt: 10.96.0.1,tcp:80"];
    store.apply("services", vec![prt("10.96.0.1")]).unwrap();
    assert_eq!(mirror.take(), told);
    store.apply("services", vec![prt("10.96.0.1")]).unwrap();
    assert_eq!(mirror.take(), Vec::<String>::new(), "nothing moved");
    let gone = Element::try_from(&port80("10.96.0.1")).unwrap();
    let name = SetName::new(SVIP_PRT).unwrap();
    kernel.clone().execute(&Request::del(name, [gone])).unwrap();
    store.apply("services", vec![prt("10.96.0.1")]).unwrap();
    assert_eq!(mirror.take(), told, "a member put back");
    store
        .apply_changed("services", vec![prt("10.96.0.1")], &[])
        .unwrap();
    assert_eq!(mirror.take(), told, "the partial apply's own");
    store.apply("services", vec![prt("10.96.0.1")]).unwrap();
    assert_eq!(mirror.take(), told, "a partial apply since");
    store.apply("services", vec![prt("10.96.0.2")]).unwrap();
    assert_eq!(
        mirror.take(),
        ["mirror ipwarden-svip-prt: 10.96.0.2,tcp:80"],
        "new content"
    );
}

#[test]
fn drift_waits_out_the_heal_delay_flagged_in_the_mirror_then_is_healed() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    let mirror = RecordingMirror::default();
    store.set_mirror(Box::new(mirror.clone()));
    let set = spec(
        SVIP_PRT,
        SetType::HashIpPort,
        &[port80("10.96.0.1"), port80("10.96.0.2")],
    );
    store.apply("services", vec![set]).unwrap();
    mirror.take();
    // Another writer deletes a member.
    let gone = Element::try_from(&port80("10.96.0.2")).unwrap();
    let name = SetName::new(SVIP_PRT).unwrap();
    kernel.clone().execute(&Request::del(name, [gone])).unwrap();
    kernel.take_log();

    let report = store
        .audit_healing_after(Duration::from_secs(3600))
        .unwrap();
    assert_eq!(report.members_missing, 1);
    assert_eq!(kernel.take_writes(), Vec::<String>::new(), "not healed yet");
    assert_eq!(
        mirror.take(),
        ["missing: ipwarden-svip-prt 10.96.0.2,tcp:80"]
    );

    let report = store.audit_healing_after(Duration::ZERO).unwrap();
    assert_eq!(report.members_missing, 1, "counted before healing");
    assert_eq!(
        kernel.take_writes(),
        ["add ipwarden-svip-prt 10.96.0.2,tcp:80"]
    );
    assert_eq!(mirror.take(), ["missing: "], "nothing is flagged any more");
    assert_eq!(store.drift().heals, 1);
    assert_eq!(store.drift().members_missing, 2);

    let report = store.audit().unwrap();
    assert!(!report.drifted(), "{report}");
}

/// A no-op apply's scrub compares the kernel's members with the desired
/// ones in place: a member swapped for another (as many members as
/// desired, so the header cannot show it) or for one no desired member
/// stands for is seen and repaired within the scrub's periods.
#[test]
fn a_swapped_member_of_an_unchanged_apply_is_repaired() {
    let kernel = FakeKernel::default();
    let store = store_on(&kernel);
    let want = [port80("10.96.0.1"), port80("10.96.0.2")];
    let sets = vec![spec(SVIP_PRT, SetType::HashIpPort, &want)];
    store.apply("services", sets.clone()).unwrap();
    assert!(!store.apply("services", sets.clone()).unwrap().changed());
    let name = SetName::new(SVIP_PRT).unwrap();
    let swap = |member: &str| {
        let mut k = kernel.clone();
        let stray = Element::parse(SetType::HashIpPort, member).unwrap();
        let gone = Element::parse(SetType::HashIpPort, "10.96.0.2,tcp:80").unwrap();
        k.execute(&Request::del(name.clone(), [gone])).unwrap();
        k.execute(&Request::add(name.clone(), [stray])).unwrap();
    };
    for stray in ["10.96.0.9,tcp:80", "10.96.0.1,icmp:echo-request"] {
        swap(stray);
        let report = (0..SCRUB_PERIODS)
            .map(|_| store.apply("services", sets.clone()).unwrap())
            .find(|r| r.changed())
            .unwrap_or_else(|| panic!("{stray}: not repaired in {SCRUB_PERIODS} applies"));
        assert_eq!(
            (
                report.executed.members_added,
                report.executed.members_deleted
            ),
            (1, 1),
            "{stray}"
        );
        assert_eq!(kernel_members(&kernel, SVIP_PRT), want.into(), "{stray}");
        assert_eq!(kernel.set(SVIP_PRT).unwrap().members.len(), 2, "{stray}");
    }
}

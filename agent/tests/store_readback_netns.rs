//! The set store's cheap full apply against the real kernel, in a network
//! namespace: once settled, a full apply reads every set's header in one
//! dump and lists the members of only a share of the sets, yet every drift
//! another program makes is repaired, a swapped member within
//! `SCRUB_PERIODS` applies; an owner of few of the node's sets reads their
//! headers by name, and every drift is repaired all the same. Oracle:
//! `ipset save`; the store's door to the kernel is wrapped to count what it
//! lists.

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use ipwarden::{
    desired::{Family, SetSpec, SetType},
    kernel::{
        ipset::{Element, IpSet, IpsetClient, IpsetError, Listing, Request, SetName},
        iptables::IptablesError,
    },
    netns::{privileged, NetNs},
    store::{Claim, Owner, SetKernel, SetStore, BY_NAME_RATIO, SCRUB_PERIODS},
};

const SETS: usize = 30;

/// The real client, noting each set it lists with its members, and each
/// header read ("*" for the dump of every set's header).
struct Counting {
    client: IpsetClient,
    listed: Arc<Mutex<Vec<String>>>,
    headers: Arc<Mutex<Vec<String>>>,
}

impl SetKernel for Counting {
    fn execute(&mut self, request: &Request) -> Result<(), IpsetError> {
        self.client.execute(request)
    }

    fn list_names(&mut self) -> Result<Vec<String>, IpsetError> {
        self.client.list_names()
    }

    fn list(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        self.listed.lock().unwrap().push(set.to_string());
        self.client.list(set)
    }

    fn list_header(&mut self, set: &SetName) -> Result<IpSet, IpsetError> {
        self.headers.lock().unwrap().push(set.to_string());
        self.client.list_header(set)
    }

    fn list_headers(&mut self) -> Result<Listing, IpsetError> {
        self.headers.lock().unwrap().push("*".into());
        self.client.list_headers()
    }

    fn switch_references(&mut self, from: &str, to: &str) -> Result<usize, IptablesError> {
        self.client.switch_references(from, to)
    }
}

fn set_name(i: usize) -> String {
    format!("IPW-T-{i:02}")
}

/// Set i holds 10.0.i.1 - 10.0.i.3.
fn sets() -> Vec<SetSpec> {
    (0..SETS)
        .map(|i| SetSpec {
            name: set_name(i),
            set_type: SetType::HashIp,
            family: Family::V4,
            members: (1..=3)
                .map(|k| {
                    let text = format!("10.0.{i}.{k}");
                    Element::parse(SetType::HashIp, &text)
                        .unwrap()
                        .to_desired()
                        .unwrap()
                })
                .collect(),
        })
        .collect()
}

/// Members of `set` per `ipset save`.
fn members(ns: &NetNs, set: &str) -> BTreeSet<String> {
    ns.output("ipset", &["save", set])
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("add {set} ")).map(str::to_string))
        .collect()
}

fn wanted(i: usize) -> BTreeSet<String> {
    (1..=3).map(|k| format!("10.0.{i}.{k}")).collect()
}

fn ipset(ns: &NetNs, cmd: &str) {
    let args: Vec<&str> = cmd.split(' ').collect();
    ns.output("ipset", &args).unwrap();
}

fn all_as_desired(ns: &NetNs) -> bool {
    (0..SETS).all(|i| members(ns, &set_name(i)) == wanted(i))
}

#[test]
fn a_settled_full_apply_reads_a_share_and_still_repairs_every_drift() {
    if !privileged("a_settled_full_apply_reads_a_share_and_still_repairs_every_drift") {
        return;
    }
    let ns = NetNs::new("ipw-store-readback").unwrap();
    ns.run(|| {
        ipset(&ns, "create kube-foreign hash:ip");
        ipset(&ns, "add kube-foreign 10.1.2.3");
        let listed = Arc::new(Mutex::new(Vec::new()));
        let client = IpsetClient::new().unwrap();
        let store = SetStore::new(Counting {
            client,
            listed: listed.clone(),
            headers: Arc::default(),
        });
        let owner = Owner::new("policies", vec![Claim::Prefix("IPW-".into())]);
        store.register(owner).unwrap();
        let take = || std::mem::take(&mut *listed.lock().unwrap());
        store.apply("policies", sets()).unwrap();
        assert_eq!(take().len(), SETS, "deep: the read-back lists every set");

        // Settled: the members of a share of the sets only.
        let r = store.apply("policies", sets()).unwrap();
        assert!(!r.changed(), "{r:?}");
        let share = take();
        assert!(share.len() <= SETS.div_ceil(SCRUB_PERIODS), "{share:?}");

        // Drift the headers show: each repaired by the next apply.
        ipset(&ns, "del IPW-T-07 10.0.7.2");
        ipset(&ns, "add IPW-T-08 10.9.9.9");
        ipset(&ns, "flush IPW-T-04");
        ipset(&ns, "destroy IPW-T-03");
        ipset(&ns, "destroy IPW-T-05");
        ipset(&ns, "create IPW-T-05 hash:net");
        ipset(&ns, "create IPW-STRAY hash:ip");
        ipset(&ns, "add kube-foreign 10.1.2.4");
        let r = store.apply("policies", sets()).unwrap();
        assert!(r.verified, "{r:?}");
        assert_eq!(r.executed.created, [set_name(3)]);
        assert_eq!(r.executed.replaced, [set_name(5)]);
        assert_eq!(r.executed.destroyed, ["IPW-STRAY"]);
        assert!(
            all_as_desired(&ns),
            "{}",
            ns.output("ipset", &["save"]).unwrap()
        );
        let save = ns.output("ipset", &["save", "IPW-T-05"]).unwrap();
        assert!(save.starts_with("create IPW-T-05 hash:ip "), "{save}");
        assert!(!ns
            .output("ipset", &["list", "-n"])
            .unwrap()
            .contains("STRAY"));
        take();

        // A member swapped keeps the count: the scrub finds it.
        ipset(&ns, "del IPW-T-12 10.0.12.3");
        ipset(&ns, "add IPW-T-12 10.0.12.9");
        let repaired = (1..=SCRUB_PERIODS).find(|_| {
            store.apply("policies", sets()).unwrap();
            members(&ns, "IPW-T-12") == wanted(12)
        });
        assert!(
            repaired.is_some(),
            "not repaired in {SCRUB_PERIODS} applies"
        );
        let listed = take();
        assert!(
            listed.iter().all(|n| n.starts_with("IPW-")),
            "a foreign set listed: {listed:?}"
        );
        assert!(all_as_desired(&ns));
        assert_eq!(
            members(&ns, "kube-foreign"),
            ["10.1.2.3", "10.1.2.4"].map(String::from).into(),
            "the foreign set was written"
        );
    })
    .unwrap();
}

/// The sets of an owner with few of the node's sets.
const FEW: [&str; 4] = ["ipwarden-a", "ipwarden-b", "ipwarden-c", "ipwarden-d"];
/// Other programs' sets beside them.
const FOREIGN: usize = 40;

/// Set `FEW[i]` holds 10.2.i.1 - 10.2.i.3.
fn few_wanted(i: usize) -> BTreeSet<String> {
    (1..=3).map(|k| format!("10.2.{i}.{k}")).collect()
}

fn few_sets() -> Vec<SetSpec> {
    (0..FEW.len())
        .map(|i| SetSpec {
            name: FEW[i].into(),
            set_type: SetType::HashIp,
            family: Family::V4,
            members: few_wanted(i)
                .iter()
                .map(|m| {
                    let e = Element::parse(SetType::HashIp, m).unwrap();
                    e.to_desired().unwrap()
                })
                .collect(),
        })
        .collect()
}

#[test]
fn an_owner_of_few_sets_reads_their_headers_by_name_and_repairs_every_drift() {
    if !privileged("an_owner_of_few_sets_reads_their_headers_by_name_and_repairs_every_drift") {
        return;
    }
    assert!(FEW.len() * BY_NAME_RATIO < FOREIGN, "too few foreign sets");
    let ns = NetNs::new("ipw-store-byname").unwrap();
    ns.run(|| {
        for i in 0..FOREIGN {
            ipset(&ns, &format!("create kube-f-{i:02} hash:ip"));
            ipset(&ns, &format!("add kube-f-{i:02} 10.1.2.{i}"));
        }
        let headers = Arc::new(Mutex::new(Vec::new()));
        let store = SetStore::new(Counting {
            client: IpsetClient::new().unwrap(),
            listed: Arc::default(),
            headers: headers.clone(),
        });
        let claims = FEW.iter().map(|n| Claim::Name(n.to_string())).collect();
        store.register(Owner::new("services", claims)).unwrap();
        let take = || std::mem::take(&mut *headers.lock().unwrap());
        // Deep, then the header dump (which counts the node's sets).
        for _ in 0..2 {
            assert!(store.apply("services", few_sets()).unwrap().verified);
        }
        take();
        let r = store.apply("services", few_sets()).unwrap();
        assert!(!r.changed() && r.verified, "{r:?}");
        let read: BTreeSet<String> = take().into_iter().collect();
        assert_eq!(read, FEW.map(String::from).into(), "headers read");

        ipset(&ns, "del ipwarden-a 10.2.0.1");
        ipset(&ns, "add ipwarden-b 10.9.9.9");
        ipset(&ns, "flush ipwarden-c");
        ipset(&ns, "destroy ipwarden-d");
        ipset(&ns, "create ipwarden-d hash:net");
        ipset(&ns, "create ipwarden-a.new hash:ip");
        ipset(&ns, "add kube-f-00 10.1.3.3");
        let r = store.apply("services", few_sets()).unwrap();
        assert!(r.verified, "{r:?}");
        assert_eq!(r.executed.replaced, ["ipwarden-d"]);
        for (i, set) in FEW.iter().enumerate() {
            assert_eq!(members(&ns, set), few_wanted(i), "{set}");
        }
        let save = ns.output("ipset", &["save", "ipwarden-d"]).unwrap();
        assert!(save.starts_with("create ipwarden-d hash:ip "), "{save}");
        // A set of ours another program created shows only in the node's
        // names, read once in the scrub periods.
        let mut destroyed = r.executed.destroyed;
        for _ in 1..SCRUB_PERIODS {
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
        let names = ns.output("ipset", &["list", "-n"]).unwrap();
        assert!(!names.lines().any(|l| l == "ipwarden-a.new"), "{names}");

        ipset(&ns, "destroy ipwarden-b");
        let r = store.apply("services", few_sets()).unwrap();
        assert_eq!(r.executed.created, ["ipwarden-b"]);
        assert_eq!(members(&ns, "ipwarden-b"), few_wanted(1));
        assert!(
            !take().contains(&"*".to_string()),
            "the header dump of every set was read"
        );
        assert_eq!(
            members(&ns, "kube-f-00"),
            ["10.1.2.0", "10.1.3.3"].map(String::from).into(),
            "the foreign set was written"
        );
    })
    .unwrap();
}

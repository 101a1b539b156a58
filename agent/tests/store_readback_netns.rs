//! The set store's cheap full apply against the real kernel, in a network
//! namespace: once settled, a full apply reads every set's header in one
//! dump and lists the members of only a share of the sets, yet every drift
//! another program makes is repaired, a swapped member within
//! `SCRUB_PERIODS` applies. Oracle: `ipset save`; the store's door to the
//! kernel is wrapped to count what it lists.

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
    store::{Claim, Owner, SetKernel, SetStore, SCRUB_PERIODS},
};

const SETS: usize = 30;

/// The real client, noting each set it lists with its members.
struct Counting {
    client: IpsetClient,
    listed: Arc<Mutex<Vec<String>>>,
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

    fn list_headers(&mut self) -> Result<Listing, IpsetError> {
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
